//! {{name}}: a sluice processing plugin (a WebAssembly component of the
//! `sluice:plugin/processor` world, `wit/plugin.wit`).
//!
//! It tags events: every event whose value is a JSON object is passed on with one
//! more field, `"tag": <config tag>`, appended at the end (compact JSON, the rest
//! of the object byte for byte), with its key and event time; anything else is
//! refused with the reason "not a JSON object" (the daemon sends it to the
//! dead-letter sink).
//!
//! Config: `tag` (a string, default "hello").

use serde_json::{Map, Value};
use sluice_plugin_sdk::{Batch, Config, Output, Processor, export_processor};

/// The processor. The daemon builds one per partition worker with `configure`, then
/// calls `process` once per micro-batch.
pub struct Tag {
    /// `"tag":"<tag>"}`, JSON-escaped once here rather than once per event.
    field: Vec<u8>,
}

impl Processor for Tag {
    fn configure(config: &Config) -> Result<Self, String> {
        // Every value arrives as a string; use `config.parse::<T>("name")` for
        // numbers and booleans. Return `Err(reason)` to refuse a config: the stage
        // then does not start, and the daemon says why.
        let tag = config.get("tag").unwrap_or("hello");
        let quoted = serde_json::to_string(tag).map_err(|e| e.to_string())?;
        Ok(Tag {
            field: format!("\"tag\":{quoted}}}").into_bytes(),
        })
    }

    fn process(&mut self, batch: &Batch, out: &mut Output) -> Result<(), String> {
        let mut value = Vec::new();
        for event in batch {
            // Parse to check that it is a JSON object (and whether it is empty).
            let Ok(object) = event.json::<Map<String, Value>>() else {
                out.reject(&event, "not a JSON object");
                continue;
            };
            // The original bytes without the closing `}`, then the new field.
            let text = event.value().trim_ascii();
            value.clear();
            value.extend_from_slice(&text[..text.len() - 1]);
            if !object.is_empty() {
                value.push(b',');
            }
            value.extend_from_slice(&self.field);
            out.push(event.key(), &value, event.timestamp_ms());
        }
        // An `Err` here would fail the whole batch (the stage's `on_error` policy
        // applies); to refuse single events, use `out.reject` as above.
        Ok(())
    }
}

export_processor!(Tag);

#[cfg(test)]
mod tests {
    use super::*;

    fn run(config: &[(&str, &str)], lines: &str) -> Output {
        let mut tag = Tag::configure(&Config::from_pairs(config.iter().copied())).unwrap();
        let mut out = Output::new();
        tag.process(&Batch::from_lines(lines), &mut out).unwrap();
        out
    }

    #[test]
    fn tags_objects_and_refuses_the_rest() {
        let out = run(&[("tag", "x")], "{\"a\":1}\n{}\n[1]\n{\"b\":\n");
        let values: Vec<&[u8]> = out.events.iter().map(|e| e.value()).collect();
        assert_eq!(values, [&br#"{"a":1,"tag":"x"}"#[..], br#"{"tag":"x"}"#]);
        let refused: Vec<u32> = out.rejected.iter().map(|r| r.index).collect();
        assert_eq!(refused, [2, 3]);
        assert_eq!(out.rejected[0].reason, "not a JSON object");
    }

    #[test]
    fn keeps_key_and_time_and_escapes_the_tag() {
        let mut batch = Batch::new();
        batch.push(Some(b"k1"), br#"{"a":1}"#, 1_700_000_000_000);
        let mut tag = Tag::configure(&Config::from_pairs([("tag", "say \"hi\"")])).unwrap();
        let mut out = Output::new();
        tag.process(&batch, &mut out).unwrap();
        let event = out.events.get(0).unwrap();
        assert_eq!(event.value(), br#"{"a":1,"tag":"say \"hi\""}"#);
        assert_eq!(event.key(), Some(&b"k1"[..]));
        assert_eq!(event.timestamp_ms(), 1_700_000_000_000);
    }

    #[test]
    fn tag_defaults_to_hello() {
        let out = run(&[], "{}");
        assert_eq!(out.events.get(0).unwrap().value(), br#"{"tag":"hello"}"#);
    }
}
