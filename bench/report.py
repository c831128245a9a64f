"""Writes BENCHMARKS.md and the PNG plots from docs/bench/results.json.

`python3 bench/run.py --report-only` rewrites them without measuring again.
"""

import os
import sys

REL = "docs/bench"  # the plots' folder, relative to BENCHMARKS.md (set by write)


def fmt_int(x):
    return "{:,}".format(int(round(x)))


def fmt(x, nd=2):
    if x is None:
        return "–"
    return ("{:,.%df}" % nd).format(x)


def machine_line(meta):
    m = meta.get("machine_before", {})
    a = meta.get("machine_after", {})
    return "%s CPUs (%s), %s GiB RAM, load average before %s / after %s; %s; at %s, commit %s%s" % (
        m.get("cpus"), m.get("cpu", "?"), m.get("mem_gib"), m.get("loadavg"), a.get("loadavg"),
        m.get("platform", ""), meta.get("at"), meta.get("commit"),
        " (--quick)" if meta.get("quick") else "")


# ------------------------------------------------------------------ plots

def plots(results, out):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    made = {}
    w = results.get("wasm")
    if w:
        shapes = ["small", "1kb"]
        fig, axes = plt.subplots(1, 2, figsize=(13, 5), sharey=True)
        for ax, shape in zip(axes, shapes):
            impls = []
            for c in w["cells"]:
                if c["batch"] and c["impl"] not in impls:
                    impls.append(c["impl"])
            for impl in impls:
                cs = [c for c in w["cells"] if c["impl"] == impl and c["shape"] == shape]
                cs.sort(key=lambda c: c["batch"])
                ax.plot([c["batch"] for c in cs], [c["records_per_s"] for c in cs], marker="o",
                        label=impl, linestyle="--" if impl.startswith("native") else "-")
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            avg = next((c["avg_bytes"] for c in w["cells"] if c["shape"] == shape), "?")
            ax.set_title("%s records (%s bytes avg)" % (shape, avg))
            ax.set_xlabel("batch size (records per call)")
            ax.grid(True, which="both", alpha=0.3)
        axes[0].set_ylabel("records/s (one core)")
        axes[1].legend(fontsize=8, loc="lower right")
        fig.suptitle("Wasm vs native: one process() call per batch")
        fig.tight_layout()
        fig.savefig(os.path.join(out, "wasm_vs_native.png"), dpi=90)
        plt.close(fig)
        made["wasm"] = "wasm_vs_native.png"

    s = results.get("spark")
    if s and "sluice" in s:
        fig, axes = plt.subplots(1, 3, figsize=(12, 4))
        for ax, key, label in zip(axes, ["wall_s", "job_s", "peak_rss_mib"],
                                  ["process wall time (s)", "job time (s)", "peak RSS, process tree (MiB)"]):
            vals = [s["sluice"]["median"][key], s["spark"]["median"][key]]
            ax.bar(["sluice", "Spark"], vals, color=["#2a7", "#e73"])
            for i, v in enumerate(vals):
                ax.text(i, v, fmt(v, 2 if key != "peak_rss_mib" else 0), ha="center", va="bottom")
            ax.set_title(label)
        fig.suptitle("Flights windows job: sluice vs Spark Structured Streaming (local[2]), medians")
        fig.tight_layout()
        fig.savefig(os.path.join(out, "sluice_vs_spark.png"), dpi=90)
        plt.close(fig)
        made["spark"] = "sluice_vs_spark.png"

    pe = results.get("peers")
    if pe and "sluice" in pe:
        names = ["sluice"] + pe["systems"]
        fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
        for ax, key, label in zip(axes, ["wall_s", "peak_rss_mib"],
                                  ["process wall time (s)", "peak RSS, process tree (MiB, log)"]):
            vals = [pe[n]["median"][key] for n in names]
            ax.bar(names, vals, color=["#2a7"] + ["#e73"] * (len(names) - 1))
            for i, v in enumerate(vals):
                ax.text(i, v, fmt(v, 2 if key != "peak_rss_mib" else 0), ha="center",
                        va="bottom", fontsize=8)
            if key == "peak_rss_mib":
                ax.set_yscale("log")
            ax.set_title(label)
            ax.tick_params(axis="x", labelsize=8, rotation=20)
        fig.suptitle("Flights windows job: sluice vs its peers, medians of %d alternated runs "
                     "(load average %s → %s)" % (pe["runs"], pe["_meta"]["machine_before"]["loadavg"][0],
                                                 pe["_meta"]["machine_after"]["loadavg"][0]))
        fig.tight_layout()
        fig.savefig(os.path.join(out, "sluice_vs_peers.png"), dpi=90)
        plt.close(fig)
        made["peers"] = "sluice_vs_peers.png"

    ss = results.get("slowsink")
    if ss:
        fig, ax = plt.subplots(figsize=(8, 4))
        t = [x[0] for x in ss["samples"]]
        ax.plot(t, [x[1] for x in ss["samples"]], label="daemon RSS (MiB)")
        ax.plot(t, [x[2] for x in ss["samples"]], label="MiB read from the sink", linestyle="--")
        ax.set_xlabel("seconds")
        ax.set_ylim(bottom=0)
        ax.legend()
        ax.set_title("Slow sink: stdout read at %s MB/s" % fmt(ss["reader_bytes_per_s"] / 1e6, 1))
        fig.tight_layout()
        fig.savefig(os.path.join(out, "slow_sink_rss.png"), dpi=90)
        plt.close(fig)
        made["slowsink"] = "slow_sink_rss.png"

    lt = results.get("latency")
    if lt:
        runs = [r for r in lt["runs"] if r["p50_ms"] is not None]
        fig, ax = plt.subplots(figsize=(12, 4.5))
        labels = ["%s\n%s/s\n%s" % (r["source"], fmt_int(r["rate"]), r["interval"]) for r in runs]
        xs = range(len(runs))
        for off, key in ((-0.25, "p50_ms"), (0, "p99_ms"), (0.25, "p999_ms")):
            ax.bar([x + off for x in xs], [r[key] for r in runs], width=0.25, label=key[:-3])
        ax.set_xticks(list(xs))
        ax.set_xticklabels(labels, fontsize=7)
        ax.set_yscale("log")
        ax.set_ylabel("latency, creation to sink (ms)")
        ax.legend()
        ax.set_title("End-to-end latency by rate and batch interval (identity plugin)")
        fig.tight_layout()
        fig.savefig(os.path.join(out, "latency.png"), dpi=90)
        plt.close(fig)
        made["latency"] = "latency.png"
    return made


