#!/usr/bin/env python3
"""sluice's benchmark suite: one command, writes BENCHMARKS.md and docs/bench/*.png.

    export CARGO_TARGET_DIR=...   # optional, default target/
    cargo build --release -p sluice
    python3 bench/run.py [--quick] [--only flights,spark,peers,wasm,reload,slowsink,latency]
                         [--sluice PATH --plugins DIR]   # a build made elsewhere

Creates bench/.venv (pyspark, pathway, bytewax, matplotlib, psutil from PyPI) and
re-runs itself in it.
Sections (each result in docs/bench/results.json; sections not run keep their
previous result, so `--only` refreshes part of the report):

- flights: examples/flights' filter job and windows job, alternated, wall time,
  records/s, peak RSS of the process;
- spark:   bench/spark/bench_spark.py — the windows job in PySpark Structured
  Streaming, its output checked equal to sluice's before any timing, then alternated
  timing runs;
- peers:   bench/peers/bench_peers.py — the same windows job in Pathway and Bytewax
  (and Spark too with `--peers pathway,bytewax,spark`), each output checked equal to
  sluice's before any timing, then alternated timing runs, ratios peer ÷ sluice;
- wasm:    runtime/benches/wasm_cost.rs — native Rust vs the Rust component vs the
  Python/JavaScript/C components (built by examples/plugins/*/build.sh when their
  toolchains are found), batch sizes 1…16384, ~125-byte and 1-KB records;
- reload:  bench/reload.py — plugin swap latency, start-up with a cold vs warm
  compile cache (Rust plugins, and the Python component);
- slowsink: RSS of the daemon sampled over 60 s while its stdout sink is read at
  1 MB/s;
- latency: records stamped with their creation time written at fixed rates into
  the daemon's stdin (and into a followed file), read back
  from its output: p50/p99/p999 per rate and batch interval.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

OUT = os.path.join(common.ROOT, "docs", "bench")
TOOLCHAIN_PATHS = ["/opt/sluice-toolchains/py/bin", "/opt/sluice-toolchains/js/node_modules/.bin",
                   os.path.expanduser("~/.cargo/bin")]
SECTIONS = ["flights", "spark", "peers", "wasm", "reload", "slowsink", "latency"]


def log(msg):
    print("bench: " + msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- flights



def bench_flights(runs):
    sys.path.insert(0, os.path.join(common.ROOT, "bench", "spark"))
    import bench_spark

    fd = os.path.join(common.WORK, "sluice-filter")
    os.makedirs(os.path.join(fd, "out"), exist_ok=True)
    with open(os.path.join(fd, "sluice.toml"), "w") as f:
        f.write(common.FILTER_TOML.format(plugins=common.PLUGINS, flights=common.FLIGHTS))
    wd = bench_spark.sluice_dir()
    bench_spark.run_sluice(fd)  # warm the compile cache
    bench_spark.run_sluice(wd)
    res = {"filter": [], "windows": []}
    for i in range(runs):
        log("flights run %d/%d" % (i + 1, runs))
        for name, d in (("filter", fd), ("windows", wd)):
            r = bench_spark.run_sluice(d)
            res[name].append({"wall_s": r["wall_s"], "job_s": r["job_s"],
                              "peak_rss_mib": r["peak_rss_mib"], "summary": r["summary"]})
    out = {"runs": runs}
    for name, rs in res.items():
        out[name] = {
            "median": {k: round(common.med([r[k] for r in rs]), 4)
                       for k in ("wall_s", "job_s", "peak_rss_mib")},
            "all": [{k: round(r[k], 4) for k in ("wall_s", "job_s", "peak_rss_mib")} for r in rs],
            "summary": rs[-1]["summary"],
        }
        m = out[name]["median"]
        m["records_per_s_wall"] = round(common.N_FLIGHTS / m["wall_s"])
        m["records_per_s_job"] = round(common.N_FLIGHTS / m["job_s"])
    out["ratio_windows_over_filter_wall"] = round(common.med(
        [b["wall_s"] / a["wall_s"] for a, b in zip(res["filter"], res["windows"])]), 2)
    return out


# ---------------------------------------------------------------- spark

def bench_spark_section(runs):
    sys.path.insert(0, os.path.join(common.ROOT, "bench", "spark"))
    import bench_spark
    return bench_spark.bench(runs)


# ---------------------------------------------------------------- peers

def bench_peers_section(runs, peers):
    sys.path.insert(0, os.path.join(common.ROOT, "bench", "peers"))
    import bench_peers
    return bench_peers.bench(runs, peers)


# ---------------------------------------------------------------- wasm vs native

def build_lang_plugins():
    """The flights_delay component in C, Python and JavaScript, built with their
    build.sh into $TARGET/lang-plugins/LANG/; those whose toolchain is missing are
    left out (and said so)."""
    env = dict(os.environ, PATH=":".join(TOOLCHAIN_PATHS + [os.environ.get("PATH", "")]))
    built, missing = {}, {}
    for lang in ("c", "python", "js"):
        out = os.path.join(common.TARGET, "lang-plugins", lang)
        wasm = os.path.join(out, "flights_delay.wasm")
        src = os.path.join(common.ROOT, "examples", "plugins", lang, "flights_delay")
        newest = max(os.path.getmtime(os.path.join(src, f)) for f in os.listdir(src))
        if not os.path.exists(wasm) or os.path.getmtime(wasm) < newest:
            r = subprocess.run(["bash", os.path.join(src, "build.sh"), out], env=env,
                               capture_output=True, text=True)
            if r.returncode != 0:
                missing[lang] = (r.stderr or r.stdout).strip().splitlines()[-1:]
                continue
        built[lang] = wasm
    return built, missing


def bench_wasm(quick):
    built, missing = build_lang_plugins()
    env = dict(os.environ,
               WASM_COST_PLUGINS=",".join("%s=%s" % kv for kv in built.items()),
               WASM_COST_BUDGET_MS="60" if quick else "150",
               WASM_COST_ROUNDS="1" if quick else "3")
    if quick:
        env["WASM_COST_SIZES"] = "1,64,4096"
    log("wasm: cargo bench -p sluice --bench wasm_cost (builds it first if needed)")
    r = subprocess.run(["cargo", "bench", "-p", "sluice", "--bench", "wasm_cost"],
                       cwd=common.ROOT, env=env, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit("wasm_cost failed:\n" + r.stderr[-4000:])
    cells = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
    sizes = {lang: os.path.getsize(p) for lang, p in built.items()}
    return {"cells": cells, "languages_missing": missing, "component_bytes": sizes}


# ---------------------------------------------------------------- reload

def bench_reload(quick):
    py = os.path.join(common.TARGET, "lang-plugins", "python", "flights_delay.wasm")
    cmd = [sys.executable, os.path.join(common.ROOT, "bench", "reload.py"),
           "--runs", "3" if quick else "7", "--swaps", "6" if quick else "20"]
    if os.path.exists(py):
        cmd += ["--plugin", py]
    log("reload: " + " ".join(cmd[1:]))
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit("reload.py failed:\n" + r.stderr[-4000:])
    return json.loads(r.stdout)


# ---------------------------------------------------------------- slow sink

SLOW_TOML = """
[daemon]
plugins_dir = "{plugins}"
state_dir = "state"
admin = "off"

