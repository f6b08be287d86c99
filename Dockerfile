# syntax=docker/dockerfile:1
#
# mcp-sidecar: mcp-proxy (any stdio MCP server on HTTP), coda-mcp (a stdio
# MCP server for the Coda API) and the `everything` example server.
#
#   docker build -t mcp-sidecar .
#   docker run --rm -p 8080:8080 -e MCP_PROXY_API_KEY=<16+ chars> mcp-sidecar
#
# The default command serves the example server on 0.0.0.0:8080, which the
# proxy refuses to do without authentication: set MCP_PROXY_API_KEY (clients
# then send "Authorization: Bearer <key>"), or pass --allow-unauthenticated
# yourself. To serve another stdio server, give your own arguments, e.g.
#   docker run -p 8080:8080 -e MCP_PROXY_API_KEY=... -e CODA_API_TOKEN=... \
#     mcp-sidecar --host 0.0.0.0 -- coda-mcp
# tini is PID 1 and runs mcp-proxy: it forwards signals and reaps the
# orphans of crashed grandchildren (no need for `docker run --init`).

ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm

# ---- build ---------------------------------------------------------------
FROM rust:${RUST_VERSION}-slim-${DEBIAN_RELEASE} AS build
# cmake: aws-lc-sys (rustls' crypto provider) falls back to it on some hosts.
RUN apt-get update \
 && apt-get install -y --no-install-recommends cmake \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY examples ./examples
COPY crates ./crates
# The cache mounts keep the registry and the build directory between builds;
# they are not part of the image, so the binaries are copied out here.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --workspace --bin mcp-proxy --bin coda-mcp --example everything \
 && mkdir -p /out \
 && cp target/release/mcp-proxy target/release/coda-mcp /out/ \
 && cp target/release/examples/everything /out/everything

# ---- runtime -------------------------------------------------------------
FROM debian:${DEBIAN_RELEASE}-slim
# ca-certificates: coda-mcp (and most stdio servers) call HTTPS APIs.
# tini: PID 1 (see above).
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates tini \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 mcp \
 && useradd --system --uid 10001 --gid mcp --home-dir /home/mcp --create-home --shell /usr/sbin/nologin mcp
COPY --from=build /out/mcp-proxy /out/coda-mcp /out/everything /usr/local/bin/
USER mcp:mcp
WORKDIR /home/mcp
ENV MCP_PROXY_LOG_FORMAT=json
EXPOSE 8080
# GET /health needs no API key; bash's /dev/tcp avoids shipping curl.
HEALTHCHECK --interval=30s --timeout=5s --start-period=5s --retries=3 \
  CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/8080 && printf 'GET /health HTTP/1.0\\r\\nHost: localhost\\r\\n\\r\\n' >&3 && head -n1 <&3 | grep -q ' 200 '"]
ENTRYPOINT ["/usr/bin/tini", "--", "mcp-proxy"]
CMD ["--host", "0.0.0.0", "--port", "8080", "--", "everything"]
