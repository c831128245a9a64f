//! Checkpoints: a daemon killed with SIGKILL at random points and restarted
//! ends with exactly the windows of an uninterrupted run, computed here from
//! the NDJSON; a stop saves the open windows instead of emitting them, and the
//! restart finishes them; a checkpoint that no longer fits is refused.

use std::io::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use crate::support::*;
use crate::windows::{AGGREGATES, HOUR, assert_rows, delayed, expected_fixed, time};

fn config(path: &str, partitions: usize, follow: bool) -> Config {
    Config::new()
        .file_source("f", path)
        .set("follow", follow)
        .key("/carrier")
        .timestamp("/event_time")
        .file_sink("out", "out.ndjson")
        .truncate()
        .file_sink("dlq", "dlq.ndjson")
        .truncate()
        .pipeline("w", "f", &["out"])
        .partitions(partitions)
        .batch("{ max_records = 512 }")
        .processor(r#"{ plugin = "flights_delay.wasm", config = { min_delay = 15 } }"#)
        .window(r#"{ kind = "tumbling", size = "1h", watermark = "10m" }"#)
        .aggregate(AGGREGATES)
        .dead_letter("dlq")
        .checkpoint("50ms")
}

fn rows(scratch: &Scratch) -> Vec<Value> {
    scratch.read_json("out.ndjson")
}

/// A small generator seeded from the clock (the seed is printed, to replay a
/// failure).
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new() -> Self {
        let seed = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64;
        eprintln!("checkpoint crash test seed: {seed}");
        Rng(seed | 1)
    }
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n
    }
}

/// Runs `scratch`'s job and kills it with SIGKILL once it has started, after
/// a random pause (ms, in `pause`), up to `times` times; stops early when a
/// run ends before its kill. Returns the kills and how many of the killed
/// runs' logs `resumed` accepts (e.g. "resumed from a checkpoint with state").
///
/// The first run's pause starts only once it has saved a checkpoint past its
/// start (the daemon's debug line for each checkpoint, the first one being
/// the start's), so every later run has something to resume from however
/// slow the machine: under load a debug build's checkpoint can take longer
/// than the whole pause (a keyed one took 270–380 ms on a quiet machine,
/// the barrier waiting for the batches ahead of it), and a test that needs
/// restarts with state then saw none. The later runs are killed at random
/// points, before their own first checkpoint too.
pub(crate) fn kill_9_repeatedly(
    scratch: &Scratch,
    times: usize,
    pause: std::ops::Range<u64>,
    resumed: impl Fn(&str) -> bool,
) -> (usize, usize) {
    const CHECKPOINT_SAVED: &str = "sluice::checkpoint: checkpoint ";
    let mut rng = Rng::new();
    let (mut kills, mut resumed_runs) = (0, 0);
    while kills < times {
        let mut command = scratch.command("run");
        command.env("RUST_LOG", "info,sluice::checkpoint=debug");
        let mut daemon = Running::start(command);
        daemon.wait_for("pipeline started");
        if kills == 0 {
            let mut saved = daemon.count(CHECKPOINT_SAVED);
            let running = daemon.wait_until_or_exit(|line| {
                saved += usize::from(line.contains(CHECKPOINT_SAVED));
                saved >= 2
            });
            if !running {
                break; // finished before its first periodic checkpoint
            }
        }
        std::thread::sleep(Duration::from_millis(
            pause.start + rng.below(pause.end - pause.start),
        ));
        if daemon.child.try_wait().unwrap().is_some() {
            break; // finished before the kill
        }
        daemon.child.kill().unwrap();
        let output = daemon.finish();
        assert_eq!(output.status.code(), None, "killed by a signal");
        if resumed(&String::from_utf8_lossy(&output.stderr)) {
            resumed_runs += 1;
        }
        kills += 1;
    }
    (kills, resumed_runs)
}

#[test]
fn kill_9_at_random_points_loses_and_doubles_no_window() {
    let scratch = Scratch::new(&config(flights_gz().to_str().unwrap(), 2, false).build());
    let want = expected_fixed(&delayed(usize::MAX), HOUR, HOUR);
    let (kills, resumed_mid_input) = kill_9_repeatedly(&scratch, 6, 20..270, |log| {
        log.contains("resuming from checkpoint") && !log.contains("offset=0 ")
    });
    assert!(
        kills >= 6,
        "the job finished after {kills} kill(s): too fast to test"
    );
    assert!(
        resumed_mid_input >= 3,
        "only {resumed_mid_input} restarts resumed from a checkpoint"
    );
    let output = scratch.run();
    assert_exit(&output, 0);
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("resuming from checkpoint"),
        "the last run resumed"
    );
    // Every window once, with the values of an uninterrupted run.
    assert_rows(&rows(&scratch), &want);
    assert!(scratch.read_lines("dlq.ndjson").is_empty());
}

