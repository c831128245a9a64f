//! OTLP export: an OTLP/HTTP receiver in the test (a TCP listener that decodes
//! the protobuf bodies with `opentelemetry-proto`) gets the daemon's traces — a
//! span per batch, a child span per stage — and metrics, whose figures match
//! the input.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{Metric, metric, number_data_point};
use prost::Message as _;

use crate::support::*;

/// The requests received: (path, content type, body).
type Received = Arc<Mutex<Vec<(String, String, Vec<u8>)>>>;

/// Listens on 127.0.0.1 (any port) and answers every POST with 200; returns the
/// base URL and what it receives.
fn receiver() -> (String, Received) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let received: Received = Arc::default();
    let store = received.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request_line = String::new();
            if reader.read_line(&mut request_line).is_err() {
                continue;
            }
            let path = request_line
                .split_whitespace()
                .nth(1)
                .unwrap_or("")
                .to_string();
            let (mut length, mut content_type) = (0, String::new());
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                let (name, value) = line.split_once(':').unwrap_or(("", ""));
                match name.to_ascii_lowercase().as_str() {
                    "content-length" => length = value.trim().parse().unwrap_or(0),
                    "content-type" => content_type = value.trim().to_string(),
                    _ => {}
                }
            }
            let mut body = vec![0; length];
            if reader.read_exact(&mut body).is_err() {
                continue;
            }
            store.lock().unwrap().push((path, content_type, body));
            let _ = stream.write_all(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/x-protobuf\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            );
        }
    });
    (url, received)
}

fn string(value: &Option<AnyValue>) -> Option<&str> {
    match value.as_ref()?.value.as_ref()? {
        any_value::Value::StringValue(s) => Some(s),
        _ => None,
    }
}

fn int(value: &Option<AnyValue>) -> Option<i64> {
    match value.as_ref()?.value.as_ref()? {
        any_value::Value::IntValue(i) => Some(*i),
        _ => None,
    }
}

fn attribute<'a>(attributes: &'a [KeyValue], key: &str) -> &'a Option<AnyValue> {
    &attributes
        .iter()
        .find(|kv| kv.key == key)
        .unwrap_or_else(|| panic!("no attribute {key} in {attributes:?}"))
        .value
}

