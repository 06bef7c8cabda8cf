#!/usr/bin/env bash
# Live alert test: Debian's Prometheus, with monitoring/alerts.yaml loaded, scrapes a local testnet of REPLICAS
# replica processes (default 4; 7 works the same) every second. Stopping F of them (SIGTERM) must make
# BftQuorumAtRisk fire (after its `for: 1m`) and not BftQuorumLost, and BftReplicaDown fire for exactly the
# stopped ones; starting them again must clear it. Every dashboard query must also evaluate on this Prometheus
# without an error.
#
# Installs Debian's prometheus package when prometheus is missing (apt-get, as root). Prints how long the alert took
# to fire and to clear. REPLICAS, BASE_PORT (default 7500) and CARGO_TARGET_DIR are honoured.
set -euo pipefail
cd "$(dirname "$0")/.."

REPLICAS="${REPLICAS:-4}"
F=$(((REPLICAS - 1) / 3))
BASE_PORT="${BASE_PORT:-7500}"
JOB=bft-live

die() { echo "monitoring/live-alert-test.sh: $*" >&2; exit 1; }
command -v cargo >/dev/null 2>&1 || die "cargo is not installed; install a Rust toolchain (rustup) first"
command -v python3 >/dev/null 2>&1 || die "python3 is not installed"
command -v curl >/dev/null 2>&1 || die "curl is not installed"
if ! command -v prometheus >/dev/null 2>&1; then
    { [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; } ||
        die "prometheus is not installed and cannot be (needs root and apt-get): apt-get install prometheus"
    echo "== apt-get install prometheus"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/bft-validator/target}"
cargo build --release --locked -q -p bft-replica -p bft-client --bin bftctl --bin bft-replica
bin="$CARGO_TARGET_DIR/release"

dir=$(mktemp -d /tmp/bft-live-alert.XXXXXX)
prometheus_pid=""
cleanup() {
    local rc=$?
    "$bin/bftctl" testnet down --dir "$dir/testnet" >/dev/null 2>&1 || true
    if [ -n "$prometheus_pid" ]; then
        kill "$prometheus_pid" 2>/dev/null || true
        wait "$prometheus_pid" 2>/dev/null || true
    fi
    if [ "$rc" != 0 ] && [ -f "$dir/prometheus.log" ]; then
        echo "---- prometheus.log (last 20 lines)" >&2
        tail -20 "$dir/prometheus.log" >&2
    fi
    rm -rf "$dir"
    exit "$rc"
}
trap cleanup EXIT

now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
step() { printf '\n== %s\n' "$*"; }
wait_for() { # what, secs, command...
    local what=$1 secs=$2
    shift 2
    local end=$((SECONDS + secs))
    until "$@" >/dev/null 2>&1; do
        ((SECONDS < end)) || die "timed out after ${secs}s waiting for: $what"
        sleep 0.5
    done
}

step "a testnet of $REPLICAS replicas (F = $F)"
"$bin/bftctl" testnet up --replicas "$REPLICAS" --dir "$dir/testnet" --base-port "$BASE_PORT" --accounts 16

port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
prom="http://127.0.0.1:$port"
targets=$(for i in $(seq 0 $((REPLICAS - 1))); do printf '"127.0.0.1:%d",' $((BASE_PORT + 100 + i)); done)
cat >"$dir/prometheus.yml" <<EOF
global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files:
  - $PWD/monitoring/alerts.yaml
scrape_configs:
  - job_name: $JOB
    static_configs:
      - targets: [${targets%,}]
EOF
step "Prometheus $(prometheus --version 2>&1 | awk 'NR == 1 { print $3 }') on $prom, scraping every 1s"
prometheus --config.file="$dir/prometheus.yml" --storage.tsdb.path="$dir/data" \
    --web.listen-address="127.0.0.1:$port" --log.level=warn >"$dir/prometheus.log" 2>&1 &
prometheus_pid=$!

# An instant query's single value ("" when the result is empty).
query() {
    curl -fsS --max-time 5 --get "$prom/api/v1/query" --data-urlencode "query=$1" | python3 -c 'import json, sys
r = json.load(sys.stdin)["data"]["result"]
print(r[0]["value"][1] if r else "")'
}
# The state of an alert: firing, pending or inactive.
alert_state() {
    curl -fsS --max-time 5 "$prom/api/v1/alerts" | python3 -c 'import json, sys
states = [a["state"] for a in json.load(sys.stdin)["data"]["alerts"] if a["labels"]["alertname"] == sys.argv[1]]
print("firing" if "firing" in states else "pending" if states else "inactive")' "$1"
}
is() { [ "$("${@:2}")" = "$1" ]; } # expected, command...
active_alerts() {
    curl -fsS --max-time 5 "$prom/api/v1/alerts" | python3 -c 'import json, sys
def name(a):
    l = a["labels"]
    return " ".join(filter(None, [l["alertname"], l.get("instance")])) + " (" + a["state"] + ")"
print(", ".join(sorted(map(name, json.load(sys.stdin)["data"]["alerts"]))) or "none")'
}

