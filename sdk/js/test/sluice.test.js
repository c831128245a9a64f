// The SDK's own tests, under Node.js: `node --test sdk/js/test/`.
import { test } from "node:test";
import assert from "node:assert/strict";

import {
  Aggregator,
  Batch,
  Config,
  Output,
  SluiceError,
  aggregate,
  exportAggregator,
  exportProcessor,
  log,
  run,
} from "../sluice.js";

const enc = (s) => new TextEncoder().encode(s);
const dec = (b) => (b === null ? null : new TextDecoder().decode(b));

test("events read back as built", () => {
  const batch = new Batch([
    { value: '{"a":1}', key: "UA", timestampMs: 10 },
    { value: "", timestampMs: 20, headers: [["trace", "x"], ["span", enc("y")]] },
    { value: enc("plain"), key: enc("AA"), timestampMs: -5 },
  ]);
  assert.equal(batch.length, 3);
  const got = [...batch].map((e) => [e.index, dec(e.key), dec(e.value), e.timestampMs, e.headers.map(([n, v]) => [n, dec(v)])]);
  assert.deepEqual(got, [
    [0, "UA", '{"a":1}', 10, []],
    [1, null, "", 20, [["trace", "x"], ["span", "y"]]],
    [2, "AA", "plain", -5, []],
  ]);
  assert.equal(batch.at(-1).text(), "plain");
  assert.equal(batch.at(3), undefined);
  assert.equal(batch.at(0).timestamp, 10n);
  // A value is a view into the batch's buffer, not a copy.
  assert.equal(batch.at(2).value.buffer, batch.values.buffer);
});

test("lines skip blanks; json parses", () => {
  const batch = Batch.fromLines('{"x":1}\n\n{"x":22}\n', 7);
  assert.deepEqual(batch.texts(), ['{"x":1}', '{"x":22}']);
  assert.deepEqual([...batch].map((e) => e.timestampMs), [7, 7]);
  assert.deepEqual(batch.json(), [{ x: 1 }, { x: 22 }]);
  assert.throws(() => new Batch(["{"]).at(0).json(), SyntaxError);
  assert.throws(() => new Batch([new Uint8Array([0xff])]).at(0).json(), TypeError);
});

test("columns are checked", () => {
  const batch = Batch.fromColumns({
    values: enc("abcde"),
    valueEnds: [2, 5],
    keys: enc("k"),
    keyEnds: [1, 1],
    timestamps: [1, 2],
    headers: [{ index: 1, name: "h", value: enc("v") }],
  });
  assert.deepEqual(
    batch.records().map((r) => [dec(r.value), dec(r.key), r.timestampMs, r.headers.length]),
    [["ab", "k", 1, 0], ["cde", null, 2, 1]],
  );
  assert.throws(() => Batch.fromColumns({ values: enc("abcde"), valueEnds: [3, 2] }), /decrease/);
  assert.throws(() => Batch.fromColumns({ values: enc("ab"), valueEnds: [3] }), /past the buffer/);
  assert.throws(() => Batch.fromColumns({ values: enc("ab"), valueEnds: [1, 2], timestamps: [0] }), /timestamps/);
  assert.throws(
    () => Batch.fromColumns({ values: enc("ab"), valueEnds: [1, 2], headers: [{ index: 2, name: "h", value: enc("") }] }),
    /header index/,
  );
});

test("output packs what was emitted", () => {
  const src = new Batch([{ value: "v0", key: "k0", timestampMs: 5, headers: [["h", "1"]] }, { value: "v1", timestampMs: 6 }]);
  const out = new Output(4); // small, so that the buffers grow
  out.forward(src.at(0));
  out.emit("é", "K", 9);
  out.emitJson({ b: [1, "é"], n: null }, src.at(1).key, src.at(1).timestampMs);
  out.emit(enc("ba"), null, 0n, [["x", enc("y")]]);
  out.reject(src.at(1), "no");
  out.reject(0, "also");
  assert.equal(out.length, 4);
  const wit = out.toWit();
  assert.equal(dec(wit.events.values), 'v0é{"b":[1,"é"],"n":null}ba');
  assert.deepEqual([...wit.events.valueEnds], [2, 4, 27, 29]);
  assert.equal(dec(wit.events.keys), "k0K");
  assert.deepEqual([...wit.events.keyEnds], [2, 3, 3, 3]);
  assert.deepEqual([...wit.events.timestamps], [5n, 9n, 6n, 0n]);
  assert.ok(wit.events.valueEnds instanceof Uint32Array && wit.events.timestamps instanceof BigInt64Array);
  assert.deepEqual(
    wit.events.headers.map((h) => [h.index, h.name, dec(h.value)]),
    [[0, "h", "1"], [3, "x", "y"]],
  );
  assert.deepEqual(wit.rejected, [{ index: 1, reason: "no" }, { index: 0, reason: "also" }]);
  assert.deepEqual(out.texts(), ["v0", "é", '{"b":[1,"é"],"n":null}', "ba"]);
  assert.throws(() => out.emitJson(undefined), TypeError);
  assert.throws(() => out.emitJson({ x: 1n }), TypeError);
  assert.equal(out.length, 4);
});

