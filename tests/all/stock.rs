//! The stock plugins (`plugins/stock-*`, `plugin = "stock/NAME.wasm"`): the
//! `jq` filter of the flights against the same filter written here with
//! serde_json; the access-log example against a ground truth computed here
//! from the raw log; `sluice plugin check` and each reference page's `sluice
//! plugin run --expect` command; where `stock/NAME.wasm` is found; a jq
//! syntax error at `validate`; a `jq` program swapped by config reload under
//! load without a record lost or repeated.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::Value;

use crate::support::*;

/// The stock plugins, each with a config `sluice plugin check` configures.
const STOCK: [(&str, &[&str]); 5] = [
    ("jq", &["program=."]),
    ("fields", &["drop=/x"]),
    ("parse", &["pattern=combined"]),
    ("mask", &["fields=/email"]),
    ("sample", &["n=10"]),
];

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The "carrier UA, with a route field" filter as a jq program, no code:
/// exactly the flights a direct computation keeps, each exactly as it
/// writes it (all the flights' numbers are integers, written as read).
#[test]
fn jq_carrier_ua_with_route_equals_a_direct_computation() {
    let program = r#"select(.carrier == "UA") | .route = .origin + "-" + .dest"#;
    let mut expected: Vec<String> = flights_lines(usize::MAX)
        .iter()
        .filter_map(|line| {
            let mut v: Value = serde_json::from_str(line).unwrap();
            if v["carrier"] != "UA" {
                return None;
            }
            let route = format!(
                "{}-{}",
                v["origin"].as_str().unwrap(),
                v["dest"].as_str().unwrap()
            );
            v.as_object_mut()
                .unwrap()
                .insert("route".into(), Value::String(route));
            Some(serde_json::to_string(&v).unwrap())
        })
        .collect();
    assert_eq!(expected.len(), 58_665);

    let config = Config::new()
        .file_source("flights", flights_gz().to_str().unwrap())
        .key("/carrier")
        .file_sink("out", "out.ndjson")
        .file_sink("dlq", "dlq.ndjson")
        .pipeline("ua", "flights", &["out"])
        .partitions(2)
        .processor(&format!(
            "{{ plugin = \"stock/jq.wasm\", config = {{ program = {} }} }}",
            toml_string(program)
        ))
        .dead_letter("dlq")
        .build();
    let scratch = Scratch::new(&config);
    let output = scratch.run();
    assert_exit(&output, 0);
    assert_eq!(count(&output, "ua", "in"), 336_776);
    assert_eq!(count(&output, "ua", "rejected"), 0);
    assert_eq!(count(&output, "ua", "out"), expected.len() as u64);
    let mut got = scratch.read_lines("out.ndjson");
    got.sort_unstable();
    expected.sort_unstable();
    assert!(got == expected, "the outputs differ");
    assert!(scratch.read_lines("dlq.ndjson").is_empty());
}

/// A broken line put into the log, and what the dead-letter reason must say.
const BROKEN: [(usize, &str, &str); 4] = [
    (
        0,
        "this is not an access log line",
        "does not match pattern `combined`",
    ),
    (500, "", "field `time`: cannot read `31/Apr/2009"),
    (1500, "", "does not match pattern `combined`"),
    (3000, "", "does not match pattern `combined`"),
];

