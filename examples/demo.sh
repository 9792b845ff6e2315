#!/usr/bin/env bash
# The whole cluster flow on the local control plane, each step shown as the command it runs:
# cluster up, bootstrap.sh, start the node, approve its serving CSR, push the hello-world
# guest, `kubectl apply -f examples/pods/hello.yaml`, the wasi:http server
# (`examples/pods/http.yaml`) reached with `kubectl port-forward` and curl, the guide's
# own app (examples/guide: warp on the WasmEdge socket API, built by examples/guide/build.sh)
# run and reached the same way, then `kubectl get nodes -o wide`, `kubectl get pods -o wide`
# and `kubectl logs hello`.
#
#   examples/demo.sh [--keep]
#
# As root on Debian 12, with Rust >= 1.95 on PATH. The first run builds the control plane
# (`bootstrap/cluster.sh install`, about 7 minutes) and the release agent. Without --keep
# the pod, the node and the agent are removed at the end (the control plane stays up:
# `bootstrap/cluster.sh down` stops it); with --keep they stay and the commands to look at
# them are printed. Exits non-zero with a message saying what failed.
#
# Env: KRUSTLET_WASI_BIN  an agent binary to use instead of building the release one
#      DEMO_NODE          node name (default krustlet-demo)
#      DEMO_PORT          kubelet API port (default 10250, else a free one)
set -euo pipefail

TAG=demo HELP_LINES='2,17p'
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh" "$@"
NODE="${DEMO_NODE:-krustlet-demo}"
REGISTRY=127.0.0.1:5000
IMAGE="$REGISTRY/examples/hello:v1" # what examples/pods/hello.yaml runs

# show CMD...: prints the command as a user would type it, then runs it.
show() { printf '$ %s\n' "$*"; "$@"; }
# What the agent made in the cluster goes with it (lib.sh's cleanup calls these).
before_cleanup() { kubectl delete pod hello wasi-http-demo wasm-demo-app --ignore-not-found --wait=true --timeout=20s >/dev/null 2>&1; }
after_cleanup() { kubectl delete node "$NODE" --ignore-not-found >/dev/null 2>&1; }

# 1. The control plane (built once, then cached) and an admin kubeconfig.
if ! "$REPO/bootstrap/cluster.sh" status >/dev/null 2>&1; then
  if [[ ! -x /var/cache/krustlet-wasi/k8s-1.20.2/bin/kube-apiserver && -z "${KRUSTLET_CP_CACHE:-}" ]]; then
    log "installing the control plane (first time only: about 7 minutes)"
    show "$REPO/bootstrap/cluster.sh" install || die "bootstrap/cluster.sh install failed"
  fi
  log "starting the control plane"
  show "$REPO/bootstrap/cluster.sh" up || die "bootstrap/cluster.sh up failed"
fi
eval "$("$REPO/bootstrap/cluster.sh" env)"
command -v kubectl >/dev/null || die "kubectl not found on PATH"

# 2. The agent and the guest.
WORK="$(mktemp -d /tmp/krustlet-demo.XXXXXX)"
agent_binary
build_guests

# 3. A bootstrap kubeconfig (token + RBAC), written into the demo's own directory.
log "preparing TLS bootstrap"
CONFIG_DIR="$WORK/config" show "$REPO/bootstrap/bootstrap.sh" >/dev/null || die "bootstrap/bootstrap.sh failed"

# 4. The node. A previous demo's node of the same name would hold the name: remove it.
kubectl delete node "$NODE" --ignore-not-found >/dev/null
kubectl delete csr "$NODE" "$NODE-tls" --ignore-not-found >/dev/null
if [[ -n "${DEMO_PORT:-}" ]]; then
  free_port "$DEMO_PORT"
  [[ "$PORT" == "$DEMO_PORT" ]] || die "port $DEMO_PORT is in use (DEMO_PORT)"
else
  free_port 10250
fi
log "starting the node"
printf '$ %s\n' "krustlet-wasi --bootstrap-file $WORK/config/bootstrap.conf --data-dir $WORK/data --node-name $NODE --node-ip 127.0.0.1 --port $PORT --insecure-registries $REGISTRY"
env -u KUBECONFIG RUST_LOG="${RUST_LOG:-info}" "$BIN" --bootstrap-file "$WORK/config/bootstrap.conf" \
  --data-dir "$WORK/data" --node-name "$NODE" --hostname "$NODE" --node-ip 127.0.0.1 --port "$PORT" \
  --insecure-registries "$REGISTRY" >"$WORK/agent.log" 2>&1 &
PID=$!

