//! The `generator` source: `count` records from a template end the run, and
//! the sink holds exactly the records the template makes (computed here from
//! the documented formulas, not by the daemon's code).

use crate::support::*;

/// SplitMix64's output function, written out from the paper's constants.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e3779b97f4a7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58476d1ce4e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d049bb133111eb);
    z ^ (z >> 31)
}

/// The documented value of the `index`-th `{{random lo hi}}` of record `n`.
fn random(seed: u64, n: u64, index: u64, lo: i64, hi: i64) -> i64 {
    let x = mix(mix(mix(seed) ^ n) ^ index);
    lo + (x % (hi - lo + 1) as u64) as i64
}

fn sorted(mut lines: Vec<String>) -> Vec<String> {
    lines.sort();
    lines
}

#[test]
fn count_records_from_the_template_reach_the_sink() {
    const N: u64 = 5000;
    // 2026-01-01T00:00:00Z
    const START_MS: i64 = 1_767_225_600_000;
    let scratch = Scratch::new(
        &Config::new()
            .source("gen", "generator")
            .set(
                "template",
                toml_string(
                    r#"{"id":{{n}},"ts":{{timestamp}},"at":"{{rfc3339}}","temp":{{random -10 40}},"dice":{{ random 1 6 }}}"#,
                ),
            )
            .set("count", N)
            .set_str("start", "2026-01-01T00:00:00Z")
            .set("seed", 42)
            .key("/dice")
            .timestamp("/ts")
            .file_sink("out", "out.ndjson")
            .pipeline("p", "gen", &["out"])
            .partitions(3)
            .build(),
    );
    let output = scratch.run();
    assert_exit(&output, 0);
    assert_eq!(count(&output, "p", "in"), N);
    assert_eq!(count(&output, "p", "out"), N);
    // No rate: record n's event time is start + n ms.
    let want: Vec<String> = (0..N)
        .map(|n| {
            let ts = START_MS + n as i64;
            let at = chrono::DateTime::from_timestamp_millis(ts)
                .unwrap()
                .format("%Y-%m-%dT%H:%M:%S%.3fZ");
            format!(
                r#"{{"id":{n},"ts":{ts},"at":"{at}","temp":{},"dice":{}}}"#,
                random(42, n, 0, -10, 40),
                random(42, n, 1, 1, 6)
            )
        })
        .collect();
    assert_eq!(sorted(scratch.read_lines("out.ndjson")), sorted(want));
}

#[test]
fn a_rate_spaces_event_times_and_a_text_template_is_taken_as_is() {
    let scratch = Scratch::new(
        &Config::new()
            .source("gen", "generator")
            .set_str("format", "text")
            .set_str("template", "tick {{n}} at {{timestamp}}")
            .set("rate", 400)
            .set("count", 40)
            .set("start", 1000)
            .file_sink("out", "out.txt")
            .pipeline("p", "gen", &["out"])
            .build(),
    );
    let output = scratch.run();
    assert_exit(&output, 0);
    // 400 records/s: 2.5 ms apart, rounded down to the ms.
    let want: Vec<String> = (0..40u64)
        .map(|n| format!("tick {n} at {}", 1000 + n * 1000 / 400))
        .collect();
    assert_eq!(scratch.read_lines("out.txt"), want);
}

#[test]
fn a_template_that_makes_no_json_is_refused_where_it_is_written() {
    let toml = Config::new()
        .source("gen", "generator")
        .set_str("template", "n={{n}}")
        .sink("out", "stdout")
        .pipeline("p", "gen", &["out"])
        .build();
    let output = Scratch::new(&toml).command("validate").output().unwrap();
    assert_exit(&output, 2);
    let stderr = String::from_utf8(output.stderr).unwrap();
    let at = format!("error: sluice.toml:{}:12: ", line_of(&toml, "template ="));
    assert!(
        stderr.starts_with(&at)
            && stderr.contains("the template does not make JSON (record 0 is n=0"),
        "{stderr}"
    );
}

#[test]
fn a_checkpointed_generator_killed_and_restarted_writes_each_record_once() {
    const N: u64 = 3000;
    let scratch = Scratch::new(
        &Config::new()
            .source("gen", "generator")
            .set_str("template", r#"{"id":{{n}}}"#)
            .set("count", N)
            .set("rate", 1000)
            .set("start", 0)
            .file_sink("out", "out.ndjson")
            .truncate()
            .pipeline("p", "gen", &["out"])
            .partitions(2)
            .batch(r#"{ max_records = 50, interval = "10ms" }"#)
            .checkpoint("50ms")
            .build(),
    );
    let mut daemon = Running::start(scratch.command("run"));
    scratch.wait_for_lines("out.ndjson", 500);
    daemon.child.kill().unwrap(); // SIGKILL
    let output = daemon.finish();
    assert_eq!(output.status.code(), None, "killed by a signal");

    let output = scratch.run();
    assert_exit(&output, 0);
    let log = String::from_utf8_lossy(&output.stderr);
    const RESUMED: &str = "position=generator record ";
    let resumed: u64 = log
        .split(RESUMED)
        .nth(1)
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no `{RESUMED}` in the log:\n{log}"));
    assert!(resumed > 0 && resumed < N, "resumed at record {resumed}");
    // Every record once: what was written after the checkpoint was cut back
    // and generated again.
    let mut ids: Vec<u64> = scratch
        .read_json("out.ndjson")
        .iter()
        .map(|v| v["id"].as_u64().unwrap())
        .collect();
    ids.sort_unstable();
    assert_eq!(ids, (0..N).collect::<Vec<_>>());
}

#[test]
fn a_generator_without_start_cannot_be_checkpointed() {
    let toml = Config::new()
        .source("gen", "generator")
        .sink("out", "stdout")
        .pipeline("p", "gen", &["out"])
        .checkpoint("1s")
        .build();
    let output = Scratch::new(&toml).command("validate").output().unwrap();
    assert_exit(&output, 2);
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stderr.contains("set `start`"), "{stderr}");
}
