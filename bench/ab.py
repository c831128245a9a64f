#!/usr/bin/env python3
"""Times two whole commands side by side: A and B run in turn (A B A B ...),
each run's wall time (a monotonic clock around the child), CPU time (user +
system of the child, from wait4's rusage) and peak RSS (which reads no lower
than this script's own, ~15 MiB: the child starts as its fork); prints min / median /
max of each and the A/B ratio taken pair by pair (so that a machine whose
speed drifts during the run still gives a fair ratio).

    python3 bench/ab.py -n 7 --warmup 1 \
        --a 'target/release/sluice run --config bench/postgres/append.toml' \
        --b 'sh -c "psql ... -c \\"\\\\copy t FROM rows.csv CSV\\""'

A command is split as a shell splits words (shlex); use `sh -c '...'` for
pipes and redirections. Output of the commands is discarded. Standard
library only.
"""

import argparse
import os
import shlex
import statistics
import subprocess
import sys
import time


def run(argv):
    start = time.monotonic()
    child = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.monotonic() - start
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        sys.exit(f"{shlex.join(argv)} exited {code}")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


def spread(values, unit=""):
    return f"{min(values):.3f} / {statistics.median(values):.3f} / {max(values):.3f}{unit}"


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("-n", type=int, default=5, help="runs of each (default 5)")
    p.add_argument("--warmup", type=int, default=1, help="uncounted runs of each first")
    p.add_argument("--a", required=True, help="command A")
    p.add_argument("--b", required=True, help="command B (the baseline)")
    args = p.parse_args()
    a, b = shlex.split(args.a), shlex.split(args.b)
    for _ in range(args.warmup):
        run(a)
        run(b)
    ra, rb = [], []
    for _ in range(args.n):
        ra.append(run(a))
        rb.append(run(b))
    for name, rs in (("A", ra), ("B", rb)):
        print(f"{name}: wall {spread([r[0] for r in rs], ' s')}, cpu {spread([r[1] for r in rs], ' s')}, "
              f"peak {max(r[2] for r in rs):.1f} MiB   (min / median / max)")
    print(f"A/B wall, pair by pair: {spread([x[0] / y[0] for x, y in zip(ra, rb)])}")
    print(f"A/B cpu,  pair by pair: {spread([x[1] / y[1] for x, y in zip(ra, rb)])}")


if __name__ == "__main__":
    main()
