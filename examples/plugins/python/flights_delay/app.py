"""flights_delay, in Python: the same filter as plugins/flights-delay (Rust).

Keeps the flights that left at least `min_delay` minutes late, projected to a few
fields.

- config `min_delay` (minutes, a number; default 0);
- `dep_delay` >= `min_delay`: emitted as
  {"carrier","flight","origin","dest","dep_delay","arr_delay","event_time"}
  (compact JSON, numbers as written in the input) with the input's key and time;
- `dep_delay` below it, `null` or absent (a cancelled flight): dropped;
- not JSON, or not a flight (a field missing or of the wrong type): rejected with
  the reason, so it lands in the dead-letter sink.

Written on the Python SDK (sdk/python), built with componentize-py against
../../../../wit (world `processor`); `pytest` runs test_app.py without building.
"""

import json
import re
from json.encoder import encode_basestring as _quote  # C speed-up, no ASCII escaping

import sluice_sdk as sluice

_FIELDS = ("carrier", "flight", "origin", "dest", "dep_delay", "arr_delay", "event_time")
_I64_MIN = -(1 << 63)
_I64_MAX = (1 << 63) - 1
_U64_MAX = (1 << 64) - 1
_INF = float("inf")


class _Float(float):
    """A JSON number with a fraction or an exponent, remembering how it was written."""

    __slots__ = ("raw",)

    def __new__(cls, text):
        f = float.__new__(cls, text)
        if f in (_INF, -_INF):
            raise ValueError(f"number out of range: {text}")
        f.raw = text
        return f


def _no_constant(name):
    # Python's json accepts NaN / Infinity / -Infinity; JSON (and serde_json) do not.
    raise ValueError(f"{name} is not JSON")


_decode = json.JSONDecoder(parse_float=_Float, parse_constant=_no_constant).decode

# The fast path above misses two things serde_json sees: `-0` is a float to it (so
# not a valid `flight`), and a flight field given twice is an error. Lines that may
# hold either (rare) go through the slow path below instead.
_SUSPECT = re.compile(rb"-0(?![0-9.eE])|\\u")
_KEY = re.compile(rb'"(carrier|flight|origin|dest|dep_delay|arr_delay|event_time)"\s*:')
_NAMES = frozenset(_FIELDS)


def _int_or_neg_zero(text):
    return _Float(text) if text == "-0" else int(text)


def _decode_strict(text):
    dups = []  # per object, innermost first (the top-level object's comes last)

    def pairs(items):
        seen = set()
        dup = None
        for k, _ in items:
            if k in _NAMES:
                if k in seen:
                    dup = dup or k
                seen.add(k)
        dups.append(dup)
        return dict(items)

    doc = json.JSONDecoder(
        parse_float=_Float, parse_int=_int_or_neg_zero,
        parse_constant=_no_constant, object_pairs_hook=pairs,
    ).decode(text)
    if type(doc) is dict and dups[-1]:
        raise NotAFlight(f"duplicate field `{dups[-1]}`")
    return doc


class NotAFlight(Exception):
    pass


def _string(obj, name):
    v = obj.get(name, _MISSING)
    if v is _MISSING:
        raise NotAFlight(f"missing field `{name}`")
    if type(v) is not str:
        raise NotAFlight(f"invalid type for `{name}`: expected a string")
    if not v.isascii():
        try:
            v.encode("utf-8")  # a lone surrogate from a \ud800 escape
        except UnicodeEncodeError:
            raise NotAFlight(f"`{name}`: lone surrogate in a \\u escape") from None
    return v


def _number_or_null(obj, name):
    v = obj.get(name)  # missing means null, as serde does for an Option field
    if v is None or type(v) is _Float:
        return v
    if type(v) is int:
        if not _I64_MIN <= v <= _U64_MAX:  # serde reads it as an f64
            try:
                float(v)
            except OverflowError:
                raise NotAFlight(f"`{name}`: number out of range") from None
        return v
    raise NotAFlight(f"invalid type for `{name}`: expected a number or null")


_MISSING = object()


def _flight(value):
    """Parses one event into (carrier, flight, origin, dest, dep, arr, time)."""
    try:
        keys = _KEY.findall(value)
        if _SUSPECT.search(value) or len(set(keys)) != len(keys):
            doc = _decode_strict(value.decode("utf-8"))
        else:
            doc = _decode(value.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise NotAFlight(f"invalid JSON: {e}") from None
    if type(doc) is list:  # serde also reads a struct from a 7-element array
        if len(doc) != 7:
            raise NotAFlight(f"invalid length {len(doc)}, expected a 7-element flight")
        doc = dict(zip(_FIELDS, doc))
    elif type(doc) is not dict:
        raise NotAFlight("invalid type: expected a flight object")
    flight = doc.get("flight", _MISSING)
    if flight is _MISSING:
        raise NotAFlight("missing field `flight`")
    if type(flight) is not int or not (_I64_MIN <= flight <= _I64_MAX):
        raise NotAFlight("invalid type for `flight`: expected an i64")
    return (
        _string(doc, "carrier"),
        flight,
        _string(doc, "origin"),
        _string(doc, "dest"),
        _number_or_null(doc, "dep_delay"),
        _number_or_null(doc, "arr_delay"),
        _string(doc, "event_time"),
    )


def _num(v):
    if v is None:
        return "null"
    if type(v) is _Float:
        return v.raw
    return str(v)


class FlightsDelay(sluice.Processor):
    def __init__(self, config: sluice.Config) -> None:
        self.min_delay = config.float("min_delay", 0.0)

    def process(self, batch: sluice.Batch, out: sluice.Output) -> None:
        min_delay = self.min_delay
        emit = out.emit
        for event in batch:
            try:
                carrier, flight, origin, dest, dep, arr, event_time = _flight(event.value)
            except NotAFlight as e:
                out.reject(event, str(e))
                continue
            except RecursionError:
                out.reject(event, "invalid JSON: nested too deeply")
                continue
            if dep is None or not float(dep) >= min_delay:
                continue
            emit(
                (
                    '{"carrier":' + _quote(carrier)
                    + ',"flight":' + str(flight)
                    + ',"origin":' + _quote(origin)
                    + ',"dest":' + _quote(dest)
                    + ',"dep_delay":' + _num(dep)
                    + ',"arr_delay":' + _num(arr)
                    + ',"event_time":' + _quote(event_time)
                    + "}"
                ).encode("utf-8"),
                event.key,
                event.timestamp_ms,
            )


WitWorld = sluice.export_processor(FlightsDelay)
