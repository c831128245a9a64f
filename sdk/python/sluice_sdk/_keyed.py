"""Keyed processors: the `keyed-processor` world of `wit/0.2.0/plugin.wit`.

The host keys the stream by the record key and owns every key's state (as
bytes: here, the compact JSON of a Python value) and timers; a call hands the
plugin a part of a micro-batch (or timers that fired) with the states of the
keys it touches, and takes back their changes. This module is the SDK's side:
`KeyedProcessor` (what a plugin subclasses), `KeyedContext` (one key's view of
a call), `run_keyed` (one `process-keyed` call, in plain Python: the
component's glue and the harness both go through it) and `KeyedHarness` (the
host's part, in memory, for unit tests under plain CPython).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Callable, Generic, Iterable, Mapping, NamedTuple, Sequence, TypeVar

from . import Batch, Bytes, Config, Error, Event, Output, Record, _as_bytes, _failure, dump_json, parse_json

S = TypeVar("S")

WATERMARK_MIN = -(2**63)
"""The watermark before any event (the minimum s64)."""

_S64_MAX = 2**63 - 1

# Rounds of timers that set timers due at once, before the harness gives up.
_MAX_TIMER_ROUNDS = 10_000


class TimeDomain(Enum):
    """The clock a timer follows (Flink's `TimeDomain`)."""

    EVENT_TIME = "event-time"
    """Fires once the key's partition watermark reaches the timer's time."""
    PROCESSING_TIME = "processing-time"
    """Fires once the host's wall clock (ms since the Unix epoch) reaches it."""


class Timer(NamedTuple):
    """A timer of a key: when it fires (ms since the Unix epoch, UTC) and on
    which clock. A key has at most one timer per (domain, time)."""

    time: int
    domain: TimeDomain


class TimerChange(NamedTuple):
    """A timer set (`set` true) or deleted, of the call's key `group`."""

    set: bool
    group: int
    timer: Timer


def escape_key(key: bytes) -> str:
    """`key` as text for a message, as Rust's `escape_ascii` writes it:
    printable ASCII as is, `"` `'` `\\` and control bytes escaped, the rest
    as `\\xNN`."""
    out = []
    for b in key:
        if b in (0x22, 0x27, 0x5C):
            out.append("\\" + chr(b))
        elif b == 0x09:
            out.append("\\t")
        elif b == 0x0A:
            out.append("\\n")
        elif b == 0x0D:
            out.append("\\r")
        elif 0x20 <= b < 0x7F:
            out.append(chr(b))
        else:
            out.append(f"\\x{b:02x}")
    return "".join(out)


Lookup = Callable[[str, str], str | None]
"""What answers `KeyedContext.lookup`: (table, key) to the row's JSON text,
`None` when the table has no such key; raises `Error` (the host's text) when
there is no such table."""


def _no_tables(table: str, key: str) -> str | None:
    raise Error(f"no table `{table}` (no tables given)")


class _Call:
    """What the contexts of one call share."""

    __slots__ = ("watermark", "now", "timers", "failure", "tables")

    def __init__(self, watermark: int, now: int, tables: Lookup = _no_tables) -> None:
        self.watermark = watermark
        self.now = now
        self.timers: list[TimerChange] = []
        self.failure: str | None = None
        self.tables = tables


class KeyedContext(Generic[S]):
    """One key's view of a call, given to `KeyedProcessor.process` and
    `on_timer`: its key, its state and its timers, and the call's watermark
    and clock. The same object serves every event of its key in a call."""

    __slots__ = ("key", "_group", "_raw", "_state", "_loaded", "_call")

    def __init__(self, key: bytes, group: int, raw: bytes | None, call: _Call) -> None:
        self.key: bytes = key
        """The key (the record key's bytes; for a key taken from a JSON string
        field, its text without quotes)."""
        self._group = group
        self._raw = raw
        self._state: Any = None
        self._loaded = False
        self._call = call

    @property
    def state(self) -> S | None:
        """The key's state, `None` when it has none (never set, cleared, or
        expired by the stage's `state_ttl`). Decoded from its JSON bytes the
        first time a call asks, then kept for the rest of the call: a value
        changed in place is written back at the end of the call.

        A state whose bytes are not JSON reads as `None` here, and the whole
        call then fails, naming the key, whatever `process` does."""
        if not self._loaded:
            self._load()
        state: S | None = self._state
        return state

    def set_state(self, value: S | None) -> None:
        """Sets the key's state (a JSON value: dict, list, str, number, bool);
        `None` clears it."""
        self._state = value
        self._loaded = True

    def clear_state(self) -> None:
        """Deletes the key's state (Flink's `ValueState.clear`); its timers stay."""
        self._state = None
        self._loaded = True

    def set_event_timer(self, time_ms: int) -> None:
        """Registers an event-time timer: `on_timer` runs once the watermark
        reaches `time_ms` (at once after this call if it already has). Setting
        one that exists keeps one."""
        self._timer(True, time_ms, TimeDomain.EVENT_TIME)

    def delete_event_timer(self, time_ms: int) -> None:
        """Deletes the event-time timer at `time_ms` (nothing when there is none)."""
        self._timer(False, time_ms, TimeDomain.EVENT_TIME)

    def set_processing_timer(self, time_ms: int) -> None:
        """Registers a processing-time timer: `on_timer` runs once the host's
        clock reaches `time_ms`. Setting one that exists keeps one."""
        self._timer(True, time_ms, TimeDomain.PROCESSING_TIME)

    def delete_processing_timer(self, time_ms: int) -> None:
        """Deletes the processing-time timer at `time_ms` (nothing when there is none)."""
        self._timer(False, time_ms, TimeDomain.PROCESSING_TIME)

    @property
    def watermark(self) -> int:
        """The partition's event-time watermark before the call's first event,
        ms since the Unix epoch: the largest event time seen minus the stage's
        `watermark` delay (`WATERMARK_MIN` before any event). An event whose
        time is below it is late."""
        return self._call.watermark

    @property
    def now(self) -> int:
        """The host's wall clock when the call started, ms since the Unix epoch
        (a plugin has no clock of its own)."""
        return self._call.now

    def lookup(self, table: str, key: str | Bytes) -> dict[str, Any] | None:
        """The row of the daemon's lookup table `table` (`[tables.NAME]` in its
        config) whose key is `key`, parsed from its JSON text (a `dict`);
        `None` when the table has no such key. The table is the one the
        built-in `join` stage sees, as it is when the call starts (a changed
        file is swapped in between batches). A key is matched as text (`bytes`,
        such as `ctx.key`, are decoded as UTF-8): a number key column matches
        its JSON text (`"1"`).

        Raises `Error` with the daemon's text when it has no table of that name
        (in a `KeyedHarness`: none given with `tables=` or `table`), or when
        the row is not a JSON object (the table and key are named). Not caught,
        it fails the call, as any exception."""
        text = self.lookup_text(table, key)
        if text is None:
            return None
        try:
            row = parse_json(text)
        except ValueError as e:
            raise Error(f"row {_quote(key)} of table `{table}`: {e}") from None
        if not isinstance(row, dict):
            raise Error(f"row {_quote(key)} of table `{table}`: not a JSON object: {text}")
        return row

    def lookup_text(self, table: str, key: str | Bytes) -> str | None:
        """As `lookup`, the row as the JSON text the daemon gives (not parsed)."""
        if not isinstance(table, str):
            raise TypeError(f"a table's name is a str, not {type(table).__name__}")
        if not isinstance(key, str):
            if not isinstance(key, (bytes, bytearray, memoryview)):
                raise TypeError(f"a lookup key is a str (or UTF-8 bytes), not {type(key).__name__}")
            key = str(key, "utf-8")
        return self._call.tables(table, key)

    def _timer(self, set_: bool, time_ms: int, domain: TimeDomain) -> None:
        if type(time_ms) is not int:
            if isinstance(time_ms, bool) or not isinstance(time_ms, int):
                raise TypeError(f"a timer's time is an int (ms), not {type(time_ms).__name__}")
            time_ms = int(time_ms)
        if not WATERMARK_MIN <= time_ms <= _S64_MAX:
            raise ValueError(f"timer time {time_ms} is out of the s64 range")
        self._call.timers.append(TimerChange(set_, self._group, Timer(time_ms, domain)))

    def _load(self) -> None:
        self._loaded = True
        raw = self._raw
        if raw is None:
            self._state = None
            return
        try:
            self._state = parse_json(raw)
        except ValueError as e:
            self._state = None
            if self._call.failure is None:
                self._call.failure = (
                    f'the state of key "{escape_key(self.key)}" does not decode as this '
                    f"plugin's state (an incompatible version's?): {e}"
                )

    def _update(self) -> tuple[bool, bytes | None]:
        """(changed, new bytes or None to delete)."""
        if not self._loaded:
            return False, None
        if self._state is None:
            return self._raw is not None, None
        try:
            new = dump_json(self._state)
        except (ValueError, TypeError) as e:
            raise Error(
                f'the new state of key "{escape_key(self.key)}" cannot be encoded as JSON: {e}'
            ) from None
        return new != self._raw, new

    def __repr__(self) -> str:
        return f"KeyedContext(key={self.key!r})"


def _quote(key: str | Bytes) -> str:
    # As Rust's `{key:?}` of a str writes it, near enough.
    text = key if isinstance(key, str) else str(key, "utf-8", "replace")
    return dump_json(text).decode("utf-8")


class KeyedProcessor(ABC, Generic[S]):
    """A keyed processing function with per-key state and timers: the
    component's `keyed-processor` world (Flink's `KeyedProcessFunction`,
    Spark's `transformWithState`). `S` is the type of a key's state, a JSON
    value (the host keeps its compact JSON bytes).

    The host makes one instance per partition worker: `__init__` gets the
    stage's config (raise `Error` to refuse it), then `process` runs for each
    event and `on_timer` for each timer that fired, never concurrently. An
    instance may be replaced by a fresh one at any time, and a call may be
    made again with the same input: keep in `self` only what `__init__` made;
    what must last goes in the key's state."""

    def __init__(self, config: Config) -> None:
        pass

    @abstractmethod
    def process(self, ctx: KeyedContext[S], event: Event, out: Output) -> None:
        """Handles one event of the key `ctx.key`: read and change its state and
        timers through `ctx`, emit into `out` (an event emitted without a key
        gets `ctx.key`, without a time the event's time) and refuse this event
        with `out.reject(event, reason)`. Raising fails the whole call: no
        output, state or timer change of it is kept, and the host retries the
        events in smaller parts to find the ones that fail alone."""

    def on_timer(self, ctx: KeyedContext[S], timer: Timer, out: Output) -> None:
        """A timer of the key `ctx.key` fired (an event-time one once the
        watermark reached its time, a processing-time one once the host's
        clock did). It was deleted before this call: set it again to fire
        again. An event emitted here without a key gets `ctx.key`, without a
        time the timer's. Default: nothing."""


@dataclass
class KeyedResult:
    """What one `process-keyed` call returns, in plain Python."""

    out: Output
    updates: list[tuple[int, bytes | None]] = field(default_factory=list)
    """(key index, new state bytes or None to delete), keys whose state changed."""
    timers: list[TimerChange] = field(default_factory=list)
    """Timers set and deleted, in the order they were."""


def run_keyed(
    processor: KeyedProcessor[Any],
    keys: Sequence[bytes],
    states: Sequence[bytes | None],
    events: Batch,
    groups: Sequence[int],
    fired: Sequence[tuple[int, Timer]] = (),
    watermark: int = WATERMARK_MIN,
    now: int = 0,
    tables: Lookup | None = None,
) -> KeyedResult:
    """Runs one `process-keyed` call through `processor`, as the component
    does: `process` for each event of `events` (event `i` of key
    `keys[groups[i]]`), then `on_timer` for each fired (key index, timer), each
    with the context of its key (`states[g]` the bytes of key `g`'s state).
    `tables(table, key)` answers `KeyedContext.lookup` (the row's JSON text or
    `None`; raises `Error` when there is no such table); without it, no table
    is known. Raises `Error` when the call fails (the text the host gets)."""
    nkeys = len(keys)
    if len(states) != nkeys or len(groups) != len(events):
        raise Error(
            f"malformed keyed input: {nkeys} keys, {len(states)} states, "
            f"{len(events)} events, {len(groups)} groups"
        )
    call = _Call(watermark, now, tables or _no_tables)
    contexts: list[KeyedContext[Any] | None] = [None] * nkeys
    out = Output()

    def context(group: int) -> KeyedContext[Any]:
        if not 0 <= group < nkeys:
            raise Error(f"malformed keyed input: group {group} of {nkeys} keys")
        ctx = contexts[group]
        if ctx is None:
            ctx = contexts[group] = KeyedContext(bytes(keys[group]), group, states[group], call)
        return ctx

    def check(error: BaseException | None) -> None:
        # A state that did not decode fails the call, before the plugin's own
        # error (which it may have caused).
        if call.failure is not None:
            raise Error(call.failure) from None
        if error is not None:
            raise Error(_failure(error)) from error

    process = processor.process
    for event, group in zip(events, groups):
        ctx = context(group)
        out._default_key = ctx.key
        out._default_time = event.timestamp_ms
        try:
            process(ctx, event, out)
        except Exception as e:
            check(e)
        check(None)
    for group, timer in fired:
        ctx = context(group)
        out._default_key = ctx.key
        out._default_time = timer.time
        try:
            processor.on_timer(ctx, timer, out)
        except Exception as e:
            check(e)
        check(None)
    out._default_key = b""
    out._default_time = 0
    result = KeyedResult(out, [], call.timers)
    for used in contexts:
        if used is not None:
            changed, new = used._update()
            if changed:
                result.updates.append((used._group, new))
    return result


class KeyedHarness(Generic[S]):
    """Runs a `KeyedProcessor` as the daemon does, in memory, so its unit
    tests run under plain CPython: it keeps every key's state (as the bytes
    the host keeps) and timers, feeds queued events in calls, moves the
    watermark and fires timers, and collects the output.

    The rules, those of `wit/0.2.0/plugin.wit` and of the daemon:

    - Watermark: the largest event time run so far minus `watermark_delay`
      (0 unless given), or what `advance_watermark` raised it to, whichever is
      larger; `WATERMARK_MIN` before any event. It never goes back.
    - Calls: `run` hands the queued events to the processor in arrival order,
      in calls, each key's state decoded at most once per call. A call ends
      at the event that moves the watermark to or past a known event-time
      timer, which then fires before the next event. When a call sets an
      event-time timer that is due at one of its events before its last, its
      result is dropped and the call made again up to that event (as the
      daemon does), so the timer fires there. A call's `watermark` is the one
      before its first event; its `now` is the harness's clock (`set_now`, 0
      unless set).
    - Repeats: the daemon may make a call twice with the same input, so with
      `repeat_calls` (the default) the harness makes every call twice and
      fails when the two results differ (output that depends on something
      kept in `self`, or on the clock, say).
    - Timers: at most one per (key, domain, time); set and delete apply in the
      order made, once the call returns. After every call, the event-time
      timers with `time <= watermark` fire in time order, then key (bytes)
      order, in one call, each deleted before it fires; then those that call
      made due, and so on. Processing-time timers fire when `set_now` reaches
      them; `finish` fires every event-time timer (the end of the input).
    - Output: an emitted event without a key gets the key of its call's
      event or timer; a rejection must name an event of its call (a second
      one of the same event is dropped); `output.rejected` indices count the
      events handed to successful calls since the harness was made (with no
      failure, the order the events were pushed).
    - Failures: a call that fails (an exception in the processor, a state
      that does not decode, a state that cannot be encoded) changes nothing,
      and `run` raises `Error` with the text the daemon would log; unlike the
      daemon, the harness does not retry the events in smaller parts, and
      drops the queued events not yet handed over. An event without a key is
      refused by `push` (the daemon refuses it before the plugin).
    - Tables: `KeyedContext.lookup` reads the tables given with `tables=`
      (name to rows by key) or `table(name, rows)`, as the daemon's
      `[tables.NAME]`; a table not given is an `Error`, as in the daemon.
    """

    def __init__(
        self,
        processor: KeyedProcessor[S] | type[KeyedProcessor[S]],
        config: Config | dict[str, str] | Iterable[tuple[str, str]] = (),
        *,
        watermark_delay: int = 0,
        repeat_calls: bool = True,
        tables: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> None:
        if isinstance(processor, type):
            processor = processor(config if isinstance(config, Config) else Config(config))
        self.processor: KeyedProcessor[S] = processor
        self.watermark_delay = watermark_delay
        self.repeat_calls = repeat_calls
        self.output = Output()
        """Everything the processor emitted so far, in order."""
        self._states: dict[bytes, bytes] = {}
        self._timers: set[tuple[TimeDomain, int, bytes]] = set()
        self._max_time: int | None = None
        self._advanced = WATERMARK_MIN
        self._now = 0
        self._queued: list[Record] = []
        self._fed = 0
        self.calls = 0
        """Calls made so far (each repeat counted once)."""
        self._tables: dict[str, dict[str, str]] = {}
        for name, rows in (tables or {}).items():
            self.table(name, rows)

    def table(self, name: str, rows: Mapping[str, Any] | Iterable[tuple[str, Any]]) -> KeyedHarness[S]:
        """Gives the processor a lookup table `name` (as a `[tables.NAME]` of
        the daemon's config would), replacing one of that name, for
        `KeyedContext.lookup`: its rows by key (a `str`; a number key column's
        keys are their JSON text, `"1"`), each a `dict` (written as JSON) or
        the JSON text of an object (`str` or `bytes`, kept as is). Returns the
        harness."""
        pairs = rows.items() if isinstance(rows, Mapping) else rows
        table: dict[str, str] = {}
        for key, row in pairs:
            if not isinstance(key, str):
                raise TypeError(f"table `{name}`: a key is a str, not {type(key).__name__}")
            if isinstance(row, (bytes, bytearray, memoryview)):
                table[key] = str(row, "utf-8")
            elif isinstance(row, str):
                table[key] = row
            else:
                table[key] = dump_json(row).decode("utf-8")
        self._tables[name] = table
        return self

    def _lookup(self, table: str, key: str) -> str | None:
        rows = self._tables.get(table)
        if rows is None:
            known = ", ".join(sorted(self._tables)) or "none"
            raise Error(f"no table `{table}` (the harness has: {known})")
        return rows.get(key)

    def push(
        self,
        key: Bytes | str,
        value: Bytes | str,
        timestamp_ms: int = 0,
        headers: Iterable[tuple[str, Bytes]] = (),
    ) -> KeyedHarness[S]:
        """Queues an event of `key` for the next `run`; returns the harness."""
        k = _as_bytes(key)
        if not k:
            raise ValueError("an event of a keyed processor needs a key (the daemon refuses one without)")
        self._queued.append(Record(_as_bytes(value), k, int(timestamp_ms), tuple((str(n), _as_bytes(v)) for n, v in headers)))
        return self

    def push_lines(self, key_of: Any, text: str | bytes, time_of: Any = None) -> KeyedHarness[S]:
        """Queues one event per non-empty line of `text` (as `sluice plugin run`
        reads stdin): its key `key_of(doc)` and time `time_of(doc)` (ms; 0 when
        not given), `doc` the line parsed as JSON."""
        data = text.encode("utf-8") if isinstance(text, str) else text
        for line in data.split(b"\n"):
            if line.strip():
                doc = parse_json(line)
                self.push(key_of(doc), line, time_of(doc) if time_of else 0)
        return self

    @property
    def watermark(self) -> int:
        """The watermark (see the rules above)."""
        seen = WATERMARK_MIN
        if self._max_time is not None:
            seen = max(WATERMARK_MIN, self._max_time - self.watermark_delay)
        return max(seen, self._advanced)

    @property
    def now(self) -> int:
        """The clock `set_now` set (0 unless set)."""
        return self._now

    def run(self) -> None:
        """Processes the queued events as one micro-batch (see the rules
        above), firing the event-time timers the watermark passes. Raises
        `Error` with the first failed call's reason."""
        batch = self._queued
        self._queued = []
        # The largest event time and the watermark after each event.
        upto: list[int] = []
        after: list[int] = []
        m = self._max_time
        for r in batch:
            m = r.timestamp_ms if m is None else max(m, r.timestamp_ms)
            upto.append(m)
            after.append(max(WATERMARK_MIN, m - self.watermark_delay, self._advanced))
        start = 0
        while start < len(batch):
            first = self._first_timer(TimeDomain.EVENT_TIME)
            end = len(batch) - 1
            if first is not None:
                end = next((j for j in range(start, len(batch)) if after[j] >= first), end)
            watermark = self.watermark
            while True:
                part = batch[start : end + 1]
                keys, result = self._call_events(part, watermark)
                due = min(
                    (c.timer.time for c in result.timers
                     if c.set and c.timer.domain is TimeDomain.EVENT_TIME),
                    default=None,
                )
                if due is not None:
                    cut = next((j for j in range(start, end) if after[j] >= due), None)
                    if cut is not None:
                        end = cut
                        continue
                break
            self._apply(keys, result, len(part))
            self._max_time = upto[end]
            self._fire(TimeDomain.EVENT_TIME, self.watermark)
            start = end + 1

    def advance_watermark(self, time_ms: int) -> None:
        """Raises the watermark to `time_ms` (when it is below), as a source's
        idle advance would, and fires the event-time timers it reaches."""
        self._advanced = max(self._advanced, time_ms)
        self._fire(TimeDomain.EVENT_TIME, self.watermark)

    def set_now(self, now_ms: int) -> None:
        """Sets the host's clock that calls see as `ctx.now`, and fires the
        processing-time timers it reaches."""
        self._now = now_ms
        self._fire(TimeDomain.PROCESSING_TIME, now_ms)

    def finish(self) -> None:
        """The end of the input: runs what is queued, then fires every
        event-time timer, in time order (the daemon's final watermark; the
        calls still see the watermark as it is)."""
        self.run()
        self._fire(TimeDomain.EVENT_TIME, _S64_MAX)

    def take_output(self) -> Output:
        """Takes what the processor emitted so far, leaving it empty."""
        out, self.output = self.output, Output()
        return out

    def state(self, key: Bytes | str) -> S | None:
        """The state of `key`, decoded (`None` when it has none)."""
        raw = self._states.get(_as_bytes(key))
        if raw is None:
            return None
        state: S = parse_json(raw)
        return state

    def state_bytes(self, key: Bytes | str) -> bytes | None:
        """The state of `key` as the bytes the host keeps."""
        return self._states.get(_as_bytes(key))

    def set_state_bytes(self, key: Bytes | str, data: Bytes | str | None) -> None:
        """Sets (or with None deletes) the state bytes of `key`: to test what
        an earlier version of the plugin left, say."""
        k = _as_bytes(key)
        if data is None:
            self._states.pop(k, None)
        else:
            self._states[k] = _as_bytes(data)

    def states(self) -> dict[bytes, bytes]:
        """Every key's state bytes, by key."""
        return dict(self._states)

    def timers(self, key: Bytes | str) -> list[Timer]:
        """The timers of `key`, event-time ones first, each in time order."""
        k = _as_bytes(key)
        order = {TimeDomain.EVENT_TIME: 0, TimeDomain.PROCESSING_TIME: 1}
        found = sorted((order[d], t) for d, t, kk in self._timers if kk == k)
        domains = (TimeDomain.EVENT_TIME, TimeDomain.PROCESSING_TIME)
        return [Timer(t, domains[d]) for d, t in found]

    def timer_count(self) -> int:
        """Timers of every key."""
        return len(self._timers)

    def _first_timer(self, domain: TimeDomain) -> int | None:
        return min((t for d, t, _ in self._timers if d is domain), default=None)

    def _call(
        self,
        keys: list[bytes],
        events: Batch,
        groups: list[int],
        fired: list[tuple[int, Timer]],
        watermark: int,
    ) -> KeyedResult:
        states = [self._states.get(k) for k in keys]

        def once() -> KeyedResult:
            result = run_keyed(
                self.processor, keys, states, events, groups, fired, watermark, self._now, self._lookup
            )
            n = len(events)
            seen = set()
            kept = []
            for r in result.out.rejected:
                if not 0 <= r.index < n:
                    raise Error(f"malformed keyed output: rejection of event {r.index} in a call of {n}")
                if r.index not in seen:
                    seen.add(r.index)
                    kept.append(r)
            result.out.rejected = kept
            return result

        self.calls += 1
        result = once()
        if self.repeat_calls:
            again = once()
            if _summary(again) != _summary(result):
                raise Error(
                    "the same call made twice returned different results: a call may be made "
                    "again with the same input, so its output must depend on its input only "
                    f"(first: {_summary(result)!r}; again: {_summary(again)!r})"
                )
        return result

    def _call_events(self, part: list[Record], watermark: int) -> tuple[list[bytes], KeyedResult]:
        keys: list[bytes] = []
        index: dict[bytes, int] = {}
        groups: list[int] = []
        for r in part:
            key = r.key or b""
            g = index.get(key)
            if g is None:
                g = index[key] = len(keys)
                keys.append(key)
            groups.append(g)
        return keys, self._call(keys, Batch(part), groups, [], watermark)

    def _apply(self, keys: list[bytes], result: KeyedResult, events: int) -> None:
        for rec in result.out.records():
            self.output.emit(rec.value, rec.key, rec.timestamp_ms, rec.headers)
        for r in result.out.rejected:
            self.output.reject(self._fed + r.index, r.reason)
        self._fed += events
        for g, value in result.updates:
            if value is None:
                self._states.pop(keys[g], None)
            else:
                self._states[keys[g]] = value
        for c in result.timers:
            timer = (c.timer.domain, c.timer.time, keys[c.group])
            if c.set:
                self._timers.add(timer)
            else:
                self._timers.discard(timer)

    def _fire(self, domain: TimeDomain, at: int) -> None:
        for _ in range(_MAX_TIMER_ROUNDS):
            due = sorted((t, k) for d, t, k in self._timers if d is domain and t <= at)
            if not due:
                return
            for t, k in due:
                self._timers.discard((domain, t, k))
            keys: list[bytes] = []
            index: dict[bytes, int] = {}
            fired: list[tuple[int, Timer]] = []
            for t, k in due:
                g = index.get(k)
                if g is None:
                    g = index[k] = len(keys)
                    keys.append(k)
                fired.append((g, Timer(t, domain)))
            try:
                result = self._call(keys, Batch(), [], fired, self.watermark)
            except BaseException:
                # A failed call changes nothing: the timers are still set.
                self._timers.update((domain, t, k) for t, k in due)
                raise
            self._apply(keys, result, 0)
        raise Error(
            f"timers still due after {_MAX_TIMER_ROUNDS} rounds: does on_timer set a timer at "
            "or before the watermark each time?"
        )


def _summary(result: KeyedResult) -> tuple[Any, ...]:
    return (
        result.out.records(),
        [(r.index, r.reason) for r in result.out.rejected],
        result.updates,
        result.timers,
    )


def export_keyed_processor(cls: type[KeyedProcessor[Any]]) -> type:
    """The `WitWorld` class componentize-py looks for in the app module, for
    the keyed-processor world (build with `-d wit/0.2.0 -w keyed-processor`):
    `WitWorld = export_keyed_processor(MyProcessor)`. Off Wasm it returns a
    placeholder, so the module imports in tests."""
    from . import _component, log

    return _component.keyed_world(cls, log)
