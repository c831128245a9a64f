// The sluice plugin SDK for JavaScript: write processing plugins (WebAssembly
// components of the `sluice:plugin/processor` world, built with componentize-js)
// as a class, and test them under `node --test` without building.
//
//   // tagger.js: the plugin's logic, plain JavaScript
//   export class Tagger {
//     constructor(config) { this.tag = config.get("tag", "hello"); }
//     process(batch, out) {
//       for (const event of batch) {
//         let doc;
//         try { doc = event.json(); } catch (e) { out.reject(event, `invalid JSON: ${e.message}`); continue; }
//         doc.tag = this.tag;
//         out.emitJson(doc, event.key, event.timestampMs);
//       }
//     }
//   }
//
//   // app.js: the component's entry (only componentize-js reads it)
//   import * as host from "sluice:plugin/host@0.1.0";
//   import { exportProcessor } from "./sluice.js";
//   import { Tagger } from "./tagger.js";
//   export const { configure, process } = exportProcessor(Tagger, host);
//
// The host hands over a batch as packed columns (all values in one buffer and
// their end offsets, likewise the keys). An `Event` is a light view of one row
// (its `value` a `subarray`, no copy); an `Output` writes what is emitted
// straight into growing buffers and hands them over once, at the end of the call.
//
// Types: sluice.d.ts, beside this file.

const utf8 = new TextDecoder("utf-8", { fatal: true });
const encoder = new TextEncoder();
const EMPTY = new Uint8Array(0);

/**
 * Thrown in a constructor (configure), it refuses the config: the stage does not
 * start and the daemon says why. Thrown in `process`, it fails the whole batch
 * (the stage's `on_error` policy applies). Any other exception does the same,
 * its message prefixed with its name. To refuse single events, use
 * `Output.reject`.
 */
export class SluiceError extends Error {
  constructor(message) {
    super(message);
    this.name = "SluiceError";
  }
}

function asBytes(data) {
  if (data instanceof Uint8Array) return data;
  if (typeof data === "string") return encoder.encode(data);
  if (ArrayBuffer.isView(data)) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  if (data instanceof ArrayBuffer) return new Uint8Array(data);
  throw new TypeError(`expected a string or bytes, got ${data === null ? "null" : typeof data}`);
}

/** Bytes as UTF-8 text; throws TypeError when they are not UTF-8. */
export function decodeText(bytes) {
  return utf8.decode(bytes);
}

/**
 * A stage's `config = { … }` table, as (name, value) string pairs. Values are
 * always strings: TOML numbers and booleans arrive in their TOML text form; read
 * them with `int`, `float` or `bool`, which throw
 * `SluiceError("config `NAME`: cannot parse `VALUE`: …")` on a bad value.
 */
export class Config {
  constructor(pairs = []) {
    const items = pairs instanceof Map ? pairs.entries() : Array.isArray(pairs) ? pairs : Object.entries(pairs);
    /** @type {Map<string, string>} */
    this.map = new Map();
    for (const [k, v] of items) this.map.set(String(k), String(v)); // a later pair wins
  }

  /** The raw value of `name`, or `fallback` (default undefined) when it is not set. */
  get(name, fallback = undefined) {
    return this.map.has(name) ? this.map.get(name) : fallback;
  }

  has(name) {
    return this.map.has(name);
  }

  /** All pairs, sorted by name (as the host gives them). */
  entries() {
    return [...this.map.entries()].sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
  }

  #fail(name, raw, why) {
    return new SluiceError(`config \`${name}\`: cannot parse \`${raw}\`: ${why}`);
  }

  /** The value of `name` as an integer, or `fallback` when it is not set. */
  int(name, fallback = undefined) {
    if (!this.map.has(name)) return fallback;
    const raw = this.map.get(name);
    const t = raw.trim();
    if (!/^[+-]?[0-9]+$/.test(t)) throw this.#fail(name, raw, "invalid digit found in string");
    const n = Number(t);
    if (!Number.isSafeInteger(n)) throw this.#fail(name, raw, "number too large to fit in target type");
    return n;
  }

  /**
   * The value of `name` as a number (what Rust's `f64::from_str` reads: `15`,
   * `1.5e3`, `inf`, `NaN`), or `fallback` when it is not set.
   */
  float(name, fallback = undefined) {
    if (!this.map.has(name)) return fallback;
    const raw = this.map.get(name);
    const t = raw.trim();
    if (/^[+-]?(inf|infinity)$/i.test(t)) return t[0] === "-" ? -Infinity : Infinity;
    if (/^[+-]?nan$/i.test(t)) return NaN;
    if (!/^[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?$/.test(t)) {
      throw this.#fail(name, raw, "invalid float literal");
    }
    return Number(t);
  }

  /** The value of `name` as `true` or `false`, or `fallback` when it is not set. */
  bool(name, fallback = undefined) {
    if (!this.map.has(name)) return fallback;
    const raw = this.map.get(name);
    const t = raw.trim();
    if (t !== "true" && t !== "false") throw this.#fail(name, raw, "provided string was not `true` or `false`");
    return t === "true";
  }
}

/**
 * One event of a batch: a view of its row in the packed columns. `index` (its
 * position in the batch) and `value` (its payload bytes, a view into the batch)
 * are fields; `key`, `timestampMs` and `headers` are read from the batch when
 * asked for.
 */
export class Event {
  constructor(batch, index, value) {
    /** @type {Batch} */
    this.batch = batch;
    /** @type {number} */
    this.index = index;
    /** @type {Uint8Array} */
    this.value = value;
  }

  /** The key, or null when the event has none (an empty key is none). */
  get key() {
    const b = this.batch;
    const i = this.index;
    const start = i === 0 ? 0 : b.keyEnds[i - 1];
    const end = b.keyEnds[i];
    return end > start ? b.keys.subarray(start, end) : null;
  }

  /** Event time, in milliseconds since the Unix epoch (UTC), as a number. */
  get timestampMs() {
    return Number(this.batch.timestamps[this.index]);
  }

  /** Event time as the host sends it (a bigint). */
  get timestamp() {
    return this.batch.timestamps[this.index];
  }

  /** The event's headers as [name, value] pairs, in order. */
  get headers() {
    return this.batch.headersOf(this.index);
  }

  /** The value as text; throws TypeError when it is not UTF-8. */
  text() {
    return utf8.decode(this.value);
  }

