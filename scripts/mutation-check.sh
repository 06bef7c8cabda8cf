#!/usr/bin/env bash
# The mutation check: does the simulator catch the classic bugs? Each patch in scripts/mutations/ plants one in a
# throw-away copy of HEAD; bft-sim is built from it and run over seeds at N = 4 and N = 7 until a seed fails. A
# mutation the seeds do not catch, or a patch that no longer applies (STALE), fails the check, so the list keeps
# up with the core and a gap in the simulator shows. The unmutated tree runs first: a failure there would make
# every "caught" meaningless. Run by hand before core changes; not part of CI. See scripts/mutations/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD

usage() {
    cat <<EOF
usage: scripts/mutation-check.sh [--seeds N] [--chunk K] [--only NAME]... [--modes LIST] [--no-baseline]
  --seeds N      seeds 0..N-1 per cluster size (default \$MUTATION_SEEDS or 200)
  --chunk K      seeds per bft-sim run (default \$MUTATION_CHUNK or 10); a run stops the hunt once a seed fails
  --only NAME    only this mutation (scripts/mutations/NAME.patch); repeatable
  --modes LIST   what to try, in order, comma-separated: random (random faults) and scenario names (default: random,
                 then every scenario); a mutation's own scenario alone spares the hour the others take at N = 7
  --no-baseline  skip the run of the unmutated tree
Builds into \$MUTATION_TARGET_DIR (default ~/.cache/bft-validator/mutation-target), incrementally across runs.
EOF
}

seeds=${MUTATION_SEEDS:-200}
chunk=${MUTATION_CHUNK:-10}
# The simulator's adversarial scenarios (bft-sim --scenario), tried on what random faults do not catch.
scenarios=(competing-certificates faulty-chunk-servers depose backup-proposal equivocating-primary forged-relay accusation-flood lone-suspicion equivocating-new-primary fabricated-certificate byzzfuzz twins)
# A simulator run ends by simulated time, so only a hang in the core outlives this.
chunk_timeout_s=${MUTATION_CHUNK_TIMEOUT_S:-600}
modes=(random "${scenarios[@]}")
baseline=1
only=()
while [ $# -gt 0 ]; do
    case $1 in
        --seeds) seeds=$2; shift 2 ;;
        --chunk) chunk=$2; shift 2 ;;
        --only) only+=("$2"); shift 2 ;;
        --modes) IFS=, read -r -a modes <<<"$2"; shift 2 ;;
        --no-baseline) baseline=0; shift ;;
        -h | --help) usage; exit 0 ;;
        *) usage >&2; exit 2 ;;
    esac
done
for tool in git cargo timeout; do
    command -v "$tool" >/dev/null 2>&1 || { echo "mutation-check: $tool is not installed" >&2; exit 1; }
done

