"""Write sluice processing plugins in Python.

A plugin is a WebAssembly component of the `sluice:plugin/processor` world
(`wit/plugin.wit`), built with componentize-py. With this package you write one
class and export it; you never see the generated bindings or the packed batch:

    import sluice_sdk as sluice

    class Tagger(sluice.Processor):
        def __init__(self, config: sluice.Config) -> None:
            self.tag = config.get("tag", "hello")

        def process(self, batch: sluice.Batch, out: sluice.Output) -> None:
            for event in batch:
                try:
                    doc = event.json()
                except ValueError as e:
                    out.reject(event, f"invalid JSON: {e}")
                    continue
                doc["tag"] = self.tag
                out.emit_json(doc, key=event.key, timestamp_ms=event.timestamp_ms)

    WitWorld = sluice.export_processor(Tagger)

componentize-py looks for `WitWorld` in the app module. Off Wasm (plain CPython,
pytest), nothing needs the bindings: build a `Batch`, call `run` (or your
`process` with an `Output`), and look at the output. `log` prints to stderr there.

A window aggregate (the `aggregator` world) is the same with `Aggregator` and
`export_aggregator`. A keyed processor with per-key state and timers kept by the
host (the `keyed-processor` world of `wit/0.2.0/plugin.wit`) subclasses
`KeyedProcessor` and exports it with `export_keyed_processor`; `KeyedHarness`
plays the host's part in tests.

The host hands over a batch as a few packed columns (all values in one buffer,
their end offsets, likewise the keys). An `Event` is a light view of one row:
its `value` is sliced when the event is made, everything else only when asked
for. An `Output` collects the columns of the result and packs them once, at the
end of the call.
"""

from __future__ import annotations

import json
import sys
from abc import ABC, abstractmethod
from bisect import bisect_left
from dataclasses import dataclass
from itertools import accumulate
from typing import Any, Generic, Iterable, Iterator, NamedTuple, Sequence, TypeVar, Union

__all__ = [
    "Aggregator",
    "Batch",
    "Config",
    "Error",
    "Event",
    "KeyedContext",
    "KeyedHarness",
    "KeyedProcessor",
    "KeyedResult",
    "Output",
    "Processor",
    "Record",
    "Rejection",
    "TimeDomain",
    "Timer",
    "TimerChange",
    "WATERMARK_MIN",
    "aggregate",
    "dump_json",
    "export_aggregator",
    "export_keyed_processor",
    "export_processor",
    "log",
    "parse_json",
    "run",
    "run_keyed",
]

__version__ = "0.1.0"

Bytes = Union[bytes, bytearray, memoryview]
"""What `Output.emit` and `Record` take as a value or key (a `str` is UTF-8 encoded)."""


class Error(Exception):
    """Raised in `__init__` (configure), it refuses the config: the stage does not
    start and the daemon says why. Raised in `process`, it fails the whole batch
    (the stage's `on_error` policy applies); to refuse single events, use
    `Output.reject`. Any other exception does the same, its message prefixed with
    its type name."""


def _refuse_constant(name: str) -> Any:
    # Python's json accepts NaN / Infinity / -Infinity; JSON does not.
    raise ValueError(f"{name} is not JSON")


_decode = json.JSONDecoder(parse_constant=_refuse_constant).decode
_encode = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode


def parse_json(data: Bytes | str) -> Any:
    """Strict JSON (no NaN or Infinity, UTF-8 only), as the daemon reads it.

    Raises ValueError (with the reason) when `data` is not JSON."""
    try:
        return _decode(data if isinstance(data, str) else str(data, "utf-8"))
    except RecursionError:
        raise ValueError("nested too deeply") from None


def dump_json(value: Any) -> bytes:
    """`value` as compact JSON text (UTF-8, no ASCII escaping), as serde_json
    writes it. Raises ValueError (or TypeError) when it cannot be written."""
    return _encode(value).encode("utf-8")


