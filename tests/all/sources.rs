//! Sources: stdin, and a followed file that grows, is replaced and is truncated.

use std::io::Write;
use std::process::Stdio;
use std::time::Duration;

use crate::support::*;

#[test]
fn stdin_to_stdout() {
    let scratch = Scratch::new(
        &Config::new()
            .source("in", "stdin")
            .key("/carrier")
            .timestamp("/event_time_ms")
            .sink("out", "stdout")
            .pipeline("p", "in", &["out"])
            .partitions(3)
            .plugin("identity.wasm")
            .build(),
    );
    let lines = flights_lines(5000);
    let mut child = scratch
        .command("run")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let input = lines.join("\r\n") + "\r\n"; // CRLF is a line end too
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()).unwrap());
    let output = child.wait_with_output().unwrap();
    writer.join().unwrap();
    assert_exit(&output, 0);
    assert_eq!(count(&output, "p", "in"), 5000);
    let mut out: Vec<&str> = std::str::from_utf8(&output.stdout)
        .unwrap()
        .lines()
        .collect();
    let mut want: Vec<&str> = lines.iter().map(String::as_str).collect();
    out.sort();
    want.sort();
    assert_eq!(out, want);
}

fn numbered(from: usize, to: usize) -> String {
    (from..to).map(|n| format!("{{\"n\":{n}}}\n")).collect()
}

#[test]
fn followed_file_survives_growth_rotation_and_truncation() {
    let scratch = Scratch::new(
        &Config::new()
            .file_source("in", "in.ndjson")
            .follow()
            .file_sink("out", "out.ndjson")
            .pipeline("p", "in", &["out"])
            .batch(r#"{ max_records = 1000, interval = "20ms" }"#)
            .plugin("identity.wasm")
            .build(),
    );
    scratch.write("in.ndjson", &numbered(0, 100));
    let daemon = Running::start(scratch.command("run"));
    scratch.wait_for_lines("out.ndjson", 100);

    // Appended lines, one written in two parts.
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(scratch.path("in.ndjson"))
        .unwrap();
    f.write_all(numbered(100, 150).as_bytes()).unwrap();
    f.write_all(b"{\"n\":").unwrap();
    f.flush().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    f.write_all(b"150}\n").unwrap();
    drop(f);
    scratch.wait_for_lines("out.ndjson", 151);

    // Rotated: renamed away, a new file in its place.
    std::fs::rename(scratch.path("in.ndjson"), scratch.path("in.ndjson.1")).unwrap();
    scratch.write("in.ndjson", &numbered(151, 200));
    scratch.wait_for_lines("out.ndjson", 200);

    // Truncated in place (copytruncate), then shorter content written.
    std::fs::write(scratch.path("in.ndjson"), numbered(200, 210)).unwrap();
    scratch.wait_for_lines("out.ndjson", 210);

    daemon.signal("TERM");
    let output = daemon.finish();
    assert_exit(&output, 0);
    let mut got: Vec<u64> = scratch
        .read_lines("out.ndjson")
        .iter()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["n"]
                .as_u64()
                .unwrap()
        })
        .collect();
    got.sort();
    assert_eq!(got, (0..210).collect::<Vec<u64>>());
}

#[test]
fn sigterm_on_stdin_loses_nothing_taken_from_it() {
    let scratch = Scratch::new(
        &Config::new()
            .source("in", "stdin")
            .key("/k")
            .file_sink("out", "out.ndjson")
            .pipeline("p", "in", &["out"])
            .partitions(2)
            .batch("{ max_records = 100 }")
            .set("queue_records", 256)
            .plugin("identity.wasm")
            .build(),
    );
    let total = 300_000;
    let input: String = (0..total)
        .map(|n| format!("{{\"k\":\"key{}\",\"n\":{n}}}\n", n % 97))
        .collect();
    scratch.write("in.ndjson", &input);
    // The daemon and this test share one open file description: after the daemon
    // stops, reading on here continues where it left off.
    let mut ours = std::fs::File::open(scratch.path("in.ndjson")).unwrap();
    let theirs = ours.try_clone().unwrap();
    let mut command = scratch.command("run");
    command.stdin(Stdio::from(theirs));
    let daemon = Running::start(command);
    scratch.wait_for_lines("out.ndjson", 1000);
    daemon.signal("TERM");
    let output = daemon.finish();
    assert_exit(&output, 0);
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut ours, &mut rest).unwrap();
    let out = scratch.read_lines("out.ndjson");
    assert!(
        out.len() < total,
        "the signal came before the end of the input"
    );
    assert_eq!(count(&output, "p", "in") as usize, out.len());
    // What the daemon wrote and what it left on stdin make up the input exactly.
    let mut seen: Vec<u64> = out
        .iter()
        .map(String::as_str)
        .chain(rest.lines())
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["n"]
                .as_u64()
                .unwrap()
        })
        .collect();
    seen.sort();
    assert_eq!(seen, (0..total as u64).collect::<Vec<_>>());
}

#[test]
fn logs_can_be_json() {
    let scratch = Scratch::new(
        &Config::new()
            .file_source("in", "in.ndjson")
            .sink("out", "blackhole")
            .pipeline("p", "in", &["out"])
            .build(),
    );
    scratch.write("in.ndjson", "{\"n\":1}\n");
    let output = scratch
        .command("run")
        .arg("--log-format")
        .arg("json")
        .output()
        .unwrap();
    assert_exit(&output, 0);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let events: Vec<serde_json::Value> = stderr
        .lines()
        .filter(|l| !l.starts_with("sluice: "))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let started = events
        .iter()
        .find(|e| e["fields"]["message"] == "pipeline started")
        .unwrap_or_else(|| panic!("{stderr}"));
    assert_eq!(started["fields"]["pipeline"], "p");
    assert_eq!(started["level"], "INFO");
    assert_eq!(count(&output, "p", "in"), 1);
}
