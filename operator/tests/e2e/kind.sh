#!/usr/bin/env bash
# The end-to-end suite on a real cluster: creates a kind cluster (three workers, so placement can spread),
# builds the images (deploy/build-images.sh), loads them, installs the CRD and the operator (the Helm chart when
# helm exists, else the kustomize base deploy/), and runs the #[ignore]d tests of
# operator/tests/e2e.rs against it. Needs Docker, kind and kubectl. Keeps the cluster unless KEEP=0.
#
#   operator/tests/e2e/kind.sh            # create, install, test
#   KUBECONFIG=... cargo test -p bft-operator --test e2e -- --ignored --test-threads 1   # against any cluster
set -euo pipefail
cd "$(dirname "$0")/../../.."

CLUSTER="${CLUSTER:-bft-e2e}"
KEEP="${KEEP:-1}"
die() { echo "kind.sh: $*" >&2; exit 1; }
for tool in docker kind kubectl cargo; do
    command -v "$tool" >/dev/null 2>&1 || die "$tool is not installed"
done

if ! kind get clusters | grep -qx "$CLUSTER"; then
    cat <<YAML | kind create cluster --name "$CLUSTER" --config -
kind: Cluster
apiVersion: kind.x-k8s.io/v1alpha4
nodes:
  - role: control-plane
  - role: worker
    labels: {topology.kubernetes.io/zone: a}
  - role: worker
    labels: {topology.kubernetes.io/zone: b}
  - role: worker
    labels: {topology.kubernetes.io/zone: c}
YAML
fi
kubeconfig="$(mktemp)"
trap 'rm -f "$kubeconfig"; [ "$KEEP" = 1 ] || kind delete cluster --name "$CLUSTER"' EXIT
kind get kubeconfig --name "$CLUSTER" >"$kubeconfig"
export KUBECONFIG="$kubeconfig"

[ -x deploy/build-images.sh ] || die "deploy/build-images.sh is missing: it builds bft-replica:dev and bft-operator:dev"
deploy/build-images.sh
kind load docker-image --name "$CLUSTER" bft-replica:dev bft-operator:dev

kubectl apply --server-side -f crds/
if command -v helm >/dev/null 2>&1; then
    kubectl create namespace bft-e2e --dry-run=client -o yaml | kubectl apply -f -
    helm upgrade --install bft-operator charts/bft-operator --namespace bft-system --create-namespace \
        --set image.tag=dev --set image.pullPolicy=Never --set watchNamespace=bft-e2e --wait
else
    kubectl apply --server-side -k deploy/
fi
# Every operator pod is ready, leader or standby (`bft_operator_leader` says which leads).
kubectl -n bft-system wait deployment/bft-operator --for=condition=Available --timeout=180s

cargo test -p bft-operator --test e2e -- --ignored --test-threads 1 --nocapture