test("forward and empty keys without headers", () => {
  // A batch without headers, keys on some events only; every kind of empty key
  // is no key.
  const src = new Batch([{ value: "a", key: "k", timestampMs: 1 }, { value: "bc", timestampMs: 2 }, { value: "d", key: "xyz", timestampMs: 3 }]);
  const out = new Output(2);
  for (const event of src) out.forward(event);
  out.emit("e", "", 4);
  out.emit("f", new Uint8Array(0), 5n);
  out.emit("g", new DataView(enc("m").buffer), 6);
  const wit = out.toWit();
  assert.equal(dec(wit.events.values), "abcdefg");
  assert.deepEqual([...wit.events.valueEnds], [1, 3, 4, 5, 6, 7]);
  assert.equal(dec(wit.events.keys), "kxyzm");
  assert.deepEqual([...wit.events.keyEnds], [1, 1, 4, 4, 4, 5]);
  assert.deepEqual([...wit.events.timestamps], [1n, 2n, 3n, 4n, 5n, 6n]);
  assert.deepEqual(wit.events.headers, []);
  assert.deepEqual(
    out.records().map((r) => [dec(r.value), r.key === null ? null : dec(r.key), r.timestampMs, r.headers.length]),
    [["a", "k", 1, 0], ["bc", null, 2, 0], ["d", "xyz", 3, 0], ["e", null, 4, 0], ["f", null, 5, 0], ["g", "m", 6, 0]],
  );
});

test("config reads and reports name and value", () => {
  const config = new Config([["min_delay", "fifteen"], ["limit", " 3 "], ["on", "true"], ["x", "1.5e3"]]);
  assert.equal(config.get("limit"), " 3 ");
  assert.equal(config.get("nope"), undefined);
  assert.equal(config.get("nope", "d"), "d");
  assert.ok(config.has("on"));
  assert.equal(config.int("limit"), 3);
  assert.equal(config.int("nope", 4), 4);
  assert.equal(config.float("x"), 1500);
  assert.equal(config.float("nope"), undefined);
  assert.equal(config.bool("on"), true);
  assert.throws(() => config.float("min_delay"), { name: "SluiceError", message: "config `min_delay`: cannot parse `fifteen`: invalid float literal" });
  assert.throws(() => config.int("x"), /config `x`: cannot parse `1.5e3`: invalid digit/);
  assert.throws(() => config.bool("limit"), /`true` or `false`/);
  for (const raw of ["1_000", "0x10", "", "1e"]) {
    assert.throws(() => new Config({ v: raw }).float("v"), SluiceError, raw);
  }
  assert.equal(new Config({ v: "-inf" }).float("v"), -Infinity);
  assert.ok(Number.isNaN(new Config({ v: "NaN" }).float("v")));
  assert.equal(new Config([["a", "1"], ["a", "2"]]).get("a"), "2");
  assert.deepEqual(new Config({ b: "1", a: "2" }).entries(), [["a", "2"], ["b", "1"]]);
});

class Tagger {
  constructor(config) {
    this.tag = config.get("tag", "hello");
    if (this.tag === "") throw new SluiceError("config `tag`: empty");
  }
  process(batch, out) {
    for (const event of batch) {
      let doc;
      try {
        doc = event.json();
      } catch (e) {
        out.reject(event, `invalid JSON: ${e.message}`);
        continue;
      }
      if (doc === null || typeof doc !== "object" || Array.isArray(doc)) {
        out.reject(event, "not a JSON object");
        continue;
      }
      if (doc.boom) throw new RangeError("boom");
      doc.tag = this.tag;
      out.emitJson(doc, event.key, event.timestampMs);
    }
  }
}

