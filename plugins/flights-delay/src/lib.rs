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
//!
//! Most flights are read with the SDK's field scanner
//! ([`sluice_plugin_sdk::scan`]) and projected by copying the fields' text
//! into a new object ([`Output::object`]);
//! whatever it does not settle (an escaped string, a float, an error) goes
//! through serde_json, the reference, which the scanner's results must match
//! byte for byte (tested below on every flight of the dataset and on mutated
//! ones).

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::Number;
use sluice_plugin_sdk::scan::Field;
use sluice_plugin_sdk::{Batch, Config, Event, Output, Processor, export_processor};

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
            if self.scan(&event, out).is_none() {
                self.parse(&event, out)?;
            }
        }
        Ok(())
    }
}

/// The fields [`FlightsDelay::scan`] reads, in [`Flight`]'s order.
const FIELDS: [&str; 7] = [
    "carrier",
    "flight",
    "origin",
    "dest",
    "dep_delay",
    "arr_delay",
    "event_time",
];

impl FlightsDelay {
    /// The fast path: `Some(true)` when the flight is kept (its projection
    /// pushed to `out`), `Some(false)` when it is dropped, `None` when only
    /// serde_json can say ([`parse`](Self::parse)): a string with an escape,
    /// a number that is not an integer serde_json reads exactly, a field
    /// missing, given twice or of the wrong type, anything that is not valid
    /// JSON. `out` is untouched unless the answer is `Some(true)`.
    fn scan<'a>(&self, event: &Event<'a>, out: &mut Output) -> Option<bool> {
        // `Event::fields`, not `Event::record`: `Flight` refuses a field given
        // twice, and `fields` answers `None` for one.
        let [
            carrier,
            flight,
            origin,
            dest,
            dep_delay,
            arr_delay,
            event_time,
        ] = event.fields(&FIELDS)?;
        // Strings without escapes and integers are written by serde_json exactly
        // as they are read: their text is copied.
        let text = |field: Option<Field<'a>>| field.filter(|f| f.as_str().is_some());
        // An absent `Option` field is `None`, as serde reads `Flight`.
        let optional = |field: Option<Field<'a>>| match field {
            None => Some(None),
            Some(f) if f.is_null() => Some(None),
            Some(f) => f.as_i64().map(|n| Some((n, f))),
        };
        let (carrier, origin, dest, event_time) = (
            text(carrier)?,
            text(origin)?,
            text(dest)?,
            text(event_time)?,
        );
        let flight = flight.filter(|f| f.as_i64().is_some())?;
        let arr_delay = optional(arr_delay)?.map(|(_, field)| field);
        let Some((delay, dep_delay)) = optional(dep_delay)? else {
            return Some(false); // cancelled
        };
        if delay as f64 >= self.min_delay {
            out.object()
                .field("carrier", carrier)
                .field("flight", flight)
                .field("origin", origin)
                .field("dest", dest)
                .field("dep_delay", dep_delay)
                .field("arr_delay", arr_delay)
                .field("event_time", event_time)
                .push(event.key(), event.timestamp_ms());
            return Some(true);
        }
        Some(false)
    }

    /// The reference: serde_json into [`Flight`], then into [`Delayed`].
    fn parse(&self, event: &Event<'_>, out: &mut Output) -> Result<(), String> {
        let flight: Flight<'_> = match event.json() {
            Ok(f) => f,
            Err(reason) => {
                out.reject(event, reason);
                return Ok(());
            }
        };
        let Some(delay) = &flight.dep_delay else {
            return Ok(()); // cancelled
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
        Ok(())
    }
}

/// [`FlightsDelay`] with serde_json alone (its code before the scanner): the
/// reference its tests compare with, and the "before" of the benchmarks.
#[doc(hidden)]
pub struct SerdeOnly(FlightsDelay);

impl Processor for SerdeOnly {
    fn configure(config: &Config) -> Result<Self, String> {
        FlightsDelay::configure(config).map(SerdeOnly)
    }

