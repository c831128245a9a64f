// {{name}}'s unit tests: `node --test` (Node.js 18+, nothing to build).
import { test } from "node:test";
import assert from "node:assert/strict";

import { Config, aggregate } from "./sluice.js";
import { Top } from "./aggregator.js";

test("the most frequent values of a window", () => {
  const events = ['"LAX"', '"BOS"', '"SFO"', '"BOS"', '"LAX"', '"BOS"', "7"];
  assert.equal(aggregate(Top, events, { n: "2" }), '[{"value":"BOS","count":3},{"value":"LAX","count":2}]');
  assert.equal(
    aggregate(Top, events),
    '[{"value":"BOS","count":3},{"value":"LAX","count":2},{"value":"SFO","count":1}]',
  );
});

test("merge adds counts", () => {
  const top = new Top(new Config());
  assert.deepEqual(top.merge({ '"a"': 1 }, { '"a"': 2, '"b"': 1 }), { '"a"': 3, '"b"': 1 });
  assert.deepEqual(top.merge(top.create(), { '"a"': 1 }), { '"a"': 1 });
});

test("n must be positive", () => {
  assert.throws(() => new Top(new Config({ n: "0" })), /config `n`/);
});