test("run configures and processes", () => {
  const out = run(Tagger, ['{"a":1}', "[1]", "{"], { tag: "x" });
  assert.deepEqual(out.texts(), ['{"a":1,"tag":"x"}']);
  assert.deepEqual(out.rejected.map((r) => r.index), [1, 2]);
  assert.equal(out.rejected[0].reason, "not a JSON object");
  assert.match(out.rejected[1].reason, /^invalid JSON: /);
  assert.throws(() => run(Tagger, [], { tag: "" }), /empty/);
  assert.deepEqual(run(new Tagger(new Config()), ["{}"]).json(), [{ tag: "hello" }]);
});

test("the processor world's exports: thrown errors become the err string", () => {
  const logged = [];
  const world = exportProcessor(Tagger, { log: (level, message) => logged.push([level, message]) });
  const columns = {
    values: enc('{"a":1}[]'),
    valueEnds: new Uint32Array([7, 9]),
    keys: enc("K"),
    keyEnds: new Uint32Array([1, 1]),
    timestamps: new BigInt64Array([3n, 4n]),
    headers: [],
  };
  assert.throws(() => world.process(columns), (e) => e === "process called before configure");
  world.configure([["tag", "x"]]);
  const got = world.process(columns);
  assert.equal(dec(got.events.values), '{"a":1,"tag":"x"}');
  assert.deepEqual([...got.events.valueEnds], [17]);
  assert.equal(dec(got.events.keys), "K");
  assert.deepEqual([...got.events.timestamps], [3n]);
  assert.deepEqual(got.rejected, [{ index: 1, reason: "not a JSON object" }]);
  assert.throws(() => world.configure([["tag", ""]]), (e) => e === "config `tag`: empty");
  const boom = { ...columns, values: enc('{"boom":1}'), valueEnds: new Uint32Array([10]), keyEnds: new Uint32Array([0]), timestamps: new BigInt64Array([0n]) };
  assert.throws(() => world.process(boom), (e) => e === "RangeError: boom");
  log.info("through the host");
  assert.deepEqual(logged, [["info", "through the host"]]);
});

class Top extends Aggregator {
  constructor(config) {
    super(config);
    this.n = config.int("n", 3);
  }
  create() {
    return {};
  }
  add(state, event) {
    const v = event.json();
    if (typeof v !== "string") throw new SluiceError("not a string");
    state[v] = (state[v] ?? 0) + 1;
    return state;
  }
  merge(a, b) {
    for (const [k, v] of Object.entries(b)) a[k] = (a[k] ?? 0) + v;
    return a;
  }
  finish(state) {
    return Object.entries(state)
      .sort((x, y) => y[1] - x[1] || (x[0] < y[0] ? -1 : 1))
      .slice(0, this.n)
      .map(([value, count]) => ({ value, count }));
  }
}

test("aggregate runs one window through the bytes", () => {
  const got = aggregate(Top, ['"BOS"', '"LAX"', '"BOS"', '"SFO"', '"BOS"', '"LAX"'], { n: "2" });
  assert.equal(got, '[{"value":"BOS","count":3},{"value":"LAX","count":2}]');
  assert.throws(() => aggregate(Top, ["1"]), /not a string/);
});

test("the aggregator world's exports", () => {
  const world = exportAggregator(Top);
  world.configure([["n", "1"]]);
  const empty = world.create();
  assert.equal(dec(empty), "{}");
  const columns = {
    values: enc('"a""b""a"'),
    valueEnds: new Uint32Array([3, 6, 9]),
    keys: new Uint8Array(0),
    keyEnds: new Uint32Array(3),
    timestamps: new BigInt64Array(3),
    headers: [],
  };
  const states = world.accumulate([empty, enc('{"b":5}')], columns, new Uint32Array([0, 1, 0]));
  assert.deepEqual(states.map(dec), ['{"a":2}', '{"b":6}']);
  assert.equal(dec(world.merge(states[0], states[1])), '{"a":2,"b":6}');
  assert.deepEqual(world.finish(states), ['[{"value":"a","count":2}]', '[{"value":"b","count":6}]']);
  assert.throws(() => world.accumulate([empty], columns, new Uint32Array([0, 3, 0])), (e) => e === "group 3 of 1 states");
});

test("log goes to stderr off Wasm and checks its level", (t) => {
  const lines = [];
  t.mock.method(console, "error", (line) => lines.push(line));
  // exportProcessor above installed a host log: a fresh module instance has none.
  return import("../sluice.js?fresh").then((fresh) => {
    fresh.log.warn("careful");
    fresh.log("info", "hello");
    assert.deepEqual(lines, ["[warn] careful", "[info] hello"]);
    assert.throws(() => fresh.log("loud", "x"), /log level/);
  });
});