/// The request's time and status, and its bytes (`None` for `-`), read from
/// a combined log line by hand (no regex, no sluice code); `None` when it is
/// not one.
fn read_line(line: &str) -> Option<(i64, i64, Option<i64>)> {
    let (head, rest) = line.split_once(" [")?;
    if head.split(' ').count() != 3 {
        return None;
    }
    let (time, rest) = rest.split_once("] \"")?;
    let (_request, rest) = rest.split_once("\" ")?;
    let mut words = rest.splitn(3, ' ');
    let status = words.next()?;
    let bytes = words.next()?;
    let tail = words.next()?;
    if status.len() != 3 || !status.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let bytes = match bytes {
        "-" => None,
        b if b.bytes().all(|c| c.is_ascii_digit()) => Some(b.parse().ok()?),
        _ => return None,
    };
    // "referrer" "user agent" and anything after.
    let quoted: Vec<&str> = tail.split('"').collect();
    if !tail.starts_with('"') || quoted.len() < 5 || quoted[2] != " " {
        return None;
    }
    let at = chrono::DateTime::parse_from_str(time, "%d/%b/%Y:%H:%M:%S %z").ok()?;
    Some((at.timestamp_millis(), status.parse().ok()?, bytes))
}

/// `examples/access-log/sluice.toml` on the real log with broken lines put
/// in: per minute and status, the requests and bytes a hand-written reading
/// of the raw log counts; the broken lines in the dead-letter sink with why.
#[test]
fn access_log_example_windows_equal_the_ground_truth() {
    let log = std::fs::read_to_string(repo().join("examples/data/access-2009.log")).unwrap();
    let mut lines: Vec<String> = log.lines().map(str::to_string).collect();
    assert_eq!(lines.len(), 3_260);
    let mut broken_lines = Vec::new();
    for (at, line, _) in BROKEN.iter().rev() {
        let broken = match *at {
            500 => lines[*at].replacen("[22/Apr/2009", "[31/Apr/2009", 1),
            1500 => lines[*at][..70].to_string(),
            3000 => lines[*at].replacen("\" 200 ", "\" 2x0 ", 1),
            _ => line.to_string(),
        };
        broken_lines.push(broken.clone());
        lines.insert(*at, broken);
    }
    broken_lines.reverse();

    // Ground truth: (minute start, status) → (requests, bytes).
    let mut expected: BTreeMap<(i64, i64), (u64, Option<i64>)> = BTreeMap::new();
    let mut unreadable = Vec::new();
    for line in &lines {
        match read_line(line) {
            Some((ms, status, bytes)) => {
                let entry = expected
                    .entry((ms.div_euclid(60_000) * 60_000, status))
                    .or_insert((0, None));
                entry.0 += 1;
                if let Some(b) = bytes {
                    entry.1 = Some(entry.1.unwrap_or(0) + b);
                }
            }
            None => unreadable.push(line.clone()),
        }
    }
    assert_eq!(
        unreadable, broken_lines,
        "the hand reading finds the broken lines"
    );
    assert!(expected.len() >= 20, "{} windows", expected.len());

    let example = std::fs::read_to_string(repo().join("examples/access-log/sluice.toml")).unwrap();
    let config = example
        .replace(
            "\"${CARGO_TARGET_DIR:-../../target}/plugins\"",
            "\"@PLUGINS@\"",
        )
        .replace("\"../../target/state-access-log\"", "\"state\"")
        .replace("\"../data/access-2009.log\"", "\"access.log\"")
        .replace(
            "\"../../target/access-log-out/per-minute.ndjson\"",
            "\"per-minute.ndjson\"",
        )
        .replace(
            "\"../../target/access-log-out/dead-letter.ndjson\"",
            "\"dead-letter.ndjson\"",
        );
    assert!(
        config.contains("\"access.log\"") && config.contains("\"dead-letter.ndjson\""),
        "the example config changed shape"
    );
    let scratch = Scratch::new(&config);
    scratch.write("access.log", &(lines.join("\n") + "\n"));
    let output = scratch.run();
    assert_exit(&output, 0);
    let p = "status_per_minute";
    assert_eq!(count(&output, p, "in"), lines.len() as u64);
    assert_eq!(count(&output, p, "rejected"), BROKEN.len() as u64);
    assert_eq!(count(&output, p, "late"), 0);

    let mut got: BTreeMap<(i64, i64), (u64, Option<i64>)> = BTreeMap::new();
    for row in scratch.read_json("per-minute.ndjson") {
        let start = chrono::DateTime::parse_from_rfc3339(row["window_start"].as_str().unwrap())
            .unwrap()
            .timestamp_millis();
        let end = chrono::DateTime::parse_from_rfc3339(row["window_end"].as_str().unwrap())
            .unwrap()
            .timestamp_millis();
        assert_eq!(end - start, 60_000, "{row}");
        let key = (start, row["status"].as_i64().unwrap());
        let value = (row["requests"].as_u64().unwrap(), row["bytes"].as_i64());
        assert!(got.insert(key, value).is_none(), "{row} twice");
    }
    assert_eq!(got, expected);

    let dead = scratch.read_json("dead-letter.ndjson");
    assert_eq!(dead.len(), BROKEN.len());
    for ((_, _, why), (record, line)) in BROKEN.iter().zip(dead.iter().zip(&broken_lines)) {
        assert_eq!(record["original"], line.as_str(), "{record}");
        assert_eq!(record["stage"], "0:parse", "{record}");
        let reason = record["reason"].as_str().unwrap();
        assert!(reason.starts_with(why), "{reason}");
    }
}

