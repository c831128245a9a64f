//! User-defined aggregates (`op = "wasm"`, the `delay_quantiles` aggregator
//! plugin): a swap mid-stream keeps every window's state, a record the plugin
//! refuses is dead-lettered while the built-ins still count it, and a component
//! of the wrong world is refused with a located error. (Its results on all the
//! flights, in every window kind and across kill -9 restarts, are checked by
//! the `windows` and `checkpoints` tests, whose aggregates include it.)

use serde_json::Value;

use crate::checkpoints::closed_windows;
use crate::support::*;
use crate::windows::{AGGREGATES, HOUR, assert_rows, delayed, expected_fixed};

/// `wasm` with a custom section appended: a valid component with other bytes,
/// so another version, that behaves the same.
fn another_version(wasm: &[u8]) -> Vec<u8> {
    let name = b"sluice-test-version";
    let payload = b"2";
    let mut section = vec![name.len() as u8];
    section.extend_from_slice(name);
    section.extend_from_slice(payload);
    let mut out = wasm.to_vec();
    out.push(0); // custom section id
    out.push(section.len() as u8); // size (< 128: one LEB128 byte)
    out.extend(section);
    out
}

#[test]
fn a_swapped_aggregator_keeps_the_window_state() {
    let scratch = Scratch::new(
        &Config::new()
            .daemon("plugins_dir", toml_string("plugins"))
            .file_source("f", "in.ndjson")
            .follow()
            .key("/carrier")
            .timestamp("/event_time")
            .file_sink("out", "out.ndjson")
            .pipeline("w", "f", &["out"])
            .partitions(1)
            .processor(r#"{ plugin = "flights_delay.wasm", config = { min_delay = 15 } }"#)
            .window(r#"{ kind = "tumbling", size = "1h", watermark = "10m" }"#)
            .aggregate(AGGREGATES)
            .build(),
    );
    std::fs::create_dir(scratch.path("plugins")).unwrap();
    for plugin in ["flights_delay.wasm", "delay_quantiles.wasm"] {
        std::fs::copy(
            plugins_dir().join(plugin),
            scratch.path("plugins").join(plugin),
        )
        .unwrap();
    }
    let lines = flights_lines(40_000);
    scratch.write("in.ndjson", &(lines[..20_000].join("\n") + "\n"));
    let mut daemon = Running::start(scratch.command("run"));
    scratch.wait_for_lines("out.ndjson", closed_windows(20_000).len());

    // A new version lands (by rename) while windows are open.
    let v2 = another_version(&std::fs::read(plugins_dir().join("delay_quantiles.wasm")).unwrap());
    std::fs::write(scratch.path("v2.tmp"), &v2).unwrap();
    std::fs::rename(
        scratch.path("v2.tmp"),
        scratch.path("plugins/delay_quantiles.wasm"),
    )
    .unwrap();
    // Once loaded, it is taken up at the next micro-batch: send one.
    daemon.wait_for("plugin reloaded");
    scratch.append_lines("in.ndjson", &lines[20_000..20_001]);
    daemon.wait_for("aggregator switched to the new version");
    scratch.append_lines("in.ndjson", &lines[20_001..]);
    scratch.wait_for_lines("out.ndjson", closed_windows(40_000).len());
    daemon.signal("TERM");
    let output = daemon.finish();
    assert_exit(&output, 0);
    // Without checkpoints a stop emits every open window: all the windows of
    // the 40,000 flights, each exact although its state crossed versions.
    let got: Vec<Value> = scratch.read_json("out.ndjson");
    assert_rows(&got, &expected_fixed(&delayed(40_000), HOUR, HOUR));
}

#[test]
fn a_record_the_aggregator_refuses_is_dead_lettered_and_the_builtins_count_it() {
    let scratch = Scratch::new(
        &Config::new()
            .file_source("f", "in.ndjson")
            .key("/carrier")
            .timestamp("/event_time")
            .file_sink("out", "out.ndjson")
            .file_sink("dlq", "dlq.ndjson")
            .pipeline("p", "f", &["out"])
            .window(r#"{ kind = "tumbling", size = "1h" }"#)
            .aggregate(
                r#"[
  { op = "count" },
  { op = "count", field = "/dep_delay" },
  { op = "wasm", plugin = "delay_quantiles.wasm", field = "/dep_delay", config = { quantiles = "0.5,1" }, as = "q" },
]"#,
            )
            .dead_letter("dlq")
            .build(),
    );
    let rec = |delay: &str| {
        format!(r#"{{"carrier":"AA","event_time":"2013-01-01T10:05:00Z","dep_delay":{delay}}}"#)
    };
    scratch.write(
        "in.ndjson",
        &[rec("20"), rec("15.5"), rec("null"), rec("30"), rec("25")].join("\n"),
    );
    let output = scratch.run();
    assert_exit(&output, 0);
    let out = scratch.read_lines("out.ndjson");
    assert_eq!(out.len(), 1, "{out:?}");
    let row: Value = serde_json::from_str(&out[0]).unwrap();
    // count(*) counts all 5, count(field) the 4 non-null; the quantiles see
    // 20, 25 and 30 (null skipped, 15.5 refused).
    assert_eq!(row["count"], 5);
    assert_eq!(row["count_dep_delay"], 4);
    assert_eq!(row["q"], serde_json::json!({"p50": 25, "p100": 30}));
    let dlq = scratch.read_lines("dlq.ndjson");
    assert_eq!(dlq.len(), 1, "{dlq:?}");
    let dead: Value = serde_json::from_str(&dlq[0]).unwrap();
    assert_eq!(dead["stage"], "window");
    assert_eq!(dead["plugin"], "delay_quantiles");
    assert!(
        dead["reason"]
            .as_str()
            .unwrap()
            .contains("delay_quantiles takes integers, not 15.5"),
        "{dead}"
    );
    assert!(dead["original"].as_str().unwrap().contains("15.5"));
    assert_eq!(count(&output, "p", "rejected"), 1);
}

#[test]
fn a_component_of_the_wrong_world_is_refused_where_it_is_named() {
    let base = |processors: &str, aggregate: &str| {
        format!(
            "[daemon]\nplugins_dir = \"@PLUGINS@\"\n[sources.s]\ntype = \"stdin\"\n[sinks.out]\ntype = \"stdout\"\n[pipelines.p]\nsource = \"s\"\nsinks = [\"out\"]\n{processors}\nwindow = {{ kind = \"tumbling\", size = \"1h\" }}\naggregate = [{aggregate}]\n"
        )
    };
    let cases = [
        (
            base(
                "processors = [{ plugin = \"delay_quantiles.wasm\" }]",
                "{ op = \"count\" }",
            ),
            "sluice.toml:10",
            "is a sluice:plugin/aggregator component",
        ),
        (
            base("", "{ op = \"wasm\", plugin = \"identity.wasm\" }"),
            "sluice.toml:12",
            "is a sluice:plugin/processor component",
        ),
        (
            base("", "{ op = \"wasm\" }"),
            "sluice.toml:12",
            "needs `plugin = ",
        ),
        (
            base("", "{ op = \"count\", plugin = \"delay_quantiles.wasm\" }"),
            "sluice.toml:12",
            "`plugin` is for `op = \"wasm\"`",
        ),
        (
            base(
                "",
                "{ op = \"wasm\", plugin = \"delay_quantiles.wasm\", config = { quantiles = \"2\" } }",
            ),
            "sluice.toml:12",
            "quantiles: 2 is not in (0, 1]",
        ),
    ];
    for (config, line, message) in cases {
        let scratch = Scratch::new(&config);
        let output = scratch.command("validate").output().unwrap();
        assert_exit(&output, 2);
        let err = String::from_utf8_lossy(&output.stderr);
        assert!(
            err.contains(line) && err.contains(message),
            "want {line} and {message:?} in:\n{err}"
        );
    }
}

#[test]
fn a_trapping_aggregator_is_replaced_and_keeps_every_window() {
    let scratch = Scratch::new(
        &Config::new()
            .file_source("f", "in.ndjson")
            .timestamp("/t")
            .file_sink("out", "out.ndjson")
            .file_sink("dlq", "dlq.ndjson")
            .pipeline("p", "f", &["out"])
            .window(r#"{ kind = "tumbling", size = "1h" }"#)
            .aggregate(r#"[{ op = "count" }, { op = "wasm", plugin = "agg_misbehave.wasm", field = "/v", as = "sum" }]"#)
            .dead_letter("dlq")
            .build(),
    );
    let rec = |hour: u32, v: i64| format!(r#"{{"t":"2024-05-01T{hour:02}:30:00Z","v":{v}}}"#);
    // One micro-batch: the plugin traps on 13 in the middle of it.
    let lines = [
        rec(10, 1),
        rec(11, 5),
        rec(10, 2),
        rec(10, 13),
        rec(11, 6),
        rec(10, 4),
    ];
    scratch.write("in.ndjson", &(lines.join("\n") + "\n"));
    let output = scratch.run();
    assert_exit(&output, 0);
    let rows: Vec<Value> = scratch.read_json("out.ndjson");
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!(
        (rows[0]["count"].clone(), rows[0]["sum"].clone()),
        (4.into(), 7.into())
    );
    assert_eq!(
        (rows[1]["count"].clone(), rows[1]["sum"].clone()),
        (2.into(), 11.into())
    );
    let dlq = scratch.read_lines("dlq.ndjson");
    assert_eq!(dlq.len(), 1, "{dlq:?}");
    let dead: Value = serde_json::from_str(&dlq[0]).unwrap();
    assert!(
        dead["original"].as_str().unwrap().contains("\"v\":13"),
        "{dead}"
    );
    assert!(
        dead["reason"].as_str().unwrap().contains("13 is unlucky"),
        "{dead}"
    );
}

/// `plugin run` of an aggregator without `--field` on whole events, where
/// every event fails: one hint line naming `--field` and the events' fields.
/// Not when some events pass, nor with `--field`.
#[test]
fn plugin_run_hints_at_field_when_every_event_fails() {
    let scratch = Scratch::new("");
    scratch.write("flights.ndjson", &(flights_lines(10).join("\n") + "\n"));
    scratch.write("mixed.ndjson", "5\n7\n{\"dep_delay\":3}\n");
    let run = |input: &str, args: &[&str]| {
        std::process::Command::new(sluice_bin())
            .args(["plugin", "run"])
            .arg(plugins_dir().join("delay_quantiles.wasm"))
            .args(["--batch", "4"])
            .args(args)
            .stdin(std::fs::File::open(scratch.path(input)).unwrap())
            .output()
            .unwrap()
    };
    const HINT: &str = "hint: every event failed, and there is no --field: this aggregator \
                        gets each whole event. In the daemon an aggregate gets one field of it \
                        (its `field`); give it with --field /NAME (this input's fields: /year, \
                        /month, /day, /dep_time, /sched_dep_time, /dep_delay, /arr_time, \
                        /sched_arr_time, …)\n";
    let output = run("flights.ndjson", &[]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.matches(HINT).count(), 1, "{stderr}");
    assert_eq!(
        stderr
            .lines()
            .filter(|l| l.starts_with("failed: line "))
            .count(),
        10,
        "{stderr}"
    );
    assert_exit(&output, 1);

    let output = run("mixed.ndjson", &[]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("failed=1"), "{stderr}");
    assert!(!stderr.contains("hint:"), "{stderr}");

    let output = run("flights.ndjson", &["--field", "/dep_delay"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("in=10 out=1 rejected=0 failed=0"),
        "{stderr}"
    );
    assert!(!stderr.contains("hint:"), "{stderr}");
    assert_exit(&output, 0);
}

/// An aggregator whose accumulator grows to its memory limit: once records of
/// the group run out of memory four in a row, the rest of the batch's
/// records fail at once ("not tried") instead of one instance restart each
/// (with 200,000 distinct values at 2 MiB that took hours; the helper that
/// found it killed it after 10 minutes). Ground truth: the quantiles of the
/// values whose lines were not reported failed.
#[test]
fn plugin_run_of_an_aggregator_at_its_memory_limit_ends() {
    const N: u64 = 200_000;
    let scratch = Scratch::new("");
    let input: String = (1..=N).map(|v| format!("{v}\n")).collect();
    scratch.write("values.txt", &input);
    let mut child = std::process::Command::new(sluice_bin())
        .args(["plugin", "run"])
        .arg(plugins_dir().join("delay_quantiles.wasm"))
        .args(["--memory-limit", "2MiB"])
        .stdin(std::fs::File::open(scratch.path("values.txt")).unwrap())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Drain both pipes while waiting, with a bound far above the seconds it
    // takes (a liveness check, not a timing one).
    let stdout = child.stdout.take().unwrap();
    let stderr = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || std::io::read_to_string(stdout).unwrap());
    let err = std::thread::spawn(move || std::io::read_to_string(stderr).unwrap());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(300);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            child.kill().unwrap();
            panic!("plugin run did not end within 300 s");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let (stdout, stderr) = (out.join().unwrap(), err.join().unwrap());
    assert_eq!(status.code(), Some(1), "{stderr}");
    let failed: std::collections::BTreeSet<u64> = stderr
        .lines()
        .filter_map(|l| l.strip_prefix("failed: line "))
        .map(|l| l.split(':').next().unwrap().parse().unwrap())
        .collect();
    assert!(
        stderr.contains(&format!("in={N} out=1 rejected=0 failed={} ", failed.len())),
        "{stderr}"
    );
    let not_tried = stderr
        .lines()
        .filter(|l| l.contains("not tried: 4 records of this group in a row ran out of memory"))
        .count();
    assert!(
        not_tried > failed.len() / 2,
        "{not_tried} of {} not tried",
        failed.len()
    );
    // Line v holds value v.
    let kept: Vec<u64> = (1..=N).filter(|v| !failed.contains(v)).collect();
    assert!(!kept.is_empty() && !failed.is_empty());
    let rank = |q: f64| kept[((q * kept.len() as f64).ceil() as usize).max(1) - 1];
    let got: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(
        got,
        serde_json::json!({"p50": rank(0.5), "p90": rank(0.9), "p99": rank(0.99)})
    );
}
