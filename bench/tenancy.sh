#!/usr/bin/env bash
# Tenancy (issue 18), the node's resources: a release-build node joined to the local
# control plane. Prints numbers; asserts nothing.
#  (a) a busy guest (spin) under limits.cpu 200m: its CPU over 10 s, from the kubelet API's
#      /stats/summary (usageCoreNanoSeconds), and the agent process's own CPU meanwhile;
#  (b) two unlimited busy guests beside hello (a line a second) for SECONDS: the gaps
#      between hello's lines (p50, p99, worst, from the CRI log's timestamps), and meanwhile
#      the latency of `kubectl logs --tail 1`, of an HTTP GET to a served pod (what an
#      httpGet probe does) and of the kubelet API's /healthz (TLS, the admin's certificate),
#      and the intervals between the node's Lease renewals (10 s expected);
#  (c) the wasi:http pod with limits.memory 64Mi under 30 concurrent /grow?mb=20: the
#      agent's RSS growth (its VmRSS sampled every 10 ms, the most above the level before)
#      and the answers by status.
#
#   bench/tenancy.sh [SECONDS=30]     BENCH_PORT (default 10525): the agent's port
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-30}
PORT=${BENCH_PORT:-10525}
HTTP_PORT=20525

. bench/lib.sh
bench_setup
trap 'stop_node' EXIT
for g in spin hello; do publish "$g"; done
COMPONENTS=$(bash examples/build-components.sh target/guests 2>/dev/null | tail -n 1)
"$BIN" push --insecure-registries "$KRUSTLET_TEST_REGISTRY" "$COMPONENTS/http_hello.wasm" \
  "$KRUSTLET_TEST_REGISTRY/bench/http_hello:v1" >/dev/null
start_node bench-tenancy "$PORT"
until kubectl get node "$NAME" -o jsonpath='{.spec.taints[*].key}' 2>/dev/null | grep -qv not-ready; do sleep 0.2; done

# pod NAME GUEST ARGS-JSON RESOURCES-JSON [PORT]
pod() {
  local ports=""
  [ -n "${5:-}" ] && ports=", ports: [{containerPort: $5}]"
  kubectl apply -f - >/dev/null <<YAML
apiVersion: v1
kind: Pod
metadata: {name: $1, namespace: default, labels: {bench: krustlet}}
spec:
  automountServiceAccountToken: false
  nodeSelector: {kubernetes.io/hostname: $NAME}
  tolerations: [{key: kubernetes.io/arch, operator: Exists}]
  containers: [{name: main, image: "$KRUSTLET_TEST_REGISTRY/bench/$2:v1", args: $3, resources: $4$ports}]
YAML
  kubectl wait --for=condition=Ready "pod/$1" --timeout=120s >/dev/null
}
summary() { kubectl get --raw "/api/v1/nodes/$NAME/proxy/stats/summary"; }
pod_cpu() { summary | jq -r --arg p "$1" '.pods[] | select(.podRef.name == $p) | .cpu.usageCoreNanoSeconds'; }
now_ms() { date +%s%3N; }
# stats FILE: "p50 p99 max" of the numbers in FILE, one a line.
stats() {
  sort -n "$1" | awk '{a[NR] = $1} END {if (NR == 0) {print "- - -"; exit}
    printf "%d %d %d\n", a[int((NR - 1) * 0.5) + 1], a[int((NR - 1) * 0.99) + 1], a[NR]}'
}

echo "machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg) (shared with other work)"
pod web http_hello '[]' '{limits: {memory: 64Mi}}' "$HTTP_PORT"
until curl -s -o /dev/null "http://127.0.0.1:$HTTP_PORT/"; do sleep 0.2; done

# (a)
pod spin-limited spin '[]' '{limits: {cpu: 200m, memory: 32Mi}}'
sleep 2
c0=$(pod_cpu spin-limited) t0=$(now_ms)
agent=$(cpu_percent 10)
c1=$(pod_cpu spin-limited) t1=$(now_ms)
awk -v c=$((c1 - c0)) -v ms=$((t1 - t0)) -v a="$agent" 'BEGIN {
  printf "(a) spin under limits.cpu 200m: %.1f%% of a core over %.1f s (goal <= 22%%); agent process %s%% meanwhile\n", c / ms / 1e4, ms / 1e3, a }'
kubectl delete pod spin-limited --wait=true >/dev/null