def _as_bytes(data: Bytes | str) -> bytes:
    if type(data) is bytes:
        return data
    if isinstance(data, str):
        return data.encode("utf-8")
    return bytes(data)


class Config:
    """A stage's `config = { … }` table, as (name, value) string pairs.

    Values are always strings: TOML numbers and booleans arrive in their TOML
    text form (`15`, `true`); read them with `int`, `float` or `bool`, which
    raise `Error("config `NAME`: cannot parse `VALUE`: …")` on a bad value."""

    __slots__ = ("_pairs",)

    def __init__(self, pairs: Iterable[tuple[str, str]] | dict[str, str] = ()) -> None:
        items = pairs.items() if isinstance(pairs, dict) else pairs
        # A later pair with the same name wins.
        self._pairs: dict[str, str] = {str(k): str(v) for k, v in items}

    def get(self, name: str, default: str | None = None) -> str | None:
        """The raw value of `name`, or `default` when it is not set."""
        return self._pairs.get(name, default)

    def __contains__(self, name: object) -> bool:
        return name in self._pairs

    def __getitem__(self, name: str) -> str:
        return self._pairs[name]

    def items(self) -> list[tuple[str, str]]:
        """All pairs, sorted by name (as the host gives them)."""
        return sorted(self._pairs.items())

    def __repr__(self) -> str:
        return f"Config({self.items()!r})"

    def _fail(self, name: str, raw: str, why: str) -> Error:
        return Error(f"config `{name}`: cannot parse `{raw}`: {why}")

    def int(self, name: str, default: int | None = None) -> int | None:
        """The value of `name` as an integer (decimal, an optional sign), or
        `default` when it is not set."""
        raw = self._pairs.get(name)
        if raw is None:
            return default
        text = raw.strip()
        digits = text[1:] if text[:1] in ("+", "-") else text
        if not (digits.isascii() and digits.isdigit()):
            raise self._fail(name, raw, "invalid digit found in string")
        return int(text)

    def float(self, name: str, default: float | None = None) -> float | None:
        """The value of `name` as a float (what Rust's `f64::from_str` reads:
        `15`, `1.5e3`, `inf`, `NaN`), or `default` when it is not set."""
        raw = self._pairs.get(name)
        if raw is None:
            return default
        text = raw.strip()
        if not text.isascii() or "_" in text or not text:
            raise self._fail(name, raw, "invalid float literal")
        try:
            return float(text)
        except ValueError:
            raise self._fail(name, raw, "invalid float literal") from None

    def bool(self, name: str, default: bool | None = None) -> bool | None:
        """The value of `name` as `true` or `false`, or `default` when it is not set."""
        raw = self._pairs.get(name)
        if raw is None:
            return default
        text = raw.strip()
        if text not in ("true", "false"):
            raise self._fail(name, raw, "provided string was not `true` or `false`")
        return text == "true"


class Record(NamedTuple):
    """One event as plain data: to build a test `Batch`, or read an `Output`."""

    value: bytes
    key: bytes | None = None
    timestamp_ms: int = 0
    headers: Sequence[tuple[str, bytes]] = ()


class Event:
    """One event of a batch: a view of its row in the packed columns.

    `value` (the payload bytes, often UTF-8 JSON) and `index` (its position in
    the batch) are plain attributes; `key`, `timestamp_ms` and `headers` are
    read from the batch when asked for."""

    __slots__ = ("_batch", "index", "value")

    # No __init__: the batch sets the slots, which is cheaper per event than a
    # call (events are made only by batches).
    _batch: Batch
    index: int
    value: bytes

    @property
    def key(self) -> bytes | None:
        """The key, or None when the event has none (an empty key is none)."""
        batch = self._batch
        i = self.index
        ends = batch._key_ends
        end = ends[i]
        start = ends[i - 1] if i else 0
        # No slice (a new bytes object) for an event without a key.
        return batch._keys[start:end] if end > start else None

    @property
    def timestamp_ms(self) -> int:
        """Event time, in milliseconds since the Unix epoch (UTC)."""
        return self._batch._timestamps[self.index]

    @property
    def headers(self) -> list[tuple[str, bytes]]:
        """The event's headers as (name, value) pairs, in order."""
        return self._batch._headers_of(self.index)

    def text(self) -> str:
        """The value as text (raises ValueError when it is not UTF-8)."""
        return str(self.value, "utf-8")

    def json(self) -> Any:
        """The value parsed as strict JSON; raises ValueError with the reason
        when it is not JSON (not UTF-8, NaN, nested too deeply …)."""
        return parse_json(self.value)

    def record(self) -> Record:
        """This event as plain data."""
        return Record(self.value, self.key, self.timestamp_ms, tuple(self.headers))

    def __repr__(self) -> str:
        return (
            f"Event(index={self.index}, value={self.value!r}, key={self.key!r}, "
            f"timestamp_ms={self.timestamp_ms})"
        )