# wait_for SECONDS WHAT CMD...: runs CMD every 0.2 s until it succeeds. On timeout, runs
# the function named by $EXPLAIN (if set) before failing.
wait_for() {
  local seconds=$1 what=$2
  shift 2
  for _ in $(seq $((seconds * 5))); do
    kill -0 "$PID" 2>/dev/null || die "the agent exited while waiting for $what (see its log below)"
    "$@" >/dev/null 2>&1 && return 0
    sleep 0.2
  done
  [[ -z "${EXPLAIN:-}" ]] || "$EXPLAIN" >&2
  die "no $what within $seconds s"
}
# What the cluster says of the node and the pod, for a wait that timed out.
explain() {
  echo "---- kubectl get node $NODE (taints) ----"
  kubectl get node "$NODE" -o 'jsonpath={.spec.taints}{"\n"}' 2>&1
  echo "---- kubectl describe pod hello (last lines) ----"
  kubectl describe pod hello 2>&1 | tail -n 15
}
EXPLAIN=explain

# 5. Its client certificate is approved automatically (bootstrap RBAC); the serving one
# needs an admin, as the agent's BOOTSTRAP line says.
wait_for 60 "BOOTSTRAP line from the agent" grep -q 'BOOTSTRAP: TLS certificate requires manual approval' "$WORK/agent.log"
grep 'BOOTSTRAP:' "$WORK/agent.log" | sed 's/.*\(BOOTSTRAP:\)/\1/' | head -n 2
show kubectl certificate approve "$NODE-tls"
wait_for 60 "Ready node $NODE" grep -q 'node registered and Ready' "$WORK/agent.log"
# Every new Node starts tainted node.kubernetes.io/not-ready; the controller manager lifts
# it once it sees the node Ready, and only then can pods be scheduled onto it.
schedulable() { ! kubectl get node "$NODE" -o 'jsonpath={.spec.taints[*].key}' | grep -q 'node.kubernetes.io/not-ready'; }
wait_for 60 "lifting of the not-ready taint from $NODE by the controller manager" schedulable

# 6. The guest, published where the example manifest looks for it.
log "publishing the hello-world guest"
show "$BIN" push --insecure-registries "$REGISTRY" "$WASM_DIR/hello.wasm" "$IMAGE" || die "push failed"

# 7. The seed's pod.
log "running the pod"
kubectl delete pod hello --ignore-not-found --wait=true --timeout=30s >/dev/null
show kubectl apply -f "$REPO/examples/pods/hello.yaml"
scheduled() { [[ -n "$(kubectl get pod hello -o 'jsonpath={.spec.nodeName}')" ]]; }
wait_for 30 "scheduling of pod hello" scheduled
on="$(kubectl get pod hello -o 'jsonpath={.spec.nodeName}')"
[[ "$on" == "$NODE" ]] ||
  die "pod hello was scheduled to $on, another wasm32-wasi node (delete stale nodes: kubectl delete node $on)"
running() { [[ "$(kubectl get pod hello -o 'jsonpath={.status.phase}')" == Running ]]; }
wait_for 60 "Running pod hello" running
printed() { [[ "$(kubectl logs hello | grep -c '^Hello, World!$')" -ge 3 ]]; }
wait_for 20 "three lines from the pod" printed

# 8. A wasi:http server, reached as the guide reaches its app: port-forward and curl.
log "publishing the wasi:http guest and running it"
show "$BIN" push --insecure-registries "$REGISTRY" "$WASM_DIR/http_hello.wasm" "$REGISTRY/examples/http:v1" ||
  die "push failed"
kubectl delete pod wasi-http-demo --ignore-not-found --wait=true --timeout=30s >/dev/null
show kubectl apply -f "$REPO/examples/runtimeclass.yaml"
show kubectl apply -f "$REPO/examples/pods/http.yaml"
serving() { [[ "$(kubectl get pod wasi-http-demo -o 'jsonpath={.status.phase}')" == Running ]]; }
wait_for 60 "Running pod wasi-http-demo" serving
AGENT_PORT=$PORT
free_port 18080
FORWARD_PORT=$PORT PORT=$AGENT_PORT
log "kubectl port-forward pod/wasi-http-demo $FORWARD_PORT:8080"
kubectl port-forward pod/wasi-http-demo "$FORWARD_PORT:8080" >"$WORK/port-forward.log" 2>&1 &
FORWARD_PID=$!
forwarding() { grep -q 'Forwarding from' "$WORK/port-forward.log"; }
wait_for 30 "kubectl port-forward listening" forwarding
show curl -sS --max-time 10 -w 'HTTP %{http_code}\n' "http://localhost:$FORWARD_PORT/" || die "curl failed"
kill "$FORWARD_PID" 2>/dev/null || true
wait "$FORWARD_PID" 2>/dev/null || true
# Both servers want the node's 8080: the guide's goes next.
show kubectl delete pod wasi-http-demo --wait=true --timeout=30s || die "deleting pod wasi-http-demo failed"