/// The largest event time among the first `n` flights (the watermark follows
/// the input, filtered-out flights included), ms.
fn max_event_time(n: usize) -> i64 {
    flights_lines(n)
        .iter()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            chrono::DateTime::parse_from_rfc3339(v["event_time"].as_str().unwrap())
                .unwrap()
                .timestamp_millis()
        })
        .max()
        .unwrap()
}

/// The windows of the first `n` flights that the watermark has closed once
/// they are all read (one partition: watermark = largest event time − 10 min).
pub(crate) fn closed_windows(n: usize) -> Vec<Value> {
    let watermark = max_event_time(n) - 10 * 60_000;
    let limit = time(watermark);
    expected_fixed(&delayed(n), HOUR, HOUR)
        .into_iter()
        .filter(|r| r["window_end"].as_str().unwrap() <= limit.as_str())
        .collect()
}

#[test]
fn a_stop_saves_open_windows_and_the_restart_finishes_them() {
    let scratch = Scratch::new(&config("in.ndjson", 1, true).build());
    let lines = flights_lines(40_000);
    scratch.write("in.ndjson", &(lines[..20_000].join("\n") + "\n"));

    // Follow the first half; stop once the closed windows are out.
    let first = closed_windows(20_000);
    let daemon = Running::start(scratch.command("run"));
    scratch.wait_for_lines("out.ndjson", first.len());
    std::thread::sleep(Duration::from_millis(200));
    daemon.signal("TERM");
    let output = daemon.finish();
    assert_exit(&output, 0);
    // Only closed windows: the open ones went into the checkpoint, not out.
    assert_rows(&rows(&scratch), &first);

    let listed = scratch.command("checkpoints").output().unwrap();
    assert_exit(&listed, 0);
    let listed = String::from_utf8_lossy(&listed.stdout).to_string();
    assert!(listed.starts_with("w: checkpoint "), "{listed}");
    assert!(!listed.contains(" 0 open window(s)"), "{listed}");

    // The second half arrives while the daemon is down; the restart resumes
    // the open windows and the position, and writes the rest.
    scratch.append_lines("in.ndjson", &lines[20_000..]);
    let second = closed_windows(40_000);
    assert!(second.len() > first.len());
    let daemon = Running::start(scratch.command("run"));
    scratch.wait_for_lines("out.ndjson", second.len());
    std::thread::sleep(Duration::from_millis(200));
    daemon.signal("TERM");
    let output = daemon.finish();
    assert_exit(&output, 0);
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(log.contains("resuming from checkpoint"), "{log}");
    assert_eq!(count(&output, "w", "in"), 20_000, "only the new lines read");
    assert_rows(&rows(&scratch), &second);

    // Another partition count: the checkpoint does not fit, and says how to
    // start over.
    scratch.write_config(&config("in.ndjson", 2, true).build());
    let validated = scratch.command("validate").output().unwrap();
    assert_exit(&validated, 2);
    assert!(String::from_utf8_lossy(&validated.stderr).contains("partitions: 1 → now 2"));
    let output = scratch.run();
    assert_ne!(output.status.code(), Some(0));
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(
        err.contains("cannot be resumed: changed since it was taken: partitions.")
            && err.contains("partitions: 1 → now 2")
            && err.contains("--reset w`"),
        "{err}"
    );
    let reset = scratch
        .command("checkpoints")
        .args(["--reset", "w"])
        .output()
        .unwrap();
    assert_exit(&reset, 0);
    assert!(String::from_utf8_lossy(&reset.stdout).contains("checkpoint removed"));
    let typo = scratch
        .command("checkpoints")
        .args(["--reset", "nope"])
        .output()
        .unwrap();
    assert_exit(&typo, 1);
    assert!(String::from_utf8_lossy(&typo.stderr).contains("`nope` has no checkpoint"));
    let listed = scratch.command("checkpoints").output().unwrap();
    assert!(String::from_utf8_lossy(&listed.stdout).starts_with("no checkpoints"));
}

