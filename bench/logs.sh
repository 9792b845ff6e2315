#!/usr/bin/env bash
# Log benchmark on a release-build node: guest write -> line at a `kubectl logs -f` client
# (the CRI timestamp is when the agent received the write; the client stamps arrival), and
# a guest writing 100k lines: all readable, time, and the agent's CPU for it.
# Prints numbers; asserts nothing. BENCH_PORT (default 10297) is the agent's port; the pods
# live in a namespace of their own, so runs beside other developers' do not collide.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
bench_setup
export BENCH_NS="bench-logs-$$"
trap 'kubectl delete namespace "$BENCH_NS" --wait=false >/dev/null 2>&1 || true; stop_node' EXIT
publish tool
start_node "kw-bench-logs-$$" "${BENCH_PORT:-10297}"
kubectl create namespace "$BENCH_NS" >/dev/null
until kubectl -n "$BENCH_NS" get serviceaccount default >/dev/null 2>&1; do sleep 0.2; done
IMAGE="$KRUSTLET_TEST_REGISTRY/bench/tool:v1"

bench_pod ticker "$IMAGE" Always '["serve"]'
kubectl -n "$BENCH_NS" wait --for=condition=Ready pod/ticker --timeout=60s >/dev/null
python3 - <<'PY'
import os, subprocess, datetime, statistics
p = subprocess.Popen(["kubectl", "-n", os.environ["BENCH_NS"], "logs", "-f", "--timestamps", "--tail=0", "ticker"], stdout=subprocess.PIPE, text=True)
lat = []
for line in p.stdout:
    now = datetime.datetime.now(datetime.timezone.utc)
    ts = line.split(" ", 1)[0]
    base, frac = ts.rstrip("Z").split(".") if "." in ts else (ts.rstrip("Z"), "0")
    sent = datetime.datetime.fromisoformat(base).replace(tzinfo=datetime.timezone.utc) + datetime.timedelta(microseconds=int((frac + "000000")[:6]))
    lat.append((now - sent).total_seconds() * 1000)
    if len(lat) >= 50:
        break
p.kill()
lat.sort()
print(f"write -> kubectl logs -f client: {len(lat)} lines, p50 {statistics.median(lat):.1f} ms, p99 {lat[int(len(lat)*0.99)-1]:.1f} ms, max {lat[-1]:.1f} ms")
PY

before=$(cpu_ticks)
t0=$(date +%s%N)
bench_pod flood "$IMAGE" Never '["lines", "100000"]'
until [ "$(kubectl -n "$BENCH_NS" get pod flood -o jsonpath='{.status.phase}')" = Succeeded ]; do sleep 0.05; done
t1=$(date +%s%N)
after=$(cpu_ticks)
n=$(kubectl -n "$BENCH_NS" logs flood | wc -l)
t2=$(date +%s%N)
hz=$(getconf CLK_TCK)
echo "100k lines: pod created -> Succeeded $(( (t1 - t0) / 1000000 )) ms; agent CPU $(( (after - before) * 1000 / hz )) ms; kubectl logs read back $n lines in $(( (t2 - t1) / 1000000 )) ms"
