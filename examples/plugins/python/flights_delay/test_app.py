"""flights_delay's unit tests, under plain CPython without building:
`python -m pytest` here (with sdk/python on the path: see conftest.py)."""

import pytest

import sluice_sdk as sluice
from sluice_sdk import Record

from app import FlightsDelay

LATE = b'{"carrier":"UA","flight":1545,"origin":"EWR","dest":"IAH","dep_delay":20,"arr_delay":11,"event_time":"2013-01-01T05:00:00Z","extra":[1,{"x":2}]}'
ON_TIME = b'{"carrier":"AA","flight":1,"origin":"JFK","dest":"MIA","dep_delay":-1,"arr_delay":null,"event_time":"2013-01-01T05:00:00Z"}'
CANCELLED = b'{"carrier":"B6","flight":2,"origin":"JFK","dest":"BOS","dep_delay":null,"arr_delay":null,"event_time":"t"}'


def test_keeps_the_late_ones_projected_with_key_and_time() -> None:
    out = sluice.run(
        FlightsDelay,
        [Record(LATE, b"UA", 1000), Record(ON_TIME, b"AA", 2000), Record(CANCELLED, None, 3)],
        config={"min_delay": "15"},
    )
    assert out.records() == [
        Record(
            b'{"carrier":"UA","flight":1545,"origin":"EWR","dest":"IAH","dep_delay":20,'
            b'"arr_delay":11,"event_time":"2013-01-01T05:00:00Z"}',
            b"UA",
            1000,
        )
    ]
    assert out.rejected == []
    # Default min_delay 0: the on-time flight (-1) still goes, 0 would stay.
    assert len(sluice.run(FlightsDelay, [LATE, ON_TIME, CANCELLED])) == 1


def test_numbers_are_written_as_in_the_input() -> None:
    late = LATE.replace(b'"dep_delay":20', b'"dep_delay":2.50e1').replace(b'"arr_delay":11', b'"arr_delay":-0.0')
    assert sluice.run(FlightsDelay, [late], config={"min_delay": "25"}).json() == [
        {"carrier": "UA", "flight": 1545, "origin": "EWR", "dest": "IAH", "dep_delay": 25.0,
         "arr_delay": -0.0, "event_time": "2013-01-01T05:00:00Z"}
    ]
    assert b'"dep_delay":2.50e1,"arr_delay":-0.0,' in sluice.run(FlightsDelay, [late]).values()[0]


def test_what_is_not_a_flight_is_rejected_with_the_reason() -> None:
    out = sluice.run(FlightsDelay, [
        b"{",
        b'{"carrier":"UA"}',
        LATE.replace(b'"flight":1545', b'"flight":"1545"'),
        LATE.replace(b'"dep_delay":20', b'"dep_delay":20,"dep_delay":21'),
        b"[1,2]",
        b"NaN",
    ])
    assert [(r.index, r.reason.split(":")[0]) for r in out.rejected] == [
        (0, "invalid JSON"),
        (1, "missing field `flight`"),
        (2, "invalid type for `flight`"),
        (3, "duplicate field `dep_delay`"),
        (4, "invalid length 2, expected a 7-element flight"),
        (5, "invalid JSON"),
    ]
    assert len(out) == 0


def test_a_bad_min_delay_is_refused() -> None:
    with pytest.raises(sluice.Error, match="config `min_delay`: cannot parse `soon`"):
        FlightsDelay(sluice.Config({"min_delay": "soon"}))
