// The keyed-processor world: runKeyed (one call, as the component's glue makes
// it), the glue itself, and KeyedHarness (the host's part). Expected values are
// worked out by hand from the scripts, as the Rust and Python SDKs' tests.
import { test } from "node:test";
import assert from "node:assert/strict";

import { Batch, KeyedHarness, KeyedProcessor, SluiceError, TimeDomain, exportKeyedProcessor, runKeyed } from "../sluice.js";

const enc = (s) => new TextEncoder().encode(s);
const dec = (b) => (b === null || b === undefined ? null : new TextDecoder().decode(b));
const E = TimeDomain.EVENT_TIME;
const P = TimeDomain.PROCESSING_TIME;

// Does what each event's value says, `;`-separated (see the Python SDK's
// tests/test_keyed.py): read, add:N (in place in an array), set:N, clear,
// timer:T, del:T, ptimer:T, pdel:T, emit, emitkey:K, forward, reject, fail,
// watermark, now. On a timer: emits fired:e|p:T:state, then the config's
// on_timer (clear, again, fail).
class Script extends KeyedProcessor {
  process(ctx, event, out) {
    for (const cmd of event.text().split(";")) {
      const [op, arg] = cmd.split(":");
      const n = () => {
        if (!/^-?[0-9]+$/.test(arg)) throw new RangeError(`${cmd}: not a number`);
        return Number(arg);
      };
      switch (op) {
        case "read": out.emit(`state=${show(ctx.state)}`); break;
        case "add": if (ctx.state === undefined) ctx.setState([n()]); else ctx.state[0] += n(); break;
        case "set": ctx.setState([n()]); break;
        case "clear": ctx.clearState(); break;
        case "timer": ctx.setEventTimer(n()); break;
        case "del": ctx.deleteEventTimer(n()); break;
        case "ptimer": ctx.setProcessingTimer(n()); break;
        case "pdel": ctx.deleteProcessingTimer(n()); break;
        case "emit": out.emit("emitted"); break;
        case "emitkey": out.emit("emitted", arg); break;
        case "forward": out.forward(event); break;
        case "reject": out.reject(event, "refused"); break;
        case "fail": throw new SluiceError("failed on purpose");
        case "watermark": out.emit(String(ctx.watermark)); break;
        case "now": out.emit(String(ctx.now)); break;
        default: throw new SluiceError(`unknown command ${op}`);
      }
    }
  }
  onTimer(ctx, timer, out) {
    out.emit(`fired:${timer.domain === E ? "e" : "p"}:${timer.time}:${show(ctx.state)}`);
    const what = this.config.get("on_timer", "");
    if (what === "clear") ctx.clearState();
    else if (what === "again") ctx.setEventTimer(timer.time + 1);
    else if (what === "fail") throw new SluiceError("timer failed");
  }
}

const show = (state) => (state === undefined ? "none" : String(state[0]));

// One call of `events` ([key, script]) with the states given ([key, bytes or
// null]); watermark 500, now 1000; event i at 100 + i.
function call(states, events, { config = [], fired = [] } = {}) {
  const keys = states.map(([k]) => enc(k));
  return runKeyed(new Script(new Map(config)), {
    keys,
    states: states.map(([, s]) => (s === null ? undefined : enc(s))),
    events: new Batch(events.map(([key, value], i) => ({ key, value, timestampMs: 100 + i }))),
    groups: events.map(([k]) => states.findIndex(([s]) => s === k)),
    fired,
    watermark: 500n,
    now: 1000n,
  });
}

const pairs = (out) => out.records().map((r) => [dec(r.key), dec(r.value)]);
const updates = (r) => r.updates.map((u) => [u.group, dec(u.value)]);

test("states are read once per call and written back only when changed", () => {
  const r = call(
    [["a", "[5]"], ["b", "[7]"], ["c", null], ["d", "[1]"]],
    [["a", "read"], ["b", "read;add:1;read"], ["a", "add:2;read"], ["c", "read"], ["a", "read"], ["d", "set:3;read"]],
  );
  assert.deepEqual(pairs(r.out), [
    ["a", "state=5"], ["b", "state=7"], ["b", "state=8"], ["a", "state=7"], ["c", "state=none"], ["a", "state=7"], ["d", "state=3"],
  ]);
  assert.deepEqual(updates(r), [[0, "[7]"], [1, "[8]"], [3, "[3]"]]);
  const r2 = call(
    [["read", "[1]"], ["same", "[2]"], ["add0", "[3]"], ["gone", "[4]"], ["never", null], ["new", null], ["cs", "[6]"], ["sc", null]],
    [["read", "read"], ["same", "set:2"], ["add0", "add:0"], ["gone", "clear"], ["never", "clear"], ["new", "add:9"], ["cs", "clear;set:7"], ["sc", "set:1;clear"]],
  );
  assert.deepEqual(updates(r2), [[3, null], [5, "[9]"], [6, "[7]"]]);
});