  /** The value parsed as JSON; throws (SyntaxError, TypeError) when it is not. */
  json() {
    return JSON.parse(utf8.decode(this.value));
  }

  /** This event as plain data. */
  record() {
    return { value: this.value, key: this.key, timestampMs: this.timestampMs, headers: this.headers };
  }
}

// An iterator over a batch's events that reuses its result object.
class EventIterator {
  constructor(batch) {
    this.batch = batch;
    this.values = batch.values;
    this.ends = batch.valueEnds;
    this.i = 0;
    this.start = 0;
    this.result = { value: undefined, done: false };
  }
  next() {
    const i = this.i;
    const r = this.result;
    if (i >= this.ends.length) {
      r.value = undefined;
      r.done = true;
      return r;
    }
    const end = this.ends[i];
    r.value = new Event(this.batch, i, this.values.subarray(this.start, end));
    this.start = end;
    this.i = i + 1;
    return r;
  }
  [Symbol.iterator]() {
    return this;
  }
}

// The packed columns of a batch (the WIT `event-batch`, as componentize-js
// hands it over).
function setColumns(batch, c) {
  batch.values = c.values;
  batch.valueEnds = c.valueEnds;
  batch.keys = c.keys;
  batch.keyEnds = c.keyEnds;
  batch.timestamps = c.timestamps;
  batch.headers = c.headers;
}

/**
 * A micro-batch of events, in order: iterate it (`for (const event of batch)`),
 * `at(i)`, `length`. In tests, build one with `new Batch([...])` from values
 * (strings or bytes) or records (`{ value, key, timestampMs, headers }`), or
 * with `Batch.fromLines(text)`.
 */
export class Batch {
  constructor(items = []) {
    const out = new Output();
    for (const item of items) {
      if (typeof item === "string" || item instanceof Uint8Array) out.emit(item);
      else out.emit(item.value, item.key ?? null, item.timestampMs ?? 0, item.headers ?? []);
    }
    setColumns(this, out.toWit().events);
  }

  /**
   * A batch from its packed columns, as the host sends them (the WIT
   * `event-batch`: `{ values, valueEnds, keys, keyEnds, timestamps, headers }`).
   * Checks that they fit together unless `check` is false.
   */
  static fromColumns(columns, check = true) {
    const batch = Object.create(Batch.prototype);
    if (!check) {
      // As the host sends them: typed arrays already (no copy).
      setColumns(batch, columns);
      return batch;
    }
    const n = columns.valueEnds.length;
    const c = {
      values: asBytes(columns.values),
      valueEnds: Uint32Array.from(columns.valueEnds),
      keys: asBytes(columns.keys ?? EMPTY),
      keyEnds: columns.keyEnds ? Uint32Array.from(columns.keyEnds) : new Uint32Array(n),
      timestamps: columns.timestamps ? BigInt64Array.from(columns.timestamps, BigInt) : new BigInt64Array(n),
      headers: (columns.headers ?? []).map((h) => ({ index: h.index, name: String(h.name), value: asBytes(h.value) })),
    };
    if (c.keyEnds.length !== n || c.timestamps.length !== n) {
      throw new RangeError(`${n} value ends, ${c.keyEnds.length} key ends, ${c.timestamps.length} timestamps`);
    }
    for (const [name, ends, buf] of [["value", c.valueEnds, c.values], ["key", c.keyEnds, c.keys]]) {
      let last = 0;
      for (const end of ends) {
        if (end < last) throw new RangeError(`${name} ends decrease (${last} then ${end})`);
        last = end;
      }
      if (last > buf.length) throw new RangeError(`${name} ends go past the buffer (${last} > ${buf.length})`);
    }
    let lastIndex = 0;
    for (const h of c.headers) {
      if (h.index < lastIndex || h.index >= n) {
        throw new RangeError(`header index ${h.index} out of order or range (${n} events)`);
      }
      lastIndex = h.index;
    }
    setColumns(batch, c);
    return batch;
  }

  /** One event per non-empty line of `text`, no key, time `timestampMs`. */
  static fromLines(text, timestampMs = 0) {
    const lines = (typeof text === "string" ? text : utf8.decode(text)).split("\n").filter((l) => l !== "");
    return new Batch(lines.map((value) => ({ value, timestampMs })));
  }

  /** The number of events. */
  get length() {
    return this.valueEnds.length;
  }

  /** Event `index` (negative counts from the end), or undefined. */
  at(index) {
    const n = this.valueEnds.length;
    if (index < 0) index += n;
    if (!(index >= 0 && index < n)) return undefined;
    const start = index === 0 ? 0 : this.valueEnds[index - 1];
    return new Event(this, index, this.values.subarray(start, this.valueEnds[index]));
  }

  [Symbol.iterator]() {
    return new EventIterator(this);
  }

  /** Every event's value (bytes), in order. */
  valuesList() {
    return Array.from(this, (e) => e.value);
  }

  /** Every event's value as text, in order. */
  texts() {
    return Array.from(this, (e) => e.text());
  }

  /** Every event's value parsed as JSON, in order. */
  json() {
    return Array.from(this, (e) => e.json());
  }

  /** Every event as plain data `{ value, key, timestampMs, headers }`, in order. */
  records() {
    return Array.from(this, (e) => e.record());
  }

  /** The headers of event `index`, as [name, value] pairs. */
  headersOf(index) {
    const hs = this.headers;
    if (hs.length === 0) return [];
    let lo = 0;
    let hi = hs.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (hs[mid].index < index) lo = mid + 1;
      else hi = mid;
    }
    const found = [];
    for (let i = lo; i < hs.length && hs[i].index === index; i++) found.push([hs[i].name, hs[i].value]);
    return found;
  }
}

// A growable byte buffer. (Few calls per push: in a component, JavaScript is
// interpreted, and a call costs more than the work of a short push.)
class Bytes {
  constructor(size) {
    this.buf = new Uint8Array(size);
    this.len = 0;
  }
  grow(n) {
    const b = new Uint8Array(Math.max(this.buf.length * 2, this.len + n));
    b.set(this.buf.subarray(0, this.len));
    this.buf = b;
  }
  pushString(s) {
    // UTF-8 takes at most 3 bytes per UTF-16 unit.
    if (this.len + s.length * 3 > this.buf.length) this.grow(s.length * 3);
    this.len += encoder.encodeInto(s, this.buf.subarray(this.len)).written;
  }
  pushBytes(b) {
    const n = b.length;
    if (n === 0) return;
    if (this.len + n > this.buf.length) this.grow(n);
    this.buf.set(b, this.len);
    this.len += n;
  }
  bytes() {
    return this.buf.slice(0, this.len);
  }
}

