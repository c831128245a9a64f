#!/usr/bin/env python3
"""TCP source backpressure: with the sink slowed to a crawl, the clients are
slowed too and the daemon's memory stays bounded.

    cargo build --release -p sluice
    python3 bench/tcp_backpressure.py [--seconds 20] [--rate 262144] [--clients 3]

A daemon reads a `tcp` source (port 0, found in its log) into a stdout sink;
its stdout is a pipe this script reads at `--rate` bytes/s (the crawl).
`--clients` connections send ~100-byte JSON lines as fast as the socket takes
them for `--seconds`. Then the same with stdout read as fast as it comes (the
baseline). For each: the clients' throughput (lines the kernel accepted, per
second), the lines the sink delivered, the same two rates over the run's second half
(once the buffers on the way are full, the clients go at the sink's pace), the
lines in flight at the end (sent − delivered: mostly the kernel's socket
buffers, then the partition queues and batches), and the daemon's peak RSS
(VmHWM from /proc/PID/status) with its RSS at 2 s and at the end (VmRSS).

No Python packages needed; Linux only (/proc). Uses target/release/sluice, or
--sluice PATH (a debug build works too: its figures are a debug build's).
"""

import argparse
import os
import re
import socket
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

TOML = """
[daemon]
plugins_dir = "{plugins}"
state_dir = "state"
admin = "off"

[sources.in]
type = "tcp"
address = "127.0.0.1:0"
max_connections = 64

[sinks.out]
type = "stdout"

[pipelines.p]
source = "in"
partitions = 2
batch = {{ max_records = 1024, interval = "50ms" }}
queue_records = 8192
sinks = ["out"]
"""

LISTENING = re.compile(r"listening on tcp (\S+)")


def proc_status(pid, field):
    """A `kB` field of /proc/PID/status (VmHWM, VmRSS), in MiB."""
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def run(sluice, seconds, rate, clients):
    """One run: `rate` bytes/s read from the sink's pipe (None: as fast as it
    comes). Returns the figures."""
    d = common.fresh_dir(os.path.join(common.WORK, "tcp-backpressure"))
    with open(os.path.join(d, "sluice.toml"), "w") as f:
        f.write(TOML.format(plugins=common.PLUGINS))
    proc = subprocess.Popen([sluice, "run", "--config", "sluice.toml"], cwd=d,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=dict(os.environ, RUST_LOG="info"))
    address = None
    for raw in proc.stderr:
        m = LISTENING.search(raw.decode(errors="replace"))
        if m:
            host, port = m.group(1).rsplit(":", 1)
            address = (host, int(port))
            break
    if address is None:
        sys.exit("the daemon did not say where it listens")
    threading.Thread(target=lambda: proc.stderr.read(), daemon=True).start()

    delivered = [0]

    def reader():
        fd = proc.stdout.fileno()
        t0 = time.monotonic()
        got = 0
        while True:
            chunk = os.read(fd, 65536)
            if not chunk:
                return
            got += len(chunk)
            delivered[0] += chunk.count(b"\n")
            if rate:
                ahead = got / rate - (time.monotonic() - t0)
                if ahead > 0:
                    time.sleep(ahead)

    threading.Thread(target=reader, daemon=True).start()

    stop = threading.Event()
    sent = [0] * clients        # lines
    sent_bytes = [0] * clients

    def client(i):
        s = socket.create_connection(address)
        pad = "x" * 80
        n = i * 10**9
        try:
            while not stop.is_set():
                # 64 lines per send; sendall returns once the kernel took them
                # all, and blocks while the daemon does not read (backpressure).
                block = "".join('{"n":%d,"pad":"%s"}\n' % (n + k, pad)
                                for k in range(64)).encode()
                s.sendall(block)
                n += 64
                sent[i] += 64
                sent_bytes[i] += len(block)
        except OSError:
            pass  # the daemon was killed while this send was blocked
        s.close()

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    rss_2s = half = None
    while time.monotonic() - t0 < seconds:
        time.sleep(0.25)
        if rss_2s is None and time.monotonic() - t0 >= 2:
            rss_2s = proc_status(proc.pid, "VmRSS")
        if half is None and time.monotonic() - t0 >= seconds / 2:
            # The second half: past the start, when the buffers on the way
            # (socket buffers, queues) filled at the clients' full speed.
            half = (time.monotonic(), sum(sent), delivered[0])
    stop.set()
    elapsed = time.monotonic() - t0
    total_sent, total_bytes = sum(sent), sum(sent_bytes)
    delivered_at_end = delivered[0]
    peak = proc_status(proc.pid, "VmHWM")
    rss_end = proc_status(proc.pid, "VmRSS")
    proc.kill()
    proc.wait()
    for t in threads:
        t.join(timeout=5)
    return {
        "sink_read_rate": "%d B/s" % rate if rate else "unthrottled",
        "seconds": round(elapsed, 1),
        "client_lines_per_s": round(total_sent / elapsed),
        "client_MB_per_s": round(total_bytes / elapsed / 1e6, 2),
        "client_lines_per_s_2nd_half": round((total_sent - half[1]) / (t0 + elapsed - half[0])),
        "sink_lines_per_s_2nd_half": round((delivered_at_end - half[2]) / (t0 + elapsed - half[0])),
        "lines_sent": total_sent,
        "lines_delivered": delivered_at_end,
        "in_flight": total_sent - delivered_at_end,
        "peak_rss_mib": round(peak, 1),
        "rss_at_2s_mib": round(rss_2s or float("nan"), 1),
        "rss_at_end_mib": round(rss_end, 1),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--rate", type=int, default=256 * 1024, help="sink read rate, bytes/s")
    ap.add_argument("--clients", type=int, default=3)
    ap.add_argument("--sluice", default=common.SLUICE)
    args = ap.parse_args()
    args.sluice = os.path.abspath(args.sluice)
    if not os.path.exists(args.sluice):
        sys.exit("build first: cargo build --release -p sluice (or pass --sluice)")
    print("sluice: %s" % args.sluice)
    print("machine: %s" % common.machine())
    for rate in (args.rate, None):
        r = run(args.sluice, args.seconds, rate, args.clients)
        print(" ".join("%s=%s" % kv for kv in r.items()), flush=True)


if __name__ == "__main__":
    main()
