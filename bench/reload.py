#!/usr/bin/env python3
"""Hot-reload figures of a release `sluice`, on this machine:

1. swap latency: time from a new plugin file landing in the plugins folder
   (rename into place) to the first output record processed by the new version,
   median of 20 swaps, while a record arrives every 2 ms on the daemon's stdin
   (and, for comparison, 10 swaps with the records appended to a followed file,
   whose 100 ms poll adds to the figure);
2. start-up time to "pipeline started" with a cold compile cache (emptied) and a
   warm one, interleaved (cold, warm, cold, warm, ...), medians of 7 runs each.

3. with --plugin FILE.wasm (e.g. the 18 MB Python component): start-up with that
   plugin as the only stage, cold and warm cache, interleaved, medians of --runs.

Usage: cargo build --release -p sluice && python3 bench/reload.py [--runs N] [--swaps N] [--plugin F]
(CARGO_TARGET_DIR is honoured.) Standard library only.
"""

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET = os.environ.get("CARGO_TARGET_DIR") or os.path.join(ROOT, "target")
SLUICE = os.path.join(TARGET, "release", "sluice")
PLUGINS = os.path.join(TARGET, "plugins")

CONFIG = """
[daemon]
plugins_dir = "plugins"
state_dir = "state"
admin = "off"

[sources.in]
type = "file"
path = "in.ndjson"
follow = true

[sinks.out]
type = "file"
path = "out.ndjson"

[pipelines.p]
source = "in"
batch = { max_records = 1024, interval = "10ms" }
processors = [ { plugin = "flights_delay.wasm" }, { plugin = "tag.wasm" } ]
sinks = ["out"]
"""


def start(d, stdin=None):
    proc = subprocess.Popen(
        [SLUICE, "run", "--config", "sluice.toml"],
        cwd=d,
        stdin=stdin,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        env=dict(os.environ, RUST_LOG="info"),
    )
    t0 = time.monotonic()
    for line in proc.stderr:
        if "pipeline started" in line:
            return proc, time.monotonic() - t0
    raise SystemExit("daemon did not start")


def setup(config=CONFIG):
    d = tempfile.mkdtemp(prefix="sluice-reload-bench-")
    os.mkdir(os.path.join(d, "plugins"))
    for name in ["flights_delay.wasm"]:
        shutil.copy(os.path.join(PLUGINS, name), os.path.join(d, "plugins", name))
    shutil.copy(os.path.join(PLUGINS, "tag_a.wasm"), os.path.join(d, "plugins", "tag.wasm"))
    with open(os.path.join(d, "sluice.toml"), "w") as f:
        f.write(config)
    open(os.path.join(d, "in.ndjson"), "w").close()
    return d


FLIGHT = '{"carrier":"UA","flight":1545,"origin":"EWR","dest":"IAH","dep_delay":30,"arr_delay":11,"event_time":"2013-01-01T05:17:00Z"}\n'


