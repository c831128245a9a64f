//! {{name}}: a sluice keyed processing plugin (a WebAssembly component of the
//! `sluice:plugin/keyed-processor` world, `wit/0.2.0/plugin.wit`), with a
//! state per key that the daemon keeps for it.
//!
//! It counts each key's events: every event whose value is a JSON object is
//! passed on with one more field, `"seen"`, the number of events of its key
//! so far, this one included (`{"a":1}` becomes `{"a":1,"seen":3}`), keeping
//! its key, event time and headers; anything else is refused with the reason
//! (the daemon sends it to the dead-letter sink). With `forget_minutes` set,
//! a key that gets no event for that many minutes of event time starts again
//! from 1 (an event-time timer clears its state).
//!
//! Config: `forget_minutes` (a whole number of minutes; default: never).
//!
//! The daemon keys the stream by the record key (the source's `key`), keeps
//! each key's `State` as the bytes serde_json makes of it, and checkpoints it
//! with the source position: a restart, a new build of the plugin or a
//! recycled instance continue the counts. Keep `State` readable by your next
//! versions (`#[serde(default)]` on a new field).

use serde::{Deserialize, Serialize};
use sluice_plugin_sdk::{
    Config, Event, KeyedContext, KeyedProcessor, Output, Timer, export_keyed_processor,
};

/// What the daemon keeps per key (as JSON: `{"n":3,"last_ms":1700000000000}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// Events of the key so far.
    pub n: u64,
    /// Event time of the latest, ms since the Unix epoch.
    pub last_ms: i64,
}

/// The processor. The daemon builds one per partition worker with
/// `configure`, then calls `process` for each event (with its key's state)
/// and `on_timer` for each timer that fires.
pub struct Seen {
    /// `forget_minutes` in ms.
    forget_ms: Option<i64>,
}

impl KeyedProcessor for Seen {
    type State = State;

    fn configure(config: &Config) -> Result<Self, String> {
        // Every value arrives as a string; `config.parse::<T>` reads numbers.
        // An `Err` stops the stage from starting, and the daemon says why.
        let forget_ms = match config.parse::<i64>("forget_minutes")? {
            None => None,
            Some(m) if m > 0 && m < i64::MAX / 60_000 => Some(m * 60_000),
            Some(m) => return Err(format!("config `forget_minutes`: {m} is not above 0")),
        };
        Ok(Seen { forget_ms })
    }

    fn process(
        &mut self,
        ctx: &mut KeyedContext<'_, State>,
        event: &Event<'_>,
        out: &mut Output,
    ) -> Result<(), String> {
        // One pass: checks that the value is a JSON object (nothing is parsed
        // into a map).
        let record = match event.record(&[]) {
            Ok(record) => record,
            Err(reason) => {
                out.reject(event, reason); // e.g. "not a JSON object"
                return Ok(());
            }
        };
        let t = event.timestamp_ms();
        // The key's state: decoded once per call, written back if changed.
        let (n, last) = match ctx.state() {
            Some(state) => (state.n + 1, Some(state.last_ms)),
            None => (1, None),
        };
        ctx.set_state(State { n, last_ms: t });
        if let Some(forget) = self.forget_ms {
            // One timer per key: move it from the previous event to this one.
            if let Some(last) = last {
                ctx.delete_event_timer(last.saturating_add(forget));
            }
            ctx.set_event_timer(t.saturating_add(forget));
        }
        // The event passed on with `"seen": n` appended (or replaced).
        record.edit().set("seen", n).push_to(out)?;
        Ok(())
    }

    fn on_timer(
        &mut self,
        ctx: &mut KeyedContext<'_, State>,
        _timer: Timer,
        _out: &mut Output,
    ) -> Result<(), String> {
        // The key had no event for `forget_minutes` (of event time: the
        // watermark reached the timer): forget it. Records pushed here with
        // no key get this key.
        ctx.clear_state();
        Ok(())
    }
}

export_keyed_processor!(Seen);

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_plugin_sdk::KeyedHarness;

    /// The values emitted, as text.
    fn values(h: &KeyedHarness<Seen>) -> Vec<String> {
        h.output()
            .events
            .iter()
            .map(|e| String::from_utf8_lossy(e.value()).into_owned())
            .collect()
    }

    #[test]
    fn counts_each_key_and_refuses_what_is_not_an_object() {
        // The harness plays the daemon: it keeps the states and timers.
        let mut h = KeyedHarness::<Seen>::configure(Vec::<(String, String)>::new()).unwrap();
        h.push(b"a", br#"{"x":1}"#, 1_000)
            .push(b"b", br#"{"x":2}"#, 2_000)
            .push(b"a", br#"{"x":3,"seen":99}"#, 3_000)
            .push(b"a", b"[1]", 4_000);
        h.run().unwrap();
        assert_eq!(
            values(&h),
            [r#"{"x":1,"seen":1}"#, r#"{"x":2,"seen":1}"#, r#"{"x":3,"seen":2}"#]
        );
        assert_eq!(h.output().rejected[0].index, 3);
        assert_eq!(h.output().rejected[0].reason, "not a JSON object");
        assert_eq!(h.state(b"a"), Some(State { n: 2, last_ms: 3_000 }));
        // A new batch goes on from the kept state.
        h.push(b"b", br#"{}"#, 5_000).run().unwrap();
        assert_eq!(values(&h).last().unwrap(), r#"{"seen":2}"#);
    }

    #[test]
    fn a_quiet_key_is_forgotten_after_forget_minutes() {
        let mut h = KeyedHarness::<Seen>::configure([("forget_minutes", "1")]).unwrap();
        h.push(b"a", b"{}", 0).push(b"a", b"{}", 30_000).run().unwrap();
        // b at 90 s moves the watermark past a's timer (30 s + 60 s = 90 s).
        h.push(b"b", b"{}", 90_000).push(b"a", b"{}", 95_000).run().unwrap();
        assert_eq!(
            values(&h),
            [r#"{"seen":1}"#, r#"{"seen":2}"#, r#"{"seen":1}"#, r#"{"seen":1}"#]
        );
        assert!(KeyedHarness::<Seen>::configure([("forget_minutes", "0")]).is_err());
    }
}
