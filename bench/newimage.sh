#!/usr/bin/env bash
# A new image's first start, on a standalone node (release build, static pods, images from
# the local registry): for the Python wasi:http component (examples/python, ~18 MB) and the
# guide's Rust server (examples/guide, 7.4 MB), each pushed under a fresh tag, it prints
#   - the file compiled alone (bench/compile.rs: Engine::precompile with the provider's
#     engine settings, as `wasmtime compile` does; parallel and serial, wall and CPU ms),
#     and the provider's own load of it alone (`Runtime::load_file`: what the agent calls);
#   - whether a running HTTP pod (the examples' http_hello) is starved while a new image
#     compiles: wrk at 1 connection while the pod idles, then while a pod of the same
#     program with one more custom section (a new digest) starts beside it;
#   - then, with only the idle HTTP pod beside it, pod manifest written -> Running (the
#     status file's mtime once it says Running), the agent's own split from its log (seen,
#     pull, load, of which compiling, container started), and the ratio to compiling alone;
#   - after an agent restart (same data dir): agent started -> Running, manifest seen ->
#     container started, and whether the code came from the disk cache (`code Disk`).
# Prints numbers; asserts nothing. Uses the local registry (started with bootstrap/cluster.sh
# up unless it answers) but joins no cluster.
#
#   bench/newimage.sh [ROUNDS=1]
#   KRUSTLET_WASI_BIN=target/release/krustlet-wasi  skip the release build
#   GUIDE_WASM=PATH                                  the guide's module (default: examples/guide/build.sh's)
#   COMPILE_THREADS=N                                passed as --compile-threads when set
#   BENCH_COMPILE=PATH|none                          the baseline's binary (none: no baseline)
#   BENCH_AGENT_LOG=FILE                             keep the agent's JSON log (both runs)
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-1}
. bench/lib.sh

eval "$(bash bootstrap/cluster.sh env)"
curl -fsS --max-time 2 "http://$KRUSTLET_TEST_REGISTRY/v2/" >/dev/null || bash bootstrap/cluster.sh up >/dev/null
REG=$KRUSTLET_TEST_REGISTRY
BIN=${KRUSTLET_WASI_BIN:-}
if [[ -z "$BIN" ]]; then
  cargo build --release --quiet --bin krustlet-wasi
  BIN=target/release/krustlet-wasi
fi
COMPILE=${BENCH_COMPILE:-}
if [[ -z "$COMPILE" ]]; then
  cargo build --release --quiet -p krustlet-wasi-provider --example bench-compile
  COMPILE=target/release/examples/bench-compile
fi
PYTHON_WASM=$(examples/python/build.sh | tail -n 1)
GUIDE_WASM=${GUIDE_WASM:-$(examples/guide/build.sh | tail -n 1)}
WASM_DIR=$(examples/build.sh 2>/dev/null | tail -n 1)
DIR=$(mktemp -d)
PID=
trap '[[ -n "$PID" ]] && kill "$PID" 2>/dev/null && wait "$PID" 2>/dev/null; [[ -n "${BENCH_AGENT_LOG:-}" ]] && cat "$DIR"/agent*.log >"$BENCH_AGENT_LOG"; rm -rf "$DIR"' EXIT
NODE=bench-newimage
HTTP_PORT=18471