#[test]
fn otlp_receiver_gets_batch_traces_and_metrics() {
    const LINES: usize = 45;
    const BATCH: usize = 10;
    let (url, received) = receiver();
    let scratch = Scratch::new(
        &Config::new()
            .table("daemon.telemetry")
            .set_str("otlp_endpoint", &url)
            .set_str("export_interval", "1h")
            .file_source("in", "in.ndjson")
            .file_sink("out", "out.ndjson")
            .pipeline("p", "in", &["out"])
            .batch(&format!(r#"{{ max_records = {BATCH}, interval = "1h" }}"#))
            .plugin("identity.wasm")
            .plugin("identity.wasm")
            .build(),
    );
    let lines: String = (0..LINES).map(|n| format!("{{\"n\":{n}}}\n")).collect();
    scratch.write("in.ndjson", &lines);
    // The source ends, the daemon drains and exits; the exporters flush at
    // shutdown (the metric interval is an hour: only that last export counts).
    let output = scratch.run();
    assert_exit(&output, 0);
    assert_eq!(count(&output, "p", "in"), LINES as u64);
    let batches = count(&output, "p", "batches");
    assert_eq!(batches, LINES.div_ceil(BATCH) as u64);

    let received = received.lock().unwrap();
    for (path, content_type, _) in received.iter() {
        assert!(
            path == "/v1/traces" || path == "/v1/metrics",
            "unexpected path {path}"
        );
        assert_eq!(content_type, "application/x-protobuf");
    }

    // Traces: a `batch` span per batch, whose `records` add up to the lines fed,
    // and one child span per stage per batch.
    let spans: Vec<_> = received
        .iter()
        .filter(|(path, ..)| path == "/v1/traces")
        .flat_map(|(_, _, body)| {
            ExportTraceServiceRequest::decode(body.as_slice())
                .unwrap()
                .resource_spans
        })
        .inspect(|rs| {
            let resource = rs.resource.as_ref().unwrap();
            assert_eq!(
                string(attribute(&resource.attributes, "service.name")),
                Some("sluice")
            );
        })
        .flat_map(|rs| rs.scope_spans)
        .flat_map(|ss| ss.spans)
        .collect();
    let batch_spans: Vec<_> = spans.iter().filter(|s| s.name == "batch").collect();
    assert_eq!(batch_spans.len() as u64, batches);
    let records: i64 = batch_spans
        .iter()
        .map(|s| int(attribute(&s.attributes, "records")).unwrap())
        .sum();
    assert_eq!(records, LINES as i64);
    let batch_ids: HashMap<&[u8], &[u8]> = batch_spans
        .iter()
        .map(|s| (s.span_id.as_slice(), s.trace_id.as_slice()))
        .collect();
    let version = sluice::wasm::plugin::content_version(
        &std::fs::read(plugins_dir().join("identity.wasm")).unwrap(),
    );
    for stage in ["0:identity", "1:identity"] {
        let children: Vec<_> = spans
            .iter()
            .filter(|s| s.name == format!("stage {stage}"))
            .collect();
        assert_eq!(children.len() as u64, batches, "spans of stage {stage}");
        let mut parents = HashSet::new();
        for child in children {
            let trace = batch_ids
                .get(child.parent_span_id.as_slice())
                .unwrap_or_else(|| panic!("stage span {child:?} has no batch parent"));
            assert_eq!(*trace, child.trace_id.as_slice());
            assert_eq!(
                string(attribute(&child.attributes, "version")),
                Some(version.as_str())
            );
            parents.insert(child.parent_span_id.clone());
        }
        assert_eq!(parents.len() as u64, batches, "one {stage} span per batch");
    }

    // Metrics: the last export's cumulative values.
    let mut metrics: HashMap<String, Metric> = HashMap::new();
    for (_, _, body) in received.iter().filter(|(path, ..)| path == "/v1/metrics") {
        let request = ExportMetricsServiceRequest::decode(body.as_slice()).unwrap();
        for m in request
            .resource_metrics
            .into_iter()
            .flat_map(|rm| rm.scope_metrics)
            .flat_map(|sm| sm.metrics)
        {
            metrics.insert(m.name.clone(), m);
        }
    }
    let sum_of = |name: &str| -> i64 {
        let Some(metric::Data::Sum(sum)) = &metrics
            .get(name)
            .unwrap_or_else(|| panic!("no {name} in {:?}", metrics.keys()))
            .data
        else {
            panic!("{name} is not a sum")
        };
        assert!(sum.is_monotonic, "{name} is a counter");
        let point = sum
            .data_points
            .iter()
            .find(|p| string(attribute(&p.attributes, "pipeline")) == Some("p"))
            .unwrap();
        match point.value {
            Some(number_data_point::Value::AsInt(v)) => v,
            other => panic!("{name}: {other:?}"),
        }
    };
    assert_eq!(sum_of("sluice.records.in"), LINES as i64);
    assert_eq!(sum_of("sluice.records.out"), LINES as i64);
    assert_eq!(sum_of("sluice.batches"), batches as i64);
    assert_eq!(metrics["sluice.records.in"].unit, "{record}");

    let Some(metric::Data::Histogram(sizes)) = &metrics["sluice.batch.size"].data else {
        panic!("sluice.batch.size is not a histogram")
    };
    assert_eq!(sizes.data_points[0].count, batches);
    assert_eq!(sizes.data_points[0].sum, Some(LINES as f64));
    let duration = &metrics["sluice.batch.duration"];
    assert_eq!(duration.unit, "s");
    let Some(metric::Data::Histogram(calls)) = &metrics["sluice.plugin.call.duration"].data else {
        panic!("sluice.plugin.call.duration is not a histogram")
    };
    for stage in ["0:identity", "1:identity"] {
        let point = calls
            .data_points
            .iter()
            .find(|p| string(attribute(&p.attributes, "stage")) == Some(stage))
            .unwrap();
        assert_eq!(point.count, batches, "calls of stage {stage}");
    }
    assert!(metrics.contains_key("sluice.plugin.traps"));
    assert!(metrics.contains_key("sluice.plugin.memory.high_water"));
}

#[test]
fn a_stage_span_with_failed_records_has_an_error_status() {
    use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
    let (url, received) = receiver();
    let scratch = Scratch::new(
        &Config::new()
            .table("daemon.telemetry")
            .set_str("otlp_endpoint", &url)
            .file_source("in", "in.ndjson")
            .file_sink("out", "out.ndjson")
            .pipeline("p", "in", &["out"])
            .batch(r#"{ max_records = 1, interval = "1h" }"#)
            .processor(
                r#"{ plugin = "misbehave.wasm", config = { mode = "panic", trigger = "poison" } }"#,
            )
            .on_error("skip")
            .build(),
    );
    // One record per batch; the third one makes the plugin trap.
    scratch.write(
        "in.ndjson",
        "{\"n\":0}\n{\"n\":1}\n{\"n\":2,\"poison\":1}\n{\"n\":3}\n",
    );
    let output = scratch.run();
    assert_exit(&output, 0);
    assert_eq!(count(&output, "p", "skipped"), 1);

    let received = received.lock().unwrap();
    let stages: Vec<_> = received
        .iter()
        .filter(|(path, ..)| path == "/v1/traces")
        .flat_map(|(_, _, body)| {
            ExportTraceServiceRequest::decode(body.as_slice())
                .unwrap()
                .resource_spans
        })
        .flat_map(|rs| rs.scope_spans)
        .flat_map(|ss| ss.spans)
        .filter(|s| s.name == "stage 0:misbehave")
        .collect();
    assert_eq!(stages.len(), 4);
    let failed: Vec<_> = stages
        .iter()
        .filter(|s| {
            s.status
                .as_ref()
                .is_some_and(|st| st.code == StatusCode::Error as i32)
        })
        .collect();
    assert_eq!(failed.len(), 1, "{stages:?}");
    let message = &failed[0].status.as_ref().unwrap().message;
    assert!(
        message.starts_with("1 record(s) failed (Skip): ") && message.contains("panic on purpose"),
        "{message}"
    );
}

#[test]
fn a_collector_that_is_down_costs_a_warning_not_the_pipeline() {
    // A port nothing listens on: bound, then released.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let scratch = Scratch::new(
        &Config::new()
            .table("daemon.telemetry")
            .set_str("otlp_endpoint", &format!("http://127.0.0.1:{port}"))
            .file_source("in", "in.ndjson")
            .file_sink("out", "out.ndjson")
            .pipeline("p", "in", &["out"])
            .plugin("identity.wasm")
            .build(),
    );
    scratch.write("in.ndjson", "{\"n\":1}\n{\"n\":2}\n");
    // The exports at shutdown fail; the records went through all the same.
    let output = scratch.run();
    assert_exit(&output, 0);
    assert_eq!(count(&output, "p", "out"), 2);
    assert_eq!(scratch.read_lines("out.ndjson").len(), 2);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let warnings: Vec<_> = stderr
        .lines()
        .filter(|l| l.contains(&format!("OTLP export to http://127.0.0.1:{port}/v1/")))
        .collect();
    // One warning however many exports failed (spans and metrics both failed).
    assert_eq!(warnings.len(), 1, "{stderr}");
    assert!(
        warnings[0].contains(" WARN ") && warnings[0].contains("failed"),
        "{stderr}"
    );
}
