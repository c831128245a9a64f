// {{name}}'s unit tests: `node --test` (Node.js 18+, nothing to build).
// KeyedHarness plays the daemon: it keeps the states and timers, moves the
// watermark and fires the timers as the daemon does.
import { test } from "node:test";
import assert from "node:assert/strict";

import { KeyedHarness, TimeDomain } from "./sluice.js";
import { Seen } from "./processor.js";

test("counts each key and refuses what is not an object", () => {
  const h = new KeyedHarness(Seen);
  h.push("a", '{"x":1}', 1000).push("b", '{"x":2}', 2000);
  h.push("a", '{"x":3,"seen":99}', 3000).push("a", "[1]", 4000);
  h.run();
  assert.deepEqual(h.output.texts(), ['{"x":1,"seen":1}', '{"x":2,"seen":1}', '{"x":3,"seen":2}']);
  assert.deepEqual(h.output.rejected, [{ index: 3, reason: "not a JSON object" }]);
  assert.deepEqual(h.state("a"), { n: 2, last_ms: 3000 });
  // A new batch goes on from the kept state.
  h.push("b", "{}", 5000).run();
  assert.equal(h.output.texts().at(-1), '{"seen":2}');
  assert.deepEqual(h.timers("a"), []);
});

test("a quiet key is forgotten after forget_minutes", () => {
  const h = new KeyedHarness(Seen, { forget_minutes: "1" });
  h.push("a", "{}", 0).push("a", "{}", 30000).run();
  assert.deepEqual(h.timers("a"), [{ time: 90000, domain: TimeDomain.EVENT_TIME }]);
  // b at 90 s moves the watermark to a's timer (30 s + 60 s): a is forgotten.
  h.push("b", "{}", 90000).push("a", "{}", 95000).run();
  assert.deepEqual(h.output.json(), [{ seen: 1 }, { seen: 2 }, { seen: 1 }, { seen: 1 }]);
});

test("forget_minutes must be above zero", () => {
  assert.throws(() => new KeyedHarness(Seen, { forget_minutes: "0" }), /not above 0/);
});
