# Shared by examples/standalone.sh and examples/demo.sh (sourced, not run). Before
# sourcing, set TAG (the prefix of messages) and HELP_LINES (the header lines --help
# prints); after it: REPO, KEEP (from --keep), WORK and PID (set by the script, cleaned up
# at exit unless --keep), and the functions below.

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
KEEP=0
for arg in "$@"; do
  case "$arg" in
    --keep) KEEP=1 ;;
    -h | --help) sed -n "$HELP_LINES" "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) printf '%s: unknown argument %s (try --help)\n' "$(basename "$0")" "$arg" >&2; exit 2 ;;
  esac
done

log() { printf '[%s] %s\n' "$TAG" "$*" >&2; }
die() { printf '[%s] ERROR: %s\n' "$TAG" "$*" >&2; exit 1; }

# agent_binary: sets BIN to $KRUSTLET_WASI_BIN, else builds the release agent.
agent_binary() {
  BIN="${KRUSTLET_WASI_BIN:-}"
  if [[ -z "$BIN" ]]; then
    command -v cargo >/dev/null || die "cargo not found: install Rust >= 1.95 (https://rustup.rs) and put it on PATH"
    log "building krustlet-wasi (release; the first build takes a few minutes)"
    (cd "$REPO" && cargo build --release --quiet --bin krustlet-wasi) || die "cargo build --release failed"
    BIN="$REPO/target/release/krustlet-wasi"
  fi
  [[ -x "$BIN" ]] || die "$BIN is not an executable"
}

# build_guests: compiles examples/guests with examples/build.sh; sets WASM_DIR.
build_guests() {
  log "building the example guests"
  WASM_DIR="$("$REPO/examples/build.sh" 2>"$WORK/build.log" | tail -n 1)" ||
    { cat "$WORK/build.log" >&2; die "building the guests failed"; }
  [[ -f "$WASM_DIR/hello.wasm" ]] || die "examples/build.sh did not produce $WASM_DIR/hello.wasm"
}

# port_free PORT: nothing listens on 127.0.0.1:PORT.
port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# free_port [PREFERRED]: sets PORT to PREFERRED if nothing listens there on 127.0.0.1, else
# to a random free port.

free_port() {
  local candidate
  if [[ -n "${1:-}" ]] && port_free "$1"; then PORT=$1; return; fi
  for _ in $(seq 50); do
    candidate=$((20000 + RANDOM % 40000))
    if port_free "$candidate"; then PORT=$candidate; return; fi
  done
  die "found no free port on 127.0.0.1"
}

# stop_agent: SIGTERM, then checks the agent exits 0 within 10 s.
stop_agent() {
  kill "$PID"
  for _ in $(seq 100); do kill -0 "$PID" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$PID" 2>/dev/null; then die "the agent did not stop within 10 s of SIGTERM"; fi
  wait "$PID" || die "the agent exited with status $? on SIGTERM (expected 0)"
  PID=""
}

# On a failure: the end of the agent's log. Unless --keep succeeded: the agent stopped
# (after the script's own `before_cleanup`, if defined) and WORK removed.
WORK="" PID=""
cleanup() {
  local code=$?
  if ((code != 0)) && [[ -n "$WORK" && -f "$WORK/agent.log" ]]; then
    printf '[%s] ---- last lines of the agent log (%s) ----\n' "$TAG" "$WORK/agent.log" >&2
    tail -n 30 "$WORK/agent.log" >&2 || true
  fi
  ((KEEP == 0 || code != 0)) || return 0
  if [[ -n "$PID" ]]; then
    if declare -F before_cleanup >/dev/null; then before_cleanup || true; fi
    kill "$PID" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$PID" 2>/dev/null || break; sleep 0.1; done
    if declare -F after_cleanup >/dev/null; then after_cleanup || true; fi
  fi
  [[ -z "$WORK" ]] || rm -rf "$WORK"
}
trap cleanup EXIT