now_ms() { date +%s%3N; }
# log_ms MESSAGE [MATCH]: the time (ms since the epoch) of the agent's first log line with
# this message (and containing MATCH), from its JSON log; empty when there is none yet.
log_ms() {
  { grep -F "\"message\":\"$1\"" "$DIR/agent.log" | grep -F -- "${2:-}" || true; } | head -n 1 |
    sed -n 's/.*"timestamp":"\([^"]*\)".*/\1/p' | xargs -r -I{} date -d {} +%s%3N
}
# log_field MESSAGE FIELD [MATCH]: a numeric field of that line.
log_field() {
  { grep -F "\"message\":\"$1\"" "$DIR/agent.log" | grep -F -- "${3:-}" || true; } | head -n 1 |
    sed -n "s/.*\"$2\":\"\{0,1\}\([^,\"}]*\).*/\1/p"
}
# status_file POD: the status file of the static pod named POD-$NODE.
status_file() { { grep -l "\"name\":\"$1-$NODE\"" "$DIR"/data/pods/*/status.json 2>/dev/null || true; } | head -n 1; }
# nap SECONDS: sleeps without starting a process (a read on a FIFO nobody writes times out).
nap() { read -r -t "$1" -u "$NAP_FD" _ || true; }
# running_ms POD [AFTER_MS]: waits until POD's status file says Running (and was written
# after AFTER_MS) and prints its mtime in ms. It looks every 50 ms with shell builtins only
# (the figure is the file's mtime, not when it was seen): a loop that started processes
# every 10 ms took 15-30% of a core at nice 0, from the compile threads (nice +10) of the
# agent it waits for, in the same scheduling autogroup, while the baseline had no such loop.
running_ms() {
  local f= s t
  for _ in $(seq 1 12000); do
    [[ -n "$f" ]] || f=$(status_file "$1")
    if [[ -n "$f" ]]; then
      s=
      read -r -d '' s <"$f" 2>/dev/null || true
      if [[ "$s" == *'"phase":"Running"'* ]]; then
        t=$(stat -c %.3Y "$f" | tr -d .)
        ((t > ${2:-0})) && { echo "$t"; return; }
      fi
      [[ "$s" == *'"phase":"Failed"'* ]] && break
    fi
    nap 0.05
  done
  echo "pod $1 did not run:" >&2; tail -n 20 "$DIR/agent.log" >&2; exit 1
}
# Image GC off: on a disk fuller than 85% it would collect the removed pods' images mid-run.
start_agent() {
  # shellcheck disable=SC2086
  env -u KUBECONFIG RUST_LOG="info,krustlet_wasi::pods::worker=debug" "$BIN" --pod-manifest-path "$DIR/manifests" \
    --data-dir "$DIR/data" --node-name "$NODE" --hostname "$NODE" --node-ip 127.0.0.1 --addr 127.0.0.1 \
    --port 10371 --healthz-port 0 --allow-anonymous-localhost --insecure-registries "$REG" --log-format json \
    --pod-listen-address 127.0.0.1 --image-gc-high-threshold 100 \
    ${COMPILE_THREADS:+--compile-threads $COMPILE_THREADS} 2>>"$DIR/agent.log" &
  PID=$!
}
# pod NAME IMAGE PORT: writes a static pod serving on PORT (renamed in: seen whole).
pod() {
  printf 'apiVersion: v1\nkind: Pod\nmetadata: {name: %s}\nspec:\n  containers:\n  - name: app\n    image: "%s"\n    ports: [{containerPort: %s}]\n' \
    "$1" "$2" "$3" >"$DIR/$1.yaml"
  mv "$DIR/$1.yaml" "$DIR/manifests/$1.yaml"
}
# wrk_row SECONDS: "p50 p99 max requests" of GET / on the HTTP pod at one connection.
wrk_row() {
  wrk -t1 -c1 -d"${1}s" --latency "http://127.0.0.1:$HTTP_PORT/" | awk '
    $1 == "Latency" && NF >= 4 { max = $4 } $1 == "50%" { p50 = $2 } $1 == "99%" { p99 = $2 }
    /requests in/ { n = $1 } END { printf "p50 %s p99 %s max %s (%s requests)", p50, p99, max, n }'
}
# report POD IMAGE FILE T0 T_RUNNING: the start of POD from the agent's log.
report() {
  local seen started
  seen=$(log_ms "static pod manifest loaded" "$1-$NODE")
  started=$(log_ms "container started" "\"pod\":\"$1-$NODE\"")
  echo "manifest written -> Running: $(($5 - $4)) ms (seen +$((seen - $4)), pull $(log_field "image ready" pull_ms "$2\"" | cut -d. -f1) ms," \
    "load $(log_field "image ready" load_ms "$2\"" | cut -d. -f1) ms ($(log_field "image ready" code "$2\"")," \
    "of which compiling $(log_field "compiled artifact" elapsed_ms "$(sha256sum "$3" | cut -c1-64)") ms), container started +$((started - $4)) ms)"
}

echo "machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg) (shared with other work)"
echo "agent: $BIN; baseline: $COMPILE (Engine::precompile, the provider's settings; no wasmtime CLI)"
mkdir -p "$DIR/manifests"
mkfifo "$DIR/nap"
exec {NAP_FD}<>"$DIR/nap"
start_agent
cp "$WASM_DIR/http_hello.wasm" "$DIR/http_hello.wasm"
pod http "file://$DIR/http_hello.wasm" "$HTTP_PORT"
running_ms http >/dev/null
until curl -fsS -o /dev/null "http://127.0.0.1:$HTTP_PORT/"; do sleep 0.05; done
TAG=t$(date +%s%N)
declare -A RUNNING=()
for round in $(seq 1 "$ROUNDS"); do
  for name in python guide; do
    case $name in
      python) file=$PYTHON_WASM port=18472 ;;
      guide) file=$GUIDE_WASM port=8080 ;;
    esac
    image="$REG/bench/newimage-$name:$TAG-$round"
    "$BIN" push --insecure-registries "$REG" "$file" "$image" >/dev/null
    echo "== $name: $(stat -c %s "$file") bytes, new image $image"
    if [[ "$COMPILE" == none ]]; then printf 'parallel wall_ms 0 cpu_ms 0\nserial wall_ms 0 cpu_ms 0\nruntime wall_ms 0 cpu_ms 0\n' >"$DIR/compile"
    else "$COMPILE" "$file" "$DIR/$name.cwasm" parallel serial runtime >"$DIR/compile"; fi
    read -r wall_p cpu_p < <(awk '$1 == "parallel" {print $3, $5}' "$DIR/compile")
    read -r wall_s cpu_s < <(awk '$1 == "serial" {print $3, $5}' "$DIR/compile")
    read -r wall_r cpu_r < <(awk '$1 == "runtime" {print $3, $5}' "$DIR/compile")
    echo "compiled alone: parallel ${wall_p} ms (CPU ${cpu_p} ms), serial ${wall_s} ms (CPU ${cpu_s} ms)"
    echo "the provider's load alone (its compile threads at nice +10, cache write, link): ${wall_r} ms (CPU ${cpu_r} ms)"
    pod_name="$name-$round"
    # First the same program with one more custom section (a new digest) beside the HTTP
    # pod under load: is the pod starved while it compiles?
    variant="$DIR/$name-variant.wasm"
    python3 -c 'import sys; d = open(sys.argv[1], "rb").read(); n = sys.argv[3].encode(); b = bytes([5]) + b"bench" + n
open(sys.argv[2], "wb").write(d + bytes([0, len(b)]) + b)' "$file" "$variant" "$TAG-$round"
    "$BIN" push --insecure-registries "$REG" "$variant" "$image-variant" >/dev/null 2>&1
    secs=$(( (wall_p + 999) / 1000 + ${BENCH_WRK_SECONDS:-1} ))
    echo "HTTP pod idle, ${secs}s:            $(wrk_row "$secs")"
    wrk_row "$secs" >"$DIR/wrk" &
    wrk_pid=$!
    t0=$(now_ms)
    pod "$pod_name-v" "$image-variant" "$port"
    t_run=$(running_ms "$pod_name-v")
    wait "$wrk_pid"
    echo "HTTP pod while compiling, ${secs}s: $(cat "$DIR/wrk")"
    report "$pod_name-v" "$image-variant" "$variant" "$t0" "$t_run"
    # Gone before the next start (the guide's program always binds port 8080).
    rm -f "$DIR/manifests/$pod_name-v.yaml"
    sleep 2
    echo "alone (only the idle HTTP pod beside it):"
    t0=$(now_ms)
    pod "$pod_name" "$image" "$port"
    t_run=$(running_ms "$pod_name")
    report "$pod_name" "$image" "$file" "$t0" "$t_run"
    awk -v r=$((t_run - t0)) -v c="$wall_p" 'BEGIN {printf "ratio to compiling alone: %.2f\n", r / c}'
    RUNNING[$name]=$pod_name
  done
done

echo "== agent restart (same data dir: images pulled, code in the disk cache)"
kill "$PID"; wait "$PID" 2>/dev/null || true
mv "$DIR/agent.log" "$DIR/agent-1.log"
before=$(now_ms)
start_agent
for name in python guide; do
  pod_name=${RUNNING[$name]}
  t_run=$(running_ms "$pod_name" "$before")
  until [[ -n "$(log_ms "container started" "\"pod\":\"$pod_name-$NODE\"")" ]]; do nap 0.01; done
  seen=$(log_ms "static pod manifest loaded" "$pod_name-$NODE")
  started=$(log_ms "container started" "\"pod\":\"$pod_name-$NODE\"")
  echo "$name: agent started -> Running $((t_run - before)) ms; seen -> container started $((started - seen)) ms," \
    "seen -> Running $((t_run - seen)) ms; load $(log_field "image ready" load_ms "newimage-$name" | cut -d. -f1) ms, code $(log_field "image ready" code "newimage-$name")"
done
echo "agent warnings/errors: $(grep -c -E '"level":"(WARN|ERROR)"' "$DIR"/agent*.log || true)"
