#!/usr/bin/env python3
"""Before/after of a change to the Rust `flights_delay` component, in one run.

    export CARGO_TARGET_DIR=...   # optional, default target/
    cargo build --release -p sluice
    python3 bench/guest_json.py [--before REV] [--runs N]

"Before" is `plugins/flights-delay` (and the SDK) at git revision REV (default
40a8cf9, the last commit before the SDK's field scanner), built for
wasm32-wasip2 from `git archive` into $CARGO_TARGET_DIR/guest-json/; "after" is
the component runtime/build.rs built from the working tree. Measured, the two
alternated (A B A B …), medians of N (default 7):

- `cargo bench -p sluice --bench wasm_cost` at batch 4,096, small and 1-KB
  records: ns/record of the component after vs before (the "before" passed as an
  extra component), and natively the plugin vs its serde_json path alone;
- the flights filter job (`examples/flights/delayed.toml`: 336,776 flights, 2
  partitions): the daemon's `elapsed` and the wall time, with the before and the
  after component; the outputs are checked equal (the same lines, in the same
  order within each carrier).

Writes docs/bench/guest_json.json and prints it. Standard library only.
"""

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

WORK = os.path.join(common.TARGET, "guest-json")
OUT = os.path.join(common.ROOT, "docs", "bench", "guest_json.json")
ARCHIVED = ["Cargo.toml", "Cargo.lock", "rust-toolchain.toml", "runtime", "plugin-sdk",
            "plugins", "wit"]


def log(msg):
    print("guest_json: " + msg, file=sys.stderr, flush=True)


