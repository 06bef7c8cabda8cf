# syntax=docker/dockerfile:1
# bft-operator built from source, for machines that can pull images. Build from the repository root:
#
#   docker build -f deploy/docker/operator.Dockerfile -t bft-operator:dev .
#
# Not built on the project's own test machine (no registry): deploy/build-images.sh builds the same image there
# from operator.local.Dockerfile over a base assembled from the host.

ARG RUST_IMAGE=docker.io/library/rust:1.95-slim-bookworm
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot

FROM ${RUST_IMAGE} AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY replica replica
COPY operator operator
# The operator embeds the alert rules it puts in each cluster's PrometheusRule (include_str! in
# operator/src/resources/monitoring.rs).
COPY monitoring monitoring
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p bft-operator --bin bft-operator \
 && mkdir -p /out/bin \
 && cp target/release/bft-operator /out/bin/ \
 && strip --strip-debug /out/bin/*

FROM ${RUNTIME_IMAGE}
COPY --from=build /out/bin/ /usr/local/bin/
USER 65532:65532
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/bft-operator"]