/// Every stock plugin is a processor this daemon runs, found as
/// `stock/NAME.wasm` from a folder that has no such file (in the stock
/// folder next to the binary).
#[test]
fn each_stock_plugin_passes_plugin_check() {
    let scratch = tempfile::tempdir().unwrap();
    for (name, config) in STOCK {
        let mut command = Command::new(sluice_bin());
        command
            .current_dir(scratch.path())
            .args(["plugin", "check"])
            .arg(format!("stock/{name}.wasm"));
        for setting in config {
            command.args(["--config", setting]);
        }
        let output = command.output().unwrap();
        let text = String::from_utf8_lossy(&output.stdout);
        assert_exit(&output, 0);
        assert!(text.contains("processor"), "{name}: {text}");
        assert!(
            text.contains(
                &plugins_dir()
                    .join("stock")
                    .join(format!("{name}.wasm"))
                    .canonicalize()
                    .unwrap()
                    .display()
                    .to_string()
            ),
            "{name}: {text}"
        );
    }
}

/// Each reference page (docs/plugins/stock/NAME.md) shows a `sluice plugin
/// run … --expect …` command; it runs, from the repository's root, and its
/// output matches.
#[test]
fn each_reference_page_example_runs_and_matches() {
    let bin_dir = Path::new(sluice_bin()).parent().unwrap().to_path_buf();
    let path = std::env::join_paths(std::iter::once(bin_dir).chain(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    )))
    .unwrap();
    let cache = tempfile::tempdir().unwrap();
    for (name, _) in STOCK {
        let page = repo().join(format!("docs/plugins/stock/{name}.md"));
        let text =
            std::fs::read_to_string(&page).unwrap_or_else(|e| panic!("{}: {e}", page.display()));
        let commands: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with(&format!("sluice plugin run stock/{name}.wasm")))
            .collect();
        assert!(
            !commands.is_empty(),
            "{name}.md has no `sluice plugin run` example"
        );
        for command in commands {
            assert!(command.contains("--expect "), "{command}");
            let output = Command::new("sh")
                .arg("-c")
                .arg(command)
                .current_dir(repo())
                .env("PATH", &path)
                .env("XDG_CACHE_HOME", cache.path())
                .output()
                .unwrap();
            let stderr = String::from_utf8_lossy(&output.stderr);
            assert!(
                output.status.success() && stderr.contains("output matches"),
                "{command}:\n{stderr}"
            );
        }
    }
}

/// A pipeline `in.ndjson` → the processors → `out.ndjson`, with plugins from
/// `plugins_dir` (a path relative to the scratch folder).
fn one_stage(plugins_dir: &str, processor: &str) -> Config {
    Config::new()
        .daemon("plugins_dir", toml_string(plugins_dir))
        .file_source("in", "in.ndjson")
        .file_sink("out", "out.ndjson")
        .truncate()
        .pipeline("p", "in", &["out"])
        .processor(processor)
}

