//! The admin HTTP API: health, readiness, Prometheus metrics with the right
//! figures after a known input, pipelines and plugins as JSON, POST /reload.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;

use serde_json::Value;

use crate::support::*;

/// One HTTP/1.1 request; (status, body).
fn http(addr: &str, method: &str, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response[9..12].parse().unwrap();
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

#[test]
fn admin_api_answers_with_the_right_figures() {
    let scratch = Scratch::new(
        r#"
[daemon]
plugins_dir = "@PLUGINS@"
admin = "127.0.0.1:0"

[sources.in]
type = "file"
path = "in.ndjson"
follow = true

[sinks.out]
type = "file"
path = "out.ndjson"

[pipelines.p]
source = "in"
batch = { max_records = 10, interval = "10ms" }
processors = [{ plugin = "identity.wasm" }]
sinks = ["out"]
"#,
    );
    let lines: String = (0..25).map(|n| format!("{{\"n\":{n}}}\n")).collect();
    scratch.write("in.ndjson", &lines);
    let mut daemon = Running::start(scratch.command("run"));
    daemon.wait_for("admin API listening on ");
    let addr = daemon
        .log
        .iter()
        .find_map(|l| l.split("admin API listening on ").nth(1))
        .unwrap()
        .trim()
        .to_string();
    daemon.wait_for("pipeline started");
    scratch.wait_for_lines("out.ndjson", 25);

    assert_eq!(http(&addr, "GET", "/health"), (200, "ok\n".into()));
    assert_eq!(http(&addr, "GET", "/ready"), (200, "ready\n".into()));
    let (status, metrics) = http(&addr, "GET", "/metrics");
    assert_eq!(status, 200);
    for line in [
        "# TYPE sluice_records_in_total counter",
        "sluice_records_in_total{pipeline=\"p\"} 25",
        "sluice_records_out_total{pipeline=\"p\"} 25",
        "sluice_records_rejected_total{pipeline=\"p\"} 0",
        "sluice_pipeline_running{pipeline=\"p\"} 1",
        "sluice_plugin_reloads_total{plugin=\"identity\"} 0",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "{line:?} not in:\n{metrics}"
        );
    }
    let version = sluice::plugin::content_version(
        &std::fs::read(plugins_dir().join("identity.wasm")).unwrap(),
    );
    assert!(metrics.contains(&format!(
        "sluice_plugin_info{{plugin=\"identity\",version=\"{version}\"}} 1"
    )));

    let (_, body) = http(&addr, "GET", "/pipelines");
    let pipelines: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(pipelines[0]["pipeline"], "p");
    assert_eq!(pipelines[0]["records_in"], 25);
    assert_eq!(pipelines[0]["running"], true);
    let (_, body) = http(&addr, "GET", "/plugins");
    let plugins: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(plugins[0]["version"], version);

    assert_eq!(http(&addr, "POST", "/reload").0, 202);
    daemon.wait_for("config reloaded");
    assert_eq!(http(&addr, "GET", "/ready").0, 200);

    daemon.signal("TERM");
    let output = daemon.finish();
    assert_exit(&output, 0);
}

#[test]
fn admin_beyond_loopback_needs_explicit_config() {
    let config = |extra: &str| {
        format!(
            "[daemon]\nadmin = \"0.0.0.0:9464\"\n{extra}\n[sources.s]\ntype = \"stdin\"\n[sinks.o]\ntype = \"stdout\"\n[pipelines.p]\nsource = \"s\"\nsinks = [\"o\"]\n"
        )
    };
    let scratch = Scratch::new(&config(""));
    let output = scratch.command("validate").output().unwrap();
    assert_exit(&output, 2);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("sluice.toml:2:9: field `admin`: 0.0.0.0:9464 is not a loopback address"),
        "{stderr}"
    );
    let scratch = Scratch::new(&config("admin_allow_remote = true"));
    assert_exit(&scratch.command("validate").output().unwrap(), 0);
}
