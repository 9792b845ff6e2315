#!/usr/bin/env bash
# The guide's HTTP server (examples/guide: tokio_wasi + warp_wasi over the WasmEdge socket
# ABI) run by the provider (release build, bench/guide.rs: no agent), against the same
# main.rs built for the host (examples/guide/build.sh --native: tokio + warp), in the same
# run, under wrk at 1, 16 and 64 connections for SECONDS each: requests/s, p50, p99 and
# the ratio to native. Then each server's CPU over 10 s while idle: with no connection,
# and with one keep-alive connection open and idle. Prints numbers; asserts nothing.
#
#   bench/guide.sh [SECONDS=10]
#
# Runs in a network namespace of its own (unshare -rn) so that port 8080, which the
# guide's program hard-codes, is free whatever else this machine runs. Builds the guide
# (examples/guide/build.sh, Debian's toolchain) and installs wrk (apt) when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-10}
PORT=8080

if [ -z "${GUIDE_BENCH_NETNS:-}" ]; then
  command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
  WASM=$(examples/guide/build.sh | tail -n 1)
  NATIVE=$(examples/guide/build.sh --native | tail -n 1)
  cargo build --release --quiet -p krustlet-wasi-provider --example bench-guide
  exec env GUIDE_BENCH_NETNS=1 WASM="$WASM" NATIVE="$NATIVE" unshare -rn bash "$0" "$@"
fi
ip link set lo up
. bench/lib.sh
BENCH=target/release/examples/bench-guide
PID=

echo "machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg) (shared with other work)"
echo "module: $WASM ($(stat -c %s "$WASM") bytes); native: $NATIVE; wrk for ${SECS}s per row"

# load CONNECTIONS: prints "requests/s p50 p99" for GET / on the port.
load() {
  local threads=$(( $1 < 2 ? 1 : 2 ))
  wrk -t"$threads" -c"$1" -d"${SECS}s" --latency "http://127.0.0.1:$PORT/" | awk '
    /Requests\/sec/ { rps = $2 }
    $1 == "50%" { p50 = $2 } $1 == "99%" { p99 = $2 }
    /Non-2xx/ { bad = $NF }
    END { printf "%s %s %s%s\n", rps, p50, p99, (bad ? " non-2xx=" bad : "") }'
}

wait_port() {
  for _ in $(seq 300); do (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && return; sleep 0.1; done
  echo "nothing listens on $PORT" >&2
  exit 1
}

# measure ROWS IDLE: the three loads into ROWS, then the idle CPU ("none keep-alive") into IDLE.
measure() {
  local -n rows=$1 idle=$2
  wrk -t1 -c1 -d1s "http://127.0.0.1:$PORT/" >/dev/null # warm-up
  for c in 1 16 64; do rows[$c]=$(load "$c"); done
  sleep 1
  local quiet; quiet=$(cpu_percent 10)
  exec 3<>"/dev/tcp/127.0.0.1/$PORT"
  printf 'GET / HTTP/1.1\r\nHost: bench\r\n\r\n' >&3
  local status; read -r -t 5 status <&3
  [[ "$status" == "HTTP/1.1 200"* ]] || { echo "keep-alive request: $status" >&2; exit 1; }
  idle="$quiet $(cpu_percent 10)"
  exec 3>&-
}

declare -A NATIVE_ROWS OURS_ROWS
trap 'kill $PID 2>/dev/null || true' EXIT

"$NATIVE" >/dev/null 2>&1 &
PID=$!
wait_port
measure NATIVE_ROWS NATIVE_IDLE
kill "$PID"; wait "$PID" 2>/dev/null || true

coproc SERVER { "$BENCH" serve "$WASM"; }
PID=$SERVER_PID
read -r compiled <&"${SERVER[0]}"
read -r ready <&"${SERVER[0]}"
[ "${ready%% *}" = READY ] || { echo "bench-guide: $ready" >&2; exit 1; }
measure OURS_ROWS OURS_IDLE
eval "exec ${SERVER[1]}>&-"
wait "$PID" || true

ratio() { awk -v a="${1%% *}" -v b="${2%% *}" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }'; }
printf '\n%-5s | %-32s | %-32s | %s\n' conns "provider: req/s p50 p99" "native: req/s p50 p99" "ratio"
for c in 1 16 64; do
  printf '%-5s | %-32s | %-32s | %s\n' "$c" "${OURS_ROWS[$c]}" "${NATIVE_ROWS[$c]}" "$(ratio "${OURS_ROWS[$c]}" "${NATIVE_ROWS[$c]}")"
done
read -r ours_quiet ours_kept <<<"$OURS_IDLE"
read -r native_quiet native_kept <<<"$NATIVE_IDLE"
echo
echo "idle CPU over 10 s, % of a core: provider ${ours_quiet} with no connection, ${ours_kept} with one idle keep-alive connection;"
echo "  native ${native_quiet} and ${native_kept}"
echo "provider: compile ${compiled#COMPILED } ms (once per digest), run → first answer ${ready#READY } ms"
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
