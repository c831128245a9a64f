"""The glue between the SDK's types and componentize-py's bindings.

Only this module touches `wit_world` (the bindings componentize-py generates when
it builds the component) and `componentize_py_types`; off Wasm they do not
exist, and the exported classes are placeholders.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

from . import Aggregator, Batch, Config, Error, Output, Processor, _failure
from ._keyed import KeyedProcessor, TimeDomain, Timer, run_keyed

if TYPE_CHECKING:
    from . import _Log

try:  # inside a component being built by componentize-py
    import wit_world  # type: ignore[import-not-found, unused-ignore]
    from componentize_py_types import Err  # type: ignore[import-not-found, unused-ignore]
    from wit_world.imports import host as _host  # type: ignore[import-not-found, unused-ignore]
    from wit_world.imports import types as _wit  # type: ignore[import-not-found, unused-ignore]

    IN_COMPONENT = True
except ImportError:
    IN_COMPONENT = False


def _native(world: str) -> type:
    class WitWorld:
        """Placeholder: the real class exists only inside a component."""

        def __init__(self) -> None:
            raise RuntimeError(
                f"the {world} world's bindings exist only in a component built by "
                "componentize-py; in tests, call sluice_sdk.run / aggregate"
            )

    return WitWorld


def _batch(wit_batch: Any) -> Batch:
    """The SDK's view of the batch the host sent (no copy of the buffers)."""
    batch = Batch.__new__(Batch)
    headers = wit_batch.headers
    batch._set(
        wit_batch.values,
        wit_batch.value_ends,
        wit_batch.keys,
        wit_batch.key_ends,
        wit_batch.timestamps,
        [(h.index, h.name, h.value) for h in headers] if headers else (),
    )
    return batch


def _host_log(log: _Log) -> None:
    levels = {
        "trace": _host.Level.TRACE,
        "debug": _host.Level.DEBUG,
        "info": _host.Level.INFO,
        "warn": _host.Level.WARN,
        "error": _host.Level.ERROR,
    }

    def write(level: str, message: str) -> None:
        _host.log(levels[level], message)

    log._host = write


def _host_tables() -> Callable[[str, str], str | None]:
    """The keyed-processor world's `tables` import (`sluice:plugin/tables`), an
    unknown table's `Err` as an `Error` with the host's text. Imported here, not
    above: the other worlds have no such import."""
    try:
        from wit_world.imports import tables  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        tables = None

    def lookup(table: str, key: str) -> str | None:
        if tables is None:
            raise Error("no lookup tables: the component's world has no `tables` import")
        try:
            row: str | None = tables.lookup(table, key)
        except Err as e:
            raise Error(str(e.value)) from None
        return row

    return lookup


def _guard(call: Callable[[], Any]) -> Any:
    """Runs `call`; an exception becomes the `err` of the export's result."""
    try:
        return call()
    except Err:
        raise
    except Exception as e:
        raise Err(_failure(e)) from None


def processor_world(cls: type[Processor], log: _Log) -> type:
    if not IN_COMPONENT:
        return _native("processor")
    _host_log(log)
    # Module state, not an attribute: componentize-py makes a new `WitWorld`
    # object for every call of an export.
    slot: list[Processor] = []

    def configure(pairs: list[tuple[str, str]]) -> None:
        processor = cls(Config(pairs))
        slot[:] = [processor]

    def process(wit_batch: Any) -> Any:
        if not slot:
            raise Err("process called before configure")
        out = Output()
        slot[0].process(_batch(wit_batch), out)
        values, value_ends, keys, key_ends, timestamps, headers = out._columns()
        events = _wit.EventBatch(
            values,
            value_ends,
            keys,
            key_ends,
            timestamps,
            [_wit.Header(i, n, v) for i, n, v in headers],
        )
        return _wit.Output(events, [_wit.Rejection(r.index, r.reason) for r in out.rejected])

    class WitWorld(wit_world.WitWorld):  # type: ignore[misc, unused-ignore]
        def configure(self, config: list[tuple[str, str]]) -> None:
            _guard(lambda: configure(config))

        def process(self, batch: Any) -> Any:
            return _guard(lambda: process(batch))

    return WitWorld