[sources.flights]
type = "file"
path = "{flights}"
key = "/carrier"
timestamp = "/event_time"

[sinks.out]
type = "stdout"

[pipelines.p]
source = "flights"
partitions = 2
batch = {{ max_records = 4096, max_bytes = "4MiB", interval = "200ms" }}
processors = [ {{ plugin = "identity.wasm" }} ]
sinks = ["out"]
"""


def bench_slowsink(seconds, rate_bytes):
    """The whole flights file (145 MB) through the identity plugin to a stdout
    sink read at `rate_bytes`/s: the daemon's RSS every 0.5 s."""
    import psutil

    d = common.fresh_dir(os.path.join(common.WORK, "slowsink"))
    with open(os.path.join(d, "sluice.toml"), "w") as f:
        f.write(SLOW_TOML.format(plugins=common.PLUGINS, flights=common.FLIGHTS))
    proc = subprocess.Popen([common.SLUICE, "run", "--config", "sluice.toml"], cwd=d,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            env=dict(os.environ, RUST_LOG="warn"))
    ps = psutil.Process(proc.pid)
    got = [0]
    stop = threading.Event()

    def reader():
        t0 = time.monotonic()
        fd = proc.stdout.fileno()
        while not stop.is_set():
            chunk = os.read(fd, 16384)
            if not chunk:
                return
            got[0] += len(chunk)
            ahead = got[0] / rate_bytes - (time.monotonic() - t0)
            if ahead > 0:
                time.sleep(ahead)

    th = threading.Thread(target=reader, daemon=True)
    th.start()
    samples = []
    t0 = time.monotonic()
    while time.monotonic() - t0 < seconds and proc.poll() is None:
        try:
            samples.append((round(time.monotonic() - t0, 2), ps.memory_info().rss / 2**20,
                            got[0] / 2**20))
        except psutil.Error:
            break
        time.sleep(0.5)
    finished_early = proc.poll() is not None
    stop.set()
    proc.terminate()
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    rss = [s[1] for s in samples if s[0] >= 2] or [s[1] for s in samples]
    first = [s[1] for s in samples if s[0] <= 10]
    last = [s[1] for s in samples if s[0] >= seconds - 10]
    return {
        "seconds": seconds, "reader_bytes_per_s": rate_bytes, "finished_early": finished_early,
        "samples": samples, "rss_min_mib_after_2s": round(min(rss), 1), "rss_max_mib": round(max(rss), 1),
        "rss_median_first_10s": round(common.med(first), 1),
        "rss_median_last_10s": round(common.med(last), 1),
        "mib_delivered": round(got[0] / 2**20, 1),
    }


