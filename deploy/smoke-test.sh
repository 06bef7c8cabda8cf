#!/usr/bin/env bash
# Smoke test of the bft-replica image: 4 replica containers (F = 1, quorum 3) on a private Docker network, each
# with its own key, a named volume for its data and a read-only root filesystem, configured by BFT_* variables and
# mounted files only. bftctl, from the same image, runs as a client container on that network.
#
#   1. the cluster commits transfers;
#   2. the primary is killed (SIGKILL): the others elect a new one and keep committing; the killed one restarts
#      from its volume and catches up;
#   3. the new primary is disconnected from the network: the others keep committing; reconnected, it catches up;
#   4. /metrics answers on every container; every replica runs as the nonroot user;
#   5. SIGTERM (docker stop) stops every container gracefully: exit code 0 well before Docker's SIGKILL.
#
# Needs the images (deploy/build-images.sh; built here when missing), docker and python3. Removes its containers,
# volumes and network on exit. TAG picks the image tag (default dev).
set -euo pipefail
cd "$(dirname "$0")/.."

TAG="${TAG:-dev}"
IMAGE="bft-replica:$TAG"
N=4
ACCOUNTS=8
VIEW_CHANGE_TIMEOUT_MS=2000
STOP_GRACE=20
run="bft-smoke-$$"
net="$run"
dir=$(mktemp -d /tmp/bft-smoke.XXXXXX)

die() { echo "deploy/smoke-test.sh: $*" >&2; exit 1; }
command -v docker >/dev/null 2>&1 || die "docker is not installed"
command -v python3 >/dev/null 2>&1 || die "python3 is not installed"
docker info >/dev/null 2>&1 || die "the Docker engine does not answer (is dockerd running?)"
if ! docker image inspect "$IMAGE" >/dev/null 2>&1; then
    echo "== $IMAGE is missing: deploy/build-images.sh"
    TAG="$TAG" deploy/build-images.sh
fi

container() { echo "$run-$1"; }
cleanup() {
    local rc=$?
    if [ "$rc" != 0 ]; then
        for i in $(seq 1 $N); do
            echo "---- logs of bft-agent-$i (last 20 lines)" >&2
            docker logs --tail 20 "$(container "$i")" >&2 2>&1 || true
        done
    fi
    for i in $(seq 1 $N); do docker rm -f "$(container "$i")" >/dev/null 2>&1 || true; done
    for i in $(seq 1 $N); do docker volume rm -f "$run-data-$i" >/dev/null 2>&1 || true; done
    docker network rm "$net" >/dev/null 2>&1 || true
    rm -rf "$dir"
    exit "$rc"
}
trap cleanup EXIT

now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
step() { printf '\n== %s\n' "$*"; }

# Polls a command until it succeeds, at most SECS seconds.
wait_for() { # what, secs, command...
    local what=$1 secs=$2
    shift 2
    local end=$((SECONDS + secs))
    until "$@" >/dev/null 2>&1; do
        ((SECONDS < end)) || die "timed out after ${secs}s waiting for: $what"
        sleep 0.5
    done
}

# bftctl in a container on the cluster's network, reading the client's view of the cluster.
ctl() {
    local command=$1
    shift
    docker run --rm --network "$net" --read-only --cap-drop ALL --security-opt no-new-privileges \
        -v "$dir/client:/cluster:ro" --entrypoint bftctl "$IMAGE" \
        "$command" --cluster /cluster "$@"
}

