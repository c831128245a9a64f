// {{name}}: a sluice processing plugin in JavaScript, on the sluice SDK
// (sluice.js). Plain JavaScript: `node --test` runs its unit tests
// (processor.test.js) without building; app.js makes it a component.
//
// It tags events: every event whose value is a JSON object is passed on with one
// more field, `"tag": <config tag>`, appended at the end (compact JSON, the rest of
// the object byte for byte), with its key and event time; anything else is refused
// with the reason "not a JSON object" (the daemon sends it to the dead-letter sink).
//
// Config: `tag` (a string, default "hello").

export class Tagger {
  // Called once per instance with the stage's config (`config.get`, `.int`,
  // `.float`, `.bool`; values are strings). `throw new SluiceError("reason")`
  // refuses the config: the stage then does not start.
  constructor(config) {
    // `"tag":"<tag>"}`, JSON-escaped once.
    this.field = '"tag":' + JSON.stringify(config.get("tag", "hello")) + "}";
  }

  // Called once per micro-batch. A throw fails the whole batch (the stage's
  // `on_error` policy applies); to refuse single events, `out.reject` them.
  process(batch, out) {
    for (const event of batch) {
      let text;
      let doc = null;
      try {
        text = event.text().trim(); // only JSON whitespace can surround valid JSON
        doc = JSON.parse(text);
      } catch (_) {
        // not UTF-8, not JSON, or nested too deeply
      }
      if (doc === null || typeof doc !== "object" || Array.isArray(doc)) {
        out.reject(event, "not a JSON object");
        continue;
      }
      // The original text without the closing `}`, then the new field.
      const comma = Object.keys(doc).length > 0 ? "," : "";
      out.emit(text.slice(0, -1) + comma + this.field, event.key, event.timestamp);
    }
  }
}
