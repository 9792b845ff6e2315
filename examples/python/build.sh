#!/usr/bin/env bash
# Builds examples/python/app.py into a wasi:http/proxy component with componentize-py, the
# way a Python user would, offline from the WIT that this repo's wasmtime-wasi-http (48)
# crate ships (cargo's registry copy: ~/.cargo/registry/src/*/wasmtime-wasi-http-48*/wit).
#
#   examples/python/build.sh [OUT]    default OUT: target/python/hello-python.wasm (under the repo)
#
# Prints the path of the component on its last line. The first run installs componentize-py
# ($COMPONENTIZE_PY_VERSION, from PyPI) into a venv under $PY_VENV (default
# /var/cache/krustlet-wasi/componentize-py) — the only network it uses; later runs reuse it,
# and build again only when app.py or this script is newer than the output (a few ms).
# Needs python3 (>= 3.10) with venv. The component is about 18 MB (CPython and its standard
# library are inside it). Run it: krustlet-wasi push OUT REGISTRY/REPO:TAG, then a pod with
# that image (examples/pods/http.yaml shows the shape; it listens on port 8080 by default).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
OUT="${1:-$REPO/target/python/hello-python.wasm}"
PY_VENV="${PY_VENV:-/var/cache/krustlet-wasi/componentize-py}"
COMPONENTIZE_PY_VERSION="${COMPONENTIZE_PY_VERSION:-0.25.1}"

die() { printf 'python/build.sh: error: %s\n' "$*" >&2; exit 1; }

if [[ -f "$OUT" && "$OUT" -nt "$HERE/app.py" && "$OUT" -nt "${BASH_SOURCE[0]}" ]]; then
  echo "$OUT"
  exit 0
fi

shopt -s nullglob
wits=("$HOME"/.cargo/registry/src/*/wasmtime-wasi-http-48*/wit)
((${#wits[@]})) || die "no wasmtime-wasi-http 48 sources in ~/.cargo/registry: run 'cargo fetch' in the repo"
WIT="${wits[-1]}"

CPY="$PY_VENV/bin/componentize-py"
if ! [[ -x "$CPY" ]] || [[ "$("$CPY" --version 2>/dev/null)" != "componentize-py $COMPONENTIZE_PY_VERSION" ]]; then
  command -v python3 >/dev/null || die "python3 not found"
  printf 'python/build.sh: installing componentize-py %s into %s\n' "$COMPONENTIZE_PY_VERSION" "$PY_VENV" >&2
  python3 -m venv "$PY_VENV" || die "python3 -m venv failed (Debian: apt-get install python3-venv)"
  "$PY_VENV/bin/pip" install --quiet "componentize-py==$COMPONENTIZE_PY_VERSION" || die "pip install failed"
fi

mkdir -p "$(dirname "$OUT")"
# Written aside and renamed: a reader never sees half a file.
(cd "$HERE" && "$CPY" -d "$WIT" -w wasi:http/proxy componentize app -o "$OUT.tmp" >&2) ||
  die "componentize-py failed"
mv "$OUT.tmp" "$OUT"
echo "$OUT"
