//! Misbehaving plugins: an endless loop is cut off at its deadline, an
//! over-allocation hits the memory limit, a panic traps — and the daemon carries
//! on as `on_error` says.

use serde_json::Value;

use crate::support::*;

/// 300 numbered records; every 100th (n = 50, 150, 250) carries `POISON`.
fn numbered_input() -> String {
    (0..300)
        .map(|n| {
            let poison = if n % 100 == 50 { "POISON" } else { "fine" };
            format!("{{\"n\":{n},\"p\":\"{poison}\"}}\n")
        })
        .collect()
}

/// A config running `misbehave` with `extra` settings, batches of 10, one partition
/// (so which records share a batch with a poisoned one is known).
fn config(extra: &str, on_error: &str) -> String {
    Config::new()
        .file_source("in", "in.ndjson")
        .file_sink("out", "out.ndjson")
        .file_sink("dlq", "dlq.ndjson")
        .pipeline("p", "in", &["out"])
        .batch(r#"{ max_records = 10, interval = "1s" }"#)
        .processor(&format!(
            r#"{{ plugin = "misbehave.wasm", timeout = "200ms", memory_limit = "32MiB", {extra} }}"#
        ))
        .dead_letter("dlq")
        .on_error(on_error)
        .build()
}

fn numbers(lines: &[String], field: Option<&str>) -> Vec<u64> {
    let mut n: Vec<u64> = lines
        .iter()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            let v = match field {
                Some(f) => serde_json::from_str(v[f].as_str().unwrap()).unwrap(),
                None => v,
            };
            v["n"].as_u64().unwrap()
        })
        .collect();
    n.sort();
    n
}

/// The poisoned records.
fn poisoned() -> Vec<u64> {
    (0..300).filter(|n| n % 100 == 50).collect()
}

/// Runs `mode` under dead-letter: the failing batches are bisected, so exactly
/// the poisoned records land in the dead-letter sink, with a reason containing
/// `reason`, and all the others pass.
/// Runs the poison-record case of `mode`; checks each dead letter's reason
/// contains `reason`; returns the reasons.
fn dead_letters_poisoned_records(mode: &str, reason: &str) -> Vec<String> {
    let scratch = Scratch::new(&config(
        &format!("config = {{ mode = \"{mode}\", trigger = \"POISON\", bytes = 268435456 }}"),
        "dead-letter",
    ));
    scratch.write("in.ndjson", &numbered_input());
    let output = scratch.run();
    assert_exit(&output, 0);
    let bad = poisoned();
    let good: Vec<u64> = (0..300).filter(|n| !bad.contains(n)).collect();
    assert_eq!(numbers(&scratch.read_lines("out.ndjson"), None), good);
    let dlq = scratch.read_lines("dlq.ndjson");
    assert_eq!(numbers(&dlq, Some("original")), bad);
    for line in &dlq {
        let d: Value = serde_json::from_str(line).unwrap();
        let r = d["reason"].as_str().unwrap();
        assert!(r.contains(reason), "reason {r:?} lacks {reason:?}");
        assert_eq!(d["stage"], "0:misbehave");
    }
    assert_eq!(count(&output, "p", "rejected"), 3);
    assert_eq!(count(&output, "p", "out"), 297);
    dlq.iter()
        .map(|l| {
            let d: Value = serde_json::from_str(l).unwrap();
            d["reason"].as_str().unwrap().to_string()
        })
        .collect()
}

#[test]
fn endless_loop_is_cut_off_at_its_deadline() {
    dead_letters_poisoned_records("loop", "timeout: the call ran past its 200ms deadline");
}

#[test]
fn over_allocation_hits_the_memory_limit() {
    dead_letters_poisoned_records(
        "alloc",
        "out of memory: the instance hit its 33554432-byte memory limit",
    );
}

