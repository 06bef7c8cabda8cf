#!/usr/bin/env bash
# The reference drill of SCENARIO.md on one machine, run by the operator's local platform: `bft-operator local`
# reads the same ByzantineCluster YAML as on Kubernetes (deploy/examples/drill.yaml) and runs its members as real
# bft-replica processes talking gRPC over loopback.
#
# 7 replicas (F = 2, quorum 5); agent 5 corrupts signatures (p = 0.5) and agent 6 double-spends (p = 0.3) while
# 1,000 signed transfers run; the replicas detect both with evidence and quarantine them through consensus (the
# detection log and the health report); the operator fences them and replaces them with agents 8 and 9 (fresh
# keys) by a reconfiguration the replicas order themselves; then agent 1, the primary, censors and the replicas
# elect the next primary.
#
# DIR (default: a fresh temporary directory) keeps the cluster's keys, configurations, data, logs and the
# resource's status (status.json, events.jsonl); everything is stopped at the end (KEEP=1 leaves the operator and
# its members running, for `bftctl --cluster DIR ...`).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null 2>&1; then
    echo "scripts/drill.sh: cargo is not installed; install a Rust toolchain (rustup) first" >&2
    exit 1
fi
if ! command -v python3 >/dev/null 2>&1; then
    echo "scripts/drill.sh: python3 is needed to read the cluster's status.json (apt-get install python3)" >&2
    exit 1
fi
cargo build --release --locked --bin bftctl --bin bft-replica --bin bft-operator
bin="${CARGO_TARGET_DIR:-target}/release"
bftctl="$bin/bftctl"
dir="${DIR:-$(mktemp -d /tmp/bft-drill.XXXXXX)}"
cluster="${CLUSTER_FILE:-deploy/examples/drill.yaml}"

"$bin/bft-operator" local "$cluster" --dir "$dir" --replica-binary "$bin/bft-replica" >"$dir/operator.log" 2>&1 &
operator=$!
stop() {
    if [ "${KEEP:-0}" != 1 ]; then
        kill -TERM "$operator" 2>/dev/null && wait "$operator" 2>/dev/null || true
    fi
}
trap stop EXIT

step() { printf '\n== %s\n' "$*"; }

# Waits until the cluster's status (status.json, written by the operator on every change) satisfies a Python
# expression over `s`, or gives up after a time limit with the status and the operator's log.
wait_for() {
    local what="$1" condition="$2" limit="${3:-120}"
    python3 - "$dir/status.json" "$condition" "$limit" "$what" "$operator" <<'EOF' || { tail -20 "$dir/operator.log" >&2; exit 1; }
import json, os, sys, time
path, condition, limit, what, operator = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4], int(sys.argv[5])
deadline = time.monotonic() + limit
s = {}
while True:
    try:
        with open(path) as f:
            s = json.load(f)
        if eval(condition, {}, {"s": s, "member": lambda i: next((m for m in s.get("members", []) if m["id"] == i), {})}):
            break
    except (OSError, ValueError):
        pass
    try:
        os.kill(operator, 0)
    except OSError:
        sys.exit(f"the operator exited while waiting for: {what}")
    if time.monotonic() > deadline:
        sys.exit(f"not reached in {limit:.0f} s: {what}; status: {json.dumps(s)[:2000]}")
    time.sleep(0.1)
EOF
}

summary() {
    python3 - "$dir/status.json" <<'EOF'
import json, sys
s = json.load(open(sys.argv[1]))
print(f"phase {s.get('phase')}  epoch {s.get('epoch', 0)}  view {s.get('view')}  primary {s.get('primary')}  "
      f"healthy {s.get('healthyReplicas')}  quorum {s.get('quorumSize')} (F = {s.get('maxFailures')})  "
      f"committed {s.get('transactionsCommitted', 0)}")
for m in s.get("members", []):
    print(f"  {m['pod']:<14} id {m['id']:<2} {m['state']:<12} {m['role']:<8} key {m.get('publicKey', '')}"
          + ("  fenced" if m.get("fenced") else ""))
r = s.get("replacement")
if r:
    print(f"  replacement {r['name']}: {r['step']} (remove {r['remove']}, add {r['add']})")
EOF
}

step "Steps 1-4: $cluster: 7 replicas, F = 2, quorum 5, the drill's parameters; keys generated, members started"
wait_for "7 healthy members" 's.get("phase") == "Running" and s.get("healthyReplicas") == 7' 120
summary
"$bftctl" status --cluster "$dir"

step "Step 6: agent 5 corrupts signatures (p = 0.5), agent 6 double-spends (p = 0.3)"
"$bftctl" inject-fault --cluster "$dir" --member 5 --fault signature-corruption --probability 0.5
"$bftctl" inject-fault --cluster "$dir" --member 6 --fault double-spend --probability 0.3

step "Step 5: 1,000 signed transfers from 50 clients"
"$bftctl" bench --cluster "$dir" --count 1000 --clients 50

step "Step 7: the detection log (each malicious member quarantined by consensus, with evidence)"
"$bftctl" detections --cluster "$dir" --json

step "Step 8: consensus health"
"$bftctl" health --cluster "$dir" --json

step "Step 9: the operator fences agents 5 and 6 and replaces them with agents 8 and 9 (fresh keys, a new epoch)"
wait_for "agents 5 and 6 removed, 8 and 9 active" \
    'member(5).get("state") == "Removed" and member(6).get("state") == "Removed" and member(8).get("state") == "Active" and member(9).get("state") == "Active" and not s.get("replacement")' 180
summary
grep -E '"(ReplacementStarted|Fenced|Reconfigured|ReplacementDone)"' "$dir/events.jsonl"
"$bftctl" members --cluster "$dir"

step "Step 10: agent 1, the primary, censors (p = 1.0); the backups time out after 5 s and elect the next primary"
"$bftctl" inject-fault --cluster "$dir" --member 1 --fault censorship --probability 1.0
"$bftctl" submit --cluster "$dir" --from 0 --to 1 --amount 1
"$bftctl" view-changes --cluster "$dir" --member 2 --last --json
wait_for "a primary other than agent 1" 's.get("primary") not in (None, "bft-agent-1") and s.get("quorumMet")' 60
summary
"$bftctl" health --cluster "$dir"
echo
echo "cluster in $dir (status.json, events.jsonl, operator.log, replica-*.log)"