# ------------------------------------------------------------------ wasm analysis

def wasm_cell(w, impl, shape, batch):
    for c in w["cells"]:
        if c["impl"] == impl and c["shape"] == shape and c["batch"] == batch:
            return c["records_per_s"]
    return None


def wasm_analysis(w):
    """Per-record costs (ns) at the largest common batch, and where they go."""
    batches = sorted({c["batch"] for c in w["cells"] if c["batch"]})
    rows = []
    for shape in ("small", "1kb"):
        for b in [x for x in (256, 4096, 16384) if x in batches]:
            ns = lambda impl: (1e9 / wasm_cell(w, impl, shape, b)) if wasm_cell(w, impl, shape, b) else None
            idn, idw = ns("native identity"), ns("wasm identity (rust)")
            fdn, fdw = ns("native flights_delay"), ns("wasm flights_delay (rust)")
            fdb = ns("wasm flights_delay (rust, no epoch)")
            if None in (idn, idw, fdn, fdw):
                continue
            hd = wasm_cell(w, "host decode", shape, 0)
            boundary = idw - idn          # lowering + lifting + the guest's copy loop
            guest = max(fdw - idw, 0.0)   # what flights_delay adds in the guest: JSON
            rows.append({"shape": shape, "batch": b, "id_native": idn, "id_wasm": idw,
                         "fd_native": fdn, "fd_wasm": fdw, "fd_noepoch": fdb,
                         "boundary": boundary, "guest": guest,
                         "guest_share": guest / fdw, "boundary_share": boundary / fdw,
                         "guest_over_native": guest / fdn if fdn else None,
                         "wasm_over_native": fdw / fdn,
                         "host_decode": 1e9 / hd if hd else None})
    return rows


# ------------------------------------------------------------------ peers

PEER_NAMES = {"pathway": "Pathway", "bytewax": "Bytewax", "spark": "Spark"}


def _median(xs):
    import statistics
    return statistics.median(xs) if xs else None


def peers_best(pe):
    """Per peer, its setting with the lowest wall ÷ sluice ratio (the figure quoted)."""
    out = {}
    for peer in pe["peers"]:
        names = [n for n in pe["systems"] if n.split("-")[0] == peer]
        out[peer] = min(names, key=lambda n: pe["ratio_over_sluice"][n]["wall_s"])
    return out


