#!/usr/bin/env bash
# Benchmark of joining: process start -> node Ready and schedulable (the approval done by
# this script the moment the agent asks), restart with existing credentials -> Ready, and idle RSS.
# Needs the local control plane (bootstrap/cluster.sh up). Prints numbers; asserts nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
eval "$(bash bootstrap/cluster.sh env)"
cargo build --release --quiet
BIN=target/release/krustlet-wasi
NAME="kw-bench-$$"
DIR=$(mktemp -d)
trap 'kill $PID 2>/dev/null || true; kubectl delete node "$NAME" --ignore-not-found >/dev/null; kubectl delete csr "$NAME" "$NAME-tls" --ignore-not-found >/dev/null; rm -rf "$DIR"' EXIT
CONFIG_DIR="$DIR" FILE_NAME=bootstrap.conf bash bootstrap/bootstrap.sh >/dev/null

start_agent() {
  env -u KUBECONFIG RUST_LOG=info "$BIN" --node-ip 127.0.0.1 --node-name "$NAME" --hostname "$NAME" \
    --port 10299 --data-dir "$DIR/data" --bootstrap-file "$DIR/bootstrap.conf" >"$DIR/out" 2>"$DIR/err" &
  PID=$!
}
ready_ms() { # waits for the agent's own "Ready" log line, prints elapsed_ms from it
  until grep -q "node registered and Ready" "$DIR/err"; do sleep 0.01; done
  grep "node registered and Ready" "$DIR/err" | tail -1 | sed 's/.*elapsed_ms=\([0-9]*\).*/\1/'
}

t0=$(date +%s%N)
start_agent
until grep -q "BOOTSTRAP:" "$DIR/out"; do sleep 0.01; done
t_ask=$(( ($(date +%s%N) - t0) / 1000000 ))
kubectl certificate approve "$NAME-tls" >/dev/null
t_approved=$(( ($(date +%s%N) - t0) / 1000000 ))
until kubectl get node "$NAME" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null | grep -q True; do sleep 0.02; done
t_ready=$(( ($(date +%s%N) - t0) / 1000000 ))
# A new Node is tainted node.kubernetes.io/not-ready until the controller manager lifts it.
until ! kubectl get node "$NAME" -o jsonpath='{.spec.taints[*].key}' 2>/dev/null | grep -q not-ready; do sleep 0.02; done
t_sched=$(( ($(date +%s%N) - t0) / 1000000 ))
echo "first join: start -> serving CSR asked: ${t_ask} ms; approved at ${t_approved} ms; Ready seen by kubectl at ${t_ready} ms (approval -> Ready: $((t_ready - t_approved)) ms); not-ready taint lifted at ${t_sched} ms"
sleep 20
echo "idle RSS after 20 s: $(awk '/VmRSS/ {print $2, $3}' /proc/$PID/status)"
kill -TERM $PID; wait $PID || true
: >"$DIR/err"
start_agent
echo "restart with credentials: start -> Ready (agent's own clock): $(ready_ms) ms"
sleep 20
echo "idle RSS after restart + 20 s: $(awk '/VmRSS/ {print $2, $3}' /proc/$PID/status)"
