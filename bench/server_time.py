#!/usr/bin/env python3
"""The control plane's own time for the requests a pod start makes, as the API server and
etcd count it (their /metrics), so that a start's breakdown does not rest on our client
alone. Used by bench/pods.sh around its sequential default pods.

  server_time.py snap FILE      save the API server's and etcd's counters to FILE
  server_time.py diff A B       print the mean time of each series between two snapshots

Means only: in 1.20 the API server's latency buckets start at 50 ms, too coarse for
percentiles of requests that take a few milliseconds. Needs kubectl on the control plane
(bootstrap/cluster.sh env) and etcd's client port (ETCD_METRICS, default 127.0.0.1:2379).
"""
import os
import re
import subprocess
import sys
import urllib.request

# (label, metric, labels that must all match): the series a default pod's start touches.
SERIES = [
    ("TokenRequest (POST serviceaccounts/token)", "apiserver_request_duration_seconds",
     {"verb": "POST", "resource": "serviceaccounts", "subresource": "token"}),
    ("status PATCH (PATCH pods/status)", "apiserver_request_duration_seconds",
     {"verb": "PATCH", "resource": "pods", "subresource": "status"}),
    ("ConfigMap read (GET configmaps)", "apiserver_request_duration_seconds",
     {"verb": "GET", "resource": "configmaps", "subresource": ""}),
    ("pod create by the bench (POST pods)", "apiserver_request_duration_seconds",
     {"verb": "POST", "resource": "pods", "subresource": ""}),
    ("  API server -> etcd: get Pod", "etcd_request_duration_seconds",
     {"operation": "get", "type": "*core.Pod"}),
    ("  API server -> etcd: update Pod", "etcd_request_duration_seconds",
     {"operation": "update", "type": "*core.Pod"}),
    ("  API server -> etcd: get ServiceAccount", "etcd_request_duration_seconds",
     {"operation": "get", "type": "*core.ServiceAccount"}),
    ("  etcd: WAL fsync", "etcd_disk_wal_fsync_duration_seconds", {}),
    ("  etcd: backend commit", "etcd_disk_backend_commit_duration_seconds", {}),
]

LINE = re.compile(r'^([a-z_]+)_(sum|count)(?:\{(.*)\})? ([0-9.eE+-]+)$')
LABEL = re.compile(r'([a-z_]+)="([^"]*)"')


def fetch():
    text = subprocess.run(["kubectl", "get", "--raw", "/metrics"], check=True,
                          capture_output=True, text=True).stdout
    etcd = os.environ.get("ETCD_METRICS", "127.0.0.1:2379")
    with urllib.request.urlopen(f"http://{etcd}/metrics", timeout=5) as resp:
        text += resp.read().decode()
    return text


def parse(text):
    """(metric, frozen labels, sum|count) -> value, for every _sum and _count line."""
    out = {}
    for line in text.splitlines():
        m = LINE.match(line)
        if m:
            labels = frozenset(LABEL.findall(m.group(3) or ""))
            out[(m.group(1), labels, m.group(2))] = float(m.group(4))
    return out


def totals(snap, metric, want):
    s = c = 0.0
    for (name, labels, kind), value in snap.items():
        if name == metric and all((k, v) in labels for k, v in want.items()):
            if kind == "sum":
                s += value
            else:
                c += value
    return s, c


def diff(a, b):
    for label, metric, want in SERIES:
        (s0, c0), (s1, c1) = totals(a, metric, want), totals(b, metric, want)
        n = c1 - c0
        if n > 0:
            print(f"control plane: {label:<42} mean {(s1 - s0) / n * 1000:6.2f} ms over {n:.0f}")
        else:
            print(f"control plane: {label:<42} none")


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "snap":
        with open(sys.argv[2], "w") as f:
            f.write(fetch())
    elif len(sys.argv) == 4 and sys.argv[1] == "diff":
        a, b = (parse(open(p).read()) for p in sys.argv[2:])
        diff(a, b)
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
