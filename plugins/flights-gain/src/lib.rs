//! One small edit of every flight, written four ways, to measure what the way
//! costs (BENCHMARKS.md, "The SDK's record edits"): each flight that flew
//! (`dep_delay` and `arr_delay` not null) is passed on with `gain` (minutes
//! made up in the air, `dep_delay - arr_delay`) appended and `tailnum`
//! removed, with its key and event time; the others are dropped; a record
//! that is not JSON, or whose delays are not integers, is rejected.
//!
//! Config `way`:
//! - `edit` (default): the way the template teaches — [`Event::record`] with
//!   the fields read named, typed reads, an [`Edit`] pushed;
//! - `edit-all-named`: the same with the edited fields named too;
//! - `serde`: the way the template taught before — a `serde_json::Map`,
//!   `insert`, `shift_remove`, [`Output::push_json`];
//! - `scan`: by hand with [`scan::fields`] and offsets into the record,
//!   falling back to `serde` for what it does not handle.
//!
//! All four write the same bytes for every flight of the bundled dataset
//! (tested below).
//!
//! [`Edit`]: sluice_plugin_sdk::Edit

use serde_json::{Map, Value};
use sluice_plugin_sdk::{Batch, Config, Event, Output, Processor, export_processor, scan};

/// Which way (see the crate docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Way {
    Edit,
    EditAllNamed,
    Serde,
    Scan,
}

/// The plugin.
pub struct FlightsGain {
    way: Way,
}

impl Processor for FlightsGain {
    fn configure(config: &Config) -> Result<Self, String> {
        let way = match config.get("way").unwrap_or("edit") {
            "edit" => Way::Edit,
            "edit-all-named" => Way::EditAllNamed,
            "serde" => Way::Serde,
            "scan" => Way::Scan,
            other => return Err(format!("unknown way {other:?}")),
        };
        Ok(FlightsGain { way })
    }

    fn process(&mut self, batch: &Batch, out: &mut Output) -> Result<(), String> {
        let mut buf = Vec::new();
        for event in batch {
            match self.way {
                Way::Edit => edit(&event, out),
                Way::EditAllNamed => edit_all_named(&event, out),
                Way::Serde => serde(&event, out)?,
                Way::Scan => {
                    if !scan_by_hand(&event, out, &mut buf) {
                        serde(&event, out)?;
                    }
                }
            }
        }
        Ok(())
    }
}

/// An integer delay: `Ok(None)` when null or absent.
fn delay(field: Option<scan::Field<'_>>, name: &str) -> Result<Option<i64>, String> {
    match field {
        None => Ok(None),
        Some(f) if f.is_null() => Ok(None),
        Some(f) => f
            .as_i64()
            .map(Some)
            .ok_or_else(|| format!("{name} is not an integer")),
    }
}

fn edit_all_named(event: &Event<'_>, out: &mut Output) {
    let record = match event.record(&["dep_delay", "arr_delay", "gain", "tailnum"]) {
        Ok(record) => record,
        Err(reason) => return out.reject(event, reason),
    };
    let [dep, arr, ..] = record.fields();
    match (delay(dep, "dep_delay"), delay(arr, "arr_delay")) {
        (Ok(Some(dep)), Ok(Some(arr))) => record
            .edit()
            .set("gain", dep - arr)
            .remove("tailnum")
            .push_or_reject(out),
        (Err(reason), _) | (_, Err(reason)) => out.reject(event, reason),
        _ => {} // did not fly
    }
}

fn edit(event: &Event<'_>, out: &mut Output) {
    let record = match event.record(&["dep_delay", "arr_delay"]) {
        Ok(record) => record,
        Err(reason) => return out.reject(event, reason),
    };
    let [dep, arr] = record.fields();
    match (delay(dep, "dep_delay"), delay(arr, "arr_delay")) {
        (Ok(Some(dep)), Ok(Some(arr))) => record
            .edit()
            .set("gain", dep - arr)
            .remove("tailnum")
            .push_or_reject(out),
        (Err(reason), _) | (_, Err(reason)) => out.reject(event, reason),
        _ => {}
    }
}

fn serde(event: &Event<'_>, out: &mut Output) -> Result<(), String> {
    let mut flight: Map<String, Value> = match event.json() {
        Ok(map) => map,
        Err(reason) => {
            out.reject(event, reason);
            return Ok(());
        }
    };
    let number = |name: &str| match flight.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_i64()
            .map(Some)
            .ok_or_else(|| format!("{name} is not an integer")),
    };
    match (number("dep_delay"), number("arr_delay")) {
        (Ok(Some(dep)), Ok(Some(arr))) => {
            flight.insert("gain".into(), (dep - arr).into());
            flight.shift_remove("tailnum");
            out.push_json(event.key(), &flight, event.timestamp_ms())?;
        }
        (Err(reason), _) | (_, Err(reason)) => out.reject(event, reason),
        _ => {}
    }
    Ok(())
}

