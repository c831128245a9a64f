//! When a pipeline stops on an error: every record read is in exactly one
//! counter, the source stops reading, and the other pipelines stop too.

use std::time::{Duration, Instant};

use crate::support::*;

/// `in = out + rejected + skipped + failed` for plugins that neither filter nor
/// multiply.
fn assert_balanced(output: &std::process::Output, pipeline: &str) {
    let field = |f| count(output, pipeline, f);
    assert_eq!(
        field("in"),
        field("out") + field("rejected") + field("skipped") + field("failed"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn stop_on_one_partition_stops_the_source_and_counts_everything() {
    let scratch = Scratch::new(
        &Config::new()
            .file_source("in", flights_gz().to_str().unwrap())
            .key("/carrier")
            .file_sink("out", "out.ndjson")
            .file_sink("dlq", "dlq.ndjson")
            .pipeline("p", "in", &["out"])
            .partitions(4)
            .batch("{ max_records = 100 }")
            .set("queue_records", 512)
            .processor(r#"{ plugin = "misbehave.wasm", config = { mode = "reject", trigger = "\"UA\"" } }"#)
            .processor(r#"{ plugin = "misbehave.wasm", config = { mode = "fail", trigger = "\"HA\"" }, on_error = "stop" }"#)
            .dead_letter("dlq")
            .build(),
    );
    let output = scratch.run();
    assert_exit(&output, 1);
    assert_balanced(&output, "p");
    // The first HA flight is line 163: the source stops long before the end.
    assert!(
        count(&output, "p", "in") < 200_000,
        "{}",
        count(&output, "p", "in")
    );
    assert_eq!(
        scratch.read_lines("out.ndjson").len() as u64,
        count(&output, "p", "out")
    );
    assert_eq!(
        scratch.read_lines("dlq.ndjson").len() as u64,
        count(&output, "p", "rejected")
    );
}

#[test]
fn a_signal_stops_a_file_source_at_once() {
    // Each batch of 100 loops to its 10 ms deadline: reading all 40,000 lines
    // would take 4 s or more.
    let scratch = Scratch::new(
        &Config::new()
            .file_source("in", "in.ndjson")
            .sink("out", "blackhole")
            .pipeline("p", "in", &["out"])
            .batch("{ max_records = 100 }")
            .set("queue_records", 256)
            .processor(
                r#"{ plugin = "misbehave.wasm", timeout = "10ms", config = { mode = "loop" } }"#,
            )
            .on_error("skip")
            .build(),
    );
    let pad = "x".repeat(980);
    let input: String = (0..40_000)
        .map(|i| format!("{{\"i\":{i:05},\"pad\":\"{pad}\"}}\n"))
        .collect();
    scratch.write("in.ndjson", &input);
    let mut daemon = Running::start(scratch.command("run"));
    daemon.wait_for("pipeline started");
    std::thread::sleep(Duration::from_millis(500));
    let start = Instant::now();
    daemon.signal("TERM");
    let output = daemon.finish();
    assert_exit(&output, 0);
    assert!(start.elapsed() < Duration::from_secs(30));
    assert_balanced(&output, "p");
    assert!(
        count(&output, "p", "in") < 40_000,
        "stopped reading: in = {}",
        count(&output, "p", "in")
    );
}

#[test]
fn a_stopped_pipeline_stops_the_daemon() {
    let scratch = Scratch::new(
        &Config::new()
            .file_source("bad", "bad.ndjson")
            .file_source("tail", "tail.ndjson")
            .follow()
            .sink("a", "blackhole")
            .file_sink("b", "b.ndjson")
            .pipeline("failing", "bad", &["a"])
            .processor(r#"{ plugin = "misbehave.wasm", config = { mode = "fail" } }"#)
            .on_error("stop")
            .pipeline("following", "tail", &["b"])
            .build(),
    );
    scratch.write("bad.ndjson", "{\"n\":1}\n");
    scratch.write("tail.ndjson", "{\"n\":2}\n");
    let start = Instant::now();
    let output = scratch.run();
    assert_exit(&output, 1);
    assert!(start.elapsed() < Duration::from_secs(30));
    assert_balanced(&output, "failing");
    // The following pipeline may or may not have read its line before it was
    // stopped; whatever it read, it wrote.
    assert_balanced(&output, "following");
    assert_eq!(
        scratch.read_lines("b.ndjson").len() as u64,
        count(&output, "following", "out")
    );
}

#[test]
fn a_fifo_source_loses_nothing() {
    let scratch = Scratch::new(
        &Config::new()
            .file_source("in", "in.fifo")
            .file_sink("out", "out.ndjson")
            .pipeline("p", "in", &["out"])
            .build(),
    );
    let fifo = scratch.path("in.fifo");
    assert!(
        std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    let writer = std::thread::spawn(move || {
        let lines: String = (1..=8).map(|n| format!("{{\"n\":{n}}}\n")).collect();
        std::fs::write(fifo, lines).unwrap();
    });
    let output = scratch.run();
    writer.join().unwrap();
    assert_exit(&output, 0);
    let want: Vec<String> = (1..=8).map(|n| format!("{{\"n\":{n}}}")).collect();
    assert_eq!(scratch.read_lines("out.ndjson"), want);
}

/// A FIFO as a file sink: the daemon writes to it only (it waits for the
/// reader), so every record reaches the reader; a reader that goes away fails
/// the sink loudly instead of the records piling up unread in the pipe.
#[test]
fn a_fifo_sink_delivers_everything_or_fails() {
    let scratch = Scratch::new(
        &Config::new()
            .file_source("in", "in.ndjson")
            .file_sink("out", "out.fifo")
            .pipeline("p", "in", &["out"])
            .build(),
    );
    let lines: Vec<String> = (1..=2_000).map(|n| format!("{{\"n\":{n}}}")).collect();
    scratch.write("in.ndjson", &(lines.join("\n") + "\n"));
    let fifo = scratch.path("out.fifo");
    assert!(
        std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    let reader = {
        let fifo = fifo.clone();
        std::thread::spawn(move || std::fs::read_to_string(fifo).unwrap())
    };
    let output = scratch.run();
    assert_exit(&output, 0);
    let got: Vec<String> = reader.join().unwrap().lines().map(str::to_string).collect();
    assert_eq!(got, lines);

    // A reader that reads one line and goes away: the sink fails (EPIPE), the
    // pipeline stops with an error; nothing claims to be delivered.
    let reader = std::thread::spawn(move || {
        use std::io::BufRead;
        let mut first = String::new();
        std::io::BufReader::new(std::fs::File::open(fifo).unwrap())
            .read_line(&mut first)
            .unwrap();
        first
    });
    let big: Vec<String> = (1..=200_000).map(|n| format!("{{\"n\":{n}}}")).collect();
    scratch.write("in.ndjson", &(big.join("\n") + "\n"));
    let output = scratch.run();
    assert_eq!(reader.join().unwrap(), "{\"n\":1}\n");
    assert_ne!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("sink failed"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}
