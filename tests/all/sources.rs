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

/// `decode_threads = n` on a JSON file source, keyed by `/tailnum`.
fn parallel_config(path: &str, threads: usize, partitions: usize) -> String {
    Config::new()
        .file_source("f", path)
        .key("/tailnum")
        .set("decode_threads", threads)
        .file_sink("out", "out.ndjson")
        .pipeline("p", "f", &["out"])
        .partitions(partitions)
        .batch(r#"{ max_records = 100, interval = "10ms" }"#)
        .plugin("identity.wasm")
        .build()
}

/// Parallel decode: an input that fails to read (a gzip file with garbage
/// after its member) still has every line read before the failure processed,
/// with lines in the decoders' hands as with none (`decode_threads = 0`).
#[test]
fn lines_decoded_in_parallel_are_processed_when_the_input_fails() {
    use std::io::Write as _;
    let lines = flights_lines(5_000);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all((lines.join("\n") + "\n").as_bytes()).unwrap();
    let mut bytes = gz.finish().unwrap();
    bytes.extend_from_slice(&[0u8; 512]);
    let mut want = lines.clone();
    want.sort_unstable();
    for threads in [0, 2, 4] {
        let scratch = Scratch::new(&parallel_config("in.ndjson.gz", threads, 3));
        std::fs::write(scratch.path("in.ndjson.gz"), &bytes).unwrap();
        let output = scratch.run();
        assert_exit(&output, 1);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("read failed"), "{stderr}");
        let mut got = scratch.read_lines("out.ndjson");
        got.sort_unstable();
        assert_eq!(got.len(), want.len(), "decode_threads = {threads}");
        assert!(got == want, "decode_threads = {threads}");
    }
}

/// A `file` source on a named pipe hands each line on while the writer
/// still writes (the decoders' partial block is forwarded before a read
/// that waits), not when it closes.
#[test]
fn a_named_pipe_delivers_its_lines_while_the_writer_still_writes() {
    let scratch = Scratch::new(&parallel_config("pipe", 2, 1));
    let pipe = scratch.path("pipe");
    mkfifo(&pipe);
    let daemon = Running::start(scratch.command("run"));
    // Opening for writing waits for the daemon to open it for reading.
    let mut writer = std::fs::OpenOptions::new().write(true).open(&pipe).unwrap();
    let lines = flights_lines(3);
    for (i, line) in lines.iter().enumerate() {
        writeln!(writer, "{line}").unwrap();
        writer.flush().unwrap();
        let start = std::time::Instant::now();
        while scratch.read_lines("out.ndjson").len() < i + 1 {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "line {} not out after 10 s while the writer is open",
                i + 1
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    drop(writer);
    let output = daemon.finish();
    assert_exit(&output, 0);
    assert_eq!(scratch.read_lines("out.ndjson"), lines);
}

/// A followed named pipe whose writer closed: the daemon keeps reading it
/// (a second writer's lines come through) and stops at SIGTERM, instead of
/// taking the pipe's length (0) for a truncation and waiting in open() for a
/// writer, where no signal reached it.
#[test]
fn a_followed_named_pipe_takes_a_second_writer_and_stops_on_sigterm() {
    let scratch = Scratch::new(
        &Config::new()
            .file_source("f", "pipe")
            .set("follow", true)
            .file_sink("out", "out.ndjson")
            .pipeline("p", "f", &["out"])
            .batch(r#"{ max_records = 100, interval = "10ms" }"#)
            .build(),
    );
    let pipe = scratch.path("pipe");
    mkfifo(&pipe);
    let mut daemon = Running::start(scratch.command("run"));
    let lines = flights_lines(4);
    let wait_for_out = |n: usize| {
        let start = std::time::Instant::now();
        while scratch.read_lines("out.ndjson").len() < n {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "{n} lines not out after 10 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    for (k, part) in lines.chunks(2).enumerate() {
        // Each writer opens, writes, and closes the pipe.
        let mut writer = std::fs::OpenOptions::new().write(true).open(&pipe).unwrap();
        for line in part {
            writeln!(writer, "{line}").unwrap();
        }
        drop(writer);
        wait_for_out(2 * (k + 1));
        // The daemon idles with no writer: give it a few polls.
        std::thread::sleep(Duration::from_millis(300));
    }
    daemon.signal("TERM");
    daemon.exits_within(
        Duration::from_secs(20),
        "SIGTERM with the pipe's writer gone",
    );
    let output = daemon.finish();
    assert_exit(&output, 0);
    assert_eq!(scratch.read_lines("out.ndjson"), lines);
    assert!(
        !String::from_utf8_lossy(&output.stderr).contains("replaced or truncated"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// `decode_threads` where it cannot apply (a socket source decodes per
/// connection) or on a format other than JSON is a located config error.
#[test]
fn decode_threads_is_refused_where_it_cannot_apply() {
    for (table, want) in [
        (
            "type = \"tcp\"\naddress = \"127.0.0.1:0\"\ndecode_threads = 2\n",
            "`decode_threads` is for file, generator and stdin sources",
        ),
        (
            "type = \"file\"\npath = \"in.csv\"\nformat = \"csv\"\ndecode_threads = 2\n",
            "`decode_threads` is for format = \"json\"",
        ),
        (
            "type = \"stdin\"\ndecode_threads = 65\n",
            "`decode_threads` is at most 64",
        ),
    ] {
        let text = format!(
            "[sources.s]\n{table}\n[sinks.out]\ntype = \"blackhole\"\n\n[pipelines.p]\nsource = \"s\"\nsinks = [\"out\"]\n"
        );
        let scratch = Scratch::new(&text);
        scratch.write("in.csv", "a,b\n");
        let output = scratch.command("validate").output().unwrap();
        assert_exit(&output, 2);
        let stderr = String::from_utf8_lossy(&output.stderr);
        let at = format!("sluice.toml:{}:", line_of(&text, "decode_threads"));
        assert!(
            stderr.contains(&at) && stderr.contains(want),
            "{want}: {stderr}"
        );
    }
}