test("timer changes come back in order with their key", () => {
  const r = call([["a", null], ["b", null]], [["a", "timer:10;ptimer:20"], ["b", "timer:10;del:3"], ["a", "pdel:20;timer:10"]]);
  assert.deepEqual(r.timers, [
    { set: true, group: 0, timer: { time: 10, domain: E } },
    { set: true, group: 0, timer: { time: 20, domain: P } },
    { set: true, group: 1, timer: { time: 10, domain: E } },
    { set: false, group: 1, timer: { time: 3, domain: E } },
    { set: false, group: 0, timer: { time: 20, domain: P } },
    { set: true, group: 0, timer: { time: 10, domain: E } },
  ]);
  assert.equal(r.updates.length + r.out.length, 0);
});

test("keyless records get their group key and the event's or timer's time", () => {
  const r = call([["k1", null], ["k2", null]], [["k1", "emit;emitkey:x;emit"], ["k2", "forward;emit"]]);
  assert.deepEqual(pairs(r.out), [["k1", "emitted"], ["x", "emitted"], ["k1", "emitted"], ["k2", "forward;emit"], ["k2", "emitted"]]);
  assert.deepEqual(r.out.records().map((x) => x.timestampMs), [100, 100, 100, 101, 101]);
  const t = call([["a", "[4]"], ["b", null]], [], {
    config: [["on_timer", "clear"]],
    fired: [{ group: 1, time: 30n, domain: E }, { group: 0, time: 40n, domain: P }],
  });
  assert.deepEqual(pairs(t.out), [["b", "fired:e:30:none"], ["a", "fired:p:40:4"]]);
  assert.deepEqual(t.out.records().map((x) => x.timestampMs), [30, 40]);
  assert.deepEqual(updates(t), [[0, null]]);
  assert.deepEqual(pairs(call([["a", null]], [["a", "watermark;now"]]).out), [["a", "500"], ["a", "1000"]]);
});

test("rejections, errors, and a state that does not decode", () => {
  const r = call([["a", null], ["b", null]], [["a", "forward"], ["b", "reject"], ["a", "reject;forward"]]);
  assert.deepEqual(r.out.rejected, [{ index: 1, reason: "refused" }, { index: 2, reason: "refused" }]);
  assert.throws(() => call([["a", null]], [["a", "set:1;emit"], ["a", "fail"]]), { message: "failed on purpose" });
  assert.throws(() => call([["a", null]], [["a", "set:x"]]), { message: "RangeError: set:x: not a number" });
  // `read` goes on with no state; the call fails all the same, naming the key.
  assert.throws(() => call([["ok", "[1]"], ["N14228", "{last_ms"]], [["ok", "read"], ["N14228", "read;set:2;emit"]]), (e) =>
    e instanceof SluiceError &&
    e.message.startsWith(`the state of key "N14228" does not decode as this plugin's state (an incompatible version's?): `));
  // The plugin's own error, before the read, wins.
  assert.throws(() => call([["x", "nope"]], [["x", "fail;read"]]), { message: "failed on purpose" });
  assert.throws(
    () => runKeyed(new Script(new Map()), { keys: [new Uint8Array([0xff, 0x61, 0x22])], states: [enc("nope")], events: new Batch([{ value: "read", key: "k" }]), groups: [0] }),
    (e) => e.message.startsWith('the state of key "\\xffa\\"" does not decode'),
  );
  assert.throws(() => runKeyed(new Script(new Map()), { keys: [enc("a")], states: [undefined], events: new Batch([{ value: "emit", key: "a" }]), groups: [3] }), /group 3 of 1 keys/);
});

