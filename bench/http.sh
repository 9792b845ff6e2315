#!/usr/bin/env bash
# HTTP serving benchmark: a wasi:http component served by the provider (release build,
# bench/http.rs, the agent's per-request setup: memory limit, timeout, cap), by the provider
# without its instance pool, and by `wasmtime serve` 48 (`-Scli`, its defaults otherwise),
# in the same run, under wrk at 1, 16 and 64 connections: requests/s, p50, p99, the server's
# CPU time per request, and the ratio to wasmtime serve. The three servers run side by side
# and each row loads them one after the other, so that a busy neighbour on a shared machine
# weighs on all three alike; with ROUNDS > 1 every row is run that many times (the servers
# in turn) and the round with the median ratio (ours to wasmtime serve) is printed.
# Then the mean per-request instantiation time (from HttpStats) and the RSS an idle served
# artifact adds. Prints numbers; asserts nothing.
#
#   bench/http.sh [SECONDS=10] [IDLE=100]
#   PY=path/to/component.wasm bench/http.sh ...   also bench that component (any wasi:http
#       proxy; examples/python/build.sh builds the Python one), after the C hello
#   ROUNDS=3 bench/http.sh ...                    median of 3 runs of every row
#   BENCH_HTTP=/tmp/bench-http-a bench/http.sh ...   serve with that bench-http binary instead of
#       a fresh release build (to compare two builds in one session: copy one aside, rebuild)
#   CONNS="64" bench/http.sh ...                 only these rows (default "1 16 64")
#   BENCH_LANES=0 bench/http.sh ...              serve with that many lanes per artifact (0: no
#       bound: every request starts at once) instead of one per guest thread
#   SERVE_NICE=10 bench/http.sh ...               run wasmtime serve at nice +10, the priority
#       the provider runs its guests (and their HTTP connections) at (GUEST_NICE): on a
#       machine busy with other work at nice 0-5 the guests get a much smaller share of the
#       CPU than a nice-0 wasmtime serve; this compares the two hosts at equal priority
#
# Installs wrk (apt) and wasmtime-cli 48 (cargo install, built once into
# /var/cache/krustlet-wasi/wasmtime-cli-48: a long build) when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-10} IDLE=${2:-100} ROUNDS=${ROUNDS:-1}
POOLED_PORT=18080 UNPOOLED_PORT=18082 THEIRS_PORT=18081
WASMTIME_ROOT=/var/cache/krustlet-wasi/wasmtime-cli-48
WASMTIME=$WASMTIME_ROOT/bin/wasmtime
export PATH="$HOME/.cargo/bin:$PATH"
# Every server runs without backtraces for library errors, as in production: with
# RUST_BACKTRACE=1 inherited, Wasmtime walks the stack once per request in both hosts (the
# agent turns that off by itself, logging::default_lib_backtrace; wasmtime serve does not).
unset RUST_BACKTRACE RUST_LIB_BACKTRACE

command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
if ! "$WASMTIME" --version 2>/dev/null | grep -q '^wasmtime 48\.'; then
  echo "installing wasmtime-cli 48 into $WASMTIME_ROOT (once; a long build)" >&2
  nice cargo install --quiet --locked "wasmtime-cli@^48" --root "$WASMTIME_ROOT" --no-default-features \
    --features serve,run,cranelift,pooling-allocator,parallel-compilation,cache,wat,component-model,component-model-async
fi
C_WASM="$(bash examples/build-components.sh target/guests 2>/dev/null | tail -n 1)/http_hello.wasm"
COMPONENTS=("$C_WASM")
if [ -n "${PY:-}" ]; then
  [ -f "$PY" ] || { echo "PY=$PY: no such file" >&2; exit 1; }
  COMPONENTS+=("$PY")
fi
if [ -n "${BENCH_HTTP:-}" ]; then
  BENCH=$BENCH_HTTP
else
  cargo build --release --quiet -p krustlet-wasi-provider --example bench-http
  BENCH=target/release/examples/bench-http
fi
TMP=$(mktemp -d)
PIDS=()
trap 'kill "${PIDS[@]}" 2>/dev/null || true; rm -rf "$TMP"' EXIT

echo "machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg) (shared with other work)"
echo "wrk for ${SECS}s per row, ${ROUNDS} round(s); $("$WASMTIME" --version) at nice +${SERVE_NICE:-0}, our guest threads at +10"

# cpu_ticks PID: the process's user + system CPU time so far, in clock ticks.
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
TICK_HZ=$(getconf CLK_TCK)

# load PORT CONNECTIONS PID: prints "requests/s p50 p99 cpu-us-per-request" for GET / on
# PORT, served by PID.
load() {
  local threads=$(( $2 < 2 ? 1 : 2 )) before after
  before=$(cpu_ticks "$3")
  wrk -t"$threads" -c"$2" -d"${SECS}s" --latency "http://127.0.0.1:$1/" >"$TMP/wrk"
  after=$(cpu_ticks "$3")
  awk -v ticks=$((after - before)) -v hz="$TICK_HZ" '
    /Requests\/sec/ { rps = $2 } /requests in/ { n = $1 }
    $1 == "50%" { p50 = $2 } $1 == "99%" { p99 = $2 }
    /Non-2xx/ { bad = $NF }
    END { printf "%s %s %s %.0f%s\n", rps, p50, p99, (n > 0 ? ticks * 1e6 / hz / n : 0), (bad ? " non-2xx=" bad : "") }' "$TMP/wrk"
}

