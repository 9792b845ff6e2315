#!/usr/bin/env bash
# Builds every guest in examples/guests/*.c to a WebAssembly (wasm32-wasi) module, and
# the component guests (first line `// component: ...`) to components with
# examples/build-components.sh:
#
#   examples/build.sh [OUT_DIR]     default OUT_DIR: target/examples-wasm (under the repo)
#
# Prints the directory it wrote to on its last line. Needs Debian's clang, lld, wasi-libc
# and libclang-rt-14-dev-wasm32 (`apt-get install clang lld wasi-libc libclang-rt-14-dev-wasm32`,
# or `bootstrap/cluster.sh install`, which installs them); the components also need
# wit-bindgen-cli and wasm-tools, which build-components.sh installs with cargo.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="${1:-$REPO/target/examples-wasm}"
APT="clang lld wasi-libc libclang-rt-14-dev-wasm32"

die() { printf 'build.sh: error: %s\n' "$*" >&2; exit 1; }

command -v clang >/dev/null || die "clang not found: apt-get install $APT"
[[ -f /usr/lib/wasm32-wasi/libc.a ]] || die "wasi-libc not found (/usr/lib/wasm32-wasi/libc.a): apt-get install $APT"
mkdir -p "$OUT" || die "cannot create $OUT"

shopt -s nullglob
guests=("$REPO"/examples/guests/*.c)
((${#guests[@]})) || die "no guests in $REPO/examples/guests"
for src in "${guests[@]}"; do
  name="$(basename "$src" .c)"
  head -n 1 "$src" | grep -q '^// component: ' && continue
  # Written aside and renamed: a concurrent reader (a running example) never sees half a file.
  tmp="$OUT/.$name.wasm.$$"
  if ! err="$(clang --target=wasm32-wasi --sysroot=/usr -O2 -Wl,--strip-all -o "$tmp" "$src" 2>&1)"; then
    rm -f "$tmp"
    printf '%s\n' "$err" >&2
    die "compiling $src failed (missing packages? apt-get install $APT)"
  fi
  mv "$tmp" "$OUT/$name.wasm"
  printf 'built %s\n' "$OUT/$name.wasm" >&2
done
bash "$REPO/examples/build-components.sh" "$OUT" >/dev/null || die "building the component guests failed"
echo "$OUT"