class Batch:
    """A micro-batch of events, in order: iterate it, index it, `len()` it.

    In tests, build one with `Batch([...])` from values (`bytes` or `str`) or
    `Record`s, or with `Batch.from_lines(text)`."""

    __slots__ = ("_values", "_value_ends", "_keys", "_key_ends", "_timestamps", "_headers", "_hidx")

    def __init__(self, events: Iterable[Record | Bytes | str] = ()) -> None:
        values: list[bytes] = []
        value_ends: list[int] = []
        keys: list[bytes] = []
        key_ends: list[int] = []
        timestamps: list[int] = []
        headers: list[tuple[int, str, bytes]] = []
        vsize = ksize = 0
        for i, item in enumerate(events):
            record = item if isinstance(item, Record) else Record(_as_bytes(item))
            value = _as_bytes(record.value)
            key = _as_bytes(record.key) if record.key else b""
            values.append(value)
            vsize += len(value)
            value_ends.append(vsize)
            keys.append(key)
            ksize += len(key)
            key_ends.append(ksize)
            timestamps.append(int(record.timestamp_ms))
            headers.extend((i, str(name), _as_bytes(v)) for name, v in record.headers)
        self._set(b"".join(values), value_ends, b"".join(keys), key_ends, timestamps, headers)

    def _set(
        self,
        values: bytes,
        value_ends: Sequence[int],
        keys: bytes,
        key_ends: Sequence[int],
        timestamps: Sequence[int],
        headers: Sequence[tuple[int, str, bytes]],
    ) -> None:
        self._values = values
        self._value_ends = value_ends
        self._keys = keys
        self._key_ends = key_ends
        self._timestamps = timestamps
        self._headers = headers
        self._hidx: list[int] | None = None

    @classmethod
    def from_columns(
        cls,
        values: bytes,
        value_ends: Sequence[int],
        keys: bytes = b"",
        key_ends: Sequence[int] | None = None,
        timestamps: Sequence[int] | None = None,
        headers: Sequence[tuple[int, str, bytes]] = (),
    ) -> Batch:
        """A batch from its packed columns, as the host sends them (event `i`'s
        value is `values[value_ends[i-1]:value_ends[i]]`; headers as
        (index, name, value), sorted by index). Raises ValueError when they do
        not fit together."""
        n = len(value_ends)
        key_ends = [0] * n if key_ends is None else key_ends
        timestamps = [0] * n if timestamps is None else timestamps
        if len(key_ends) != n or len(timestamps) != n:
            raise ValueError(
                f"{n} value ends, {len(key_ends)} key ends, {len(timestamps)} timestamps"
            )
        for name, ends, buf in (("value", value_ends, values), ("key", key_ends, keys)):
            last = 0
            for end in ends:
                if end < last:
                    raise ValueError(f"{name} ends decrease ({last} then {end})")
                last = end
            if last > len(buf):
                raise ValueError(f"{name} ends go past the buffer ({last} > {len(buf)})")
        last_index = 0
        for index, _, _ in headers:
            if index < last_index or index >= n:
                raise ValueError(f"header index {index} out of order or range ({n} events)")
            last_index = index
        batch = cls.__new__(cls)
        batch._set(bytes(values), value_ends, bytes(keys), key_ends, timestamps, headers)
        return batch

    @classmethod
    def from_lines(cls, text: str | bytes, timestamp_ms: int = 0) -> Batch:
        """One event per non-empty line of `text`, no key, time `timestamp_ms`."""
        data = text.encode("utf-8") if isinstance(text, str) else text
        return cls(Record(line, None, timestamp_ms) for line in data.split(b"\n") if line)

    def __len__(self) -> int:
        return len(self._value_ends)

    def __iter__(self) -> Iterator[Event]:
        values = self._values
        new = Event
        start = 0
        i = 0
        for end in self._value_ends:
            event = new()
            event._batch = self
            event.index = i
            event.value = values[start:end]
            yield event
            start = end
            i += 1

    def __getitem__(self, index: int) -> Event:
        ends = self._value_ends
        if index < 0:
            index += len(ends)
        if not 0 <= index < len(ends):
            raise IndexError(f"event {index} of a batch of {len(ends)}")
        event = Event()
        event._batch = self
        event.index = index
        event.value = self._values[(ends[index - 1] if index else 0) : ends[index]]
        return event

    def values(self) -> list[bytes]:
        """Every event's value, in order."""
        return [e.value for e in self]

    def records(self) -> list[Record]:
        """Every event as plain data, in order."""
        return [e.record() for e in self]

    def json(self) -> list[Any]:
        """Every event's value parsed as JSON (ValueError if one is not)."""
        return [e.json() for e in self]

    @property
    def byte_size(self) -> int:
        """Bytes of values and keys in the batch."""
        return len(self._values) + len(self._keys)

    def _headers_of(self, index: int) -> list[tuple[str, bytes]]:
        headers = self._headers
        if not headers:
            return []
        if self._hidx is None:
            self._hidx = [h[0] for h in headers]
        at = bisect_left(self._hidx, index)
        found = []
        while at < len(headers) and headers[at][0] == index:
            found.append((headers[at][1], headers[at][2]))
            at += 1
        return found

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Batch) and self.records() == other.records()

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Batch({self.records()!r})"


