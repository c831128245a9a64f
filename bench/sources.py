#!/usr/bin/env python3
"""Source throughput: the same records through the `file` source and the `tcp`
source, and the `generator` source against the `file` source on the
generator's records, into a blackhole sink, in one run.

    cargo build --release -p sluice
    python3 bench/sources.py [--runs 3] [--clients 1]

The records are the bundled flights (336,776 JSON lines, 145 MB), decoded
alike (key = /carrier, timestamp = /event_time), 2 partitions, no processor,
a blackhole sink: what is measured is the source (read, split, decode, route)
and the hand-off to the workers.

- file: the plain (decompressed) flights file; records/s = records / the
  pipeline's elapsed time (its summary line).
- tcp: the same bytes sent by `--clients` connections (the file split into
  that many parts at line ends), from memory; records/s = records / (from the
  first connect until the admin API counts every record written).

- generator: `--generated` records (default 1,000,000) from a flights-like
  template (`carrier`, RFC 3339 `event_time`, random delays), decoded alike;
  records/s = records / the pipeline's elapsed time. The same records, written
  once to a file by sluice itself (generator → file sink), are read by the
  file source and sent over TCP in the same runs.

Runs alternate (file, tcp, then file, tcp, generator on the generated
records, …); the median is printed. Uses target/release/sluice, or --sluice
PATH. No Python packages needed.
"""

import argparse
import gzip
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

HEAD = """
[daemon]
plugins_dir = "{plugins}"
state_dir = "state"
admin = "{admin}"

[sinks.out]
type = "blackhole"

[pipelines.p]
source = "in"
partitions = 2
batch = {{ max_records = 4096, max_bytes = "4MiB", interval = "200ms" }}
sinks = ["out"]
"""

FILE_SOURCE = """
[sources.in]
type = "file"
path = "{path}"
key = "/carrier"
timestamp = "/event_time"
"""

TCP_SOURCE = """
[sources.in]
type = "tcp"
address = "127.0.0.1:0"
key = "/carrier"
timestamp = "/event_time"
"""

GENERATOR_TEMPLATE = ('{"id":{{n}},"event_time":"{{rfc3339}}","carrier":"C{{random 1 20}}",'
                      '"dep_delay":{{random -30 300}},"note":"a synthetic flight"}')

GENERATOR_SOURCE = """
[sources.in]
type = "generator"
template = '%s'
count = COUNT
start = "2013-01-01T00:00:00Z"
seed = 1
key = "/carrier"
timestamp = "/event_time"
""" % GENERATOR_TEMPLATE


def generator_run(sluice, count, to_file=None):
    """The generator source into the blackhole sink, or into the file
    `to_file` (to write the records the other sources read)."""
    d = common.fresh_dir(os.path.join(common.WORK, "sources-generator"))
    # No `rate`: as fast as the pipeline takes them.
    config = (HEAD.format(plugins=common.PLUGINS, admin="off")
              + GENERATOR_SOURCE.replace("COUNT", str(count)))
    if to_file:
        config = config.replace('type = "blackhole"', 'type = "file"\npath = "%s"' % to_file)
    with open(os.path.join(d, "sluice.toml"), "w") as f:
        f.write(config)
    out = subprocess.run([sluice, "run", "--config", "sluice.toml"], cwd=d,
                         capture_output=True, text=True, env=dict(os.environ, RUST_LOG="warn"))
    s = common.sluice_summary(out.stderr)
    if out.returncode != 0 or not s:
        sys.exit("generator run failed:\n" + out.stderr)
    return int(s["out"]), float(s["elapsed"].rstrip("s"))


def file_run(sluice, plain):
    d = common.fresh_dir(os.path.join(common.WORK, "sources-file"))
    with open(os.path.join(d, "sluice.toml"), "w") as f:
        f.write(HEAD.format(plugins=common.PLUGINS, admin="off") + FILE_SOURCE.format(path=plain))
    out = subprocess.run([sluice, "run", "--config", "sluice.toml"], cwd=d,
                         capture_output=True, text=True, env=dict(os.environ, RUST_LOG="warn"))
    s = common.sluice_summary(out.stderr)
    if out.returncode != 0 or not s:
        sys.exit("file run failed:\n" + out.stderr)
    n, secs = int(s["in"]), float(s["elapsed"].rstrip("s"))
    return n, secs


