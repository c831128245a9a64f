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
  }

  /**
   * Emits a new event. `value` and `key` are strings (written as UTF-8) or
   * bytes; usually `key` and `timestampMs` are those of the input event it
   * comes from (`event.key`, `event.timestampMs`).
   */
  emit(value, key = null, timestampMs = 0, headers = undefined) {
    const vb = this.valueBytes;
    if (typeof value === "string") vb.pushString(value);
    else vb.pushBytes(value instanceof Uint8Array ? value : asBytes(value));
    this.valueEnds.push(vb.len);
    const kb = this.keyBytes;
    if (key !== null && key !== undefined) {
      if (key instanceof Uint8Array) kb.pushBytes(key);
      else if (typeof key === "string") kb.pushString(key);
      else kb.pushBytes(asBytes(key));
    }
    this.keyEnds.push(kb.len);
    this.timestamps.push(typeof timestampMs === "bigint" ? timestampMs : BigInt(timestampMs));
    if (headers !== undefined && headers.length > 0) {
      const index = this.valueEnds.length - 1;
      for (const [name, v] of headers) this.headers.push({ index, name: String(name), value: asBytes(v) });
    }
  }

  /**
   * Emits a new event whose value is `value` as JSON text; throws (and emits
   * nothing) when it cannot be written as JSON.
   */
  emitJson(value, key = null, timestampMs = 0, headers = undefined) {
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
