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
// Written on the JavaScript SDK (sdk/js/sluice.js): this module is plain
// JavaScript that `node --test` runs (flights_delay.test.js); app.js is the
// component's entry, built with componentize-js against ../../../../wit (world
// `processor`).

const FIELDS = ["carrier", "flight", "origin", "dest", "dep_delay", "arr_delay", "event_time"];
const I64_MIN = -(2n ** 63n);
const I64_MAX = 2n ** 63n - 1n;
// An integer literal as serde_json reads it into an i64 (it reads `-0` as a float).
const INTEGER = /^(0|-?[1-9][0-9]*)$/;
// JSON.parse keeps the last of two equal keys; serde_json refuses a flight field given
// twice. Lines where a field name occurs twice (rare) have their top-level keys
// scanned.
const KEY = /"(carrier|flight|origin|dest|dep_delay|arr_delay|event_time)"\s*:|\\u/g;

// Strict UTF-8 (serde_json refuses invalid UTF-8), and a BOM is kept so that
// JSON.parse refuses it as serde_json does.
const utf8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

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

export class FlightsDelay {
  constructor(config) {
    this.minDelay = config.float("min_delay", 0);
  }

  process(batch, out) {
    const minDelay = this.minDelay;
    for (const event of batch) {
      let fl;
      try {
        fl = parseFlight(event.value);
      } catch (e) {
        if (e instanceof NotAFlight) {
          out.reject(event, e.message);
          continue;
        }
        if (e instanceof RangeError || (typeof InternalError !== "undefined" && e instanceof InternalError)) {
          out.reject(event, `invalid JSON: ${e.message}`);
          continue;
        }
        throw e;
      }
      if (fl.dep === null || !(fl.dep.value >= minDelay)) continue;
      out.emit(
        '{"carrier":' + JSON.stringify(fl.carrier) +
          ',"flight":' + fl.flight +
          ',"origin":' + JSON.stringify(fl.origin) +
          ',"dest":' + JSON.stringify(fl.dest) +
          ',"dep_delay":' + fl.dep.source +
          ',"arr_delay":' + (fl.arr === null ? "null" : fl.arr.source) +
          ',"event_time":' + JSON.stringify(fl.eventTime) +
          "}",
        event.key,
        event.timestamp,
      );
    }
  }
}
