#!/usr/bin/env python3
"""The flights windows job (examples/flights/windows.toml) in Pathway.

Same input: the gzip NDJSON flights file. Pathway's file readers do not inflate
gzip (they read the compressed bytes as text: parse errors, no rows) nor read a
pipe such as /dev/stdin in static mode, so this script first inflates the file
with Python's gzip module (zlib) into SCRATCH/flights.ndjson, inside the timed
process (its time is printed as inflate_s), then Pathway reads that. Same filter as the flights_delay plugin (plugins/flights-delay/src/lib.rs:
carrier, flight, origin, dest, event_time present; dep_delay null = cancelled,
dropped; kept when dep_delay >= min_delay = 15), same 1-hour tumbling windows per
carrier on event_time (aligned to the epoch), same 10-minute watermark with each
window written once, when the watermark passes its end
(`exactly_once_behavior(shift=10 min)`: Pathway's append mode; later records of a
closed window are ignored), same aggregates (count as delayed, avg(dep_delay) as
avg_dep_delay, max(dep_delay) as max_dep_delay). Output: JSON lines {window_start,
window_end, key, delayed, avg_dep_delay, max_dep_delay} (plus Pathway's own `time`
and `diff` columns), as sluice writes them.

The file is read with mode="static": Pathway ingests it and stops at its end, as
sluice does with a file source (mode="streaming" would watch the file forever).
Threads: PATHWAY_THREADS (the bench sets 2, as sluice's partitions = 2).

Usage: flights_windows_pathway.py INPUT.gz OUTPUT SCRATCH_DIR
Prints one JSON line to stdout: {"inflate_s": …, "query_s": seconds of pw.run()}.
"""

import datetime
import gzip
import json
import os
import shutil
import sys
import time

import pathway as pw

MIN_DELAY = 15.0


class Flight(pw.Schema):
    carrier: str | None
    flight: int | None
    origin: str | None
    dest: str | None
    dep_delay: float | None
    arr_delay: float | None
    event_time: str | None


def main():
    input_gz, output_path, scratch = sys.argv[1:4]
    t0 = time.monotonic()
    input_path = os.path.join(scratch, "flights.ndjson")
    with gzip.open(input_gz, "rb") as src, open(input_path, "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
    inflate_s = time.monotonic() - t0
    flights = pw.io.jsonlines.read(input_path, schema=Flight, mode="static")
    # The plugin's rules: a record of the wrong shape is rejected (dead-letter: not
    # in the windows), a cancelled flight (dep_delay null) dropped, then the threshold.
    delayed = flights.filter(
        pw.this.carrier.is_not_none() & pw.this.flight.is_not_none()
        & pw.this.origin.is_not_none() & pw.this.dest.is_not_none()
        & pw.this.event_time.is_not_none() & pw.this.dep_delay.is_not_none()
    )
    delayed = delayed.filter(pw.unwrap(pw.this.dep_delay) >= MIN_DELAY).select(
        carrier=pw.unwrap(pw.this.carrier),
        dep_delay=pw.unwrap(pw.this.dep_delay),
        # RFC 3339 with milliseconds and "Z", as in the file: UTC.
        ts=pw.unwrap(pw.this.event_time).dt.strptime("%Y-%m-%dT%H:%M:%S.%fZ"),
    )
    windows = delayed.windowby(
        pw.this.ts,
        window=pw.temporal.tumbling(duration=datetime.timedelta(hours=1)),
        instance=pw.this.carrier,
        behavior=pw.temporal.exactly_once_behavior(shift=datetime.timedelta(minutes=10)),
    ).reduce(
        window_start=pw.this._pw_window_start.dt.strftime("%Y-%m-%dT%H:%M:%S.%3fZ"),
        window_end=pw.this._pw_window_end.dt.strftime("%Y-%m-%dT%H:%M:%S.%3fZ"),
        key=pw.this._pw_instance,
        delayed=pw.reducers.count(),
        avg_dep_delay=pw.reducers.avg(pw.this.dep_delay),
        max_dep_delay=pw.reducers.max(pw.this.dep_delay),
    )
    pw.io.jsonlines.write(windows, output_path)
    t0 = time.monotonic()
    pw.run(monitoring_level=pw.MonitoringLevel.NONE)
    query_s = time.monotonic() - t0
    os.remove(input_path)
    print(json.dumps({"inflate_s": inflate_s, "query_s": query_s}), flush=True)


if __name__ == "__main__":
    main()