def tcp_run(sluice, parts, n_records):
    d = common.fresh_dir(os.path.join(common.WORK, "sources-tcp"))
    with open(os.path.join(d, "sluice.toml"), "w") as f:
        f.write(HEAD.format(plugins=common.PLUGINS, admin="127.0.0.1:0") + TCP_SOURCE)
    proc = subprocess.Popen([sluice, "run", "--config", "sluice.toml"], cwd=d,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env=dict(os.environ, RUST_LOG="info"))
    admin = address = None
    for raw in proc.stderr:
        line = raw.decode(errors="replace")
        m = re.search(r"admin API listening on (\S+)", line)
        if m:
            admin = m.group(1)
        m = re.search(r"listening on tcp (\S+)", line)
        if m:
            host, port = m.group(1).rsplit(":", 1)
            address = (host, int(port))
        if admin and address:
            break
    threading.Thread(target=lambda: proc.stderr.read(), daemon=True).start()

    def out_count():
        with urllib.request.urlopen("http://%s/pipelines" % admin) as r:
            return next(p for p in json.load(r) if p["pipeline"] == "p")["records_out"]

    def send(part):
        s = socket.create_connection(address)
        s.sendall(part)
        s.close()

    t0 = time.monotonic()
    threads = [threading.Thread(target=send, args=(p,)) for p in parts]
    for t in threads:
        t.start()
    while out_count() < n_records:
        time.sleep(0.005)
    secs = time.monotonic() - t0
    for t in threads:
        t.join()
    proc.terminate()
    proc.wait()
    return n_records, secs


def split_lines(data, k):
    """`data` cut into `k` parts at line ends."""
    parts, start = [], 0
    for i in range(1, k + 1):
        end = len(data) if i == k else data.index(b"\n", len(data) * i // k) + 1
        parts.append(data[start:end])
        start = end
    return parts


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--clients", type=int, default=1)
    ap.add_argument("--sluice", default=common.SLUICE)
    ap.add_argument("--generated", type=int, default=1_000_000,
                    help="records of the generator rows (0: leave them out)")
    args = ap.parse_args()
    args.sluice = os.path.abspath(args.sluice)
    if not os.path.exists(args.sluice):
        sys.exit("build first: cargo build --release -p sluice (or pass --sluice)")
    os.makedirs(common.WORK, exist_ok=True)
    plain = os.path.join(common.WORK, "flights-2013.ndjson")
    with gzip.open(common.FLIGHTS, "rb") as f:
        data = f.read()
    with open(plain, "wb") as f:
        f.write(data)
    n = data.count(b"\n")
    parts = split_lines(data, args.clients)
    print("sluice: %s" % args.sluice)
    print("machine: %s" % common.machine())
    print("records: %d (%.0f MB), tcp clients: %d" % (n, len(data) / 1e6, args.clients))
    g = args.generated
    if g:
        generated = os.path.join(common.WORK, "generated.ndjson")
        if os.path.exists(generated):
            os.remove(generated)
        got, _ = generator_run(args.sluice, g, to_file=generated)
        assert got == g, (got, g)
        with open(generated, "rb") as f:
            gen_data = f.read()
        gen_parts = split_lines(gen_data, args.clients)
        print("generated records: %d (%.0f MB)" % (g, len(gen_data) / 1e6))
    rates = {"file": [], "tcp": [], "generator": [], "file (generated)": [],
             "tcp (generated)": []}
    for _ in range(args.runs):
        got, secs = file_run(args.sluice, plain)
        assert got == n, (got, n)
        rates["file"].append(n / secs)
        got, secs = tcp_run(args.sluice, parts, n)
        rates["tcp"].append(n / secs)
        line = "run: file %.0f records/s, tcp %.0f records/s" % (
            rates["file"][-1], rates["tcp"][-1])
        if g:
            got, secs = file_run(args.sluice, generated)
            assert got == g, (got, g)
            rates["file (generated)"].append(g / secs)
            got, secs = tcp_run(args.sluice, gen_parts, g)
            rates["tcp (generated)"].append(g / secs)
            got, secs = generator_run(args.sluice, g)
            assert got == g, (got, g)
            rates["generator"].append(g / secs)
            line += "; generated records: file %.0f, tcp %.0f, generator %.0f records/s" % (
                rates["file (generated)"][-1], rates["tcp (generated)"][-1],
                rates["generator"][-1])
        print(line, flush=True)
    f, t = common.med(rates["file"]), common.med(rates["tcp"])
    print("median of %d: file %.0f records/s, tcp %.0f records/s (tcp/file %.2f)"
          % (args.runs, f, t, t / f))
    if g:
        f, t, gen = (common.med(rates[k]) for k in
                     ("file (generated)", "tcp (generated)", "generator"))
        print("median of %d, generated records: file %.0f records/s, tcp %.0f records/s "
              "(tcp/file %.2f), generator %.0f records/s (generator/file %.2f)"
              % (args.runs, f, t, t / f, gen, gen / f))


if __name__ == "__main__":
    main()
