"""The glue to componentize-py's bindings, against stand-ins for the modules it
generates (`wit_world`, `componentize_py_types`), as its generated code calls
them: the world's class is instantiated anew for every export call."""

from __future__ import annotations

import enum
import importlib
import sys
import types
from dataclasses import dataclass, field
from typing import Any, Iterator

import pytest

import sluice_sdk as sluice
from sluice_sdk import Batch, Config, Error, Output


@dataclass
class EventBatch:
    values: bytes
    value_ends: list[int]
    keys: bytes
    key_ends: list[int]
    timestamps: list[int]
    headers: list[Any] = field(default_factory=list)


@dataclass
class Header:
    index: int
    name: str
    value: bytes


@dataclass
class Rejection:
    index: int
    reason: str


@dataclass
class WitOutput:
    events: EventBatch
    rejected: list[Rejection]


class TimeDomain(enum.Enum):
    EVENT_TIME = 0
    PROCESSING_TIME = 1


@dataclass
class WitTimer:
    group: int
    domain: TimeDomain
    time: int


@dataclass
class TimerChange_Set:
    value: WitTimer


@dataclass
class TimerChange_Delete:
    value: WitTimer


@dataclass
class StateUpdate:
    group: int
    value: bytes | None


@dataclass
class KeyedInput:
    keys: list[bytes]
    states: list[bytes | None]
    events: EventBatch
    groups: list[int]
    fired: list[WitTimer]
    watermark: int
    now: int


@dataclass
class KeyedOutput:
    events: EventBatch
    rejected: list[Rejection]
    updates: list[StateUpdate]
    timers: list[Any]


class Err(Exception):
    def __init__(self, value: str) -> None:
        super().__init__(value)
        self.value = value


@pytest.fixture
def component() -> Iterator[tuple[Any, list[tuple[Any, str]]]]:
    logged: list[tuple[Any, str]] = []
    host = types.ModuleType("wit_world.imports.host")
    host.Level = types.SimpleNamespace(  # type: ignore[attr-defined]
        TRACE="T", DEBUG="D", INFO="I", WARN="W", ERROR="E"
    )
    host.log = lambda level, message: logged.append((level, message))  # type: ignore[attr-defined]
    wit_types = types.ModuleType("wit_world.imports.types")
    wit_types.EventBatch = EventBatch  # type: ignore[attr-defined]
    wit_types.Header = Header  # type: ignore[attr-defined]
    wit_types.Rejection = Rejection  # type: ignore[attr-defined]
    wit_types.Output = WitOutput  # type: ignore[attr-defined]
    wit_types.TimeDomain = TimeDomain  # type: ignore[attr-defined]
    wit_types.Timer = WitTimer  # type: ignore[attr-defined]
    wit_types.TimerChange_Set = TimerChange_Set  # type: ignore[attr-defined]
    wit_types.TimerChange_Delete = TimerChange_Delete  # type: ignore[attr-defined]
    wit_types.StateUpdate = StateUpdate  # type: ignore[attr-defined]
    wit_types.KeyedOutput = KeyedOutput  # type: ignore[attr-defined]
    # The daemon's tables as the host's `tables` import answers: one table.
    tables = types.ModuleType("wit_world.imports.tables")

    def lookup(table: str, key: str) -> str | None:
        if table != "airports":
            raise Err(f"no table `{table}` (the daemon's tables: airports)")
        return {"JFK": '{"name":"John F Kennedy Intl","tz":-5}'}.get(key)

    tables.lookup = lookup  # type: ignore[attr-defined]
    imports = types.ModuleType("wit_world.imports")
    imports.host = host  # type: ignore[attr-defined]
    imports.types = wit_types  # type: ignore[attr-defined]
    imports.tables = tables  # type: ignore[attr-defined]
    world = types.ModuleType("wit_world")
    world.WitWorld = type("WitWorld", (), {})  # type: ignore[attr-defined]
    world.imports = imports  # type: ignore[attr-defined]
    cpt = types.ModuleType("componentize_py_types")
    cpt.Err = Err  # type: ignore[attr-defined]
    fakes = {
        "wit_world": world,
        "wit_world.imports": imports,
        "wit_world.imports.host": host,
        "wit_world.imports.types": wit_types,
        "wit_world.imports.tables": tables,
        "componentize_py_types": cpt,
    }
    sys.modules.update(fakes)
    glue = importlib.reload(importlib.import_module("sluice_sdk._component"))
    assert glue.IN_COMPONENT
    try:
        yield glue, logged
    finally:
        for name in fakes:
            del sys.modules[name]
        importlib.reload(glue)
        sluice.log._host = None