/// `stock/NAME.wasm` is looked up in `plugins_dir` first (a file of one's
/// own wins), then in `$SLUICE_STOCK_DIR`, then next to the binary; a
/// missing one names the folders searched.
#[test]
fn stock_paths_resolve_in_plugins_dir_then_the_stock_folders() {
    let run = |scratch: &Scratch, env: Option<&Path>| {
        scratch.write("in.ndjson", "{\"a\":1}\n");
        let mut command = scratch.command("run");
        if let Some(dir) = env {
            command.env("SLUICE_STOCK_DIR", dir);
        }
        let output = command.output().unwrap();
        assert_exit(&output, 0);
        scratch.read_lines("out.ndjson")
    };
    let jq = r#"{ plugin = "stock/jq.wasm", config = { program = ".b = 2" } }"#;

    // An empty plugins_dir: the stock folder next to the binary.
    let scratch = Scratch::new(&one_stage("mine", jq).build());
    std::fs::create_dir(scratch.path("mine")).unwrap();
    assert_eq!(run(&scratch, None), [r#"{"a":1,"b":2}"#]);

    // $SLUICE_STOCK_DIR before it: there `jq.wasm` is the tag_a fixture.
    let elsewhere = scratch.path("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    std::fs::copy(plugins_dir().join("tag_a.wasm"), elsewhere.join("jq.wasm")).unwrap();
    assert_eq!(run(&scratch, Some(&elsewhere)), [r#"{"a":1,"v":"a"}"#]);

    // A file of one's own in plugins_dir/stock/ wins over both.
    std::fs::create_dir(scratch.path("mine/stock")).unwrap();
    std::fs::copy(
        plugins_dir().join("tag_b.wasm"),
        scratch.path("mine/stock/jq.wasm"),
    )
    .unwrap();
    assert_eq!(run(&scratch, Some(&elsewhere)), [r#"{"a":1,"v":"b"}"#]);

    // Missing: located, with the folders searched.
    let missing = Scratch::new(&one_stage("mine", r#"{ plugin = "stock/nope.wasm" }"#).build());
    std::fs::create_dir(missing.path("mine")).unwrap();
    missing.write("in.ndjson", "");
    let output = missing.command("validate").output().unwrap();
    assert_exit(&output, 2);
    let err = String::from_utf8_lossy(&output.stderr);
    let stock = plugins_dir().join("stock").canonicalize().unwrap();
    assert!(
        err.contains(
            "plugin file not found: mine/stock/nope.wasm (nor in the stock plugin folders: "
        ) && err.contains(&stock.display().to_string()),
        "{err}"
    );
}

/// A jq program that does not compile is a config error at `validate`,
/// located at the stage's line, with jq's message and its place in the
/// program.
#[test]
fn a_jq_syntax_error_is_a_located_config_error() {
    let config = one_stage(
        "@PLUGINS@",
        r#"{ plugin = "stock/jq.wasm", config = { program = 'select(.carrier ==) | .x' } }"#,
    )
    .build();
    let scratch = Scratch::new(&config);
    scratch.write("in.ndjson", "");
    let output = scratch.command("validate").output().unwrap();
    assert_exit(&output, 2);
    let err = String::from_utf8_lossy(&output.stderr);
    let at = format!("sluice.toml:{}:", line_of(&config, "stock/jq.wasm"));
    assert!(err.contains(&at), "{err}");
    assert!(
        err.contains("jq program: expected term at line 1, column 19, found `)`"),
        "{err}"
    );
}

/// A `jq` program swapped by config reload (SIGHUP) while records stream in,
/// again and again: every record comes out exactly once, each by one program
/// or the other, and a key's records stay in order.
#[test]
fn jq_program_swapped_by_config_reload_under_load_loses_and_repeats_nothing() {
    const RECORDS: u64 = 150_000;
    const CHUNK: u64 = 1_000;
    const KEYS: u64 = 64;
    const SWAPS: usize = 12;
    let config = |tag: &str| {
        Config::new()
            .file_source("in", "in.ndjson")
            .follow()
            .key("/k")
            .file_sink("out", "out.ndjson")
            .file_sink("dlq", "dlq.ndjson")
            .pipeline("p", "in", &["out"])
            .partitions(4)
            .batch(r#"{ max_records = 1024, interval = "20ms" }"#)
            .processor(&format!(
                "{{ plugin = \"stock/jq.wasm\", config = {{ program = '.v = $v', args = {{ v = \"{tag}\" }} }} }}"
            ))
            .dead_letter("dlq")
            .build()
    };
    let scratch = Scratch::new(&config("a"));
    scratch.write("in.ndjson", "");
    let mut daemon = Running::start(scratch.command("run"));
    daemon.wait_for("pipeline started");

    let done_swaps = Arc::new(AtomicUsize::new(0));
    let mut input = std::fs::OpenOptions::new()
        .append(true)
        .open(scratch.path("in.ndjson"))
        .unwrap();
    let pace = done_swaps.clone();
    let writer = std::thread::spawn(move || {
        let chunks = (RECORDS / CHUNK) as usize;
        for (c, start) in (0..RECORDS).step_by(CHUNK as usize).enumerate() {
            let waited = std::time::Instant::now();
            while pace.load(Ordering::Relaxed) < c * SWAPS / chunks
                && waited.elapsed() < Duration::from_secs(60)
            {
                std::thread::sleep(Duration::from_millis(5));
            }
            let chunk: String = (start..start + CHUNK)
                .map(|n| format!("{{\"k\":\"key{}\",\"n\":{n}}}\n", n % KEYS))
                .collect();
            input.write_all(chunk.as_bytes()).unwrap();
            std::thread::sleep(Duration::from_millis(10));
        }
    });
    let mut swaps = 0;
    while !writer.is_finished() {
        swaps += 1;
        scratch.write_config(&config(if swaps % 2 == 1 { "b" } else { "a" }));
        daemon.signal("HUP");
        daemon.wait_for_count("config reloaded", swaps);
        done_swaps.store(swaps, Ordering::Relaxed);
    }
    writer.join().unwrap();
    scratch.wait_for_lines("out.ndjson", RECORDS as usize);
    assert!(
        swaps >= SWAPS,
        "only {swaps} swaps happened during the stream"
    );
    daemon.signal("TERM");
    let output = daemon.finish();
    assert_exit(&output, 0);

    let lines = scratch.read_lines("out.ndjson");
    assert_eq!(lines.len() as u64, RECORDS);
    let mut seen = vec![false; RECORDS as usize];
    let mut last: BTreeMap<String, u64> = BTreeMap::new();
    let mut tags: BTreeMap<String, usize> = BTreeMap::new();
    for line in &lines {
        let v: Value = serde_json::from_str(line).unwrap();
        let n = v["n"].as_u64().unwrap();
        let key = v["k"].as_str().unwrap().to_string();
        assert!(!std::mem::replace(&mut seen[n as usize], true), "{n} twice");
        assert_eq!(key, format!("key{}", n % KEYS));
        *tags
            .entry(v["v"].as_str().unwrap().to_string())
            .or_default() += 1;
        if let Some(prev) = last.insert(key.clone(), n) {
            assert!(prev < n, "key {key}: {n} after {prev}");
        }
    }
    assert!(seen.iter().all(|s| *s));
    assert_eq!(tags.keys().cloned().collect::<Vec<_>>(), ["a", "b"]);
    assert!(scratch.read_lines("dlq.ndjson").is_empty());
    assert_eq!(count(&output, "p", "out"), RECORDS);
    eprintln!("{swaps} config reloads under load; {tags:?}");
}