def peers_section(pe, A):
    v = pe["versions"]
    A("## sluice vs Pathway and Bytewax (the flights windows job)")
    A("")
    A("Machine: " + machine_line(pe["_meta"]))
    A("")
    A("`python3 bench/run.py --only peers --peers %s` (or `python3 "
      "bench/peers/bench_peers.py --runs N --peers %s`; `--sluice PATH --plugins DIR` "
      "measure a build made elsewhere). The job of `examples/flights/windows.toml` "
      "(the `flights_delay` filter, `dep_delay >= 15`, then per carrier 1-hour tumbling "
      "event-time windows on `event_time` with a 10-minute watermark, count / avg / max of "
      "`dep_delay`) written for each peer: [Pathway](bench/peers/flights_windows_pathway.py) "
      "%s, [Bytewax](bench/peers/flights_windows_bytewax.py) %s%s; Python %s." % (
          ",".join(pe["peers"]), ",".join(pe["peers"]), v.get("pathway"), v.get("bytewax"),
          ", [Spark](bench/spark/flights_windows.py) (PySpark %s)" % v.get("pyspark")
          if "spark" in pe["peers"] else "", v.get("python")))
    A("")
    A("- **Pathway**: `pw.io.jsonlines.read(mode=\"static\")` with a schema, the filter, "
      "`windowby(tumbling(1 h), instance=carrier, behavior=exactly_once_behavior(shift=10 "
      "min))` (each window written once, when the watermark passes its end: Pathway's "
      "append mode), `pw.io.jsonlines.write`. Pathway's readers do not inflate gzip (nor "
      "read a pipe in static mode), so the script first inflates the file with Python's "
      "`gzip` (zlib) inside the timed process (%s s of its wall time, median; counted). "
      "Static mode ingests the whole file as one commit, so nothing is late within it "
      "(sluice: 4,096-record batches)." % fmt(
          _median([x for n in pe.get("systems", []) if n.startswith("pathway") and n in pe
                   for x in pe[n]["inflate_s"]]), 2))
    A("- **Bytewax**: a one-partition source that reads the gzip file's lines with Python's "
      "`gzip`, batches of 1,000 (as Bytewax's `FileSource`), `json.loads` and the plugin's "
      "checks in a `filter_map`, `fold_window` with `TumblingWindower(1 h, aligned to the "
      "epoch)` and `EventClock(wait 10 min)` whose system clock is held constant, so the "
      "watermark follows event time only (as sluice's does, per key rather than per "
      "partition), a `FileSink`. Its workers (`-w`) are threads of one Python process.")
    A("- Each peer runs with 1 and with 2 threads / workers, each setting timed as a "
      "system of its own; the ratio quoted (in bold, and in the summary) is the peer's "
      "setting with the lower ratio.")
    A("- Equality, before any timing: window rows normalised to (start, end, key) → "
      "(count, avg, max), times as epoch ms, sorted; count and max equal as numbers, avg "
      "within 1e-9 relative; a mismatch aborts with a diff.")
    A("")
    for name, eq in pe["equality"].items():
        peer = name.split("-")[0]
        A("- **%s: %s.** sluice wrote %s windows, %s %s; only in sluice %s, only in %s %s, "
          "values differing %s; largest avg relative difference %.1e; %s delayed flights in "
          "the windows." % (
              name, "EQUAL" if eq["equal"] else "NOT EQUAL", fmt_int(eq["sluice_windows"]), name,
              fmt_int(eq[peer + "_windows"]), eq["only_in_sluice"], name,
              eq["only_in_" + peer], eq["value_differences"], eq["max_avg_rel_diff"],
              fmt_int(eq["delayed_flights_in_windows"])))
    A("")
    A("sluice's summary: `late=%s rejected=%s out=%s`; binary `%s`." % (
        pe["sluice_summary"].get("late"), pe["sluice_summary"].get("rejected"),
        pe["sluice_summary"].get("out"), pe.get("sluice_bin")))
    A("")
    if "sluice" not in pe:
        return
    A("%d runs each, alternated (%s, then again), medians; ratio = median of the pairwise "
      "ratios within a round. *Wall* is the whole process (interpreter, runtime and JVM "
      "start-up included); *job* is sluice's `elapsed`, Pathway's `pw.run()` (after the "
      "inflate), Spark's `start()` → end of the query, Bytewax's wall (it has no separate "
      "job time); RSS is the peak of the **sum over the process tree**, sampled every 20 ms."
      % (pe["runs"], ", ".join(["sluice"] + pe["systems"])))
    A("")
    A("| system | setting | wall (s) | job (s) | records/s (wall) | peak RSS, tree (MiB) | wall ÷ sluice | RSS ÷ sluice |")
    A("|---|---|---:|---:|---:|---:|---:|---:|")
    for name in ["sluice"] + pe["systems"]:
        m = pe[name]["median"]
        r = pe["ratio_over_sluice"].get(name, {"wall_s": 1, "peak_rss_mib": 1})
        best = name in peers_best(pe).values()
        A("| %s | %s | %s | %s | %s | %s | %s | %s |" % (
            ("**%s**" % name) if best else name, pe["config"].get(name, "").replace("|", "/"),
            fmt(m["wall_s"], 2), fmt(m["job_s"], 2), fmt_int(m["records_per_s_wall"]),
            fmt(m["peak_rss_mib"], 0),
            ("**%s×**" % r["wall_s"]) if best else "%s×" % r["wall_s"],
            "%s×" % r["peak_rss_mib"]))
    A("")
    A("All runs, wall (s): " + "; ".join("%s %s" % (n, pe[n]["wall_s"])
                                        for n in ["sluice"] + pe["systems"]) + ".")
    infl = [x for n in pe["systems"] if n.startswith("pathway") for x in pe[n]["inflate_s"]]
    if infl:
        A("")
        A("Pathway's inflate (s, in its wall time): %s." % infl)
    A("")