@dataclass(frozen=True)
class Rejection:
    """An input event the plugin refused: its index in the batch, and why."""

    index: int
    reason: str


class Output:
    """What a plugin returns for one batch: the events it passes on (`forward`,
    `emit`, `emit_json`), in order, and the input events it refuses (`reject`).

    The output's columns grow in lists and are packed once, when the call ends."""

    __slots__ = ("_values", "_keys", "_timestamps", "_headers", "rejected",
                 "_default_key", "_default_time")

    # One entry per emitted event in each list (an empty key for none); the end
    # offsets are computed once, in `_columns`, not per event.
    def __init__(self) -> None:
        self._values: list[bytes] = []
        self._keys: list[bytes] = []
        self._timestamps: list[int] = []
        self._headers: list[tuple[int, str, bytes]] = []
        self.rejected: list[Rejection] = []
        """The refused input events, in the order they were refused."""
        # What an event emitted without a key or a time gets: none and 0, but
        # in a keyed processor the key being processed and the time of its
        # event or timer.
        self._default_key = b""
        self._default_time = 0

    def emit(
        self,
        value: Bytes | str,
        key: Bytes | str | None = None,
        timestamp_ms: int | None = None,
        headers: Iterable[tuple[str, Bytes]] = (),
    ) -> None:
        """Emits a new event (`value` and `key` as bytes, or str as UTF-8).
        Usually `key=event.key, timestamp_ms=event.timestamp_ms` of the input
        event it comes from. Without a key the event has none, without a time
        its time is 0 — but in a `KeyedProcessor` it gets the key being
        processed, and the time of the event (`process`) or timer (`on_timer`)."""
        if type(value) is not bytes:
            value = _as_bytes(value)
        if type(key) is not bytes:
            key = _as_bytes(key) if key else b""
        self._values.append(value)
        self._keys.append(key or self._default_key)
        self._timestamps.append(self._default_time if timestamp_ms is None else timestamp_ms)
        if headers:
            index = len(self._timestamps) - 1
            self._headers.extend((index, str(n), _as_bytes(v)) for n, v in headers)

    def emit_json(
        self,
        value: Any,
        key: Bytes | str | None = None,
        timestamp_ms: int | None = None,
        headers: Iterable[tuple[str, Bytes]] = (),
    ) -> None:
        """Emits a new event whose value is `value` written as compact JSON.
        Raises ValueError or TypeError (and emits nothing) when it cannot be."""
        self.emit(dump_json(value), key, timestamp_ms, headers)

    def forward(self, event: Event) -> None:
        """Passes `event` on unchanged: value, key, event time and headers."""
        batch = event._batch
        i = event.index
        self.emit(
            event.value,
            event.key,
            batch._timestamps[i],
            batch._headers_of(i) if batch._headers else (),
        )

    def reject(self, event: Event | int, reason: str) -> None:
        """Refuses an input event (an `Event` or its index): the host sends its
        original bytes to the dead-letter sink with `reason`. What the plugin
        also emits for it is output all the same."""
        self.rejected.append(Rejection(event if isinstance(event, int) else event.index, reason))

    def __len__(self) -> int:
        """Events emitted so far."""
        return len(self._values)

    @property
    def events(self) -> Batch:
        """The events emitted so far, as a batch (for tests)."""
        return Batch.from_columns(*self._columns())

    def values(self) -> list[bytes]:
        """The values emitted so far, in order (for tests)."""
        return list(self._values)

    def records(self) -> list[Record]:
        """The events emitted so far as plain data (for tests)."""
        return self.events.records()

    def json(self) -> list[Any]:
        """The values emitted so far, parsed as JSON (for tests)."""
        return [parse_json(v) for v in self._values]

    def _columns(self) -> tuple[bytes, list[int], bytes, list[int], list[int], list[tuple[int, str, bytes]]]:
        values = self._values
        keys = self._keys
        return (
            b"".join(values),
            list(accumulate(map(len, values))),
            b"".join(keys),
            list(accumulate(map(len, keys))),
            self._timestamps,
            self._headers,
        )


