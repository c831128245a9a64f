"""{{name}}'s unit tests: `python -m pytest` (plain CPython, nothing to build)."""

import pytest

import sluice_sdk as sluice
from sluice_sdk import Record

from app import Tagger


def test_objects_are_tagged_and_the_rest_refused() -> None:
    out = sluice.run(Tagger, ['{"a":1}', "{}", "[1]", "{"], config={"tag": "x"})
    assert out.values() == [b'{"a":1,"tag":"x"}', b'{"tag":"x"}']
    assert [(r.index, r.reason) for r in out.rejected] == [
        (2, "not a JSON object"),
        (3, "not a JSON object"),
    ]


def test_key_and_event_time_are_kept() -> None:
    out = sluice.run(Tagger, [Record(b' {"b": "\xc3\xa9"} ', b"k1", 1700000000000)])
    assert out.records() == [
        Record('{"b": "é","tag":"hello"}'.encode(), b"k1", 1700000000000)
    ]


@pytest.mark.parametrize("tag", ['quote"d', "é", ""])
def test_the_tag_is_json_escaped(tag: str) -> None:
    out = sluice.run(Tagger, ["{}"], config={"tag": tag})
    assert out.json() == [{"tag": tag}]
