#!/usr/bin/env python3
"""Source throughput: the same records through the `file` source and the `tcp`
source, into a blackhole sink, in one run.

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

Runs alternate (file, tcp, file, tcp…); the median is printed. Uses
target/release/sluice, or --sluice PATH. No Python packages needed.
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
    rates = {"file": [], "tcp": []}
    for _ in range(args.runs):
        got, secs = file_run(args.sluice, plain)
        assert got == n, (got, n)
        rates["file"].append(n / secs)
        got, secs = tcp_run(args.sluice, parts, n)
        rates["tcp"].append(n / secs)
        print("run: file %.0f records/s, tcp %.0f records/s"
              % (rates["file"][-1], rates["tcp"][-1]), flush=True)
    f, t = common.med(rates["file"]), common.med(rates["tcp"])
    print("median of %d: file %.0f records/s, tcp %.0f records/s (tcp/file %.2f)"
          % (args.runs, f, t, t / f))


if __name__ == "__main__":
    main()