def build_before(rev):
    """flights_delay.wasm at `rev`, in WORK/before/."""
    src = common.fresh_dir(os.path.join(WORK, "before-src"))
    archive = subprocess.run(["git", "archive", rev] + ARCHIVED, cwd=common.ROOT,
                             capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", src], input=archive, check=True)
    env = {k: v for k, v in os.environ.items()
           if k not in ("CARGO_TARGET_DIR", "RUSTFLAGS", "CARGO_BUILD_TARGET")}
    log("building flights_delay.wasm at %s" % rev)
    subprocess.run(["cargo", "build", "--release", "--target", "wasm32-wasip2",
                    "-p", "flights-delay", "--target-dir", os.path.join(WORK, "before-build")],
                   cwd=os.path.join(src, "plugins"), env=env, check=True)
    dst = os.path.join(common.fresh_dir(os.path.join(WORK, "before")), "flights_delay.wasm")
    shutil.copy(os.path.join(WORK, "before-build", "wasm32-wasip2", "release",
                             "flights_delay.wasm"), dst)
    return dst


def copy_after():
    dst = os.path.join(common.fresh_dir(os.path.join(WORK, "after")), "flights_delay.wasm")
    shutil.copy(os.path.join(common.PLUGINS, "flights_delay.wasm"), dst)
    return dst


def wasm_cost(before, runs):
    env = dict(os.environ, WASM_COST_SIZES="4096", WASM_COST_ROUNDS=str(runs),
               WASM_COST_PLUGINS="rust-before=" + before)
    log("cargo bench -p sluice --bench wasm_cost (batch 4096, %d rounds)" % runs)
    r = subprocess.run(["cargo", "bench", "-p", "sluice", "--bench", "wasm_cost"],
                       cwd=common.ROOT, env=env, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit("wasm_cost failed:\n" + r.stderr[-4000:])
    cells = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
    ns = {(c["impl"], c["shape"]): 1e9 / c["records_per_s"] for c in cells}
    out = {"cells": cells, "ns_per_record": {}}
    for shape in ("small", "1kb"):
        before = ns[("wasm flights_delay (rust-before)", shape)]
        after = ns[("wasm flights_delay (rust)", shape)]
        serde = ns[("native flights_delay (serde only)", shape)]
        native = ns[("native flights_delay", shape)]
        identity = ns[("wasm identity (rust)", shape)]
        out["ns_per_record"][shape] = {
            "wasm_before": round(before, 1), "wasm_after": round(after, 1),
            "wasm_before_over_after": round(before / after, 2),
            "native_serde_only": round(serde, 1), "native_after": round(native, 1),
            "native_serde_over_after": round(serde / native, 2),
            "wasm_identity": round(identity, 1),
            "guest_json_before": round(before - identity, 1),
            "guest_json_after": round(after - identity, 1),
        }
    return out




def run_job(d):
    t0 = time.monotonic()
    r = subprocess.run([common.SLUICE, "run", "--config", "sluice.toml"], cwd=d,
                       env=dict(os.environ, RUST_LOG="warn"), capture_output=True, text=True)
    wall = time.monotonic() - t0
    if r.returncode != 0:
        sys.exit("sluice failed:\n" + r.stderr[-3000:])
    s = common.sluice_summary(r.stderr)
    return {"job_s": float(s["elapsed"].rstrip("s")), "wall_s": round(wall, 4), "summary": s}


def by_carrier(path):
    """The output's lines per carrier, in order, and a digest of that. With 2
    partitions the two workers' lines interleave differently from run to run;
    within a carrier (one partition) the order is fixed."""
    lines = {}
    with open(path, "rb") as f:
        for line in f:
            lines.setdefault(json.loads(line).get("carrier"), []).append(line)
    h = hashlib.sha256()
    for carrier in sorted(lines, key=str):
        h.update(b"".join(lines[carrier]))
    return {"lines": sum(len(v) for v in lines.values()), "sha256_by_carrier": h.hexdigest()}


def job(before, after, runs):
    dirs = {}
    for name, wasm in (("before", before), ("after", after)):
        d = common.fresh_dir(os.path.join(WORK, "job-" + name))
        os.makedirs(os.path.join(d, "out"))
        with open(os.path.join(d, "sluice.toml"), "w") as f:
            f.write(common.FILTER_TOML.format(plugins=os.path.dirname(wasm), flights=common.FLIGHTS))
        run_job(d)  # fills the compile cache
        dirs[name] = d
    res = {"before": [], "after": []}
    for i in range(runs):
        log("job run %d/%d" % (i + 1, runs))
        for name in ("before", "after"):
            res[name].append(run_job(dirs[name]))
    outputs = {name: {f: by_carrier(os.path.join(d, "out", f))
                      for f in ("delayed.ndjson", "dead-letter.ndjson")}
               for name, d in dirs.items()}
    if outputs["before"] != outputs["after"]:
        sys.exit("outputs differ: %s" % outputs)
    med = {name: {k: round(common.med([r[k] for r in rs]), 4) for k in ("job_s", "wall_s")}
           for name, rs in res.items()}
    pair = {k: round(common.med([b[k] / a[k] for b, a in zip(res["before"], res["after"])]), 2)
            for k in ("job_s", "wall_s")}
    return {
        "median": med,
        "before_over_after_pairwise_median": pair,
        "all": {name: [{k: r[k] for k in ("job_s", "wall_s")} for r in rs]
                for name, rs in res.items()},
        "summary": {name: rs[-1]["summary"] for name, rs in res.items()},
        "outputs_equal": True,
        "outputs": outputs["after"],
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", default="40a8cf9", help="git revision of the 'before' plugin")
    ap.add_argument("--runs", type=int, default=7)
    args = ap.parse_args()
    if not os.path.exists(common.SLUICE):
        sys.exit("build first: cargo build --release -p sluice")
    before = build_before(args.before)
    after = copy_after()
    meta = {"machine_before": common.machine(), "before_rev": args.before,
            "after_rev": subprocess.run(["git", "rev-parse", "--short", "HEAD"],
                                        cwd=common.ROOT, capture_output=True,
                                        text=True).stdout.strip(),
            "runs": args.runs,
            "at": time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime())}
    result = {"_meta": meta, "wasm_cost": wasm_cost(before, args.runs),
              "job": job(before, after, args.runs)}
    meta["machine_after"] = common.machine()
    with open(OUT, "w") as f:
        json.dump(result, f, indent=1)
        f.write("\n")
    print(json.dumps({k: result[k] for k in ("_meta",)} | {
        "ns_per_record": result["wasm_cost"]["ns_per_record"],
        "job": {k: result["job"][k] for k in ("median", "before_over_after_pairwise_median",
                                               "outputs_equal")}}, indent=1))


if __name__ == "__main__":
    main()