def aggregator_world(cls: type[Aggregator[Any]], log: _Log) -> type:
    if not IN_COMPONENT:
        return _native("aggregator")
    _host_log(log)
    slot: list[Aggregator[Any]] = []

    def agg() -> Aggregator[Any]:
        if not slot:
            raise Err("called before configure")
        return slot[0]

    def configure(pairs: list[tuple[str, str]]) -> None:
        aggregator = cls(Config(pairs))
        slot[:] = [aggregator]

    def create() -> bytes:
        a = agg()
        return a.encode(a.create())

    def accumulate(states: list[bytes], wit_batch: Any, groups: list[int]) -> list[bytes]:
        a = agg()
        decoded = [a.decode(s) for s in states]
        add = a.add
        for event, group in zip(_batch(wit_batch), groups):
            if group >= len(decoded):
                raise Err(f"group {group} of {len(decoded)} states")
            decoded[group] = add(decoded[group], event)
        return [a.encode(s) for s in decoded]

    def merge(x: bytes, y: bytes) -> bytes:
        a = agg()
        return a.encode(a.merge(a.decode(x), a.decode(y)))

    def finish(states: list[bytes]) -> list[str]:
        from . import dump_json

        a = agg()
        return [dump_json(a.finish(a.decode(s))).decode("utf-8") for s in states]

    class WitWorld(wit_world.WitWorld):  # type: ignore[misc, unused-ignore]
        def configure(self, config: list[tuple[str, str]]) -> None:
            _guard(lambda: configure(config))

        def create(self) -> bytes:
            return bytes(_guard(create))

        def accumulate(self, states: list[bytes], batch: Any, groups: list[int]) -> list[bytes]:
            return list(_guard(lambda: accumulate(states, batch, groups)))

        def merge(self, a: bytes, b: bytes) -> bytes:
            return bytes(_guard(lambda: merge(a, b)))

        def finish(self, states: list[bytes]) -> list[str]:
            return list(_guard(lambda: finish(states)))

    return WitWorld


def keyed_world(cls: type[KeyedProcessor[Any]], log: _Log) -> type:
    if not IN_COMPONENT:
        return _native("keyed-processor")
    _host_log(log)
    slot: list[KeyedProcessor[Any]] = []
    domain = {
        _wit.TimeDomain.EVENT_TIME: TimeDomain.EVENT_TIME,
        _wit.TimeDomain.PROCESSING_TIME: TimeDomain.PROCESSING_TIME,
    }
    wit_domain = {v: k for k, v in domain.items()}
    lookup = _host_tables()

    def configure(pairs: list[tuple[str, str]]) -> None:
        processor = cls(Config(pairs))
        slot[:] = [processor]

    def process_keyed(input: Any) -> Any:
        if not slot:
            raise Err("process-keyed called before configure")
        fired = [(t.group, Timer(t.time, domain[t.domain])) for t in input.fired]
        result = run_keyed(
            slot[0],
            input.keys,
            input.states,
            _batch(input.events),
            input.groups,
            fired,
            input.watermark,
            input.now,
            lookup,
        )
        values, value_ends, keys, key_ends, timestamps, headers = result.out._columns()
        events = _wit.EventBatch(
            values,
            value_ends,
            keys,
            key_ends,
            timestamps,
            [_wit.Header(i, n, v) for i, n, v in headers],
        )
        timers = [
            (_wit.TimerChange_Set if c.set else _wit.TimerChange_Delete)(
                _wit.Timer(c.group, wit_domain[c.timer.domain], c.timer.time)
            )
            for c in result.timers
        ]
        return _wit.KeyedOutput(
            events,
            [_wit.Rejection(r.index, r.reason) for r in result.out.rejected],
            [_wit.StateUpdate(g, v) for g, v in result.updates],
            timers,
        )

    class WitWorld(wit_world.WitWorld):  # type: ignore[misc, unused-ignore]
        def configure(self, config: list[tuple[str, str]]) -> None:
            _guard(lambda: configure(config))

        def process_keyed(self, input: Any) -> Any:
            return _guard(lambda: process_keyed(input))

    return WitWorld