# ------------------------------------------------------------------ summary

def summary(results):
    out = []
    s = results.get("spark")
    if s:
        eq = s["equality"]
        line = ("**sluice vs Spark Structured Streaming** (flights windows job, local[2]): "
                "outputs **%s** (%s windows each, %s differences)" % (
                    "equal" if eq["equal"] else "NOT equal", fmt_int(eq["sluice_windows"]),
                    eq["value_differences"] + eq["only_in_sluice"] + eq["only_in_spark"]))
        if "sluice" in s:
            r = s["ratio_spark_over_sluice"]
            line += ("; Spark takes **%s×** sluice's wall time (%s s vs %s s, JVM start "
                     "included), **%s×** its job time, and **%s×** its peak memory (%s MiB vs "
                     "%s MiB, process tree)." % (
                         r["wall_s"], fmt(s["spark"]["median"]["wall_s"], 1),
                         fmt(s["sluice"]["median"]["wall_s"], 2), r["job_s"], r["peak_rss_mib"],
                         fmt(s["spark"]["median"]["peak_rss_mib"], 0),
                         fmt(s["sluice"]["median"]["peak_rss_mib"], 0)))
        out.append(line)
    pe = results.get("peers")
    if pe and "sluice" in pe:
        parts = []
        for peer, best in peers_best(pe).items():
            parts.append("%s **%s×** (%s s; %s)" % (
                PEER_NAMES.get(peer, peer), pe["ratio_over_sluice"][best]["wall_s"],
                fmt(pe[best]["median"]["wall_s"], 2), best))
        out.append("**sluice vs Pathway and Bytewax** (flights windows job, one alternated run): "
                   "outputs **%s**; wall time ÷ sluice's (%s s): %s; load average %s → %s." % (
                       "equal" if all(e["equal"] for e in pe["equality"].values()) else "NOT equal",
                       fmt(pe["sluice"]["median"]["wall_s"], 2), ", ".join(parts),
                       pe["_meta"]["machine_before"]["loadavg"],
                       pe["_meta"]["machine_after"]["loadavg"]))
    f = results.get("flights")
    if f:
        out.append("**Flights job** (336,776 flights, 2 partitions): filter %s records/s, "
                   "filter + windows %s records/s (daemon's job time; %s / %s s wall), "
                   "peak RSS %s / %s MiB." % (
                       fmt_int(f["filter"]["median"]["records_per_s_job"]),
                       fmt_int(f["windows"]["median"]["records_per_s_job"]),
                       fmt(f["filter"]["median"]["wall_s"], 2), fmt(f["windows"]["median"]["wall_s"], 2),
                       fmt(f["filter"]["median"]["peak_rss_mib"], 0),
                       fmt(f["windows"]["median"]["peak_rss_mib"], 0)))
    w = results.get("wasm")
    if w:
        rows = [r for r in wasm_analysis(w) if r["batch"] == 4096]
        for r in rows:
            txt = ("**Wasm path, %s records, batch 4,096**: the guest's JSON work is **%s%%** "
                   "of the `flights_delay` component's time (%s ns/record, %s× the same code "
                   "native), the boundary (lowering + lifting + copies, measured with the "
                   "identity component) **%s%%** (%s ns/record); the component runs at "
                   "%s× native overall" % (
                       r["shape"], fmt(100 * r["guest_share"], 0), fmt(r["guest"], 0),
                       fmt(r["guest_over_native"], 2), fmt(100 * r["boundary_share"], 0),
                       fmt(r["boundary"], 0), fmt(1 / r["wasm_over_native"], 2)))
            if r.get("fd_noepoch"):
                txt += ", and without the deadline's epoch checks %s× faster" % fmt(
                    r["fd_wasm"] / r["fd_noepoch"], 2)
            if r.get("host_decode"):
                txt += "; the host's own decode of a record costs %s ns (%s× the boundary)" % (
                    fmt(r["host_decode"], 0), fmt(r["host_decode"] / max(r["boundary"], 1e-9), 1))
            out.append(txt + ".")
        rust = wasm_cell(w, "wasm flights_delay (rust)", "small", 4096)
        langs = []
        for lang in ("c", "python", "js"):
            v = wasm_cell(w, "wasm flights_delay (%s)" % lang, "small", 4096)
            if v and rust:
                langs.append("%s %s×" % ({"c": "C", "python": "Python", "js": "JavaScript"}[lang],
                                         fmt(v / rust, 3)))
        if langs:
            out.append("**Languages** (same logic, small records, batch 4,096, relative to the "
                       "Rust component): " + ", ".join(langs) + ".")
        one = wasm_cell(w, "wasm flights_delay (rust)", "small", 1)
        big = wasm_cell(w, "wasm flights_delay (rust)", "small", 4096)
        idone = wasm_cell(w, "wasm identity (rust)", "small", 1)
        if one and big and idone:
            out.append("**Batching**: the Rust `flights_delay` component does %s× more records/s "
                       "at batch 4,096 than at batch 1; one call of the identity component "
                       "with one record costs %s µs." % (fmt(big / one, 1), fmt(1e6 / idone, 2)))
    rl = results.get("reload")
    if rl:
        line = ("**Hot reload**: swap latency median %s ms (100 ms debounce included, stdin source); start-up "
                "with 2 Rust plugins %s ms cold vs %s ms from the compile cache (%s×)" % (
                    rl["swap_latency_ms"]["median"], rl["startup_ms"]["cold_median"],
                    rl["startup_ms"]["warm_median"], rl["startup_ms"]["cold_over_warm"]))
        sp = rl.get("startup_plugin_ms")
        if sp:
            line += ", with the 18 MB Python component %s s vs %s ms (%s×)" % (
                fmt(sp["cold_median"] / 1000, 1), sp["warm_median"], sp["cold_over_warm"])
        out.append(line + ".")
    ss = results.get("slowsink")
    if ss:
        out.append("**Slow sink** (read at %s MB/s): RSS %s–%s MiB over %d s, median %s MiB in "
                   "the first 10 s and %s MiB in the last 10 s." % (
                       fmt(ss["reader_bytes_per_s"] / 1e6, 1), ss["rss_min_mib_after_2s"],
                       ss["rss_max_mib"], ss["seconds"], ss["rss_median_first_10s"],
                       ss["rss_median_last_10s"]))
    lt = results.get("latency")
    if lt:
        parts = []
        for r in lt["runs"]:
            if r["source"] == "stdin" and r["rate"] in (10_000, 100_000):
                parts.append("%s/s @ %s: p50 %s / p99 %s ms" % (
                    fmt_int(r["rate"] / 1000) + "k", r["interval"], r["p50_ms"], r["p99_ms"]))
        fol = [r for r in lt["runs"] if r["source"] == "file follow"]
        line = "**Latency** (stdin source, identity plugin): " + "; ".join(parts)
        if fol:
            line += ("; from a followed file (woken by inotify) p50 %s ms at 10k/s for batch "
                     "intervals 1/10/100 ms" % "/".join(str(r["p50_ms"]) for r in fol))
        out.append(line + ".")
    return out


