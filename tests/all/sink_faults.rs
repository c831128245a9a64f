//! Sinks that cannot write: a full disk (a real tmpfs filled up), a FIFO with
//! no reader yet, a FIFO whose reader leaves. The daemon waits and retries
//! instead of dropping or exiting, the admin API answers throughout, and
//! `records_out` counts only what a sink wrote.

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::*;

/// A small tmpfs mounted for one test, unmounted when dropped.
struct Tmpfs {
    dir: std::path::PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of `bytes` at `dir` (root only: `None` otherwise).
    fn mount(dir: std::path::PathBuf, bytes: usize) -> Option<Self> {
        std::fs::create_dir_all(&dir).unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "tmpfs"])
            .arg(&dir)
            .status()
            .ok()?;
        status.success().then_some(Tmpfs { dir })
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}

/// A pipeline `p` from `in.ndjson` to the file sink `out` on a tmpfs of
/// `size` bytes at `disk/`, of which a `filler` file leaves `free` bytes;
/// `config` is the start of the config (`None`, after a skip, when no tmpfs
/// can be mounted).
fn full_disk(test: &str, config: Config, size: usize, free: usize) -> Option<(Scratch, Tmpfs)> {
    let scratch = Scratch::new(
        &config
            .file_source("in", "in.ndjson")
            .file_sink("out", "disk/out.ndjson")
            .pipeline("p", "in", &["out"])
            .batch(r#"{ max_records = 100, interval = "10ms" }"#)
            .build(),
    );
    let Some(disk) = Tmpfs::mount(scratch.path("disk"), size) else {
        skip(test, "cannot mount a tmpfs (needs root)");
        return None;
    };
    std::fs::write(disk.dir.join("filler"), vec![0u8; size - free]).unwrap();
    Some((scratch, disk))
}

fn json(addr: &str, path: &str) -> Value {
    let (status, body) = http(addr, "GET", path);
    assert_eq!(status, 200, "{path}: {body}");
    serde_json::from_str(&body).unwrap()
}

/// Polls `f` every 50 ms for up to 60 s until it gives `Some`.
fn eventually<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Lines of `n` records of about 60 bytes each, numbered from 1.
fn records(n: usize) -> Vec<String> {
    (1..=n)
        .map(|i| format!("{{\"n\":{i},\"pad\":\"{}\"}}", "x".repeat(40)))
        .collect()
}

/// A file sink on a full filesystem waits and retries: the daemon does not
/// exit, the pipeline waits (backpressure), `records_out` is what the file
/// holds, the admin API shows the sink blocked; once space is freed it
/// resumes, and the file holds every record once, in order.
#[test]
fn a_full_disk_makes_the_file_sink_wait_and_nothing_is_lost() {
    const TEST: &str = "sink_faults::a_full_disk_makes_the_file_sink_wait_and_nothing_is_lost";
    // Leave about 256 KiB free: the output (~1.2 MB) cannot fit.
    let Some((scratch, disk)) = full_disk(TEST, Config::new().admin(), 2 << 20, 256 << 10) else {
        return;
    };
    let filler = disk.dir.join("filler");
    let lines = records(20_000);
    scratch.write("in.ndjson", &(lines.join("\n") + "\n"));

    let mut daemon = Running::start(scratch.command("run"));
    let addr = daemon.admin_addr();
    daemon.wait_for("cannot write");
    let sink = eventually("the sink to show it is blocked", || {
        let sinks = json(&addr, "/sinks");
        let s = sinks
            .as_array()?
            .iter()
            .find(|s| s["sink"] == "out")?
            .clone();
        (s["blocked"] == true && s["write_retries"].as_u64()? > 0).then_some(s)
    });
    assert_eq!(http(&addr, "GET", "/health"), (200, "ok\n".into()));
    let (_, metrics) = http(&addr, "GET", "/metrics");
    assert!(
        metrics.contains("sluice_sink_blocked{sink=\"out\"} 1"),
        "{metrics}"
    );
    // Whole lines only, and `out` is exactly what the file holds.
    let written = scratch.read_lines("disk/out.ndjson");
    assert_eq!(written, lines[..written.len()]);
    assert!(written.len() < lines.len(), "{}", written.len());
    let pipelines = json(&addr, "/pipelines");
    assert_eq!(
        pipelines[0]["records_out"].as_u64().unwrap(),
        written.len() as u64,
        "{pipelines}"
    );
    assert_eq!(
        sink["records_written"].as_u64().unwrap(),
        written.len() as u64
    );
    assert!(
        daemon.child.try_wait().unwrap().is_none(),
        "the daemon exited on a full disk"
    );

    // Space comes back: everything is written, once.
    std::fs::remove_file(&filler).unwrap();
    daemon.wait_for("the sink writes again");
    let output = daemon.finish();
    assert_exit(&output, 0);
    assert_eq!(scratch.read_lines("disk/out.ndjson"), lines);
    assert_eq!(count(&output, "p", "out"), 20_000);
    assert_eq!(count(&output, "p", "unwritten"), 0);
    assert_eq!(count(&output, "p", "failed"), 0);
}

/// A FIFO sink waiting for its reader holds up neither the daemon's start nor
/// its admin API: `/health` answers and `/sinks` shows the sink blocked; once
/// a reader comes it gets every record.
#[test]
fn the_admin_api_answers_while_a_fifo_sink_waits_for_its_reader() {
    let scratch = Scratch::new(
        &Config::new()
            .admin()
            .file_source("in", "in.ndjson")
            .file_sink("out", "out.fifo")
            .pipeline("p", "in", &["out"])
            .build(),
    );
    let lines = records(2_000);
    scratch.write("in.ndjson", &(lines.join("\n") + "\n"));
    let fifo = scratch.path("out.fifo");
    assert!(
        Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );

    let mut daemon = Running::start(scratch.command("run"));
    let addr = daemon.admin_addr();
    daemon.wait_for("a FIFO with no reader");
    assert_eq!(http(&addr, "GET", "/health"), (200, "ok\n".into()));
    let sinks = json(&addr, "/sinks");
    assert_eq!(sinks[0]["sink"], "out", "{sinks}");
    assert_eq!(sinks[0]["blocked"], true, "{sinks}");
    assert_eq!(json(&addr, "/pipelines")[0]["records_out"], 0);

    let got = std::fs::read_to_string(&fifo).unwrap();
    let output = daemon.finish();
    assert_exit(&output, 0);
    assert_eq!(got.lines().collect::<Vec<_>>(), lines);
    assert_eq!(count(&output, "p", "out"), 2_000);
}

/// A FIFO whose reader leaves early fails the sink; `out` counts what the
/// sink wrote into the pipe (the reader's share, plus at most what the pipe
/// and one batch hold), not what was handed to the sink; the rest is
/// `unwritten` or `failed`, and the figures add up to what was read.
#[test]
fn counters_say_what_a_failed_sink_did_not_write() {
    let scratch = Scratch::new(
        &Config::new()
            .file_source("in", "in.ndjson")
            .file_sink("out", "out.fifo")
            .pipeline("p", "in", &["out"])
            .batch(r#"{ max_records = 50, interval = "10ms" }"#)
            .build(),
    );
    // Lines of about 1 KiB: the pipe (64 KiB) holds at most 64 of them.
    let lines: Vec<String> = (1..=20_000)
        .map(|i| format!("{{\"n\":{i},\"pad\":\"{}\"}}", "y".repeat(1000)))
        .collect();
    scratch.write("in.ndjson", &(lines.join("\n") + "\n"));
    let fifo = scratch.path("out.fifo");
    assert!(
        Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    // The reader takes 10 lines, then goes away.
    let reader = std::thread::spawn(move || {
        use std::io::BufRead;
        let mut reader = std::io::BufReader::new(std::fs::File::open(fifo).unwrap());
        let mut got = 0;
        for _ in 0..10 {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            got += 1;
        }
        got
    });
    let output = scratch.run();
    assert_eq!(reader.join().unwrap(), 10);
    assert_exit(&output, 1);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("sink failed"), "{stderr}");
    let (records_in, out) = (count(&output, "p", "in"), count(&output, "p", "out"));
    let unwritten = count(&output, "p", "unwritten");
    let failed = count(&output, "p", "failed");
    // What the reader took (10 lines plus its 8 KiB buffer), what the pipe held
    // (64 lines) and a batch written in part: far below the 16 batches (800
    // records) the sink's queue holds, which were counted as out before.
    assert!(out <= 10 + 8 + 64 + 50, "out={out}\n{stderr}");
    assert!(unwritten > 0, "unwritten={unwritten}\n{stderr}");
    assert_eq!(out + unwritten + failed, records_in, "{stderr}");
}

/// A signal while the pipelines have ended but a sink still cannot write (its
/// disk full): the sink gives up after its 30 s, the daemon exits 1, and the
/// counters add up. Before, the signal went unheard and only freeing space
/// ended the daemon.
#[test]
fn a_signal_reaches_a_sink_still_writing_out_after_the_input_ended() {
    const TEST: &str =
        "sink_faults::a_signal_reaches_a_sink_still_writing_out_after_the_input_ended";
    let Some((scratch, _disk)) = full_disk(TEST, Config::new(), 1 << 20, 64 << 10) else {
        return;
    };
    // Fits in the sink's queue: the pipeline ends while the sink waits.
    let lines = records(1_500);
    scratch.write("in.ndjson", &(lines.join("\n") + "\n"));
    let mut daemon = Running::start(scratch.command("run"));
    daemon.wait_for("cannot write");
    daemon.wait_for("pipeline ended");
    let stopped = Instant::now();
    daemon.signal("TERM");
    let output = daemon.finish();
    assert!(stopped.elapsed() < Duration::from_secs(60));
    assert_exit(&output, 1);
    let written = scratch.read_lines("disk/out.ndjson");
    assert_eq!(written, lines[..written.len()]);
    let (out, unwritten) = (count(&output, "p", "out"), count(&output, "p", "unwritten"));
    assert_eq!(out, written.len() as u64);
    assert_eq!(out + unwritten + count(&output, "p", "failed"), 1_500);
    assert!(unwritten > 0);
}
