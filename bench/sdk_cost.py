#!/usr/bin/env python3
"""Per-record cost of the Python and JavaScript flights_delay components before
and after they moved to the SDKs (sdk/python, sdk/js), side by side in one run.

    export PATH=$PWD/target/toolchains/py/bin:$PWD/target/toolchains/js/node_modules/.bin:$PATH
    python3 bench/sdk_cost.py [--before REV] [--rounds N]

"Before" is examples/plugins/{python,js}/flights_delay at git revision REV
(default 5f4453c, the last commit before the SDKs: the hand-sliced packed
columns), built with componentize-py / componentize-js from `git show` into
$CARGO_TARGET_DIR/sdk-cost/before/; "after" is the working tree's, built by its
build.sh into .../after/. Both go to `cargo bench -p sluice --bench wasm_cost`
as extra components (WASM_COST_PLUGINS) at batch 256 and 4,096, small and 1-KB
records: every round runs every implementation once per cell, in turn (A B C D
A B C D …), the figure is the median of the rounds. Before measuring, the four
are run once through `sluice plugin run` on the first 20,000 flights and their
outputs compared byte for byte.

Writes docs/bench/sdk_cost.json and prints it. Standard library only.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

WORK = os.path.join(common.TARGET, "sdk-cost")
OUT = os.path.join(common.ROOT, "docs", "bench", "sdk_cost.json")
WIT = os.path.join(common.ROOT, "wit")
JS_DISABLE = ["-d", "stdio", "random", "clocks", "http", "fetch-event"]


def log(msg):
    print("sdk_cost: " + msg, file=sys.stderr, flush=True)


def git_show(rev, path):
    return subprocess.run(["git", "show", "%s:%s" % (rev, path)], cwd=common.ROOT,
                          capture_output=True, check=True).stdout


def build_before(rev):
    """The two components at `rev` (one source file each, no SDK)."""
    src = common.fresh_dir(os.path.join(WORK, "before-src"))
    out = common.fresh_dir(os.path.join(WORK, "before"))
    with open(os.path.join(src, "app.py"), "wb") as f:
        f.write(git_show(rev, "examples/plugins/python/flights_delay/app.py"))
    with open(os.path.join(src, "flights_delay.js"), "wb") as f:
        f.write(git_show(rev, "examples/plugins/js/flights_delay/flights_delay.js"))
    log("building the %s components" % rev)
    subprocess.run(["componentize-py", "-d", WIT, "-w", "processor", "componentize", "-p", src,
                    "app", "-o", os.path.join(out, "python.wasm")], cwd=src, check=True,
                   stdout=subprocess.DEVNULL)
    subprocess.run(["componentize-js", os.path.join(src, "flights_delay.js"), "--wit", WIT,
                    "--world-name", "processor"] + JS_DISABLE + ["-o", os.path.join(out, "js.wasm")],
                   check=True, stdout=subprocess.DEVNULL)
    return {"python": os.path.join(out, "python.wasm"), "js": os.path.join(out, "js.wasm")}


def build_after():
    out = common.fresh_dir(os.path.join(WORK, "after"))
    got = {}
    for lang in ("python", "js"):
        log("building the working tree's %s component" % lang)
        d = common.fresh_dir(os.path.join(out, lang))
        subprocess.run(["bash", os.path.join(common.ROOT, "examples", "plugins", lang,
                                             "flights_delay", "build.sh"), d],
                       check=True, stdout=subprocess.DEVNULL)
        got[lang] = os.path.join(out, lang + ".wasm")
        shutil.move(os.path.join(d, "flights_delay.wasm"), got[lang])
    return got


def sluice():
    for profile in ("release", "debug"):
        path = os.path.join(common.TARGET, profile, "sluice")
        if os.path.exists(path):
            return path
    sys.exit("build sluice first (cargo build --release -p sluice)")


def same_outputs(components):
    """Each component through `sluice plugin run` on the first 20,000 flights."""
    import gzip

    src = os.path.join(WORK, "flights-20k.ndjson")
    with gzip.open(common.FLIGHTS, "rb") as f, open(src, "wb") as o:
        for i, line in enumerate(f):
            if i == 20_000:
                break
            o.write(line)
    outs = {}
    for label, wasm in components.items():
        log("plugin run %s" % label)
        with open(src, "rb") as stdin:
            r = subprocess.run([sluice(), "plugin", "run", wasm, "--config", "min_delay=15",
                                "--key", "/carrier", "--timestamp", "/event_time",
                                "--memory-limit", "256MiB", "--cache-dir",
                                os.path.join(WORK, "cache")],
                               stdin=stdin, capture_output=True)
        if r.returncode != 0:
            sys.exit("plugin run %s failed:\n%s" % (label, r.stderr.decode()[-3000:]))
        outs[label] = r.stdout
    first = next(iter(outs.values()))
    for label, out in outs.items():
        if out != first:
            sys.exit("outputs differ: %s" % label)
    return first.count(b"\n")


def wasm_cost(components, rounds, binary=None):
    plugins = ",".join("%s=%s" % kv for kv in components.items())
    env = dict(os.environ, WASM_COST_SIZES="256,4096", WASM_COST_ROUNDS=str(rounds),
               WASM_COST_PLUGINS=plugins)
    log("cargo bench -p sluice --bench wasm_cost (batch 256 and 4096, %d rounds)" % rounds)
    cmd = [binary, "--bench"] if binary else ["cargo", "bench", "-p", "sluice", "--bench",
                                              "wasm_cost"]
    r = subprocess.run(cmd, cwd=common.ROOT, env=env, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit("wasm_cost failed:\n" + r.stderr[-4000:])
    cells = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
    table = {}
    for c in cells:
        if not c["impl"].startswith("wasm flights_delay ("):
            continue
        label = c["impl"][len("wasm flights_delay ("):-1]
        table.setdefault("%s batch %d" % (c["shape"], c["batch"]), {})[label] = {
            "ns_per_record": round(1e9 / c["records_per_s"], 1),
            "records_per_s": round(c["records_per_s"]),
            "rounds_records_per_s": [round(x) for x in c["rounds"]],
        }
    for cell in table.values():
        for lang in ("python", "js"):
            if lang + "-before" in cell and lang + "-sdk" in cell:
                cell[lang + " before/sdk"] = round(
                    cell[lang + "-before"]["ns_per_record"] / cell[lang + "-sdk"]["ns_per_record"], 3)
    return {"cells": cells, "table": table}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", default="5f4453c", help="git revision of the 'before' plugins")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--wasm-cost", metavar="BIN",
                    help="an already built wasm_cost bench executable "
                         "(target/release/deps/wasm_cost-*) instead of `cargo bench`")
    args = ap.parse_args()
    for tool in ("componentize-py", "componentize-js"):
        if shutil.which(tool) is None:
            sys.exit("%s not on PATH (cargo xtask setup; see the docstring)" % tool)
    before = build_before(args.before)
    after = build_after()
    components = {"python-before": before["python"], "python-sdk": after["python"],
                  "js-before": before["js"], "js-sdk": after["js"]}
    lines = same_outputs(components)
    meta = {"machine_before": common.machine(), "before_rev": args.before,
            "after_rev": subprocess.run(["git", "rev-parse", "--short", "HEAD"],
                                        cwd=common.ROOT, capture_output=True,
                                        text=True).stdout.strip(),
            "rounds": args.rounds, "outputs_equal_lines": lines,
            "wasm_cost": args.wasm_cost or "cargo bench -p sluice --bench wasm_cost",
            "at": time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime())}
    result = {"_meta": meta, "wasm_cost": wasm_cost(components, args.rounds, args.wasm_cost)}
    meta["machine_after"] = common.machine()
    with open(OUT, "w") as f:
        json.dump(result, f, indent=1)
        f.write("\n")
    print(json.dumps({"_meta": meta, "table": result["wasm_cost"]["table"]}, indent=1))


if __name__ == "__main__":
    main()
