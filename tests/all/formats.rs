//! Formats: `format = "csv"` and `format = "syslog"` through a real daemon.
//! CSV rows of the bundled weather sample become the JSON objects this file
//! computes from the same CSV by hand; quoting, bad rows and a header read
//! again after a restart from a checkpoint; syslog lines (RFC 5424 and RFC
//! 3164) become objects with their fields, and what is not syslog is
//! dead-lettered.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use serde_json::{Value, json};

use crate::support::*;

fn weather_csv() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/data/weather-2013-head.csv")
}

/// A pipeline `p` from source `in` (the TOML lines given) through the
/// identity plugin to `out.ndjson`, dead letters to `dlq.ndjson`.
fn config(source: &str, checkpoint: bool) -> String {
    let checkpoint = if checkpoint {
        "checkpoint = { interval = \"50ms\" }"
    } else {
        ""
    };
    format!(
        r#"
[daemon]
plugins_dir = "@PLUGINS@"
admin = "off"

[sources.in]
{source}

[sinks.out]
type = "file"
path = "out.ndjson"

[sinks.dlq]
type = "file"
path = "dlq.ndjson"

[pipelines.p]
source = "in"
partitions = 1
batch = {{ max_records = 50, interval = "10ms" }}
processors = [{{ plugin = "identity.wasm" }}]
sinks = ["out"]
dead_letter = "dlq"
{checkpoint}
"#
    )
}

/// The weather rows as the typed objects `format = "csv"` must make of
/// them: split by hand (the file has no quotes), `NA` → null.
fn expected_weather() -> Vec<Value> {
    let text = std::fs::read_to_string(weather_csv()).unwrap();
    let mut lines = text.lines();
    let names: Vec<&str> = lines.next().unwrap().split(',').collect();
    assert_eq!(names.len(), 15);
    let ints = ["year", "month", "day", "hour"];
    lines
        .map(|line| {
            let fields: Vec<&str> = line.split(',').collect();
            assert_eq!(fields.len(), names.len(), "{line}");
            let mut object = serde_json::Map::new();
            for (name, field) in names.iter().zip(fields) {
                let value = if field == "NA" {
                    Value::Null
                } else if ["origin", "time_hour"].contains(name) {
                    Value::String(field.to_string())
                } else if ints.contains(name) {
                    Value::from(field.parse::<i64>().unwrap())
                } else {
                    Value::from(field.parse::<f64>().unwrap())
                };
                object.insert(name.to_string(), value);
            }
            Value::Object(object)
        })
        .collect()
}

/// `out` equals `want`, member by member and in order; floats up to one
/// unit in the last place (serde_json's default float parser, which reads
/// `out` here and in the plugin, may be off by one).
fn assert_same_row(out: &Value, want: &Value, row: usize) {
    let (o, w) = (out.as_object().unwrap(), want.as_object().unwrap());
    assert_eq!(
        o.keys().collect::<Vec<_>>(),
        w.keys().collect::<Vec<_>>(),
        "row {row}"
    );
    for ((name, o), w) in o.iter().zip(w.values()) {
        match (o, w) {
            (Value::Number(a), Value::Number(b)) if b.is_f64() => {
                let (a, b) = (a.as_f64().unwrap(), b.as_f64().unwrap());
                assert!(
                    (a - b).abs() <= b.abs() * 2.0 * f64::EPSILON,
                    "row {row}, {name}: {a} != {b}"
                );
            }
            _ => assert_eq!(o, w, "row {row}, {name}"),
        }
    }
}

const WEATHER_SOURCE: &str = r#"type = "file"
path = "weather.csv"
format = "csv"
key = "/origin"
timestamp = "/time_hour"
missing_timestamp = "dead-letter"
csv = { nulls = ["NA"], columns = { year = "int", month = "int", day = "int", hour = "int", temp = "float", dewp = "float", humid = "float", wind_dir = "float", wind_speed = "float", wind_gust = "float", precip = "float", pressure = "float", visib = "float" } }"#;

