#!/usr/bin/env bash
# Builds the container images bft-replica:dev (bft-replica and bftctl) and bft-operator:dev on a machine with a
# Docker engine but no registry: no image can be pulled, so the base is assembled from the host.
#
#   1. cargo build --release of the binaries (bft-operator only when the workspace has that bin target yet);
#   2. a root filesystem holding just the shared libraries they load (found by ldd), the dynamic loader,
#      /etc/passwd and /etc/group with the nonroot user (65532, as in distroless) and /etc/nsswitch.conf,
#      imported as bft-base:dev;
#   3. deploy/docker/{replica,operator}.local.Dockerfile over that base, with the stripped binaries.
#
# Where images can be pulled, deploy/docker/{replica,operator}.Dockerfile build the same images from source.
# Prints how long each step took and the image sizes. CARGO_TARGET_DIR is honoured (default: the one .ci/run uses).
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/bft-validator/target}"
TAG="${TAG:-dev}"
UID_NONROOT=65532

die() { echo "deploy/build-images.sh: $*" >&2; exit 1; }
command -v cargo >/dev/null 2>&1 || die "cargo is not installed; install a Rust toolchain (rustup) first"
command -v docker >/dev/null 2>&1 || die "docker is not installed"
docker info >/dev/null 2>&1 || die "the Docker engine does not answer (is dockerd running?)"
command -v ldd >/dev/null 2>&1 || die "ldd is not installed (Debian: libc-bin)"

now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
mib() { awk -v b="$1" 'BEGIN { printf "%.1f MiB", b / 1048576 }'; }

stage=$(mktemp -d /tmp/bft-images.XXXXXX)
trap 'rm -rf "$stage"' EXIT

# -- 1. binaries ---------------------------------------------------------------------------------------------------
# The operator's binary is built by another part of the project; image it only once the target exists.
has_operator_bin=$(cargo metadata --no-deps --format-version 1 --locked |
    python3 -c 'import json, sys
m = json.load(sys.stdin)
print(any(t["name"] == "bft-operator" and "bin" in t["kind"]
          for p in m["packages"] if p["name"] == "bft-operator" for t in p["targets"]))')
bins=(bft-replica bftctl)
build=(-p bft-replica -p bft-client --bin bft-replica --bin bftctl)
if [ "$has_operator_bin" = True ]; then
    bins+=(bft-operator)
    build+=(-p bft-operator --bin bft-operator)
else
    echo "note: the bft-operator package has no bft-operator bin target yet: bft-operator:$TAG is not built"
fi
t=$(now)
echo "== cargo build --release ${build[*]}"
cargo build --release --locked "${build[@]}"
cargo_secs=$(since "$t")

# -- 2. the base: shared libraries, loader, users ------------------------------------------------------------------
t=$(now)
root="$stage/rootfs"
mkdir -p "$root"/{etc,tmp,usr/local/bin}
chmod 1777 "$root/tmp"
for bin in "${bins[@]}"; do
    file="$CARGO_TARGET_DIR/release/$bin"
    [ -x "$file" ] || die "$file was not built"
    # Lines are "libx.so => /path (0x...)" or "/lib64/ld-linux-x86-64.so.2 (0x...)"; linux-vdso has no file.
    ldd "$file" | awk '/=>/ { if ($3 ~ /^\//) print $3; next } $1 ~ /^\// { print $1 }'
done | sort -u >"$stage/libs"
while read -r lib; do
    # Keep the path the binaries ask for (the loader's path is written into them) and copy the file it names.
    mkdir -p "$root$(dirname "$lib")"
    cp -L "$lib" "$root$lib"
done <"$stage/libs"
cat >"$root/etc/passwd" <<EOF
root:x:0:0:root:/root:/sbin/nologin
nonroot:x:$UID_NONROOT:$UID_NONROOT:nonroot:/home/nonroot:/sbin/nologin
EOF
cat >"$root/etc/group" <<EOF
root:x:0:
nonroot:x:$UID_NONROOT:
EOF
# glibc's resolver: /etc/hosts first, then DNS (Docker and Kubernetes mount /etc/hosts and /etc/resolv.conf).
echo "hosts: files dns" >"$root/etc/nsswitch.conf"
# A client of the Kubernetes API or any TLS endpoint may need the system's CA certificates.
if [ -f /etc/ssl/certs/ca-certificates.crt ]; then
    mkdir -p "$root/etc/ssl/certs"
    cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/"
fi
tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 -C "$root" -cf "$stage/base.tar" .
docker import --message "bft base: $(wc -l <"$stage/libs") shared libraries from $(hostname)" \
    "$stage/base.tar" "bft-base:$TAG" >/dev/null
base_secs=$(since "$t")
echo "== bft-base:$TAG: $(tr '\n' ' ' <"$stage/libs")"

# -- 3. the images -------------------------------------------------------------------------------------------------
image() { # name, binaries...
    local name=$1 context="$stage/$1"
    shift
    mkdir -p "$context/bin" "$context/data"
    for bin in "$@"; do
        cp "$CARGO_TARGET_DIR/release/$bin" "$context/bin/"
        # The release profile keeps line tables (debug = 1) for the host's backtraces; the image does without.
        if command -v strip >/dev/null 2>&1; then strip --strip-debug "$context/bin/$bin"; fi
    done
    local t
    t=$(now)
    # Without the buildx plugin (Debian's docker.io) the legacy builder runs: say so, and spare its warning.
    docker buildx version >/dev/null 2>&1 || export DOCKER_BUILDKIT=0
    if ! docker build --quiet --build-arg "BASE_IMAGE=bft-base:$TAG" \
        -f "deploy/docker/${name#bft-}.local.Dockerfile" -t "$name:$TAG" "$context" >/dev/null 2>"$stage/build.err"; then
        cat "$stage/build.err" >&2
        die "docker build of $name:$TAG failed"
    fi
    echo "== $name:$TAG built in $(since "$t") s, $(mib "$(docker image inspect -f '{{.Size}}' "$name:$TAG")")"
}
t=$(now)
image bft-replica bft-replica bftctl
if [ "$has_operator_bin" = True ]; then
    image bft-operator bft-operator
fi
images_secs=$(since "$t")

# The images run: each binary answers --version as the non-root user.
docker run --rm "bft-replica:$TAG" --version
docker run --rm --entrypoint bftctl "bft-replica:$TAG" --version
user=$(docker image inspect -f '{{.Config.User}}' "bft-replica:$TAG")
[ "$user" = "$UID_NONROOT:$UID_NONROOT" ] || die "bft-replica:$TAG runs as '$user', not $UID_NONROOT"
if [ "$has_operator_bin" = True ]; then
    docker run --rm "bft-operator:$TAG" --version || echo "warning: bft-operator:$TAG does not answer --version" >&2
fi

echo
echo "images: cargo build ${cargo_secs} s, base ${base_secs} s, images ${images_secs} s"
docker image ls --format '{{.Repository}}:{{.Tag}}\t{{.Size}}' | grep -E "^bft-(base|replica|operator):$TAG\b" |
    sort | sed 's/^/  /'
