// {{name}}: a sluice processing plugin in JavaScript.
//
// A WebAssembly component of the `sluice:plugin/processor` world (wit/plugin.wit),
// packaged with componentize-js (see build.sh): the world's exports are this
// module's exported functions, and a thrown string is the `err` of their `result`.
//
// It tags events: every event whose value is a JSON object is passed on with one
// more field, `"tag": <config tag>`, appended at the end (compact JSON, the rest of
// the object byte for byte), with its key and event time; anything else is refused
// with the reason "not a JSON object" (the daemon sends it to the dead-letter sink).
//
// Config: `tag` (a string, default "hello").

const utf8 = new TextDecoder("utf-8", { fatal: true }); // refuses invalid UTF-8
const encoder = new TextEncoder();
const COMMA = encoder.encode(",");

// `"tag":"<tag>"}`, JSON-escaped once in `configure`.
let field = encoder.encode('"tag":"hello"}');

// Called once per instance with the stage's config as [name, value] string pairs
// (TOML numbers and booleans in their text form). `throw "reason"` refuses the
// config: the stage then does not start.
export function configure(config) {
  const settings = new Map(config);
  const tag = settings.has("tag") ? settings.get("tag") : "hello";
  field = encoder.encode('"tag":' + JSON.stringify(tag) + "}");
}

// The event's value parsed, if it is a JSON object; else null.
function object(bytes) {
  let doc;
  try {
    doc = JSON.parse(utf8.decode(bytes));
  } catch (_) {
    return null; // not UTF-8, not JSON, or nested too deeply
  }
  return doc !== null && typeof doc === "object" && !Array.isArray(doc) ? doc : null;
}

// Trims JSON whitespace (space, tab, CR, LF) from both ends of `bytes`.
function trim(bytes) {
  const ws = (b) => b === 0x20 || b === 0x09 || b === 0x0a || b === 0x0d;
  let start = 0;
  let end = bytes.length;
  while (start < end && ws(bytes[start])) start++;
  while (end > start && ws(bytes[end - 1])) end--;
  return bytes.subarray(start, end);
}

// Concatenates byte arrays.
function concat(parts, size) {
  const all = new Uint8Array(size);
  let at = 0;
  for (const p of parts) {
    all.set(p, at);
    at += p.length;
  }
  return all;
}

// Called once per micro-batch. The batch is packed: event i's value is
// values[valueEnds[i-1] .. valueEnds[i]], its key likewise (an empty key means
// none). The output is packed the same way. `throw "reason"` fails the whole batch
// (the stage's `on_error` policy applies); to refuse single events, list them in
// `rejected`.
export function process(batch) {
  const { values, valueEnds, keys, keyEnds, timestamps } = batch;
  const outValues = [];
  const outValueEnds = [];
  const outKeys = [];
  const outKeyEnds = [];
  const outTimes = [];
  const rejected = [];
  let valueSize = 0;
  let keySize = 0;
  let vstart = 0;
  let kstart = 0;
  for (let i = 0; i < valueEnds.length; i++) {
    const value = values.subarray(vstart, valueEnds[i]);
    const key = keys.subarray(kstart, keyEnds[i]);
    vstart = valueEnds[i];
    kstart = keyEnds[i];

    const obj = object(value);
    if (obj === null) {
      rejected.push({ index: i, reason: "not a JSON object" });
      continue;
    }
    // The original bytes without the closing `}`, then the new field.
    const head = trim(value);
    const parts = [head.subarray(0, head.length - 1)];
    if (Object.keys(obj).length > 0) parts.push(COMMA);
    parts.push(field);
    for (const p of parts) {
      outValues.push(p);
      valueSize += p.length;
    }
    outValueEnds.push(valueSize);
    outKeys.push(key);
    keySize += key.length;
    outKeyEnds.push(keySize);
    outTimes.push(timestamps[i]);
  }
  return {
    events: {
      values: concat(outValues, valueSize),
      valueEnds: new Uint32Array(outValueEnds),
      keys: concat(outKeys, keySize),
      keyEnds: new Uint32Array(outKeyEnds),
      timestamps: new BigInt64Array(outTimes),
      headers: [],
    },
    rejected,
  };
}
