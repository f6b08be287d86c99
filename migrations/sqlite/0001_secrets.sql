-- The embedded credential store (SQLite), schema version 1.
-- Values are sealed with AES-256-GCM before they reach this table: `sealed`
-- is ciphertext plus tag, `nonce` is unique per value, and `key_id` names the
-- key that sealed it (a fingerprint, not the key). Nothing here is plain text
-- except who owns a secret and its name.
CREATE TABLE IF NOT EXISTS secrets (
    principal  TEXT    NOT NULL,
    server     TEXT    NOT NULL,
    name       TEXT    NOT NULL,
    key_id     TEXT    NOT NULL,
    nonce      BLOB    NOT NULL,
    sealed     BLOB    NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (principal, server, name)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS secrets_by_key ON secrets (key_id);
