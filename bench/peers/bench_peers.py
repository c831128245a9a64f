#!/usr/bin/env python3
"""sluice vs Pathway and Bytewax (and, optionally, Spark) on the flights windows job.

1. Runs examples/flights/windows.toml's job with sluice (bench/spark/bench_spark.py's
   config) and the same job in each peer once (Pathway:
   flights_windows_pathway.py; Bytewax: flights_windows_bytewax.py; Spark:
   bench/spark/flights_windows.py), and checks that each wrote the same windows as
   sluice: rows normalised to (window_start, window_end, key) → (delayed,
   avg_dep_delay, max_dep_delay), window times as epoch milliseconds, sorted; count
   and max equal as numbers, avg within 1e-9 relative (the only float that a
   different summation order may change). A mismatch aborts with a diff of the
   sorted rows: nothing is timed unless every peer is equal.
2. Then times them, alternated (sluice, pathway, bytewax[, spark], sluice, …), N runs
   each: wall time of the whole process (interpreter and runtime start-up
   included), the job's own time where the peer reports one, and the peak RSS of
   the process tree (psutil, sampled every 20 ms); medians, and the ratios
   peer ÷ sluice (pairwise within a round, then the median).

Each peer runs with 1 and with 2 threads (Pathway: PATHWAY_THREADS) / workers
(Bytewax: `-w`, workers of one process), each setting a system of its own
(`pathway-1t`, `pathway-2t`, `bytewax-1w`, `bytewax-2w`), checked and timed alike;
BENCHMARKS.md quotes, per peer, the setting with the lower wall ÷ sluice ratio
(the one that flatters the peer).

Usage: python3 bench/peers/bench_peers.py [--runs N] [--peers pathway,bytewax,spark]
       [--pathway-threads 1,2] [--bytewax-workers 1,2] [--sluice PATH --plugins DIR]
       (creates bench/.venv)
Prints JSON; bench/run.py calls it as the `peers` section.
"""

import argparse
import difflib
import json
import math
import os
import sys
from datetime import datetime

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "spark"))
import bench_spark  # noqa: E402
import common  # noqa: E402

PATHWAY_JOB = os.path.join(HERE, "flights_windows_pathway.py")
BYTEWAX_JOB = os.path.join(HERE, "flights_windows_bytewax.py")
PEERS = ["pathway", "bytewax"]
KEEP = ("wall_s", "job_s", "peak_rss_mib")
# Each peer is run with 1 and with 2 threads/workers (sluice's job has partitions = 2,
# the machine 2 cores), as separate systems in the same alternation: neither is
# assumed to be the better one on a given day.
PATHWAY_THREADS = (1, 2)
BYTEWAX_WORKERS = (1, 2)


def versions():
    from importlib.metadata import version
    out = {}
    for name in ("pathway", "bytewax", "pyspark"):
        try:
            out[name] = version(name)
        except Exception:  # noqa: BLE001
            out[name] = None
    out["python"] = sys.version.split()[0]
    return out


def run_pathway(root, threads):
    out = os.path.join(root, "out.jsonl")
    scratch = common.fresh_dir(os.path.join(root, "scratch"))
    if os.path.exists(out):
        os.remove(out)
    r = common.measure([common.VENV_PY, PATHWAY_JOB, common.FLIGHTS, out, scratch],
                       env=dict(os.environ, PATHWAY_THREADS=str(threads)))
    if r["rc"] != 0:
        sys.exit("pathway failed:\n" + r["stderr"][-3000:])
    last = json.loads(r["stdout"].strip().splitlines()[-1])
    r["job_s"] = last["query_s"]
    r["inflate_s"] = last["inflate_s"]
    r["out"] = out
    return r


def run_bytewax(root, workers):
    out = os.path.join(root, "out.jsonl")
    open(out, "w").close()  # FileSink wants the file to exist; truncate
    r = common.measure([common.VENV_PY, "-m", "bytewax.run", BYTEWAX_JOB + ":flow",
                        "-w", str(workers)],
                       env=dict(os.environ, FLIGHTS_IN=common.FLIGHTS, FLIGHTS_OUT=out))
    if r["rc"] != 0:
        sys.exit("bytewax failed:\n" + r["stderr"][-3000:])
    r["job_s"] = r["wall_s"]  # no separate job time: the process is the job
    r["out"] = out
    return r


def ms(ts):
    return int(datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp() * 1000)


def load_rows(paths, skip_keys=()):
    """Windows of JSON-lines files, normalised; a window written twice is an error."""
    rows = {}
    for path in paths:
        with open(path) as f:
            for line in f:
                if not line.strip():
                    continue
                w = json.loads(line)
                if w["key"] in skip_keys:
                    continue
                if w.get("diff", 1) != 1:
                    raise SystemExit("%s: a retraction (diff %s): %s" % (path, w["diff"], line))
                k = (ms(w["window_start"]), ms(w["window_end"]), w["key"])
                if k in rows:
                    raise SystemExit("%s: window %s written twice" % (path, k))
                rows[k] = (int(w["delayed"]), float(w["avg_dep_delay"]), float(w["max_dep_delay"]))
    return rows


def compare(name, ref, got, rel_tol=1e-9):
    only_ref = sorted(set(ref) - set(got))
    only_got = sorted(set(got) - set(ref))
    diffs = [k for k in sorted(set(ref) & set(got))
             if ref[k][0] != got[k][0] or ref[k][2] != got[k][2]
             or not math.isclose(ref[k][1], got[k][1], rel_tol=rel_tol)]
    common_keys = set(ref) & set(got)
    return {
        "equal": not only_ref and not only_got and not diffs,
        "sluice_windows": len(ref), name + "_windows": len(got),
        "only_in_sluice": len(only_ref), "only_in_" + name: len(only_got),
        "value_differences": len(diffs),
        "max_avg_rel_diff": max((abs(ref[k][1] - got[k][1]) / max(abs(ref[k][1]), 1e-300)
                                 for k in common_keys), default=0.0),
        "delayed_flights_in_windows": sum(v[0] for v in got.values()),
    }


