#!/usr/bin/env python3
"""Per-phase breakdown of pod starts from an agent log: the `start traced` debug lines
(src/pods/worker/trace.rs), in groups of the sizes given, in the order the starts were
traced. Prints p50/p90/p99 in ms.

Usage: bench/phases.py AGENT_LOG [SIZE...] (run bench/pods.sh with BENCH_AGENT_LOG=AGENT_LOG
and RUST_LOG=warn,krustlet_wasi::pods::worker::trace=debug; bench/pods.sh SEQ BURST makes
groups of 1 SEQ BURST SEQ BURST: the warm-up, then default pods, then pods without token)."""
import re
import sys

PHASES = ["admission", "queue", "volumes", "token", "reads", "image", "create", "status", "total"]


def pct(xs, p):
    xs = sorted(xs)
    return xs[round((len(xs) - 1) * p)]


def main(path, sizes):
    rows = []
    for line in open(path, errors="replace"):
        if "start traced" in line:
            rows.append({k: int(v) / 1000 for k, v in re.findall(r"(\w+)_us=(\d+)", line)})
    groups, at = [], 0
    for size in sizes or [len(rows)]:
        groups.append((f"starts {at + 1}..{at + size}", rows[at : at + size]))
        at += size
    for label, group in groups:
        if not group:
            continue
        print(f"{label}: {len(group)} starts, ms p50 / p90 / p99")
        for ph in PHASES:
            xs = [r.get(ph, 0.0) for r in group]
            print(f"  {ph:<9} {pct(xs, 0.5):7.2f} {pct(xs, 0.9):7.2f} {pct(xs, 0.99):7.2f}")


if __name__ == "__main__":
    main(sys.argv[1], [int(n) for n in sys.argv[2:]])
