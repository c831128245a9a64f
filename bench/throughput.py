#!/usr/bin/env python3
"""Whole-process throughput of the hot path (issue 20's targets), A against B.

    cargo build --release -p sluice
    python3 bench/throughput.py [--runs 5] [--sluice A] [--vs B] [--only identity,...]

Jobs (each a whole `sluice run`, start-up included; records/s = records /
wall seconds of the process):

- identity:   5,000,000 records of ~92 bytes (a flights-like template,
              `key = "/carrier"`, `timestamp = "/ts"`, written once by this
              script with a fixed seed), file -> identity.wasm -> file,
              2 partitions;
- identity-serial: the same with `decode_threads = 0` (the source's thread
              decodes: what parallel decode adds; A only);
- windows:    the flights windows job (examples/flights: flights_delay.wasm,
              1 h tumbling windows, count/avg/max and the Wasm quantiles) over
              the flights x10, uncompressed (3,367,760 records, 1.45 GB);
- filter-p1 / filter-p2: the flights x10 through flights_delay.wasm into a
              file, `partition_by = "balance"`, 1 and 2 partitions (a
              plugin-heavy job: what a second partition adds);
- jq-p1 / jq-p2: the flights (336,776, uncompressed) through the stock jq
              plugin (a route, the gain and a delay class per flight),
              `partition_by = "balance"`, 1 and 2 partitions: a
              plugin-heavy job, where the plugin, not decode, takes the
              time — what a second partition adds;
- cat:        `cat` of the identity input into a file (the floor).

A and B (two sluice binaries, default target/release/sluice for both) run in
turn, A B A B ..., after one warm-up each; medians and min-max are printed,
and A/B of the wall medians. Outputs are checked: identity's output holds the
input's lines (sorted), and A's windows output equals B's.

No Python packages needed.
"""

import argparse
import os
import random
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORK = os.path.join(ROOT, "target", "bench-throughput")
PLUGINS = os.path.join(ROOT, "target", "plugins")
CARRIERS = ["UA", "AA", "B6", "DL", "EV", "MQ", "US", "WN", "VX", "FL", "AS", "9E", "F9", "HA",
            "YV", "OO"]

HEAD = """[daemon]
plugins_dir = "{plugins}"
state_dir = "{work}/state-{name}"
admin = "off"

[sources.in]
type = "file"
path = "{input}"
format = "json"
key = "{key}"
timestamp = "{ts}"
{source_extra}

[sinks.out]
type = "file"
path = "{work}/out-{name}.ndjson"
truncate = true

[pipelines.p]
source = "in"
partitions = {partitions}
{pipeline_extra}
batch = {{ max_records = 4096, max_bytes = "4MiB", interval = "200ms" }}
sinks = ["out"]
"""

WINDOWS = """processors = [ { plugin = "flights_delay.wasm", config = { min_delay = 15 } } ]
window = { kind = "tumbling", size = "1h", watermark = "10m" }
aggregate = [
  { op = "count", as = "delayed" },
  { op = "avg", field = "/dep_delay", as = "avg_dep_delay" },
  { op = "max", field = "/dep_delay", as = "max_dep_delay" },
  { op = "wasm", plugin = "delay_quantiles.wasm", field = "/dep_delay", config = { quantiles = "0.5,0.9,0.99" }, as = "dep_delay_quantiles" },
]"""


def log(msg):
    print("throughput: " + msg, file=sys.stderr, flush=True)


def identity_input():
    path = os.path.join(WORK, "identity.ndjson")
    if os.path.exists(path):
        return path, 5_000_000
    log("writing 5,000,000 records to " + path)
    rng = random.Random(7)
    t = 1356998400000
    with open(path + ".tmp", "w") as f:
        for i in range(5_000_000):
            t += rng.randint(0, 50)
            f.write('{"id":%d,"carrier":"%s","ts":%d,"dep_delay":%d,"origin":"EWR","dest":"LAX"}\n'
                    % (i, rng.choice(CARRIERS), t, rng.randint(-20, 300)))
    os.rename(path + ".tmp", path)
    return path, 5_000_000


def flights10_input():
    path = os.path.join(WORK, "flights10.ndjson")
    if not os.path.exists(path):
        log("writing the flights x10 to " + path)
        gz = os.path.join(ROOT, "examples", "data", "flights-2013.ndjson.gz")
        with open(path + ".tmp", "wb") as out:
            for _ in range(10):
                subprocess.run(["zcat", gz], stdout=out, check=True)
        os.rename(path + ".tmp", path)
    return path, 3_367_760


def flights1_input():
    path = os.path.join(WORK, "flights1.ndjson")
    if not os.path.exists(path):
        gz = os.path.join(ROOT, "examples", "data", "flights-2013.ndjson.gz")
        with open(path + ".tmp", "wb") as out:
            subprocess.run(["zcat", gz], stdout=out, check=True)
        os.rename(path + ".tmp", path)
    return path, 336_776


# The plugin-heavy job's program: per flight, a route, the time gained in the
# air, and the delay class (stock jq, a jq interpreter in Wasm).
JQ = ('.route = .origin + "-" + .dest | .gain = ((.dep_delay // 0) - (.arr_delay // 0)) '
      '| .class = (if (.dep_delay // 0) > 60 then "long" elif (.dep_delay // 0) > 15 '
      'then "late" else "on time" end)')


