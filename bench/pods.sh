#!/usr/bin/env bash
# Pod benchmark: starts a release-build node on the local control plane, publishes the
# hello and sleep guests, then runs bench/pods.rs (bind -> Running p50/p99, a burst of pods
# at once, idle guests) and reads the agent's RSS with the idle guests running.
# Usage: bench/pods.sh [SEQ=30] [BURST=100] [IDLE=500]. Prints numbers; asserts nothing.
# SPINNERS=N: N pods of a guest that spins (examples/guests/spin.c) run on the node for the
# whole measurement (the issue's "busy neighbour" is SPINNERS=2).
# BENCH_AGENT_FLAGS: extra agent flags, e.g. `--image-gc-high-threshold 100` on a disk
# fuller than 85%, where image GC removes the image between sequential pods (each then
# pulls it again, as the kubelet would).
set -euo pipefail
cd "$(dirname "$0")/.."
SEQ=${1:-30} BURST=${2:-100} IDLE=${3:-500}
. bench/lib.sh
bench_setup --example bench-pods
trap 'kubectl delete pods -l "bench in (krustlet,krustlet-spin)" --grace-period=0 --force >/dev/null 2>&1 || true; stop_node' EXIT
publish hello
publish sleep
SPINNERS=${SPINNERS:-0}
[ "$SPINNERS" -gt 0 ] && publish spin
# shellcheck disable=SC2086
start_node "kw-bench-pods-$$" 10298 --max-pods $(( (IDLE > BURST ? IDLE : BURST) + 50 )) ${BENCH_AGENT_FLAGS:-}
echo "agent idle RSS before pods: $(awk '/VmRSS/ {print $2, $3}' /proc/$PID/status)"
for i in $(seq "$SPINNERS"); do
  kubectl apply -f - >/dev/null <<YAML
apiVersion: v1
kind: Pod
metadata: {name: bench-spin-$i, labels: {bench: krustlet-spin}}
spec:
  nodeSelector: {kubernetes.io/hostname: $NAME}
  tolerations: [{key: kubernetes.io/arch, operator: Exists}]
  containers: [{name: spin, image: $KRUSTLET_TEST_REGISTRY/bench/spin:v1}]
YAML
done
if [ "$SPINNERS" -gt 0 ]; then
  kubectl wait --for=condition=Ready pod -l bench=krustlet-spin --timeout=60s >/dev/null
  echo "$SPINNERS spinning guests running beside the measured pods"
fi
coproc BENCH { target/release/examples/bench-pods "$NAME" "$KRUSTLET_TEST_REGISTRY/bench/hello:v1" "$KRUSTLET_TEST_REGISTRY/bench/sleep:v1" "$SEQ" "$BURST" "$IDLE" 2>&1; }
BENCH_CHILD=$BENCH_PID
while IFS= read -r line <&"${BENCH[0]}"; do
  echo "$line"
  if [ "$line" = SEQ_START ] || [ "$line" = SEQ_END ]; then
    python3 bench/server_time.py snap "$DIR/$line.metrics" || true
    [ "$line" = SEQ_END ] && { python3 bench/server_time.py diff "$DIR/SEQ_START.metrics" "$DIR/SEQ_END.metrics" || true; }
    echo >&"${BENCH[1]}"
    continue
  fi
  if [ "$line" = WARM_READY ]; then
    sleep 5
    WARM_KB=$(awk '/VmRSS/ {print $2}' /proc/$PID/status)
    echo "agent RSS warm (one pod run and deleted): $WARM_KB kB"
    echo >&"${BENCH[1]}"
    continue
  fi
  if [ "$line" = IDLE_READY ]; then
    sleep 5
    echo "agent RSS with $IDLE idle guests: $(awk '/VmRSS/ {print $2, $3}' /proc/$PID/status); threads: $(awk '/Threads/ {print $2}' /proc/$PID/status)"
    echo "agent CPU with $IDLE idle guests over 30 s: $(cpu_percent 30) % of a core"
    echo >&"${BENCH[1]}"
  fi
done
wait "$BENCH_CHILD" 2>/dev/null || true
# The agent's own breakdown (krustlet_pod_start_phase_seconds), mean per phase over every
# start of the run; per-pod percentiles: bench/phases.py on the agent log (see there).
kubectl get --raw "/api/v1/nodes/$NAME/proxy/metrics" 2>/dev/null |
  awk -F'[{}" ]+' '/^krustlet_pod_start_phase_seconds_sum/ {s[$3]=$4} /^krustlet_pod_start_phase_seconds_count/ {c[$3]=$4}
    END {for (p in s) if (c[p]) printf "start phase %-9s mean %.2f ms over %d starts\n", p, s[p] / c[p] * 1000, c[p]}' | sort || true
sleep 5
AFTER_KB=$(awk '/VmRSS/ {print $2}' /proc/$PID/status)
echo "agent RSS after deleting every pod: $AFTER_KB kB (anonymous $(awk '/RssAnon/ {print $2, $3}' /proc/$PID/status)), $(awk -v a="$AFTER_KB" -v w="${WARM_KB:-0}" 'BEGIN {if (w) printf "%.2f", a / w; else print "?"}')x the warm agent"
echo "agent warnings/errors: $(grep -c -E 'WARN|ERROR' "$DIR/err" || true)"
