"""All of issue 3's benchmark table, one section per row, each against a baseline of the same run.

    .venv/bin/python -m bench [--quick]

Rows (each is also a script of its own with more options):
- completeness  bench.completeness   transitions seen vs the kernel's tracepoint record;
                                      baselines netstat -nao at 1 Hz and ss -tan at 10 Hz
- capture       bench.capture        largest zero-loss packet rate and CPU per 10,000 packets;
                                      baseline tcpdump -w on the same flood
- event path    bench.event_path     events/s probe -> trace; baseline bare pyzmq PUSH/PULL
- clock         bench.clock          offset estimate error under a known 5000 s offset;
                                      baselines the single-ping and pre-run-only estimates
- film render   bench.film_render    each film file from a 42,000-record trace; baseline parsing it

Needs root (namespaces, tracefs). Nothing here runs in CI: the machines are shared and noisy.
"""

from __future__ import annotations

import argparse
import subprocess
import sys

# (row, its command, its --quick command)
ROWS = [
    ("completeness", ["bench.completeness"], ["bench.completeness", "--connections", "100"]),
    ("capture", ["bench.capture", "--sink", "batch", "10000", "50000", "80000"],
     ["bench.capture", "--sink", "batch", "--seconds", "1", "50000"]),
    ("event path", ["bench.event_path"], ["bench.event_path", "--events", "5000"]),
    ("clock", ["bench.clock"], ["bench.clock", "--runs", "2"]),
    ("film render", ["bench.film_render"], ["bench.film_render", "--segments", "2000"]),
]


def main() -> int:
    parser = argparse.ArgumentParser(description="tcplab benchmarks (issue 3's table)")
    parser.add_argument("--quick", action="store_true", help="smaller workloads, for a look rather than numbers")
    args = parser.parse_args()
    failed = []
    for name, full, quick in ROWS:
        print(f"\n=== {name} ===", flush=True)
        cmd = [sys.executable, "-m", *(quick if args.quick else full)]
        if subprocess.run(cmd).returncode != 0:
            failed.append(name)
    if failed:
        print(f"\nfailed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