class Processor(ABC):
    """A processing function over micro-batches (map, filter, flat-map, or any mix).

    The host makes one instance per partition worker: `__init__` gets the stage's
    config (raise `Error` to refuse it), then `process` runs once per
    micro-batch, never concurrently. An instance that fails may be replaced by a
    fresh one at any time, so what it keeps across batches is a cache, not a
    source of truth."""

    def __init__(self, config: Config) -> None:
        pass

    @abstractmethod
    def process(self, batch: Batch, out: Output) -> None:
        """Handles one micro-batch: emit into `out`, reject single events with
        `out.reject`; raising fails the whole batch."""


S = TypeVar("S")


class Aggregator(ABC, Generic[S]):
    """A user-defined aggregate over event-time windows (a percentile, a top-k):
    the component's `aggregator` world.

    The host owns the windows and keeps each one's accumulator as the bytes
    `encode` made (JSON by default); it hands them back to `decode` when the
    window gets events, merges with another (sessions) or is emitted. So
    accumulators survive plugin swaps and restarts: keep the encoding readable
    by later versions. `merge` must be associative, with `create` its identity.

    An event's value is the JSON text of the aggregate's `field` (events where
    it is null or absent are skipped), or the whole record when there is none."""

    def __init__(self, config: Config) -> None:
        pass

    @abstractmethod
    def create(self) -> S:
        """The accumulator of an empty window."""

    @abstractmethod
    def add(self, state: S, event: Event) -> S:
        """Adds one event to a window's accumulator; returns the accumulator
        (the same object, changed, or a new one). Raising refuses the event:
        the host retries the batch's events one by one and dead-letters those
        that fail alone."""

    @abstractmethod
    def merge(self, a: S, b: S) -> S:
        """The accumulator of two windows joined into one."""

    @abstractmethod
    def finish(self, state: S) -> Any:
        """The window's result: a JSON value (the SDK writes it as compact JSON)."""

    def encode(self, state: S) -> bytes:
        """The accumulator as the bytes the host keeps (default: JSON)."""
        return dump_json(state)

    def decode(self, data: bytes) -> S:
        """An accumulator back from its bytes, perhaps written by an older
        version (default: JSON)."""
        state: S = parse_json(data)
        return state


