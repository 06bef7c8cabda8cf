# syntax=docker/dockerfile:1
# bft-replica (with bftctl beside it) built from source, for machines that can pull images (CI with a registry,
# a developer's laptop). Build from the repository root:
#
#   docker build -f deploy/docker/replica.Dockerfile -t bft-replica:dev .
#
# Not built on the project's own test machine, which has no registry to pull rust or distroless from:
# deploy/build-images.sh builds the same image there from replica.local.Dockerfile over a base assembled from the
# host. The two stages below and replica.local.Dockerfile must keep the same user, paths, ports and environment.

ARG RUST_IMAGE=docker.io/library/rust:1.95-slim-bookworm
# glibc, libgcc and CA certificates, no shell, uid/gid 65532 "nonroot".
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot

FROM ${RUST_IMAGE} AS build
WORKDIR /src
# The whole workspace: Cargo resolves every member even when building one package.
COPY Cargo.toml Cargo.lock ./
COPY replica replica
COPY operator operator
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p bft-replica -p bft-client --bin bft-replica --bin bftctl \
 && mkdir -p /out/bin /out/data \
 && cp target/release/bft-replica target/release/bftctl /out/bin/ \
 && strip --strip-debug /out/bin/*

FROM ${RUNTIME_IMAGE}
COPY --from=build /out/bin/ /usr/local/bin/
# The only place the replica writes; mount a volume here (a PersistentVolumeClaim on Kubernetes). Everything
# else may be read-only.
COPY --from=build --chown=65532:65532 /out/data/ /var/lib/bft/
# Every setting is a flag or a BFT_* variable, so no configuration file is needed: mount the key, the membership
# and the genesis at these paths and set BFT_ID.
ENV BFT_LISTEN=0.0.0.0:7000 \
    BFT_METRICS_LISTEN=0.0.0.0:9100 \
    BFT_DATA_DIR=/var/lib/bft \
    BFT_KEY_FILE=/etc/bft/key/key.pem \
    BFT_MEMBERS_FILE=/etc/bft/members.json \
    BFT_GENESIS_FILE=/etc/bft/genesis.json \
    BFT_LOG_JSON=true
USER 65532:65532
# 7000: gRPC (peers and clients). 9100: HTTP /metrics, /healthz, /readyz.
EXPOSE 7000 9100
# SIGTERM stops the replica gracefully; it runs as PID 1 and handles the signal itself.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/bft-replica"]
