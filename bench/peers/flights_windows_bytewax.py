#!/usr/bin/env python3
"""The flights windows job (examples/flights/windows.toml) as a Bytewax dataflow.

Same input (the gzip NDJSON flights file, inflated by Python's gzip module in the
source, lines read in batches of 1,000 as Bytewax's FileSource does), same filter as
the flights_delay plugin (plugins/flights-delay/src/lib.rs: a flight is carrier,
flight (an integer), origin, dest, event_time present and typed; dep_delay null =
cancelled, dropped; kept when dep_delay >= min_delay = 15; a record of the wrong
shape is rejected, i.e. not in the windows), same 1-hour tumbling windows per
carrier on event_time (aligned to the epoch), same 10-minute watermark (EventClock:
the largest event time seen minus 10 minutes; `now_getter` is a constant so that
the watermark moves with event time only, as sluice's does, not with the system
clock), each window emitted once when it closes (and at the end of the input),
same aggregates (count as delayed, avg(dep_delay) as avg_dep_delay, max(dep_delay)
as max_dep_delay). Output: JSON lines {window_start, window_end, key, delayed,
avg_dep_delay, max_dep_delay}, as sluice writes them.

Run as a module with bytewax.run:
    FLIGHTS_IN=in.gz FLIGHTS_OUT=out.ndjson python -m bytewax.run \
        bench/peers/flights_windows_bytewax.py:flow [-w WORKERS]
"""

import gzip
import json
import os
from datetime import datetime, timedelta, timezone
from pathlib import Path

import bytewax.operators as op
import bytewax.operators.windowing as win
from bytewax.connectors.files import FileSink
from bytewax.dataflow import Dataflow
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from bytewax.operators.windowing import EventClock, TumblingWindower

MIN_DELAY = 15.0
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
HOUR = timedelta(hours=1)
BATCH = 1000


class _GzipLines(StatefulSourcePartition):
    def __init__(self, path, resume_state):
        self._f = gzip.open(path, "rt", encoding="utf-8")
        self._n = 0
        if resume_state:
            for _ in range(resume_state):
                self._f.readline()
            self._n = resume_state

    def next_batch(self):
        lines = []
        for line in self._f:
            lines.append(line)
            if len(lines) >= BATCH:
                break
        if not lines:
            raise StopIteration()
        self._n += len(lines)
        return lines

    def snapshot(self):
        return self._n

    def close(self):
        self._f.close()


class GzipLinesSource(FixedPartitionedSource):
    """The lines of one gzip file: one partition (the file is the unit of
    parallelism, as in Bytewax's FileSource)."""

    def __init__(self, path):
        self._path = path

    def list_parts(self):
        return ["flights"]

    def build_part(self, step_id, for_part, resume_state):
        return _GzipLines(self._path, resume_state)


def parse(line):
    """The plugin's rules; None drops the record (cancelled, under the threshold, or
    not a flight: rejected)."""
    try:
        r = json.loads(line)
    except ValueError:
        return None
    if not isinstance(r, dict):
        return None
    carrier, flight, origin, dest, ev = (r.get("carrier"), r.get("flight"), r.get("origin"),
                                         r.get("dest"), r.get("event_time"))
    if not (isinstance(carrier, str) and isinstance(flight, int) and not isinstance(flight, bool)
            and isinstance(origin, str) and isinstance(dest, str) and isinstance(ev, str)):
        return None
    d = r.get("dep_delay")
    if d is None or isinstance(d, bool) or not isinstance(d, (int, float)):
        return None
    if d < MIN_DELAY:
        return None
    # RFC 3339 with "Z": UTC.
    ts = datetime.fromisoformat(ev.replace("Z", "+00:00"))
    return (carrier, (ts, d))


def fmt(t):
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + "%03dZ" % (t.microsecond // 1000)


def new_acc():
    return [0, 0.0, None]  # count, sum, max


def fold(acc, item):
    d = item[1]
    acc[0] += 1
    acc[1] += d
    if acc[2] is None or d > acc[2]:
        acc[2] = d
    return acc


def merge(a, b):
    return [a[0] + b[0], a[1] + b[1],
            b[2] if a[2] is None or (b[2] is not None and b[2] > a[2]) else a[2]]


_FIXED_NOW = datetime(2000, 1, 1, tzinfo=timezone.utc)


def build():
    flow = Dataflow("flights_windows")
    lines = op.input("in", flow, GzipLinesSource(os.environ["FLIGHTS_IN"]))
    keyed = op.filter_map("parse_filter", lines, parse)
    clock = EventClock(ts_getter=lambda v: v[0], wait_for_system_duration=timedelta(minutes=10),
                       now_getter=lambda: _FIXED_NOW, to_system_utc=lambda _t: None)
    windower = TumblingWindower(length=HOUR, align_to=EPOCH)
    out = win.fold_window("hourly", keyed, clock, windower, new_acc, fold, merge)

    def row(key_wid_acc):
        key, (wid, acc) = key_wid_acc
        start = EPOCH + wid * HOUR
        return (key, json.dumps({
            "window_start": fmt(start), "window_end": fmt(start + HOUR), "key": key,
            "delayed": acc[0], "avg_dep_delay": acc[1] / acc[0], "max_dep_delay": acc[2]},
            separators=(",", ":")))

    op.output("out", op.map("row", out.down, row), FileSink(Path(os.environ["FLIGHTS_OUT"])))
    return flow


flow = build()
