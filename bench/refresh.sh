#!/usr/bin/env bash
# Volume refresh load on the API server: N sleeping pods, each with the default
# service-account volume (a projected token plus the namespace's kube-root-ca.crt
# ConfigMap) and one ConfigMap volume they all share, on a node with --sync-frequency S.
# Counts the ConfigMap GETs the API server served (its apiserver_request_total metric)
# over a window of W seconds once all pods run, and the agent's CPU in that window.
#
#   bench/refresh.sh [N=200] [S=2s] [W=20]     prints numbers; asserts nothing
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-200} SYNC=${2:-2s} WINDOW=${3:-20}
. bench/lib.sh
bench_setup
NS=bench-refresh-$$
trap 'kubectl delete namespace "$NS" --wait=false >/dev/null 2>&1 || true; stop_node' EXIT
publish sleep
start_node "kw-bench-refresh-$$" 10297 --sync-frequency "$SYNC" --max-pods $((N + 10))
kubectl create namespace "$NS" >/dev/null
until kubectl -n "$NS" get serviceaccount default >/dev/null 2>&1; do sleep 0.2; done
kubectl -n "$NS" create configmap shared --from-literal=greeting=hello >/dev/null
for i in $(seq "$N"); do
  cat <<YAML
---
apiVersion: v1
kind: Pod
metadata: {name: p$i, namespace: $NS}
spec:
  nodeSelector: {kubernetes.io/hostname: $NAME}
  tolerations: [{key: kubernetes.io/arch, operator: Exists}]
  containers:
  - name: main
    image: "$KRUSTLET_TEST_REGISTRY/bench/sleep:v1"
    volumeMounts: [{name: shared, mountPath: /shared}]
  volumes: [{name: shared, configMap: {name: shared}}]
YAML
done | kubectl apply -f - >/dev/null
until [[ "$(kubectl -n "$NS" get pods --field-selector=status.phase=Running --no-headers 2>/dev/null | wc -l)" -ge "$N" ]]; do
  sleep 0.5
done
sleep 5 # let the starts' own reads pass
gets() {
  kubectl get --raw /metrics | awk '/^apiserver_request_total\{/ && /resource="configmaps"/ && /verb="GET"/ {s += $NF} END {printf "%d\n", s}'
}
g0=$(gets) c0=$(cpu_ticks)
sleep "$WINDOW"
g1=$(gets) c1=$(cpu_ticks)
hz=$(getconf CLK_TCK)
echo "$N pods, --sync-frequency $SYNC, ${WINDOW} s: $((g1 - g0)) ConfigMap GETs ($(awk -v g=$((g1 - g0)) -v w="$WINDOW" 'BEGIN {printf "%.1f", g / w}')/s), agent CPU $(awk -v t=$((c1 - c0)) -v hz="$hz" -v w="$WINDOW" 'BEGIN {printf "%.1f%%", 100 * t / hz / w}')"
echo "agent warnings/errors: $(grep -c -E 'WARN|ERROR' "$DIR/err" || true)"