def config(name, input_path, key, ts, partitions, source_extra="", pipeline_extra=""):
    text = HEAD.format(plugins=PLUGINS, work=WORK, name=name, input=input_path, key=key, ts=ts,
                       partitions=partitions, source_extra=source_extra,
                       pipeline_extra=pipeline_extra)
    path = os.path.join(WORK, name + ".toml")
    with open(path, "w") as f:
        f.write(text)
    return path


def jobs(only):
    ident, n_ident = identity_input()
    all_jobs = {
        "identity": (n_ident, ["run", "--config", config(
            "identity", ident, "/carrier", "/ts", 2,
            pipeline_extra='processors = [ { plugin = "identity.wasm" } ]')]),
        "identity-serial": (n_ident, ["run", "--config", config(
            "identity-serial", ident, "/carrier", "/ts", 2, source_extra="decode_threads = 0",
            pipeline_extra='processors = [ { plugin = "identity.wasm" } ]')]),
    }
    if not only or {"windows", "filter-p1", "filter-p2"} & set(only):
        f10, n_f10 = flights10_input()
        all_jobs["windows"] = (n_f10, ["run", "--config", config(
            "windows", f10, "/carrier", "/event_time", 2, pipeline_extra=WINDOWS)])
        for p in (1, 2):
            all_jobs["filter-p%d" % p] = (n_f10, ["run", "--config", config(
                "filter-p%d" % p, f10, "/carrier", "/event_time", p,
                pipeline_extra='partition_by = "balance"\nprocessors = [ { plugin = '
                '"flights_delay.wasm", config = { min_delay = 15 } } ]')])
    if not only or {"jq-p1", "jq-p2"} & set(only):
        f1, n_f1 = flights1_input()
        for p in (1, 2):
            all_jobs["jq-p%d" % p] = (n_f1, ["run", "--config", config(
                "jq-p%d" % p, f1, "/carrier", "/event_time", p,
                pipeline_extra='partition_by = "balance"\nprocessors = [ { plugin = '
                '"stock/jq.wasm", config = { program = \'%s\' } } ]' % JQ)])
    all_jobs["cat"] = (n_ident, None)
    return {k: v for k, v in all_jobs.items() if not only or k in only}


def run_once(binary, args, name):
    """Wall seconds, CPU seconds and peak RSS (MiB) of one whole process."""
    if args is None:
        ident = os.path.join(WORK, "identity.ndjson")
        cmd = ["sh", "-c", "cat '%s' > '%s'" % (ident, os.path.join(WORK, "out-cat.ndjson"))]
    else:
        cmd = [binary] + args
    start = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.monotonic() - start
    err = proc.stderr.read().decode(errors="replace")
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        sys.exit("throughput: %s failed (%d):\n%s" % (name, proc.returncode, err[-2000:]))
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


def digest(path):
    """The sha256 of the file's lines, sorted: in a child process, so that this
    one stays small (a forked child starts with its parent's peak RSS, which
    would then be what ru_maxrss reports for sluice)."""
    out = subprocess.run(["sh", "-c", "LC_ALL=C sort -S 256M '%s' | sha256sum" % path],
                         check=True, capture_output=True, text=True)
    return out.stdout.split()[0]


def med(xs):
    return statistics.median(xs)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--sluice", default=os.path.join(ROOT, "target", "release", "sluice"))
    ap.add_argument("--vs", help="a second sluice binary (B); default: the same as A")
    ap.add_argument("--only", help="comma-separated jobs")
    a = ap.parse_args()
    os.makedirs(WORK, exist_ok=True)
    only = a.only.split(",") if a.only else None
    binaries = {"A": a.sluice, "B": a.vs or a.sluice}
    load = os.getloadavg()[0]
    results = {}
    for name, (records, args) in jobs(only).items():
        runs = {"A": [], "B": []}
        # cat has no binary; decode_threads is newer than some B binaries.
        sides = ["A"] if args is None or name == "identity-serial" else ["A", "B"]
        for side in sides:  # warm-up (page cache, compile cache)
            run_once(binaries[side], args, name)
        outputs = {}
        for _ in range(a.runs):
            for side in sides:
                runs[side].append(run_once(binaries[side], args, name))
                if args is not None and side not in outputs:
                    out = os.path.join(WORK, "out-%s.ndjson" % name)
                    outputs[side] = digest(out)
        if name.startswith("identity"):
            want = digest(os.path.join(WORK, "identity.ndjson"))
            for side, got in outputs.items():
                if got != want:
                    sys.exit("throughput: %s: %s's output is not the input's lines" % (name, side))
        if len(set(outputs.values())) > 1:
            sys.exit("throughput: %s: A's and B's outputs differ" % name)
        results[name] = (records, runs)
    print("load average at the start: %.2f; A = %s; B = %s; medians of %d runs, whole process"
          % (load, binaries["A"], binaries["B"], a.runs))
    print()
    print("| job | records | A wall s | A records/s | A CPU s | A peak MiB | B wall s | B records/s "
          "| B CPU s | A/B wall |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, (records, runs) in results.items():
        aw = med([r[0] for r in runs["A"]])
        row = [name, "{:,}".format(records), "%.2f" % aw, "{:,.0f}".format(records / aw),
               "%.2f" % med([r[1] for r in runs["A"]]), "%.0f" % med([r[2] for r in runs["A"]])]
        if runs["B"]:
            bw = med([r[0] for r in runs["B"]])
            row += ["%.2f" % bw, "{:,.0f}".format(records / bw), "%.2f" % med([r[1] for r in runs["B"]]),
                    "%.2f" % (aw / bw)]
        else:
            row += ["-", "-", "-", "-"]
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
