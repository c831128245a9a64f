"""Shared helpers of the benchmark suite: paths, the venv, process measurement."""

import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET = os.environ.get("CARGO_TARGET_DIR") or os.path.join(ROOT, "target")
# A sluice binary and plugins built elsewhere (e.g. a saved release build) can be
# named with SLUICE_BIN and SLUICE_PLUGINS (run.py: --sluice, --plugins).
SLUICE = os.environ.get("SLUICE_BIN") or os.path.join(TARGET, "release", "sluice")
PLUGINS = os.environ.get("SLUICE_PLUGINS") or os.path.join(TARGET, "plugins")
WORK = os.path.join(TARGET, "bench-work")           # scratch, rebuilt each run
FLIGHTS = os.path.join(ROOT, "examples", "data", "flights-2013.ndjson.gz")
VENV = os.path.join(ROOT, "bench", ".venv")
VENV_PY = os.path.join(VENV, "bin", "python")
# The peers are pinned: their figures in BENCHMARKS.md name these versions.
REQUIREMENTS = ["pyspark==4.3.0", "pathway==0.33.0", "bytewax==0.21.1", "matplotlib", "psutil"]
N_FLIGHTS = 336_776


def ensure_venv():
    """Create bench/.venv with REQUIREMENTS (pyspark, pathway, bytewax, matplotlib,
    psutil), and re-run this script under it (PyPI only, through pip)."""
    if os.path.realpath(sys.prefix) == os.path.realpath(VENV):
        return
    if not os.path.exists(VENV_PY):
        print("bench: creating %s (%s)" % (VENV, ", ".join(REQUIREMENTS)), file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", VENV], check=True)
    pins = [r.split("==") for r in REQUIREMENTS if "==" in r]
    check = ("import matplotlib, psutil\nfrom importlib.metadata import version\n"
             "assert all(version(n) == v for n, v in %r)" % (pins,))
    ok = subprocess.run([VENV_PY, "-c", check], capture_output=True).returncode == 0
    if not ok:
        subprocess.run([VENV_PY, "-m", "pip", "install", "-q"] + REQUIREMENTS, check=True)
    os.execv(VENV_PY, [VENV_PY] + sys.argv)


def machine():
    """Cores, memory, load, CPU model: recorded with every result."""
    info = {"cpus": os.cpu_count(), "platform": platform.platform()}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    info["cpu"] = line.split(":", 1)[1].strip()
                    break
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal"):
                    info["mem_gib"] = round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    info["loadavg"] = [round(x, 2) for x in os.getloadavg()]
    return info


def measure(cmd, cwd=None, env=None, stdin=None, sample_s=0.02, timeout=None):
    """Run cmd; wall time, and peak RSS of the whole process tree (the sum over the
    process and its descendants, sampled every `sample_s` with psutil) and the
    largest single-process max RSS (getrusage of the children, as /usr/bin/time -v)."""
    import psutil

    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdin=stdin,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    ps = psutil.Process(proc.pid)
    peak = 0
    import threading

    out = {}

    def drain(name, stream):
        out[name] = stream.read()

    threads = [threading.Thread(target=drain, args=(n, s))
               for n, s in (("stdout", proc.stdout), ("stderr", proc.stderr))]
    for t in threads:
        t.start()
    while proc.poll() is None:
        total = 0
        try:
            procs = [ps] + ps.children(recursive=True)
        except psutil.NoSuchProcess:
            procs = []
        for p in procs:
            try:
                total += p.memory_info().rss
            except psutil.Error:
                pass
        peak = max(peak, total)
        if timeout and time.monotonic() - t0 > timeout:
            proc.kill()
        time.sleep(sample_s)
    wall = time.monotonic() - t0
    for t in threads:
        t.join()
    return {"wall_s": wall, "peak_rss_mib": peak / 2**20, "rc": proc.returncode,
            "stdout": out.get("stdout", ""), "stderr": out.get("stderr", "")}


SUMMARY = re.compile(r"sluice: pipeline=(\S+) (.*)")


def sluice_summary(stderr):
    """The `sluice: pipeline=… in=… out=… elapsed=…s rate=…` line, as a dict."""
    for line in stderr.splitlines():
        m = SUMMARY.search(line)
        if m:
            fields = dict(kv.split("=", 1) for kv in m.group(2).split() if "=" in kv)
            fields["pipeline"] = m.group(1)
            return fields
    return {}


def med(xs):
    return statistics.median(xs) if xs else float("nan")


def need_build():
    if not os.path.exists(SLUICE) or not os.path.isdir(PLUGINS):
        sys.exit("build first: cargo build --release -p sluice (CARGO_TARGET_DIR=%s), "
                 "or name a build with --sluice/--plugins (SLUICE_BIN/SLUICE_PLUGINS): "
                 "%s, %s" % (TARGET, SLUICE, PLUGINS))


def fresh_dir(path):
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(path)
    return path


def write_json(path, data):
    with open(path, "w") as f:
        json.dump(data, f, indent=2, sort_keys=True)


# The flights filter job (examples/flights/delayed.toml's pipeline), with
# {plugins} and {flights} to fill in: used by run.py and guest_json.py.
FILTER_TOML = """
[daemon]
plugins_dir = "{plugins}"
state_dir = "state"
admin = "off"

[sources.flights]
type = "file"
path = "{flights}"
format = "json"
key = "/carrier"
timestamp = "/event_time"

[sinks.delayed]
type = "file"
path = "out/delayed.ndjson"
truncate = true

[sinks.dlq]
type = "file"
path = "out/dead-letter.ndjson"
truncate = true

[pipelines.delays]
source = "flights"
partitions = 2
batch = {{ max_records = 4096, max_bytes = "4MiB", interval = "200ms" }}
processors = [ {{ plugin = "flights_delay.wasm", config = {{ min_delay = 15 }} }} ]
sinks = ["delayed"]
dead_letter = "dlq"
on_error = "dead-letter"
"""
