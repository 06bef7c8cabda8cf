#!/usr/bin/env bash
# The test command: formatting, lints with warnings denied, and every test of the workspace.
# It needs only the Rust toolchain (cargo with rustfmt and clippy) that the machine ships.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null 2>&1; then
    echo "scripts/test.sh: cargo is not installed; install a Rust toolchain (rustup) first" >&2
    exit 1
fi

# The partition test among the process tests cuts a replica off with iptables rules on loopback: as root (as CI
# runs) install it when the machine lacks it; the test itself fails loudly under CI=true when it cannot use it.
if ! command -v iptables >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "== installing iptables (the partition test needs it)"
    apt-get install -y --no-install-recommends iptables >/dev/null 2>&1 \
        || { apt-get update >/dev/null && apt-get install -y --no-install-recommends iptables; }
fi

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy --all-targets -- -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== cargo test"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo test --workspace --locked 2>&1 | tee "$log"
# One closing line for the whole run: the sum of every test binary's result.
awk '/^test result:/ { passed += $4; failed += $6 } END { printf "tests: %d passed, %d failed\n", passed, failed }' "$log"
