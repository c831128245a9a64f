//! The line decoders: `json`, `text`, `csv` and `syslog` lines, as every
//! source kind decodes them (`source::LineDecoder`), with a key and an event
//! time picked by JSON pointers.
//!
//! The input's first byte picks the source's settings (format, pointers,
//! `missing_timestamp`, the CSV options); the rest is the input, cut into
//! lines as a file source cuts them. With `format = "csv"` and no
//! `csv.header`, the first line is the header row. JSON lines are decoded
//! twice, by the scanner and by serde_json alone: the answers must agree.

#![no_main]

use std::sync::OnceLock;

use sluice::source::{LineDecoder, SourceSpec};

sluice_fuzz::fuzz_target!(|data| {
    let Some((&selector, input)) = data.split_first() else {
        return;
    };
    let spec = spec(selector);
    let mut decoder = LineDecoder::new(spec);
    let mut header_row = LineDecoder::header_row(spec);
    for line in input.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if std::mem::take(&mut header_row) {
            if let Err(reason) = decoder.set_header(spec, line) {
                assert!(!reason.is_empty());
            }
            continue;
        }
        if line.is_empty() {
            continue;
        }
        // The JSON scanner answers as serde_json does, or leaves it to it.
        if spec.format == sluice::config::Format::Json {
            assert_eq!(
                spec.decoder.decode(line),
                spec.decoder.decode_serde(line),
                "{:?}",
                String::from_utf8_lossy(line)
            );
        }
        match decoder.decode(spec, line) {
            Ok(event) => {
                // A CSV row or a syslog message becomes a JSON object.
                if let Some(value) = &event.value {
                    let parsed: serde_json::Value =
                        serde_json::from_slice(value).expect("the value is JSON");
                    assert!(parsed.is_object(), "{parsed}");
                }
                assert!(event.timestamp_ms.is_none() || spec.decoder.has_timestamp());
            }
            Err(reason) => assert!(!reason.is_empty()),
        }
    }
});

/// The source settings `selector` picks: bits 0–1 the format, 2–3 the key
/// pointer, 4–5 the event-time pointer, 6 `missing_timestamp =
/// "dead-letter"`, 7 (CSV) a header in the config rather than a header row,
/// and (CSV) bits 2–3 the delimiter too.
fn spec(selector: u8) -> &'static SourceSpec {
    static SPECS: [OnceLock<SourceSpec>; 256] = [const { OnceLock::new() }; 256];
    SPECS[usize::from(selector)].get_or_init(|| {
        let bits = |at: u8, n: u8| usize::from((selector >> at) & ((1 << n) - 1));
        let (format, keys, times): (&str, [&str; 3], [&str; 3]) = match bits(0, 2) {
            0 => ("json", ["/carrier", "/a/0", ""], ["/event_time", "/t/x~1y", "/0"]),
            1 => ("text", ["", "", ""], ["", "", ""]),
            2 => ("csv", ["/a", "/d", "/origin"], ["/b", "/time_hour", "/e"]),
            _ => (
                "syslog",
                ["/hostname", "/structured_data", "/appname"],
                ["/timestamp", "/procid", "/message"],
            ),
        };
        let mut table = format!("type = \"stdin\"\nformat = \"{format}\"\n");
        let (key, time) = (bits(2, 2), bits(4, 2));
        if format != "text" {
            if key > 0 {
                table.push_str(&format!("key = {:?}\n", keys[key - 1]));
            }
            if time > 0 {
                table.push_str(&format!("timestamp = {:?}\n", times[time - 1]));
                if bits(6, 1) == 1 {
                    table.push_str("missing_timestamp = \"dead-letter\"\n");
                }
            }
        }
        if format == "csv" {
            let delimiter = [",", ";", "\\t", "|"][key];
            let header = if bits(7, 1) == 1 {
                r#"header = ["a", "b", "c", "d", "e"], "#
            } else {
                ""
            };
            table.push_str(&format!(
                "csv = {{ delimiter = \"{delimiter}\", {header}columns = {{ a = \"int\", b = \"float\", c = \"bool\", e = \"int\" }}, nulls = [\"NA\", \"-\"] }}\n"
            ));
        }
        let text = format!(
            "[sources.s]\n{table}\n[sinks.out]\ntype = \"blackhole\"\n\n[pipelines.p]\nsource = \"s\"\nsinks = [\"out\"]\n"
        );
        let topology = sluice_fuzz::build(&sluice_fuzz::config_source(&text))
            .unwrap_or_else(|e| panic!("{e}\n{text}"));
        topology.pipelines[0].source.clone()
    })
}