# Fields of `bftctl status --json`: python3 reads it from stdin.
status_json() { ctl status --json; }
active_count() { status_json | python3 -c 'import json, sys; print(sum(r["status"] == "active" for r in json.load(sys.stdin)))'; }
primary() { status_json | python3 -c 'import json, sys
print(next(r["id"].rsplit("-", 1)[1] for r in json.load(sys.stdin) if r.get("role") == "primary"))'; }
all_active() { [ "$(active_count)" = "$1" ]; }
# Every listed member answers and has executed at least SEQ.
executed_at_least() { # seq, members...
    local seq=$1
    shift
    status_json | python3 -c 'import json, sys
want, members = int(sys.argv[1]), set(sys.argv[2:])
rows = {r["id"].rsplit("-", 1)[1]: r for r in json.load(sys.stdin)}
sys.exit(0 if all(rows[m]["status"] == "active" and rows[m]["last_executed"] >= want for m in members) else 1)' \
        "$seq" "$@"
}
max_executed() { status_json | python3 -c 'import json, sys
print(max(r.get("last_executed", 0) for r in json.load(sys.stdin)))'; }

# A replica's /metrics, from the host through its address on the network.
metrics_of() { # id
    local ip
    ip=$(docker inspect -f "{{(index .NetworkSettings.Networks \"$net\").IPAddress}}" "$(container "$1")")
    curl -fsS --max-time 5 "http://$ip:9100/metrics"
}

# Runs a closed-loop bench of COUNT transfers; prints its line and fails unless all were committed.
committed_total=0
bench() { # count, label
    local count=$1 label=$2 out
    out=$(ctl bench --count "$count" --clients "$ACCOUNTS" --json) || die "$label: bench failed"
    read -r committed rejected tps p50 p99 < <(python3 -c 'import json, sys
r = json.loads(sys.argv[1])
print(r["committed"], r["rejected"], round(r["tx_per_sec"]), round(r["latency_ms"]["p50"], 1), round(r["latency_ms"]["p99"], 1))' "$out")
    echo "$label: $committed of $count committed, $rejected rejected, $tps tx/s, latency p50 $p50 ms, p99 $p99 ms"
    [ "$committed" = "$count" ] || die "$label: only $committed of $count transfers committed"
    committed_total=$((committed_total + committed))
}

# -- The cluster's files: keys, membership, genesis, and the client's view ------------------------------------------
step "keys, membership and genesis for $N replicas and $ACCOUNTS accounts (bftctl keygen in $IMAGE)"
mkdir -p "$dir/keys" "$dir/client"
keygen() { # name -> public key (hex) on stdout, the PEM in $dir/keys/NAME.pem
    docker run --rm --read-only --network none --user "$(id -u):$(id -g)" -v "$dir/keys:/out" \
        --entrypoint bftctl "$IMAGE" keygen --out "/out/$1.pem"
}
for i in $(seq 1 $N); do keygen "replica-$i" >"$dir/keys/replica-$i.pub"; done
for a in $(seq 1 $ACCOUNTS); do keygen "account-$a" >"$dir/keys/account-$a.pub"; done
python3 - "$dir" "$N" "$ACCOUNTS" <<'EOF'
import base64, json, sys
d, n, accounts = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
read = lambda name: open(f"{d}/keys/{name}").read().strip()
members = [{"id": i, "address": f"bft-agent-{i}:7000", "public_key": read(f"replica-{i}.pub")}
           for i in range(1, n + 1)]
balance = 1_000_000_000
genesis = [{"account": read(f"account-{a}.pub"), "balance": balance} for a in range(1, accounts + 1)]
json.dump(members, open(f"{d}/members.json", "w"), indent=2)
json.dump(genesis, open(f"{d}/genesis.json", "w"), indent=2)
# The client (bftctl --cluster) reads replica-<id>.json for the membership and accounts.json for payers' keys:
# the 32-byte seed follows a 16-byte header in an Ed25519 PKCS#8 document.
for m in members:
    config = {"id": m["id"], "key_file": "/unused", "members": members, "genesis": genesis,
              "data_dir": "/unused", "listen": "0.0.0.0:7000"}
    json.dump(config, open(f"{d}/client/replica-{m['id']}.json", "w"), indent=2)
def seed(name):
    pem = "".join(l for l in read(name).splitlines() if not l.startswith("-----"))
    return base64.b64decode(pem)[16:48].hex()
json.dump({"secrets": [seed(f"account-{a}.pem") for a in range(1, accounts + 1)], "balance": balance},
          open(f"{d}/client/accounts.json", "w"), indent=2)
EOF
# Each replica sees its own key only, readable by the image's user alone (as a Secret with defaultMode 0400 and
# fsGroup would give it on Kubernetes).
for i in $(seq 1 $N); do
    mkdir -p "$dir/replica-$i"
    cp "$dir/keys/replica-$i.pem" "$dir/replica-$i/key.pem"
    if [ "$(id -u)" = 0 ]; then
        chown 65532:65532 "$dir/replica-$i/key.pem"
        chmod 0400 "$dir/replica-$i/key.pem"
    else
        chmod 0444 "$dir/replica-$i/key.pem" # test keys; a non-root user cannot hand the file to uid 65532
    fi
done

# -- Start ---------------------------------------------------------------------------------------------------------
step "$N replica containers on the private network $net"
docker network create "$net" >/dev/null
start_replica() { # id
    local i=$1
    docker volume create "$run-data-$i" >/dev/null
    docker run -d --name "$(container "$i")" --hostname "bft-agent-$i" \
        --network "$net" --network-alias "bft-agent-$i" \
        --read-only --cap-drop ALL --security-opt no-new-privileges --stop-timeout "$STOP_GRACE" \
        -v "$run-data-$i:/var/lib/bft" \
        -v "$dir/replica-$i:/etc/bft/key:ro" \
        -v "$dir/members.json:/etc/bft/members.json:ro" \
        -v "$dir/genesis.json:/etc/bft/genesis.json:ro" \
        -e BFT_ID="$i" -e BFT_VIEW_CHANGE_TIMEOUT_MS="$VIEW_CHANGE_TIMEOUT_MS" \
        "$IMAGE" >/dev/null
}
t=$(now)
for i in $(seq 1 $N); do start_replica "$i"; done
wait_for "$N replicas to answer" 60 all_active $N
echo "all $N replicas active in $(since "$t") s"
ctl status

step "1. the cluster commits transfers"
bench 200 "all $N up"

step "2. kill the primary (SIGKILL): the others elect a new one and keep committing"
killed=$(primary)
docker kill "$(container "$killed")" >/dev/null
t=$(now)
bench 200 "bft-agent-$killed killed"
echo "first 200 transfers after the kill committed $(since "$t") s after it (view-change timeout ${VIEW_CHANGE_TIMEOUT_MS} ms)"
for i in $(seq 1 $N); do
    [ "$i" = "$killed" ] && continue
    echo "bft-agent-$i reports: $(metrics_of "$i" | grep -E '^bft_(members_reachable|quorum_healthy) ' | tr '\n' ' ')"
done
ctl status
docker start "$(container "$killed")" >/dev/null
t=$(now)
target=$(max_executed)
# The restarted replica catches up to where the others were: through state transfer and new traffic.
others=$(seq 1 $N | tr '\n' ' ')
bench 50 "bft-agent-$killed restarting"
# shellcheck disable=SC2086
wait_for "bft-agent-$killed to restart and catch up to sequence $target" 60 executed_at_least "$target" $others
echo "bft-agent-$killed restarted from its volume and caught up to sequence $target in $(since "$t") s"

step "3. disconnect the primary from the network: the others keep committing"
cut=$(primary)
docker network disconnect "$net" "$(container "$cut")"
t=$(now)
bench 200 "bft-agent-$cut disconnected"
echo "first 200 transfers after the disconnect committed $(since "$t") s after it"
# What the others report of the cut-off member (informative: how soon a silent peer stops counting as reachable).
for i in $(seq 1 $N); do
    [ "$i" = "$cut" ] && continue
    echo "bft-agent-$i reports: $(metrics_of "$i" | grep -E '^bft_(members_reachable|quorum_healthy) ' | tr '\n' ' ')"
done
ctl status
docker network connect --alias "bft-agent-$cut" "$net" "$(container "$cut")"
t=$(now)
target=$(max_executed)
bench 50 "bft-agent-$cut reconnected"
# shellcheck disable=SC2086
wait_for "bft-agent-$cut to catch up to sequence $target" 60 executed_at_least "$target" $others
echo "bft-agent-$cut reconnected and caught up to sequence $target in $(since "$t") s"
ctl status
ctl health

step "4. /metrics on every container, and who runs the replicas"
for i in $(seq 1 $N); do
    c=$(container "$i")
    ip=$(docker inspect -f "{{(index .NetworkSettings.Networks \"$net\").IPAddress}}" "$c")
    metrics=$(metrics_of "$i") || die "bft-agent-$i: no /metrics at $ip:9100"
    grep -q '^bft_quorum_healthy 1$' <<<"$metrics" || die "bft-agent-$i: /metrics does not say bft_quorum_healthy 1"
    curl -fsS --max-time 5 "http://$ip:9100/readyz" >/dev/null || die "bft-agent-$i: /readyz is not ready"
    pid=$(docker inspect -f '{{.State.Pid}}' "$c")
    uid=$(awk '/^Uid:/ { print $2 }' "/proc/$pid/status" 2>/dev/null || echo "?")
    echo "bft-agent-$i: /metrics $(grep -c '^bft_' <<<"$metrics") samples, $(grep '^bft_last_executed_sequence ' <<<"$metrics"), /readyz ready, uid $uid, read-only root $(docker inspect -f '{{.HostConfig.ReadonlyRootfs}}' "$c")"
    [ "$uid" = "?" ] || [ "$uid" = 65532 ] || die "bft-agent-$i runs as uid $uid, not 65532"
done

step "5. SIGTERM: every container stops gracefully"
for i in $(seq 1 $N); do
    c=$(container "$i")
    t=$(now)
    docker stop -t "$STOP_GRACE" "$c" >/dev/null
    secs=$(since "$t")
    code=$(docker inspect -f '{{.State.ExitCode}}' "$c")
    [ "$code" = 0 ] || die "bft-agent-$i exited with $code on SIGTERM (137 is Docker's SIGKILL after ${STOP_GRACE}s)"
    docker logs "$c" 2>&1 | grep -q "shutting down" || die "bft-agent-$i did not log its shutdown"
    echo "bft-agent-$i stopped in $secs s, exit code 0"
done

echo
echo "smoke test: passed: $N containers of $IMAGE ($(docker image inspect -f '{{.Size}}' "$IMAGE" | awk '{ printf "%.1f MiB", $1 / 1048576 }')), $committed_total transfers committed, survived a killed primary and a disconnected primary"
