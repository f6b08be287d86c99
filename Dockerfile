# syntax=docker/dockerfile:1
#
# mcp-sidecar on `scratch`: mcp-proxy (any stdio MCP server on HTTP),
# coda-mcp (a stdio MCP server for the Coda API) and the `everything`
# example server, as fully static musl binaries, plus CA certificates.
# Nothing else: no shell, no libc, no package manager.
#
#   docker build -t mcp-sidecar .
#   docker run --rm -p 127.0.0.1:8080:8080 -e MCP_PROXY_API_KEY=<16+ chars> \
#     --read-only --cap-drop ALL mcp-sidecar
#
# The default command serves the example server on 0.0.0.0:8080, which the
# proxy refuses without authentication: set MCP_PROXY_API_KEY (clients then
# send "Authorization: Bearer <key>"), or pass MCP_PROXY_ALLOW_UNAUTHENTICATED=true.
# Another server:  docker run ... -e CODA_API_TOKEN=... mcp-sidecar -- coda-mcp
#
# Two ways to get the binaries, same final stage:
#   --build-arg BINARIES=build (default): compiled here, in the rust image,
#     for x86_64-unknown-linux-musl.
#   --build-arg BINARIES=host: taken from dist/ in the build context, built on
#     the host with `cargo build --profile image --target x86_64-unknown-linux-musl`
#     (scripts/ship-test.sh does this; for machines that reach no image registry).
#     dist/ holds mcp-proxy, coda-mcp, everything and ca-certificates.crt.
#
# The proxy reaps zombies and forwards signals itself when it is PID 1, so the
# image needs no init. HEALTHCHECK runs `mcp-proxy healthcheck`, which probes
# /health on MCP_PROXY_PORT (8080 here): set the port through that variable,
# not a flag, and the health check follows it.

ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm
ARG BINARIES=build

# ---- binaries, built in the image -----------------------------------------
FROM rust:${RUST_VERSION}-slim-${DEBIAN_RELEASE} AS build
# musl-tools: musl-gcc for the C parts of ring (rustls' crypto in the shipped
# binaries), of SQLite (rusqlite builds it from source for the credential
# store) and of aws-lc-sys (which the example server's build pulls in
# through the dev-dependencies, see below).
RUN apt-get update \
 && apt-get install -y --no-install-recommends musl-tools ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && rustup target add x86_64-unknown-linux-musl
WORKDIR /src
COPY . .
# The cache mounts keep the registry and the build directory between builds;
# they are not part of the image, so the binaries are copied out. The example
# server is built apart: building it turns on the dev-dependencies, whose
# features (reqwest's aws-lc-rs TLS) would otherwise be unified into coda-mcp.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --profile image --locked --target x86_64-unknown-linux-musl \
      --workspace --bins \
 && cargo build --profile image --locked --target x86_64-unknown-linux-musl \
      --example everything \
 && mkdir -p /dist \
 && cd target/x86_64-unknown-linux-musl/image \
 && cp mcp-proxy coda-mcp examples/everything /dist/ \
 && cp /etc/ssl/certs/ca-certificates.crt /dist/

# ---- binaries, built on the host ------------------------------------------
FROM scratch AS host
COPY dist/ /dist/

# ---- the image --------------------------------------------------------------
FROM ${BINARIES} AS binaries

FROM scratch
COPY --from=binaries /dist/mcp-proxy /dist/coda-mcp /dist/everything /usr/local/bin/
COPY --from=binaries /dist/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
ENV PATH=/usr/local/bin \
    SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
    HOME=/tmp \
    MCP_PROXY_HOST=0.0.0.0 \
    MCP_PROXY_PORT=8080 \
    MCP_PROXY_LOG_FORMAT=json
# A numeric user with no entry in /etc/passwd (there is none): nothing to
# resolve, and runAsNonRoot in Kubernetes can check it.
USER 65532:65532
WORKDIR /tmp
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s --start-period=5s --retries=3 \
  CMD ["mcp-proxy", "healthcheck"]
ENTRYPOINT ["mcp-proxy"]
CMD ["--", "everything"]