test("the component glue speaks the WIT shapes", () => {
  const logged = [];
  const world = exportKeyedProcessor(Script, { log: (level, m) => logged.push([level, m]) });
  const input = {
    keys: [enc("a")],
    states: [enc("[2]")],
    events: { values: enc("add:1;timer:9;emit"), valueEnds: Uint32Array.of(18), keys: enc("a"), keyEnds: Uint32Array.of(1), timestamps: BigInt64Array.of(7n), headers: [] },
    groups: Uint32Array.of(0),
    fired: [],
    watermark: -(2n ** 63n),
    now: 0n,
  };
  assert.throws(() => world.processKeyed(input), (e) => e === "process-keyed called before configure");
  world.configure([]);
  const got = world.processKeyed(input);
  assert.equal(dec(got.events.values), "emitted");
  assert.deepEqual([...got.events.keyEnds], [1]);
  assert.equal(dec(got.events.keys), "a");
  assert.deepEqual([...got.events.timestamps], [7n]);
  assert.deepEqual(got.updates.map((u) => [u.group, dec(u.value)]), [[0, "[3]"]]);
  assert.deepEqual(got.timers, [{ tag: "set", val: { group: 0, domain: "event-time", time: 9n } }]);
  const fired = world.processKeyed({ ...input, events: { values: enc(""), valueEnds: new Uint32Array(0), keys: enc(""), keyEnds: new Uint32Array(0), timestamps: new BigInt64Array(0), headers: [] }, groups: new Uint32Array(0), fired: [{ group: 0, domain: "processing-time", time: 12n }] });
  assert.equal(dec(fired.events.values), "fired:p:12:2");
  assert.deepEqual([...fired.events.timestamps], [12n]);
  assert.deepEqual(fired.updates, []);
  assert.throws(() => world.processKeyed({ ...input, states: [enc("{")] }), (e) => typeof e === "string" && e.startsWith('the state of key "a" does not decode'));
});

const vals = (h) => h.output.records().map((r) => `${dec(r.key)}@${r.timestampMs}:${dec(r.value)}`);

test("harness: states across runs, an event-time timer fires after the event that reaches it", () => {
  const h = new KeyedHarness(Script);
  h.push("a", "add:1;timer:110", 100).run();
  assert.deepEqual(h.state("a"), [1]);
  assert.equal(dec(h.stateBytes("a")), "[1]");
  assert.deepEqual(h.timers("a"), [{ time: 110, domain: E }]);
  h.push("b", "read", 105).push("a", "add:1;read", 110).push("b", "watermark", 111).run();
  assert.deepEqual(vals(h), ["b@105:state=none", "a@110:state=2", "a@110:fired:e:110:2", "b@111:110"]);
  assert.deepEqual(h.timers("a"), []);
  assert.equal(h.watermark, 111);
});

test("harness: a call whose own timer comes due inside it is cut there", () => {
  const h = new KeyedHarness(Script, [], { watermarkDelay: 10 });
  h.push("a", "timer:105", 100).push("b", "emit", 115).push("b", "emit", 116).run();
  assert.deepEqual(vals(h), ["b@115:emitted", "a@105:fired:e:105:none", "b@116:emitted"]);
  assert.equal(h.calls, 4);
});

test("harness: processing timers on the clock, finish, timers set by timers", () => {
  const h = new KeyedHarness(Script, { on_timer: "clear" });
  h.push("a", "set:3;ptimer:50;timer:1000", 1).push("b", "set:4;timer:900", 2).run();
  h.setNow(49);
  assert.deepEqual(vals(h), []);
  h.setNow(50);
  assert.deepEqual(vals(h), ["a@50:fired:p:50:3"]);
  assert.equal(h.state("a"), undefined);
  h.finish();
  assert.deepEqual(vals(h).slice(1), ["b@900:fired:e:900:4", "a@1000:fired:e:1000:none"]);
  assert.equal(h.timerCount(), 0);
  assert.equal(h.watermark, 2);
  const g = new KeyedHarness(Script, { on_timer: "again" });
  g.push("k", "timer:10", 0).run();
  g.advanceWatermark(12);
  assert.deepEqual(vals(g), ["k@10:fired:e:10:none", "k@11:fired:e:11:none", "k@12:fired:e:12:none"]);
  assert.deepEqual(g.timers("k"), [{ time: 13, domain: E }]);
});

