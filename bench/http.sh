#!/usr/bin/env bash
# HTTP serving benchmark: the small hello component (examples/guests/http_hello.c) served
# by the provider (release build, bench/http.rs, the agent's per-request setup: memory
# limit, timeout, cap), by the provider without its instance pool, and by `wasmtime serve`
# 48 (`-Scli`, its defaults otherwise), in the same run, under wrk at 1, 16 and 64
# connections: requests/s, p50, p99 and the ratio to wasmtime serve.
# Then the mean per-request instantiation time (from HttpStats) and the RSS an idle served
# artifact adds. Prints numbers; asserts nothing.
#
#   bench/http.sh [SECONDS=10] [IDLE=100]
#
# Installs wrk (apt) and wasmtime-cli 48 (cargo install, built once into
# /var/cache/krustlet-wasi/wasmtime-cli-48: a long build) when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-10} IDLE=${2:-100}
OURS_PORT=18080 THEIRS_PORT=18081
WASMTIME_ROOT=/var/cache/krustlet-wasi/wasmtime-cli-48
WASMTIME=$WASMTIME_ROOT/bin/wasmtime
export PATH="$HOME/.cargo/bin:$PATH"

command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
if ! "$WASMTIME" --version 2>/dev/null | grep -q '^wasmtime 48\.'; then
  echo "installing wasmtime-cli 48 into $WASMTIME_ROOT (once; a long build)" >&2
  nice cargo install --quiet --locked "wasmtime-cli@^48" --root "$WASMTIME_ROOT" --no-default-features \
    --features serve,run,cranelift,pooling-allocator,parallel-compilation,cache,wat,component-model,component-model-async
fi
WASM="$(bash examples/build-components.sh target/guests 2>/dev/null | tail -n 1)/http_hello.wasm"
cargo build --release --quiet --example bench-http
BENCH=target/release/examples/bench-http

echo "machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg) (shared with other work)"
echo "component: $WASM ($(stat -c %s "$WASM") bytes); wrk for ${SECS}s per row; $("$WASMTIME" --version)"

# load PORT CONNECTIONS: prints "requests/s p50 p99" for GET / on PORT.
load() {
  local threads=$(( $2 < 2 ? 1 : 2 ))
  wrk -t"$threads" -c"$2" -d"${SECS}s" --latency "http://127.0.0.1:$1/" | awk '
    /Requests\/sec/ { rps = $2 }
    $1 == "50%" { p50 = $2 } $1 == "99%" { p99 = $2 }
    /Non-2xx/ { bad = $NF }
    END { printf "%s %s %s%s\n", rps, p50, p99, (bad ? " non-2xx=" bad : "") }'
}

wait_port() {
  for _ in $(seq 300); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return; sleep 0.1; done
  echo "nothing listens on $1" >&2
  exit 1
}

declare -A OURS UNPOOLED THEIRS INST INST_UNPOOLED
trap 'kill ${SERVER_PID:-} ${THEIRS_PID:-} 2>/dev/null || true' EXIT
# ours ROWS INSTANCES [POOL]: the three loads against bench-http, into the two arrays named.
ours() {
  local -n rows=$1 inst=$2
  coproc SERVER { "$BENCH" serve "$WASM" "127.0.0.1:$OURS_PORT" ${3:-}; }
  SERVER_PID=$SERVER_PID
  read -r ready <&"${SERVER[0]}"
  [ "${ready%% *}" = READY ] || { echo "bench-http: $ready" >&2; exit 1; }
  wrk -t1 -c1 -d1s "http://127.0.0.1:$OURS_PORT/" >/dev/null   # warm-up
  echo >&"${SERVER[1]}"; read -r _ <&"${SERVER[0]}"
  for c in 1 16 64; do
    rows[$c]=$(load "$OURS_PORT" "$c")
    echo >&"${SERVER[1]}"
    read -r "inst[$c]" <&"${SERVER[0]}"
  done
  eval "exec ${SERVER[1]}>&-"
  wait "$SERVER_PID" || true
}
ours OURS INST
ours UNPOOLED INST_UNPOOLED 0

"$WASMTIME" serve -Scli --addr "127.0.0.1:$THEIRS_PORT" "$WASM" >/dev/null 2>&1 &
THEIRS_PID=$!
wait_port "$THEIRS_PORT"
wrk -t1 -c1 -d1s "http://127.0.0.1:$THEIRS_PORT/" >/dev/null
for c in 1 16 64; do THEIRS[$c]=$(load "$THEIRS_PORT" "$c"); done
kill "$THEIRS_PID"; wait "$THEIRS_PID" 2>/dev/null || true

ratio() { awk -v a="${1%% *}" -v b="${2%% *}" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }'; }
printf '\n%-5s | %-30s | %-30s | %-30s | %s\n' conns "krustlet-wasi: req/s p50 p99" \
  "same, no pool: req/s p50 p99" "wasmtime serve: req/s p50 p99" "ratios to wasmtime serve"
for c in 1 16 64; do
  printf '%-5s | %-30s | %-30s | %-30s | %s, %s (no pool)\n' "$c" "${OURS[$c]}" "${UNPOOLED[$c]}" "${THEIRS[$c]}" \
    "$(ratio "${OURS[$c]}" "${THEIRS[$c]}")" "$(ratio "${UNPOOLED[$c]}" "${THEIRS[$c]}")"
done
echo
for c in 1 16 64; do
  echo "krustlet-wasi at $c connections: ${INST[$c]}; without the pool: ${INST_UNPOOLED[$c]}"
done
"$BENCH" idle "$WASM" "$IDLE"
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