/**
 * What a plugin returns for one batch: the events it passes on (`forward`,
 * `emit`, `emitJson`), in order, and the input events it refuses (`reject`).
 */
export class Output {
  constructor(sizeHint = 1024) {
    this.valueBytes = new Bytes(sizeHint);
    this.keyBytes = new Bytes(256);
    /** @type {number[]} */
    this.valueEnds = [];
    /** @type {number[]} */
    this.keyEnds = [];
    /** @type {bigint[]} */
    this.timestamps = [];
    /** @type {{index: number, name: string, value: Uint8Array}[]} */
    this.headers = [];
    /** The refused input events, in the order they were refused. @type {{index: number, reason: string}[]} */
    this.rejected = [];
    // What an event emitted without a key or a time gets: none and 0, but in
    // a keyed processor the key being processed and the time of its event or
    // timer.
    this.defaultKey = null;
    this.defaultTime = 0n;
  }

  /**
   * Emits a new event. `value` and `key` are strings (written as UTF-8) or
   * bytes; usually `key` and `timestampMs` are those of the input event it
   * comes from (`event.key`, `event.timestampMs`). Without a key the event
   * has none, without a time its time is 0 — but in a `KeyedProcessor` it
   * gets the key being processed, and the time of the event (`process`) or
   * timer (`onTimer`).
   */
  emit(value, key = null, timestampMs = undefined, headers = undefined) {
    const vb = this.valueBytes;
    if (typeof value === "string") vb.pushString(value);
    else vb.pushBytes(value instanceof Uint8Array ? value : asBytes(value));
    this.valueEnds.push(vb.len);
    const kb = this.keyBytes;
    if (key !== null && key !== undefined && key.length !== 0) {
      if (key instanceof Uint8Array) kb.pushBytes(key);
      else if (typeof key === "string") kb.pushString(key);
      else kb.pushBytes(asBytes(key));
    } else if (this.defaultKey !== null) {
      kb.pushBytes(this.defaultKey);
    }
    this.keyEnds.push(kb.len);
    if (timestampMs === undefined || timestampMs === null) this.timestamps.push(this.defaultTime);
    else this.timestamps.push(typeof timestampMs === "bigint" ? timestampMs : BigInt(timestampMs));
    if (headers !== undefined && headers.length > 0) {
      const index = this.valueEnds.length - 1;
      for (const [name, v] of headers) this.headers.push({ index, name: String(name), value: asBytes(v) });
    }
  }

  /**
   * Emits a new event whose value is `value` as JSON text; throws (and emits
   * nothing) when it cannot be written as JSON.
   */
  emitJson(value, key = null, timestampMs = undefined, headers = undefined) {
    const text = JSON.stringify(value);
    if (text === undefined) throw new TypeError(`cannot write ${typeof value} as JSON`);
    this.emit(text, key, timestampMs, headers);
  }

  /** Passes `event` on unchanged: value, key, event time and headers. */
  forward(event) {
    const b = event.batch;
    this.emit(event.value, event.key, b.timestamps[event.index], b.headers.length > 0 ? b.headersOf(event.index) : undefined);
  }

  /**
   * Refuses an input event (an `Event` or its index): the host sends its
   * original bytes to the dead-letter sink with `reason`.
   */
  reject(event, reason) {
    this.rejected.push({ index: typeof event === "number" ? event : event.index, reason: String(reason) });
  }

  /** Events emitted so far. */
  get length() {
    return this.valueEnds.length;
  }

  /** The output in the WIT `output` shape, as componentize-js wants it. */
  toWit() {
    return {
      events: {
        values: this.valueBytes.bytes(),
        valueEnds: Uint32Array.from(this.valueEnds),
        keys: this.keyBytes.bytes(),
        keyEnds: Uint32Array.from(this.keyEnds),
        timestamps: BigInt64Array.from(this.timestamps),
        headers: this.headers,
      },
      rejected: this.rejected,
    };
  }

  /** The events emitted so far, as a batch (for tests). */
  get events() {
    return Batch.fromColumns(this.toWit().events, false);
  }

  /** The values emitted so far, as bytes (for tests). */
  values() {
    return this.events.valuesList();
  }

  /** The values emitted so far, as text (for tests). */
  texts() {
    return this.events.texts();
  }

  /** The values emitted so far, parsed as JSON (for tests). */
  json() {
    return this.events.json();
  }

  /** The events emitted so far as `{ value, key, timestampMs, headers }` (for tests). */
  records() {
    return this.events.records();
  }
}

const LEVELS = ["trace", "debug", "info", "warn", "error"];
let hostLog = null;

/** Writes to the daemon's log (tagged with pipeline, stage and plugin); off Wasm, to stderr. */
export function log(level, message) {
  if (!LEVELS.includes(level)) throw new RangeError(`log level ${JSON.stringify(level)}: use one of ${LEVELS.join(", ")}`);
  if (hostLog !== null) hostLog(level, String(message));
  else console.error(`[${level}] ${message}`);
}
log.trace = (message) => log("trace", message);
log.debug = (message) => log("debug", message);
log.info = (message) => log("info", message);
log.warn = (message) => log("warn", message);
log.error = (message) => log("error", message);

function useHost(host) {
  if (host === undefined) return;
  if (host === null || typeof host.log !== "function") {
    throw new TypeError('host: expected the module "sluice:plugin/host@0.1.0" (with its log function)');
  }
  hostLog = host.log;
}

// The text the host gets for an exception (a thrown string is the `err` of a
// componentize-js export's result).
function failure(e) {
  if (e instanceof SluiceError) return e.message;
  if (e instanceof Error) return `${e.name}: ${e.message}`;
  return String(e);
}

function guard(f) {
  try {
    return f();
  } catch (e) {
    throw failure(e);
  }
}

function makeConfig(config) {
  return config instanceof Config ? config : new Config(config ?? []);
}