class _Log:
    """Writes to the daemon's log (tagged with pipeline, stage and plugin); off
    Wasm, to stderr."""

    LEVELS = ("trace", "debug", "info", "warn", "error")

    def __init__(self) -> None:
        self._host: Any = None

    def __call__(self, level: str, message: str) -> None:
        """Logs `message` at `level` (trace, debug, info, warn or error)."""
        if level not in self.LEVELS:
            raise ValueError(f"log level {level!r}: use one of {', '.join(self.LEVELS)}")
        if self._host is not None:
            self._host(level, message)
        else:
            print(f"[{level}] {message}", file=sys.stderr)

    def trace(self, message: str) -> None:
        self("trace", message)

    def debug(self, message: str) -> None:
        self("debug", message)

    def info(self, message: str) -> None:
        self("info", message)

    def warn(self, message: str) -> None:
        self("warn", message)

    def error(self, message: str) -> None:
        self("error", message)


log = _Log()
"""`log.info("…")` (or trace, debug, warn, error; or `log("info", "…")`)."""


def _failure(e: BaseException) -> str:
    """The error text the host gets for an exception."""
    return str(e) if isinstance(e, Error) else f"{type(e).__name__}: {e}"


def run(
    processor: type[Processor] | Processor,
    batch: Batch | Iterable[Record | Bytes | str],
    config: Config | dict[str, str] | Iterable[tuple[str, str]] = (),
) -> Output:
    """Runs one batch through a processor as the host would (for tests): builds
    it from `config` when given a class, and returns its `Output`."""
    if isinstance(processor, type):
        processor = processor(config if isinstance(config, Config) else Config(config))
    out = Output()
    processor.process(batch if isinstance(batch, Batch) else Batch(batch), out)
    return out


def aggregate(
    aggregator: type[Aggregator[Any]] | Aggregator[Any],
    batch: Batch | Iterable[Record | Bytes | str],
    config: Config | dict[str, str] | Iterable[tuple[str, str]] = (),
) -> str:
    """One window over every event of `batch`, as the host would run it (for
    tests): the accumulator goes through `encode`/`decode` between steps. Returns
    the window's result as JSON text."""
    if isinstance(aggregator, type):
        aggregator = aggregator(config if isinstance(config, Config) else Config(config))
    if not isinstance(batch, Batch):
        batch = Batch(batch)
    data = aggregator.encode(aggregator.create())
    for event in batch:
        data = aggregator.encode(aggregator.add(aggregator.decode(data), event))
    return dump_json(aggregator.finish(aggregator.decode(data))).decode("utf-8")


def export_processor(cls: type[Processor]) -> type:
    """The `WitWorld` class componentize-py looks for in the app module, for the
    processor world: `WitWorld = export_processor(MyProcessor)`. Off Wasm it
    returns a placeholder, so the module imports in tests."""
    from . import _component

    return _component.processor_world(cls, log)


def export_aggregator(cls: type[Aggregator[Any]]) -> type:
    """As `export_processor`, for the aggregator world."""
    from . import _component

    return _component.aggregator_world(cls, log)


# The keyed-processor world (wit/0.2.0): after everything it uses is defined.
from ._keyed import (  # noqa: E402
    WATERMARK_MIN,
    KeyedContext,
    KeyedHarness,
    KeyedProcessor,
    KeyedResult,
    TimeDomain,
    Timer,
    TimerChange,
    export_keyed_processor,
    run_keyed,
)
