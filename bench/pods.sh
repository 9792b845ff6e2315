#!/usr/bin/env bash
# Pod benchmark: starts a release-build node on the local control plane, publishes the
# hello and sleep guests, then runs bench/pods.rs (bind -> Running p50/p99, a burst of pods
# at once, idle guests) and reads the agent's RSS with the idle guests running.
# Usage: bench/pods.sh [SEQ=30] [BURST=100] [IDLE=500]. Prints numbers; asserts nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
SEQ=${1:-30} BURST=${2:-100} IDLE=${3:-500}
bash bootstrap/cluster.sh up >/dev/null
eval "$(bash bootstrap/cluster.sh env)"
cargo build --release --quiet --bin krustlet-wasi --example bench-pods
BIN=target/release/krustlet-wasi
NAME="kw-bench-pods-$$"
DIR=$(mktemp -d)
cleanup() {
  kill "$PID" 2>/dev/null || true
  kubectl delete pods -l bench=krustlet --grace-period=0 --force >/dev/null 2>&1 || true
  kubectl delete node "$NAME" --ignore-not-found >/dev/null
  kubectl delete csr "$NAME" "$NAME-tls" --ignore-not-found >/dev/null
  rm -rf "$DIR"
}
trap cleanup EXIT
mkdir -p target/guests
for g in hello sleep; do
  clang --target=wasm32-wasi --sysroot=/usr -O2 -Wl,--strip-all -o "target/guests/$g.wasm" "examples/guests/$g.c"
  "$BIN" push --insecure-registries "$KRUSTLET_TEST_REGISTRY" "target/guests/$g.wasm" "$KRUSTLET_TEST_REGISTRY/bench/$g:v1" >/dev/null
done
CONFIG_DIR="$DIR" FILE_NAME=bootstrap.conf bash bootstrap/bootstrap.sh >/dev/null
env -u KUBECONFIG RUST_LOG=warn "$BIN" --node-ip 127.0.0.1 --node-name "$NAME" --hostname "$NAME" --port 10298 \
  --max-pods $((IDLE + 50)) --data-dir "$DIR/data" --bootstrap-file "$DIR/bootstrap.conf" \
  --insecure-registries "$KRUSTLET_TEST_REGISTRY" >"$DIR/out" 2>"$DIR/err" &
PID=$!
until grep -q "BOOTSTRAP:" "$DIR/out"; do sleep 0.05; done
kubectl certificate approve "$NAME-tls" >/dev/null
until kubectl get node "$NAME" >/dev/null 2>&1; do sleep 0.1; done
echo "agent idle RSS before pods: $(awk '/VmRSS/ {print $2, $3}' /proc/$PID/status)"
coproc BENCH { target/release/examples/bench-pods "$NAME" "$KRUSTLET_TEST_REGISTRY/bench/hello:v1" "$KRUSTLET_TEST_REGISTRY/bench/sleep:v1" "$SEQ" "$BURST" "$IDLE" 2>&1; }
BENCH_CHILD=$BENCH_PID
while IFS= read -r line <&"${BENCH[0]}"; do
  echo "$line"
  if [ "$line" = IDLE_READY ]; then
    sleep 5
    echo "agent RSS with $IDLE idle guests: $(awk '/VmRSS/ {print $2, $3}' /proc/$PID/status); threads: $(awk '/Threads/ {print $2}' /proc/$PID/status)"
    echo >&"${BENCH[1]}"
  fi
done
wait "$BENCH_CHILD" 2>/dev/null || true
echo "agent warnings/errors: $(grep -c -E 'WARN|ERROR' "$DIR/err" || true)"