class Upper(sluice.Processor):
    def __init__(self, config: Config) -> None:
        self.suffix = config.get("suffix", "") or ""
        if self.suffix == "!":
            raise Error("config `suffix`: no shouting")
        sluice.log.info(f"configured with {self.suffix!r}")

    def process(self, batch: Batch, out: Output) -> None:
        for event in batch:
            if event.value == b"boom":
                raise KeyError("boom")
            if not event.value:
                out.reject(event, "empty")
                continue
            out.emit(event.value.upper() + self.suffix.encode(), event.key, event.timestamp_ms,
                     event.headers)


def test_processor_world(component: tuple[Any, list[tuple[Any, str]]]) -> None:
    glue, logged = component
    world = glue.processor_world(Upper, sluice.log)
    batch = EventBatch(b"abcd", [2, 2, 4], b"KX", [1, 1, 2], [1, 2, 3], [Header(2, "h", b"v")])
    with pytest.raises(Err, match="before configure"):
        world().process(batch)
    world().configure([("suffix", "?")])
    assert logged == [("I", "configured with '?'")]
    got = world().process(batch)
    assert got.events == EventBatch(
        b"AB?CD?", [3, 6], b"KX", [1, 2], [1, 3], [Header(1, "h", b"v")]
    )
    assert got.rejected == [Rejection(1, "empty")]
    # Errors become the `err` of the result: Error's text as it is, any other
    # exception with its type.
    with pytest.raises(Err) as refused:
        world().configure([("suffix", "!")])
    assert refused.value.value == "config `suffix`: no shouting"
    with pytest.raises(Err) as failed:
        world().process(EventBatch(b"boom", [4], b"", [0], [0]))
    assert failed.value.value == "KeyError: 'boom'"


class Sum(sluice.Aggregator[float]):
    def create(self) -> float:
        return 0.0

    def add(self, state: float, event: sluice.Event) -> float:
        value = event.json()
        if not isinstance(value, (int, float)):
            raise Error(f"not a number: {event.text()}")
        return state + value

    def merge(self, a: float, b: float) -> float:
        return a + b

    def finish(self, state: float) -> Any:
        return {"sum": state}


def test_aggregator_world(component: tuple[Any, list[tuple[Any, str]]]) -> None:
    glue, _ = component
    world = glue.aggregator_world(Sum, sluice.log)
    world().configure([])
    empty = world().create()
    assert empty == b"0.0"
    batch = EventBatch(b"1232.5", [1, 2, 3, 6], b"", [0, 0, 0, 0], [0, 0, 0, 0])
    states = world().accumulate([empty, b"10"], batch, [0, 1, 0, 1])
    assert states == [b"4.0", b"14.5"]
    assert world().merge(states[0], states[1]) == b"18.5"
    assert world().finish(states) == ['{"sum":4.0}', '{"sum":14.5}']
    with pytest.raises(Err, match='not a number: "x"'):
        world().accumulate([empty], EventBatch(b'"x"', [3], b"", [0], [0]), [0])
    with pytest.raises(Err, match="JSONDecodeError: Expecting value"):
        world().accumulate([empty], EventBatch(b"x", [1], b"", [0], [0]), [0])
    with pytest.raises(Err, match="group 3 of 1"):
        world().accumulate([empty], EventBatch(b"1", [1], b"", [0], [0]), [3])


class Gaps(sluice.KeyedProcessor[dict[str, int]]):
    """Per key: the ms since its previous event, and a timer an hour after."""

    def process(self, ctx: sluice.KeyedContext[dict[str, int]], event: sluice.Event,
                out: Output) -> None:
        t = event.timestamp_ms
        state = ctx.state
        if state is not None:
            out.emit_json({"gap": t - state["last"]})
            ctx.delete_event_timer(state["last"] + 3_600_000)
        ctx.set_state({"last": t})
        ctx.set_event_timer(t + 3_600_000)

    def on_timer(self, ctx: sluice.KeyedContext[dict[str, int]], timer: sluice.Timer,
                 out: Output) -> None:
        out.emit_json({"idle": timer.time, "watermark": ctx.watermark, "now": ctx.now})
        ctx.clear_state()


