"""The keyed-processor world: `run_keyed` (one call, as the component's glue
makes it) and `KeyedHarness` (the host's part). The expected values are worked
out by hand from the scripts, as the Rust SDK's tests of the same calls."""

from __future__ import annotations

from typing import Any

import pytest

import sluice_sdk as sluice
from sluice_sdk import (
    Batch,
    Config,
    Error,
    Event,
    KeyedContext,
    KeyedHarness,
    KeyedProcessor,
    Output,
    Record,
    TimeDomain,
    Timer,
    TimerChange,
    run_keyed,
)

E = TimeDomain.EVENT_TIME
P = TimeDomain.PROCESSING_TIME


class Script(KeyedProcessor[Any]):
    """Does what each event's value says, `;`-separated: `read` (emits
    `state=N` or `state=none`), `add:N` (state += N in place in a list, or set
    to [N]), `set:N`, `clear`, `timer:T`, `del:T`, `ptimer:T`, `pdel:T`, `emit`
    (a record with no key and no time), `emitkey:K`, `forward`, `reject`,
    `fail`, `watermark`, `now`. On a timer: emits `fired:e|p:T:state`, then
    follows the config's `on_timer` (`clear`, `again`: a timer 1 ms later,
    `fail`)."""

    decoded = 0

    def __init__(self, config: Config) -> None:
        self.on_timer_does = config.get("on_timer", "")

    def process(self, ctx: KeyedContext[Any], event: Event, out: Output) -> None:
        for cmd in event.text().split(";"):
            op, _, arg = cmd.partition(":")
            if op == "read":
                out.emit(f"state={show(ctx.state)}")
            elif op == "add":
                if ctx.state is None:
                    ctx.set_state([int(arg)])
                else:
                    ctx.state[0] += int(arg)
            elif op == "set":
                ctx.set_state([int(arg)])
            elif op == "clear":
                ctx.clear_state()
            elif op == "timer":
                ctx.set_event_timer(int(arg))
            elif op == "del":
                ctx.delete_event_timer(int(arg))
            elif op == "ptimer":
                ctx.set_processing_timer(int(arg))
            elif op == "pdel":
                ctx.delete_processing_timer(int(arg))
            elif op == "emit":
                out.emit(b"emitted")
            elif op == "emitkey":
                out.emit(b"emitted", key=arg)
            elif op == "forward":
                out.forward(event)
            elif op == "reject":
                out.reject(event, "refused")
            elif op == "fail":
                raise Error("failed on purpose")
            elif op == "watermark":
                out.emit(str(ctx.watermark))
            elif op == "now":
                out.emit(str(ctx.now))
            else:
                raise Error(f"unknown command {op}")

    def on_timer(self, ctx: KeyedContext[Any], timer: Timer, out: Output) -> None:
        d = "e" if timer.domain is E else "p"
        out.emit(f"fired:{d}:{timer.time}:{show(ctx.state)}")
        if self.on_timer_does == "clear":
            ctx.clear_state()
        elif self.on_timer_does == "again":
            ctx.set_event_timer(timer.time + 1)
        elif self.on_timer_does == "fail":
            raise Error("timer failed")


def show(state: Any) -> str:
    return "none" if state is None else str(state[0])


def call(
    states: list[tuple[str, str | None]],
    events: list[tuple[str, str]],
    config: dict[str, str] | None = None,
    fired: list[tuple[int, Timer]] | None = None,
) -> sluice.KeyedResult:
    """One call of `events` (key, script) with the states given, watermark
    500, now 1000; event i at time 100 + i."""
    keys = [k.encode() for k, _ in states]
    raw = [None if s is None else s.encode() for _, s in states]
    batch = Batch(Record(script.encode(), key.encode(), 100 + i) for i, (key, script) in enumerate(events))
    groups = [keys.index(k.encode()) for k, _ in events]
    return run_keyed(Script(Config(config or {})), keys, raw, batch, groups, fired or [], 500, 1000)


def pairs(out: Output) -> list[tuple[str, str]]:
    return [((r.key or b"").decode(), r.value.decode()) for r in out.records()]


