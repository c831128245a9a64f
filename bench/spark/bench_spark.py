#!/usr/bin/env python3
"""sluice vs Apache Spark Structured Streaming on the flights windows job.

1. Runs examples/flights/windows.toml's job with sluice and the same job in PySpark
   (flights_windows.py, local[2]) once each, and checks that both wrote the same
   windows: same (window_start, window_end, key) set, same counts and max, avg equal
   within 1e-9 relative. Nothing is timed unless they are equal.
2. Then times both, alternated (sluice, spark, sluice, spark, …), N runs each:
   wall time of the whole process (Spark: JVM start-up included), the job's own
   time (sluice: its summary's elapsed; Spark: start() to the end of the query),
   records/s over the 336,776 input flights, and the peak RSS of the process tree.

Usage: python3 bench/spark/bench_spark.py [--runs N]   (creates bench/.venv)
Prints JSON; bench/run.py calls it as part of the suite.
"""

import argparse
import json
import math
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import common  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
JOB = os.path.join(HERE, "flights_windows.py")

SLUICE_WINDOWS = """
[daemon]
plugins_dir = "{plugins}"
state_dir = "state"
admin = "off"

[sources.flights]
type = "file"
path = "{flights}"
key = "/carrier"
timestamp = "/event_time"

[sinks.hourly]
type = "file"
path = "out/hourly.ndjson"
truncate = true

[sinks.dead_letter]
type = "file"
path = "out/hourly-dead-letter.ndjson"
truncate = true

[pipelines.hourly]
source = "flights"
partitions = 2
processors = [ {{ plugin = "flights_delay.wasm", config = {{ min_delay = 15 }} }} ]
window = {{ kind = "tumbling", size = "1h", watermark = "10m" }}
aggregate = [
  {{ op = "count", as = "delayed" }},
  {{ op = "avg", field = "/dep_delay", as = "avg_dep_delay" }},
  {{ op = "max", field = "/dep_delay", as = "max_dep_delay" }},
]
sinks = ["hourly"]
dead_letter = "dead_letter"
"""

FLUSH = ('{{"carrier":"~flush","flight":0,"origin":"-","dest":"-","dep_delay":999,'
         '"arr_delay":null,"event_time":"{}"}}\n')


def sluice_dir(name="sluice-windows"):
    d = os.path.join(common.WORK, name)
    os.makedirs(os.path.join(d, "out"), exist_ok=True)
    with open(os.path.join(d, "sluice.toml"), "w") as f:
        f.write(SLUICE_WINDOWS.format(plugins=common.PLUGINS, flights=common.FLIGHTS))
    return d


def run_sluice(d):
    r = common.measure([common.SLUICE, "run", "--config", "sluice.toml"], cwd=d,
                       env=dict(os.environ, RUST_LOG="warn"))
    if r["rc"] != 0:
        sys.exit("sluice failed:\n" + r["stderr"][-3000:])
    s = common.sluice_summary(r["stderr"])
    r["job_s"] = float(s["elapsed"].rstrip("s"))
    r["summary"] = s
    return r


def spark_input(root):
    """The flights file, then two flush files, in modification-time order."""
    d = common.fresh_dir(os.path.join(root, "in"))
    dst = os.path.join(d, "1-flights.ndjson.gz")
    try:
        os.link(common.FLIGHTS, dst)
    except OSError:
        import shutil
        shutil.copy(common.FLIGHTS, dst)
    os.utime(dst, (1_600_000_000, 1_600_000_000))
    for i, when in ((2, "2014-06-01T00:00:00.000Z"), (3, "2014-07-01T00:00:00.000Z")):
        p = os.path.join(d, "%d-flush.ndjson" % i)
        with open(p, "w") as f:
            f.write(FLUSH.format(when))
        os.utime(p, (1_600_000_000 + i * 100, 1_600_000_000 + i * 100))
    return d


def run_spark(root):
    inp = spark_input(root)
    out = common.fresh_dir(os.path.join(root, "out"))
    ckpt = os.path.join(root, "checkpoint")
    import shutil
    shutil.rmtree(ckpt, ignore_errors=True)
    r = common.measure([common.VENV_PY, JOB, inp, out, ckpt],
                       env=dict(os.environ, PYSPARK_PYTHON=common.VENV_PY))
    if r["rc"] != 0:
        sys.exit("spark failed:\n" + r["stderr"][-3000:])
    r["job_s"] = json.loads(r["stdout"].strip().splitlines()[-1])["query_s"]
    r["out_dir"] = out
    return r


