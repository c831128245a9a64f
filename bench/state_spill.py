#!/usr/bin/env python3
"""Keyed state larger than memory: a million keys of ~1 KiB state each.

    cargo build --release -p sluice
    python3 bench/state_spill.py [--keys 1000000] [--runs 1] [--memory 64MiB]

The job: a file of KEYS x 2 records, `{"k":"k0000001","t":N}`, every key
once in a first pass, then again in the same order (so that the second pass
reads back what the first one wrote, from memory or from disk) -> the keyed
plugin `key_count.wasm` (state per key: a count and a 1,000-byte filler,
~1,030 bytes of serde_json) -> a file. One partition, no checkpoints.

Two settings, run in turn:
- spill:    `state_memory = MEMORY` (default 64 MiB): past it, the least
            recently used states go to the spill file;
- memory:   `state_memory = "8GiB"`: the whole state in memory (what
            `state_spill` gives without a disk tier, with room enough).

Printed per setting: wall seconds, peak RSS of the process (psutil, sampled
every 20 ms), records/s. The outputs are checked against the ground truth
(each key gives n=1 in the first pass and n=2 in the second, in input order)
before anything is printed. Needs psutil (bench/.venv has it).
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

CONFIG = """
[daemon]
plugins_dir = "{plugins}"
state_dir = "state"
admin = "off"

[sources.in]
type = "file"
path = "{input}"
key = "/k"
timestamp = "/t"

[sinks.out]
type = "file"
path = "out.ndjson"
truncate = true

[pipelines.p]
source = "in"
partitions = 1
processors = [ {{ plugin = "key_count.wasm", state_memory = "{memory}", config = {{ pad_bytes = 1000 }} }} ]
sinks = ["out"]
"""


def size(text):
    units = {"KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30}
    for u, m in units.items():
        if text.endswith(u):
            return int(text[: -len(u)]) * m
    return int(text)


def write_input(path, keys):
    with open(path, "w") as f:
        for p in range(2):
            for i in range(keys):
                f.write('{"k":"k%07d","t":%d}\n' % (i, p * keys + i))


def check(out_path, keys):
    """The ground truth: line j of the first pass is n=1, of the second n=2."""
    with open(out_path) as f:
        lines = f.read().splitlines()
    want = ['{"n":1}'] * keys + ['{"n":2}'] * keys
    if lines != want:
        bad = next((j for j, (a, b) in enumerate(zip(lines, want)) if a != b), None)
        sys.exit("state_spill: %d output lines, %d wanted; first difference at %s: %r"
                 % (len(lines), len(want), bad, lines[bad] if bad is not None else None))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--keys", type=int, default=1_000_000)
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--memory", default="64MiB")
    args = ap.parse_args()
    work = common.fresh_dir(os.path.join(common.WORK, "state-spill"))
    input_path = os.path.join(work, "in.ndjson")
    write_input(input_path, args.keys)
    settings = [("spill", args.memory), ("memory", "8GiB")]
    results = {name: [] for name, _ in settings}
    for _ in range(args.runs):
        for name, memory in settings:
            d = common.fresh_dir(os.path.join(work, name))
            with open(os.path.join(d, "sluice.toml"), "w") as f:
                f.write(CONFIG.format(plugins=common.PLUGINS, input=input_path, memory=memory))
            r = common.measure([common.SLUICE, "run", "--config", "sluice.toml"], cwd=d,
                               env=dict(os.environ, RUST_LOG="info"))
            if r["rc"] != 0:
                sys.exit("%s failed:\n%s" % (name, r["stderr"][-3000:]))
            check(os.path.join(d, "out.ndjson"), args.keys)
            spilled = "spill to disk" in r["stderr"]
            results[name].append((r["wall_s"], r["peak_rss_mib"], spilled))
    records = 2 * args.keys
    print("%d keys x 2 records, state ~1,030 bytes per key (%.0f MiB of states), 1 partition"
          % (args.keys, args.keys * 1030 / 2**20))
    print("%-8s %-14s %9s %12s %14s %8s" % ("setting", "state_memory", "wall s", "peak RSS MiB",
                                             "records/s", "spilled"))
    for name, memory in settings:
        walls = sorted(w for w, _, _ in results[name])
        rss = max(m for _, m, _ in results[name])
        wall = walls[len(walls) // 2]
        print("%-8s %-14s %9.2f %12.0f %14.0f %8s" % (name, memory, wall, rss, records / wall,
                                                     results[name][0][2]))
    common.write_json(os.path.join(work, "results.json"),
                      {"keys": args.keys, "memory": args.memory, "results": results})


if __name__ == "__main__":
    main()
