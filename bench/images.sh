#!/usr/bin/env bash
# Pulling large images that --image-max-size allows, on a standalone node (release build)
# with static pods from the local registry. Prints the agent's peak RSS (VmHWM) before and
# after each pull, and how long image → Succeeded took; asserts nothing:
#   - image "plain": an incompressible plain tar layer of SIZE MiB beside a layer with the
#     module (the download streams to disk);
#   - image "packed": one gzip layer holding the module and SIZE MiB of zeros (the layer
#     streams through the unpacker).
#
#   bench/images.sh [SIZE_MIB]     default 1024 (the node runs with --image-max-size=2Gi)
#   KRUSTLET_WASI_BIN=target/debug/krustlet-wasi bench/images.sh   (skip the release build)
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE=${1:-1024}

bash bootstrap/cluster.sh up >/dev/null
eval "$(bash bootstrap/cluster.sh env)"
REG=$KRUSTLET_TEST_REGISTRY
BIN=${KRUSTLET_WASI_BIN:-}
if [[ -z "$BIN" ]]; then
  cargo build --release --quiet --bin krustlet-wasi
  BIN=target/release/krustlet-wasi
fi
DIR=$(mktemp -d)
M=$DIR/manifests D=$DIR/data W=$DIR/work
mkdir -p "$M" "$W/plain" "$W/module" "$W/packed"
PID=
trap '[[ -n "$PID" ]] && kill "$PID" 2>/dev/null; rm -rf "$DIR"' EXIT

now_ms() { date +%s%3N; }
sha() { echo "sha256:$(sha256sum "$1" | cut -d' ' -f1)"; }
size() { stat -c %s "$1"; }
# push_blob REPO FILE: a monolithic upload (start a session, then PUT the bytes).
push_blob() {
  local loc
  loc=$(curl -fsS -D - -o /dev/null -X POST "http://$REG/v2/$1/blobs/uploads/" | tr -d '\r' |
    awk 'tolower($1) == "location:" {print $2}')
  [[ "$loc" == http* ]] || loc="http://$REG$loc"
  [[ "$loc" == *\?* ]] && loc="$loc&" || loc="$loc?"
  curl -fsS -H "Content-Type: application/octet-stream" -T "$2" "${loc}digest=$(sha "$2")" >/dev/null
}
desc() { printf '{"mediaType":"%s","digest":"%s","size":%s}' "$1" "$(sha "$2")" "$(size "$2")"; }
# push_image REPO LAYER...: an OCI image with these gzip/tar layers and Cmd /app.wasm 0.
push_image() {
  local repo=$1 layers=() l type
  shift
  printf '{"config":{"Cmd":["/app.wasm","0"]}}' >"$W/config.json"
  push_blob "$repo" "$W/config.json"
  for l in "$@"; do
    push_blob "$repo" "$l"
    type=application/vnd.oci.image.layer.v1.tar
    [[ "$l" == *.gz ]] && type=$type+gzip
    layers+=("$(desc "$type" "$l")")
  done
  printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":%s,"layers":[%s]}' \
    "$(desc application/vnd.oci.image.config.v1+json "$W/config.json")" "$(IFS=,; echo "${layers[*]}")" >"$W/manifest.json"
  curl -fsS -X PUT -H 'Content-Type: application/vnd.oci.image.manifest.v1+json' \
    --data-binary "@$W/manifest.json" "http://$REG/v2/$repo/manifests/v1" >/dev/null
}
phase() {
  grep -l "\"name\":\"$1\"" "$D"/pods/*/status.json 2>/dev/null | head -n 1 |
    xargs -r grep -o '"phase":"[A-Za-z]*"' 2>/dev/null | head -n 1 | cut -d'"' -f4
}
peak_mib() { awk '/^VmHWM:/ {print int($2 / 1024)}' "/proc/$PID/status"; }

echo "building the layers ($SIZE MiB each; the plain one is AES-CTR output: incompressible and the same every run)"
clang --target=wasm32-wasi --sysroot=/usr -O2 -Wl,--strip-all -o "$W/module/app.wasm" examples/guests/exit.c
cp "$W/module/app.wasm" "$W/packed/app.wasm"
head -c "${SIZE}M" /dev/zero | openssl enc -aes-128-ctr -K 00000000000000000000000000000000 \
  -iv 00000000000000000000000000000000 -nosalt >"$W/plain/filler"
head -c "${SIZE}M" /dev/zero >"$W/packed/padding"
tar -C "$W/plain" -cf "$W/plain.tar" filler && rm "$W/plain/filler"
tar -C "$W/module" -czf "$W/module.tar.gz" app.wasm
tar -C "$W/packed" -czf "$W/packed.tar.gz" app.wasm padding && rm "$W/packed/padding"
push_image bench/large-plain "$W/plain.tar" "$W/module.tar.gz"
push_image bench/large-packed "$W/packed.tar.gz"
rm -f "$W/plain.tar"
echo "layers: plain $(( $(size "$W/module.tar.gz") / 1024 )) KiB + ${SIZE} MiB, packed $(( $(size "$W/packed.tar.gz") / 1024 )) KiB unpacking to ${SIZE} MiB"

env -u KUBECONFIG RUST_LOG=warn "$BIN" --pod-manifest-path "$M" --data-dir "$D" --node-name bench-images --hostname bench-images \
  --node-ip 127.0.0.1 --addr 127.0.0.1 --port 10363 --healthz-port 0 --allow-anonymous-localhost \
  --insecure-registries "$REG" --image-max-size 2Gi 2>"$DIR/agent.log" &
PID=$!
sleep 2
echo "agent idle: peak RSS $(peak_mib) MiB"
for image in plain packed; do
  t=$(now_ms)
  printf 'apiVersion: v1\nkind: Pod\nmetadata: {name: %s}\nspec:\n  restartPolicy: Never\n  containers:\n  - {name: main, image: "%s/bench/large-%s:v1"}\n' \
    "$image" "$REG" "$image" >"$M/$image.yaml"
  until [[ "$(phase "$image-bench-images")" == Succeeded ]]; do
    if [[ "$(phase "$image-bench-images")" == Failed ]] || (($(now_ms) - t > 600000)); then
      echo "image $image did not run:"; tail -n 20 "$DIR/agent.log"; exit 1
    fi
    sleep 0.05
  done
  echo "image $image: pulled and ran in $(($(now_ms) - t)) ms; agent peak RSS now $(peak_mib) MiB"
done
