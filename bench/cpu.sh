#!/usr/bin/env bash
# Guest CPU controls of the provider (no agent, no cluster): a busy guest under a 200m
# limit for SECONDS (its share of a core), then two unlimited busy guests beside a guest
# printing once a second on 2 guest threads (the gaps between its lines, and how late a
# timer on the caller's own runtime fired). Prints numbers; asserts nothing.
#
#   bench/cpu.sh [SECONDS=10]     BENCH_PROFILE=dev for a debug build (default: release)
set -euo pipefail
cd "$(dirname "$0")/.."
PROFILE=${BENCH_PROFILE:-release}
cargo run --quiet --profile "$PROFILE" -p krustlet-wasi-provider --example guest_cpu -- "${1:-10}"