target=${MUTATION_TARGET_DIR:-$HOME/.cache/bft-validator/mutation-target}
mkdir -p "$target"
work=$(mktemp -d)
tree=$work/tree
# shellcheck disable=SC2317 # only the EXIT trap calls it
cleanup() {
    git -C "$repo" worktree remove --force "$tree" >/dev/null 2>&1 || true
    git -C "$repo" worktree prune
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

mutations=()
if [ ${#only[@]} -gt 0 ]; then
    for name in "${only[@]}"; do
        [ -f "scripts/mutations/$name.patch" ] || { echo "mutation-check: no scripts/mutations/$name.patch" >&2; exit 2; }
        mutations+=("$name")
    done
else
    for patch in scripts/mutations/*.patch; do
        mutations+=("$(basename "$patch" .patch)")
    done
fi
if [ "$baseline" = 1 ]; then mutations=(none "${mutations[@]}"); fi

# One fresh copy of HEAD per mutation, always at the same path: cargo keys its artifacts by the path relative to
# the workspace, so every build reuses the dependencies and only recompiles the crate.
fresh_tree() {
    git -C "$repo" worktree remove --force "$tree" >/dev/null 2>&1 || true
    rm -rf "$tree"
    git -C "$repo" worktree add --quiet --detach "$tree" HEAD
}

# Runs seeds FIRST..FIRST+COUNT-1 at the current size and mode (random faults with B Byzantine members and a
# reconfiguration, or one of the simulator's adversarial scenarios on an honest cluster); bft-sim's text output
# goes to $work/out, stderr to $work/err.
run_seeds() {
    local how=(--byzantine "$b" --reconfigure)
    if [ "$mode" != random ]; then how=(--byzantine 0 --scenario "$mode"); fi
    timeout "$chunk_timeout_s" "$work/bft-sim" --replicas "$n" "${how[@]}" \
        --first-seed "$1" --seeds "$2" >"$work/out" 2>"$work/err"
}

# bft-sim exits 1 after printing "seed S FAILED" then "  violation: ..." or "  liveness: ..." lines: the first
# failing seed and its first finding, tab-separated.
first_failure() {
    awk '/^seed [0-9]+ FAILED/ && seed == "" { seed = $2 }
         seed != "" && /^  (violation|liveness): / { sub(/^  /, ""); print seed "\t" $0; exit }' "$work/out"
}

# Sets found_seed and found_text from a run that failed.
read_failure() {
    IFS=$'\t' read -r found_seed found_text < <(first_failure) || true
    if [ -z "$found_seed" ]; then found_seed="?" found_text="bft-sim exited 1 without naming a seed"; fi
}

# A panic (a failed assertion in the core counts as caught) names where and why on the two lines it prints.
panic_text() {
    awk '/panicked at/ { sub(/.*panicked at /, ""); sub(/:$/, ""); where = $0; getline; print "panic: " $0 " (" where ")"; found = 1; exit }
         { last = $0 } END { if (!found) print last }' "$work/err"
}

# Hunts for the first failing seed at N = $n, B = $b; sets found_seed and found_text (empty when none failed).
hunt() {
    found_seed="" found_text=""
    local first=0 count status seed
    while [ "$first" -lt "$seeds" ]; do
        count=$((seeds - first < chunk ? seeds - first : chunk))
        status=0
        run_seeds "$first" "$count" || status=$?
        case $status in
            0) ;;
            1) read_failure; return ;;
            124) found_seed="$first-$((first + count - 1))" found_text="no verdict within ${chunk_timeout_s} s (a hang?)"; return ;;
            *)
                # A crash ends the run without naming the seed: take the chunk's seeds one at a time.
                for ((seed = first; seed < first + count; seed++)); do
                    status=0
                    run_seeds "$seed" 1 || status=$?
                    case $status in
                        0) ;;
                        1) read_failure; return ;;
                        *) found_seed=$seed found_text="$(panic_text) (exit $status)"; return ;;
                    esac
                done
                found_seed="$first-$((first + count - 1))" found_text="crashed run together, not one by one (exit $status)"
                return
                ;;
        esac
        first=$((first + count))
    done
}

rows=()
failed=0
row() { rows+=("$(printf '%-30s %-3s %-7s %-7s %-23s %s' "$@")"); }
shorten() { if [ ${#1} -gt 110 ]; then echo "${1:0:107}..."; else echo "$1"; fi; }

for name in "${mutations[@]}"; do
    fresh_tree
    if [ "$name" != none ] && ! git -C "$tree" apply "$repo/scripts/mutations/$name.patch" 2>"$work/apply.log"; then
        echo "== $name: STALE, the patch no longer applies to HEAD: $(head -n 1 "$work/apply.log")" >&2
        row "$name" - STALE - "$(shorten "$(head -n 1 "$work/apply.log")")"
        failed=1
        continue
    fi
    start=$SECONDS
    if ! (cd "$tree" && CARGO_TARGET_DIR="$target" cargo build --locked --quiet --profile test --bin bft-sim) \
        >"$work/build.log" 2>&1; then
        echo "== $name: the build failed:" >&2
        grep -m 5 -A 5 '^error' "$work/build.log" >&2 || tail -n 20 "$work/build.log" >&2
        row "$name" - "BUILD" - "the mutated tree does not compile"
        failed=1
        continue
    fi
    # The test profile builds into debug/. A copy, so another run sharing the target dir cannot swap it under us.
    cp "$target/debug/bft-sim" "$work/bft-sim"
    echo "== $name: built in $((SECONDS - start)) s" >&2
    for size in 4:1 7:2; do
        n=${size%:*} b=${size#*:}
        start=$SECONDS
        # Random faults first; what they miss, each adversarial scenario in turn.
        for mode in "${modes[@]}"; do
            hunt
            if [ -n "$found_seed" ]; then break; fi
        done
        if [ -z "$found_seed" ]; then
            echo "   N = $n: not caught in $seeds seeds ($((SECONDS - start)) s)" >&2
            if [ "$name" = none ]; then
                row "$name" "$n" no - - "(passes, as it must)"
            else
                row "$name" "$n" NO - - -
                failed=1
            fi
        else
            echo "   N = $n: caught at seed $found_seed of $mode ($((SECONDS - start)) s): $found_text" >&2
            row "$name" "$n" yes "$found_seed" "$mode" "$(shorten "$found_text")"
            # The unmutated tree failing means the simulator (or HEAD) is broken, not that anything was caught.
            if [ "$name" = none ]; then failed=1; fi
        fi
    done
done

echo
printf '%-30s %-3s %-7s %-7s %-23s %s\n' mutation N caught seed "caught by" "first violation or liveness failure"
printf '%s\n' "${rows[@]}"
echo "$seeds seeds per size and mode (random: N = 4 with 1 Byzantine, N = 7 with 2, --reconfigure; modes in order:" \
    "${modes[*]}); total $((SECONDS / 60)) min $((SECONDS % 60)) s"
exit "$failed"