#[test]
fn checkpoints_need_a_source_that_can_be_read_again() {
    let config = Config::new()
        .source("in", "stdin")
        .sink("out", "stdout")
        .pipeline("p", "in", &["out"])
        .checkpoint("1s")
        .build();
    let scratch = Scratch::new(&config);
    let output = scratch.command("validate").output().unwrap();
    assert_exit(&output, 2);
    let err = String::from_utf8_lossy(&output.stderr);
    let at = format!("sluice.toml:{}:", line_of(&config, "checkpoint"));
    assert!(err.contains(&at) && err.contains("stdin cannot"), "{err}");
}

/// An appending sink, a crash before any periodic checkpoint: the start of the
/// run is itself a checkpoint (the sinks' lengths before anything was
/// written), so the restart cuts back what the crashed run wrote.
#[test]
fn a_crash_before_the_first_periodic_checkpoint_writes_nothing_twice() {
    let config = config("in.ndjson", 2, false)
        .table("sinks.out")
        .set("truncate", false)
        .table("sinks.dlq")
        .set("truncate", false)
        .table("pipelines.w")
        .checkpoint("1h");
    let scratch = Scratch::new(&config.build());
    scratch.write("in.ndjson", &(flights_lines(40_000).join("\n") + "\n"));
    // What an earlier run left in the appended file stays.
    scratch.write("out.ndjson", "{\"earlier\":true}\n");
    let mut daemon = Running::start(scratch.command("run"));
    daemon.wait_for("pipeline started");
    scratch.wait_for_lines("out.ndjson", 50);
    daemon.child.kill().unwrap();
    let output = daemon.finish();
    assert_eq!(output.status.code(), None, "killed before the end");
    let output = scratch.run();
    assert_exit(&output, 0);
    let mut got = rows(&scratch);
    assert_eq!(got.remove(0), serde_json::json!({"earlier": true}));
    assert_rows(&got, &expected_fixed(&delayed(40_000), HOUR, HOUR));
}