# 9. The guide's app as its readers built it (tokio_wasi + warp_wasi, the WasmEdge socket
# API), its pod as the guide writes it (examples/guide/pod.yaml: no ports, the tolerations).
log "building the guide's HTTP server (the first build takes a few minutes)"
GUIDE_WASM="$("$REPO/examples/guide/build.sh" 2>"$WORK/guide-build.log" | tail -n 1)" ||
  { cat "$WORK/guide-build.log" >&2; die "examples/guide/build.sh failed"; }
GUIDE_IMAGE="$REGISTRY/guide/http-server:v1"
show "$BIN" push --insecure-registries "$REGISTRY" "$GUIDE_WASM" "$GUIDE_IMAGE" || die "push failed"
kubectl delete pod wasm-demo-app --ignore-not-found --wait=true --timeout=30s >/dev/null
printf '$ %s\n' "sed 's#@IMAGE@#$GUIDE_IMAGE#' examples/guide/pod.yaml | kubectl apply -f -"
sed "s#@IMAGE@#$GUIDE_IMAGE#" "$REPO/examples/guide/pod.yaml" | kubectl apply -f - || die "kubectl apply failed"
guide_scheduled() { [[ -n "$(kubectl get pod wasm-demo-app -o 'jsonpath={.spec.nodeName}')" ]]; }
wait_for 30 "scheduling of pod wasm-demo-app" guide_scheduled
on="$(kubectl get pod wasm-demo-app -o 'jsonpath={.spec.nodeName}')"
[[ "$on" == "$NODE" ]] ||
  die "pod wasm-demo-app was scheduled to $on, another wasm32-wasi node (delete stale nodes: kubectl delete node $on)"
guide_running() { [[ "$(kubectl get pod wasm-demo-app -o 'jsonpath={.status.phase}')" == Running ]]; }
wait_for 60 "Running pod wasm-demo-app" guide_running
# The pod declares no port: its program's bind claims 8080, and the agent says so. (By UID:
# an earlier pod of the same name leaves its Events behind for an hour.)
GUIDE_UID="$(kubectl get pod wasm-demo-app -o 'jsonpath={.metadata.uid}')"
claimed() { kubectl get events --field-selector "involvedObject.uid=$GUIDE_UID,reason=PortClaimed" -o name | grep -q .; }
wait_for 60 "pod wasm-demo-app listening on 8080 (its PortClaimed Event)" claimed
# The guide forwards 8080:8080; on this loopback node the pod's 8080 is this machine's.
free_port 18081
FORWARD_PORT=$PORT PORT=$AGENT_PORT
log "kubectl port-forward pod/wasm-demo-app $FORWARD_PORT:8080"
kubectl port-forward pod/wasm-demo-app "$FORWARD_PORT:8080" >"$WORK/guide-forward.log" 2>&1 &
FORWARD_PID=$!
guide_forwarding() { grep -q 'Forwarding from' "$WORK/guide-forward.log"; }
forward_log() { echo "---- kubectl port-forward's output ----"; cat "$WORK/guide-forward.log"; }
EXPLAIN=forward_log wait_for 30 "kubectl port-forward listening" guide_forwarding
show curl -sS --max-time 10 -w '\nHTTP %{http_code}\n' "http://localhost:$FORWARD_PORT/" || die "curl failed"
kill "$FORWARD_PID" 2>/dev/null || true
wait "$FORWARD_PID" 2>/dev/null || true

log "what the cluster shows"
show kubectl get nodes -o wide
echo
show kubectl get pods -o wide
echo
show kubectl logs hello --tail 3

if ((KEEP)); then
  log "the node keeps running (agent pid $PID, files in $WORK). Try:"
  printf '  eval "$(%s env)"\n  kubectl logs -f hello\n' "$REPO/bootstrap/cluster.sh" >&2
  printf '  %s pods --data-dir %s\n' "$BIN" "$WORK/data" >&2
  printf '  kubectl port-forward pod/wasm-demo-app 18081:8080 & curl http://localhost:18081/\n' >&2
  printf 'Stop it with: kubectl delete pod hello wasm-demo-app; kill %s; kubectl delete node %s; rm -rf %s\n' "$PID" "$NODE" "$WORK" >&2
else
  log "cleaning up: the pod, the agent, the node (the control plane stays up)"
  show kubectl delete pod hello wasm-demo-app --wait=true --timeout=40s || die "deleting the pods failed"
  stop_agent
  kubectl delete node "$NODE" >/dev/null || die "deleting node $NODE failed"
  log "done"
fi