# ------------------------------------------------------------------ markdown

def write(results, out, md_path):
    global REL
    REL = os.path.relpath(out, os.path.dirname(os.path.abspath(md_path)))
    made = plots(results, out)
    L = []
    A = L.append
    A("# sluice benchmarks")
    A("")
    A("Measured by `bench/run.py` (one command; it makes `bench/.venv` with pyspark, "
      "pathway, bytewax, matplotlib and psutil from PyPI). Everything below is generated from "
      "[`%s/results.json`](%s/results.json) by `bench/report.py`; absolute numbers are "
      "**this machine's**, on 2 cores shared with other builds, so they are noisy: "
      "compare the ratios, which are taken within one run, with the implementations "
      "alternated (A B A B …) and medians over the runs." % (REL, REL))
    A("")
    A("```sh")
    A("cargo build --release -p sluice        # also builds the example plugins (runtime/build.rs)")
    A("python3 bench/run.py                   # everything (~15 min here); --quick: fewer runs")
    A("python3 bench/run.py --only spark      # one section: flights,spark,peers,wasm,reload,slowsink,latency")
    A("python3 bench/run.py --report-only     # rewrite this file and the plots from results.json")
    A("```")
    A("")
    A("`CARGO_TARGET_DIR` is honoured. Each section records the machine (cores, memory, "
      "load average before and after) beside its figures.")
    A("")
    A("## Summary")
    A("")
    for line in summary(results):
        A("- " + line)
    A("")

    # ---------------- flights
    f = results.get("flights")
    if f:
        A("## The flights job (336,776 flights, gzip NDJSON, `flights_delay` Wasm filter)")
        A("")
        A("Machine: " + machine_line(f["_meta"]))
        A("")
        A("`python3 bench/run.py --only flights` — the job of `examples/flights/delayed.toml` "
          "(filter, 2 partitions) and of `examples/flights/windows.toml` (filter + per-carrier "
          "1-hour tumbling windows, 10-minute watermark, count/avg/max), alternated, "
          "%d runs each, medians. *Job time* is the daemon's own `elapsed` (first line read to "
          "last line written); *wall* is the whole process (start-up, plugin load from the "
          "compile cache, exit); RSS is the peak of the process." % f["runs"])
        A("")
        A("| job | wall (s) | job time (s) | records/s (wall) | records/s (job) | peak RSS (MiB) | out |")
        A("|---|---:|---:|---:|---:|---:|---:|")
        for name in ("filter", "windows"):
            m = f[name]["median"]
            A("| %s | %s | %s | %s | %s | %s | %s |" % (
                name, fmt(m["wall_s"], 3), fmt(m["job_s"], 3), fmt_int(m["records_per_s_wall"]),
                fmt_int(m["records_per_s_job"]), fmt(m["peak_rss_mib"], 0),
                f[name]["summary"].get("out")))
        A("")
        A("Windows over filter (wall, pairwise median): **%s×**." % f["ratio_windows_over_filter_wall"])
        A("")

    # ---------------- spark
    s = results.get("spark")
    if s:
        eq = s["equality"]
        A("## sluice vs Apache Spark Structured Streaming (the flights windows job)")
        A("")
        A("Machine: " + machine_line(s["_meta"]))
        A("")
        A("`python3 bench/run.py --only spark` (or `python3 bench/spark/bench_spark.py "
          "--runs N`). The Spark job is [`bench/spark/flights_windows.py`]"
          "(bench/spark/flights_windows.py): PySpark %s, `local[2]`, Java 17, the same gzip "
          "NDJSON read as a file stream with an explicit schema, the `flights_delay` rules "
          "(a flight's fields present and typed; `dep_delay` null dropped; `dep_delay >= 15` "
          "kept), `window(event_time, 1 hour)` per carrier, `withWatermark(10 minutes)`, "
          "append mode, `count`, `avg(dep_delay)`, `max(dep_delay)`, written as JSON, "
          "`spark.sql.shuffle.partitions = 2` (as sluice's 2 partitions; Spark's default, 200, "
          "is sized for clusters and was not measured here), "
          "`Trigger.AvailableNow`." % "4.3.0")
        A("")
        A("Spark does not close open windows when its input ends (sluice does): two "
          "one-record *flush* files with event times in 2014 follow the flights "
          "(`maxFilesPerTrigger = 1`), so that the watermark passes every 2013 window; "
          "their own window (key `~flush`) is left out of the comparison.")
        A("")
        A("**Equality check (before any timing): %s.** sluice wrote %s windows, Spark %s; "
          "only in sluice: %s, only in Spark: %s, windows whose values differ: %s (count and "
          "max compared exactly, avg within 1e-9 relative; largest avg relative difference "
          "%.1e); %s delayed flights in the windows; sluice's summary: `late=%s rejected=%s`." % (
              "EQUAL" if eq["equal"] else "NOT EQUAL", fmt_int(eq["sluice_windows"]),
              fmt_int(eq["spark_windows"]), eq["only_in_sluice"], eq["only_in_spark"],
              eq["value_differences"], eq["max_avg_rel_diff"],
              fmt_int(eq["delayed_flights_in_windows"]),
              eq["sluice_summary"].get("late"), eq["sluice_summary"].get("rejected")))
        A("")
        if "sluice" in s:
            A("%d runs each, alternated (sluice, Spark, sluice, Spark, …), medians; ratio = "
              "median of the pairwise Spark/sluice ratios. *Wall* is the whole process "
              "(Spark: Python driver + JVM start-up and shutdown); *job* is sluice's `elapsed` "
              "and Spark's `start()` → end of the query; RSS is the peak of the **sum over "
              "the process tree** (Python driver + JVM for Spark), sampled every 20 ms." % s["runs"])
            A("")
            A("| | wall (s) | job (s) | records/s (wall) | records/s (job) | peak RSS, tree (MiB) |")
            A("|---|---:|---:|---:|---:|---:|")
            for name in ("sluice", "spark"):
                m = s[name]["median"]
                A("| %s | %s | %s | %s | %s | %s |" % (
                    "sluice" if name == "sluice" else "Spark", fmt(m["wall_s"], 2),
                    fmt(m["job_s"], 2), fmt_int(m["records_per_s_wall"]),
                    fmt_int(m["records_per_s_job"]), fmt(m["peak_rss_mib"], 0)))
            r = s["ratio_spark_over_sluice"]
            A("| **Spark / sluice** | **%s×** | **%s×** | | | **%s×** |" % (
                r["wall_s"], r["job_s"], r["peak_rss_mib"]))
            A("")
            A("All runs (s): sluice wall %s; Spark wall %s." % (s["sluice"]["wall_s"], s["spark"]["wall_s"]))
            A("")
            if "spark" in made:
                A("![sluice vs Spark](%s/%s)" % (REL, made["spark"]))
                A("")

    # ---------------- peers
    pe = results.get("peers")
    if pe:
        peers_section(pe, A)
        if "peers" in made:
            A("![sluice vs its peers](%s/%s)" % (REL, made["peers"]))
            A("")

    # ---------------- wasm
    w = results.get("wasm")
    if w:
        A("## Wasm vs native, per language and batch size")
        A("")
        A("Machine: " + machine_line(w["_meta"]))
        A("")
        A("`python3 bench/run.py --only wasm`, which runs `cargo bench -p sluice --bench "
          "wasm_cost` ([`runtime/benches/wasm_cost.rs`](runtime/benches/wasm_cost.rs)): a "
          "custom measurement, not criterion (criterion over every combination took too "
          "long; `cargo bench --bench plugins` is the criterion version for the Rust "
          "plugins). One `Instance::process` call per batch, as the daemon makes it "
          "(lowering the batch, the guest, lifting and checking the output), in a loop for "
          "%s ms per cell and round, %s rounds, the implementations in turn within each "
          "round, median of rounds; one core. *native* is the very same Rust code compiled "
          "into the host (`Processor::process` on an SDK `Batch`). The Python, JavaScript "
          "and C components implement the same `flights_delay` rules "
          "(`examples/plugins/*/flights_delay`, built by their `build.sh`). Records: real "
          "flights, as `small` (the seven fields `flights_delay` reads, ~125 bytes: no valid "
          "flight is shorter) and `1kb` (the whole flight padded to 1,024 bytes)." % (
              "60" if w["_meta"].get("quick") else "150", "1" if w["_meta"].get("quick") else "3"))
        A("")
        if w.get("languages_missing"):
            A("Left out (toolchain missing): %s." % ", ".join(w["languages_missing"]))
            A("")
        impls = []
        for c in w["cells"]:
            if c["batch"] and c["impl"] not in impls:
                impls.append(c["impl"])
        batches = sorted({c["batch"] for c in w["cells"] if c["batch"]})
        for shape in ("small", "1kb"):
            A("Records/s, `%s` records:" % shape)
            A("")
            A("| implementation | " + " | ".join(str(b) for b in batches) + " |")
            A("|---|" + "---:|" * len(batches))
            for impl in impls:
                A("| %s | %s |" % (impl, " | ".join(
                    fmt_int(wasm_cell(w, impl, shape, b)) if wasm_cell(w, impl, shape, b) else "–"
                    for b in batches)))
            A("")
        if "wasm" in made:
            A("![Wasm vs native](%s/%s)" % (REL, made["wasm"]))
            A("")
        rows = wasm_analysis(w)
        if rows:
            A("### Where the time of a Wasm stage goes")
            A("")
            A("Per record, in ns (from the table above). *Boundary* = identity component "
              "− identity native: crossing into the guest, lowering the batch's columns, the "
              "guest's copy loop and lifting the output (an upper bound for "
              "`flights_delay`, which returns ~22% of its input, identity all of it). "
              "*Guest JSON* = flights_delay component − identity component: parsing each "
              "record and writing the projection, in the guest.")
            A("")
            A("*Host decode* is the daemon's own per-record work at the source (a JSON "
              "pass to read the key and event time), measured in the same run: it is paid "
              "once per record whatever the plugins do.")
            A("")
            A("| records | batch | identity native | identity Wasm | boundary | flights_delay native | flights_delay Wasm | guest JSON | guest JSON share | boundary share | Wasm / native | host decode |")
            A("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
            for r in rows:
                A("| %s | %s | %s | %s | %s | %s | %s | %s | %s%% | %s%% | %s× | %s |" % (
                    r["shape"], r["batch"], fmt(r["id_native"], 0), fmt(r["id_wasm"], 0),
                    fmt(r["boundary"], 0), fmt(r["fd_native"], 0), fmt(r["fd_wasm"], 0),
                    fmt(r["guest"], 0), fmt(100 * r["guest_share"], 0),
                    fmt(100 * r["boundary_share"], 0), fmt(r["wasm_over_native"], 2),
                    fmt(r["host_decode"], 0)))
            A("")
        A(WASM_NOTES_PLACEHOLDER)
        A("")

    # ---------------- reload
    rl = results.get("reload")
    if rl:
        A("## Plugin swap and cold start")
        A("")
        A("Machine: " + machine_line(rl["_meta"]))
        A("")
        A("`python3 bench/run.py --only reload` (runs `bench/reload.py --plugin "
          "$CARGO_TARGET_DIR/lang-plugins/python/flights_delay.wasm`). Swap latency: from "
          "the rename of a new `tag.wasm` into the plugins folder to the first output "
          "record of the new version, while a record arrives every 2 ms on the daemon's "
          "stdin (the 100 ms debounce included); and the same with the records appended "
          "to a followed file instead, as the first version of reload.py did (before "
          "followed files were woken by inotify, their 100 ms poll doubled the figure). Start-up: to the `pipeline started` log line, cold (compile cache "
          "emptied) and warm, interleaved.")
        A("")
        sl = rl["swap_latency_ms"]
        st = rl["startup_ms"]
        A("| what | median (ms) | min–max / runs |")
        A("|---|---:|---|")
        A("| swap latency (Rust `tag` plugin, %d swaps) | %s | %s–%s |" % (
            len(sl["all"]), sl["median"], sl["min"], sl["max"]))
        sf = rl.get("swap_latency_followed_file_ms")
        if sf:
            A("| swap latency, records from a followed file | %s | %s |" % (
                sf["median"], sf["all"]))
        A("| start-up, 2 Rust plugins, cold cache | %s | %s |" % (st["cold_median"], st["cold"]))
        A("| start-up, 2 Rust plugins, warm cache | %s | %s |" % (st["warm_median"], st["warm"]))
        A("| cold / warm | %s× | |" % st["cold_over_warm"])
        sp = rl.get("startup_plugin_ms")
        if sp:
            A("| start-up, Python component (%s MB), cold cache | %s | %s |" % (
                fmt(sp["bytes"] / 1e6, 1), sp["cold_median"], sp["cold"]))
            A("| start-up, Python component, warm cache | %s | %s |" % (sp["warm_median"], sp["warm"]))
            A("| cold / warm | %s× | |" % sp["cold_over_warm"])
        A("")

    # ---------------- slow sink
    ss = results.get("slowsink")
    if ss:
        A("## Memory under a slow sink")
        A("")
        A("Machine: " + machine_line(ss["_meta"]))
        A("")
        A("`python3 bench/run.py --only slowsink`: the whole flights file (145 MB of "
          "NDJSON) through the identity plugin (2 partitions, batches of 4,096) to a "
          "`stdout` sink whose reader takes %s MB/s, for %d s; the daemon's RSS every "
          "0.5 s. Backpressure (bounded channels) should keep it flat while the source "
          "is held back." % (fmt(ss["reader_bytes_per_s"] / 1e6, 1), ss["seconds"]))
        A("")
        A("| RSS min (after 2 s) | RSS max | median, first 10 s | median, last 10 s | MiB delivered | input finished before the end |")
        A("|---:|---:|---:|---:|---:|---|")
        A("| %s | %s | %s | %s | %s | %s |" % (
            ss["rss_min_mib_after_2s"], ss["rss_max_mib"], ss["rss_median_first_10s"],
            ss["rss_median_last_10s"], ss["mib_delivered"], "yes" if ss["finished_early"] else "no"))
        A("")
        if "slowsink" in made:
            A("![RSS under a slow sink](%s/%s)" % (REL, made["slowsink"]))
            A("")

    # ---------------- latency
    lt = results.get("latency")
    if lt:
        A("## End-to-end latency")
        A("")
        A("Machine: " + machine_line(lt["_meta"]))
        A("")
        A("`python3 bench/run.py --only latency`: a generator (a separate Python process) "
          "writes 100-byte JSON records, each stamped with its creation time "
          "(`time.time_ns()`), at a fixed rate, %s s per run; the pipeline is 1 partition, "
          "the identity plugin, `batch.interval` as given (max_records 16,384) and a "
          "`stdout` sink read back by the harness, latency = read time − stamp; the first "
          "0.5 s left out. Source `stdin`: the generator writes into the daemon's stdin. "
          "Source `file follow`: into a file the daemon follows (`follow = true`), which "
          "is woken by inotify when it grows. *achieved* is the rate the generator "
          "managed." % lt["seconds_per_run"])
        A("")
        A("| source | rate (rec/s) | batch interval | achieved (rec/s) | received / sent | p50 (ms) | p99 (ms) | p999 (ms) | max (ms) |")
        A("|---|---:|---|---:|---|---:|---:|---:|---:|")
        for r in lt["runs"]:
            A("| %s | %s | %s | %s | %s / %s | %s | %s | %s | %s |" % (
                r["source"], fmt_int(r["rate"]), r["interval"], fmt_int(r["achieved_rate"]),
                fmt_int(r["received"]), fmt_int(r["sent"]), r["p50_ms"], r["p99_ms"],
                r["p999_ms"], r["max_ms"]))
        A("")
        if "latency" in made:
            A("![latency](%s/%s)" % (REL, made["latency"]))
            A("")

    text = "\n".join(L) + "\n"
    notes_path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "NOTES.md")
    notes = open(notes_path).read().strip() if os.path.exists(notes_path) else ""
    text = text.replace(WASM_NOTES_PLACEHOLDER + "\n", "")
    if notes:
        text += "\n" + notes + "\n"
    text += kept_sections(md_path, text)
    with open(md_path, "w") as fh:
        fh.write(text)


def kept_sections(md_path, text):
    """The `## ` sections of the BENCHMARKS.md being replaced that neither the
    generated report nor bench/NOTES.md has (hand-written there), so that a run
    never drops them; each is named on stderr, to be moved into NOTES.md."""
    if not os.path.exists(md_path):
        return ""
    have = {line for line in text.splitlines() if line.startswith("## ")}
    old = open(md_path).read().split("\n## ")
    kept = []
    for part in old[1:]:
        heading = "## " + part.splitlines()[0]
        if heading not in have:
            print("report: kept from the old %s (not generated, not in bench/NOTES.md): %s"
                  % (os.path.basename(md_path), heading), file=sys.stderr)
            kept.append("## " + part.rstrip("\n") + "\n")
    return "".join("\n" + k for k in kept)


WASM_NOTES_PLACEHOLDER = "<!-- wasm notes -->"