/// A checkpoint store cut to nothing is refused, not taken for an empty one
/// (which would start every pipeline over and write its output twice).
#[test]
fn an_emptied_checkpoint_store_is_refused() {
    let scratch = Scratch::new(&config("in.ndjson", 1, false).build());
    scratch.write("in.ndjson", &(flights_lines(1_000).join("\n") + "\n"));
    assert_exit(&scratch.run(), 0);
    std::fs::write(scratch.path("state/checkpoints.redb"), b"").unwrap();
    let output = scratch.run();
    assert_ne!(output.status.code(), Some(0));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("checkpoints.redb is empty"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The admin API shows a checkpointed, windowed pipeline's watermark and
/// checkpoints: `/pipelines` the watermark (largest event time − 10 min, one
/// partition) and the count, `/metrics` the count, the checkpoint duration
/// histogram and the watermark gauge.
#[test]
fn the_admin_api_shows_the_watermark_and_the_checkpoints() {
    use crate::admin::series;
    let scratch = Scratch::new(&config("in.ndjson", 1, true).admin().build());
    scratch.write("in.ndjson", &(flights_lines(5_000).join("\n") + "\n"));
    let mut daemon = Running::start(scratch.command("run"));
    let addr = daemon.admin_addr();
    scratch.wait_for_lines("out.ndjson", closed_windows(5_000).len());
    let watermark = time(max_event_time(5_000) - 10 * 60_000);
    // Wait for a periodic checkpoint after the last line.
    let start = std::time::Instant::now();
    let pipeline = loop {
        let (status, body) = http(&addr, "GET", "/pipelines");
        assert_eq!(status, 200);
        let list: Vec<Value> = serde_json::from_str(&body).unwrap();
        let p = list.into_iter().find(|p| p["pipeline"] == "w").unwrap();
        if p["watermark"] == watermark.as_str() && p["checkpoints"].as_u64().unwrap() >= 2 {
            break p;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "{p}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(pipeline["records_in"], 5_000);
    let (_, metrics) = http(&addr, "GET", "/metrics");
    let checkpoints = series(&metrics, "sluice_checkpoints_total", &["pipeline=\"w\""]);
    assert!(checkpoints >= 2.0, "{checkpoints}");
    assert!(
        series(
            &metrics,
            "sluice_checkpoint_duration_seconds_count",
            &["pipeline=\"w\""]
        ) >= 2.0
    );
    assert_eq!(
        series(
            &metrics,
            "sluice_pipeline_watermark_seconds",
            &["pipeline=\"w\""]
        ),
        (max_event_time(5_000) - 10 * 60_000) as f64 / 1000.0
    );
    daemon.signal("TERM");
    assert_exit(&daemon.finish(), 0);
}

/// A checkpointed pipeline removed by a config reload saves its position on
/// the way out; re-added by a later reload, it resumes there: every line once.
#[test]
fn a_removed_and_re_added_pipeline_resumes_from_its_checkpoint() {
    let config = |with_w: bool| {
        let keep = Config::new()
            .file_source("other", "other.ndjson")
            .follow()
            .file_sink("other_out", "other_out.ndjson")
            .pipeline("keep", "other", &["other_out"]);
        if !with_w {
            return keep.build();
        }
        keep.file_source("f", "in.ndjson")
            .follow()
            .file_sink("out", "out.ndjson")
            .pipeline("w", "f", &["out"])
            .batch(r#"{ max_records = 10, interval = "10ms" }"#)
            .checkpoint("1h")
            .build()
    };
    let scratch = Scratch::new(&config(true));
    scratch.write("other.ndjson", "");
    let lines = |range: std::ops::Range<u32>| -> Vec<String> {
        range.map(|n| format!("{{\"n\":{n}}}")).collect()
    };
    scratch.write("in.ndjson", &(lines(0..100).join("\n") + "\n"));
    let mut daemon = Running::start(scratch.command("run"));
    scratch.wait_for_lines("out.ndjson", 100);

    // Removed: it drains and saves its position.
    scratch.write_config(&config(false));
    daemon.signal("HUP");
    daemon.wait_for_count("config reloaded", 1);
    daemon.wait_for("pipeline=w in=100");
    scratch.append_lines("in.ndjson", &lines(100..150));

    // Re-added: it reads on from line 100.
    scratch.write_config(&config(true));
    daemon.signal("HUP");
    daemon.wait_for_count("config reloaded", 2);
    assert!(
        daemon.log.iter().any(|l| l.contains("1 started")),
        "{}",
        daemon.log.join("\n")
    );
    scratch.wait_for_lines("out.ndjson", 150);
    std::thread::sleep(Duration::from_millis(300));
    daemon.signal("TERM");
    let output = daemon.finish();
    assert_exit(&output, 0);
    let got: Vec<u64> = scratch
        .read_json("out.ndjson")
        .iter()
        .map(|v| v["n"].as_u64().unwrap())
        .collect();
    assert_eq!(got, (0..150).collect::<Vec<u64>>());
}

/// A sink another pipeline also wrote to when the checkpoint was taken is not
/// cut back on restore, even if that other pipeline is gone from the config
/// now: what it wrote after the checkpoint stays (at-least-once, nothing lost).
#[test]
fn a_sink_shared_at_checkpoint_time_is_never_cut_back() {
    let both = Config::new()
        .file_source("a", "a.ndjson")
        .follow()
        .file_source("b", "b.ndjson")
        .follow()
        .file_sink("out", "out.ndjson")
        .pipeline("pa", "a", &["out"])
        .checkpoint("1h")
        .pipeline("pb", "b", &["out"]);
    let scratch = Scratch::new(&both.build());
    let lines =
        |tag: &str, n: u32| -> String { (0..n).map(|i| format!("{{\"{tag}\":{i}}}\n")).collect() };
    scratch.write("a.ndjson", &lines("a", 10));
    scratch.write("b.ndjson", "");
    let mut daemon = Running::start(scratch.command("run"));
    daemon.wait_for("pipeline started");
    scratch.wait_for_lines("out.ndjson", 10);
    // pb writes after pa's last checkpoint (the one at its start).
    scratch.write("b.ndjson", &lines("b", 20));
    scratch.wait_for_lines("out.ndjson", 30);
    daemon.child.kill().unwrap();
    daemon.finish();

    // pb is gone from the config: `out` is pa's alone now, but was not then.
    let a_only = both.remove("pipelines.pb").remove("sources.b");
    scratch.write_config(&a_only.build());
    let mut daemon = Running::start(scratch.command("run"));
    daemon.wait_for("pipeline started");
    scratch.wait_for_lines("out.ndjson", 40);
    daemon.signal("TERM");
    assert_exit(&daemon.finish(), 0);
    let out = scratch.read_json("out.ndjson");
    let b: Vec<u64> = out.iter().filter_map(|v| v["b"].as_u64()).collect();
    assert_eq!(b, (0..20).collect::<Vec<u64>>(), "pb's output kept");
    // pa's records: at least once (read again from its start checkpoint).
    let a: std::collections::BTreeSet<u64> = out.iter().filter_map(|v| v["a"].as_u64()).collect();
    assert_eq!(a, (0..10).collect());
}

/// A resume that is refused (the input file was replaced) writes nothing: in
/// particular not the restored open windows, which would be partial values
/// written as final.
#[test]
fn a_refused_resume_writes_no_window() {
    let scratch = Scratch::new(
        &config("in.ndjson", 1, false)
            .table("pipelines.w")
            .batch("{ max_records = 1 }")
            .build(),
    );
    scratch.write("in.ndjson", &(flights_lines(40_000).join("\n") + "\n"));
    let daemon = Running::start(scratch.command("run"));
    scratch.wait_for_lines("out.ndjson", 20);
    daemon.signal("TERM");
    assert_exit(&daemon.finish(), 0);
    let listed = scratch.command("checkpoints").output().unwrap();
    let listed = String::from_utf8_lossy(&listed.stdout).to_string();
    assert!(
        !listed.contains("(input finished)"),
        "stopped mid-input: {listed}"
    );
    let before = std::fs::read(scratch.path("out.ndjson")).unwrap();

    // The same lines in a new file (another inode).
    std::fs::copy(scratch.path("in.ndjson"), scratch.path("in.new")).unwrap();
    std::fs::rename(scratch.path("in.new"), scratch.path("in.ndjson")).unwrap();
    let output = scratch.run();
    assert_ne!(output.status.code(), Some(0));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("was replaced since the checkpoint"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(std::fs::read(scratch.path("out.ndjson")).unwrap(), before);
}

/// After a checkpoint that ended the run (end of input, or a stop), the
/// pipeline wrote nothing more: a rerun leaves its file sinks as they are,
/// lines someone appended included (only a crash makes it cut back).
#[test]
fn a_finished_run_leaves_its_sinks_alone() {
    let scratch = Scratch::new(&config("in.ndjson", 1, false).build());
    scratch.write("in.ndjson", &(flights_lines(2_000).join("\n") + "\n"));
    assert_exit(&scratch.run(), 0);
    let mut out = std::fs::read_to_string(scratch.path("out.ndjson")).unwrap();
    out.push_str("{\"appended\":true}\n");
    scratch.write("out.ndjson", &out);
    let output = scratch.run();
    assert_exit(&output, 0);
    assert_eq!(count(&output, "w", "in"), 0);
    assert_eq!(
        std::fs::read_to_string(scratch.path("out.ndjson")).unwrap(),
        out
    );
    // The rerun that read nothing says why, and how to start over; which works.
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(
            "read nothing: an earlier run read this input to its end (its checkpoint); \
             `sluice checkpoints --config FILE --reset w` starts it over"
        ),
        "{stderr}"
    );
    let reset = scratch
        .command("checkpoints")
        .args(["--reset", "w"])
        .output()
        .unwrap();
    assert_exit(&reset, 0);
    let output = scratch.run();
    assert_exit(&output, 0);
    assert_eq!(count(&output, "w", "in"), 2_000);
    assert!(
        !String::from_utf8_lossy(&output.stderr).contains("read nothing"),
        "a run that read its input gets no hint"
    );
}

/// A followed file rewritten in place (same inode, same length) while the
/// daemon was down is read from its start: the bytes before the saved
/// position no longer match the checkpoint's fingerprint.
#[test]
fn a_followed_file_rewritten_in_place_while_down_is_read_from_its_start() {
    let scratch = Scratch::new(
        &Config::new()
            .file_source("f", "f.ndjson")
            .follow()
            .file_sink("out", "out.ndjson")
            .pipeline("p", "f", &["out"])
            .checkpoint("1h")
            .build(),
    );
    let lines = |range: std::ops::Range<u32>| -> String {
        range.map(|n| format!("{{\"n\":{n}}}\n")).collect()
    };
    scratch.write("f.ndjson", &lines(10..20));
    let daemon = Running::start(scratch.command("run"));
    scratch.wait_for_lines("out.ndjson", 10);
    daemon.signal("TERM");
    assert_exit(&daemon.finish(), 0);
    // Rewritten through the same inode, to the same length.
    std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(scratch.path("f.ndjson"))
        .unwrap()
        .write_all(lines(50..70).as_bytes())
        .unwrap();
    let mut daemon = Running::start(scratch.command("run"));
    daemon.wait_for("truncated or rewritten since the checkpoint");
    scratch.wait_for_lines("out.ndjson", 30);
    daemon.signal("TERM");
    assert_exit(&daemon.finish(), 0);
    let got: Vec<u64> = scratch
        .read_json("out.ndjson")
        .iter()
        .map(|v| v["n"].as_u64().unwrap())
        .collect();
    assert_eq!(got, (10..20).chain(50..70).collect::<Vec<u64>>());
}
