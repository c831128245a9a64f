// {{name}}'s unit tests: `node --test` (Node.js 18+, nothing to build).
import { test } from "node:test";
import assert from "node:assert/strict";

import { run } from "./sluice.js";
import { Tagger } from "./processor.js";

test("objects are tagged and the rest refused", () => {
  const out = run(Tagger, ['{"a":1}', "{}", "[1]", "{"], { tag: "x" });
  assert.deepEqual(out.texts(), ['{"a":1,"tag":"x"}', '{"tag":"x"}']);
  assert.deepEqual(out.rejected, [
    { index: 2, reason: "not a JSON object" },
    { index: 3, reason: "not a JSON object" },
  ]);
});

test("key and event time are kept", () => {
  const out = run(Tagger, [{ value: ' {"b": "é"} ', key: "k1", timestampMs: 1700000000000 }]);
  const [r] = out.records();
  assert.equal(new TextDecoder().decode(r.value), '{"b": "é","tag":"hello"}');
  assert.equal(new TextDecoder().decode(r.key), "k1");
  assert.equal(r.timestampMs, 1700000000000);
});

for (const tag of ['quote"d', "é", ""]) {
  test(`the tag ${JSON.stringify(tag)} is JSON-escaped`, () => {
    assert.deepEqual(run(Tagger, ["{}"], { tag }).json(), [{ tag }]);
  });
}
