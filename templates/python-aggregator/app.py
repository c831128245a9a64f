"""{{name}}: a sluice window aggregate in Python, on the sluice SDK (sluice_sdk/).

A WebAssembly component of the `sluice:plugin/aggregator` world (wit/plugin.wit),
packaged with componentize-py (see build.sh); `python -m pytest` runs its unit
tests (test_app.py) under plain CPython, without building.

The `n` most frequent values of the aggregate's `field` in each window, as
[{"value": "BOS", "count": 3}, …], most frequent first (ties: smaller value
first). Config: `n` (an integer, default 3).
"""

from typing import Any

import sluice_sdk as sluice

# The accumulator: {value as JSON text: count}. The host keeps it as the bytes
# `encode` makes (JSON by default) and hands them back to `decode`, also to a
# newer version of this plugin after a swap: keep the encoding readable.
Counts = dict[str, int]


class Top(sluice.Aggregator[Counts]):
    def __init__(self, config: sluice.Config) -> None:
        self.n = config.int("n", 3)
        if self.n is None or self.n < 1:
            raise sluice.Error("config `n`: must be at least 1")

    def create(self) -> Counts:
        return {}

    def add(self, state: Counts, event: sluice.Event) -> Counts:
        # The event's value is the JSON text of the field: keep it as the key.
        value = event.text()
        state[value] = state.get(value, 0) + 1
        return state

    def merge(self, a: Counts, b: Counts) -> Counts:
        for value, count in b.items():
            a[value] = a.get(value, 0) + count
        return a

    def finish(self, state: Counts) -> Any:
        top = sorted(state.items(), key=lambda vc: (-vc[1], vc[0]))[: self.n]
        return [{"value": sluice.parse_json(v), "count": c} for v, c in top]


# What componentize-py looks for; off Wasm (in tests) a placeholder.
WitWorld = sluice.export_aggregator(Top)
