// {{name}}: a sluice window aggregate in JavaScript, on the sluice SDK
// (sluice.js). Plain JavaScript: `node --test` runs its unit tests
// (aggregator.test.js) without building; app.js makes it a component.
//
// The `n` most frequent values of the aggregate's `field` in each window, as
// [{"value": "BOS", "count": 3}, …], most frequent first (ties: smaller value
// first). Config: `n` (an integer, default 3).

import { Aggregator, SluiceError } from "./sluice.js";

// The accumulator: { value as JSON text: count }. The host keeps it as the bytes
// `encode` makes (JSON by default) and hands them back to `decode`, also to a
// newer version of this plugin after a swap: keep the encoding readable.
export class Top extends Aggregator {
  constructor(config) {
    super(config);
    this.n = config.int("n", 3);
    if (this.n < 1) throw new SluiceError("config `n`: must be at least 1");
  }
  create() {
    return {};
  }
  add(state, event) {
    // The event's value is the JSON text of the field: keep it as the key.
    const value = event.text();
    state[value] = (state[value] ?? 0) + 1;
    return state;
  }
  merge(a, b) {
    for (const [value, count] of Object.entries(b)) a[value] = (a[value] ?? 0) + count;
    return a;
  }
  finish(state) {
    return Object.entries(state)
      .sort((x, y) => y[1] - x[1] || (x[0] < y[0] ? -1 : x[0] > y[0] ? 1 : 0))
      .slice(0, this.n)
      .map(([value, count]) => ({ value: JSON.parse(value), count }));
  }
}
