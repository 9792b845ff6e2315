# Shared by the bench scripts: a release-build node joined to the local control plane.
# After start_node: $PID (agent), $NAME (node), $DIR (temp dir), $BIN, registry env.
# BENCH_BIN=PATH runs that agent binary instead of the fresh release build (to compare two
# builds in one session: copy one aside, rebuild, run both).

bench_setup() {
  bash bootstrap/cluster.sh up >/dev/null
  eval "$(bash bootstrap/cluster.sh env)"
  # With BENCH_BIN the tree's agent is not built: it may be another build than that binary.
  if [ -z "${BENCH_BIN:-}" ]; then
    cargo build --release --quiet --bin krustlet-wasi "$@"
  elif [ $# -gt 0 ]; then
    cargo build --release --quiet "$@"
  fi
  BIN=${BENCH_BIN:-target/release/krustlet-wasi}
  DIR=$(mktemp -d)
  mkdir -p target/guests
}

# standalone_setup: for benches of a node without a cluster: the release agent ($BIN), the
# example guests ($WASM, their directory), a temp dir ($DIR) removed at exit with the agent
# ($PID, once started) stopped, and the clock rate of /proc's CPU figures ($TICKS).
standalone_setup() {
  # A KUBECONFIG in the environment (e.g. from `cluster.sh env`) would make the agent join
  # that cluster and wait for its certificate's approval instead of running standalone.
  unset KUBECONFIG
  [ -n "${BENCH_BIN:-}" ] || cargo build --release --quiet --bin krustlet-wasi
  BIN=${BENCH_BIN:-target/release/krustlet-wasi}
  WASM=$(examples/build.sh 2>/dev/null | tail -n 1)
  DIR=$(mktemp -d)
  PID=
  # The agent is waited for before its directory goes: it writes there until it exits.
  trap 'if [ -n "$PID" ]; then kill $PID 2>/dev/null; wait $PID 2>/dev/null; fi; rm -rf "$DIR"' EXIT
  TICKS=$(getconf CLK_TCK)
}

# publish GUEST: compiles examples/guests/GUEST.c and pushes it as bench/GUEST:v1.
publish() {
  clang --target=wasm32-wasi --sysroot=/usr -O2 -Wl,--strip-all -o "target/guests/$1.wasm" "examples/guests/$1.c"
  "$BIN" push --insecure-registries "$KRUSTLET_TEST_REGISTRY" "target/guests/$1.wasm" "$KRUSTLET_TEST_REGISTRY/bench/$1:v1" >/dev/null
}

# start_node NAME PORT [extra agent flags...]: bootstraps, approves, waits for the Node.
start_node() {
  NAME=$1 PORT=$2
  shift 2
  CONFIG_DIR="$DIR" FILE_NAME=bootstrap.conf bash bootstrap/bootstrap.sh >/dev/null
  env -u KUBECONFIG RUST_LOG=${RUST_LOG:-warn} "$BIN" --node-ip 127.0.0.1 --node-name "$NAME" --hostname "$NAME" --port "$PORT" \
    --healthz-port 0 --data-dir "$DIR/data" --bootstrap-file "$DIR/bootstrap.conf" \
    --insecure-registries "$KRUSTLET_TEST_REGISTRY" "$@" >"$DIR/out" 2>"$DIR/err" &
  PID=$!
  until grep -q "BOOTSTRAP:" "$DIR/out"; do sleep 0.05; done
  kubectl certificate approve "$NAME-tls" >/dev/null
  until kubectl get node "$NAME" >/dev/null 2>&1; do sleep 0.1; done
}

# stop_node: stops the agent and removes the node. BENCH_AGENT_LOG=FILE keeps the agent's
# log (set RUST_LOG=debug to see each pod's stages and retries).
stop_node() {
  kill "$PID" 2>/dev/null || true
  [ -n "${BENCH_AGENT_LOG:-}" ] && cp "$DIR/err" "$BENCH_AGENT_LOG"
  kubectl delete node "$NAME" --ignore-not-found >/dev/null
  kubectl delete csr "$NAME" "$NAME-tls" --ignore-not-found >/dev/null
  rm -rf "$DIR"
}

# cpu_ticks: user+system clock ticks the agent has used so far.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$PID/stat"; }

# cpu_percent SECONDS: the agent's CPU over the next SECONDS, in percent of one core.
cpu_percent() {
  local t0 c0
  t0=$(date +%s%3N) c0=$(cpu_ticks)
  sleep "$1"
  awk -v c="$(($(cpu_ticks) - c0))" -v hz="$(getconf CLK_TCK)" -v ms="$(($(date +%s%3N) - t0))" \
    'BEGIN {printf "%.2f", c / hz * 100000 / ms}'
}

# bench_pod NAME IMAGE POLICY ARGS-JSON: a pod for this node (in $BENCH_NS if set).
bench_pod() {
  kubectl apply -f - >/dev/null <<YAML
apiVersion: v1
kind: Pod
metadata: {name: $1, namespace: ${BENCH_NS:-default}, labels: {bench: krustlet}}
spec:
  restartPolicy: $3
  automountServiceAccountToken: false
  nodeSelector: {kubernetes.io/hostname: $NAME}
  tolerations: [{key: kubernetes.io/arch, operator: Exists}]
  containers: [{name: main, image: "$2", args: $4}]
YAML
}