/**
 * The exports of the processor world for a processor class (constructed with a
 * `Config`, with a `process(batch, out)` method):
 * `export const { configure, process } = exportProcessor(MyProcessor, host)`,
 * where `host` is `import * as host from "sluice:plugin/host@0.1.0"` (for `log`).
 */
export function exportProcessor(cls, host = undefined) {
  useHost(host);
  let instance = null;
  return {
    configure(pairs) {
      guard(() => {
        instance = new cls(new Config(pairs));
      });
    },
    process(columns) {
      return guard(() => {
        if (instance === null) throw new SluiceError("process called before configure");
        const batch = Batch.fromColumns(columns, false);
        const out = new Output(Math.max(1024, batch.values.length >> 2));
        instance.process(batch, out);
        return out.toWit();
      });
    },
  };
}

/**
 * A user-defined aggregate over event-time windows (the `aggregator` world).
 * Subclass it and give `create`, `add`, `merge` and `finish`; `encode` and
 * `decode` (the bytes the host keeps per window) default to JSON. `merge` must
 * be associative, with `create` its identity. An event's value is the JSON text
 * of the aggregate's `field` (events where it is null or absent are skipped),
 * or the whole record when there is none.
 */
export class Aggregator {
  constructor(config) {
    this.config = config;
  }
  /** The accumulator of an empty window. */
  create() {
    throw new SluiceError("Aggregator.create is not implemented");
  }
  /** Adds one event to an accumulator; returns the accumulator. Throwing refuses the event. */
  add(_state, _event) {
    throw new SluiceError("Aggregator.add is not implemented");
  }
  /** The accumulator of two windows joined into one. */
  merge(_a, _b) {
    throw new SluiceError("Aggregator.merge is not implemented");
  }
  /** The window's result, a JSON value. */
  finish(state) {
    return state;
  }
  /** The accumulator as the bytes the host keeps (default: JSON). */
  encode(state) {
    return encoder.encode(JSON.stringify(state));
  }
  /** An accumulator back from its bytes, perhaps written by an older version (default: JSON). */
  decode(bytes) {
    return JSON.parse(utf8.decode(bytes));
  }
}

/**
 * The exports of the aggregator world for an `Aggregator` subclass:
 * `export const { configure, create, accumulate, merge, finish } = exportAggregator(MyAggregate, host)`.
 */
export function exportAggregator(cls, host = undefined) {
  useHost(host);
  let agg = null;
  const get = () => {
    if (agg === null) throw new SluiceError("called before configure");
    return agg;
  };
  return {
    configure(pairs) {
      guard(() => {
        agg = new cls(new Config(pairs));
      });
    },
    create() {
      return guard(() => get().encode(get().create()));
    },
    accumulate(states, columns, groups) {
      return guard(() => {
        const a = get();
        const decoded = Array.from(states, (s) => a.decode(s));
        const batch = Batch.fromColumns(columns, false);
        for (const event of batch) {
          const group = groups[event.index];
          if (!(group < decoded.length)) throw new SluiceError(`group ${group} of ${decoded.length} states`);
          decoded[group] = a.add(decoded[group], event);
        }
        return decoded.map((s) => a.encode(s));
      });
    },
    merge(x, y) {
      return guard(() => {
        const a = get();
        return a.encode(a.merge(a.decode(x), a.decode(y)));
      });
    },
    finish(states) {
      return guard(() => {
        const a = get();
        return Array.from(states, (s) => finishText(a, a.decode(s)));
      });
    },
  };
}

function finishText(a, state) {
  const text = JSON.stringify(a.finish(state));
  if (text === undefined) throw new SluiceError("finish returned nothing that JSON can write");
  return text;
}

/**
 * Runs one batch through a processor as the host would (for tests): builds it
 * from `config` when given a class; returns its `Output`.
 */
export function run(processor, batch, config = []) {
  const p = typeof processor === "function" ? new processor(makeConfig(config)) : processor;
  const out = new Output();
  p.process(batch instanceof Batch ? batch : new Batch(batch), out);
  return out;
}

/**
 * One window over every event of `batch`, as the host would run it (for tests):
 * the accumulator goes through `encode`/`decode` between steps. Returns the
 * window's result as JSON text.
 */
export function aggregate(aggregator, batch, config = []) {
  const a = typeof aggregator === "function" ? new aggregator(makeConfig(config)) : aggregator;
  let data = a.encode(a.create());
  for (const event of batch instanceof Batch ? batch : new Batch(batch)) {
    data = a.encode(a.add(a.decode(data), event));
  }
  return finishText(a, a.decode(data));
}

// ---------------------------------------------------------------------------
// Keyed processors: the `keyed-processor` world of `wit/0.2.0/plugin.wit`.
//
// The host keys the stream by the record key and owns every key's state (as
// bytes: here, the JSON text of a value) and timers; a call hands the plugin a
// part of a micro-batch (or timers that fired) with the states of the keys it
// touches, and takes back their changes. `runKeyed` is one such call in plain
// JavaScript: the component's glue and `KeyedHarness` both go through it.

/** The watermark before any event: the minimum s64, as a number (-2^63). */
export const WATERMARK_MIN = -(2 ** 63);
const S64_MIN = -(2n ** 63n);
const S64_MAX = 2n ** 63n - 1n;
const MAX_TIMER_ROUNDS = 10000;

/** The clocks a timer follows (Flink's `TimeDomain`), as the WIT names them. */
export const TimeDomain = Object.freeze({
  /** Fires once the key's partition watermark reaches the timer's time. */
  EVENT_TIME: "event-time",
  /** Fires once the host's wall clock (ms since the Unix epoch) reaches it. */
  PROCESSING_TIME: "processing-time",
});

/**
 * `key` as text for a message, as Rust's `escape_ascii` writes it: printable
 * ASCII as is, `"` `'` `\` and control bytes escaped, the rest as `\xNN`.
 */
export function escapeKey(key) {
  let s = "";
  for (const b of key) {
    if (b === 0x22 || b === 0x27 || b === 0x5c) s += "\\" + String.fromCharCode(b);
    else if (b === 0x09) s += "\\t";
    else if (b === 0x0a) s += "\\n";
    else if (b === 0x0d) s += "\\r";
    else if (b >= 0x20 && b < 0x7f) s += String.fromCharCode(b);
    else s += "\\x" + b.toString(16).padStart(2, "0");
  }
  return s;
}

