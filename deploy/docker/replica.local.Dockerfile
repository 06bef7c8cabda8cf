# bft-replica on a machine with no registry: deploy/build-images.sh imports bft-base:dev (the shared libraries the
# host's release binaries need, /etc/passwd with the nonroot user, nothing else) and builds this with a context
# holding the host-built, stripped binaries. Same user, paths, ports and environment as replica.Dockerfile.
ARG BASE_IMAGE=bft-base:dev
FROM ${BASE_IMAGE}
COPY bin/ /usr/local/bin/
COPY --chown=65532:65532 data/ /var/lib/bft/
ENV BFT_LISTEN=0.0.0.0:7000 \
    BFT_METRICS_LISTEN=0.0.0.0:9100 \
    BFT_DATA_DIR=/var/lib/bft \
    BFT_KEY_FILE=/etc/bft/key/key.pem \
    BFT_MEMBERS_FILE=/etc/bft/members.json \
    BFT_GENESIS_FILE=/etc/bft/genesis.json \
    BFT_LOG_JSON=true
USER 65532:65532
EXPOSE 7000 9100
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/bft-replica"]