def test_keyed_world(component: tuple[Any, list[tuple[Any, str]]]) -> None:
    glue, _ = component
    world = glue.keyed_world(Gaps, sluice.log)
    inp = KeyedInput(
        keys=[b"N1", b"N2"],
        states=[b'{"last":1000}', None],
        events=EventBatch(b"{}{}{}", [2, 4, 6], b"N1N2N1", [2, 4, 6], [5000, 6000, 9000]),
        groups=[0, 1, 0],
        fired=[],
        watermark=-(2**63),
        now=7,
    )
    with pytest.raises(Err, match="before configure"):
        world().process_keyed(inp)
    world().configure([])
    got = world().process_keyed(inp)
    # N1: 5000 - 1000, then 9000 - 5000; N2 has no previous event.
    assert got.events == EventBatch(
        b'{"gap":4000}{"gap":4000}', [12, 24], b"N1N1", [2, 4], [5000, 9000], []
    )
    assert got.rejected == []
    assert got.updates == [StateUpdate(0, b'{"last":9000}'), StateUpdate(1, b'{"last":6000}')]
    e = TimeDomain.EVENT_TIME
    assert got.timers == [
        TimerChange_Delete(WitTimer(0, e, 3_601_000)),
        TimerChange_Set(WitTimer(0, e, 3_605_000)),
        TimerChange_Set(WitTimer(1, e, 3_606_000)),
        TimerChange_Delete(WitTimer(0, e, 3_605_000)),
        TimerChange_Set(WitTimer(0, e, 3_609_000)),
    ]
    fired = KeyedInput([b"N2"], [b'{"last":6000}'], EventBatch(b"", [], b"", [], []), [],
                       [WitTimer(0, e, 3_606_000)], 3_700_000, 8)
    got = world().process_keyed(fired)
    assert got.events == EventBatch(
        b'{"idle":3606000,"watermark":3700000,"now":8}', [44], b"N2", [2], [3_606_000], []
    )
    assert got.updates == [StateUpdate(0, None)] and got.timers == []
    with pytest.raises(Err) as failed:
        world().process_keyed(KeyedInput([b"N3"], [b"[]"], EventBatch(b"{}", [2], b"N3", [2], [1]),
                                         [0], [], 0, 0))
    assert failed.value.value == "TypeError: list indices must be integers or slices, not str"


class Dests(sluice.KeyedProcessor[Any]):
    """Each event's value names a table and a key (`TABLE:KEY`): emits the
    row's `name` with the key's UTC offset applied to the event time (hours),
    or `-` when the table has no such key."""

    def process(self, ctx: sluice.KeyedContext[Any], event: sluice.Event, out: Output) -> None:
        table, _, key = event.text().partition(":")
        row = ctx.lookup(table, key)
        if row is None:
            out.emit("-")
        else:
            out.emit(f"{row['name']}@{event.timestamp_ms // 3_600_000 + row['tz']}")


def test_keyed_world_lookup_reads_the_hosts_tables(component: tuple[Any, list[tuple[Any, str]]]) -> None:
    glue, _ = component
    world = glue.keyed_world(Dests, sluice.log)
    world().configure([])

    def inp(values: list[bytes]) -> KeyedInput:
        ends: list[int] = []
        for v in values:
            ends.append((ends[-1] if ends else 0) + len(v))
        n = len(values)
        return KeyedInput([b"N1"], [None], EventBatch(b"".join(values), ends, b"N1" * n,
                          [2 * (i + 1) for i in range(n)], [36_000_000] * n),
                          [0] * n, [], 0, 0)

    got = world().process_keyed(inp([b"airports:JFK", b"airports:LAX"]))
    # 10 h UTC, UTC-5: 5.
    assert got.events.values == b"John F Kennedy Intl@5-"
    # An unknown table: the host's `err`, as the call's error with its text.
    with pytest.raises(Err) as failed:
        world().process_keyed(inp([b"planes:N1"]))
    assert failed.value.value == "no table `planes` (the daemon's tables: airports)"
