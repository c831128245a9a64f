"""The SDK's own tests, under plain CPython: `python -m pytest sdk/python`."""

from __future__ import annotations

from typing import Any

import pytest

import sluice_sdk as sluice
from sluice_sdk import Batch, Config, Error, Output, Record, Rejection


def test_events_read_back_as_built() -> None:
    batch = Batch(
        [
            Record(b'{"a":1}', b"UA", 10),
            Record(b"", None, 20, [("trace", b"x"), ("span", b"y")]),
            Record(b"plain", b"AA", -5),
        ]
    )
    assert len(batch) == 3
    got = [(e.index, e.key, e.value, e.timestamp_ms, e.headers) for e in batch]
    assert got == [
        (0, b"UA", b'{"a":1}', 10, []),
        (1, None, b"", 20, [("trace", b"x"), ("span", b"y")]),
        (2, b"AA", b"plain", -5, []),
    ]
    assert batch[2].value == b"plain" and batch[-1].key == b"AA"
    assert batch.byte_size == 7 + 5 + 4
    with pytest.raises(IndexError):
        batch[3]


def test_values_may_be_str_and_lines_skip_blanks() -> None:
    assert Batch(["é", b"x"]).values() == ["é".encode(), b"x"]
    batch = Batch.from_lines('{"x":1}\n\n{"x":22}\n', timestamp_ms=7)
    assert batch.values() == [b'{"x":1}', b'{"x":22}']
    assert [e.timestamp_ms for e in batch] == [7, 7]
    assert batch.json() == [{"x": 1}, {"x": 22}]


def test_columns_are_checked() -> None:
    batch = Batch.from_columns(b"abcde", [2, 5], b"k", [1, 1], [1, 2], [(1, "h", b"v")])
    assert batch.records() == [
        Record(b"ab", b"k", 1, ()),
        Record(b"cde", None, 2, (("h", b"v"),)),
    ]
    with pytest.raises(ValueError, match="decrease"):
        Batch.from_columns(b"abcde", [3, 2])
    with pytest.raises(ValueError, match="past the buffer"):
        Batch.from_columns(b"ab", [3])
    with pytest.raises(ValueError, match="timestamps"):
        Batch.from_columns(b"ab", [1, 2], timestamps=[0])
    with pytest.raises(ValueError, match="header index"):
        Batch.from_columns(b"ab", [1, 2], headers=[(2, "h", b"")])


def test_json_is_strict() -> None:
    ok = Batch([b'{"a":[1,2.5,"\\u00e9"]}'])[0]
    assert ok.json() == {"a": [1, 2.5, "é"]}
    for bad, why in [
        (b"NaN", "NaN is not JSON"),
        (b'{"a":Infinity}', "Infinity is not JSON"),
        (b"\xff", "utf-8"),
        (b"{", "Expecting"),
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
    ]:
        with pytest.raises(ValueError, match=why):
            Batch([bad])[0].json()


def test_output_packs_what_was_emitted() -> None:
    src = Batch([Record(b"v0", b"k0", 5, [("h", b"1")]), Record(b"v1", None, 6)])
    out = Output()
    out.forward(src[0])
    out.emit("é", key="K", timestamp_ms=9)
    out.emit_json({"b": [1, "é"], "n": None}, key=src[1].key, timestamp_ms=src[1].timestamp_ms)
    out.emit(bytearray(b"ba"), headers=[("x", memoryview(b"y"))])
    out.reject(src[1], "no")
    out.reject(0, "also")
    assert len(out) == 4
    assert out.records() == [
        Record(b"v0", b"k0", 5, (("h", b"1"),)),
        Record("é".encode(), b"K", 9, ()),
        Record('{"b":[1,"é"],"n":null}'.encode(), None, 6, ()),
        Record(b"ba", None, 0, (("x", b"y"),)),
    ]
    assert out.rejected == [Rejection(1, "no"), Rejection(0, "also")]
    values, value_ends, keys, key_ends, times, headers = out._columns()
    assert values == b'v0\xc3\xa9{"b":[1,"\xc3\xa9"],"n":null}ba'
    assert value_ends == [2, 4, 27, 29]
    assert keys == b"k0K" and key_ends == [2, 3, 3, 3]
    assert times == [5, 9, 6, 0]
    assert headers == [(0, "h", b"1"), (3, "x", b"y")]


def test_forward_and_empty_keys_without_headers() -> None:
    # A batch without headers, keys on some events only; every kind of empty key
    # is no key.
    src = Batch([Record(b"a", b"k", 1), Record(b"bc", None, 2), Record(b"d", b"xyz", 3)])
    out = Output()
    for event in src:
        out.forward(event)
    out.emit(b"e", key="", timestamp_ms=4)
    out.emit(b"f", key=bytearray(), timestamp_ms=5)
    out.emit(b"g", key=memoryview(b"m"), timestamp_ms=6)
    assert out.records() == [
        Record(b"a", b"k", 1, ()),
        Record(b"bc", None, 2, ()),
        Record(b"d", b"xyz", 3, ()),
        Record(b"e", None, 4, ()),
        Record(b"f", None, 5, ()),
        Record(b"g", b"m", 6, ()),
    ]
    values, value_ends, keys, key_ends, times, headers = out._columns()
    assert (values, value_ends) == (b"abcdefg", [1, 3, 4, 5, 6, 7])
    assert (keys, key_ends) == (b"kxyzm", [1, 1, 4, 4, 4, 5])
    assert times == [1, 2, 3, 4, 5, 6] and headers == []