#[test]
fn panic_is_a_trap_with_its_message() {
    // The panic message leads; the trap it ended in follows.
    for reason in dead_letters_poisoned_records("panic", "misbehave: panic on purpose") {
        let message = reason.find("panic on purpose").unwrap();
        let trap = reason
            .find("unreachable")
            .unwrap_or_else(|| panic!("{reason}"));
        assert!(message < trap, "{reason}");
    }
}

#[test]
fn skip_drops_and_counts_the_poison_records() {
    let scratch = Scratch::new(&config(
        "config = { mode = \"fail\", trigger = \"POISON\" }",
        "skip",
    ));
    scratch.write("in.ndjson", &numbered_input());
    let output = scratch.run();
    assert_exit(&output, 0);
    assert_eq!(count(&output, "p", "skipped"), 3);
    assert_eq!(count(&output, "p", "out"), 297);
    assert!(scratch.read_lines("dlq.ndjson").is_empty());
    // The guest's `log` calls reach the daemon's log, tagged.
    let stderr = String::from_utf8_lossy(&output.stderr);
    let line = stderr
        .lines()
        .find(|l| l.contains("misbehave configured: mode=fail"))
        .unwrap_or_else(|| panic!("no guest log line in:\n{stderr}"));
    for tag in [
        "pipeline=p",
        "stage=0:misbehave",
        "plugin=misbehave",
        "version=",
        "partition=0",
    ] {
        assert!(line.contains(tag), "{tag} missing from {line}");
    }
}

#[test]
fn stop_ends_the_pipeline_with_exit_1() {
    let scratch = Scratch::new(&config(
        "config = { mode = \"loop\", trigger = \"POISON\" }",
        "stop",
    ));
    scratch.write("in.ndjson", &numbered_input());
    let output = scratch.run();
    assert_exit(&output, 1);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("stopped (on_error = \"stop\")"), "{stderr}");
    // Every record read is accounted for: written, or counted as failed.
    assert_eq!(
        count(&output, "p", "in"),
        count(&output, "p", "out") + count(&output, "p", "failed")
    );
    assert!(count(&output, "p", "failed") >= 10);
    // The batches before the poisoned one were written, nothing after it.
    assert_eq!(
        numbers(&scratch.read_lines("out.ndjson"), None),
        (0..50).collect::<Vec<_>>()
    );
}

#[test]
fn sleeping_is_refused_at_once() {
    // The refusal leads, not wasmtime's "error while executing at wasm
    // backtrace" and its frames.
    for reason in dead_letters_poisoned_records("sleep", "plugins may not block or sleep") {
        assert!(
            reason.starts_with(
                "plugins may not block or sleep (wasi:io/poll@0.2.12#[method]pollable.block is not granted) (at "
            ),
            "{reason}"
        );
        assert!(!reason.contains("error while executing"), "{reason}");
    }
}

#[test]
fn no_files_no_environment_no_clock() {
    let scratch = Scratch::new(&config("config = { mode = \"sandbox\" }", "dead-letter"));
    scratch.write("in.ndjson", "{\"n\":1}\n");
    let output = scratch
        .command("run")
        .env("SLUICE_SECRET", "hunter2")
        .output()
        .unwrap();
    assert_exit(&output, 0);
    let out = scratch.read_lines("out.ndjson");
    assert_eq!(out.len(), 1);
    let probe: Value = serde_json::from_str(&out[0]).unwrap();
    assert_eq!(
        probe,
        serde_json::json!({"read_file": false, "list_dir": false, "env_vars": 0, "args": 0, "wall_clock_ms": 0})
    );
}