# ---------------------------------------------------------------- latency

GEN = r'''
import os, sys, time
rate, seconds, path = float(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
fd = sys.stdout.fileno() if path == "-" else os.open(path, os.O_WRONLY | os.O_APPEND)
pad = "x" * 66  # 100-byte lines with the newline
t0 = time.monotonic()
sent = 0
while True:
    now = time.monotonic() - t0
    if now >= seconds:
        break
    due = int(rate * now) - sent
    if due > 0:
        due = min(due, 20000)
        t = time.time_ns()
        line = '{"t":%d,"pad":"%s"}\n' % (t, pad)
        os.write(fd, (line * due).encode())
        sent += due
    else:
        time.sleep(0.0005)
print(sent, file=sys.stderr)
'''

LAT_TOML = """
[daemon]
plugins_dir = "{plugins}"
state_dir = "{state}"
admin = "off"

[sources.gen]
{source}

[sinks.out]
type = "stdout"

[pipelines.p]
source = "gen"
partitions = 1
batch = {{ max_records = 16384, max_bytes = "4MiB", interval = "{interval}" }}
processors = [ {{ plugin = "identity.wasm" }} ]
sinks = ["out"]
"""


def latency_run(rate, interval, seconds, follow):
    """Records of ~100 bytes, each stamped with its creation time (ns), written at
    `rate`/s; latency = time read back from the daemon's stdout minus the stamp.
    The first 0.5 s are warm-up and left out."""
    d = common.fresh_dir(os.path.join(common.WORK, "latency"))
    gen = os.path.join(d, "gen.py")
    with open(gen, "w") as f:
        f.write(GEN)
    if follow:
        src = 'type = "file"\npath = "in.ndjson"\nfollow = true\nformat = "json"'
        open(os.path.join(d, "in.ndjson"), "w").close()
    else:
        src = 'type = "stdin"\nformat = "json"'
    with open(os.path.join(d, "sluice.toml"), "w") as f:
        f.write(LAT_TOML.format(plugins=common.PLUGINS, state=os.path.join(common.WORK, "lat-state"),
                                source=src, interval=interval))
    proc = subprocess.Popen([common.SLUICE, "run", "--config", "sluice.toml"], cwd=d,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=dict(os.environ, RUST_LOG="info"))
    # Wait for "pipeline started" on stderr, then keep draining it.
    for line in proc.stderr:
        if b"pipeline started" in line:
            break
    threading.Thread(target=proc.stderr.read, daemon=True).start()
    lat = []
    count = [0]

    def reader():
        fd = proc.stdout.fileno()
        rest = b""
        while True:
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                return
            now = time.time_ns()
            lines = (rest + chunk).split(b"\n")
            rest = lines.pop()
            for ln in lines:
                lat.append(now - int(ln[5:24]))
            count[0] += len(lines)

    th = threading.Thread(target=reader, daemon=True)
    th.start()
    target = "-" if not follow else os.path.join(d, "in.ndjson")
    g = subprocess.Popen([sys.executable, gen, str(rate), str(seconds), target],
                         stdout=proc.stdin if not follow else subprocess.DEVNULL,
                         stderr=subprocess.PIPE, text=True)
    g.wait()
    sent = int(g.stderr.read().strip() or 0)
    # Drain: wait until everything sent came back (or 10 s).
    t_end = time.monotonic() + 10
    while count[0] < sent and time.monotonic() < t_end:
        time.sleep(0.05)
    proc.stdin.close()
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    th.join(timeout=5)
    skip = int(rate * 0.5)
    xs = sorted(lat[skip:])
    pct = lambda p: round(xs[min(len(xs) - 1, int(p * len(xs)))] / 1e6, 2) if xs else None
    return {"rate": rate, "interval": interval, "source": "file follow" if follow else "stdin",
            "sent": sent, "received": count[0],
            "achieved_rate": round(sent / seconds),
            "p50_ms": pct(0.50), "p99_ms": pct(0.99), "p999_ms": pct(0.999),
            "max_ms": round(xs[-1] / 1e6, 2) if xs else None}


