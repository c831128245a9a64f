#!/usr/bin/env python3
"""Writes to standard output the bundled flights with every 10th one repeated
5 minutes later (a retry of the same flight record): its `event_time` 5
minutes on, placed where that time falls in the event-time sorted file.
tests/all/state.rs makes the same input.

    python3 examples/dedup/make_input.py | sluice run --config examples/dedup/sluice.toml
    python3 examples/dedup/make_input.py > flights-with-duplicates.ndjson
"""

import datetime
import gzip
import json
import pathlib
import sys

HERE = pathlib.Path(__file__).resolve().parent
SOURCE = HERE / "../data/flights-2013.ndjson.gz"
LATER = datetime.timedelta(minutes=5)


def event_time(record: dict) -> datetime.datetime:
    return datetime.datetime.fromisoformat(record["event_time"].replace("Z", "+00:00"))


def repeat(line: str) -> str:
    record = json.loads(line)
    t = event_time(record)
    record["event_time"] = (t + LATER).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    record["event_time_ms"] += int(LATER.total_seconds() * 1000)
    return json.dumps(record, separators=(",", ":"))


def main() -> None:
    out = sys.stdout
    pending: list[tuple[datetime.datetime, str]] = []
    with gzip.open(SOURCE, "rt") as src:
        for i, line in enumerate(src):
            line = line.rstrip("\n")
            t = event_time(json.loads(line))
            while pending and pending[0][0] <= t:
                out.write(pending.pop(0)[1] + "\n")
            out.write(line + "\n")
            if i % 10 == 9:
                pending.append((t + LATER, repeat(line)))
        for _, line in pending:
            out.write(line + "\n")


if __name__ == "__main__":
    main()
