#!/usr/bin/env bash
# The guide's pod (examples/guide/pod.yaml, its image cached on the node): bound -> serving,
# the time from the pod's creation already bound to a release-build node (spec.nodeName
# set, so no scheduler in the way) to the first `GET /` on the node's 8080 answered
# `Hello, World!`, over N pods one after another (each deleted, and 8080 free again, before
# the next). A first pod pulls the image and is not counted. Prints p50, p99 and the
# slowest; asserts nothing.
#
#   bench/guide-pod.sh [N=20]
#
# The node is on loopback, so the pods' 8080 is this machine's: nothing else may hold it.
# Builds the guide (examples/guide/build.sh) when needed. KRUSTLET_WASI_BIN uses a given
# agent binary instead of the release build (numbers from a debug build are not the goal's).
# BENCH_AGENT_FLAGS: extra agent flags, by default `--image-gc-high-threshold 100`: on a
# disk more than 85% used (as `df` counts it: size minus available) image GC would remove
# the image, and its compiled code, each time a pod goes, and every pod would pull and
# compile again (seconds for this 7 MB module) rather than start from the cached image.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-20}
. bench/lib.sh
bash bootstrap/cluster.sh up >/dev/null
eval "$(bash bootstrap/cluster.sh env)"
if [ -n "${KRUSTLET_WASI_BIN:-}" ]; then
  BIN=$KRUSTLET_WASI_BIN
else
  cargo build --release --quiet --bin krustlet-wasi
  BIN=target/release/krustlet-wasi
fi
DIR=$(mktemp -d)
answers() { [ "$(curl -s --max-time 1 http://127.0.0.1:8080/ 2>/dev/null)" = "Hello, World!" ]; }
if (exec 3<>/dev/tcp/127.0.0.1/8080) 2>/dev/null; then
  echo "bench/guide-pod.sh: something already listens on 127.0.0.1:8080" >&2
  exit 1
fi

WASM=$(examples/guide/build.sh | tail -n 1)
IMAGE="$KRUSTLET_TEST_REGISTRY/bench/guide-http-server:v1"
"$BIN" push --insecure-registries "$KRUSTLET_TEST_REGISTRY" "$WASM" "$IMAGE" >/dev/null
trap 'kubectl delete pods -l bench=krustlet-guide --grace-period=0 --force >/dev/null 2>&1 || true; stop_node' EXIT
# shellcheck disable=SC2086
start_node "kw-bench-guide-$$" 10549 ${BENCH_AGENT_FLAGS---image-gc-high-threshold 100}

# guide_pod NAME: the guide's pod (as examples/guide/pod.yaml), bound to this node.
guide_pod() {
  sed -e "s#@IMAGE@#$IMAGE#" -e "0,/name: wasm-demo-app\$/s//name: $1/" examples/guide/pod.yaml |
    sed -e '/^metadata:/a\  labels: {bench: krustlet-guide}' -e "/^spec:/a\  nodeName: $NAME" |
    kubectl create -f - >/dev/null
}

# one NAME: creates the pod, prints the milliseconds until it answers, those `kubectl
# create` took (counted in the first: the pod is bound somewhere inside them) and those
# after it returned; deletes it.
one() {
  local t0 tc t1
  t0=$(date +%s%N)
  guide_pod "$1"
  tc=$(date +%s%N)
  until answers; do sleep 0.005; done
  t1=$(date +%s%N)
  echo "$(((t1 - t0) / 1000000)) $(((tc - t0) / 1000000)) $(((t1 - tc) / 1000000))"
  kubectl delete pod "$1" --wait=true --timeout=60s >/dev/null
  while (exec 3<>/dev/tcp/127.0.0.1/8080) 2>/dev/null; do sleep 0.05; done
}

first=$(one "guide-bench-pull-$$")
echo "first pod (pulls the image, not counted): ${first%% *} ms"
for i in $(seq "$N"); do one "guide-bench-$$-$i"; done >"$DIR/ms"
# pct COLUMN: p50, p99 and the largest of that column.
pct() {
  cut -d' ' -f"$1" "$DIR/ms" | sort -n | awk '
    { v[NR] = $1 }
    END { i99 = int(NR * 0.99 + 0.999); printf "p50 %d ms, p99 %d ms, slowest %d ms", v[int((NR + 1) / 2)], v[i99], v[NR] }'
}
echo "guide pod bound -> serving over $N pods (cached image): $(pct 1)"
echo "  of which kubectl create (the pod is bound within it): $(pct 2)"
echo "  from kubectl create returning to the answer: $(pct 3)"
echo "agent warnings/errors: $(grep -c -E 'WARN|ERROR' "$DIR/err" || true)"