def test_states_are_read_once_per_call_and_written_back_only_when_changed() -> None:
    r = call(
        [("a", "[5]"), ("b", "[7]"), ("c", None), ("d", "[1]")],
        [
            ("a", "read"),
            ("b", "read;add:1;read"),
            ("a", "add:2;read"),
            ("c", "read"),
            ("a", "read"),
            ("d", "set:3;read"),
        ],
    )
    # `add` changes the list in place: later events of the call see it, and
    # it is written back.
    assert pairs(r.out) == [
        ("a", "state=5"),
        ("b", "state=7"),
        ("b", "state=8"),
        ("a", "state=7"),
        ("c", "state=none"),
        ("a", "state=7"),
        ("d", "state=3"),
    ]
    assert r.updates == [(0, b"[7]"), (1, b"[8]"), (3, b"[3]")]


def test_only_changed_states_are_returned() -> None:
    r = call(
        [
            ("read", "[1]"),
            ("same", "[2]"),
            ("add0", "[3]"),
            ("gone", "[4]"),
            ("never", None),
            ("new", None),
            ("cleared-then-set", "[6]"),
            ("set-then-cleared", None),
        ],
        [
            ("read", "read"),
            ("same", "set:2"),
            ("add0", "add:0"),
            ("gone", "clear"),
            ("never", "clear"),
            ("new", "add:9"),
            ("cleared-then-set", "clear;set:7"),
            ("set-then-cleared", "set:1;clear"),
        ],
    )
    assert r.updates == [(3, None), (5, b"[9]"), (6, b"[7]")]


def test_timer_changes_come_back_in_order_with_their_key() -> None:
    r = call(
        [("a", None), ("b", None)],
        [("a", "timer:10;ptimer:20"), ("b", "timer:10;del:3"), ("a", "pdel:20;timer:10")],
    )
    assert r.timers == [
        TimerChange(True, 0, Timer(10, E)),
        TimerChange(True, 0, Timer(20, P)),
        TimerChange(True, 1, Timer(10, E)),
        TimerChange(False, 1, Timer(3, E)),
        TimerChange(False, 0, Timer(20, P)),
        TimerChange(True, 0, Timer(10, E)),
    ]
    assert r.updates == [] and len(r.out) == 0


def test_keyless_records_get_their_group_key_and_the_event_time() -> None:
    r = call([("k1", None), ("k2", None)], [("k1", "emit;emitkey:x;emit"), ("k2", "forward;emit")])
    assert pairs(r.out) == [
        ("k1", "emitted"),
        ("x", "emitted"),
        ("k1", "emitted"),
        ("k2", "forward;emit"),
        ("k2", "emitted"),
    ]
    assert [rec.timestamp_ms for rec in r.out.records()] == [100, 100, 100, 101, 101]


def test_fired_timers_run_on_timer_with_their_key_state_and_time() -> None:
    r = call(
        [("a", "[4]"), ("b", None)],
        [],
        config={"on_timer": "clear"},
        fired=[(1, Timer(30, E)), (0, Timer(40, P))],
    )
    assert pairs(r.out) == [("b", "fired:e:30:none"), ("a", "fired:p:40:4")]
    # A record emitted from on_timer without a time gets the timer's.
    assert [rec.timestamp_ms for rec in r.out.records()] == [30, 40]
    assert r.updates == [(0, None)]
    r = call([("a", None)], [("a", "watermark;now")])
    assert pairs(r.out) == [("a", "500"), ("a", "1000")]


def test_rejections_name_the_events_and_an_error_fails_the_call() -> None:
    r = call([("a", None), ("b", None)], [("a", "forward"), ("b", "reject"), ("a", "reject;forward")])
    assert [(x.index, x.reason) for x in r.out.rejected] == [(1, "refused"), (2, "refused")]
    assert len(r.out) == 2
    with pytest.raises(Error, match="^failed on purpose$"):
        call([("a", None)], [("a", "set:1;emit"), ("a", "fail")])
    # Any other exception: its type, then its message.
    with pytest.raises(Error, match="^ValueError: invalid literal for int"):
        call([("a", None)], [("a", "set:x")])


