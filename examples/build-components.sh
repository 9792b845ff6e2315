#!/usr/bin/env bash
# Builds the component guests in examples/guests to WebAssembly components:
#
#   examples/build-components.sh [OUT_DIR]   default OUT_DIR: target/examples-wasm (under the repo)
#   examples/build-components.sh --tools     only installs the tools (no clang needed)
#
# A guest is a component guest when its first line is `// component: WORLD ADAPTER`:
# WORLD is a world of examples/guests/wit/guests.wit.in, ADAPTER is `reactor` (a library
# such as a wasi:http proxy) or `command` (a program with main). For each one this
#   1. generates C bindings for WORLD with wit-bindgen, against the WASI WIT of the
#      wasmtime-wasi-http crate that Cargo.lock pins (so they match the host),
#   2. compiles the guest with Debian's clang and wasi-libc (WASI preview1),
#   3. turns the core module into a component with `wasm-tools component new` and the
#      preview1 adapter of the wasi-preview1-component-adapter-provider crate Cargo.lock pins.
# It installs wit-bindgen-cli and wasm-tools (pinned versions, `cargo install`, a few
# minutes once) when missing, rebuilds only what changed, and prints OUT_DIR last.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="${1:-$REPO/target/examples-wasm}"
WIT_BINDGEN_VERSION=0.63.0
WASM_TOOLS_VERSION=1.263.0
APT="clang lld wasi-libc libclang-rt-14-dev-wasm32"
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"

die() { printf 'build-components.sh: error: %s\n' "$*" >&2; exit 1; }
say() { printf '%s\n' "$*" >&2; }

# ensure_tool BINARY CRATE VERSION CARGO-INSTALL-ARGS...: installs CRATE@VERSION unless
# BINARY --version already names VERSION.
ensure_tool() {
  local binary="$1" crate="$2" version="$3"
  shift 3
  if "$binary" --version 2>/dev/null | grep -qF " $version"; then return; fi
  say "installing $crate $version (cargo install, once)"
  cargo install --quiet --locked --force "$crate@$version" "$@" >&2 ||
    die "cargo install $crate@$version failed"
}

# crate_dir NAME: the unpacked source of the version of NAME that Cargo.lock pins.
crate_dir() {
  local id version dir
  id="$(cd "$REPO" && cargo pkgid --locked "$1" 2>/dev/null)" || die "$1 is not in Cargo.lock"
  version="${id##*@}"
  for dir in "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/"$1-$version"; do
    [[ -d "$dir" ]] && { printf '%s\n' "$dir"; return; }
  done
  (cd "$REPO" && cargo fetch --locked --quiet >&2) || die "cargo fetch failed"
  for dir in "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/"$1-$version"; do
    [[ -d "$dir" ]] && { printf '%s\n' "$dir"; return; }
  done
  die "no source of $1 $version under ${CARGO_HOME:-$HOME/.cargo}/registry/src"
}

command -v cargo >/dev/null || die "cargo not found (rustup)"
if [[ "${1:-}" == --tools ]]; then
  ensure_tool wit-bindgen wit-bindgen-cli "$WIT_BINDGEN_VERSION" --no-default-features --features c
  ensure_tool wasm-tools wasm-tools "$WASM_TOOLS_VERSION" --no-default-features --features component,validate
  exit 0
fi
command -v clang >/dev/null || die "clang not found: apt-get install $APT"
[[ -f /usr/lib/wasm32-wasi/crt1-reactor.o ]] || die "wasi-libc not found: apt-get install $APT"

shopt -s nullglob
guests=()
for src in "$REPO"/examples/guests/*.c; do
  head -n 1 "$src" | grep -q '^// component: ' && guests+=("$src")
done
((${#guests[@]})) || die "no component guests in $REPO/examples/guests"

ensure_tool wit-bindgen wit-bindgen-cli "$WIT_BINDGEN_VERSION" --no-default-features --features c
ensure_tool wasm-tools wasm-tools "$WASM_TOOLS_VERSION" --no-default-features --features component,validate

HTTP_WIT="$(crate_dir wasmtime-wasi-http)/wit"
ADAPTERS="$(crate_dir wasi-preview1-component-adapter-provider)/artefacts"
WASI="$(sed -n 's/^package wasi:http@\([0-9.]*\);.*/\1/p' "$HTTP_WIT/deps/http.wit")"
[[ -n "$WASI" ]] || die "no wasi:http version in $HTTP_WIT/deps/http.wit"

WORK="$OUT/.components"
mkdir -p "$WORK/wit" || die "cannot create $WORK"
# One build at a time per output directory: concurrent builds (parallel tests, scripts)
# would share the bindings directories below.
exec 9>"$WORK/lock"
flock 9 || die "cannot lock $WORK/lock"
sed "s/@WASI@/$WASI/g" "$REPO/examples/guests/wit/guests.wit.in" > "$WORK/wit/guests.wit.new"
cmp -s "$WORK/wit/guests.wit.new" "$WORK/wit/guests.wit" 2>/dev/null ||
  mv "$WORK/wit/guests.wit.new" "$WORK/wit/guests.wit"
rm -f "$WORK/wit/guests.wit.new"
ln -sfn "$HTTP_WIT/deps" "$WORK/wit/deps"
# Everything a component depends on besides its own source.
STAMP="wit-bindgen $WIT_BINDGEN_VERSION, wasm-tools $WASM_TOOLS_VERSION, WASI $WASI, $ADAPTERS, $(cksum < "$0")"

for src in "${guests[@]}"; do
  name="$(basename "$src" .c)"
  read -r _ _ world adapter _ < <(head -n 1 "$src")
  [[ -f "$ADAPTERS/wasi_snapshot_preview1.$adapter.wasm" ]] ||
    die "$src: unknown adapter '$adapter' (reactor or command)"
  out="$OUT/$name.wasm"
  stamp="$WORK/$name.stamp"
  if [[ -f "$out" && "$out" -nt "$src" && "$out" -nt "$WORK/wit/guests.wit" ]] &&
     [[ "$(cat "$stamp" 2>/dev/null)" == "$STAMP" ]]; then
    say "up to date $out"
    continue
  fi
  bindings="$WORK/$name"
  rm -rf "$bindings" && mkdir -p "$bindings"
  if ! err="$(wit-bindgen c --world "krustlet:guests/$world" --out-dir "$bindings" "$WORK/wit" 2>&1)"; then
    printf '%s\n' "$err" >&2
    die "wit-bindgen c failed for world $world"
  fi
  model=command
  [[ "$adapter" == reactor ]] && model=reactor
  if ! err="$(clang --target=wasm32-wasi --sysroot=/usr -O2 -mexec-model="$model" -Wl,--strip-debug \
      -I "$bindings" -o "$bindings/core.wasm" "$src" "$bindings"/*.c "$bindings"/*_component_type.o 2>&1)"; then
    printf '%s\n' "$err" >&2
    die "compiling $src failed (missing packages? apt-get install $APT)"
  fi
  wasm-tools component new "$bindings/core.wasm" \
    --adapt "wasi_snapshot_preview1=$ADAPTERS/wasi_snapshot_preview1.$adapter.wasm" -o "$out.tmp" ||
    die "wasm-tools component new failed for $src"
  mv "$out.tmp" "$out"
  printf '%s\n' "$STAMP" > "$stamp"
  say "built $out"
done
echo "$OUT"