def bench_latency(quick):
    seconds = 2 if quick else 5
    rates = [10_000, 100_000] if quick else [10_000, 100_000, 1_000_000]
    runs = []
    for interval in ("1ms", "10ms", "100ms"):
        for rate in rates:
            log("latency: stdin, %d/s, interval %s" % (rate, interval))
            runs.append(latency_run(rate, interval, seconds, follow=False))
    for interval in ("1ms", "10ms", "100ms"):
        log("latency: file follow, 10000/s, interval %s" % interval)
        runs.append(latency_run(10_000, interval, seconds, follow=True))
    return {"seconds_per_run": seconds, "runs": runs}


# ---------------------------------------------------------------- report

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer runs and sizes (~5 min)")
    ap.add_argument("--only", default=",".join(SECTIONS))
    ap.add_argument("--out", default=OUT,
                    help="folder of results.json and the plots (default docs/bench; "
                         "BENCHMARKS.md goes to the repository root only with the default)")
    ap.add_argument("--report-only", action="store_true",
                    help="rewrite BENCHMARKS.md and plots from docs/bench/results.json")
    ap.add_argument("--peers", default="pathway,bytewax",
                    help="the peers section's systems: pathway,bytewax[,spark]")
    ap.add_argument("--sluice", help="the sluice binary to measure (default "
                    "$CARGO_TARGET_DIR/release/sluice; env SLUICE_BIN)")
    ap.add_argument("--plugins", help="its plugins folder (default $CARGO_TARGET_DIR/plugins; "
                    "env SLUICE_PLUGINS)")
    args = ap.parse_args()
    # Through the environment, so that the re-run in the venv and the scripts
    # started from here see them too.
    if args.sluice:
        os.environ["SLUICE_BIN"] = common.SLUICE = os.path.abspath(args.sluice)
    if args.plugins:
        os.environ["SLUICE_PLUGINS"] = common.PLUGINS = os.path.abspath(args.plugins)
    common.ensure_venv()
    out = os.path.abspath(args.out)
    results_path = os.path.join(out, "results.json")
    md = (os.path.join(common.ROOT, "BENCHMARKS.md") if out == os.path.abspath(OUT)
          else os.path.join(out, "BENCHMARKS.md"))
    os.makedirs(out, exist_ok=True)
    results = {}
    if os.path.exists(results_path):
        with open(results_path) as f:
            results = json.load(f)
    if not args.report_only:
        common.need_build()
        os.makedirs(common.WORK, exist_ok=True)
        runs = 3 if args.quick else 5
        for section in args.only.split(","):
            log("section %s" % section)
            t0 = time.monotonic()
            before = common.machine()
            if section == "flights":
                r = bench_flights(runs)
            elif section == "spark":
                r = bench_spark_section(runs)
            elif section == "peers":
                r = bench_peers_section(runs, args.peers.split(","))
            elif section == "wasm":
                r = bench_wasm(args.quick)
            elif section == "reload":
                r = bench_reload(args.quick)
            elif section == "slowsink":
                r = bench_slowsink(20 if args.quick else 60, 1_000_000)
            elif section == "latency":
                r = bench_latency(args.quick)
            else:
                sys.exit("unknown section %s" % section)
            r["_meta"] = {"machine_before": before, "machine_after": common.machine(),
                          "quick": args.quick, "seconds": round(time.monotonic() - t0, 1),
                          "at": time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime()),
                          "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"],
                                                   cwd=common.ROOT, capture_output=True,
                                                   text=True).stdout.strip()}
            results[section] = r
            common.write_json(results_path, results)
    import report
    report.write(results, out, md)
    log("wrote %s and %s" % (md, out))


if __name__ == "__main__":
    main()