#[test]
fn csv_rows_become_typed_objects() {
    let scratch = Scratch::new(&config(WEATHER_SOURCE, false));
    std::fs::copy(weather_csv(), scratch.path("weather.csv")).unwrap();
    let output = scratch.run();
    assert_exit(&output, 0);
    let want = expected_weather();
    assert_eq!(want.len(), 200);
    // Some nulls and some numbers in the same column: the types were applied.
    assert!(want.iter().any(|w| w["wind_gust"].is_null()));
    assert!(want.iter().any(|w| w["wind_gust"].is_f64()));
    let out = scratch.read_json("out.ndjson");
    assert_eq!(out.len(), want.len());
    for (i, (o, w)) in out.iter().zip(&want).enumerate() {
        assert_same_row(o, w, i + 1);
    }
    // The member order is the header's.
    let first = scratch.read_lines("out.ndjson")[0].clone();
    assert!(
        first.starts_with(r#"{"origin":"EWR","year":2013,"month":1,"#),
        "{first}"
    );
    assert_eq!(count(&output, "p", "in"), 200);
    assert!(scratch.read_lines("dlq.ndjson").is_empty());
}

#[test]
fn csv_quoting_and_bad_rows() {
    let scratch = Scratch::new(&config(
        r#"type = "file"
path = "in.csv"
format = "csv"
csv = { columns = { n = "int", ok = "bool" } }"#,
        false,
    ));
    scratch.write(
        "in.csv",
        concat!(
            "name,n,ok,note\r\n",
            "plain,1,true,x\r\n",
            "\"with, comma\",2,false,\"say \"\"hi\"\"\"\n",
            "short,3,true\n",
            "badint,4.5,true,y\n",
            "\"open,5,true,z\n",
            "empty,,,\n",
        ),
    );
    let output = scratch.run();
    assert_exit(&output, 0);
    assert_eq!(
        scratch.read_json("out.ndjson"),
        [
            json!({"name": "plain", "n": 1, "ok": true, "note": "x"}),
            json!({"name": "with, comma", "n": 2, "ok": false, "note": "say \"hi\""}),
            json!({"name": "empty", "n": null, "ok": null, "note": ""}),
        ]
    );
    let dlq = scratch.read_json("dlq.ndjson");
    let reasons: Vec<(&str, &str)> = dlq
        .iter()
        .map(|d| {
            (
                d["original"].as_str().unwrap(),
                d["reason"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(reasons.len(), 3, "{dlq:?}");
    assert_eq!(reasons[0].0, "short,3,true");
    assert_eq!(
        reasons[0].1,
        "CSV row has 3 fields, the header 4 (name,n,ok,note)"
    );
    assert_eq!(reasons[1].0, "badint,4.5,true,y");
    assert!(
        reasons[1]
            .1
            .starts_with("CSV column `n`: \"4.5\" is not an int"),
        "{}",
        reasons[1].1
    );
    assert_eq!(reasons[2].0, "\"open,5,true,z");
    assert!(
        reasons[2].1.contains("unterminated quoted field"),
        "{}",
        reasons[2].1
    );
    assert_eq!(count(&output, "p", "rejected"), 3);
}

/// After a stop, the restart resumes past the header row: it is read again
/// from the file's start, so the appended rows get the header's names.
#[test]
fn csv_header_is_read_again_when_resuming_from_a_checkpoint() {
    let scratch = Scratch::new(&config(
        r#"type = "file"
path = "in.csv"
follow = true
format = "csv"
csv = { columns = { n = "int" } }"#,
        true,
    ));
    scratch.write("in.csv", "n,word\n1,one\n2,two\n");
    let daemon = Running::start(scratch.command("run"));
    scratch.wait_for_lines("out.ndjson", 2);
    daemon.signal("TERM");
    assert_exit(&daemon.finish(), 0);
    scratch.append_lines("in.csv", &["3,three".into(), "4,four".into()]);
    let mut daemon = Running::start(scratch.command("run"));
    daemon.wait_for("resuming from checkpoint");
    scratch.wait_for_lines("out.ndjson", 4);
    daemon.signal("TERM");
    let output = daemon.finish();
    assert_exit(&output, 0);
    assert_eq!(
        scratch.read_json("out.ndjson"),
        [
            json!({"n": 1, "word": "one"}),
            json!({"n": 2, "word": "two"}),
            json!({"n": 3, "word": "three"}),
            json!({"n": 4, "word": "four"}),
        ]
    );
    assert!(scratch.read_lines("dlq.ndjson").is_empty());
}

/// Stdin's first line is its header; `csv.header` names the fields instead
/// (then the first line is a row); another delimiter.
#[test]
fn csv_from_stdin_with_and_without_a_header_row() {
    for (csv, input, want) in [
        (
            r#"{ delimiter = ";" }"#,
            "a;b\n1;\"x;y\"\n",
            json!({"a": "1", "b": "x;y"}),
        ),
        (
            r#"{ header = ["a", "b"], columns = { a = "float" } }"#,
            "1.5,z\n",
            json!({"a": 1.5, "b": "z"}),
        ),
    ] {
        let scratch = Scratch::new(&config(
            &format!("type = \"stdin\"\nformat = \"csv\"\ncsv = {csv}"),
            false,
        ));
        let mut child = scratch
            .command("run")
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        let output = child.wait_with_output().unwrap();
        assert_exit(&output, 0);
        assert_eq!(scratch.read_json("out.ndjson"), [want]);
    }
}

#[test]
fn csv_config_errors_are_located() {
    for (source, error) in [
        (
            "type = \"stdin\"\ncsv = { delimiter = \";\" }",
            "`csv` is for format = \"csv\"",
        ),
        (
            "type = \"stdin\"\nformat = \"csv\"\ncsv = { delimiter = \"\\\"\" }",
            "csv delimiter '\"'",
        ),
        (
            "type = \"stdin\"\nformat = \"csv\"\ncsv = { kind = 1 }",
            "unknown field `kind`",
        ),
        (
            "type = \"kafka\"\nbrokers = \"127.0.0.1:9\"\ntopics = [\"t\"]\ngroup_id = \"g\"\nformat = \"csv\"",
            "has no first line to read a CSV header row from",
        ),
    ] {
        let scratch = Scratch::new(&config(source, false));
        let output = scratch.command("validate").output().unwrap();
        assert_exit(&output, 2);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.starts_with("error: sluice.toml:"), "{stderr}");
        assert!(stderr.contains(error), "want {error:?} in:\n{stderr}");
    }
}

#[test]
fn syslog_lines_become_objects() {
    let scratch = Scratch::new(&config(
        r#"type = "file"
path = "syslog.log"
format = "syslog"
key = "/hostname"
timestamp = "/timestamp"
missing_timestamp = "dead-letter""#,
        false,
    ));
    scratch.write(
        "syslog.log",
        concat!(
            // RFC 5424 §6.5 examples 2 and 3.
            "<165>1 2003-08-24T05:14:15.000003-07:00 192.0.2.1 myproc 8710 - - %% It's time to make the do-nuts.\n",
            "<165>1 2003-10-11T22:14:15.003Z mymachine.example.com evntslog - ID47 [exampleSDID@32473 iut=\"3\" eventSource=\"Application\" eventID=\"1011\"] An application event log entry...\n",
            // RFC 3164 §5.4 example 1.
            "<34>Oct 11 22:14:15 mymachine su: 'su root' failed for lonvick on /dev/pts/8\n",
            "not syslog at all\n",
            // No time: dead-lettered (missing_timestamp = \"dead-letter\").
            "<13>1 - host app - - - no time\n",
        ),
    );
    let output = scratch.run();
    assert_exit(&output, 0);
    let year = chrono::Datelike::year(&chrono::Utc::now());
    assert_eq!(
        scratch.read_json("out.ndjson"),
        [
            json!({
                "facility": "local4", "severity": "notice", "version": 1,
                "timestamp": "2003-08-24T05:14:15.000003-07:00",
                "hostname": "192.0.2.1", "appname": "myproc", "procid": "8710",
                "msgid": null, "structured_data": {},
                "message": "%% It's time to make the do-nuts."
            }),
            json!({
                "facility": "local4", "severity": "notice", "version": 1,
                "timestamp": "2003-10-11T22:14:15.003Z",
                "hostname": "mymachine.example.com", "appname": "evntslog", "procid": null,
                "msgid": "ID47",
                "structured_data": {"exampleSDID@32473": {"iut": "3", "eventSource": "Application", "eventID": "1011"}},
                "message": "An application event log entry..."
            }),
            json!({
                "facility": "auth", "severity": "crit", "version": null,
                "timestamp": format!("{year}-10-11T22:14:15Z"),
                "hostname": "mymachine", "appname": "su", "procid": null,
                "msgid": null, "structured_data": {},
                "message": "'su root' failed for lonvick on /dev/pts/8"
            }),
        ]
    );
    let dlq = scratch.read_json("dlq.ndjson");
    assert_eq!(dlq.len(), 2, "{dlq:?}");
    assert_eq!(dlq[0]["original"], "not syslog at all");
    assert_eq!(
        dlq[0]["reason"],
        "not a syslog message (neither RFC 5424 nor RFC 3164)"
    );
    assert_eq!(dlq[1]["original"], "<13>1 - host app - - - no time");
    assert!(
        dlq[1]["reason"]
            .as_str()
            .unwrap()
            .starts_with("no event time"),
        "{}",
        dlq[1]
    );
}

/// A Kafka topic has no first line: CSV records are named by `csv.header`;
/// the key pointer replaces the Kafka key; syslog records decode as lines
/// do; what does not fit is dead-lettered with its topic and offset.
#[test]
fn kafka_records_decode_as_csv_and_syslog() {
    let test = "kafka_records_decode_as_csv_and_syslog";
    let Some(broker) = crate::kafka::Broker::start(test) else {
        return;
    };
    broker.create_topic("csv", 1);
    broker.create_topic("syslog", 1);
    let record = |value: &str| (0, "kafka-key".to_string(), value.to_string());
    broker.produce(
        "csv",
        &[
            record("EWR,2013-01-01T06:00:00Z,39.02"),
            record("JFK,2013-01-01T07:00:00Z"),
            record("\"LGA, NY\",2013-01-01T08:00:00Z,NA"),
        ],
    );
    broker.produce(
        "syslog",
        &[
            record(
                "<34>1 2003-10-11T22:14:15.003Z mymachine.example.com su - ID47 - 'su root' failed",
            ),
            record("not syslog"),
        ],
    );
    let scratch = Scratch::new(&format!(
        r#"
[daemon]
plugins_dir = "@PLUGINS@"
state_dir = "state"
admin = "off"

[sources.csv]
type = "kafka"
brokers = "{addr}"
topics = ["csv"]
group_id = "formats-csv"
format = "csv"
key = "/origin"
timestamp = "/time_hour"
csv = {{ header = ["origin", "time_hour", "temp"], nulls = ["NA"], columns = {{ temp = "float" }} }}

[sources.syslog]
type = "kafka"
brokers = "{addr}"
topics = ["syslog"]
group_id = "formats-syslog"
format = "syslog"

[sinks.csv_out]
type = "file"
path = "csv.ndjson"

[sinks.syslog_out]
type = "file"
path = "syslog.ndjson"

[sinks.csv_dlq]
type = "file"
path = "csv-dlq.ndjson"

[sinks.syslog_dlq]
type = "file"
path = "syslog-dlq.ndjson"

[pipelines.csv]
source = "csv"
batch = {{ max_records = 10, interval = "10ms" }}
processors = [{{ plugin = "identity.wasm" }}]
sinks = ["csv_out"]
dead_letter = "csv_dlq"

[pipelines.syslog]
source = "syslog"
batch = {{ max_records = 10, interval = "10ms" }}
processors = [{{ plugin = "identity.wasm" }}]
sinks = ["syslog_out"]
dead_letter = "syslog_dlq"
"#,
        addr = broker.addr
    ));
    let daemon = Running::start(scratch.command("run"));
    scratch.wait_for_lines("csv.ndjson", 2);
    scratch.wait_for_lines("csv-dlq.ndjson", 1);
    scratch.wait_for_lines("syslog.ndjson", 1);
    scratch.wait_for_lines("syslog-dlq.ndjson", 1);
    daemon.signal("TERM");
    assert_exit(&daemon.finish(), 0);
    assert_eq!(
        scratch.read_json("csv.ndjson"),
        [
            json!({"origin": "EWR", "time_hour": "2013-01-01T06:00:00Z", "temp": 39.02}),
            json!({"origin": "LGA, NY", "time_hour": "2013-01-01T08:00:00Z", "temp": null}),
        ]
    );
    let dlq = scratch.read_json("csv-dlq.ndjson");
    assert_eq!(dlq.len(), 1, "{dlq:?}");
    assert_eq!(dlq[0]["original"], "JFK,2013-01-01T07:00:00Z");
    assert_eq!(
        dlq[0]["reason"],
        "CSV row has 2 fields, the header 3 (origin,time_hour,temp) (topic csv, partition 0, offset 1)"
    );
    let syslog = scratch.read_json("syslog.ndjson");
    assert_eq!(syslog.len(), 1, "{syslog:?}");
    assert_eq!(syslog[0]["facility"], "auth");
    assert_eq!(syslog[0]["hostname"], "mymachine.example.com");
    assert_eq!(syslog[0]["message"], "'su root' failed");
    let dlq = scratch.read_json("syslog-dlq.ndjson");
    assert_eq!(dlq.len(), 1, "{dlq:?}");
    assert_eq!(dlq[0]["original"], "not syslog");
}
