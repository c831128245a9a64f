// {{name}}: a sluice keyed processing plugin in JavaScript, on the sluice SDK
// (sluice.js). Plain JavaScript: `node --test` runs its unit tests
// (processor.test.js) without building; app.js makes it a component of the
// `sluice:plugin/keyed-processor` world (wit/0.2.0/plugin.wit). The daemon
// keeps a state per key, and timers, for it.
//
// It counts each key's events: every event whose value is a JSON object is
// passed on with one more field, `"seen"`, the number of events of its key so
// far, this one included (`{"a":1}` becomes `{"a":1,"seen":3}`), keeping its
// key and event time; anything else is refused with the reason "not a JSON
// object" (the daemon sends it to the dead-letter sink). With `forget_minutes`
// set, a key that gets no event for that many minutes of event time starts
// again from 1 (an event-time timer clears its state).
//
// Config: `forget_minutes` (a whole number of minutes; default: never).
//
// The daemon keys the stream by the record key (the source's `key`), keeps
// each key's state as its JSON bytes (`{"n":3,"last_ms":1700000000000}`), and
// checkpoints it with the source position: a restart, a new build of the
// plugin or a recycled instance continue the counts. Keep the state readable
// by your next versions.

import { KeyedProcessor, SluiceError } from "./sluice.js";

export class Seen extends KeyedProcessor {
  // Called once per instance with the stage's config (values are strings:
  // `config.int`, `.float`, `.bool` parse them). A throw refuses the config.
  constructor(config) {
    super(config);
    const minutes = config.int("forget_minutes", null);
    if (minutes !== null && !(minutes > 0)) {
      throw new SluiceError(`config \`forget_minutes\`: ${minutes} is not above 0`);
    }
    this.forgetMs = minutes === null ? null : minutes * 60000;
  }

  // Called for each event, with the context of its key (`ctx.key`). A throw
  // fails the whole call (nothing of it is kept; the daemon retries the
  // events in smaller parts); to refuse one event, `out.reject` it.
  process(ctx, event, out) {
    let doc = null;
    try {
      doc = event.json();
    } catch (_) {
      // not UTF-8 or not JSON
    }
    if (doc === null || typeof doc !== "object" || Array.isArray(doc)) {
      out.reject(event, "not a JSON object");
      return;
    }
    const t = event.timestampMs;
    // The key's state: decoded once per call, written back if it changed.
    const state = ctx.state;
    const n = state === undefined ? 1 : state.n + 1;
    if (this.forgetMs !== null) {
      // One timer per key: move it from the previous event to this one.
      if (state !== undefined) ctx.deleteEventTimer(state.last_ms + this.forgetMs);
      ctx.setEventTimer(t + this.forgetMs);
    }
    ctx.setState({ n, last_ms: t });
    doc.seen = n;
    // No key or time given: the event's.
    out.emitJson(doc);
  }

  // The key had no event for `forget_minutes` (of event time: the watermark
  // reached the timer): forget it. Events emitted here with no key get this
  // key, with no time the timer's.
  onTimer(ctx, _timer, _out) {
    ctx.clearState();
  }
}