/// By hand: `false` when it cannot say (then the caller asks serde_json).
fn scan_by_hand(event: &Event<'_>, out: &mut Output, buf: &mut Vec<u8>) -> bool {
    let json = event.value();
    let Some([dep, arr, gain, tailnum]) =
        scan::fields(json, &["dep_delay", "arr_delay", "gain", "tailnum"])
    else {
        return false;
    };
    if gain.is_some() {
        return false;
    }
    let (Ok(dep), Ok(arr)) = (delay(dep, "dep_delay"), delay(arr, "arr_delay")) else {
        return false;
    };
    let (Some(dep), Some(arr)) = (dep, arr) else {
        return true; // did not fly
    };
    let text = json.trim_ascii();
    let offset = |raw: &[u8]| raw.as_ptr() as usize - text.as_ptr() as usize;
    buf.clear();
    match tailnum {
        None => buf.extend_from_slice(&text[..text.len() - 1]),
        Some(tailnum) => {
            // `"tailnum":` written compactly just before the value, a comma after.
            const KEY: &[u8] = b"\"tailnum\":";
            let start = offset(tailnum.raw());
            let end = start + tailnum.raw().len();
            if start < KEY.len()
                || &text[start - KEY.len()..start] != KEY
                || text.get(end) != Some(&b',')
            {
                return false;
            }
            buf.extend_from_slice(&text[..start - KEY.len()]);
            buf.extend_from_slice(&text[end + 1..text.len() - 1]);
        }
    }
    if buf.len() > 1 {
        buf.push(b',');
    }
    buf.extend_from_slice(b"\"gain\":");
    buf.extend_from_slice((dep - arr).to_string().as_bytes());
    buf.push(b'}');
    out.push(event.key(), buf, event.timestamp_ms());
    true
}

export_processor!(FlightsGain);

#[cfg(test)]
mod tests {
    use super::*;

    fn run(way: &str, batch: &Batch) -> Output {
        let mut p = FlightsGain::configure(&Config::from_pairs([("way", way)])).unwrap();
        let mut out = Output::new();
        p.process(batch, &mut out).unwrap();
        out
    }

    #[test]
    fn every_way_writes_the_same_bytes_for_every_flight() {
        use std::io::BufRead;
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../examples/data/flights-2013.ndjson.gz"
        );
        let file = std::fs::File::open(path).unwrap();
        let mut batch = Batch::new();
        let mut flew = 0;
        for (i, line) in std::io::BufReader::new(flate2::read::MultiGzDecoder::new(file))
            .split(b'\n')
            .enumerate()
        {
            let line = line.unwrap();
            // The independent count: both delays are numbers.
            let v: Value = serde_json::from_slice(&line).unwrap();
            flew += usize::from(v["dep_delay"].is_i64() && v["arr_delay"].is_i64());
            batch.push(Some(b"k"), &line, i as i64);
        }
        let reference = run("serde", &batch);
        assert_eq!(reference.events.len(), flew);
        assert!(reference.rejected.is_empty());
        let first = reference.events.get(0).unwrap();
        let want: Value = serde_json::from_str(
            r#"{"year":2013,"month":1,"day":1,"dep_time":517,"sched_dep_time":515,"dep_delay":2,"arr_time":830,"sched_arr_time":819,"arr_delay":11,"carrier":"UA","flight":1545,"origin":"EWR","dest":"IAH","air_time":227,"distance":1400,"hour":5,"minute":15,"time_hour":"2013-01-01T10:00:00Z","event_time":"2013-01-01T10:17:00.000Z","event_time_ms":1357035420000,"sched_dep_ts":"2013-01-01T10:15:00.000Z","cancelled":false,"gain":-9}"#,
        )
        .unwrap();
        assert_eq!(
            serde_json::from_slice::<Value>(first.value()).unwrap(),
            want
        );
        for way in ["edit", "edit-all-named", "scan"] {
            assert!(run(way, &batch) == reference, "{way}");
        }
    }

    #[test]
    fn odd_records_alike_in_every_way() {
        let batch = Batch::from_lines(concat!(
            "{\"dep_delay\":1,\"arr_delay\":2}\n",
            "{\"tailnum\":\"N1\",\"dep_delay\":5,\"arr_delay\":2}\n",
            "{\"dep_delay\":1,\"arr_delay\":2,\"tailnum\":\"N1\"}\n",
            "{\"dep_delay\":null,\"arr_delay\":2}\n",
            "{\"dep_delay\":1.5,\"arr_delay\":2}\n",
            "{\"dep_delay\":1,\"arr_delay\":2,\"gain\":0}\n",
            "{\"dep_delay\":1,\"arr_delay\":2,\"t\\u0061ilnum\":\"x\"}\n",
        ));
        let reference = run("serde", &batch);
        let values: Vec<Value> = reference
            .events
            .iter()
            .map(|e| serde_json::from_slice(e.value()).unwrap())
            .collect();
        assert_eq!(
            values,
            [
                serde_json::json!({"dep_delay":1,"arr_delay":2,"gain":-1}),
                serde_json::json!({"dep_delay":5,"arr_delay":2,"gain":3}),
                serde_json::json!({"dep_delay":1,"arr_delay":2,"gain":-1}),
                serde_json::json!({"dep_delay":1,"arr_delay":2,"gain":-1}),
                serde_json::json!({"dep_delay":1,"arr_delay":2,"gain":-1}),
            ]
        );
        assert_eq!(reference.rejected.len(), 1);
        for way in ["edit", "edit-all-named", "scan"] {
            let got = run(way, &batch);
            let got_values: Vec<Value> = got
                .events
                .iter()
                .map(|e| serde_json::from_slice(e.value()).unwrap())
                .collect();
            assert_eq!(got_values, values, "{way}");
            assert_eq!(got.rejected, reference.rejected, "{way}");
        }
    }
}