test("harness: a failure changes nothing; rejections count pushed events; calls are made twice", () => {
  const h = new KeyedHarness(Script);
  h.push("a", "set:1;reject", 1).push("a", "forward", 2).run();
  h.push("b", "reject", 3).run();
  assert.deepEqual(h.output.rejected, [{ index: 0, reason: "refused" }, { index: 2, reason: "refused" }]);
  h.push("a", "set:9;timer:5", 4).push("a", "fail", 5);
  assert.throws(() => h.run(), { message: "failed on purpose" });
  assert.deepEqual(h.state("a"), [1]);
  assert.deepEqual(h.timers("a"), []);
  assert.throws(() => h.push("", "emit", 1), /needs a key/);
  class Leaky extends KeyedProcessor {
    n = 0;
    process(_ctx, _event, out) {
      out.emitJson(++this.n);
    }
  }
  assert.throws(() => new KeyedHarness(Leaky).push("a", "", 1).run(), /the same call made twice returned different results/);
  const once = new KeyedHarness(Leaky, [], { repeatCalls: false });
  once.push("a", "", 1).push("a", "", 2).run();
  assert.deepEqual(once.output.json(), [1, 2]);
});

// Lookup tables (`ctx.lookup`): the daemon's `[tables.NAME]`, given to the
// harness with the `tables` option or `table(name, rows)`.

const AIRPORTS = {
  JFK: { name: "John F Kennedy Intl", tz: -5 },
  LAX: { name: "Los Angeles Intl", tz: -8 },
};

// Per plane (the key): each flight ({"dest": CODE}, its event time the arrival
// in UTC) with its destination's name and local hour of arrival from table
// `airports` (or the config's `table`), and the plane's count of flights with
// a known destination so far (the state). An unknown destination emits "?".
class Arrivals extends KeyedProcessor {
  process(ctx, event, out) {
    const dest = event.json().dest;
    const row = ctx.lookup(this.config.get("table", "airports"), dest);
    if (row === null) {
      out.emitJson({ dest, name: "?" });
      return;
    }
    const n = (ctx.state ?? 0) + 1;
    ctx.setState(n);
    const hour = (((Math.floor(event.timestampMs / 3_600_000) + row.tz) % 24) + 24) % 24;
    out.emitJson({ dest, name: row.name, local_hour: hour, n });
  }
}

test("lookup enriches each event from a table given to the harness", () => {
  const h = new KeyedHarness(Arrivals, [], { tables: { airports: AIRPORTS } });
  // 10:00 UTC at JFK (UTC-5) is 05:00; 02:30 UTC at LAX (UTC-8) is 18:30 the
  // day before; 23:00 UTC at JFK is 18:00.
  h.push("N1", '{"dest":"JFK"}', 10 * 3_600_000);
  h.push("N2", '{"dest":"LAX"}', 2 * 3_600_000 + 1_800_000);
  h.push("N1", '{"dest":"XXX"}', 11 * 3_600_000);
  h.push("N1", '{"dest":"JFK"}', 23 * 3_600_000);
  h.run();
  assert.deepEqual(h.output.json(), [
    { dest: "JFK", name: "John F Kennedy Intl", local_hour: 5, n: 1 },
    { dest: "LAX", name: "Los Angeles Intl", local_hour: 18, n: 1 },
    { dest: "XXX", name: "?" },
    { dest: "JFK", name: "John F Kennedy Intl", local_hour: 18, n: 2 },
  ]);
  assert.deepEqual(h.output.records().map((r) => dec(r.key)), ["N1", "N2", "N1", "N1"]);
  // The unknown destination counts nothing.
  assert.equal(h.state("N1"), 2);
  assert.equal(h.state("N2"), 1);
});

// Emits [lookup, lookupText] of the event's `TABLE:KEY`, and lookupText of its
// table with the key as bytes (`ctx.key`, read as UTF-8).
class Probe extends KeyedProcessor {
  process(ctx, event, out) {
    const [table, key] = event.text().split(":");
    out.emitJson([ctx.lookup(table, key), ctx.lookupText(table, key), ctx.lookupText(table, ctx.key)]);
  }
}

test("lookup of an absent key is null; rows are given as objects or JSON text", () => {
  const h = new KeyedHarness(Probe).table("planes", [["N1", '{"seats": 180}'], ["N2", enc('{"seats":2}')]]);
  h.table("codes", new Map([["1", { code: "A" }], ["é", ["not", "an", "object"]]]));
  h.push("N2", "planes:N1").push("é", "planes:N9").push("N1", "codes:1").run();
  assert.deepEqual(h.output.json(), [
    // The text as given; the key N2's row.
    [{ seats: 180 }, '{"seats": 180}', '{"seats":2}'],
    // No plane N9, nor "é".
    [null, null, null],
    // An object is written as JSON; codes has no key N1.
    [{ code: "A" }, '{"code":"A"}', null],
  ]);
  // A row that is not a JSON object fails the call, naming the row and table.
  assert.throws(
    () => new KeyedHarness(Probe).table("codes", { é: ["not", "an", "object"] }).push("k", "codes:é").run(),
    (e) => e instanceof SluiceError && e.message === 'row "é" of table `codes`: not a JSON object: ["not","an","object"]',
  );
  assert.throws(
    () => new KeyedHarness(Probe).table("codes", { x: "{bad" }).push("k", "codes:x").run(),
    (e) => e instanceof SluiceError && e.message.startsWith('row "x" of table `codes`: '),
  );
});