def test_a_state_that_does_not_decode_fails_the_call_naming_the_key() -> None:
    # `read` goes on with no state (and `set` would then succeed): the call
    # fails all the same, with the decoding error.
    with pytest.raises(Error) as e:
        call([("ok", "[1]"), ("N14228", "{last_ms")], [("ok", "read"), ("N14228", "read;set:2;emit")])
    assert str(e.value).startswith(
        'the state of key "N14228" does not decode as this plugin\'s state (an incompatible '
        "version's?): Expecting property name"
    )
    # The plugin's own error, raised before the state is read, wins.
    with pytest.raises(Error, match="^failed on purpose$"):
        call([("x", "nope")], [("x", "fail;read")])
    # A key that is not text is escaped as Rust's escape_ascii.
    with pytest.raises(Error, match=r'^the state of key "\\xffa\\"" does not'):
        run_keyed(Script(Config()), [b'\xffa"'], [b"nope"], Batch([Record(b"read", b"k")]), [0])


def test_a_state_that_cannot_be_encoded_fails_the_call() -> None:
    class Bad(KeyedProcessor[Any]):
        def process(self, ctx: KeyedContext[Any], event: Event, out: Output) -> None:
            ctx.set_state({"x": float("nan")})

    with pytest.raises(Error, match='^the new state of key "k" cannot be encoded as JSON'):
        run_keyed(Bad(Config()), [b"k"], [None], Batch([Record(b"", b"k")]), [0])


def test_malformed_input_is_an_error() -> None:
    with pytest.raises(Error, match="group 3 of 1 keys"):
        run_keyed(Script(Config()), [b"a"], [None], Batch([Record(b"emit", b"a")]), [3])
    with pytest.raises(Error, match="1 keys, 0 states"):
        run_keyed(Script(Config()), [b"a"], [], Batch(), [])


def values(h: KeyedHarness[Any]) -> list[str]:
    return [f"{(r.key or b'').decode()}@{r.timestamp_ms}:{r.value.decode()}" for r in h.output.records()]


def test_harness_keeps_states_across_runs_and_fires_event_timers_after_the_event() -> None:
    h = KeyedHarness(Script)
    # a's timer at 110 is known after the first run; in the second run the
    # event at 110 moves the watermark to it: it fires before b's event at 111.
    h.push("a", "add:1;timer:110", 100).run()
    assert h.state("a") == [1] and h.state_bytes("a") == b"[1]"
    assert h.timers("a") == [Timer(110, E)]
    h.push("b", "read", 105).push("a", "add:1;read", 110).push("b", "watermark", 111).run()
    assert values(h) == [
        "b@105:state=none",
        "a@110:state=2",
        "a@110:fired:e:110:2",
        # The call after the timer's sees the watermark before its event.
        "b@111:110",
    ]
    assert h.timers("a") == [] and h.watermark == 111


def test_harness_cuts_a_call_whose_own_timer_comes_due_inside_it() -> None:
    h = KeyedHarness(Script, watermark_delay=10)
    # Event 0 sets a timer at 105; event 1 (at 115) moves the watermark to 105:
    # the timer fires after event 1, before event 2, although no call knew it
    # when the batch began.
    h.push("a", "timer:105", 100).push("b", "emit", 115).push("b", "emit", 116).run()
    assert values(h) == ["b@115:emitted", "a@105:fired:e:105:none", "b@116:emitted"]
    assert h.calls == 4  # 0..2 (dropped), 0..1, the timer, 2


def test_harness_processing_timers_fire_on_the_clock_and_finish_fires_the_rest() -> None:
    h = KeyedHarness(Script, {"on_timer": "clear"})
    h.push("a", "set:3;ptimer:50;timer:1000", 1).push("b", "set:4;timer:900", 2).run()
    h.set_now(49)
    assert values(h) == []
    h.set_now(50)
    assert values(h) == ["a@50:fired:p:50:3"]
    assert h.state("a") is None and h.state("b") == [4]
    h.finish()
    # b's timer first (900), then a's (1000); the watermark stays at 2.
    assert values(h)[1:] == ["b@900:fired:e:900:4", "a@1000:fired:e:1000:none"]
    assert h.timer_count() == 0 and h.watermark == 2


