#!/usr/bin/env bash
# Benchmarks of the replica: the core alone, then real processes on loopback for N = 4, 7, 10 and 13 (override
# with SIZES="4 7"): closed-loop throughput and latency at 256 and 8 clients, latency in an open loop at half the
# measured throughput, and the view change after the primary is killed mid-run (from the kill, and from the
# first view-change timer firing, to the first commit in the new view). Prints one JSON object per run and a
# table at the end. Every process shares this machine's cores, so the figures are the whole cluster's on them.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release --locked --bin bftctl --bin bft-replica
bftctl="${CARGO_TARGET_DIR:-target}/release/bftctl"
sizes="${SIZES:-4 7 10 13}"
results="$(mktemp /tmp/bft-bench.XXXXXX.jsonl)"
dir=""
stop() { [ -z "$dir" ] || "$bftctl" testnet down --dir "$dir" >/dev/null 2>&1 || true; }
trap stop EXIT

run() { # label, then bftctl bench arguments
    local label="$1"; shift
    "$bftctl" bench --cluster "$dir" --json "$@" | python3 -c '
import json, sys
report = json.load(sys.stdin); report["run"] = sys.argv[1]
print(json.dumps(report))' "$label" | tee -a "$results"
}

if [ "${SKIP_CORE:-0}" != 1 ]; then
    cargo bench -p bft-core --bench core_throughput --locked
fi
for n in $sizes; do
    dir="$(mktemp -d /tmp/bft-bench-n$n.XXXXXX)"
    "$bftctl" testnet up --replicas "$n" --dir "$dir" --base-port 7400 --view-change-timeout-ms 1000 >/dev/null
    run "closed, 256 clients" --clients 256 --duration 15
    full=$(tail -1 "$results" | python3 -c 'import json,sys; print(json.load(sys.stdin)["tx_per_sec"])')
    run "closed, 8 clients" --clients 8 --duration 8
    half=$(python3 -c "print(round($full / 2))")
    run "open, half load ($half tx/s)" --clients 256 --duration 8 --rate "$half"
    run "primary killed at 3 s" --clients 64 --duration 8 --kill-primary-after 3
    stop
    dir=""
done

python3 - "$results" <<'PY'
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
print()
print("| N | run | tx/s | p50 ms | p90 ms | p99 ms | view change |")
print("|---|---|---|---|---|---|---|")
for r in rows:
    v = r.get("view_change")
    change = ""
    if v:
        after = v.get("timeout_to_first_commit_ms")
        change = f'kill → commit {v["kill_to_first_commit_ms"]:.0f} ms; timer → commit {after:.0f} ms' if after is not None \
            else f'kill → commit {v["kill_to_first_commit_ms"]:.0f} ms'
    lat = r["latency_ms"]
    print(f'| {r["replicas"]} | {r["run"]} | {r["tx_per_sec"]:,.0f} | {lat["p50"]:.1f} | {lat["p90"]:.1f} | {lat["p99"]:.1f} | {change} |')
PY