function timeBig(timeMs) {
  let t;
  if (typeof timeMs === "bigint") t = timeMs;
  else if (typeof timeMs === "number" && Number.isInteger(timeMs)) t = BigInt(timeMs);
  else throw new TypeError(`a timer's time is a whole number of ms, not ${String(timeMs)}`);
  if (t < S64_MIN || t > S64_MAX) throw new RangeError(`timer time ${t} is out of the s64 range`);
  return t;
}

/**
 * One key's view of a call, given to `KeyedProcessor.process` and `onTimer`:
 * its key, its state and its timers, and the call's watermark and clock. The
 * same object serves every event of its key in a call.
 */
export class KeyedContext {
  constructor(key, group, raw, call) {
    /** The key (the record key's bytes). @type {Uint8Array} */
    this.key = key;
    this.group = group;
    this.raw = raw;
    this.value = undefined;
    this.loaded = false;
    this.call = call;
  }

  /** The key as text (throws TypeError when it is not UTF-8). */
  keyText() {
    return utf8.decode(this.key);
  }

  /**
   * The key's state, `undefined` when it has none (never set, cleared, or
   * expired by the stage's `state_ttl`). Decoded from its JSON bytes the first
   * time a call asks, then kept for the rest of the call: an object changed in
   * place is written back at the end of the call. A state whose bytes are not
   * JSON reads as `undefined`, and the whole call then fails, naming the key,
   * whatever `process` does.
   */
  get state() {
    if (!this.loaded) this.#load();
    return this.value;
  }

  /** Sets the key's state (a JSON value); `undefined` or `null` clears it. */
  setState(value) {
    this.value = value === null ? undefined : value;
    this.loaded = true;
  }

  /** Deletes the key's state (Flink's `ValueState.clear`); its timers stay. */
  clearState() {
    this.value = undefined;
    this.loaded = true;
  }

  /**
   * Registers an event-time timer: `onTimer` runs once the watermark reaches
   * `timeMs` (at once after this call if it already has). Setting one that
   * exists keeps one.
   */
  setEventTimer(timeMs) {
    this.#timer(true, timeMs, TimeDomain.EVENT_TIME);
  }

  /** Deletes the event-time timer at `timeMs` (nothing when there is none). */
  deleteEventTimer(timeMs) {
    this.#timer(false, timeMs, TimeDomain.EVENT_TIME);
  }

  /** Registers a processing-time timer: `onTimer` runs once the host's clock reaches `timeMs`. */
  setProcessingTimer(timeMs) {
    this.#timer(true, timeMs, TimeDomain.PROCESSING_TIME);
  }

  /** Deletes the processing-time timer at `timeMs` (nothing when there is none). */
  deleteProcessingTimer(timeMs) {
    this.#timer(false, timeMs, TimeDomain.PROCESSING_TIME);
  }

  /**
   * The partition's event-time watermark before the call's first event, ms
   * since the Unix epoch (a number): the largest event time seen minus the
   * stage's `watermark` delay (`WATERMARK_MIN` before any event).
   */
  get watermark() {
    return Number(this.call.watermark);
  }

  /** The host's wall clock when the call started, ms since the Unix epoch (a number). */
  get now() {
    return Number(this.call.now);
  }

  /**
   * The row of the daemon's lookup table `table` (`[tables.NAME]` in its
   * config) whose key is `key`, parsed from its JSON text (an object); `null`
   * when the table has no such key. The table is the one the built-in `join`
   * stage sees, as it is when the call starts (a changed file is swapped in
   * between batches). A key is matched as text (bytes, such as `ctx.key`, are
   * decoded as UTF-8): a number key column matches its JSON text (`"1"`).
   * Throws `SluiceError` with the daemon's text when it has no table of that
   * name (in a `KeyedHarness`: none given with `tables` or `table`), or when
   * the row is not a JSON object (the table and key are named). Not caught,
   * it fails the call, as any exception.
   */
  lookup(table, key) {
    const text = this.lookupText(table, key);
    if (text === null) return null;
    const name = JSON.stringify(typeof key === "string" ? key : utf8.decode(asBytes(key)));
    let row;
    try {
      row = JSON.parse(text);
    } catch (e) {
      throw new SluiceError(`row ${name} of table \`${table}\`: ${e.message}`);
    }
    if (row === null || typeof row !== "object" || Array.isArray(row)) {
      throw new SluiceError(`row ${name} of table \`${table}\`: not a JSON object: ${text}`);
    }
    return row;
  }

  /** As `lookup`, the row as the JSON text the daemon gives (not parsed); `null` when none. */
  lookupText(table, key) {
    if (typeof table !== "string") throw new TypeError(`a table's name is a string, not ${table === null ? "null" : typeof table}`);
    let k = key;
    if (typeof k !== "string") {
      if (!(k instanceof Uint8Array || ArrayBuffer.isView(k) || k instanceof ArrayBuffer)) {
        throw new TypeError(`a lookup key is a string (or UTF-8 bytes), not ${k === null ? "null" : typeof k}`);
      }
      k = utf8.decode(asBytes(k));
    }
    const row = this.call.tables(table, k);
    return row === undefined || row === null ? null : String(row);
  }

  #timer(set, timeMs, domain) {
    this.call.timers.push({ set, group: this.group, timer: { time: Number(timeBig(timeMs)), domain } });
  }

  #load() {
    this.loaded = true;
    this.value = undefined;
    if (this.raw === undefined || this.raw === null) return;
    try {
      this.value = JSON.parse(utf8.decode(this.raw));
    } catch (e) {
      if (this.call.failure === null) {
        this.call.failure =
          `the state of key "${escapeKey(this.key)}" does not decode as this plugin's state ` +
          `(an incompatible version's?): ${e.message}`;
      }
    }
  }

  // [changed, new bytes or undefined to delete]
  update() {
    if (!this.loaded) return [false, undefined];
    if (this.value === undefined) return [this.raw !== undefined && this.raw !== null, undefined];
    let text;
    try {
      text = JSON.stringify(this.value);
    } catch (e) {
      throw new SluiceError(`the new state of key "${escapeKey(this.key)}" cannot be encoded as JSON: ${e.message}`);
    }
    if (text === undefined) {
      throw new SluiceError(`the new state of key "${escapeKey(this.key)}" cannot be encoded as JSON: ${typeof this.value}`);
    }
    const bytes = encoder.encode(text);
    return [!(this.raw && sameBytes(bytes, this.raw)), bytes];
  }
}