def test_harness_advance_watermark_and_timers_set_by_timers() -> None:
    h = KeyedHarness(Script, {"on_timer": "again"})
    h.push("k", "timer:10", 0).run()
    h.advance_watermark(12)
    # 10 fires and sets 11, due too, which sets 12, due too, which sets 13.
    assert [v.split(":", 1)[1] for v in values(h)] == ["fired:e:10:none", "fired:e:11:none", "fired:e:12:none"]
    assert h.timers("k") == [Timer(13, E)]


def test_harness_failure_changes_nothing_and_rejections_count_pushed_events() -> None:
    h = KeyedHarness(Script)
    h.push("a", "set:1;reject", 1).push("a", "forward", 2).run()
    h.push("b", "reject", 3).run()
    assert [(r.index, r.reason) for r in h.output.rejected] == [(0, "refused"), (2, "refused")]
    h.push("a", "set:9;timer:5", 4).push("a", "fail", 5)
    with pytest.raises(Error, match="^failed on purpose$"):
        h.run()
    assert h.state("a") == [1] and h.timers("a") == []
    with pytest.raises(ValueError, match="needs a key"):
        h.push("", "emit", 1)
    h.set_state_bytes("c", b"{bad")
    with pytest.raises(Error, match='state of key "c" does not decode'):
        h.push("c", "read", 6).run()


def test_harness_makes_each_call_twice_and_refuses_output_kept_in_self() -> None:
    class Leaky(KeyedProcessor[Any]):
        def __init__(self, config: Config) -> None:
            self.n = 0

        def process(self, ctx: KeyedContext[Any], event: Event, out: Output) -> None:
            self.n += 1
            out.emit_json(self.n)

    with pytest.raises(Error, match="the same call made twice returned different results"):
        KeyedHarness(Leaky).push("a", "", 1).run()
    h = KeyedHarness(Leaky, repeat_calls=False)
    h.push("a", "", 1).push("a", "", 2).run()
    assert h.output.json() == [1, 2]


# Lookup tables (`ctx.lookup`): the daemon's `[tables.NAME]`, given to the
# harness with `tables=` or `table(name, rows)`.

AIRPORTS = {
    "JFK": {"name": "John F Kennedy Intl", "tz": -5},
    "LAX": {"name": "Los Angeles Intl", "tz": -8},
}


