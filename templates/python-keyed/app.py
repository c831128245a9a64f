"""{{name}}: a sluice keyed processing plugin in Python, on the sluice SDK (sluice_sdk/).

A WebAssembly component of the `sluice:plugin/keyed-processor` world
(wit/0.2.0/plugin.wit), packaged with componentize-py (see build.sh);
`python -m pytest` runs its unit tests (test_app.py) under plain CPython, without
building. The daemon keeps a state per key, and timers, for it.

It counts each key's events: every event whose value is a JSON object is passed
on with one more field, `"seen"`, the number of events of its key so far, this one
included (`{"a":1}` becomes `{"a":1,"seen":3}`), keeping its key and event time;
anything else is refused with the reason "not a JSON object" (the daemon sends it
to the dead-letter sink). With `forget_minutes` set, a key that gets no event for
that many minutes of event time starts again from 1 (an event-time timer clears
its state).

Config: `forget_minutes` (a whole number of minutes; default: never).

The daemon keys the stream by the record key (the source's `key`), keeps each
key's state as its JSON bytes, and checkpoints it with the source position: a
restart, a new build of the plugin or a recycled instance continue the counts.
Keep the state readable by your next versions (read a new field with `.get`).
"""

from __future__ import annotations

import sluice_sdk as sluice

# What the daemon keeps per key, as JSON: {"n": 3, "last_ms": 1700000000000}.
State = dict[str, int]


class Seen(sluice.KeyedProcessor[State]):
    def __init__(self, config: sluice.Config) -> None:
        # Called once per instance with the stage's config. Values are strings
        # (config.int / float / bool parse them); `raise sluice.Error("reason")`
        # refuses the config: the stage then does not start.
        minutes = config.int("forget_minutes")
        if minutes is not None and not 0 < minutes < 2**63 // 60_000:
            raise sluice.Error(f"config `forget_minutes`: {minutes} is not above 0")
        self.forget_ms = None if minutes is None else minutes * 60_000

    def process(
        self, ctx: sluice.KeyedContext[State], event: sluice.Event, out: sluice.Output
    ) -> None:
        # Called for each event, with the context of its key (`ctx.key`). Raising
        # fails the whole call (nothing of it is kept; the daemon retries the
        # events in smaller parts); to refuse one event, `out.reject` it.
        try:
            doc = event.json()
        except ValueError:  # not UTF-8, not JSON, nested too deeply
            doc = None
        if type(doc) is not dict:
            out.reject(event, "not a JSON object")
            return
        t = event.timestamp_ms
        # The key's state: decoded once per call, written back if it changed.
        state = ctx.state
        n = 1 if state is None else state["n"] + 1
        if self.forget_ms is not None:
            # One timer per key: move it from the previous event to this one.
            if state is not None:
                ctx.delete_event_timer(state["last_ms"] + self.forget_ms)
            ctx.set_event_timer(t + self.forget_ms)
        ctx.set_state({"n": n, "last_ms": t})
        doc["seen"] = n
        # No key or time given: the event's.
        out.emit_json(doc)

    def on_timer(
        self, ctx: sluice.KeyedContext[State], timer: sluice.Timer, out: sluice.Output
    ) -> None:
        # The key had no event for `forget_minutes` (of event time: the
        # watermark reached the timer): forget it. Events emitted here with no
        # key get this key, with no time the timer's.
        ctx.clear_state()


# What componentize-py looks for; off Wasm (in tests) a placeholder.
WitWorld = sluice.export_keyed_processor(Seen)
