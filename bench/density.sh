#!/usr/bin/env bash
# Density: N idle static pods on one standalone node (no cluster), release build. Prints
# numbers, asserts nothing:
#   - the agent at rest: RSS, threads, CPU (no pods); RSS again once one pod has run
#     and gone (the warm baseline: its module compiled, a pod's code paths paged in);
#   - N manifests of a sleeping guest moved into --pod-manifest-path at once → all
#     Running (their status.json files say so; counted every 250 ms);
#   - with N idle pods: RSS, peak RSS, threads, and the agent's CPU over IDLE seconds,
#     then RSS again (the agent's memory trim runs 3 s after the last pod started);
#   - all manifests removed → every pod's state gone; RSS and CPU then (after the
#     agent's memory trim, which runs 3 s after the last pod went).
#
#   bench/density.sh [N]    default N=1000; IDLE (default 30) seconds of idle measurement;
#                           BENCH_PORT (default 10491) is the agent's port
#   bench/density.sh --cluster [N]
#                           the same on the local control plane, through bench/pods.sh: a
#                           burst of N default pods (service-account tokens) and one of N
#                           without → all Running after the last bind; N idle guests: RSS,
#                           threads, agent CPU over 30 s; all deleted: RSS against the warm
#                           agent (one pod run and deleted)
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = --cluster ]; then
  exec bench/pods.sh 0 "${2:-1000}" "${2:-1000}"
fi
N=${1:-1000}
IDLE=${IDLE:-30}

. bench/lib.sh
standalone_setup
M=$DIR/manifests D=$DIR/data S=$DIR/staging
mkdir -p "$M" "$S"
# Each pod holds a few descriptors (its log, its preopened directories).
ulimit -n "$(ulimit -Hn)"

now_ms() { date +%s%3N; }
rss_mb() { awk '/VmRSS/ {printf "%.0f", $2 / 1024}' "/proc/$PID/status"; }
# The part of the RSS that is the agent's own heap and stacks (not the binary's pages).
anon_mb() { awk '/RssAnon/ {printf "%.0f", $2 / 1024}' "/proc/$PID/status"; }
hwm_mb() { awk '/VmHWM/ {printf "%.0f", $2 / 1024}' "/proc/$PID/status"; }
threads() { awk '/Threads/ {print $2}' "/proc/$PID/status"; }
running() {
  find "$D/pods" -name status.json -print0 2>/dev/null | xargs -0 -r grep -l '"phase":"Running"' 2>/dev/null | wc -l
}
states() { find "$D/pods" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l; }

echo "machine: $(nproc) cores, load before: $(cut -d' ' -f1-3 /proc/loadavg)"
RUST_LOG=warn "$BIN" --pod-manifest-path "$M" --data-dir "$D" --node-name bench --hostname bench \
  --node-ip 127.0.0.1 --addr 127.0.0.1 --port "${BENCH_PORT:-10491}" --healthz-port 0 \
  --allow-anonymous-localhost --max-pods "$((N + 10))" 2>"$DIR/agent.log" &
PID=$!
sleep 3
echo "idle agent, no pods: RSS $(rss_mb) MB (anonymous $(anon_mb) MB), $(threads) threads, CPU $(cpu_percent 10) % of a core (10 s)"
# The same agent warm: one pod run and deleted (its module compiled, the code paths of a
# pod's life paged in). Memory after the mass delete is compared with this.
printf 'apiVersion: v1\nkind: Pod\nmetadata: {name: warm}\nspec:\n  containers:\n  - {name: main, image: "file://%s/sleep.wasm"}\n' \
  "$WASM" >"$M/warm.yaml"
until [ "$(running)" -ge 1 ]; do sleep 0.1; done
rm "$M/warm.yaml"
until [ "$(states)" -eq 0 ]; do sleep 0.1; done
sleep 5
echo "idle agent, warm (one pod run and deleted): RSS $(rss_mb) MB (anonymous $(anon_mb) MB)"
BASE=$(rss_mb)

for i in $(seq "$N"); do
  printf 'apiVersion: v1\nkind: Pod\nmetadata: {name: d%s}\nspec:\n  containers:\n  - {name: main, image: "file://%s/sleep.wasm"}\n' \
    "$i" "$WASM" >"$S/d$i.yaml"
done
t0=$(now_ms)
find "$S" -name '*.yaml' -print0 | xargs -0 mv -t "$M"
until [ "$(running)" -ge "$N" ]; do
  sleep 0.25
  kill -0 "$PID" 2>/dev/null || { echo "the agent exited; its log:"; tail -n 20 "$DIR/agent.log"; exit 1; }
done
echo "$N manifests moved in → all Running: $(($(now_ms) - t0)) ms"
sleep 5
echo "$N idle pods: RSS $(rss_mb) MB ($(( ($(rss_mb) - BASE) * 1024 / N )) KB per pod over the idle agent), anonymous $(anon_mb) MB, peak $(hwm_mb) MB, $(threads) threads"
echo "$N idle pods: agent CPU over $IDLE s: $(cpu_percent "$IDLE") % of a core; then RSS $(rss_mb) MB, anonymous $(anon_mb) MB, $(threads) threads"

t0=$(now_ms)
find "$M" -name '*.yaml' -delete
until [ "$(states)" -eq 0 ]; do sleep 0.25; done
echo "all manifests removed → every pod's state gone: $(($(now_ms) - t0)) ms"
sleep 5
echo "after deleting them: RSS $(rss_mb) MB, anonymous $(anon_mb) MB ($(awk -v a="$(rss_mb)" -v b="$BASE" 'BEGIN {printf "%.2f", a / b}')x the warm idle agent), CPU $(cpu_percent 10) % of a core (10 s)"
echo "agent warnings/errors: $(grep -c -E 'WARN|ERROR' "$DIR/agent.log" || true)"