wait_for "Prometheus to be ready" 60 curl -fsS "$prom/-/ready"
wait_for "the rules to load" 30 is ok sh -c "curl -fsS '$prom/api/v1/rules' | python3 -c 'import json, sys; print(\"ok\" if json.load(sys.stdin)[\"data\"][\"groups\"] else \"\")'"
wait_for "$REPLICAS healthy replicas in namespace_job:bft_replicas_healthy:count" 60 \
    is "$REPLICAS" query "namespace_job:bft_replicas_healthy:count{job=\"$JOB\"}"
echo "all $REPLICAS replicas scraped and healthy; alerts: $(active_alerts)"
for alert in BftQuorumAtRisk BftQuorumLost; do
    [ "$(alert_state $alert)" = inactive ] || die "$alert is $(alert_state $alert) on a healthy cluster"
done

step "every dashboard query evaluates on this Prometheus"
python3 - "$prom" "$JOB" monitoring/dashboard.json <<'EOF'
import json, sys, urllib.parse, urllib.request
prom, job, path = sys.argv[1:]
exprs = []
def walk(panels):
    for p in panels:
        exprs.extend((p["title"], t["expr"]) for t in p.get("targets", []) if t.get("expr"))
        walk(p.get("panels", []))
walk(json.load(open(path))["panels"])
empty = []
for title, expr in exprs:
    q = expr.replace("$job", job).replace("$instance", ".*")
    url = f"{prom}/api/v1/query?" + urllib.parse.urlencode({"query": q})
    try:
        answer = json.load(urllib.request.urlopen(url, timeout=10))
    except urllib.error.HTTPError as e:
        sys.exit(f"dashboard panel {title!r}: {q}: {e.read().decode()}")
    if not answer["data"]["result"]:
        empty.append(title)
print(f"{len(exprs)} queries evaluate; {len(exprs) - len(empty)} return data"
      + (f" (empty while nothing has happened yet: {', '.join(sorted(set(empty)))})" if empty else ""))
EOF

stopped=$(seq $((REPLICAS - F + 1)) "$REPLICAS" | tr '\n' ' ')
step "stop F = $F of them (SIGTERM): bft-agent-${stopped% }"
for id in $stopped; do
    pid=$(cat "$dir/testnet/replica-$id.pid")
    kill -TERM "$pid"
    wait_for "bft-agent-$id (pid $pid) to exit" 15 sh -c "! kill -0 $pid"
    rm -f "$dir/testnet/replica-$id.pid"
done
t=$(now)
wait_for "BftQuorumAtRisk to be pending" 30 is pending alert_state BftQuorumAtRisk
pending_secs=$(since "$t")
wait_for "BftQuorumAtRisk to fire" 120 is firing alert_state BftQuorumAtRisk
fire_secs=$(since "$t")
healthy=$(query "namespace_job:bft_replicas_healthy:count{job=\"$JOB\"}")
echo "BftQuorumAtRisk pending after $pending_secs s, firing after $fire_secs s (for: 1m); healthy replicas $healthy"
echo "alerts: $(active_alerts)"
[ "$(alert_state BftQuorumLost)" = inactive ] || die "BftQuorumLost fired with only F replicas stopped"
# BftReplicaDown has the same `for: 1m`: it names exactly the stopped replicas' targets.
down_targets=$(for id in $stopped; do printf '127.0.0.1:%d ' $((BASE_PORT + 99 + id)); done)
firing_down() {
    curl -fsS --max-time 5 "$prom/api/v1/alerts" | python3 -c 'import json, sys
print(" ".join(sorted(a["labels"]["instance"] for a in json.load(sys.stdin)["data"]["alerts"]
                      if a["labels"]["alertname"] == "BftReplicaDown" and a["state"] == "firing")))'
}
wait_for "BftReplicaDown to fire for $down_targets" 30 is "${down_targets% }" firing_down

step "start them again"
for id in $stopped; do
    "$bin/bft-replica" --config "$dir/testnet/replica-$id.json" </dev/null >/dev/null 2>>"$dir/testnet/replica-$id.log" &
    echo $! >"$dir/testnet/replica-$id.pid"
done
t=$(now)
wait_for "BftQuorumAtRisk to clear" 120 is inactive alert_state BftQuorumAtRisk
clear_secs=$(since "$t")
echo "BftQuorumAtRisk cleared $clear_secs s after the restart; healthy replicas $(query "namespace_job:bft_replicas_healthy:count{job=\"$JOB\"}")"
echo "alerts: $(active_alerts)"

echo
echo "live alert test: passed: $REPLICAS replicas, $F stopped: BftQuorumAtRisk fired after $fire_secs s, cleared $clear_secs s after their restart; BftQuorumLost stayed silent"