def test_emit_json_refuses_what_is_not_json_and_emits_nothing() -> None:
    out = Output()
    with pytest.raises(ValueError):
        out.emit_json({"x": float("nan")})
    with pytest.raises(TypeError):
        out.emit_json({"x": object()})
    assert len(out) == 0 and out.values() == []


def test_config_reads_and_reports_name_and_value() -> None:
    config = Config([("min_delay", "fifteen"), ("limit", " 3 "), ("on", "true"), ("x", "1.5e3")])
    assert config.get("limit") == " 3 " and config.get("nope") is None
    assert config.get("nope", "d") == "d" and "on" in config and config["x"] == "1.5e3"
    assert config.int("limit") == 3 and config.int("nope", 4) == 4
    assert config.float("x") == 1500.0 and config.float("limit") == 3.0
    assert config.float("nope") is None
    assert config.bool("on") is True and config.bool("nope", False) is False
    with pytest.raises(Error, match="config `min_delay`: cannot parse `fifteen`: invalid float"):
        config.float("min_delay")
    with pytest.raises(Error, match="config `x`: cannot parse `1.5e3`: invalid digit"):
        config.int("x")
    with pytest.raises(Error, match="`true` or `false`"):
        config.bool("limit")
    # What Rust's f64 parser refuses and Python's float() takes.
    for raw in ["1_000", "١٢", ""]:
        with pytest.raises(Error):
            Config({"v": raw}).float("v")
    assert Config({"v": "-inf"}).float("v") == float("-inf")
    assert Config([("a", "1"), ("a", "2")]).get("a") == "2"
    assert Config({"b": "1", "a": "2"}).items() == [("a", "2"), ("b", "1")]


class Tagger(sluice.Processor):
    def __init__(self, config: Config) -> None:
        self.tag = config.get("tag", "hello")
        if self.tag == "":
            raise Error("config `tag`: empty")

    def process(self, batch: Batch, out: Output) -> None:
        for event in batch:
            try:
                doc = event.json()
            except ValueError as e:
                out.reject(event, f"invalid JSON: {e}")
                continue
            if type(doc) is not dict:
                out.reject(event, "not a JSON object")
                continue
            doc["tag"] = self.tag
            out.emit_json(doc, key=event.key, timestamp_ms=event.timestamp_ms)


def test_run_configures_and_processes() -> None:
    out = sluice.run(Tagger, ['{"a":1}', "[1]", "{"], config={"tag": "x"})
    assert out.values() == [b'{"a":1,"tag":"x"}']
    assert [r.index for r in out.rejected] == [1, 2]
    assert out.rejected[0].reason == "not a JSON object"
    assert out.rejected[1].reason.startswith("invalid JSON: Expecting")
    with pytest.raises(Error, match="empty"):
        sluice.run(Tagger, [], config={"tag": ""})
    # An instance can be passed too.
    assert sluice.run(Tagger(Config()), Batch(["{}"])).json() == [{"tag": "hello"}]


class Top(sluice.Aggregator[dict[str, int]]):
    """The `n` most frequent values (ties by value)."""

    def __init__(self, config: Config) -> None:
        self.n = config.int("n", 3) or 3

    def create(self) -> dict[str, int]:
        return {}

    def add(self, state: dict[str, int], event: sluice.Event) -> dict[str, int]:
        value = event.json()
        if type(value) is not str:
            raise Error("not a string")
        state[value] = state.get(value, 0) + 1
        return state

    def merge(self, a: dict[str, int], b: dict[str, int]) -> dict[str, int]:
        for k, v in b.items():
            a[k] = a.get(k, 0) + v
        return a

    def finish(self, state: dict[str, int]) -> Any:
        top = sorted(state.items(), key=lambda kv: (-kv[1], kv[0]))[: self.n]
        return [{"value": k, "count": c} for k, c in top]


def test_aggregate_runs_one_window_through_the_bytes() -> None:
    events = ['"BOS"', '"LAX"', '"BOS"', '"SFO"', '"BOS"', '"LAX"']
    got = sluice.aggregate(Top, events, config={"n": "2"})
    assert got == '[{"value":"BOS","count":3},{"value":"LAX","count":2}]'
    top = Top(Config())
    assert top.decode(top.encode({"a": 1})) == {"a": 1}
    assert top.merge({"a": 1}, {"a": 2, "b": 1}) == {"a": 3, "b": 1}
    with pytest.raises(Error):
        sluice.aggregate(Top, ["1"])


def test_log_goes_to_stderr_off_wasm(capsys: pytest.CaptureFixture[str]) -> None:
    sluice.log.info("hello")
    sluice.log("warn", "careful")
    assert capsys.readouterr().err == "[info] hello\n[warn] careful\n"
    with pytest.raises(ValueError, match="log level"):
        sluice.log("loud", "x")


def test_export_is_a_placeholder_off_wasm() -> None:
    world = sluice.export_processor(Tagger)
    with pytest.raises(RuntimeError, match="componentize-py"):
        world()
    with pytest.raises(RuntimeError):
        sluice.export_aggregator(Top)()
