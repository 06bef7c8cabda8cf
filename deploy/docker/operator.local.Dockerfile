# bft-operator on a machine with no registry (see replica.local.Dockerfile). Same user and entry point as
# operator.Dockerfile.
ARG BASE_IMAGE=bft-base:dev
FROM ${BASE_IMAGE}
COPY bin/ /usr/local/bin/
USER 65532:65532
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/bft-operator"]
