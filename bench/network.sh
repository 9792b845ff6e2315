#!/usr/bin/env bash
# Pod networking benchmark (no cluster): the NetworkPolicy view of PODS pods (default
# 10,000) in 100 namespaces with 2 policies each, built as the agent's watch builds it —
# time to reduce the pods, time to rebuild the view, memory per pod — and the cost of the
# socket verdicts a guest's connections get (open, allowed by a rule, denied by range or
# policy). Release build (bench/network.rs). Prints numbers; asserts nothing.
#
#   bench/network.sh [PODS=10000]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet --example bench-network
echo "machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg) (shared with other work)"
target/release/examples/bench-network "${1:-10000}"
