#!/usr/bin/env bash
# Fairness: SPINNERS busy-loop guests (never yielding on their own) beside the hello guest,
# whose line every second must keep coming. Standalone static pods, release build. Prints
# the gaps between hello's log lines (the agent stamps each line as it writes it) over
# SECONDS: p50, p99 and the worst, with and without the spinners. Asserts nothing.
#
#   bench/fairness.sh [SPINNERS=2] [SECONDS=60]    BENCH_PORT (default 10497): the agent's port
set -euo pipefail
cd "$(dirname "$0")/.."
SPINNERS=${1:-2} SECS=${2:-60}
PORT=${BENCH_PORT:-10497}

. bench/lib.sh
standalone_setup

manifest() { # NAME GUEST
  printf 'apiVersion: v1\nkind: Pod\nmetadata: {name: %s}\nspec:\n  containers:\n  - {name: main, image: "file://%s/%s.wasm"}\n' \
    "$1" "$WASM" "$2"
}

# gaps SPINNERS: runs hello beside that many spinners for SECS; prints "p50 p99 max" in ms.
gaps() {
  local m="$DIR/m$1" d="$DIR/d$1"
  mkdir -p "$m"
  manifest hello hello >"$m/hello.yaml"
  for i in $(seq "$1"); do manifest "spin-$i" spin >"$m/spin-$i.yaml"; done
  RUST_LOG=warn "$BIN" --pod-manifest-path "$m" --data-dir "$d" --node-name fair --hostname fair \
    --node-ip 127.0.0.1 --addr 127.0.0.1 --port "$PORT" --healthz-port 0 >"$DIR/agent$1.log" 2>&1 &
  PID=$!
  sleep "$SECS"
  kill "$PID"
  wait "$PID" 2>/dev/null || true
  PID=
  # The CRI log lines' timestamps (RFC 3339, nanoseconds), as milliseconds apart.
  cat "$d"/logs/default_hello-fair_*/main/*.log | awk '{print $1}' | while read -r t; do date -d "$t" +%s%3N; done |
    awk 'NR > 2 {print $1 - prev} {prev = $1}' | sort -n |
    awk '{a[NR] = $1} END {if (NR == 0) {print "none none none"; exit} printf "%d %d %d\n", a[int((NR - 1) * 0.5) + 1], a[int((NR - 1) * 0.99) + 1], a[NR]}'
}

echo "machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"
read -r p50 p99 max < <(gaps 0)
echo "hello alone:                   gap between lines p50 ${p50} ms, p99 ${p99} ms, worst ${max} ms"
read -r p50 p99 max < <(gaps "$SPINNERS")
echo "hello beside $SPINNERS spinning guests: gap between lines p50 ${p50} ms, p99 ${p99} ms, worst ${max} ms"