function sameBytes(a, b) {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/**
 * A keyed processing function with per-key state and timers (the component's
 * `keyed-processor` world; Flink's `KeyedProcessFunction`). Subclass it and
 * give `process(ctx, event, out)`, and `onTimer(ctx, timer, out)` if you set
 * timers. A key's state is a JSON value: the host keeps its JSON bytes. The
 * host makes one instance per partition worker (the constructor gets the
 * config), and may replace it, or make a call again with the same input, at
 * any time: what must last goes in the key's state, not in `this`.
 */
export class KeyedProcessor {
  constructor(config) {
    this.config = config;
  }
  /** One event of the key `ctx.key`. Throwing fails the whole call. */
  process(_ctx, _event, _out) {
    throw new SluiceError("KeyedProcessor.process is not implemented");
  }
  /** A timer of the key `ctx.key` fired (deleted before this call). Default: nothing. */
  onTimer(_ctx, _timer, _out) {}
}

function noTables(table) {
  throw new SluiceError(`no table \`${table}\` (no tables given)`);
}

/**
 * Runs one `process-keyed` call through `processor`, as the component does:
 * `process` for each event of `input.events` (a Batch; event `i` of key
 * `input.keys[input.groups[i]]`), then `onTimer` for each fired timer
 * (`{ group, time, domain }`), each with its key's context (`input.states[g]`
 * the state bytes of key `g`, or undefined). `input.tables(table, key)`
 * answers `KeyedContext.lookup` (the row's JSON text, or null/undefined when
 * none; throws `SluiceError` when there is no such table); without it, no
 * table is known. Returns `{ out, updates: [{ group, value }] (value undefined
 * deletes), timers: [{ set, group, timer: { time, domain } }] }`; throws
 * `SluiceError` (with the text the host gets) when the call fails.
 */
export function runKeyed(processor, input) {
  const keys = input.keys;
  const states = input.states;
  const events = input.events instanceof Batch ? input.events : new Batch(input.events ?? []);
  const groups = input.groups ?? [];
  const fired = input.fired ?? [];
  const nkeys = keys.length;
  if (states.length !== nkeys || groups.length !== events.length) {
    throw new SluiceError(
      `malformed keyed input: ${nkeys} keys, ${states.length} states, ${events.length} events, ${groups.length} groups`,
    );
  }
  const call = {
    watermark: input.watermark ?? BigInt(WATERMARK_MIN),
    now: input.now ?? 0n,
    timers: [],
    failure: null,
    tables: input.tables ?? noTables,
  };
  const contexts = new Array(nkeys).fill(null);
  const context = (group) => {
    if (!(group >= 0 && group < nkeys)) throw new SluiceError(`malformed keyed input: group ${group} of ${nkeys} keys`);
    let ctx = contexts[group];
    if (ctx === null) ctx = contexts[group] = new KeyedContext(asBytes(keys[group]), group, states[group], call);
    return ctx;
  };
  // A state that did not decode fails the call, before the plugin's own
  // error (which it may have caused).
  const check = (error) => {
    if (call.failure !== null) throw new SluiceError(call.failure);
    if (error !== undefined) throw new SluiceError(failure(error));
  };
  const out = new Output(Math.max(1024, events.values.length >> 2));
  let i = 0;
  for (const event of events) {
    const ctx = context(groups[i++]);
    out.defaultKey = ctx.key;
    out.defaultTime = event.timestamp;
    try {
      processor.process(ctx, event, out);
    } catch (e) {
      check(e);
    }
    check(undefined);
  }
  for (const t of fired) {
    const ctx = context(t.group);
    out.defaultKey = ctx.key;
    out.defaultTime = BigInt(t.time);
    try {
      processor.onTimer(ctx, { time: Number(t.time), domain: t.domain }, out);
    } catch (e) {
      check(e);
    }
    check(undefined);
  }
  out.defaultKey = null;
  out.defaultTime = 0n;
  const updates = [];
  for (const ctx of contexts) {
    if (ctx === null) continue;
    const [changed, value] = ctx.update();
    if (changed) updates.push({ group: ctx.group, value });
  }
  return { out, updates, timers: call.timers };
}

/**
 * The exports of the keyed-processor world for a `KeyedProcessor` subclass:
 * `export const { configure, processKeyed } = exportKeyedProcessor(MyProcessor, host, tables)`,
 * where `host` is `import * as host from "sluice:plugin/host@0.2.0"` (for `log`)
 * and `tables` is `import * as tables from "sluice:plugin/tables@0.2.0"` (for
 * `ctx.lookup`; without it, a lookup throws).
 */
export function exportKeyedProcessor(cls, host = undefined, tables = undefined) {
  useHost(host);
  const lookup = hostTables(tables);
  let instance = null;
  return {
    configure(pairs) {
      guard(() => {
        instance = new cls(new Config(pairs));
      });
    },
    processKeyed(input) {
      return guard(() => {
        if (instance === null) throw new SluiceError("process-keyed called before configure");
        const r = runKeyed(instance, {
          keys: input.keys,
          states: input.states,
          events: Batch.fromColumns(input.events, false),
          groups: input.groups,
          fired: input.fired,
          watermark: input.watermark,
          now: input.now,
          tables: lookup,
        });
        const wit = r.out.toWit();
        return {
          events: wit.events,
          rejected: wit.rejected,
          updates: r.updates,
          timers: r.timers.map((c) => ({
            tag: c.set ? "set" : "delete",
            val: { group: c.group, domain: c.timer.domain, time: BigInt(c.timer.time) },
          })),
        };
      });
    },
  };
}

// The `tables` import's `lookup` (jco's bindings throw the `err` of its result:
// a ComponentError whose `payload` is the host's text), its errors as
// SluiceError with the host's text.
function hostTables(tables) {
  if (tables === undefined) {
    return (table) => {
      throw new SluiceError(
        `no table \`${table}\`: the plugin gave exportKeyedProcessor no \`tables\` ` +
          '(import * as tables from "sluice:plugin/tables@0.2.0")',
      );
    };
  }
  if (tables === null || typeof tables.lookup !== "function") {
    throw new TypeError('tables: expected the module "sluice:plugin/tables@0.2.0" (with its lookup function)');
  }
  return (table, key) => {
    try {
      return tables.lookup(table, key);
    } catch (e) {
      if (typeof e === "string") throw new SluiceError(e);
      if (e !== null && typeof e === "object" && "payload" in e) throw new SluiceError(String(e.payload));
      throw e;
    }
  };
}

// A key's bytes as a string that orders as the bytes do (one char per byte).
function keyId(bytes) {
  let s = "";
  for (let i = 0; i < bytes.length; i += 4096) s += String.fromCharCode(...bytes.subarray(i, i + 4096));
  return s;
}

function idBytes(id) {
  return Uint8Array.from(id, (c) => c.charCodeAt(0));
}

function sameResult(a, b) {
  const show = (r) =>
    JSON.stringify([
      r.out.records().map((x) => [keyId(x.value), x.key === null ? null : keyId(x.key), x.timestampMs,
        x.headers.map(([n, v]) => [n, keyId(v)])]),
      r.out.rejected,
      r.updates.map((u) => [u.group, u.value === undefined ? null : keyId(u.value)]),
      r.timers,
    ]);
  const [x, y] = [show(a), show(b)];
  return x === y ? null : [x, y];
}

/**
 * Runs a `KeyedProcessor` as the daemon does, in memory, so its unit tests run
 * under `node --test`: it keeps every key's state (as the bytes the host
 * keeps) and timers, feeds queued events in calls, moves the watermark and
 * fires timers, and collects the output. The rules are the Python SDK's
 * `KeyedHarness`'s (docs/plugins/js.md): the watermark is the largest event
 * time run minus `watermarkDelay` (or `advanceWatermark`'s), never back; a
 * call ends at the event that moves it to a known event-time timer, which
 * fires before the next event; a call whose own new event-time timer is due
 * at one of its events before its last is dropped and made again up to that
 * event; each call is made twice (`repeatCalls`) and must return the same;
 * timers fire in time then key order, those set by firing ones that are due
 * too in later rounds; processing-time timers fire on `setNow`; `finish`
 * fires every event-time timer; a failed call changes nothing and throws.
 * `ctx.lookup` reads the tables given with the `tables` option (name to rows
 * by key) or `table(name, rows)`; a table not given throws, as in the daemon.
 */
export class KeyedHarness {
  constructor(processor, config = [], { watermarkDelay = 0, repeatCalls = true, tables = {} } = {}) {
    this.processor = typeof processor === "function" ? new processor(makeConfig(config)) : processor;
    this.watermarkDelay = watermarkDelay;
    this.repeatCalls = repeatCalls;
    /** Everything the processor emitted so far, in order. */
    this.output = new Output();
    /** Calls made so far (a repeat counted once). */
    this.calls = 0;
    this.statesById = new Map();
    // id -> { domain, time, id }
    this.timerMap = new Map();
    this.maxTime = null;
    this.advanced = WATERMARK_MIN;
    this.clock = 0;
    this.queued = [];
    this.fed = 0;
    this.tableMap = new Map();
    for (const [name, rows] of tables instanceof Map ? tables : Object.entries(tables ?? {})) this.table(name, rows);
  }

  /**
   * Gives the processor a lookup table `name` (as a `[tables.NAME]` of the
   * daemon's config would), replacing one of that name, for `ctx.lookup`: its
   * rows by key (an object, a Map or [key, row] pairs; a number key column's
   * keys are their JSON text, "1"), each an object (written as JSON) or the
   * JSON text of one (a string or UTF-8 bytes, kept as is). Returns the harness.
   */
  table(name, rows) {
    const pairs = rows !== null && typeof rows === "object" && typeof rows[Symbol.iterator] === "function" ? rows : Object.entries(rows);
    const table = new Map();
    for (const [key, row] of pairs) {
      if (typeof key !== "string") throw new TypeError(`table \`${name}\`: a key is a string, not ${typeof key}`);
      table.set(key, typeof row === "string" ? row : row instanceof Uint8Array ? utf8.decode(row) : JSON.stringify(row));
    }
    this.tableMap.set(name, table);
    return this;
  }

  /** Queues an event of `key` for the next `run`; returns the harness. */
  push(key, value, timestampMs = 0, headers = []) {
    const k = asBytes(key);
    if (k.length === 0) throw new RangeError("an event of a keyed processor needs a key (the daemon refuses one without)");
    this.queued.push({ value, key: k, timestampMs: Number(timestampMs), headers });
    return this;
  }

  /** The watermark. */
  get watermark() {
    const seen = this.maxTime === null ? WATERMARK_MIN : Math.max(WATERMARK_MIN, this.maxTime - this.watermarkDelay);
    return Math.max(seen, this.advanced);
  }

  /** The clock `setNow` set (0 unless set). */
  get now() {
    return this.clock;
  }

  /** Processes the queued events as one micro-batch; throws the first failed call's error. */
  run() {
    const batch = this.queued;
    this.queued = [];
    const upto = [];
    const after = [];
    let m = this.maxTime;
    for (const r of batch) {
      m = m === null ? r.timestampMs : Math.max(m, r.timestampMs);
      upto.push(m);
      after.push(Math.max(WATERMARK_MIN, m - this.watermarkDelay, this.advanced));
    }
    let start = 0;
    while (start < batch.length) {
      const first = this.#firstTimer(TimeDomain.EVENT_TIME);
      let end = batch.length - 1;
      if (first !== null) {
        for (let j = start; j < batch.length; j++) {
          if (after[j] >= first) {
            end = j;
            break;
          }
        }
      }
      const watermark = this.watermark;
      let ids;
      let result;
      for (;;) {
        [ids, result] = this.#callEvents(batch.slice(start, end + 1), watermark);
        let due = null;
        for (const c of result.timers) {
          if (c.set && c.timer.domain === TimeDomain.EVENT_TIME && (due === null || c.timer.time < due)) due = c.timer.time;
        }
        let cut = null;
        if (due !== null) {
          for (let j = start; j < end; j++) {
            if (after[j] >= due) {
              cut = j;
              break;
            }
          }
        }
        if (cut === null) break;
        end = cut;
      }
      this.#apply(ids, result, end + 1 - start);
      this.maxTime = upto[end];
      this.#fire(TimeDomain.EVENT_TIME, this.watermark);
      start = end + 1;
    }
  }

  /** Raises the watermark to `timeMs` (when it is below) and fires the event-time timers it reaches. */
  advanceWatermark(timeMs) {
    this.advanced = Math.max(this.advanced, timeMs);
    this.#fire(TimeDomain.EVENT_TIME, this.watermark);
  }

  /** Sets the host's clock (`ctx.now`) and fires the processing-time timers it reaches. */
  setNow(nowMs) {
    this.clock = nowMs;
    this.#fire(TimeDomain.PROCESSING_TIME, nowMs);
  }

  /** The end of the input: runs what is queued, then fires every event-time timer. */
  finish() {
    this.run();
    this.#fire(TimeDomain.EVENT_TIME, Infinity);
  }

  /** Takes what the processor emitted so far, leaving it empty. */
  takeOutput() {
    const out = this.output;
    this.output = new Output();
    return out;
  }

  /** The state of `key`, decoded (undefined when it has none). */
  state(key) {
    const raw = this.statesById.get(keyId(asBytes(key)));
    return raw === undefined ? undefined : JSON.parse(utf8.decode(raw));
  }

  /** The state of `key` as the bytes the host keeps (undefined when none). */
  stateBytes(key) {
    return this.statesById.get(keyId(asBytes(key)));
  }

  /** Sets (or with undefined/null deletes) the state bytes of `key`. */
  setStateBytes(key, data) {
    const id = keyId(asBytes(key));
    if (data === undefined || data === null) this.statesById.delete(id);
    else this.statesById.set(id, asBytes(data));
  }

  /** Every key (as text) with its state bytes as text. */
  states() {
    return Object.fromEntries([...this.statesById].map(([id, v]) => [utf8.decode(idBytes(id)), utf8.decode(v)]));
  }

  /** The timers of `key` (`{ time, domain }`), event-time ones first, each in time order. */
  timers(key) {
    const id = keyId(asBytes(key));
    const order = (d) => (d === TimeDomain.EVENT_TIME ? 0 : 1);
    return [...this.timerMap.values()]
      .filter((t) => t.id === id)
      .sort((a, b) => order(a.domain) - order(b.domain) || a.time - b.time)
      .map((t) => ({ time: t.time, domain: t.domain }));
  }

  /** Timers of every key. */
  timerCount() {
    return this.timerMap.size;
  }

  #lookup(table, key) {
    const rows = this.tableMap.get(table);
    if (rows === undefined) {
      const known = [...this.tableMap.keys()].sort().join(", ") || "none";
      throw new SluiceError(`no table \`${table}\` (the harness has: ${known})`);
    }
    return rows.get(key) ?? null;
  }

  #firstTimer(domain) {
    let first = null;
    for (const t of this.timerMap.values()) if (t.domain === domain && (first === null || t.time < first)) first = t.time;
    return first;
  }

  #call(ids, events, groups, fired, watermark) {
    const keys = ids.map(idBytes);
    const states = ids.map((id) => this.statesById.get(id));
    const once = () => {
      const r = runKeyed(this.processor, {
        keys,
        states,
        events,
        groups,
        fired,
        watermark: BigInt(watermark),
        now: BigInt(this.clock),
        tables: (table, key) => this.#lookup(table, key),
      });
      const seen = new Set();
      const kept = [];
      for (const x of r.out.rejected) {
        if (!(x.index >= 0 && x.index < events.length)) {
          throw new SluiceError(`malformed keyed output: rejection of event ${x.index} in a call of ${events.length}`);
        }
        if (!seen.has(x.index)) {
          seen.add(x.index);
          kept.push(x);
        }
      }
      r.out.rejected = kept;
      return r;
    };
    this.calls += 1;
    const result = once();
    if (this.repeatCalls) {
      const diff = sameResult(result, once());
      if (diff !== null) {
        throw new SluiceError(
          "the same call made twice returned different results: a call may be made again with the same " +
            `input, so its output must depend on its input only (first: ${diff[0]}; again: ${diff[1]})`,
        );
      }
    }
    return result;
  }

  #callEvents(part, watermark) {
    const ids = [];
    const index = new Map();
    const groups = [];
    for (const r of part) {
      const id = keyId(r.key);
      let g = index.get(id);
      if (g === undefined) {
        g = ids.length;
        index.set(id, g);
        ids.push(id);
      }
      groups.push(g);
    }
    return [ids, this.#call(ids, new Batch(part), groups, [], watermark)];
  }

  #apply(ids, result, events) {
    for (const r of result.out.records()) this.output.emit(r.value, r.key, r.timestampMs, r.headers);
    for (const x of result.out.rejected) this.output.reject(this.fed + x.index, x.reason);
    this.fed += events;
    for (const u of result.updates) {
      if (u.value === undefined) this.statesById.delete(ids[u.group]);
      else this.statesById.set(ids[u.group], u.value);
    }
    for (const c of result.timers) {
      const id = ids[c.group];
      const tid = `${c.timer.domain}\u0000${c.timer.time}\u0000${id}`;
      if (c.set) this.timerMap.set(tid, { domain: c.timer.domain, time: c.timer.time, id });
      else this.timerMap.delete(tid);
    }
  }

  #fire(domain, at) {
    for (let round = 0; round < MAX_TIMER_ROUNDS; round++) {
      const due = [...this.timerMap.entries()]
        .filter(([, t]) => t.domain === domain && t.time <= at)
        .sort(([, a], [, b]) => a.time - b.time || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
      if (due.length === 0) return;
      for (const [tid] of due) this.timerMap.delete(tid);
      const ids = [];
      const index = new Map();
      const fired = [];
      for (const [, t] of due) {
        let g = index.get(t.id);
        if (g === undefined) {
          g = ids.length;
          index.set(t.id, g);
          ids.push(t.id);
        }
        fired.push({ group: g, time: t.time, domain });
      }
      let result;
      try {
        result = this.#call(ids, new Batch([]), [], fired, this.watermark);
      } catch (e) {
        // A failed call changes nothing: the timers are still set.
        for (const [tid, t] of due) this.timerMap.set(tid, t);
        throw e;
      }
      this.#apply(ids, result, 0);
    }
    throw new SluiceError(
      `timers still due after ${MAX_TIMER_ROUNDS} rounds: does onTimer set a timer at or before the watermark each time?`,
    );
  }
}
