"""{{name}}'s unit tests: `python -m pytest` (plain CPython, nothing to build)."""

import pytest

import sluice_sdk as sluice

from app import Top


def test_the_most_frequent_values_of_a_window() -> None:
    events = ['"LAX"', '"BOS"', '"SFO"', '"BOS"', '"LAX"', '"BOS"', "7"]
    assert sluice.aggregate(Top, events, config={"n": "2"}) == (
        '[{"value":"BOS","count":3},{"value":"LAX","count":2}]'
    )
    assert sluice.aggregate(Top, events) == (
        '[{"value":"BOS","count":3},{"value":"LAX","count":2},{"value":"SFO","count":1}]'
    )


def test_merge_adds_counts() -> None:
    top = Top(sluice.Config())
    assert top.merge({'"a"': 1}, {'"a"': 2, '"b"': 1}) == {'"a"': 3, '"b"': 1}
    assert top.merge(top.create(), {'"a"': 1}) == {'"a"': 1}


def test_n_must_be_positive() -> None:
    with pytest.raises(sluice.Error, match="config `n`"):
        Top(sluice.Config({"n": "0"}))
