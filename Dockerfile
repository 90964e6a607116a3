# syntax=docker/dockerfile:1
# The runway binary in a slim Debian image: a non-root user, nothing writable but the data
# folder (the compiled-code cache; on a cluster everything else is in PostgreSQL).
#
#   docker build -t runway:dev .
#
# Kubernetes runs it with a read-only root filesystem (deploy/kubernetes, docs/KUBERNETES.md).
# The configuration is the environment: every flag of `runway serve` has a RUNWAY_* variable.

ARG RUST_VERSION=1.95.0
ARG DEBIAN_RELEASE=bookworm

FROM rust:${RUST_VERSION}-slim-${DEBIAN_RELEASE} AS build
WORKDIR /src
COPY . .
# No debug info and stripped symbols: the image carries a 20-odd MB binary, not 230 MB.
ENV CARGO_PROFILE_RELEASE_DEBUG=0 \
    CARGO_PROFILE_RELEASE_STRIP=symbols
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p runway-cli \
 && install -m 0755 target/release/runway /usr/local/bin/runway

FROM debian:${DEBIAN_RELEASE}-slim
# ca-certificates: functions' outbound https. The user owns only its data folder.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 runway \
 && useradd --system --uid 10001 --gid runway --home-dir /var/lib/runway --no-create-home \
      --shell /usr/sbin/nologin runway \
 && install -d -o runway -g runway -m 0700 /var/lib/runway
COPY --from=build /usr/local/bin/runway /usr/local/bin/runway
ENV RUNWAY_DATA_DIR=/var/lib/runway \
    RUNWAY_LISTEN=0.0.0.0:8080 \
    RUNWAY_ADMIN_LISTEN=0.0.0.0:8081
USER 10001:10001
WORKDIR /var/lib/runway
VOLUME ["/var/lib/runway"]
# 8080: the gateway (functions). 8081: the admin API, /livez, /readyz, /metrics.
EXPOSE 8080 8081
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/runway", "serve"]
