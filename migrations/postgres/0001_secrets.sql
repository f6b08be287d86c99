-- The shared credential store (PostgreSQL), schema version 1.
-- Values are sealed with AES-256-GCM by the proxy before they are sent here:
-- `sealed` is ciphertext plus tag, `nonce` is unique per value, and `key_id`
-- names the key that sealed it (a fingerprint, not the key). The database
-- never sees a plain-text secret or a key.
CREATE TABLE IF NOT EXISTS mcp_proxy_secrets (
    principal  TEXT        NOT NULL,
    server     TEXT        NOT NULL,
    name       TEXT        NOT NULL,
    key_id     TEXT        NOT NULL,
    nonce      BYTEA       NOT NULL,
    sealed     BYTEA       NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (principal, server, name)
);
CREATE INDEX IF NOT EXISTS mcp_proxy_secrets_by_key ON mcp_proxy_secrets (key_id);
