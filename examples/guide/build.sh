#!/usr/bin/env bash
# Builds the guide's HTTP server (examples/guide, tokio_wasi + warp_wasi) to a wasm32-wasi
# module the way a Debian 12 machine can: Debian's rustc 1.63 and cargo 0.66 with
# libstd-rust-dev-wasm32 (rustup cannot add wasm targets on these machines).
#
#   examples/guide/build.sh            -> target/guide/target/wasm32-wasi/release/http-server.wasm
#   examples/guide/build.sh --native   the same program for the host (examples/guide/native),
#                                      the baseline of the benchmark -> target/guide/target/release/http-server
#   examples/guide/build.sh --relock   rewrite the Cargo.lock files (maintainers; see below)
#
# Prints the path of what it built on its last line. As root it installs what is missing
# with apt-get (rustc cargo libstd-rust-dev-wasm32 lld-14: the linker Debian's rustc calls,
# /usr/bin/rust-lld, is a link to lld-14, which it only suggests). The only network it uses
# is Debian's archive and crates.io. Everything cargo writes (its CARGO_HOME, its target
# dir) stays under the repo's target/guide/, so rustup's ~/.cargo is never touched. Builds
# again only when a source, manifest or lock file is newer than the output.
#
# Why the flags: cargo 0.66 reaches crates.io only through `-Z sparse-registry` (its git
# index is gone), an unstable flag, so cargo runs with RUSTC_BOOTSTRAP=1; rustc runs through
# a two-line wrapper that drops that variable again, so no crate's build probe mistakes
# Debian's stable rustc for a nightly one. `--locked`: the lock files pin what rustc 1.63
# builds.
#
# --relock regenerates both lock files with a newer cargo (rustup's, or $RELOCK_CARGO), whose
# resolver skips versions that declare a newer rust-version than /usr/bin/rustc's, then pins
# PINS below (newer releases of these fail with rustc 1.63 without declaring so, or pull in
# crates that do), and writes lock format 3, the newest cargo 0.66 reads.
set -euo pipefail

GUIDE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$GUIDE/../.." && pwd)"
OUT="$REPO/target/guide"
APT=(rustc cargo libstd-rust-dev-wasm32 lld-14)
# Crate pins for the wasm build, applied in this order by --relock (name version).
PINS=(
  "wasmedge_wasi_socket 0.5.4"
  "mio_wasi 0.8.7"
  "tempfile 3.15.0"
  "rustix 0.38.43"
  "idna_adapter 1.1.0"
)

die() { printf 'guide/build.sh: error: %s\n' "$*" >&2; exit 1; }
log() { printf 'guide/build.sh: %s\n' "$*" >&2; }

mode=wasm
case "${1:-}" in
  "") ;;
  --native) mode=native ;;
  --relock) mode=relock ;;
  -h | --help) sed -n '2,27p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
  *) die "unknown argument $1 (try --help)" ;;
esac

# 1. Debian's toolchain, installed when missing.
installed() { [[ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" == "install ok installed" ]]; }
missing=()
for pkg in "${APT[@]}"; do installed "$pkg" || missing+=("$pkg"); done
if ((${#missing[@]})); then
  ((EUID == 0)) || die "missing Debian packages: ${missing[*]} (run as root, or apt-get install them)"
  log "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  if ! apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null 2>&1; then
    apt-get update -qq || die "apt-get update failed"
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null ||
      die "apt-get install ${missing[*]} failed"
  fi
fi
[[ -x "$(readlink -f /usr/bin/rust-lld)" ]] || die "/usr/bin/rust-lld does not resolve to a linker (apt-get install lld-14)"

# 2. An environment of its own: cargo's home and target dir under target/guide, Debian's rustc.
mkdir -p "$OUT/bin" "$OUT/cargo-home"
WRAPPER="$OUT/bin/rustc"
wrapper_text="$(printf '#!/bin/sh\nunset RUSTC_BOOTSTRAP\nexec /usr/bin/rustc "$@"')"
if [[ ! -x "$WRAPPER" || "$(cat "$WRAPPER")" != "$wrapper_text" ]]; then
  printf '%s\n' "$wrapper_text" >"$WRAPPER.$$" && chmod +x "$WRAPPER.$$" && mv "$WRAPPER.$$" "$WRAPPER"
fi
export CARGO_HOME="$OUT/cargo-home" CARGO_TARGET_DIR="$OUT/target" RUSTC="$WRAPPER"
unset RUSTC_WRAPPER RUSTFLAGS CARGO_BUILD_TARGET CARGO_BUILD_RUSTFLAGS CARGO_ENCODED_RUSTFLAGS
debian_cargo() { RUSTC_BOOTSTRAP=1 /usr/bin/cargo -Z sparse-registry "$@"; }

# relock DIR [PINS...]: a fresh lock for DIR as rustc 1.63 needs it.
relock() {
  local dir="$1" pin
  shift
  local cargo="${RELOCK_CARGO:-$HOME/.cargo/bin/cargo}"
  [[ -x "$cargo" ]] || die "--relock needs a cargo >= 1.84 (rustup's): set RELOCK_CARGO"
  (
    cd "$dir"
    export CARGO_RESOLVER_INCOMPATIBLE_RUST_VERSIONS=fallback RUSTC=/usr/bin/rustc
    "$cargo" generate-lockfile --quiet
    for pin in "$@"; do
      "$cargo" update --quiet -p "${pin% *}" --precise "${pin#* }"
    done
    sed -i 's/^version = 4$/version = 3/' Cargo.lock
  ) || die "relocking $dir failed"
  log "wrote $dir/Cargo.lock"
}

if [[ "$mode" == relock ]]; then
  relock "$GUIDE" "${PINS[@]}"
  relock "$GUIDE/native"
  echo "$GUIDE/Cargo.lock"
  exit 0
fi

# 3. Build, unless the output is newer than every input.
if [[ "$mode" == native ]]; then
  project="$GUIDE/native" target_args=() artifact="$OUT/target/release/http-server"
  inputs=("$GUIDE/native/Cargo.toml" "$GUIDE/native/Cargo.lock" "$GUIDE/src")
else
  project="$GUIDE" target_args=(--target wasm32-wasi) artifact="$OUT/target/wasm32-wasi/release/http-server.wasm"
  inputs=("$GUIDE/Cargo.toml" "$GUIDE/Cargo.lock" "$GUIDE/src")
fi
if [[ -f "$artifact" && -z "$(find "${inputs[@]}" -newer "$artifact" -print -quit)" ]]; then
  log "up to date"
else
  log "building $mode with $(/usr/bin/rustc --version) (the first build takes a few minutes)"
  start=$SECONDS
  (cd "$project" && debian_cargo build "${target_args[@]}" --release --locked) ||
    die "cargo build ($mode) failed"
  [[ -f "$artifact" ]] || die "cargo did not write $artifact"
  touch "$artifact" # cargo may keep an older mtime when nothing it tracks changed
  log "built in $((SECONDS - start)) s: $(stat -c %s "$artifact") bytes"
fi
echo "$artifact"
