#!/usr/bin/env bash
# Stats cost: N idle static pods (the sleeping guest) on a standalone node, release build.
# Prints the agent's CPU over SECONDS with nobody asking for stats, then while
# /stats/summary is fetched every second (15x metrics-server's default rate), and the
# latency of /stats/summary and /metrics/resource (p50, p99 of 50 requests each, curl over
# TLS on loopback). Asserts nothing.
#
#   bench/stats.sh [N=1000] [SECONDS=30]     BENCH_PORT (default 10493): the agent's port
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-1000} SECS=${2:-30}
PORT=${BENCH_PORT:-10493}

. bench/lib.sh
standalone_setup
M=$DIR/m D=$DIR/d
mkdir -p "$M"
for i in $(seq "$N"); do
  printf 'apiVersion: v1\nkind: Pod\nmetadata: {name: idle-%s}\nspec:\n  containers:\n  - {name: main, image: "file://%s/sleep.wasm"}\n' \
    "$i" "$WASM" >"$M/idle-$i.yaml"
done
RUST_LOG=warn "$BIN" --pod-manifest-path "$M" --data-dir "$D" --node-name bench --hostname bench \
  --node-ip 127.0.0.1 --addr 127.0.0.1 --port "$PORT" --healthz-port 0 --allow-anonymous-localhost \
  --max-pods $((N + 10)) --default-memory-limit 16Mi >"$DIR/agent.log" 2>&1 &
PID=$!
start=$SECONDS
until (($(grep -l '"phase":"Running"' "$D"/pods/*/status.json 2>/dev/null | wc -l) >= N)); do
  ((SECONDS - start < 300)) || { tail -n 20 "$DIR/agent.log" >&2; echo "not all $N pods Running in 300 s" >&2; exit 1; }
  sleep 0.5
done
sleep 5
URL="https://127.0.0.1:$PORT"
cpu_over() { # SECONDS [scrape]: agent CPU % of a core
  local before after
  before=$(cpu_ticks)
  if [[ "${2:-}" == scrape ]]; then
    for _ in $(seq "$1"); do curl -sk -o /dev/null "$URL/stats/summary"; sleep 1; done
  else
    sleep "$1"
  fi
  after=$(cpu_ticks)
  awk -v t=$((after - before)) -v hz="$TICKS" -v s="$1" 'BEGIN {printf "%.2f", 100 * t / hz / s}'
}
latency() { # PATH: p50 and p99 in ms of 50 requests
  for _ in $(seq 50); do curl -sk -o /dev/null -w '%{time_total}\n' "$URL$1"; done | sort -n |
    awk '{a[NR] = $1 * 1000} END {printf "p50 %.1f ms, p99 %.1f ms", a[int(NR * 0.5)], a[int(NR * 0.99)]}'
}
echo "machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "$N idle pods, nobody asking:            agent CPU $(cpu_over "$SECS")% of a core"
echo "$N idle pods, /stats/summary each second: agent CPU $(cpu_over "$SECS" scrape)% of a core"
size=$(curl -sk "$URL/stats/summary" | wc -c)
echo "/stats/summary ($size bytes): $(latency /stats/summary)"
echo "/metrics/resource: $(latency /metrics/resource)"
