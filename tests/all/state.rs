//! Built-in stages on host-owned state: lookup tables and the `join` stage,
//! and the `dedup` stage with its state in the checkpoints. The examples run
//! on the real data, their output checked against ground truth computed here
//! from the input files (not by sluice's code).

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::checkpoints::kill_9_repeatedly;
use crate::support::*;
use crate::windows::{HOUR, assert_rows, time};

fn repo() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `faa` → `name` of examples/data/airports.csv, read by hand (it has a
/// header row and no quoted field).
pub(crate) fn airport_names() -> BTreeMap<String, String> {
    let text = std::fs::read_to_string(repo().join("examples/data/airports.csv")).unwrap();
    let mut lines = text.lines();
    assert_eq!(
        lines.next(),
        Some("faa,name,lat,lon,alt,tz,dst,tzone"),
        "the header"
    );
    lines
        .map(|l| {
            assert!(!l.contains('"'), "a quoted field: {l}");
            let fields: Vec<&str> = l.split(',').collect();
            assert_eq!(fields.len(), 8, "{l}");
            (fields[0].to_string(), fields[1].to_string())
        })
        .collect()
}

/// What `plugins/dest-names` gives for `lines` (flights) in input order,
/// from the CSV read by hand: `{"dest", "dest_name" (null when the table has
/// no row), "before": flights to it before}`.
fn dest_names_truth(lines: &[String]) -> Vec<String> {
    let names = airport_names();
    let mut seen: BTreeMap<String, u64> = BTreeMap::new();
    lines
        .iter()
        .map(|line| {
            let flight: Value = serde_json::from_str(line).unwrap();
            let dest = flight["dest"].as_str().unwrap().to_string();
            let before = seen.entry(dest.clone()).or_insert(0);
            let row = json!({ "dest": dest, "dest_name": names.get(&dest), "before": *before });
            *before += 1;
            row.to_string()
        })
        .collect()
}

fn event_ms(record: &Value) -> i64 {
    chrono::DateTime::parse_from_rfc3339(record["event_time"].as_str().unwrap())
        .unwrap()
        .timestamp_millis()
}

/// The rows of examples/join: per hour of departure and destination airport
/// name (null where the airport has no row), the flights and their mean
/// departure delay (null delays skipped; null when none is left).
fn expected_delays_by_airport() -> Vec<Value> {
    let names = airport_names();
    // (window start, name) → (flights, delay sum, delays)
    let mut windows: BTreeMap<(i64, Option<String>), (u64, i64, u64)> = BTreeMap::new();
    for line in flights_lines(usize::MAX) {
        let r: Value = serde_json::from_str(&line).unwrap();
        let start = event_ms(&r).div_euclid(HOUR) * HOUR;
        let name = names.get(r["dest"].as_str().unwrap()).cloned();
        let w = windows.entry((start, name)).or_default();
        w.0 += 1;
        if let Some(d) = r["dep_delay"].as_i64() {
            w.1 += d;
            w.2 += 1;
        }
    }
    windows
        .into_iter()
        .map(|((start, name), (flights, sum, n))| {
            json!({
                "window_start": time(start),
                "window_end": time(start + HOUR),
                "name": name,
                "flights": flights,
                "avg_dep_delay": if n == 0 { Value::Null } else { json!(sum as f64 / n as f64) },
            })
        })
        .collect()
}

fn by_window_and_name(rows: &mut [Value]) {
    rows.sort_by(|a, b| {
        (a["window_start"].as_str(), a["name"].as_str())
            .cmp(&(b["window_start"].as_str(), b["name"].as_str()))
    });
}

/// `examples/join/sluice.toml`: flights ⋈ airports (left, on `/dest`), then
/// hourly windows per destination airport name.
#[test]
fn join_example_windows_match_ground_truth() {
    let mut want = expected_delays_by_airport();
    let example = std::fs::read_to_string(repo().join("examples/join/sluice.toml")).unwrap();
    let config = example
        .replace(
            "\"${CARGO_TARGET_DIR:-../../target}/plugins\"",
            "\"@PLUGINS@\"",
        )
        .replace("\"../../target/state-join\"", "\"state\"")
        .replace(
            "\"../data/flights-2013.ndjson.gz\"",
            &format!("{:?}", flights_gz()),
        )
        .replace(
            "\"../data/airports.csv\"",
            &format!("{:?}", repo().join("examples/data/airports.csv")),
        )
        .replace("\"../../target/join-out/", "\"out/");
    assert!(
        config.contains("@PLUGINS@") && config.contains("\"out/delays-by-airport.ndjson\""),
        "the example config changed shape"
    );
    let scratch = Scratch::new(&config);
    let output = scratch.run();
    assert_exit(&output, 0);
    let p = "delays_by_airport";
    assert_eq!(count(&output, p, "in"), 336_776);
    assert_eq!(count(&output, p, "late"), 0);
    assert_eq!(count(&output, p, "unmatched"), 0, "a left join keeps them");
    assert_eq!(count(&output, p, "out"), want.len() as u64);
    let mut got = scratch.read_json("out/delays-by-airport.ndjson");
    by_window_and_name(&mut got);
    by_window_and_name(&mut want);
    assert_rows(&got, &want);
    // The unmatched destinations (SJU, BQN, STT, PSE) are there, without a name.
    assert!(got.iter().any(|r| r["name"].is_null()));
    assert!(got.iter().any(|r| r["name"] == "Los Angeles Intl"));
}

/// The flights with every 10th one repeated 5 minutes later in event time —
/// the same flight record, its `event_time` 5 minutes on, placed where that
/// time falls in the (event-time sorted) file (as examples/dedup/make_input.py
/// writes them); and the original lines.
fn flights_with_duplicates() -> (String, Vec<String>) {
    let originals = flights_lines(usize::MAX);
    let mut input = String::with_capacity(originals.len() * 480);
    let mut pending: std::collections::VecDeque<(i64, String)> = Default::default();
    for (i, line) in originals.iter().enumerate() {
        let mut r: Value = serde_json::from_str(line).unwrap();
        let t = event_ms(&r);
        while pending.front().is_some_and(|(at, _)| *at <= t) {
            input.push_str(&pending.pop_front().unwrap().1);
            input.push('\n');
        }
        input.push_str(line);
        input.push('\n');
        if i % 10 == 9 {
            let later = t + 5 * 60_000;
            r["event_time"] = json!(time(later));
            r["event_time_ms"] = json!(later);
            pending.push_back((later, r.to_string()));
        }
    }
    for (_, line) in pending {
        input.push_str(&line);
        input.push('\n');
    }
    (input, originals)
}

/// `examples/dedup/sluice.toml` with its paths in the scratch folder: as it
/// is (reading its standard input), or reading the file `in.ndjson` with
/// `checkpoint = { interval }` (a pipe cannot be read again).
fn dedup_config(checkpoint: Option<&str>) -> String {
    let example = std::fs::read_to_string(repo().join("examples/dedup/sluice.toml")).unwrap();
    let mut config = example
        .replace(
            "\"${CARGO_TARGET_DIR:-../../target}/plugins\"",
            "\"@PLUGINS@\"",
        )
        .replace("\"../../target/state-dedup\"", "\"state\"")
        .replace(
            "\"../../target/dedup-out/flights.ndjson\"",
            "\"out.ndjson\"",
        );
    assert!(
        config.contains("type = \"stdin\"")
            && config.contains("\"out.ndjson\"")
            && config.ends_with("sinks = [\"flights\"]\n"),
        "the example config changed shape"
    );
    if let Some(interval) = checkpoint {
        config = config.replace("type = \"stdin\"", "type = \"file\"\npath = \"in.ndjson\"");
        config.push_str(&format!("checkpoint = {{ interval = {interval:?} }}\n"));
    }
    config
}

fn sorted(mut lines: Vec<String>) -> Vec<String> {
    lines.sort_unstable();
    lines
}

const FLIGHTS: u64 = 336_776;
/// Every 10th flight of 336,776 is repeated.
const REPEATS: u64 = 33_677;

/// `examples/dedup`, its input on standard input: exactly the original
/// flights come out, each once, each the first (original) record of its
/// flight.
#[test]
fn dedup_example_passes_each_flight_exactly_once() {
    let (input, originals) = flights_with_duplicates();
    let scratch = Scratch::new(&dedup_config(None));
    scratch.write("in.ndjson", &input);
    drop(input);
    let input = std::fs::File::open(scratch.path("in.ndjson")).unwrap();
    let output = scratch.command("run").stdin(input).output().unwrap();
    assert_exit(&output, 0);
    assert_eq!(count(&output, "dedup", "in"), FLIGHTS + REPEATS);
    assert_eq!(count(&output, "dedup", "duplicates"), REPEATS);
    assert_eq!(count(&output, "dedup", "late"), 0);
    assert_eq!(count(&output, "dedup", "out"), FLIGHTS);
    let got = scratch.read_lines("out.ndjson");
    assert_eq!(got.len() as u64, FLIGHTS);
    assert!(
        sorted(got) == sorted(originals),
        "the output is not the original flights"
    );
}

/// The dedup job with checkpoints every 50 ms, killed with SIGKILL five times
/// at random points and restarted: the output is what an uninterrupted run
/// writes (`dedup_example_passes_each_flight_exactly_once`: the original
/// flights, each once) — no duplicate let through after a restart (the state
/// was restored), no flight lost.
#[test]
fn dedup_state_survives_kill_9_with_checkpoints() {
    let (input, originals) = flights_with_duplicates();
    let scratch = Scratch::new(&dedup_config(Some("50ms")));
    scratch.write("in.ndjson", &input);
    drop(input);
    // The job takes ~2.9 s in a debug build here: five pauses of up to
    // 400 ms (2 s) leave it unfinished; 300–900 ms (3 s on average) let it
    // finish first on a quiet machine.
    let (kills, resumed_with_state) = kill_9_repeatedly(&scratch, 5, 100..400, |log| {
        log.contains("resuming from checkpoint") && !log.contains("dedup_keys=0 ")
    });
    assert!(kills >= 5, "the job finished after {kills} kill(s)");
    assert!(
        resumed_with_state >= 2,
        "only {resumed_with_state} restarts resumed a dedup state"
    );
    let output = scratch.run();
    assert_exit(&output, 0);
    assert!(String::from_utf8_lossy(&output.stderr).contains("resuming from checkpoint"));
    let got = scratch.read_lines("out.ndjson");
    assert_eq!(got.len() as u64, FLIGHTS, "no duplicate, no loss");
    assert!(
        sorted(got) == sorted(originals),
        "the output is not the original flights"
    );
}

/// A followed input through `join` (inner) and `dedup`, with the admin API:
/// the table file replaced while the daemon runs is swapped in, a broken one
/// keeps the table it replaced; `/pipelines` counts the duplicates and the
/// unmatched.
#[test]
fn a_changed_table_file_is_swapped_in_and_a_broken_one_keeps_the_old_table() {
    let config = Config::new()
        .admin()
        .table("tables.codes")
        .set_str("path", "codes.ndjson")
        .set_str("key", "/code")
        .file_source("in", "in.ndjson")
        .follow()
        .key("/id")
        .timestamp("/t")
        .file_sink("out", "out.ndjson")
        .pipeline("p", "in", &["out"])
        .partitions(2)
        .batch(r#"{ max_records = 10, interval = "10ms" }"#)
        .processor(r#"{ join = { table = "codes", on = "/c", as = "/info", kind = "inner" } }"#)
        .processor(r#"{ dedup = { key = ["/id"], within = "1m" } }"#);
    let scratch = Scratch::new(&config.build());
    scratch.write("codes.ndjson", "{\"code\":\"a\",\"v\":1}\n");
    scratch.write("in.ndjson", "");
    let mut daemon = Running::start(scratch.command("run"));
    let addr = daemon.admin_addr();
    daemon.wait_for("pipeline started");
    let line = |id: u32, c: &str| format!(r#"{{"id":{id},"c":"{c}","t":{}}}"#, 1000 + id);
    // 1 and 2 match; 3 does not (inner: dropped); 1 again: a duplicate.
    scratch.append_lines(
        "in.ndjson",
        &[line(1, "a"), line(2, "a"), line(3, "b"), line(1, "a")],
    );
    scratch.wait_for_lines("out.ndjson", 2);

    // A new file, renamed over the old: `b` now matches, `a` no longer.
    scratch.write("codes.tmp", "{\"code\":\"b\",\"v\":2}\n");
    std::fs::rename(scratch.path("codes.tmp"), scratch.path("codes.ndjson")).unwrap();
    daemon.wait_for("lookup table reloaded");
    scratch.append_lines("in.ndjson", &[line(4, "b"), line(5, "a")]);
    scratch.wait_for_lines("out.ndjson", 3);

    // A broken file: the table stays as it was.
    scratch.write("codes.tmp", "{\"code\":\"c\"}\nnot json\n");
    std::fs::rename(scratch.path("codes.tmp"), scratch.path("codes.ndjson")).unwrap();
    daemon.wait_for("lookup table file cannot be loaded, the old table stays");
    scratch.append_lines("in.ndjson", &[line(6, "b"), line(7, "c")]);
    scratch.wait_for_lines("out.ndjson", 4);

    let (_, body) = http(&addr, "GET", "/pipelines");
    let pipelines: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(pipelines[0]["records_duplicate"], 1);
    assert_eq!(pipelines[0]["records_unmatched"], 3, "3, 5 and 7");
    daemon.signal("TERM");
    let output = daemon.finish();
    assert_exit(&output, 0);
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(log.contains("line 2: invalid JSON"), "{log}");
    let mut got: Vec<(u64, Value)> = scratch
        .read_json("out.ndjson")
        .into_iter()
        .map(|r| (r["id"].as_u64().unwrap(), r["info"].clone()))
        .collect();
    got.sort_by_key(|(id, _)| *id);
    assert_eq!(
        got,
        vec![
            (1, json!({"code": "a", "v": 1})),
            (2, json!({"code": "a", "v": 1})),
            (4, json!({"code": "b", "v": 2})),
            (6, json!({"code": "b", "v": 2})),
        ]
    );
    assert_eq!(count(&output, "p", "duplicates"), 1);
    assert_eq!(count(&output, "p", "unmatched"), 3);
}

/// A keyed plugin's tables after a config reload (SIGHUP, same config): the
/// reload loads the tables again and watches the new ones' files, so the
/// running chain takes the new table slots (as a `join` does) — a later
/// change of the file reaches the plugin, which would otherwise keep reading
/// the old, no longer watched table.
#[test]
fn a_keyed_plugin_sees_a_changed_table_after_a_config_reload() {
    let config = Config::new()
        .table("tables.airports")
        .set_str("path", "airports.ndjson")
        .set_str("key", "/faa")
        .file_source("in", "in.ndjson")
        .follow()
        .key("/dest")
        .file_sink("out", "out.ndjson")
        .pipeline("p", "in", &["out"])
        .batch(r#"{ max_records = 10, interval = "10ms" }"#)
        .processor(r#"{ plugin = "dest_names.wasm" }"#);
    let scratch = Scratch::new(&config.build());
    scratch.write("airports.ndjson", "{\"faa\":\"XAA\",\"name\":\"One\"}\n");
    scratch.write("in.ndjson", "");
    let mut daemon = Running::start(scratch.command("run"));
    daemon.wait_for("pipeline started");
    scratch.append_lines("in.ndjson", &[r#"{"dest":"XAA"}"#.to_string()]);
    scratch.wait_for_lines("out.ndjson", 1);
    daemon.signal("HUP");
    daemon.wait_for("config reloaded");
    scratch.write("airports.tmp", "{\"faa\":\"XAA\",\"name\":\"Two\"}\n");
    std::fs::rename(
        scratch.path("airports.tmp"),
        scratch.path("airports.ndjson"),
    )
    .unwrap();
    daemon.wait_for("lookup table reloaded");
    scratch.append_lines("in.ndjson", &[r#"{"dest":"XAA"}"#.to_string()]);
    scratch.wait_for_lines("out.ndjson", 2);
    daemon.signal("TERM");
    let output = daemon.finish();
    assert_exit(&output, 0);
    let names: Vec<Value> = scratch
        .read_json("out.ndjson")
        .iter()
        .map(|r| r["dest_name"].clone())
        .collect();
    assert_eq!(names, [json!("One"), json!("Two")]);
    // The state (flights to XAA before) went on across the reload.
    let before: Vec<Value> = scratch
        .read_json("out.ndjson")
        .iter()
        .map(|r| r["before"].clone())
        .collect();
    assert_eq!(before, [json!(0), json!(1)]);
}

/// A config reload that changes only a keyed stage's settings applies
/// them (the chain is swapped, the state carried over): here
/// `state_memory` down to 16 KiB with `state_spill = false`, so that new
/// keys are refused while the old keys go on counting. The records come
/// right after the reload: the first of them already take the new chain.
#[test]
fn a_reload_that_changes_only_keyed_settings_applies_them() {
    let config = |extra: &str| {
        Config::new()
            .file_source("in", "in.ndjson")
            .follow()
            .key("/k")
            .file_sink("out", "out.ndjson")
            .file_sink("dlq", "dlq.ndjson")
            .pipeline("p", "in", &["out"])
            .dead_letter("dlq")
            .batch(r#"{ max_records = 50, interval = "10ms" }"#)
            .processor(&format!(
                r#"{{ plugin = "key_count.wasm", config = {{ pad_bytes = 1000 }}{extra} }}"#
            ))
            .build()
    };
    let scratch = Scratch::new(&config(""));
    scratch.write("in.ndjson", "");
    let mut daemon = Running::start(scratch.command("run"));
    daemon.wait_for("pipeline started");
    let keys = |from: usize, to: usize| -> Vec<String> {
        (from..to).map(|i| format!(r#"{{"k":"k{i}"}}"#)).collect()
    };
    scratch.append_lines("in.ndjson", &keys(0, 100));
    scratch.wait_for_lines("out.ndjson", 100);
    scratch.write_config(&config(r#", state_memory = "16KiB", state_spill = false"#));
    daemon.signal("HUP");
    daemon.wait_for("config reloaded");
    assert!(
        daemon
            .log
            .iter()
            .any(|l| l.contains("config reloaded") && l.contains("1 changed")),
        "{}",
        daemon.log.join("\n")
    );
    // 100 new keys (refused) and the first 50 again (counted on).
    let mut more = keys(100, 200);
    more.extend(keys(0, 50));
    scratch.append_lines("in.ndjson", &more);
    scratch.wait_for_lines("dlq.ndjson", 100);
    scratch.wait_for_lines("out.ndjson", 150);
    daemon.signal("TERM");
    let output = daemon.finish();
    assert_exit(&output, 0);
    let dead = scratch.read_json("dlq.ndjson");
    assert_eq!(dead.len(), 100);
    assert!(
        dead.iter()
            .all(|r| r["reason"].as_str().unwrap().contains("keyed state full")),
        "{}",
        dead[0]
    );
    let out = scratch.read_lines("out.ndjson");
    assert_eq!(out.len(), 150);
    assert!(
        out[100..].iter().all(|l| l == r#"{"n":2}"#),
        "{:?}",
        &out[100..]
    );
}

/// The keyed state's gauges on `/metrics`: keys (in memory and spilled),
/// spilled keys, bytes in memory, timers, spill failed — per pipeline, stage
/// and partition, reported at most once a second.
#[test]
fn keyed_state_gauges_show_the_keys_and_what_spilled() {
    let config = Config::new()
        .admin()
        .file_source("in", "in.ndjson")
        .follow()
        .key("/k")
        .file_sink("out", "out.ndjson")
        .pipeline("p", "in", &["out"])
        .batch(r#"{ max_records = 500, interval = "10ms" }"#)
        .processor(
            r#"{ plugin = "key_count.wasm", state_memory = "256KiB", config = { pad_bytes = 1000 } }"#,
        );
    let scratch = Scratch::new(&config.build());
    scratch.write("in.ndjson", "");
    let mut daemon = Running::start(scratch.command("run"));
    let addr = daemon.admin_addr();
    daemon.wait_for("pipeline started");
    let keys: Vec<String> = (0..2000).map(|i| format!(r#"{{"k":"k{i}"}}"#)).collect();
    scratch.append_lines("in.ndjson", &keys);
    scratch.wait_for_lines("out.ndjson", 2000);
    // Past the once-a-second report: one more record of a new key.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    scratch.append_lines("in.ndjson", &[r#"{"k":"last"}"#.to_string()]);
    scratch.wait_for_lines("out.ndjson", 2001);
    let (_, body) = http(&addr, "GET", "/metrics");
    let gauge = |name: &str| -> u64 {
        let prefix = format!("{name}{{pipeline=\"p\",stage=\"0:key_count\",partition=\"0\"}} ");
        body.lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .unwrap_or_else(|| panic!("no {prefix} in:\n{body}"))
            .parse()
            .unwrap()
    };
    assert_eq!(gauge("sluice_keyed_keys"), 2001);
    let spilled = gauge("sluice_keyed_spilled_keys");
    assert!(spilled > 1000 && spilled < 2001, "{spilled} spilled");
    let memory = gauge("sluice_keyed_memory_bytes");
    assert!(memory > 0 && memory <= 256 << 10, "{memory} bytes");
    assert_eq!(gauge("sluice_keyed_timers"), 0);
    assert_eq!(gauge("sluice_keyed_spill_failed"), 0);
    daemon.signal("TERM");
    assert_exit(&daemon.finish(), 0);
}

/// A Kafka lookup table whose broker does not answer keeps the daemon from
/// starting (up to a minute), but SIGTERM ends that wait at once: the
/// signal loop cannot run meanwhile, so the wait looks at a flag the signal
/// sets. The daemon exits 1, naming the table.
#[test]
fn sigterm_ends_the_wait_for_a_kafka_tables_broker() {
    let scratch = Scratch::new(
        &Config::new()
            .table("tables.airports")
            .set_str("topic", "airports")
            .set_str("brokers", "127.0.0.1:9")
            .file_source("in", "in.ndjson")
            .file_sink("out", "out.ndjson")
            .pipeline("p", "in", &["out"])
            .processor(r#"{ join = { table = "airports", on = "/dest", as = "/a" } }"#)
            .build(),
    );
    scratch.write("in.ndjson", "");
    let mut daemon = Running::start(scratch.command("run"));
    std::thread::sleep(std::time::Duration::from_millis(1500));
    assert!(daemon.child.try_wait().unwrap().is_none(), "still waiting");
    daemon.signal("TERM");
    daemon.exits_within(
        std::time::Duration::from_secs(10),
        "SIGTERM while waiting for the broker",
    );
    let output = daemon.finish();
    assert_exit(&output, 1);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("table `airports` (Kafka topic `airports`): a stop signal came"),
        "{stderr}"
    );
}

/// A keyed plugin that fails every call (here: it reads a table the config
/// does not have) is handled as a plain stage is: the first failure of a
/// batch is logged, the records that fail alone count toward the circuit
/// breaker, and once it opens the next batches go to the dead-letter sink
/// without a call, with the breaker's reason; nothing is lost.
#[test]
fn a_keyed_plugin_that_always_fails_trips_its_circuit_breaker() {
    let lines = flights_lines(1_000);
    let scratch = Scratch::new(
        &Config::new()
            .file_source("in", "in.ndjson")
            .key("/dest")
            .file_sink("out", "out.ndjson")
            .file_sink("dlq", "dlq.ndjson")
            .pipeline("p", "in", &["out"])
            .dead_letter("dlq")
            .batch(r#"{ max_records = 100, interval = "10ms" }"#)
            .processor(
                r#"{ plugin = "dest_names.wasm", circuit_breaker = { failures = 2, cooldown = "1h" } }"#,
            )
            .build(),
    );
    scratch.write("in.ndjson", &(lines.join("\n") + "\n"));
    let output = scratch.run();
    assert_exit(&output, 0);
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(
        log.contains("batch failed, isolating the records that cause it"),
        "{log}"
    );
    assert!(log.contains("circuit breaker opened"), "{log}");
    assert!(scratch.read_lines("out.ndjson").is_empty());
    let dead = scratch.read_json("dlq.ndjson");
    assert_eq!(dead.len(), 1_000, "every record dead-lettered once");
    let reason = |r: &Value| r["reason"].as_str().unwrap().to_string();
    assert!(
        reason(&dead[0]).contains("no table `airports`"),
        "{}",
        dead[0]
    );
    let refused = dead
        .iter()
        .filter(|r| reason(r).contains("circuit breaker open"))
        .count();
    // The first batch is bisected (the breaker opens within it); the nine
    // after it are refused whole.
    assert!(refused >= 900, "{refused} refused by the open breaker");
}

/// `sluice validate` loads the tables: a missing file, a key column the
/// header does not have, an unknown table and a dedup key that does not
/// route are located errors.
#[test]
fn validate_checks_tables_joins_and_dedup_keys() {
    let base = Config::new()
        .table("tables.airports")
        .set_str("path", "airports.csv")
        .set_str("key", "faa")
        .file_source("in", "in.ndjson")
        .key("/carrier")
        .file_sink("out", "out.ndjson")
        .pipeline("p", "in", &["out"]);
    let kafka = |extra: &[(&str, &str)]| {
        let mut c = Config::new()
            .table("tables.airports")
            .set_str("topic", "airports");
        for (k, v) in extra {
            c = c.set_str(k, v);
        }
        c.file_source("in", "in.ndjson")
            .key("/carrier")
            .file_sink("out", "out.ndjson")
            .pipeline("p", "in", &["out"])
            .processor(r#"{ join = { table = "airports", on = "/dest", as = "/a" } }"#)
    };
    let cases: [(Config, Option<&str>, &str, &str); 11] = [
        (
            kafka(&[("brokers", "")]),
            Some("brokers = \"\""),
            "`brokers` is empty",
            "host:port",
        ),
        (
            base.clone().processor(
                r#"{ dedup = { key = ["/carrier"], within = "1h" }, state_spill = true }"#,
            ),
            Some("state_spill = true"),
            "`state_spill` is for keyed processors",
            "not a built-in stage",
        ),
        // A Kafka table validates without a broker (it is read at start).
        (kafka(&[("brokers", "127.0.0.1:9")]), None, "", ""),
        (
            kafka(&[]),
            Some("topic = \"airports\""),
            "it needs `brokers`",
            "table `airports` reads a Kafka topic",
        ),
        (
            kafka(&[("brokers", "127.0.0.1:9"), ("path", "airports.csv")]),
            Some("path = \"airports.csv\""),
            "`path` is for a table read from a file",
            "not a Kafka `topic`",
        ),
        (
            base.clone()
                .table("tables.airports")
                .set_str("brokers", "127.0.0.1:9")
                .table("pipelines.p"),
            Some("brokers = \"127.0.0.1:9\""),
            "`brokers` is for a table read from a Kafka `topic`",
            "",
        ),
        (
            base.clone()
                .processor(r#"{ join = { table = "airports", on = "/dest", as = "/a" } }"#),
            None,
            "",
            "",
        ),
        (
            base.clone()
                .table("tables.airports")
                .set_str("path", "nowhere.csv")
                .table("pipelines.p"),
            Some("path = \"nowhere.csv\""),
            "cannot read",
            "nowhere.csv",
        ),
        (
            base.clone().table("tables.airports").set_str("key", "code"),
            Some("key = \"code\""),
            "key column `code` is not in the header",
            "columns: faa, name",
        ),
        (
            base.clone()
                .processor(r#"{ join = { table = "airport", on = "/dest", as = "/a" } }"#),
            Some("table = \"airport\""),
            "no table named `airport`",
            "known: `airports`",
        ),
        (
            base.clone()
                .partitions(2)
                .processor(r#"{ dedup = { key = ["/flight"], within = "1h" } }"#),
            Some("key = [\"/flight\"]"),
            "dedup state is kept per partition",
            "now `/carrier`",
        ),
    ];
    for (config, line, message, detail) in cases {
        let text = config.build();
        let scratch = Scratch::new(&text);
        scratch.write("airports.csv", "faa,name\nJFK,Kennedy\n");
        scratch.write("in.ndjson", "");
        let output = scratch.command("validate").output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        match line {
            None => assert_exit(&output, 0),
            Some(needle) => {
                assert_exit(&output, 2);
                let at = format!("sluice.toml:{}:", line_of(&text, needle));
                assert!(stderr.contains(&at), "{at} in:\n{stderr}");
                assert!(stderr.contains(message), "{message:?} in:\n{stderr}");
                assert!(stderr.contains(detail), "{detail:?} in:\n{stderr}");
            }
        }
    }
}

/// A keyed plugin reads a lookup table through the host's `tables` import
/// (`plugins/dest-names`, `KeyedContext::lookup` in the Rust SDK): each of
/// 20,000 flights, keyed by destination on 2 partitions, gets its airport's
/// name from `[tables.airports]` (null for a code the table lacks) and the
/// number of flights to it before; the ground truth reads the CSV by hand.
#[test]
fn a_keyed_plugin_reads_a_lookup_table() {
    let lines = flights_lines(20_000);
    let mut want = dest_names_truth(&lines);
    want.sort();
    let unnamed = want
        .iter()
        .filter(|r| r.contains("\"dest_name\":null"))
        .count();
    assert!(
        unnamed > 0 && unnamed < want.len(),
        "{unnamed} of {}",
        want.len()
    );
    let scratch = Scratch::new(
        &Config::new()
            .table("tables.airports")
            .set_str(
                "path",
                repo().join("examples/data/airports.csv").to_str().unwrap(),
            )
            .set_str("key", "faa")
            .file_source("in", "in.ndjson")
            .key("/dest")
            .timestamp("/event_time")
            .file_sink("out", "out.ndjson")
            .pipeline("p", "in", &["out"])
            .partitions(2)
            .processor(r#"{ plugin = "dest_names.wasm" }"#)
            .build(),
    );
    scratch.write("in.ndjson", &(lines.join("\n") + "\n"));
    let output = scratch.run();
    assert_exit(&output, 0);
    let mut got: Vec<String> = scratch
        .read_json("out.ndjson")
        .iter()
        .map(Value::to_string)
        .collect();
    got.sort();
    assert_eq!(got.len(), want.len());
    assert!(
        got == want,
        "first difference: {:?}",
        got.iter().zip(&want).find(|(g, w)| g != w)
    );
}

/// `sluice plugin run --table`: the same plugin over 2,000 flights, with
/// the table given on the command line instead of a daemon's config; in
/// input order (one partition), checked against the CSV read by hand. A
/// `--table` for a plugin that is not keyed, a missing file and a key column
/// the header lacks are refused (exit 2 for the arguments).
#[test]
fn plugin_run_gives_a_keyed_plugin_its_tables() {
    let lines = flights_lines(2_000);
    let want = dest_names_truth(&lines);
    let scratch = Scratch::new("");
    scratch.write("in.ndjson", &(lines.join("\n") + "\n"));
    let airports = repo().join("examples/data/airports.csv");
    let run = |plugin: &str, table: &str| {
        std::process::Command::new(sluice_bin())
            .args(["plugin", "run"])
            .arg(plugins_dir().join(plugin))
            .args(["--key", "/dest", "--table", table])
            .stdin(std::fs::File::open(scratch.path("in.ndjson")).unwrap())
            .output()
            .unwrap()
    };
    let output = run(
        "dest_names.wasm",
        &format!("airports={},key=faa", airports.display()),
    );
    assert_exit(&output, 0);
    let got: Vec<String> = String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap().to_string())
        .collect();
    assert!(
        got == want,
        "{} lines, {} wanted; first difference: {:?}",
        got.len(),
        want.len(),
        got.iter().zip(&want).find(|(g, w)| g != w)
    );
    for (plugin, table, message) in [
        (
            "identity.wasm",
            format!("airports={},key=faa", airports.display()),
            "--table is for keyed processors",
        ),
        (
            "dest_names.wasm",
            "airports=missing.csv,key=faa".to_string(),
            "--table airports: missing.csv: cannot read",
        ),
        (
            "dest_names.wasm",
            format!("airports={},key=code", airports.display()),
            "key column `code` is not in the header",
        ),
        (
            "dest_names.wasm",
            "airports".to_string(),
            "expected NAME=PATH,key=KEY",
        ),
    ] {
        let output = run(plugin, &table);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(message), "{table}: {stderr}");
        assert_ne!(output.status.code(), Some(0), "{table}: {stderr}");
    }
}
