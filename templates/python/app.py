"""{{name}}: a sluice processing plugin in Python, on the sluice SDK (sluice_sdk/).

A WebAssembly component of the `sluice:plugin/processor` world (wit/plugin.wit),
packaged with componentize-py (see build.sh); `python -m pytest` runs its unit
tests (test_app.py) under plain CPython, without building.

It tags events: every event whose value is a JSON object is passed on with one more
field, `"tag": <config tag>`, appended at the end (compact JSON, the rest of the
object byte for byte), with its key and event time; anything else is refused with
the reason "not a JSON object" (the daemon sends it to the dead-letter sink).

Config: `tag` (a string, default "hello").
"""

import json

import sluice_sdk as sluice


class Tagger(sluice.Processor):
    def __init__(self, config: sluice.Config) -> None:
        # Called once per instance with the stage's config. Values are strings
        # (config.int / float / bool parse them); `raise sluice.Error("reason")`
        # refuses the config: the stage then does not start.
        tag = config.get("tag", "hello")
        # `"tag":"<tag>"}`, JSON-escaped once.
        self.field = b'"tag":' + json.dumps(tag, ensure_ascii=False).encode("utf-8") + b"}"

    def process(self, batch: sluice.Batch, out: sluice.Output) -> None:
        # Called once per micro-batch. `raise` fails the whole batch (the stage's
        # `on_error` policy applies); to refuse single events, `out.reject` them.
        for event in batch:
            try:
                doc = event.json()
            except ValueError:  # not UTF-8, not JSON, nested too deeply
                doc = None
            if type(doc) is not dict:
                out.reject(event, "not a JSON object")
                continue
            # The original bytes without the closing `}`, then the new field.
            head = event.value.strip()[:-1]
            value = head + (b"," if doc else b"") + self.field
            out.emit(value, key=event.key, timestamp_ms=event.timestamp_ms)


# What componentize-py looks for; off Wasm (in tests) a placeholder.
WitWorld = sluice.export_processor(Tagger)