# (b)
pod hello hello '[]' '{}'
pod spin-1 spin '[]' '{}'
pod spin-2 spin '[]' '{}'
sleep 2
: >"$DIR/logs.ms" >"$DIR/http.ms" >"$DIR/healthz.ms" >"$DIR/renew"
end=$((SECONDS + SECS))
(while ((SECONDS < end)); do
  t=$(now_ms); kubectl logs hello --tail 1 >/dev/null; echo $(($(now_ms) - t)) >>"$DIR/logs.ms"; sleep 1
done) &
loops=($!)
(while ((SECONDS < end)); do
  curl -s -o /dev/null -w '%{time_total}\n' "http://127.0.0.1:$HTTP_PORT/" | awk '{printf "%d\n", $1 * 1000}' >>"$DIR/http.ms"
  curl -sk --cert "$KRUSTLET_CP_DIR/pki/admin.crt" --key "$KRUSTLET_CP_DIR/pki/admin.key" -o /dev/null \
    -w '%{time_total}\n' "https://127.0.0.1:$PORT/healthz" | awk '{printf "%d\n", $1 * 1000}' >>"$DIR/healthz.ms"
  sleep 0.5
done) &
loops+=($!)
(while ((SECONDS < end)); do
  kubectl get lease -n kube-node-lease "$NAME" -o jsonpath='{.spec.renewTime}{"\n"}' >>"$DIR/renew"; sleep 0.5
done) &
loops+=($!)
# Only the samplers: a bare `wait` would also wait for the agent start_node left running.
wait "${loops[@]}"
uid=$(kubectl get pod hello -o jsonpath='{.metadata.uid}')
cat "$DIR"/data/logs/default_hello_"$uid"/main/*.log | awk '{print $1}' | while read -r t; do date -d "$t" +%s%3N; done |
  tail -n "$SECS" | awk 'NR > 1 {print $1 - prev} {prev = $1}' >"$DIR/gaps.ms"
uniq "$DIR/renew" | while read -r t; do date -d "$t" +%s%3N; done | awk 'NR > 1 {print $1 - prev} {prev = $1}' >"$DIR/renew.ms"
read -r p50 p99 max < <(stats "$DIR/gaps.ms")
echo "(b) hello beside 2 unlimited spinners for ${SECS}s: gap between lines p50 ${p50} ms, p99 ${p99} ms, worst ${max} ms (goal <= 1050)"
read -r p50 p99 max < <(stats "$DIR/logs.ms")
echo "    kubectl logs --tail 1: p50 ${p50} ms, p99 ${p99} ms, worst ${max} ms"
read -r p50 p99 max < <(stats "$DIR/http.ms")
echo "    HTTP GET to a served pod (an httpGet probe's work): p50 ${p50} ms, p99 ${p99} ms, worst ${max} ms"
read -r p50 p99 max < <(stats "$DIR/healthz.ms")
echo "    the kubelet API's /healthz: p50 ${p50} ms, p99 ${p99} ms, worst ${max} ms"
read -r p50 p99 max < <(stats "$DIR/renew.ms")
echo "    Lease renewals: interval p50 ${p50} ms, worst ${max} ms (every 10000 expected; $(wc -l <"$DIR/renew.ms") seen)"
kubectl delete pod hello spin-1 spin-2 --wait=true >/dev/null

# (c)
sleep 2
base=$(awk '/VmRSS/ {print $2}' "/proc/$PID/status")
(while kill -0 "$PID" 2>/dev/null && [ ! -e "$DIR/flood.done" ]; do
  awk '/VmRSS/ {print $2}' "/proc/$PID/status"; sleep 0.01
done >"$DIR/rss") &
sampler=$!
seq 30 | xargs -P 30 -I{} curl -s -o /dev/null -w '%{http_code}\n' "http://127.0.0.1:$HTTP_PORT/grow?mb=20" >"$DIR/codes"
touch "$DIR/flood.done"
wait "$sampler"
peak=$(sort -n "$DIR/rss" | tail -n 1)
after=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$HTTP_PORT/")
restarts=$(kubectl get pod web -o jsonpath='{.status.containerStatuses[0].restartCount}')
echo "(c) 30 concurrent /grow?mb=20 under limits.memory 64Mi: answers $(sort "$DIR/codes" | uniq -c | awk '{printf "%s x%s ", $2, $1}')"
echo "    agent RSS $((base / 1024)) MB before, peak $((peak / 1024)) MB: grew $(((peak - base) / 1024)) MB (goal <= 80); then GET / -> $after, restarts $restarts"
kubectl delete pod web --wait=false >/dev/null