def swap_latency(swaps=20, source="stdin"):
    """`source = "stdin"`: records are written into the daemon's stdin, read as they
    come. `"file"`: appended to a followed file, which the daemon polls every 100 ms
    at its end — that poll then adds up to 100 ms to every swap."""
    if source == "stdin":
        d = setup(CONFIG.replace('type = "file"\npath = "in.ndjson"\nfollow = true',
                                 'type = "stdin"'))
        proc, _ = start(d, stdin=subprocess.PIPE)
        sink = proc.stdin
    else:
        d = setup()
        proc, _ = start(d)
        sink = open(os.path.join(d, "in.ndjson"), "a")
    stop = threading.Event()

    def feed():
        with sink as f:
            while not stop.is_set():
                f.write(FLIGHT)
                f.flush()
                time.sleep(0.002)

    feeder = threading.Thread(target=feed)
    feeder.start()
    out = open(os.path.join(d, "out.ndjson"), "a+")
    out.seek(0, 2)
    latencies = []
    versions = {"a": open(os.path.join(PLUGINS, "tag_a.wasm"), "rb").read(),
                "b": open(os.path.join(PLUGINS, "tag_b.wasm"), "rb").read()}
    try:
        time.sleep(1.0)
        for i in range(swaps):
            tag = "b" if i % 2 == 0 else "a"
            tmp = os.path.join(d, "plugins", ".tag.wasm.new")
            with open(tmp, "wb") as f:
                f.write(versions[tag])
            out.seek(0, 2)
            t0 = time.monotonic()
            os.rename(tmp, os.path.join(d, "plugins", "tag.wasm"))
            want = '"v":"%s"' % tag
            buf = ""
            while True:
                chunk = out.read()
                if chunk:
                    buf += chunk
                    lines = buf.split("\n")
                    buf = lines[-1]
                    if any(want in l for l in lines[:-1]):
                        break
                elif time.monotonic() - t0 > 10:
                    raise SystemExit("swap %d never took effect" % i)
                else:
                    time.sleep(0.001)
            latencies.append(time.monotonic() - t0)
            time.sleep(0.3)
    finally:
        stop.set()
        feeder.join()
        proc.terminate()
        proc.wait()
    shutil.rmtree(d)
    return latencies


def startup(runs=7, plugin=None):
    if plugin:
        config = CONFIG.replace(
            '[ { plugin = "flights_delay.wasm" }, { plugin = "tag.wasm" } ]',
            '[ { plugin = "one.wasm", config = { min_delay = 15 }, memory_limit = "256MiB" } ]')
        d = setup(config)
        shutil.copy(plugin, os.path.join(d, "plugins", "one.wasm"))
    else:
        d = setup()
    cold, warm = [], []
    for _ in range(runs):
        for kind in ("cold", "warm"):
            if kind == "cold":
                shutil.rmtree(os.path.join(d, "state", "compiled"), ignore_errors=True)
            proc, t = start(d)
            proc.terminate()
            proc.wait()
            (cold if kind == "cold" else warm).append(t)
    shutil.rmtree(d)
    return cold, warm


def main():
    import argparse
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--swaps", type=int, default=20)
    ap.add_argument("--plugin", help="also: start-up with this component as the only stage")
    args = ap.parse_args()
    if not os.path.exists(SLUICE):
        sys.exit("build first: cargo build --release -p sluice")
    lat = swap_latency(args.swaps, "stdin")
    lat_file = swap_latency(max(args.swaps // 2, 4), "file")
    cold, warm = startup(args.runs)
    ms = lambda xs: [round(x * 1000, 1) for x in xs]
    result = {
        "machine": {"cpus": os.cpu_count()},
        "swap_latency_ms": {"median": round(statistics.median(lat) * 1000, 1),
                            "min": round(min(lat) * 1000, 1), "max": round(max(lat) * 1000, 1),
                            "all": ms(lat), "source": "stdin"},
        "swap_latency_followed_file_ms": {"median": round(statistics.median(lat_file) * 1000, 1),
                                          "all": ms(lat_file)},
        "startup_ms": {"cold_median": round(statistics.median(cold) * 1000, 1),
                       "warm_median": round(statistics.median(warm) * 1000, 1),
                       "cold": ms(cold), "warm": ms(warm),
                       "cold_over_warm": round(statistics.median(cold) / statistics.median(warm), 2)},
    }
    if args.plugin:
        pc, pw = startup(args.runs, args.plugin)
        result["startup_plugin_ms"] = {
            "plugin": os.path.basename(os.path.dirname(args.plugin)) + "/" + os.path.basename(args.plugin),
            "bytes": os.path.getsize(args.plugin),
            "cold_median": round(statistics.median(pc) * 1000, 1),
            "warm_median": round(statistics.median(pw) * 1000, 1),
            "cold": ms(pc), "warm": ms(pw),
            "cold_over_warm": round(statistics.median(pc) / statistics.median(pw), 2)}
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
