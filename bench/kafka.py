#!/usr/bin/env python3
"""Kafka → Kafka throughput of sluice on this machine, against a tansu broker.

    python3 bench/kafka.py [--runs N] [--tansu PATH]

Loads the 336,776 bundled flights into a 4-partition topic (a sluice file →
Kafka pipeline, itself timed), then times, alternated over N rounds:

  A. Kafka → flights_delay filter → Kafka        (no windows)
  B. Kafka → filter → 1-hour windows → Kafka      (the main job, changelog on)
  C. file → filter → file                         (examples/flights/delayed.toml)

A and B read the topic from the start with a new consumer group each run; their
time is from the first record read to the last (records_in = 336,776, polled on
the admin API every 20 ms), so the group join (tansu: ~3 s) is not counted.
C is the summary's elapsed. Needs target/release/sluice (cargo build --release
-p sluice) and tansu (.ci/run installs it into target/toolchains/bin).
"""
import argparse, json, os, shutil, socket, statistics, subprocess, sys, tempfile, time, urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SLUICE = os.path.join(ROOT, "target/release/sluice")
PLUGINS = os.path.join(ROOT, "target/plugins")
FLIGHTS = os.path.join(ROOT, "examples/data/flights-2013.ndjson.gz")
TOTAL = 336_776


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def admin_get(addr, path):
    with urllib.request.urlopen(f"http://{addr}{path}", timeout=5) as r:
        return json.loads(r.read())


def run_daemon(config_text, workdir):
    """Starts `sluice run` on config_text; returns (process, admin address)."""
    cfg = os.path.join(workdir, "sluice.toml")
    with open(cfg, "w") as f:
        f.write(config_text)
    log = open(os.path.join(workdir, "log.txt"), "w+")
    p = subprocess.Popen([SLUICE, "run", "--config", cfg], cwd=workdir, stderr=log,
                         stdout=subprocess.DEVNULL, env={**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "info")})
    deadline = time.time() + 30
    while time.time() < deadline:
        log.seek(0)
        for line in log.read().splitlines():
            if "admin API listening on " in line:
                return p, line.split("admin API listening on ")[1].strip()
        time.sleep(0.05)
    p.kill()
    sys.exit("no admin address in the log")


def timed_kafka_run(config_text):
    work = tempfile.mkdtemp(prefix="sluice-kbench-")
    p, addr = run_daemon(config_text, work)
    t0 = None
    deadline = time.time() + 600
    while time.time() < deadline:
        st = admin_get(addr, "/pipelines")[0]
        now = time.time()
        if t0 is None and st["records_in"] > 0:
            t0 = now
        if st["records_in"] >= TOTAL:
            t1 = now
            break
        time.sleep(0.02)
    else:
        p.kill()
        sys.exit("timed out")
    p.terminate()
    p.wait(timeout=120)
    with open(os.path.join(work, "log.txt")) as f:
        summary = [l for l in f.read().splitlines() if "sluice: pipeline=" in l]
    if summary:
        print("   ", summary[-1].split("sluice: ")[-1], flush=True)
    if os.environ.get("KBENCH_LOG"):
        with open(os.path.join(work, "log.txt")) as f:
            print("\n".join(l for l in f.read().splitlines() if "checkpoint" in l or "changelog" in l))
    shutil.rmtree(work, ignore_errors=True)
    return t1 - t0


def kafka_config(brokers, group, windows):
    win = """
window = { kind = "tumbling", size = "1h", watermark = "10m" }
aggregate = [
  { op = "count", as = "delayed" },
  { op = "avg", field = "/dep_delay", as = "avg_dep_delay" },
  { op = "max", field = "/dep_delay", as = "max_dep_delay" },
]""" if windows else ""
    return f"""
[daemon]
plugins_dir = "{PLUGINS}"
state_dir = "state"
admin = "127.0.0.1:0"
[sources.flights]
type = "kafka"
brokers = "{brokers}"
topics = ["flights"]
group_id = "{group}"
format = "json"
timestamp = "/event_time"
[sinks.out]
type = "kafka"
brokers = "{brokers}"
topic = "{group}-out"
partitions = 1
[pipelines.p]
source = "flights"
partitions = 2
batch = {{ max_records = 4096, max_bytes = "4MiB", interval = "200ms" }}
processors = [ {{ plugin = "flights_delay.wasm", config = {{ min_delay = 15 }} }} ]{win}
sinks = ["out"]
"""


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--tansu", default=shutil.which("tansu") or os.path.join(ROOT, "target/toolchains/bin/tansu"))
    args = ap.parse_args()
    port = free_port()
    url = f"tcp://127.0.0.1:{port}"
    broker = subprocess.Popen([args.tansu, "broker", "--listener-url", url, "--advertised-listener-url", url,
                               "--storage-engine", "memory://tansu/"], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    brokers = f"127.0.0.1:{port}"
    try:
        time.sleep(1)
        # Load the flights (file → Kafka), timed by its own summary.
        work = tempfile.mkdtemp(prefix="sluice-kload-")
        cfg = os.path.join(work, "load.toml")
        with open(cfg, "w") as f:
            f.write(f"""
[daemon]
plugins_dir = "{PLUGINS}"
state_dir = "state"
admin = "off"
[sources.flights]
type = "file"
path = "{FLIGHTS}"
format = "json"
key = "/carrier"
timestamp = "/event_time"
[sinks.topic]
type = "kafka"
brokers = "{brokers}"
topic = "flights"
partitions = 4
[pipelines.load]
source = "flights"
# One worker: each Kafka partition gets the flights in file (time) order.
partitions = 1
batch = {{ max_records = 4096, interval = "100ms" }}
sinks = ["topic"]
""")
        out = subprocess.run([SLUICE, "run", "--config", cfg], cwd=work, capture_output=True, text=True)
        summary = [l for l in out.stderr.splitlines() if "pipeline=load" in l]
        print("load (file → Kafka):", summary[-1] if summary else out.stderr[-2000:])
        delayed = os.path.join(ROOT, "examples/flights/delayed.toml")
        times = {"A kafka→filter→kafka": [], "B kafka→filter→windows→kafka": [], "C file→filter→file": []}
        for r in range(args.runs):
            times["A kafka→filter→kafka"].append(timed_kafka_run(kafka_config(brokers, f"a{r}", False)))
            times["B kafka→filter→windows→kafka"].append(timed_kafka_run(kafka_config(brokers, f"b{r}", True)))
            out = subprocess.run([SLUICE, "run", "--config", delayed], capture_output=True, text=True, cwd=ROOT)
            line = [l for l in out.stderr.splitlines() if "elapsed=" in l][-1]
            times["C file→filter→file"].append(float(line.split("elapsed=")[1].split("s")[0]))
            print(f"round {r}: " + ", ".join(f"{k[:1]}={v[-1]:.3f}s" for k, v in times.items()), flush=True)
        base = statistics.median(times["C file→filter→file"])
        print(f"\n{os.cpu_count()} cores; medians of {args.runs} alternated runs, {TOTAL} flights")
        print("| pipeline | time | records/s | vs file→file |\n|---|---|---|---|")
        for k, v in times.items():
            m = statistics.median(v)
            print(f"| {k} | {m:.3f} s | {TOTAL / m:,.0f} | {m / base:.2f}× the time |")
    finally:
        broker.kill()


if __name__ == "__main__":
    main()
