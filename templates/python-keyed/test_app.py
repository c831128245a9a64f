"""{{name}}'s unit tests: `python -m pytest` (plain CPython, nothing to build).

`KeyedHarness` plays the daemon: it keeps the states and timers, moves the
watermark and fires the timers as the daemon does."""

import pytest

import sluice_sdk as sluice
from sluice_sdk import KeyedHarness, TimeDomain, Timer

from app import Seen


def test_counts_each_key_and_refuses_what_is_not_an_object() -> None:
    h = KeyedHarness(Seen)
    h.push("a", '{"x":1}', 1_000).push("b", '{"x":2}', 2_000)
    h.push("a", '{"x":3,"seen":99}', 3_000).push("a", "[1]", 4_000)
    h.run()
    assert h.output.values() == [b'{"x":1,"seen":1}', b'{"x":2,"seen":1}', b'{"x":3,"seen":2}']
    assert [(r.index, r.reason) for r in h.output.rejected] == [(3, "not a JSON object")]
    assert h.state("a") == {"n": 2, "last_ms": 3_000}
    # A new batch goes on from the kept state.
    h.push("b", "{}", 5_000).run()
    assert h.output.values()[-1] == b'{"seen":2}'
    assert h.timers("a") == []


def test_a_quiet_key_is_forgotten_after_forget_minutes() -> None:
    h = KeyedHarness(Seen, {"forget_minutes": "1"})
    h.push("a", "{}", 0).push("a", "{}", 30_000).run()
    assert h.timers("a") == [Timer(90_000, TimeDomain.EVENT_TIME)]
    # b at 90 s moves the watermark to a's timer (30 s + 60 s): a is forgotten.
    h.push("b", "{}", 90_000).push("a", "{}", 95_000).run()
    assert h.output.json() == [{"seen": 1}, {"seen": 2}, {"seen": 1}, {"seen": 1}]


def test_forget_minutes_must_be_above_zero() -> None:
    with pytest.raises(sluice.Error, match="not above 0"):
        KeyedHarness(Seen, {"forget_minutes": "0"})