class Arrivals(KeyedProcessor[int]):
    """Per plane (the key): each flight (`{"dest": CODE}`, its event time the
    arrival in UTC) with its destination's name and local hour of arrival from
    table `airports`, and the plane's count of flights with a known
    destination so far (the state). An unknown destination emits `"?"`. The
    config's `table` names the table (default `airports`)."""

    def __init__(self, config: Config) -> None:
        self.table = config.get("table", "airports") or "airports"

    def process(self, ctx: KeyedContext[int], event: Event, out: Output) -> None:
        dest = event.json()["dest"]
        row = ctx.lookup(self.table, dest)
        if row is None:
            out.emit_json({"dest": dest, "name": "?"})
            return
        n = (ctx.state or 0) + 1
        ctx.set_state(n)
        hour = (event.timestamp_ms // 3_600_000 + row["tz"]) % 24
        out.emit_json({"dest": dest, "name": row["name"], "local_hour": hour, "n": n})


def test_lookup_enriches_each_event_from_a_table_given_to_the_harness() -> None:
    h = KeyedHarness(Arrivals, tables={"airports": AIRPORTS})
    # 10:00 UTC at JFK (UTC-5) is 05:00; 02:30 UTC at LAX (UTC-8) is 18:30 the
    # day before; 23:00 UTC at JFK is 18:00.
    h.push("N1", '{"dest":"JFK"}', 10 * 3_600_000)
    h.push("N2", '{"dest":"LAX"}', 2 * 3_600_000 + 1_800_000)
    h.push("N1", '{"dest":"XXX"}', 11 * 3_600_000)
    h.push("N1", '{"dest":"JFK"}', 23 * 3_600_000)
    h.run()
    assert h.output.json() == [
        {"dest": "JFK", "name": "John F Kennedy Intl", "local_hour": 5, "n": 1},
        {"dest": "LAX", "name": "Los Angeles Intl", "local_hour": 18, "n": 1},
        {"dest": "XXX", "name": "?"},
        {"dest": "JFK", "name": "John F Kennedy Intl", "local_hour": 18, "n": 2},
    ]
    assert [r.key for r in h.output.records()] == [b"N1", b"N2", b"N1", b"N1"]
    # The unknown destination counts nothing.
    assert h.state("N1") == 2 and h.state("N2") == 1


def test_lookup_of_an_absent_key_is_none_and_rows_are_given_as_dicts_or_text() -> None:
    class Probe(KeyedProcessor[Any]):
        """Emits [lookup, lookup_text] of the event's `TABLE:KEY`, and
        lookup_text of its table with the key as bytes (`ctx.key`, read as its
        UTF-8 text)."""

        def process(self, ctx: KeyedContext[Any], event: Event, out: Output) -> None:
            table, _, key = event.text().partition(":")
            out.emit_json([ctx.lookup(table, key), ctx.lookup_text(table, key), ctx.lookup_text(table, ctx.key)])

    h = KeyedHarness(Probe).table("planes", [("N1", '{"seats": 180}'), ("N2", b'{"seats":2}')])
    h.table("codes", {"1": {"code": "A"}, "é": ["not", "an", "object"]})
    h.push("N2", "planes:N1").push("é", "planes:N9").push("N1", "codes:1").run()
    assert h.output.json() == [
        # The text as given; the key N2's row.
        [{"seats": 180}, '{"seats": 180}', '{"seats":2}'],
        # No plane N9, nor "é".
        [None, None, None],
        # A dict is written as compact JSON; codes has no key N1.
        [{"code": "A"}, '{"code":"A"}', None],
    ]
    # A row that is not a JSON object fails the call, naming the row and table.
    with pytest.raises(Error, match='^row "é" of table `codes`: not a JSON object: \\["not","an","object"\\]$'):
        KeyedHarness(Probe).table("codes", {"é": ["not", "an", "object"]}).push("k", "codes:é").run()
    with pytest.raises(Error, match='^row "x" of table `codes`: Expecting property name'):
        KeyedHarness(Probe).table("codes", {"x": "{bad"}).push("k", "codes:x").run()


def test_lookup_of_an_unknown_table_raises_with_the_hosts_text() -> None:
    h = KeyedHarness(Arrivals, {"table": "airport"}, tables={"airports": AIRPORTS, "planes": {}})
    h.push("N1", '{"dest":"JFK"}', 1)
    with pytest.raises(Error, match="^no table `airport` \\(the harness has: airports, planes\\)$"):
        h.run()
    # The failed call changed nothing.
    assert h.output.json() == [] and h.state("N1") is None
    with pytest.raises(Error, match="^no table `airports` \\(the harness has: none\\)$"):
        KeyedHarness(Arrivals).push("N1", '{"dest":"JFK"}', 1).run()

    # The plugin may catch it (an `Error`) and go on.
    class Careful(KeyedProcessor[Any]):
        def process(self, ctx: KeyedContext[Any], event: Event, out: Output) -> None:
            try:
                ctx.lookup("nope", "k")
            except Error as e:
                out.emit(str(e))

    h1 = KeyedHarness(Careful)
    h1.push("k", "").run()
    assert h1.output.values() == [b"no table `nope` (the harness has: none)"]
    # `run_keyed` without `tables`: no table is known.
    assert run_keyed(Careful(Config()), [b"k"], [None], Batch([Record(b"", b"k")]), [0]).out.values() == [
        b"no table `nope` (no tables given)"
    ]
    h2 = KeyedHarness(Careful, tables={"a": {}})
    h2.push("k", "").run()
    assert h2.output.values() == [b"no table `nope` (the harness has: a)"]
