#!/usr/bin/env bash
# The reference drill of SCENARIO.md on the deterministic simulator (scripts/drill.sh runs it on real processes):
# 7 replicas (F = 2, quorum 5) with real Ed25519 signatures on every message, 1,000 signed transfers from
# 50 clients, agent 5 corrupting signatures and agent 6 double-spending, then agent 1 (the primary) censoring next to agent 5, which forces a view change
# to agent 2; then 20 seeds of the same under a hostile network.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null 2>&1; then
    echo "scripts/drill-sim.sh: cargo is not installed; install a Rust toolchain (rustup) first" >&2
    exit 1
fi
cargo build --release --locked --bin bft-sim
sim=target/release/bft-sim
if [ -n "${CARGO_TARGET_DIR:-}" ]; then sim="$CARGO_TARGET_DIR/release/bft-sim"; fi

echo "== Steps 1-8: 7 replicas, 1,000 transfers, agent 5 corrupts signatures, agent 6 double-spends"
"$sim" --seeds 1 --replicas 7 --clients 50 --transfers 20 --calm \
    --member 5=corrupt-signatures --member 6=double-spend --json
echo "== Step 10: agent 1, the primary, censors (with agent 5 still corrupting): view change to agent 2"
"$sim" --seeds 1 --replicas 7 --clients 50 --transfers 20 --calm \
    --member 1=censor --member 5=corrupt-signatures --json
echo "== The same under a hostile network (loss, duplication, partitions, crashes), 20 seeds"
"$sim" --seeds 20 --replicas 7 --byzantine 2 --clients 10 --transfers 10