def diff_text(name, ref, got, limit=40):
    def lines(rows):
        return ["%d %d %s delayed=%d avg=%.9g max=%g" % (k + v) for k, v in sorted(rows.items())]
    d = list(difflib.unified_diff(lines(ref), lines(got), "sluice", name, lineterm="", n=0))
    return "\n".join(d[:limit]) + ("\n… %d more diff lines" % (len(d) - limit) if len(d) > limit else "")


def systems(peers, pathway_threads, bytewax_workers, dirs):
    """name → (peer, setting, runner)."""
    out = {}
    for p in peers:
        if p == "pathway":
            for n in pathway_threads:
                d = dirs("pathway-%dt" % n)
                out["pathway-%dt" % n] = ("pathway", "PATHWAY_THREADS=%d" % n,
                                          lambda d=d, n=n: run_pathway(d, n))
        elif p == "bytewax":
            for n in bytewax_workers:
                d = dirs("bytewax-%dw" % n)
                out["bytewax-%dw" % n] = ("bytewax", "python -m bytewax.run -w %d" % n,
                                          lambda d=d, n=n: run_bytewax(d, n))
        elif p == "spark":
            d = dirs("spark")
            out["spark"] = ("spark", "local[2], spark.sql.shuffle.partitions = 2, "
                            "spark.driver.memory = 1g", lambda d=d: bench_spark.run_spark(d))
        else:
            sys.exit("unknown peer %r (pathway, bytewax, spark)" % p)
    return out


def bench(runs=5, peers=None, pathway_threads=PATHWAY_THREADS, bytewax_workers=BYTEWAX_WORKERS):
    peers = peers or PEERS
    common.need_build()
    root = common.fresh_dir(os.path.join(common.WORK, "peers"))
    systems_ = systems(peers, pathway_threads, bytewax_workers,
                       lambda name: common.fresh_dir(os.path.join(root, name)))
    sd = bench_spark.sluice_dir()

    def outputs(name, r):
        if name == "spark":
            return [os.path.join(r["out_dir"], n) for n in sorted(os.listdir(r["out_dir"]))
                    if n.endswith(".json")]
        return [r["out"]]

    print("peers: equality check (one run of each)", file=sys.stderr)
    s0 = bench_spark.run_sluice(sd)  # also warms the compile cache
    ref = load_rows([os.path.join(sd, "out", "hourly.ndjson")])
    result = {"runs": runs, "peers": peers, "systems": list(systems_),
              "versions": versions(),
              "sluice_bin": common.SLUICE,
              "config": dict({"sluice": "partitions = 2 (windows.toml)"},
                             **{name: s[1] for name, s in systems_.items()}),
              "equality": {}, "sluice_summary": s0["summary"],
              "machine_before": common.machine()}
    for name, (peer, _, run) in systems_.items():
        r = run()
        got = load_rows(outputs(peer, r), skip_keys=("~flush",))
        check = compare(peer, ref, got)
        result["equality"][name] = check
        print("peers: %s %s" % (name, json.dumps(check)), file=sys.stderr)
        if not check["equal"]:
            sys.exit("peers: %s's windows differ from sluice's, nothing timed:\n%s"
                     % (name, diff_text(name, ref, got)))
    rs = {name: [] for name in ["sluice"] + list(systems_)}
    for i in range(runs):
        print("peers: timing run %d/%d (%s)" % (i + 1, runs, ", ".join(rs)), file=sys.stderr)
        rs["sluice"].append(bench_spark.run_sluice(sd))
        for name, (_, _, run) in systems_.items():
            rs[name].append(run())
    for name, xs in rs.items():
        result[name] = {k: [round(r[k], 4) for r in xs] for k in KEEP}
        result[name]["median"] = {k: round(common.med([r[k] for r in xs]), 4) for k in KEEP}
        result[name]["median"]["records_per_s_wall"] = round(
            common.N_FLIGHTS / result[name]["median"]["wall_s"])
        if name.startswith("pathway"):
            result[name]["inflate_s"] = [round(r["inflate_s"], 4) for r in xs]
    result["ratio_over_sluice"] = {
        name: {k: round(common.med([b[k] / a[k] for a, b in zip(rs["sluice"], rs[name])]), 2)
               for k in ("wall_s", "peak_rss_mib")}
        for name in systems_}
    result["machine_after"] = common.machine()
    return result


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--peers", default=",".join(PEERS), help="pathway,bytewax[,spark]")
    ap.add_argument("--pathway-threads", default=",".join(map(str, PATHWAY_THREADS)))
    ap.add_argument("--bytewax-workers", default=",".join(map(str, BYTEWAX_WORKERS)))
    ap.add_argument("--sluice", help="the sluice binary (env SLUICE_BIN)")
    ap.add_argument("--plugins", help="its plugins folder (env SLUICE_PLUGINS)")
    args = ap.parse_args()
    if args.sluice:
        os.environ["SLUICE_BIN"] = common.SLUICE = os.path.abspath(args.sluice)
    if args.plugins:
        os.environ["SLUICE_PLUGINS"] = common.PLUGINS = os.path.abspath(args.plugins)
    common.ensure_venv()
    ints = lambda s: tuple(int(x) for x in s.split(","))  # noqa: E731
    print(json.dumps(bench(args.runs, args.peers.split(","), ints(args.pathway_threads),
                           ints(args.bytewax_workers)), indent=2))


if __name__ == "__main__":
    main()
