"""{{name}}: a sluice processing plugin in Python.

A WebAssembly component of the `sluice:plugin/processor` world (wit/plugin.wit),
packaged with componentize-py (see build.sh).

It tags events: every event whose value is a JSON object is passed on with one more
field, `"tag": <config tag>`, appended at the end (compact JSON, the rest of the
object byte for byte), with its key and event time; anything else is refused with
the reason "not a JSON object" (the daemon sends it to the dead-letter sink).

Config: `tag` (a string, default "hello").
"""

import json

import wit_world
from wit_world.imports.types import EventBatch, Output, Rejection
from componentize_py_types import Err  # noqa: F401  (raise Err("reason") to refuse)

# `"tag":"<tag>"}`, JSON-escaped once in `configure`. Module state, not an
# attribute: componentize-py makes a new `WitWorld` object for every export call.
_field = b""


def _refuse_constant(name):
    # Python's json accepts NaN / Infinity; JSON does not.
    raise ValueError(f"{name} is not JSON")


_decode = json.JSONDecoder(parse_constant=_refuse_constant).decode


def _object(value):
    """The event's value parsed, if it is a JSON object; else None."""
    try:
        doc = _decode(value.decode("utf-8"))
    except (ValueError, RecursionError):  # not UTF-8, not JSON, nested too deeply
        return None
    return doc if type(doc) is dict else None


class WitWorld(wit_world.WitWorld):
    def configure(self, config: list[tuple[str, str]]) -> None:
        # Values are always strings (TOML numbers and booleans in their text form).
        # `raise Err("reason")` refuses the config: the stage then does not start.
        global _field
        tag = dict(config).get("tag", "hello")
        _field = b'"tag":' + json.dumps(tag, ensure_ascii=False).encode("utf-8") + b"}"

    def process(self, batch: EventBatch) -> Output:
        # The batch is packed: event i's value is values[value_ends[i-1]:value_ends[i]],
        # its key likewise (an empty key means none). The output is packed the same way.
        values, value_ends = batch.values, batch.value_ends
        keys, key_ends, times = batch.keys, batch.key_ends, batch.timestamps
        out_values = bytearray()
        out_value_ends = []
        out_keys = bytearray()
        out_key_ends = []
        out_times = []
        rejected = []
        vstart = kstart = 0
        for i, vend in enumerate(value_ends):
            value = values[vstart:vend]
            key = keys[kstart : key_ends[i]]
            vstart, kstart = vend, key_ends[i]

            obj = _object(value)
            if obj is None:
                rejected.append(Rejection(i, "not a JSON object"))
                continue
            # The original bytes without the closing `}`, then the new field.
            out_values += value.strip()[:-1]
            if obj:
                out_values += b","
            out_values += _field
            out_value_ends.append(len(out_values))
            out_keys += key
            out_key_ends.append(len(out_keys))
            out_times.append(times[i])

        events = EventBatch(
            bytes(out_values), out_value_ends, bytes(out_keys), out_key_ends, out_times, []
        )
        # Raising Err("reason") here would fail the whole batch (the stage's
        # `on_error` policy applies); to refuse single events, list them in `rejected`.
        return Output(events, rejected)
