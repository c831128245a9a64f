//! Keeps the flights that left at least `min_delay` minutes late, projected to a few
//! fields.
//!
//! Input: one flight per event, as in `examples/data/flights-2013.ndjson.gz`.
//! Config: `min_delay` (minutes, a number; default 0).
//! - `dep_delay` at or above `min_delay`: emitted as
//!   `{"carrier","flight","origin","dest","dep_delay","arr_delay","event_time"}`
//!   with the input's key and event time;
//! - `dep_delay` below it, or `null` (a cancelled flight): dropped;
//! - not JSON, or not a flight (a field missing or of the wrong type): rejected
//!   with the reason, so it lands in the dead-letter sink.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::Number;
use sluice_plugin_sdk::{Batch, Config, Output, Processor, export_processor};

/// The fields of a flight this plugin reads.
#[derive(Deserialize)]
struct Flight<'a> {
    #[serde(borrow)]
    carrier: Cow<'a, str>,
    flight: i64,
    #[serde(borrow)]
    origin: Cow<'a, str>,
    #[serde(borrow)]
    dest: Cow<'a, str>,
    dep_delay: Option<Number>,
    arr_delay: Option<Number>,
    #[serde(borrow)]
    event_time: Cow<'a, str>,
}

/// What it emits.
#[derive(Serialize)]
struct Delayed<'a> {
    carrier: &'a str,
    flight: i64,
    origin: &'a str,
    dest: &'a str,
    dep_delay: &'a Number,
    arr_delay: &'a Option<Number>,
    event_time: &'a str,
}

/// The delay filter.
pub struct FlightsDelay {
    min_delay: f64,
}

impl Processor for FlightsDelay {
    fn configure(config: &Config) -> Result<Self, String> {
        let min_delay = config.parse::<f64>("min_delay")?.unwrap_or(0.0);
        Ok(FlightsDelay { min_delay })
    }

    fn process(&mut self, batch: &Batch, out: &mut Output) -> Result<(), String> {
        for event in batch {
            let flight: Flight<'_> = match event.json() {
                Ok(f) => f,
                Err(reason) => {
                    out.reject(&event, reason);
                    continue;
                }
            };
            let Some(delay) = &flight.dep_delay else {
                continue; // cancelled
            };
            if delay.as_f64().is_some_and(|d| d >= self.min_delay) {
                let projected = Delayed {
                    carrier: &flight.carrier,
                    flight: flight.flight,
                    origin: &flight.origin,
                    dest: &flight.dest,
                    dep_delay: delay,
                    arr_delay: &flight.arr_delay,
                    event_time: &flight.event_time,
                };
                out.push_json(event.key(), &projected, event.timestamp_ms())?;
            }
        }
        Ok(())
    }
}

export_processor!(FlightsDelay);

#[cfg(test)]
mod tests {
    use super::*;

    const LATE: &str = r#"{"carrier":"UA","flight":1545,"origin":"EWR","dest":"IAH","dep_delay":15,"arr_delay":11,"event_time":"2013-01-01T10:17:00.000Z","cancelled":false}"#;
    const EARLY: &str = r#"{"carrier":"AA","flight":1,"origin":"JFK","dest":"LAX","dep_delay":-3,"arr_delay":null,"event_time":"2013-01-01T10:18:00.000Z"}"#;
    const CANCELLED: &str = r#"{"carrier":"B6","flight":2,"origin":"JFK","dest":"BOS","dep_delay":null,"arr_delay":null,"event_time":"2013-01-01T10:19:00.000Z"}"#;

    fn run(min_delay: &str, lines: &[&str]) -> Output {
        let mut p =
            FlightsDelay::configure(&Config::from_pairs([("min_delay", min_delay)])).unwrap();
        let batch = Batch::from_lines(&lines.join("\n"));
        let mut out = Output::new();
        p.process(&batch, &mut out).unwrap();
        out
    }

    #[test]
    fn keeps_at_or_above_threshold_and_drops_cancelled() {
        let out = run("15", &[LATE, EARLY, CANCELLED]);
        assert_eq!(out.events.len(), 1);
        assert_eq!(
            std::str::from_utf8(out.events.get(0).unwrap().value()).unwrap(),
            r#"{"carrier":"UA","flight":1545,"origin":"EWR","dest":"IAH","dep_delay":15,"arr_delay":11,"event_time":"2013-01-01T10:17:00.000Z"}"#
        );
        assert_eq!(run("-5", &[LATE, EARLY, CANCELLED]).events.len(), 2);
    }

    #[test]
    fn rejects_what_is_not_a_flight() {
        let out = run("0", &["not json", r#"{"carrier":"UA"}"#, LATE]);
        assert_eq!(out.events.len(), 1);
        let idx: Vec<u32> = out.rejected.iter().map(|r| r.index).collect();
        assert_eq!(idx, vec![0, 1]);
        assert!(
            out.rejected[1].reason.contains("missing field"),
            "{}",
            out.rejected[1].reason
        );
    }

    #[test]
    fn bad_config_is_an_error() {
        assert!(FlightsDelay::configure(&Config::from_pairs([("min_delay", "soon")])).is_err());
    }
}
