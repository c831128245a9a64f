//! SIGTERM mid-run: stop reading, drain, flush, exit 0 — nothing half-written,
//! nothing read is lost.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::*;

#[test]
fn sigterm_drains_and_exits_zero() {
    // A followed file never ends by itself: only the signal stops the daemon.
    let scratch = Scratch::new(
        &Config::new()
            .file_source("in", "in.ndjson")
            .follow()
            .key("/carrier")
            .file_sink("out", "out.ndjson")
            .pipeline("p", "in", &["out"])
            .partitions(2)
            .batch(r#"{ max_records = 500, interval = "5s" }"#)
            .plugin("identity.wasm")
            .build(),
    );
    let lines = flights_lines(20_000);
    scratch.write("in.ndjson", &(lines.join("\n") + "\n"));
    let daemon = Running::start(scratch.command("run"));
    // Wait until every full batch of 500 went through (each partition then holds
    // fewer than 500 records in its open batch), then signal while those batches
    // are still open: their 5 s interval has not elapsed.
    scratch.wait_for_lines("out.ndjson", 19_000);
    // Append a partial line: it must not be processed (no newline yet).
    {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(scratch.path("in.ndjson"))
            .unwrap();
        f.write_all(br#"{"carrier":"XX","half":"#).unwrap();
    }
    std::thread::sleep(Duration::from_millis(300));
    daemon.signal("TERM");
    let output = daemon.finish();
    assert_exit(&output, 0);

    let read = count(&output, "p", "in");
    assert_eq!(
        read, 20_000,
        "every complete line was read before the signal"
    );
    assert_eq!(
        count(&output, "p", "out"),
        read,
        "everything read was written"
    );
    let raw = std::fs::read_to_string(scratch.path("out.ndjson")).unwrap();
    assert!(raw.ends_with('\n'), "the output ends with a whole line");
    let mut out: Vec<&str> = raw.lines().collect();
    for line in &out {
        let _: Value = serde_json::from_str(line).unwrap();
    }
    let mut want: Vec<&str> = lines.iter().map(String::as_str).collect();
    out.sort();
    want.sort();
    assert_eq!(out, want);
}

#[test]
fn sigterm_mid_file_stops_reading_and_loses_nothing_read() {
    let scratch = Scratch::new(
        &Config::new()
            .file_source("in", flights_gz().to_str().unwrap())
            .key("/carrier")
            .file_sink("out", "out.ndjson")
            .pipeline("p", "in", &["out"])
            .partitions(2)
            .batch("{ max_records = 256 }")
            .set("queue_records", 64)
            .plugin("uppercase.wasm")
            .build(),
    );
    let daemon = Running::start(scratch.command("run"));
    scratch.wait_for_lines("out.ndjson", 2000);
    daemon.signal("TERM");
    let output = daemon.finish();
    assert_exit(&output, 0);
    let read = count(&output, "p", "in");
    assert!(
        read < 336_776,
        "the signal stopped the reading early (read {read})"
    );
    assert_eq!(count(&output, "p", "out"), read);
    let raw = std::fs::read_to_string(scratch.path("out.ndjson")).unwrap();
    assert!(raw.ends_with('\n'));
    // Every line whole, and exactly the first `read` flights, upper-cased.
    let mut out: Vec<String> = raw.lines().map(str::to_string).collect();
    let mut want: Vec<String> = flights_lines(read as usize)
        .iter()
        .map(|l| l.to_ascii_uppercase())
        .collect();
    out.sort();
    want.sort();
    assert_eq!(out, want);
}

#[test]
fn a_second_signal_exits_at_once() {
    // Every batch loops until its 1 s deadline: draining would take minutes.
    let scratch = Scratch::new(
        &Config::new()
            .file_source("in", "in.ndjson")
            .sink("out", "blackhole")
            .pipeline("p", "in", &["out"])
            .batch("{ max_records = 1 }")
            .processor(
                r#"{ plugin = "misbehave.wasm", timeout = "1s", config = { mode = "loop" } }"#,
            )
            .on_error("skip")
            .build(),
    );
    scratch.write("in.ndjson", &"{}\n".repeat(1000));
    let mut daemon = Running::start(scratch.command("run"));
    daemon.wait_for("pipeline started");
    // Let the source read (it takes microseconds) so that the first batch is in
    // its 1 s loop: a SIGTERM before anything was read drains at once and exits 0.
    std::thread::sleep(Duration::from_millis(300));
    let start = Instant::now();
    daemon.signal("TERM");
    daemon.wait_for("SIGTERM received: draining");
    daemon.signal("INT");
    daemon.wait_for("SIGINT received while draining: exiting without draining");
    let output = daemon.finish();
    assert_exit(&output, 130);
    assert!(start.elapsed() < Duration::from_secs(10));
}

#[test]
fn appending_after_a_torn_line_does_not_glue_onto_it() {
    let scratch = Scratch::new(
        &Config::new()
            .file_source("in", "in.ndjson")
            .file_sink("out", "out.ndjson")
            .pipeline("p", "in", &["out"])
            .plugin("identity.wasm")
            .build(),
    );
    // What a process killed in the middle of a write leaves behind.
    scratch.write("out.ndjson", "{\"n\":0}\n{\"n\":1,\"tor");
    scratch.write("in.ndjson", "{\"n\":2}\n{\"n\":3}\n");
    let output = scratch.run();
    assert_exit(&output, 0);
    assert_eq!(
        scratch.read_lines("out.ndjson"),
        vec!["{\"n\":0}", "{\"n\":1,\"tor", "{\"n\":2}", "{\"n\":3}"]
    );
}
