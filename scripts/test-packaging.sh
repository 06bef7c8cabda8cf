#!/usr/bin/env bash
# The packaging tests, one after another, and one summary line:
#   rules       promtool check rules + promtool test rules (monitoring/alerts.test.yaml)
#   chart       scripts/check-manifests.py chart: charts/bft-operator without Helm (none on the test machine): values
#               against values.schema.json, the chart's copies of crds/ and monitoring/ identical to them, every
#               file parsed, every template balanced and rendered (a Go-template subset) for three sets of values,
#               and the objects checked (hardening, exactly the RBAC the operator needs, probes, Service). Where
#               helm exists: helm lint charts/bft-operator && helm template charts/bft-operator | kubectl apply
#               --dry-run=client -f -
#   kustomize   kubectl kustomize deploy/, checked the same way (the CRD, the Deployment, the RBAC); deploy/crds/
#               identical to crds/
#   dockerfiles deploy/check-dockerfiles.sh: the from-source and the local Dockerfiles describe the same container
#   images      deploy/build-images.sh: bft-replica:dev (and bft-operator:dev once its binary exists), no registry
#   smoke       deploy/smoke-test.sh: 4 containers commit through a killed and a disconnected primary, SIGTERM
#   dashboard   monitoring/check-dashboard.sh: every queried metric is on a live replica's /metrics
#   live-alert  monitoring/live-alert-test.sh: Prometheus fires and clears BftQuorumAtRisk on a live testnet
# Every test runs even when an earlier one failed (but the smoke test needs the images); the exit status is
# non-zero when any failed. Needs cargo, docker, python3, curl and kubectl (for its kustomize); installs
# Debian's prometheus (promtool) when missing, and Python's jsonschema and PyYAML with pip. CARGO_TARGET_DIR is
# honoured (default: the one .ci/run uses).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/bft-validator/target}"

if ! command -v promtool >/dev/null 2>&1 || ! command -v prometheus >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "== apt-get install prometheus (prometheus, promtool)"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
    else
        echo "scripts/test-packaging.sh: prometheus and promtool are missing: apt-get install prometheus" >&2
        exit 1
    fi
fi

start=$SECONDS
passed=()
failed=()
skipped=()
run() { # name, command...
    local name=$1 t=$SECONDS
    shift
    printf '\n######## %s: %s\n' "$name" "$*"
    if "$@"; then
        passed+=("$name")
        echo "######## $name: passed in $((SECONDS - t)) s"
    else
        failed+=("$name")
        echo "######## $name: FAILED after $((SECONDS - t)) s"
    fi
}
rules() {
    promtool check rules monitoring/alerts.yaml &&
        promtool test rules monitoring/alerts.test.yaml &&
        echo "alerts: $(grep -c '^      - alert:' monitoring/alerts.yaml) alerts, $(grep -c 'eval_time:' monitoring/alerts.test.yaml) checks"
}
python_deps() { # PyYAML and jsonschema, for scripts/check-manifests.py
    if ! python3 -c 'import jsonschema, yaml' 2>/dev/null; then
        echo "== pip install jsonschema pyyaml"
        python3 -m pip install --quiet jsonschema pyyaml
    fi
}
chart() {
    python_deps && python3 scripts/check-manifests.py chart charts/bft-operator
}
kustomize() {
    if ! command -v kubectl >/dev/null 2>&1; then
        echo "scripts/test-packaging.sh: kubectl is missing (its kustomize renders deploy/): install kubectl" >&2
        return 1
    fi
    local copy=deploy/crds/byzantineclusters.bft.dev.yaml
    cmp crds/byzantineclusters.bft.dev.yaml "$copy" ||
        { echo "$copy differs from crds/: cp crds/byzantineclusters.bft.dev.yaml $copy" >&2; return 1; }
    local rendered
    rendered=$(kubectl kustomize deploy/) || return 1
    python_deps && python3 scripts/check-manifests.py kustomize - <<<"$rendered"
}

run rules rules
run chart chart
run kustomize kustomize
run dockerfiles deploy/check-dockerfiles.sh
run images deploy/build-images.sh
if [[ " ${passed[*]} " == *" images "* ]]; then
    run smoke deploy/smoke-test.sh
else
    skipped+=(smoke)
fi
run dashboard monitoring/check-dashboard.sh
run live-alert monitoring/live-alert-test.sh

total=$((${#passed[@]} + ${#failed[@]} + ${#skipped[@]}))
echo
echo "packaging: ${#passed[@]} of $total passed (${passed[*]:-none})${failed:+, failed: ${failed[*]}}${skipped:+, skipped: ${skipped[*]}} in $((SECONDS - start)) s"
[ ${#failed[@]} = 0 ] && [ ${#skipped[@]} = 0 ]
