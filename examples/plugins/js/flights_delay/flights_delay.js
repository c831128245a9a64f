// flights_delay, in JavaScript: the same filter as plugins/flights-delay (Rust).
//
// Keeps the flights that left at least `min_delay` minutes late, projected to a few
// fields.
// - config `min_delay` (minutes, a number; default 0);
// - `dep_delay` >= `min_delay`: emitted as
//   {"carrier","flight","origin","dest","dep_delay","arr_delay","event_time"}
//   (compact JSON, numbers as written in the input) with the input's key and time;
// - `dep_delay` below it, `null` or absent (a cancelled flight): dropped;
// - not JSON, or not a flight (a field missing or of the wrong type): rejected with
//   the reason, so it lands in the dead-letter sink.
//
// Built with componentize-js against ../../../../wit (world `processor`): the
// world's exports are this module's exported functions; a thrown string is the
// `err` of a `result`.

const FIELDS = ["carrier", "flight", "origin", "dest", "dep_delay", "arr_delay", "event_time"];
const I64_MIN = -(2n ** 63n);
const I64_MAX = 2n ** 63n - 1n;
// An integer literal as serde_json reads it into an i64 (it reads `-0` as a float).
const INTEGER = /^(0|-?[1-9][0-9]*)$/;
// JSON.parse keeps the last of two equal keys; serde_json refuses a flight field given
// twice. Lines where a field name occurs twice (rare) have their top-level keys
// scanned.
const KEY = /"(carrier|flight|origin|dest|dep_delay|arr_delay|event_time)"\s*:|\\u/g;

let minDelay = 0;

// Strict UTF-8 (serde_json refuses invalid UTF-8), and a BOM is kept so that
// JSON.parse refuses it as serde_json does.
const utf8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });
const encoder = new TextEncoder();

class NotAFlight extends Error {}

// A number as written in the input (JSON.parse's reviver sees the source text).
class Num {
  constructor(value, source) {
    this.value = value;
    this.source = source;
  }
}

let sourceAccess = false; // whether this engine passes the source text to revivers
try {
  JSON.parse("1.0", (k, v, ctx) => {
    sourceAccess = ctx !== undefined && ctx.source === "1.0";
    return v;
  });
} catch (_) {
  sourceAccess = false;
}

// Keys whose numbers are read: the three number fields, by name or by position (a
// flight given as an array). A number elsewhere is left alone (less garbage).
const NUMBER_KEYS = new Set(["flight", "dep_delay", "arr_delay", "1", "4", "5"]);

function revive(key, value, ctx) {
  if (typeof value === "number" && NUMBER_KEYS.has(key)) {
    return new Num(value, sourceAccess ? ctx.source : String(value));
  }
  return value;
}

function str(doc, name) {
  const v = doc[name];
  if (v === undefined) throw new NotAFlight(`missing field \`${name}\``);
  if (typeof v !== "string") throw new NotAFlight(`invalid type for \`${name}\`: expected a string`);
  if (/[\uD800-\uDFFF]/.test(v) && !wellFormed(v)) {
    throw new NotAFlight(`\`${name}\`: lone surrogate in a \\u escape`);
  }
  return v;
}

function wellFormed(s) {
  return typeof s.isWellFormed === "function"
    ? s.isWellFormed()
    : !/[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?:[^\uD800-\uDBFF]|^)[\uDC00-\uDFFF]/.test(s);
}

function numOrNull(doc, name) {
  const v = doc[name];
  if (v === undefined || v === null) return null; // absent means null, as serde does for an Option
  if (!(v instanceof Num)) throw new NotAFlight(`invalid type for \`${name}\`: expected a number or null`);
  if (!Number.isFinite(v.value)) throw new NotAFlight(`\`${name}\`: number out of range`);
  return v;
}

// The keys of the top-level object of `text` (valid JSON), in order.
function topLevelKeys(text) {
  const keys = [];
  let depth = 0;
  let expectKey = false;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (c === '"') {
      let j = i + 1;
      while (text[j] !== '"') j += text[j] === "\\" ? 2 : 1;
      if (depth === 1 && expectKey) keys.push(JSON.parse(text.slice(i, j + 1)));
      expectKey = false;
      i = j;
    } else if (c === "{" || c === "[") {
      depth++;
      expectKey = depth === 1 && c === "{";
    } else if (c === "}" || c === "]") {
      depth--;
    } else if (c === "," && depth === 1) {
      expectKey = true;
    }
  }
  return keys;
}

function duplicateField(text) {
  const seen = new Set();
  for (const k of topLevelKeys(text)) {
    if (FIELDS.includes(k)) {
      if (seen.has(k)) return k;
      seen.add(k);
    }
  }
  return null;
}