test("lookup of an unknown table throws with the host's text", () => {
  const h = new KeyedHarness(Arrivals, { table: "airport" }, { tables: { airports: AIRPORTS, planes: {} } });
  h.push("N1", '{"dest":"JFK"}', 1);
  assert.throws(() => h.run(), (e) => e instanceof SluiceError && e.message === "no table `airport` (the harness has: airports, planes)");
  // The failed call changed nothing.
  assert.deepEqual(h.output.json(), []);
  assert.equal(h.state("N1"), undefined);
  assert.throws(
    () => new KeyedHarness(Arrivals).push("N1", '{"dest":"JFK"}', 1).run(),
    (e) => e.message === "no table `airports` (the harness has: none)",
  );
  // The plugin may catch it and go on.
  class Careful extends KeyedProcessor {
    process(ctx, _event, out) {
      try {
        ctx.lookup("nope", "k");
      } catch (e) {
        out.emit(e.message);
      }
    }
  }
  const got = runKeyed(new Careful(new Map()), { keys: [enc("k")], states: [undefined], events: new Batch([{ value: "", key: "k" }]), groups: [0] });
  assert.deepEqual(got.out.values().map(dec), ["no table `nope` (no tables given)"]);
});

test("the component glue reads the host's tables import", () => {
  // jco's bindings of `lookup: func(...) -> result<option<string>, string>`:
  // the row's text or undefined; the `err` thrown (a ComponentError whose
  // payload is the host's text).
  const tables = {
    lookup(table, key) {
      if (table !== "airports") {
        const e = new Error("Err");
        e.payload = `no table \`${table}\` (the daemon's tables: airports)`;
        throw e;
      }
      return key === "JFK" ? JSON.stringify(AIRPORTS.JFK) : undefined;
    },
  };
  const world = exportKeyedProcessor(Arrivals, undefined, tables);
  world.configure([]);
  const input = (values) => ({
    keys: [enc("N1")],
    states: [undefined],
    events: columns(values),
    groups: Uint32Array.from(values, () => 0),
    fired: [],
    watermark: -(2n ** 63n),
    now: 0n,
  });
  const got = world.processKeyed(input(['{"dest":"JFK"}', '{"dest":"LAX"}']));
  assert.equal(dec(got.events.values), '{"dest":"JFK","name":"John F Kennedy Intl","local_hour":5,"n":1}{"dest":"LAX","name":"?"}');
  assert.deepEqual(got.updates.map((u) => [u.group, dec(u.value)]), [[0, "1"]]);
  const wrong = exportKeyedProcessor(Arrivals, undefined, tables);
  wrong.configure([["table", "planes"]]);
  assert.throws(() => wrong.processKeyed(input(['{"dest":"JFK"}'])), (e) => e === "no table `planes` (the daemon's tables: airports)");
  // Without the import, a lookup fails the call and says what is missing.
  const bare = exportKeyedProcessor(Arrivals);
  bare.configure([]);
  assert.throws(() => bare.processKeyed(input(['{"dest":"JFK"}'])), (e) => typeof e === "string" && e.includes('import * as tables from "sluice:plugin/tables@0.2.0"'));
  assert.throws(() => exportKeyedProcessor(Arrivals, undefined, {}), TypeError);
});

// A batch's WIT columns (as the host sends them), values of key N1 at 10:00 UTC.
function columns(values) {
  const bytes = values.map(enc);
  let end = 0;
  return {
    values: enc(values.join("")),
    valueEnds: Uint32Array.from(bytes, (b) => (end += b.length)),
    keys: enc("N1".repeat(values.length)),
    keyEnds: Uint32Array.from(values, (_, i) => 2 * (i + 1)),
    timestamps: BigInt64Array.from(values, () => 36_000_000n),
    headers: [],
  };
}