    fn process(&mut self, batch: &Batch, out: &mut Output) -> Result<(), String> {
        for event in batch {
            self.0.parse(&event, out)?;
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

    const ALL_MIN_DELAYS: [&str; 5] = ["15", "0", "-5", "NaN", "1e300"];

    /// Both paths over `lines`, for each `min_delay`: the outputs must be equal
    /// (events byte for byte, rejections with their reasons).
    fn assert_same_as_serde(lines: &[Vec<u8>], min_delays: &[&str]) -> usize {
        let mut batch = Batch::new();
        for (i, line) in lines.iter().enumerate() {
            batch.push(Some(b"k"), line, i as i64);
        }
        let mut kept = 0;
        for &min_delay in min_delays {
            let config = Config::from_pairs([("min_delay", min_delay)]);
            let (mut fast, mut reference) = (Output::new(), Output::new());
            FlightsDelay::configure(&config)
                .unwrap()
                .process(&batch, &mut fast)
                .unwrap();
            SerdeOnly::configure(&config)
                .unwrap()
                .process(&batch, &mut reference)
                .unwrap();
            if fast != reference {
                let first = (0..lines.len())
                    .find(|&i| {
                        let one = Batch::from_lines(std::str::from_utf8(&lines[i]).unwrap_or(""));
                        let (mut a, mut b) = (Output::new(), Output::new());
                        FlightsDelay::configure(&config)
                            .unwrap()
                            .process(&one, &mut a)
                            .unwrap();
                        SerdeOnly::configure(&config)
                            .unwrap()
                            .process(&one, &mut b)
                            .unwrap();
                        a != b
                    })
                    .map(|i| String::from_utf8_lossy(&lines[i]).into_owned());
                panic!("min_delay {min_delay}: outputs differ, first at {first:?}");
            }
            kept += fast.events.len();
        }
        kept
    }

    #[test]
    fn same_output_as_serde_on_every_flight() {
        use std::io::BufRead;
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../examples/data/flights-2013.ndjson.gz"
        );
        let file = std::fs::File::open(path).unwrap();
        let lines: Vec<Vec<u8>> = std::io::BufReader::new(flate2::read::MultiGzDecoder::new(file))
            .split(b'\n')
            .map(Result::unwrap)
            .collect();
        assert_eq!(lines.len(), 336_776);
        assert_eq!(assert_same_as_serde(&lines, &["15"]), 72_914);
        // And every flight takes the fast path.
        let p = FlightsDelay::configure(&Config::from_pairs([("min_delay", "15")])).unwrap();
        let mut batch = Batch::new();
        let mut out = Output::new();
        for line in &lines {
            batch.clear();
            batch.push(None, line, 0);
            let event = batch.get(0).unwrap();
            let scanned = p.scan(&event, &mut out);
            assert!(scanned.is_some(), "{}", String::from_utf8_lossy(line));
        }
    }

    #[test]
    fn same_output_as_serde_on_odd_flights() {
        let odd = [
            // Escapes, floats, -0, big numbers, missing and duplicate fields,
            // other types, whitespace, trailing bytes, not UTF-8.
            r#"{"carrier":"U\u0041","flight":1,"origin":"EWR","dest":"IAH","dep_delay":15,"arr_delay":1,"event_time":"t"}"#,
            r#"{"carrier":"UA","flight":1,"origin":"EWR","dest":"IAH","dep_delay":15.0,"arr_delay":1,"event_time":"t"}"#,
            r#"{"carrier":"UA","flight":1,"origin":"EWR","dest":"IAH","dep_delay":1.5e1,"arr_delay":1e0,"event_time":"t"}"#,
            r#"{"carrier":"UA","flight":1,"origin":"EWR","dest":"IAH","dep_delay":-0,"arr_delay":-0,"event_time":"t"}"#,
            r#"{"carrier":"UA","flight":-0,"origin":"EWR","dest":"IAH","dep_delay":20,"arr_delay":0,"event_time":"t"}"#,
            r#"{"carrier":"UA","flight":1.0,"origin":"EWR","dest":"IAH","dep_delay":20,"arr_delay":0,"event_time":"t"}"#,
            r#"{"carrier":"UA","flight":9223372036854775808,"origin":"EWR","dest":"IAH","dep_delay":20,"arr_delay":0,"event_time":"t"}"#,
            r#"{"carrier":"UA","flight":1,"origin":"EWR","dest":"IAH","dep_delay":18446744073709551615,"arr_delay":99999999999999999999,"event_time":"t"}"#,
            r#"{"carrier":"UA","flight":1,"origin":"EWR","dest":"IAH","dep_delay":20,"event_time":"t"}"#,
            r#"{"carrier":"UA","flight":1,"origin":"EWR","dest":"IAH","arr_delay":3,"event_time":"t"}"#,
            r#"{"carrier":"UA","flight":1,"origin":"EWR","dest":"IAH","dep_delay":20,"arr_delay":3}"#,
            r#"{"carrier":"UA","carrier":"AA","flight":1,"origin":"EWR","dest":"IAH","dep_delay":20,"arr_delay":3,"event_time":"t"}"#,
            r#"{"x":1,"x":2,"carrier":"UA","flight":1,"origin":"EWR","dest":"IAH","dep_delay":20,"arr_delay":3,"event_time":"t"}"#,
            r#"{"carrier":null,"flight":1,"origin":"EWR","dest":"IAH","dep_delay":20,"arr_delay":3,"event_time":"t"}"#,
            r#"{"carrier":"UA","flight":"1","origin":"EWR","dest":"IAH","dep_delay":20,"arr_delay":3,"event_time":"t"}"#,
            r#"{"carrier":"UA","flight":1,"origin":"EWR","dest":"IAH","dep_delay":"20","arr_delay":3,"event_time":"t"}"#,
            r#"{"carrier":"UA","flight":1,"origin":"EWR","dest":"IAH","dep_delay":null,"arr_delay":"x","event_time":"t"}"#,
            r#"{"carrier":"UA","flight":1,"origin":"EWR","dest":"IAH","dep_delay":true,"arr_delay":3,"event_time":"t"}"#,
            " \t{ \"carrier\" : \"UA\" , \"flight\" : 1 , \"origin\" : \"EWR\" , \"dest\" : \"IAH\" , \"dep_delay\" : 20 , \"arr_delay\" : null , \"event_time\" : \"t\" } \r",
            r#"{"carrier":"UA","flight":1,"origin":"EWR","dest":"IAH","dep_delay":20,"arr_delay":3,"event_time":"t"} x"#,
            r#"{"carrier":"UA","flight":1,"origin":"EWR","dest":"IAH","dep_delay":20,"arr_delay":3,"event_time":"t",}"#,
            r#"{"carrier":"Ü","flight":1,"origin":"EWR","dest":"IAH","dep_delay":20,"arr_delay":3,"event_time":"t","note":{"a":[1,{"b":"\"\u00e9"}]}}"#,
            r#"["UA",1,"EWR","IAH",20,3,"t"]"#,
            r#"{"carr\u0069er":"UA","flight":1,"origin":"EWR","dest":"IAH","dep_delay":20,"arr_delay":3,"event_time":"t"}"#,
        ];
        let mut lines: Vec<Vec<u8>> = odd.iter().map(|l| l.as_bytes().to_vec()).collect();
        let mut bad_utf8 = LATE.as_bytes().to_vec();
        bad_utf8[13] = 0xff; // in the carrier
        lines.push(bad_utf8);
        let mut bad_utf8 = LATE.as_bytes().to_vec();
        let at = LATE.find("false").unwrap() - 3;
        bad_utf8.splice(at..at, *b",\"z\":\"\xff\"");
        lines.push(bad_utf8);
        assert!(assert_same_as_serde(&lines, &ALL_MIN_DELAYS) > 0);
    }

    /// Every one-byte change (and deletion) of a few flights.
    #[test]
    fn same_output_as_serde_on_mutated_flights() {
        let mut lines = Vec::new();
        for base in [LATE, EARLY, CANCELLED] {
            let base = base.as_bytes();
            for at in 0..base.len() {
                for b in [
                    b'"', b'\\', b'{', b'}', b'[', b',', b':', b' ', b'0', b'9', b'-', b'.', b'e',
                    b'n', b'x', 0x01, 0xc3,
                ] {
                    let mut changed = base.to_vec();
                    changed[at] = b;
                    lines.push(changed);
                }
                let mut shorter = base.to_vec();
                shorter.remove(at);
                lines.push(shorter);
            }
        }
        assert!(assert_same_as_serde(&lines, &ALL_MIN_DELAYS) > 0);
    }

    #[test]
    fn bad_config_is_an_error() {
        assert!(FlightsDelay::configure(&Config::from_pairs([("min_delay", "soon")])).is_err());
    }
}