wait_port() {
  for _ in $(seq 600); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return; sleep 0.1; done
  echo "nothing listens on $1" >&2
  exit 1
}

# start_ours NAME WASM PORT [POOL]: bench-http serving WASM on PORT, driven through two
# fifos; sets ${NAME}_PID, ${NAME}_IN and ${NAME}_OUT (file descriptors).
start_ours() {
  local name=$1 in_fd out_fd ready
  mkfifo "$TMP/$name.in" "$TMP/$name.out"
  "$BENCH" serve "$2" "127.0.0.1:$3" ${4:-} <"$TMP/$name.in" >"$TMP/$name.out" &
  PIDS+=($!)
  printf -v "${name}_PID" %s "$!"
  exec {in_fd}>"$TMP/$name.in" {out_fd}<"$TMP/$name.out"
  printf -v "${name}_IN" %s "$in_fd"
  printf -v "${name}_OUT" %s "$out_fd"
  read -r ready <&"$out_fd"
  [ "${ready%% *}" = READY ] || { echo "bench-http: $ready" >&2; exit 1; }
}

# stats NAME: the instances bench-http NAME made since the last call.
stats() {
  local in_var=${1}_IN out_var=${1}_OUT line
  echo >&"${!in_var}"
  read -r line <&"${!out_var}"
  echo "$line"
}

ratio() { awk -v a="${1%% *}" -v b="${2%% *}" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }'; }

# median ROWS...: the row (fields separated by |) whose first field is the median.
median() { printf '%s\n' "$@" | sort -t' ' -k1,1g | sed -n "$(( ($# + 1) / 2 ))p"; }

bench_component() {
  local wasm=$1 c round
  echo
  echo "component: $wasm ($(stat -c %s "$wasm") bytes)"
  start_ours POOLED "$wasm" "$POOLED_PORT"
  start_ours UNPOOLED "$wasm" "$UNPOOLED_PORT" 0
  nice -n "${SERVE_NICE:-0}" "$WASMTIME" serve -Scli --addr "127.0.0.1:$THEIRS_PORT" "$wasm" >/dev/null 2>&1 &
  THEIRS_PID=$!
  PIDS+=("$THEIRS_PID")
  wait_port "$THEIRS_PORT"
  for port in "$POOLED_PORT" "$UNPOOLED_PORT" "$THEIRS_PORT"; do   # warm-up
    wrk -t1 -c1 -d1s "http://127.0.0.1:$port/" >/dev/null
  done
  stats POOLED >/dev/null
  stats UNPOOLED >/dev/null
  printf '%-5s | %-36s | %-36s | %-36s | %s\n' conns "krustlet-wasi: req/s p50 p99 cpu-us/req" \
    "same, no pool" "wasmtime serve" "ratios to wasmtime serve"
  local -a rows notes
  for c in ${CONNS:-1 16 64}; do
    rows=()
    for round in $(seq "$ROUNDS"); do
      local ours unpooled theirs
      ours="$(load "$POOLED_PORT" "$c" "$POOLED_PID") [$(stats POOLED)]"
      unpooled="$(load "$UNPOOLED_PORT" "$c" "$UNPOOLED_PID") [$(stats UNPOOLED)]"
      theirs=$(load "$THEIRS_PORT" "$c" "$THEIRS_PID")
      rows+=("$(ratio "$ours" "$theirs")|$ours|$unpooled|$theirs")
    done
    local row ours unpooled theirs
    row=$(median "${rows[@]}")
    IFS='|' read -r _ ours unpooled theirs <<<"$row"
    printf '%-5s | %-36s | %-36s | %-36s | %s, %s (no pool)\n' "$c" "${ours%% [*}" "${unpooled%% [*}" "$theirs" \
      "$(ratio "$ours" "$theirs")" "$(ratio "$unpooled" "$theirs")"
    notes+=("krustlet-wasi at $c connections: ${ours#*[}; without the pool: ${unpooled#*[}")
    [ "$ROUNDS" -gt 1 ] && notes+=("  ratios of the $ROUNDS rounds at $c: $(printf '%s\n' "${rows[@]}" | cut -d'|' -f1 | paste -sd' ')")
  done
  printf '%s\n' "${notes[@]}" | tr -d ']'
  for name in POOLED UNPOOLED; do
    local in_var=${name}_IN out_var=${name}_OUT
    eval "exec ${!in_var}>&- ${!out_var}<&-"
  done
  kill "$THEIRS_PID"
  wait "$POOLED_PID" "$UNPOOLED_PID" "$THEIRS_PID" 2>/dev/null || true
  PIDS=()
  rm -f "$TMP"/*.in "$TMP"/*.out
}

for wasm in "${COMPONENTS[@]}"; do bench_component "$wasm"; done
echo
"$BENCH" idle "$C_WASM" "$IDLE"
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