def load_sluice(path):
    rows = {}
    with open(path) as f:
        for line in f:
            w = json.loads(line)
            rows[(w["window_start"], w["window_end"], w["key"])] = w
    return rows


def load_spark(out_dir):
    rows = {}
    for name in sorted(os.listdir(out_dir)):
        if not name.endswith(".json"):
            continue
        with open(os.path.join(out_dir, name)) as f:
            for line in f:
                w = json.loads(line)
                if w["key"] == "~flush":
                    continue
                k = (w["window_start"], w["window_end"], w["key"])
                if k in rows:
                    raise SystemExit("spark wrote window %s twice" % (k,))
                rows[k] = w
    return rows


def compare(sluice_rows, spark_rows, rel_tol=1e-9):
    """Equal windows: same keys; count and max exactly (as numbers); avg within
    rel_tol."""
    only_sluice = sorted(set(sluice_rows) - set(spark_rows))
    only_spark = sorted(set(spark_rows) - set(sluice_rows))
    diffs = []
    for k in sorted(set(sluice_rows) & set(spark_rows)):
        a, b = sluice_rows[k], spark_rows[k]
        if a["delayed"] != b["delayed"] or float(a["max_dep_delay"]) != float(b["max_dep_delay"]) \
                or not math.isclose(a["avg_dep_delay"], b["avg_dep_delay"], rel_tol=rel_tol):
            diffs.append({"window": k, "sluice": a, "spark": b})
    return {
        "equal": not only_sluice and not only_spark and not diffs,
        "sluice_windows": len(sluice_rows), "spark_windows": len(spark_rows),
        "only_in_sluice": len(only_sluice), "only_in_spark": len(only_spark),
        "value_differences": len(diffs),
        "examples": {"only_in_sluice": only_sluice[:3], "only_in_spark": only_spark[:3],
                     "differences": diffs[:3]},
        "max_avg_rel_diff": max(
            (abs(sluice_rows[k]["avg_dep_delay"] - spark_rows[k]["avg_dep_delay"])
             / max(abs(sluice_rows[k]["avg_dep_delay"]), 1e-300)
             for k in set(sluice_rows) & set(spark_rows)), default=0.0),
        "delayed_flights_in_windows": sum(w["delayed"] for w in sluice_rows.values()),
    }


def bench(runs=5):
    common.need_build()
    root = common.fresh_dir(os.path.join(common.WORK, "spark"))
    sd = sluice_dir()
    print("spark: equality check (one run of each)", file=sys.stderr)
    s0 = run_sluice(sd)   # also warms the compile cache
    p0 = run_spark(root)
    check = compare(load_sluice(os.path.join(sd, "out", "hourly.ndjson")),
                    load_spark(p0["out_dir"]))
    check["sluice_summary"] = s0["summary"]
    result = {"equality": check, "machine_before": common.machine(), "runs": runs}
    if not check["equal"]:
        print("spark: OUTPUTS DIFFER, no timing reported: %s" % json.dumps(check)[:2000],
              file=sys.stderr)
        return result
    sl, sp = [], []
    for i in range(runs):
        print("spark: timing run %d/%d (sluice, spark)" % (i + 1, runs), file=sys.stderr)
        sl.append(run_sluice(sd))
        sp.append(run_spark(root))
    keep = ("wall_s", "job_s", "peak_rss_mib")
    for name, rs in (("sluice", sl), ("spark", sp)):
        result[name] = {k: [round(r[k], 4) for r in rs] for k in keep}
        result[name]["median"] = {k: round(common.med([r[k] for r in rs]), 4) for k in keep}
        result[name]["median"]["records_per_s_wall"] = round(
            common.N_FLIGHTS / result[name]["median"]["wall_s"])
        result[name]["median"]["records_per_s_job"] = round(
            common.N_FLIGHTS / result[name]["median"]["job_s"])
    # Ratios within this run: pairwise (run i of each), then the median.
    result["ratio_spark_over_sluice"] = {
        k: round(common.med([b[k] / a[k] for a, b in zip(sl, sp)]), 2) for k in keep}
    result["machine_after"] = common.machine()
    return result


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    common.ensure_venv()
    print(json.dumps(bench(args.runs), indent=2))


if __name__ == "__main__":
    main()
