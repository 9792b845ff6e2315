#!/usr/bin/env bash
# Static pods on a standalone node (no cluster), release build. Prints numbers, asserts
# nothing:
#   - agent process start → a static pod Running (its status.json says so);
#   - manifest file written into --pod-manifest-path → Running (p50/p99 over N pods);
#   - manifest edited → the new version Running; removed → its state gone;
#   - `krustlet-wasi pods` with N pods, and `krustlet-wasi logs` of one pod;
#   - guest write → line printed by `krustlet-wasi logs -f` (another process, inotify);
#   - `krustlet-wasi exec POD -- tool echo` (a new guest instance, through the kubelet API).
#
#   bench/standalone.sh [N]     default N=50; BENCH_PORT (default 10490) is the agent's port
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-50}

cargo build --release --quiet --bin krustlet-wasi
BIN=target/release/krustlet-wasi
WASM=$(examples/build.sh 2>/dev/null | tail -n 1)
DIR=$(mktemp -d)
M=$DIR/manifests D=$DIR/data
mkdir -p "$M"
trap 'kill $PID 2>/dev/null || true; rm -rf "$DIR"' EXIT

now_ms() { date +%s%3N; }
# phase POD: the phase in the pod's status.json ("" if none).
phase() {
  grep -l "\"name\":\"$1\"" "$D"/pods/*/status.json 2>/dev/null | head -n 1 |
    xargs -r grep -o '"phase":"[A-Za-z]*"' 2>/dev/null | head -n 1 | cut -d'"' -f4
}
wait_phase() { until [[ "$(phase "$1")" == "$2" ]]; do sleep 0.002; done; }
manifest() { # NAME GUEST [restartPolicy]
  printf 'apiVersion: v1\nkind: Pod\nmetadata: {name: %s}\nspec:\n  restartPolicy: %s\n  containers:\n  - {name: main, image: "file://%s/%s.wasm"}\n' \
    "$1" "${3:-Always}" "$WASM" "$2"
}
percentile() { sort -n | awk -v p="$1" '{a[NR]=$1} END {i=int((NR-1)*p/100)+1; print a[i]}'; }

manifest first hello >"$M/first.yaml"
t0=$(now_ms)
RUST_LOG=warn "$BIN" --pod-manifest-path "$M" --data-dir "$D" --node-name bench --hostname bench \
  --node-ip 127.0.0.1 --addr 127.0.0.1 --port "${BENCH_PORT:-10490}" --healthz-port 0 --allow-anonymous-localhost \
  2>"$DIR/agent.log" &
PID=$!
wait_phase first-bench Running
echo "agent start → static pod Running: $(($(now_ms) - t0)) ms (includes compiling the module: cold cache)"

: >"$DIR/lat"
for i in $(seq "$N"); do
  t=$(now_ms)
  manifest "p$i" sleep >"$M/.p$i.tmp" && mv "$M/.p$i.tmp" "$M/p$i.yaml"
  wait_phase "p$i-bench" Running
  echo $(($(now_ms) - t)) >>"$DIR/lat"
done
echo "manifest written → Running, $N pods one at a time: p50 $(percentile 50 <"$DIR/lat") ms, p99 $(percentile 99 <"$DIR/lat") ms (2 ms polling)"

old=$(grep -l '"name":"p1-bench"' "$D"/pods/*/status.json)
t=$(now_ms)
manifest p1 sleep Never >"$M/p1.yaml"
until [[ ! -e "$old" && "$(phase p1-bench)" == Running ]]; do sleep 0.002; done
echo "manifest edited → new version Running: $(($(now_ms) - t)) ms"
t=$(now_ms)
rm "$M/p1.yaml"
until [[ -z "$(phase p1-bench)" ]]; do sleep 0.002; done
echo "manifest removed → pod state gone: $(($(now_ms) - t)) ms"

t=$(now_ms)
for _ in 1 2 3 4 5 6 7 8 9 10; do "$BIN" pods --data-dir "$D" >/dev/null; done
echo "krustlet-wasi pods with $N pods: $((($(now_ms) - t) / 10)) ms"
t=$(now_ms)
for _ in 1 2 3 4 5 6 7 8 9 10; do "$BIN" logs first-bench --data-dir "$D" >/dev/null; done
echo "krustlet-wasi logs (one pod, $("$BIN" logs first-bench --data-dir "$D" | wc -l) lines): $((($(now_ms) - t) / 10)) ms"

# logs -f: the CRI timestamp of each line against when the follower printed it.
python3 - "$BIN" "$D" <<'PY'
import subprocess, sys, time, datetime
binary, data = sys.argv[1], sys.argv[2]
import glob
path = None
for f in glob.glob(f"{data}/logs/default_first-bench_*/main/*.log"):
    path = f
p = subprocess.Popen([binary, "logs", "-f", "first-bench", "--tail", "0", "--data-dir", data], stdout=subprocess.PIPE)
lat = []
def cri_time(line):
    t = line.split(" ", 1)[0]
    base, frac = t.rstrip("Z").split(".")
    dt = datetime.datetime.strptime(base, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=datetime.timezone.utc)
    return dt.timestamp() + float("0." + frac)
for _ in range(5):
    p.stdout.readline()
    arrived = time.time()
    with open(path) as f:
        last = f.read().splitlines()[-1]
    lat.append((arrived - cri_time(last)) * 1000)
p.kill()
lat.sort()
print(f"guest write → `krustlet-wasi logs -f` prints it (5 lines): median {lat[2]:.1f} ms, max {lat[-1]:.1f} ms")
PY
manifest tool tool >"$M/tool.yaml"
wait_phase tool-bench Running
"$BIN" exec tool-bench --data-dir "$D" -- tool echo warm >/dev/null
t=$(now_ms)
for _ in 1 2 3 4 5 6 7 8 9 10; do "$BIN" exec tool-bench --data-dir "$D" -- tool echo hi >/dev/null; done
echo "krustlet-wasi exec (tool echo, new instance each): $((($(now_ms) - t) / 10)) ms"

echo "agent RSS with $N idle static pods: $(awk '/VmRSS/ {print $2 / 1024 " MB"}' /proc/$PID/status)"