function parseFlight(bytes) {
  let doc;
  let text;
  try {
    text = utf8.decode(bytes);
    doc = JSON.parse(text, revive);
  } catch (e) {
    throw new NotAFlight(`invalid JSON: ${e && e.message ? e.message : e}`);
  }
  const found = text.match(KEY);
  if (found !== null && new Set(found).size !== found.length) {
    const dup = Array.isArray(doc) ? null : duplicateField(text);
    if (dup !== null) throw new NotAFlight(`duplicate field \`${dup}\``);
  }
  if (Array.isArray(doc)) {
    // serde also reads a struct from an array of its fields, in order.
    if (doc.length !== 7) throw new NotAFlight(`invalid length ${doc.length}, expected a 7-element flight`);
    const o = {};
    for (let i = 0; i < 7; i++) o[FIELDS[i]] = doc[i];
    doc = o;
  } else if (doc === null || typeof doc !== "object" || doc instanceof Num) {
    throw new NotAFlight("invalid type: expected a flight object");
  }
  const carrier = str(doc, "carrier");
  const flight = doc.flight;
  if (flight === undefined) throw new NotAFlight("missing field `flight`");
  if (!(flight instanceof Num) || !INTEGER.test(flight.source)) {
    throw new NotAFlight("invalid type for `flight`: expected an i64");
  }
  const f = BigInt(flight.source);
  if (f < I64_MIN || f > I64_MAX) throw new NotAFlight("invalid value for `flight`: out of the i64 range");
  return {
    carrier,
    flight: flight.source,
    origin: str(doc, "origin"),
    dest: str(doc, "dest"),
    dep: numOrNull(doc, "dep_delay"),
    arr: numOrNull(doc, "arr_delay"),
    eventTime: str(doc, "event_time"),
  };
}

// Like Rust's `str::parse::<f64>` on the trimmed value.
function parseF64(raw) {
  const t = raw.trim();
  if (/^[+-]?(inf|infinity)$/i.test(t)) return t[0] === "-" ? -Infinity : Infinity;
  if (/^[+-]?nan$/i.test(t)) return NaN;
  if (!/^[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?$/.test(t)) {
    throw `config \`min_delay\`: cannot parse \`${raw}\`: invalid float literal`;
  }
  return Number(t);
}

export function configure(config) {
  let value = 0;
  for (const [name, raw] of config) {
    if (name === "min_delay") {
      value = parseF64(raw);
      break;
    }
  }
  minDelay = value;
}

// A growable byte buffer for the packed output columns.
class Bytes {
  constructor(size) {
    this.buf = new Uint8Array(size);
    this.len = 0;
  }
  reserve(n) {
    if (this.len + n > this.buf.length) {
      const b = new Uint8Array(Math.max(this.buf.length * 2, this.len + n));
      b.set(this.buf.subarray(0, this.len));
      this.buf = b;
    }
  }
  pushString(s) {
    this.reserve(s.length * 3);
    this.len += encoder.encodeInto(s, this.buf.subarray(this.len)).written;
  }
  pushBytes(b) {
    this.reserve(b.length);
    this.buf.set(b, this.len);
    this.len += b.length;
  }
  bytes() {
    return this.buf.slice(0, this.len);
  }
}

export function process(batch) {
  const { values, valueEnds, keys, keyEnds, timestamps } = batch;
  const outValues = new Bytes(Math.max(1024, values.length >> 2));
  const outKeys = new Bytes(1024);
  const outValueEnds = [];
  const outKeyEnds = [];
  const outTimes = [];
  const rejected = [];
  let vstart = 0;
  let kstart = 0;
  for (let i = 0; i < valueEnds.length; i++) {
    const vend = valueEnds[i];
    const kend = keyEnds[i];
    const value = values.subarray(vstart, vend);
    const key = keys.subarray(kstart, kend);
    vstart = vend;
    kstart = kend;
    let fl;
    try {
      fl = parseFlight(value);
    } catch (e) {
      if (e instanceof NotAFlight) {
        rejected.push({ index: i, reason: e.message });
        continue;
      }
      if (e instanceof RangeError || (typeof InternalError !== "undefined" && e instanceof InternalError)) {
        rejected.push({ index: i, reason: `invalid JSON: ${e.message}` });
        continue;
      }
      throw e;
    }
    if (fl.dep === null || !(fl.dep.value >= minDelay)) continue;
    outValues.pushString(
      '{"carrier":' + JSON.stringify(fl.carrier) +
        ',"flight":' + fl.flight +
        ',"origin":' + JSON.stringify(fl.origin) +
        ',"dest":' + JSON.stringify(fl.dest) +
        ',"dep_delay":' + fl.dep.source +
        ',"arr_delay":' + (fl.arr === null ? "null" : fl.arr.source) +
        ',"event_time":' + JSON.stringify(fl.eventTime) +
        "}"
    );
    outValueEnds.push(outValues.len);
    outKeys.pushBytes(key);
    outKeyEnds.push(outKeys.len);
    outTimes.push(timestamps[i]);
  }
  return {
    events: {
      values: outValues.bytes(),
      valueEnds: new Uint32Array(outValueEnds),
      keys: outKeys.bytes(),
      keyEnds: new Uint32Array(outKeyEnds),
      timestamps: new BigInt64Array(outTimes),
      headers: [],
    },
    rejected,
  };
}
