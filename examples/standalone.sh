#!/usr/bin/env bash
# Runs a Wasm pod with no cluster at all: the node agent in standalone mode with a static
# pod (--pod-manifest-path), then `krustlet-wasi pods` and `krustlet-wasi logs` on it.
#
#   examples/standalone.sh [--keep]
#
# On a fresh Debian 12 machine, as root (Rust >= 1.95 from rustup must be on PATH):
# installs clang lld wasi-libc libclang-rt-14-dev-wasm32 if missing, builds the example
# guests and the release agent, starts the agent with the hello pod (prints "Hello, World!"
# every second), waits until it runs, shows its logs, and stops the agent. With --keep the
# agent is left running and the commands to look at it and stop it are printed.
# Exits non-zero with a message saying what failed.
#
# Env: KRUSTLET_WASI_BIN, an agent binary to use instead of building the release one
# (the tests run this script with their build).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
APT_PACKAGES=(clang lld wasi-libc libclang-rt-14-dev-wasm32)
NODE=standalone
POD="hello-$NODE" # a static pod is named <name>-<node-name>
KEEP=0
for arg in "$@"; do
  case "$arg" in
    --keep) KEEP=1 ;;
    -h | --help) sed -n '2,15p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) printf 'standalone.sh: unknown argument %s (try --help)\n' "$arg" >&2; exit 2 ;;
  esac
done

log() { printf '[standalone] %s\n' "$*" >&2; }
die() { printf '[standalone] ERROR: %s\n' "$*" >&2; exit 1; }

WORK="" PID=""
cleanup() {
  local code=$?
  if [[ -n "$PID" ]] && ((KEEP == 0 || code != 0)); then
    kill "$PID" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$PID" 2>/dev/null || break; sleep 0.1; done
  fi
  if ((code != 0)) && [[ -n "$WORK" && -f "$WORK/agent.log" ]]; then
    printf '[standalone] ---- last lines of the agent log (%s) ----\n' "$WORK/agent.log" >&2
    tail -n 30 "$WORK/agent.log" >&2 || true
  fi
  if [[ -n "$WORK" ]] && ((KEEP == 0 || code != 0)); then rm -rf "$WORK"; fi
}
trap cleanup EXIT

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
log "building the example guests"
WASM_DIR="$("$REPO/examples/build.sh" 2>"$WORK/build.log" | tail -n 1)" ||
  { cat "$WORK/build.log" >&2; die "building the guests failed"; }
[[ -f "$WASM_DIR/hello.wasm" ]] || die "examples/build.sh did not produce $WASM_DIR/hello.wasm"
BIN="${KRUSTLET_WASI_BIN:-}"
if [[ -z "$BIN" ]]; then
  command -v cargo >/dev/null || die "cargo not found: install Rust >= 1.95 (https://rustup.rs) and put it on PATH"
  log "building krustlet-wasi (release; the first build takes a few minutes)"
  (cd "$REPO" && cargo build --release --quiet --bin krustlet-wasi) || die "cargo build --release failed"
  BIN="$REPO/target/release/krustlet-wasi"
fi
[[ -x "$BIN" ]] || die "$BIN is not an executable"

# 3. A manifest dir with the hello pod, a data dir, a free port.
MANIFESTS="$WORK/manifests" DATA="$WORK/data"
mkdir -p "$MANIFESTS" "$DATA"
sed "s#@WASM_DIR@#$WASM_DIR#g" "$REPO/examples/static/hello.yaml.in" >"$MANIFESTS/hello.yaml"
port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
PORT=""
for _ in $(seq 50); do
  candidate=$((20000 + RANDOM % 40000))
  if port_free "$candidate"; then PORT=$candidate; break; fi
done
[[ -n "$PORT" ]] || die "found no free port on 127.0.0.1"

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

if ((KEEP)); then
  log "the agent keeps running (pid $PID). Try:"
  log "  $BIN pods --data-dir $DATA"
  log "  $BIN logs -f $POD --data-dir $DATA"
  log "  cp $REPO/examples/static/exit.yaml.in and sed @WASM_DIR@ -> $WASM_DIR into $MANIFESTS/ for another pod"
  log "stop it with: kill $PID && rm -rf $WORK"
else
  log "stopping the agent"
  kill "$PID"
  for _ in $(seq 100); do kill -0 "$PID" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$PID" 2>/dev/null; then die "the agent did not stop within 10 s of SIGTERM"; fi
  wait "$PID" || die "the agent exited with status $? on SIGTERM (expected 0)"
  PID=""
  log "done"
fi