#[test]
fn one_poison_record_in_ten_thousand_is_isolated() {
    let poison = 7_321;
    let scratch = Scratch::new(
        &config(
            "config = { mode = \"panic\", trigger = \"POISON\" }",
            "dead-letter",
        )
        .replace("max_records = 10,", "max_records = 10000,"),
    );
    let input: String = (0..10_000)
        .map(|n| {
            let p = if n == poison { "POISON" } else { "fine" };
            format!("{{\"n\":{n},\"p\":\"{p}\"}}\n")
        })
        .collect();
    scratch.write("in.ndjson", &input);
    let output = scratch.run();
    assert_exit(&output, 0);
    assert_eq!(count(&output, "p", "batches"), 1);
    // The 9,999 others, in their order.
    let out: Vec<u64> = scratch
        .read_lines("out.ndjson")
        .iter()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["n"]
                .as_u64()
                .unwrap()
        })
        .collect();
    let want: Vec<u64> = (0..10_000).filter(|n| *n != poison).collect();
    assert_eq!(out, want);
    let dlq = scratch.read_lines("dlq.ndjson");
    assert_eq!(numbers(&dlq, Some("original")), vec![poison]);
    let d: Value = serde_json::from_str(&dlq[0]).unwrap();
    assert!(
        d["reason"].as_str().unwrap().contains("panic on purpose"),
        "{d}"
    );
    assert_eq!(d["plugin"], "misbehave");
    assert_eq!(
        d["plugin_version"],
        sluice::wasm::plugin::content_version(
            &std::fs::read(plugins_dir().join("misbehave.wasm")).unwrap()
        )
    );
}

#[test]
fn a_plugin_that_always_fails_trips_the_circuit_breaker() {
    let scratch = Scratch::new(
        &config(
            "config = { mode = \"fail\" }, circuit_breaker = { failures = 3, cooldown = \"1h\" }",
            "dead-letter",
        )
        .replace("max_records = 10,", "max_records = 500,"),
    );
    let input: String = (0..1000).map(|n| format!("{{\"n\":{n}}}\n")).collect();
    scratch.write("in.ndjson", &input);
    let output = scratch.run();
    assert_exit(&output, 0);
    assert_eq!(count(&output, "p", "rejected"), 1000);
    let dlq = scratch.read_lines("dlq.ndjson");
    assert_eq!(
        numbers(&dlq, Some("original")),
        (0..1000).collect::<Vec<_>>()
    );
    // Bisection isolates the first three records as failing alone; then the
    // breaker opens and nothing more is tried, in this batch or the next.
    let mut by_reason: Vec<(u64, bool)> = dlq
        .iter()
        .map(|l| {
            let d: Value = serde_json::from_str(l).unwrap();
            let n = serde_json::from_str::<Value>(d["original"].as_str().unwrap()).unwrap()["n"]
                .as_u64()
                .unwrap();
            (
                n,
                d["reason"]
                    .as_str()
                    .unwrap()
                    .contains("circuit breaker open"),
            )
        })
        .collect();
    by_reason.sort();
    let tried: Vec<u64> = by_reason
        .iter()
        .filter(|(_, open)| !open)
        .map(|(n, _)| *n)
        .collect();
    assert_eq!(tried, vec![0, 1, 2]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        stderr.matches("circuit breaker opened").count(),
        1,
        "{stderr}"
    );
    assert_eq!(
        stderr.matches("batch failed, isolating").count(),
        1,
        "{stderr}"
    );
}

#[test]
fn bisection_stops_at_its_limit() {
    let scratch = Scratch::new(
        &config(
            "config = { mode = \"fail\" }, circuit_breaker = { failures = 1000, bisect_limit = 3 }",
            "dead-letter",
        )
        .replace("max_records = 10,", "max_records = 100,"),
    );
    let input: String = (0..100).map(|n| format!("{{\"n\":{n}}}\n")).collect();
    scratch.write("in.ndjson", &input);
    let output = scratch.run();
    assert_exit(&output, 0);
    let dlq = scratch.read_lines("dlq.ndjson");
    assert_eq!(
        numbers(&dlq, Some("original")),
        (0..100).collect::<Vec<_>>()
    );
    for line in &dlq {
        let d: Value = serde_json::from_str(line).unwrap();
        let reason = d["reason"].as_str().unwrap();
        assert!(
            reason.contains("not isolated: bisection of this batch stopped after 3 failed calls"),
            "{reason}"
        );
    }
}
