#!/usr/bin/env bash
# Probe cost: N idle static pods (the sleeping guest) on a standalone node, release build,
# first without probes, then each with an httpGet readiness probe and a tcpSocket liveness
# probe every second (against the agent's own healthz port: a real HTTP server, so the
# number is the prober's cost, not a guest's). Prints the agent's CPU (user+system, from
# /proc) over SECONDS in each case, the probes run per second, and the CPU per probe.
# Asserts nothing.
#
#   bench/probes.sh [N=500] [SECONDS=30]     BENCH_PORT (default 10495): the agent's port
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-500} SECS=${2:-30}
PORT=${BENCH_PORT:-10495} HEALTHZ=$((${BENCH_PORT:-10495} + 1000))

. bench/lib.sh
standalone_setup

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
count() { grep -l "$1" "$2"/pods/*/status.json 2>/dev/null | wc -l; }

# run PROBES: starts the agent with N pods (with probes if PROBES=1), waits until all run
# (and, with probes, are ready), then prints the CPU over SECS seconds.
run() {
  local probes=$1 m="$DIR/m$1" d="$DIR/d$1"
  mkdir -p "$m"
  for i in $(seq "$N"); do
    {
      printf 'apiVersion: v1\nkind: Pod\nmetadata: {name: idle-%s}\nspec:\n  containers:\n' "$i"
      printf '  - name: main\n    image: "file://%s/sleep.wasm"\n' "$WASM"
      if ((probes)); then
        printf '    readinessProbe: {httpGet: {host: 127.0.0.1, port: %s, path: /healthz}, periodSeconds: 1}\n' "$HEALTHZ"
        printf '    livenessProbe: {tcpSocket: {host: 127.0.0.1, port: %s}, periodSeconds: 1}\n' "$HEALTHZ"
      fi
    } >"$m/idle-$i.yaml"
  done
  RUST_LOG=warn "$BIN" --pod-manifest-path "$m" --data-dir "$d" --node-name bench --hostname bench \
    --node-ip 127.0.0.1 --addr 127.0.0.1 --port "$PORT" --healthz-port "$HEALTHZ" --max-pods $((N + 10)) \
    --default-memory-limit 16Mi >"$DIR/agent$1.log" 2>&1 &
  PID=$!
  local want='"phase":"Running"'
  ((probes)) && want='"ready":true'
  local start=$SECONDS
  until (($(count "$want" "$d") >= N)); do
    ((SECONDS - start < 300)) || { tail -n 20 "$DIR/agent$1.log" >&2; echo "not all $N pods there in 300 s" >&2; exit 1; }
    sleep 0.5
  done
  sleep 5
  local before after
  before=$(cpu_ticks "$PID")
  sleep "$SECS"
  after=$(cpu_ticks "$PID")
  local rss
  rss=$(awk '/VmRSS/ {print $2}' "/proc/$PID/status")
  kill "$PID"
  wait "$PID" 2>/dev/null || true
  PID=
  awk -v t=$((after - before)) -v hz="$TICKS" -v s="$SECS" -v rss="$rss" \
    'BEGIN {printf "%.2f %.0f\n", 100 * t / hz / s, rss / 1024}'
}

echo "machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"
read -r idle idle_rss < <(run 0)
read -r probed probed_rss < <(run 1)
per_sec=$((2 * N))
echo "$N idle pods, no probes:                agent CPU ${idle}% of a core, RSS ${idle_rss} MB"
echo "$N pods, 2 probes each every second:    agent CPU ${probed}% of a core, RSS ${probed_rss} MB"
awk -v a="$idle" -v b="$probed" -v n="$per_sec" \
  'BEGIN {printf "probes: %d per second; %.1f us of CPU each ((%.2f - %.2f)%% of a core / %d)\n", n, (b - a) / 100 * 1e6 / n, b, a, n}'
