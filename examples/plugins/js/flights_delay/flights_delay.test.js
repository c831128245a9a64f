// flights_delay's unit tests under Node.js, without building:
// `node --test examples/plugins/js/flights_delay/`.
import { test } from "node:test";
import assert from "node:assert/strict";

import { Config, run } from "../../../../sdk/js/sluice.js";
import { FlightsDelay } from "./flights_delay.js";

const LATE =
  '{"carrier":"UA","flight":1545,"origin":"EWR","dest":"IAH","dep_delay":20,"arr_delay":11,"event_time":"2013-01-01T05:00:00Z","extra":[1,{"x":2}]}';
const ON_TIME =
  '{"carrier":"AA","flight":1,"origin":"JFK","dest":"MIA","dep_delay":-1,"arr_delay":null,"event_time":"2013-01-01T05:00:00Z"}';
const CANCELLED = '{"carrier":"B6","flight":2,"origin":"JFK","dest":"BOS","dep_delay":null,"arr_delay":null,"event_time":"t"}';
const dec = (b) => (b === null ? null : new TextDecoder().decode(b));

test("keeps the late ones, projected, with key and time", () => {
  const out = run(
    FlightsDelay,
    [{ value: LATE, key: "UA", timestampMs: 1000 }, { value: ON_TIME, key: "AA", timestampMs: 2000 }, { value: CANCELLED, timestampMs: 3 }],
    { min_delay: "15" },
  );
  assert.deepEqual(
    out.records().map((r) => [dec(r.value), dec(r.key), r.timestampMs]),
    [['{"carrier":"UA","flight":1545,"origin":"EWR","dest":"IAH","dep_delay":20,"arr_delay":11,"event_time":"2013-01-01T05:00:00Z"}', "UA", 1000]],
  );
  assert.deepEqual(out.rejected, []);
  assert.equal(run(FlightsDelay, [LATE, ON_TIME, CANCELLED]).length, 1);
});

// Whether this engine gives JSON.parse revivers the source text (SpiderMonkey in
// componentize-js does; Node.js 20 does not, and numbers then come out as
// JavaScript writes them).
let sourceAccess = false;
JSON.parse("1.0", (k, v, ctx) => {
  sourceAccess = ctx !== undefined && ctx.source === "1.0";
  return v;
});

test("numbers are written as in the input, where the engine tells", () => {
  const late = LATE.replace('"dep_delay":20', '"dep_delay":2.50e1').replace('"arr_delay":11', '"arr_delay":-0.0');
  const [text] = run(FlightsDelay, [late], { min_delay: "25" }).texts();
  const written = sourceAccess ? '"dep_delay":2.50e1,"arr_delay":-0.0,' : '"dep_delay":25,"arr_delay":0,';
  assert.ok(text.includes(written), `${text} has ${written}`);
});

test("what is not a flight is rejected with the reason", () => {
  const out = run(FlightsDelay, [
    "{",
    '{"carrier":"UA"}',
    LATE.replace('"flight":1545', '"flight":"1545"'),
    LATE.replace('"dep_delay":20', '"dep_delay":20,"dep_delay":21'),
    "[1,2]",
  ]);
  assert.deepEqual(
    out.rejected.map((r) => [r.index, r.reason.split(":")[0]]),
    [
      [0, "invalid JSON"],
      [1, "missing field `flight`"],
      [2, "invalid type for `flight`"],
      [3, "duplicate field `dep_delay`"],
      [4, "invalid length 2, expected a 7-element flight"],
    ],
  );
  assert.equal(out.length, 0);
});

test("a bad min_delay is refused", () => {
  assert.throws(() => new FlightsDelay(new Config({ min_delay: "soon" })), /config `min_delay`: cannot parse `soon`/);
});
