#!/usr/bin/env bash
# The reference drill of SCENARIO.md on one machine, with real replica processes talking gRPC over loopback:
# 7 replicas (F = 2, quorum 5), 1,000 signed transfers, agent 5 corrupting signatures (p = 0.5) and agent 6
# double-spending (p = 0.3) while they run; both detected with evidence and quarantined through consensus (the
# detection log and the health report); agents 8 and 9, with fresh keys, replace them by a reconfiguration the
# replicas order themselves; then agent 1, the primary, censors and the replicas elect agent 2.
#
# DIR (default: a fresh temporary directory) keeps the cluster's keys, configurations, data and logs;
# the replicas are stopped at the end (KEEP=1 leaves them running for `bftctl --cluster DIR ...`).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null 2>&1; then
    echo "scripts/drill.sh: cargo is not installed; install a Rust toolchain (rustup) first" >&2
    exit 1
fi
cargo build --release --locked --bin bftctl --bin bft-replica
bin="${CARGO_TARGET_DIR:-target}/release"
bftctl="$bin/bftctl"
dir="${DIR:-$(mktemp -d /tmp/bft-drill.XXXXXX)}"
base_port="${BASE_PORT:-7100}"

stop() { [ "${KEEP:-0}" = 1 ] || "$bftctl" testnet down --dir "$dir" >/dev/null 2>&1 || true; }
trap stop EXIT

step() { printf '\n== %s\n' "$*"; }

step "Steps 1-4: 7 replicas, F = 2, quorum 5, drill parameters (view-change timeout 5000 ms, checkpoints every 100, 50 concurrent requests)"
"$bftctl" testnet up --replicas 7 --dir "$dir" --base-port "$base_port" --max-concurrent-requests 50
"$bftctl" status --cluster "$dir"

step "Step 6: agent 5 corrupts signatures (p = 0.5), agent 6 double-spends (p = 0.3)"
"$bftctl" inject-fault --cluster "$dir" --member 5 --fault signature-corruption --probability 0.5
"$bftctl" inject-fault --cluster "$dir" --member 6 --fault double-spend --probability 0.3

step "Step 5: 1,000 signed transfers from 50 clients"
"$bftctl" bench --cluster "$dir" --count 1000 --clients 50

step "Step 7: the detection log (each malicious member quarantined by consensus, with evidence)"
"$bftctl" detections --cluster "$dir" --json
"$bftctl" members --cluster "$dir"

step "Step 8: consensus health"
"$bftctl" health --cluster "$dir" --json

step "Step 9: agents 8 and 9, fresh keys, replace agents 5 and 6 through the protocol (a new epoch)"
"$bftctl" testnet add --dir "$dir" --id 8
"$bftctl" testnet add --dir "$dir" --id 9
"$bftctl" reconfigure --cluster "$dir" --remove 5,6 --add 8,9
"$bftctl" members --cluster "$dir"

step "Step 10: agent 1, the primary, censors (p = 1.0); the backups time out after 5 s and elect agent 2"
"$bftctl" inject-fault --cluster "$dir" --member 1 --fault censorship --probability 1.0
"$bftctl" submit --cluster "$dir" --from 0 --to 1 --amount 1
"$bftctl" view-changes --cluster "$dir" --member 2 --last --json
"$bftctl" status --cluster "$dir"
"$bftctl" health --cluster "$dir"
echo
echo "cluster in $dir (logs: $dir/replica-*.log)"
