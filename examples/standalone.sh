#!/usr/bin/env bash
# Runs a Wasm pod with no cluster at all: the node agent in standalone mode with a static
# pod (--pod-manifest-path), then `krustlet-wasi pods` and `krustlet-wasi logs` on it.
#
#   examples/standalone.sh [--keep]
#
# On a fresh Debian 12 machine, as root (Rust >= 1.95 from rustup must be on PATH):
# installs clang lld wasi-libc libclang-rt-14-dev-wasm32 if missing, builds the example
# guests and the release agent, starts the agent with the hello pod (prints "Hello, World!"
# every second) and the http pod (a wasi:http server on port 8080, or the next free port),
# waits until they run, shows the hello pod's logs, asks the server with curl, and stops the
# agent. With --keep the
# agent is left running and the commands to look at it and stop it are printed.
# Exits non-zero with a message saying what failed.
#
# Env: KRUSTLET_WASI_BIN, an agent binary to use instead of building the release one
# (the tests run this script with their build).
set -euo pipefail

TAG=standalone HELP_LINES='2,15p'
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh" "$@"
APT_PACKAGES=(clang lld wasi-libc libclang-rt-14-dev-wasm32)
NODE=standalone
POD="hello-$NODE" # a static pod is named <name>-<node-name>

# 1. Packages for the guests (C -> wasm32-wasi), only when missing.
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
  ((EUID == 0)) || die "packages missing (${missing[*]}): run as root, or apt-get install them"
  log "installing ${missing[*]}"
  apt-get update -qq >/dev/null || die "apt-get update failed"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null ||
    die "apt-get install ${missing[*]} failed"
fi

# 2. Build the guests and the agent.
WORK="$(mktemp -d /tmp/krustlet-standalone.XXXXXX)"
build_guests
agent_binary

# 3. A manifest dir with the hello pod, a data dir, a free port.
MANIFESTS="$WORK/manifests" DATA="$WORK/data"
mkdir -p "$MANIFESTS" "$DATA"
sed "s#@WASM_DIR@#$WASM_DIR#g" "$REPO/examples/static/hello.yaml.in" >"$MANIFESTS/hello.yaml"
HTTP_PORT=8080
until port_free "$HTTP_PORT"; do HTTP_PORT=$((HTTP_PORT + 1)); done
sed "s#@WASM_DIR@#$WASM_DIR#g; s#@HTTP_PORT@#$HTTP_PORT#g" "$REPO/examples/static/http.yaml.in" >"$MANIFESTS/http.yaml"
HTTP_POD="http-$NODE"
free_port

# 4. The agent: no kubeconfig and no bootstrap file, so it runs standalone.
[[ ! -e /etc/kubernetes/bootstrap-kubelet.conf ]] ||
  die "/etc/kubernetes/bootstrap-kubelet.conf exists: the agent would join that cluster instead of running standalone"
log "starting the agent: $BIN --pod-manifest-path $MANIFESTS --data-dir $DATA --port $PORT"
env -u KUBECONFIG RUST_LOG="${RUST_LOG:-info}" "$BIN" --pod-manifest-path "$MANIFESTS" --data-dir "$DATA" \
  --node-name "$NODE" --hostname "$NODE" --node-ip 127.0.0.1 --addr 127.0.0.1 --port "$PORT" --healthz-port 0 \
  >"$WORK/agent.log" 2>&1 &
PID=$!

# 5. Wait until the pod runs.
pods() { "$BIN" pods --data-dir "$DATA"; }
running=0
for _ in $(seq 600); do
  kill -0 "$PID" 2>/dev/null || die "the agent exited (see its log below)"
  if pods 2>/dev/null | awk -v pod="$POD" '$2 == pod && $4 == "Running" {found = 1} END {exit !found}'; then
    running=1
    break
  fi
  sleep 0.1
done
((running)) || { pods >&2 || true; die "pod $POD was not Running within 60 s"; }
serving=0
for _ in $(seq 600); do
  if curl -fsS --max-time 5 -o /dev/null "http://127.0.0.1:$HTTP_PORT/" 2>/dev/null; then
    serving=1
    break
  fi
  sleep 0.1
done
((serving)) || { pods >&2 || true; die "pod $HTTP_POD did not answer on port $HTTP_PORT within 60 s"; }
log "krustlet-wasi pods --data-dir $DATA"
pods

# 6. Its logs: wait for three lines, then show them.
lines=0
for _ in $(seq 100); do
  lines=$("$BIN" logs "$POD" --data-dir "$DATA" 2>/dev/null | grep -c '^Hello, World!$' || true)
  ((lines >= 3)) && break
  sleep 0.1
done
((lines >= 3)) || die "pod $POD printed $lines \"Hello, World!\" lines in 10 s, expected 3"
log "krustlet-wasi logs $POD --data-dir $DATA"
"$BIN" logs "$POD" --data-dir "$DATA" || die "krustlet-wasi logs failed"

# 7. The wasi:http pod: a request, and the line it logged.
log "curl http://127.0.0.1:$HTTP_PORT/"
curl -sS --max-time 10 -w 'HTTP %{http_code}\n' "http://127.0.0.1:$HTTP_PORT/" || die "curl failed"
log "krustlet-wasi logs $HTTP_POD --data-dir $DATA"
"$BIN" logs "$HTTP_POD" --data-dir "$DATA" || die "krustlet-wasi logs failed"

if ((KEEP)); then
  log "the agent keeps running (pid $PID). Try:"
  log "  $BIN pods --data-dir $DATA"
  log "  $BIN logs -f $POD --data-dir $DATA"
  log "  curl http://127.0.0.1:$HTTP_PORT/"
  log "  cp $REPO/examples/static/exit.yaml.in and sed @WASM_DIR@ -> $WASM_DIR into $MANIFESTS/ for another pod"
  log "stop it with: kill $PID && rm -rf $WORK"
else
  log "stopping the agent"
  stop_agent
  log "done"
fi
