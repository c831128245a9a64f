//! Keyed processors (the `sluice:plugin/keyed-processor@0.2.0` world, whose
//! per-key state and timers the host owns): `examples/keyed` — the
//! `plane_gaps` plugin over the real flights, keyed by tail number — checked
//! against ground truth computed here from the input by the documented rules
//! (not by sluice's code); the same job killed with SIGKILL five times with
//! checkpoints, and a plugin swapped 20 times under load, each giving that
//! same output; and what `validate` refuses.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde_json::{Value, json};

use crate::checkpoints::kill_9_repeatedly;
use crate::support::*;

/// The example's `idle_minutes`: 7 days.
const IDLE_MS: i64 = 10_080 * 60_000;

fn repo() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A record, its object's keys sorted, as text: to compare outputs as sets
/// whatever the order of a record's fields.
pub(crate) fn canonical(value: &Value) -> String {
    fn sort(v: &Value) -> Value {
        match v {
            Value::Object(m) => {
                let sorted: BTreeMap<&String, Value> =
                    m.iter().map(|(k, v)| (k, sort(v))).collect();
                json!(sorted)
            }
            Value::Array(a) => Value::Array(a.iter().map(sort).collect()),
            other => other.clone(),
        }
    }
    sort(value).to_string()
}

/// What `examples/keyed` must write, from the flights `lines` (in file
/// order), with `partitions` partition workers: (the output records,
/// canonical and sorted; the number of records without a tail number).
///
/// The rules, as the book states them (docs/concepts/state.md):
/// - a record goes to partition `toPositive(murmur2(key)) % partitions`
///   (Kafka's default partitioner), a record without a key round-robin;
/// - a partition's watermark is the largest event time it has seen (the
///   example's `watermark = "0s"`), record by record;
/// - an event-time timer fires once the watermark reaches its time, after
///   the record that moved it there; at the end of the input every timer
///   fires;
/// - the plugin: a cancelled flight passes unchanged; any other departure
///   gets `minutes_since_prev` (whole minutes since the plane's previous
///   departure, null for its first), replaces the plane's timer by one at
///   its time + 7 days; a timer emits an idle record.
pub(crate) fn expected(lines: &[String], partitions: usize) -> (Vec<String>, usize) {
    let (out, keyless) = expected_in_order(lines, partitions);
    let mut out: Vec<String> = out.iter().map(canonical).collect();
    out.sort_unstable();
    (out, keyless)
}

/// [`expected`]'s records in the order the rules give them (each key's
/// records in its order; the order between partitions is free).
pub(crate) fn expected_in_order(lines: &[String], partitions: usize) -> (Vec<Value>, usize) {
    #[derive(Default)]
    struct Partition {
        max_ts: Option<i64>,
        timers: BTreeSet<(i64, String)>,
        last: HashMap<String, i64>,
    }
    let idle = |plane: &str, last: i64, at: i64| json!({"event": "idle", "tailnum": plane, "last_departure_ms": last, "idle_at_ms": at});
    let mut parts: Vec<Partition> = (0..partitions).map(|_| Partition::default()).collect();
    let mut out = Vec::new();
    let mut keyless = 0;
    let mut next_keyless = 0;
    for line in lines {
        let mut r: Value = serde_json::from_str(line).unwrap();
        let ts = chrono::DateTime::parse_from_rfc3339(r["event_time"].as_str().unwrap())
            .unwrap()
            .timestamp_millis();
        let plane = r["tailnum"].as_str().map(str::to_string);
        let p = match &plane {
            Some(k) => {
                (sluice::source::router::murmur2(k.as_bytes()) & 0x7fff_ffff) as usize % partitions
            }
            None => {
                let p = next_keyless;
                next_keyless = (p + 1) % partitions;
                p
            }
        };
        let part = &mut parts[p];
        part.max_ts = Some(part.max_ts.map_or(ts, |m| m.max(ts)));
        match plane {
            None => keyless += 1,
            Some(_) if r["cancelled"] == true => out.push(r),
            Some(k) => {
                let prev = part.last.insert(k.clone(), ts);
                r["minutes_since_prev"] = prev.map_or(Value::Null, |l| json!((ts - l) / 60_000));
                if let Some(l) = prev {
                    part.timers.remove(&(l + IDLE_MS, k.clone()));
                }
                part.timers.insert((ts + IDLE_MS, k));
                out.push(r);
            }
        }
        let watermark = part.max_ts.unwrap();
        while let Some((at, k)) = part.timers.first().cloned()
            && at <= watermark
        {
            part.timers.pop_first();
            out.push(idle(&k, part.last[&k], at));
        }
    }
    for part in &mut parts {
        while let Some((at, k)) = part.timers.pop_first() {
            out.push(idle(&k, part.last[&k], at));
        }
    }
    (out, keyless)
}

/// The output file's records, canonical and sorted.
fn got(scratch: &Scratch, name: &str) -> Vec<String> {
    let mut got: Vec<String> = scratch.read_json(name).iter().map(canonical).collect();
    got.sort_unstable();
    got
}

/// Where two sorted outputs first differ, for a failed assertion.
fn first_difference(got: &[String], want: &[String]) -> String {
    let g: BTreeSet<&String> = got.iter().collect();
    let w: BTreeSet<&String> = want.iter().collect();
    format!(
        "{} records, {} expected; missing e.g. {:?}; unexpected e.g. {:?}",
        got.len(),
        want.len(),
        w.difference(&g).next(),
        g.difference(&w).next()
    )
}

/// `examples/keyed/sluice.toml` with its paths in a scratch folder, reading
/// `input` (a path), plus `extra` lines at the end of the pipeline.
fn example_config(input: &str, extra: &str) -> String {
    let example = std::fs::read_to_string(repo().join("examples/keyed/sluice.toml")).unwrap();
    let config = example
        .replace(
            "\"${CARGO_TARGET_DIR:-../../target}/plugins\"",
            "\"@PLUGINS@\"",
        )
        .replace("\"../../target/state-planes\"", "\"state\"")
        .replace("\"../data/flights-2013.ndjson.gz\"", &format!("{input:?}"))
        .replace("\"../../target/planes-out/", "\"out/");
    assert!(
        config.contains("@PLUGINS@")
            && config.contains("\"out/planes.ndjson\"")
            && config.ends_with("dead_letter = \"no_tailnum\"\n"),
        "the example config changed shape"
    );
    format!("{config}{extra}")
}

/// `examples/keyed` on all the flights: every departure with its minutes
/// since the plane's previous one, the idle records where the rules put
/// them, the flights without a tail number dead-lettered.
#[test]
fn keyed_example_matches_ground_truth() {
    let lines = flights_lines(usize::MAX);
    let (want, keyless) = expected(&lines, 2);
    assert_eq!(keyless, 2_512, "the bundled data");
    let scratch = Scratch::new(&example_config(flights_gz().to_str().unwrap(), ""));
    let output = scratch.run();
    assert_exit(&output, 0);
    assert_eq!(count(&output, "planes", "in"), 336_776);
    assert_eq!(count(&output, "planes", "rejected"), keyless as u64);
    let got = got(&scratch, "out/planes.ndjson");
    assert!(got == want, "{}", first_difference(&got, &want));
    let dead = scratch.read_json("out/no-tailnum.ndjson");
    assert_eq!(dead.len(), keyless);
    assert!(
        dead[0]["reason"]
            .as_str()
            .unwrap()
            .contains("no record key"),
        "{}",
        dead[0]
    );
    // Sanity of the ground truth itself: planes do sit idle for a week.
    let idle_mid_year = want
        .iter()
        .filter(|r| r.contains("\"event\":\"idle\"") && !r.contains("\"idle_at_ms\":13885"))
        .count();
    assert!(idle_mid_year > 1_000, "{idle_mid_year} idle records");
}

/// The example with checkpoints every 50 ms, killed with SIGKILL five times
/// at random points and restarted: the output is the ground truth — no state
/// transition lost or applied twice, no timer lost or fired twice.
#[test]
fn keyed_state_survives_kill_9_with_checkpoints() {
    let lines = flights_lines(usize::MAX);
    let (want, _) = expected(&lines, 2);
    let scratch = Scratch::new(&example_config(
        flights_gz().to_str().unwrap(),
        "checkpoint = { interval = \"50ms\" }\n",
    ));
    // The job takes ~10 s in a debug build here with these checkpoints (each
    // 270–380 ms): five pauses of up to 600 ms after the first run's first
    // checkpoint leave it unfinished.
    let (kills, resumed_with_state) = kill_9_repeatedly(&scratch, 5, 150..600, |log| {
        log.contains("resuming from checkpoint") && !log.contains("keyed_keys=0 ")
    });
    assert!(kills >= 5, "the job finished after {kills} kill(s)");
    assert!(
        resumed_with_state >= 2,
        "only {resumed_with_state} restarts resumed a keyed state"
    );
    let output = scratch.run();
    assert_exit(&output, 0);
    let got = got(&scratch, "out/planes.ndjson");
    assert!(got == want, "{}", first_difference(&got, &want));
}

/// The example with `state_memory` below what its planes take (~530 KB a
/// partition, timers included), checkpoints every 50 ms, killed twice: the
/// states spill to disk and are read back, and checkpoints save them
/// (spilled ones included), so the output is still the ground truth.
#[test]
fn keyed_state_past_state_memory_spills_and_survives_kill_9() {
    let lines = flights_lines(usize::MAX);
    let (want, _) = expected(&lines, 2);
    let config = example_config(
        flights_gz().to_str().unwrap(),
        "checkpoint = { interval = \"50ms\" }\n",
    )
    .replace(
        "watermark = \"0s\" }",
        "watermark = \"0s\", state_memory = \"384KiB\" }",
    );
    assert!(
        config.contains("384KiB"),
        "the example config changed shape"
    );
    let scratch = Scratch::new(&config);
    // Two pauses of at most 1 s: the job (~4 s without spilling) stays
    // unfinished however quiet the machine.
    let (kills, _) = kill_9_repeatedly(&scratch, 2, 200..1000, |_| true);
    assert!(kills >= 2, "the job finished after {kills} kill(s)");
    let output = scratch.run();
    assert_exit(&output, 0);
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(
        log.contains("the least recently used states spill to disk"),
        "{log}"
    );
    let got = got(&scratch, "out/planes.ndjson");
    assert!(got == want, "{}", first_difference(&got, &want));
}

/// A million keys, far more state than `state_memory` (8 MiB against
/// ~330 MB held in memory): `plugins/key-count` counts each key's records
/// with a 100-byte filler in its state, over every key once, then every
/// tenth key again. The states spill to disk and are read back: the first
/// pass gives n=1 for every record, the second n=2, in input order (one
/// partition).
#[test]
fn a_million_keys_spill_past_state_memory_and_count_right() {
    const KEYS: usize = 1_000_000;
    let mut input = String::with_capacity(KEYS * 30);
    for i in 0..KEYS {
        input.push_str(&format!("{{\"k\":\"k{i:07}\"}}\n"));
    }
    for i in (0..KEYS).step_by(10) {
        input.push_str(&format!("{{\"k\":\"k{i:07}\"}}\n"));
    }
    let scratch = Scratch::new(
        &Config::new()
            .file_source("in", "in.ndjson")
            .key("/k")
            .file_sink("out", "out.ndjson")
            .pipeline("p", "in", &["out"])
            .processor(
                r#"{ plugin = "key_count.wasm", state_memory = "8MiB", config = { pad_bytes = 100 } }"#,
            )
            .build(),
    );
    scratch.write("in.ndjson", &input);
    let output = scratch.run();
    assert_exit(&output, 0);
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(
        log.contains("the least recently used states spill to disk"),
        "{log}"
    );
    let out = std::fs::read_to_string(scratch.path("out.ndjson")).unwrap();
    let mut lines = out.lines();
    let first = lines
        .by_ref()
        .take(KEYS)
        .filter(|l| *l == r#"{"n":1}"#)
        .count();
    let second = lines.by_ref().filter(|l| *l == r#"{"n":2}"#).count();
    assert_eq!((first, second), (KEYS, KEYS / 10));
    assert_eq!(out.lines().count(), KEYS + KEYS / 10);
}

/// `wasm` with a custom section appended: a valid component with other
/// bytes — another build of the same logic.
fn another_build(wasm: &[u8]) -> Vec<u8> {
    let name = b"sluice-test-build";
    let mut section = vec![name.len() as u8];
    section.extend_from_slice(name);
    section.push(b'2');
    let mut out = wasm.to_vec();
    out.push(0); // custom section id
    out.push(section.len() as u8); // size (< 128: one LEB128 byte)
    out.extend(section);
    out
}

/// A followed input fed in 20 parts, the plugin swapped to another build
/// after each (two builds, in turn): every swap is taken up with every
/// plane's state, so the output is the ground truth of a run without swaps.
#[test]
fn twenty_hot_swaps_under_load_carry_the_state_over() {
    let lines = flights_lines(60_000);
    let (want, _) = expected(&lines, 2);
    let config = example_config("in.ndjson", "")
        .replace(
            "type = \"file\"\npath = \"in.ndjson\"",
            "type = \"file\"\npath = \"in.ndjson\"\nfollow = true",
        )
        .replace("@PLUGINS@", "plugins");
    assert!(config.contains("follow = true"));
    let scratch = Scratch::new(&config);
    std::fs::create_dir(scratch.path("plugins")).unwrap();
    let builds = {
        let one = std::fs::read(plugins_dir().join("plane_gaps.wasm")).unwrap();
        let two = another_build(&one);
        [one, two]
    };
    std::fs::write(scratch.path("plugins/plane_gaps.wasm"), &builds[0]).unwrap();
    scratch.write("in.ndjson", "");
    let mut daemon = Running::start(scratch.command("run"));
    daemon.wait_for("pipeline started");
    let parts: Vec<&[String]> = lines.chunks(lines.len() / 20).collect();
    for (i, part) in parts.iter().enumerate() {
        scratch.append_lines("in.ndjson", part);
        if i < 20 {
            let next = &builds[(i + 1) % 2];
            std::fs::write(scratch.path("swap.tmp"), next).unwrap();
            std::fs::rename(
                scratch.path("swap.tmp"),
                scratch.path("plugins/plane_gaps.wasm"),
            )
            .unwrap();
            daemon.wait_for_count("plugin reloaded", i + 1);
        }
    }
    // Every departure is out once the input is read (the idle records of
    // the end come with the stop).
    let departures = want
        .iter()
        .filter(|r| !r.contains("\"event\":\"idle\""))
        .count();
    scratch.wait_for_lines("out/planes.ndjson", departures);
    daemon.signal("TERM");
    let output = daemon.finish();
    assert_exit(&output, 0);
    let log = String::from_utf8_lossy(&output.stderr);
    assert_eq!(log.matches("plugin reloaded").count(), 20, "{log}");
    let got = got(&scratch, "out/planes.ndjson");
    assert!(got == want, "{}", first_difference(&got, &want));
}

/// What `validate` refuses about keyed processors, each at its line.
#[test]
fn validate_refuses_keyed_settings_where_they_cannot_work() {
    let base = |source: &str, processor: &str, partitions: usize| {
        format!(
            "[daemon]\nplugins_dir = \"@PLUGINS@\"\n{source}\n[sinks.out]\ntype = \"stdout\"\n[pipelines.p]\nsource = \"s\"\nsinks = [\"out\"]\npartitions = {partitions}\nprocessors = [\n  {processor},\n]\n"
        )
    };
    let file = "[sources.s]\ntype = \"file\"\npath = \"in.ndjson\"";
    let cases = [
        (
            base(file, r#"{ plugin = "plane_gaps.wasm" }"#, 2),
            "the source needs a `key`",
        ),
        (
            base(file, r#"{ plugin = "plane_gaps.wasm" }"#, 1),
            "without one every record would be refused",
        ),
        (
            base(file, r#"{ plugin = "identity.wasm", state_ttl = "1h" }"#, 1),
            "`state_ttl` is for keyed processors",
        ),
        (
            base(
                "[sources.s]\ntype = \"kafka\"\nbrokers = \"127.0.0.1:9\"\ntopics = [\"t\"]\ngroup_id = \"g\"\npartition_by = \"key\"",
                r#"{ plugin = "plane_gaps.wasm" }"#,
                2,
            ),
            "the Kafka source must keep partition_by = \"source\"",
        ),
    ];
    for (config, message) in cases {
        let scratch = Scratch::new(&config);
        scratch.write("in.ndjson", "");
        let output = scratch.command("validate").output().unwrap();
        assert_exit(&output, 2);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(message), "{message}: {stderr}");
        let at = format!("sluice.toml:{}:", line_of(&config, "plugin = "));
        assert!(stderr.contains(&at), "{at} in:\n{stderr}");
    }
    // On Kafka (keyed by the message key, or by a `key` pointer), the state
    // is kept per Kafka partition: it validates.
    for key in ["", "\nkey = \"/tailnum\"\nformat = \"json\""] {
        let ok = base(
            &format!(
                "[sources.s]\ntype = \"kafka\"\nbrokers = \"127.0.0.1:9\"\ntopics = [\"t\"]\ngroup_id = \"g\"{key}"
            ),
            r#"{ plugin = "plane_gaps.wasm" }"#,
            2,
        );
        let scratch = Scratch::new(&ok);
        let output = scratch.command("validate").output().unwrap();
        assert_exit(&output, 0);
    }
    // Keyed by tail number, the same plugin validates with 2 partitions.
    let ok = base(
        "[sources.s]\ntype = \"file\"\npath = \"in.ndjson\"\nkey = \"/tailnum\"",
        r#"{ plugin = "plane_gaps.wasm", state_ttl = "30d", watermark = "10m", state_memory = "64MiB" }"#,
        2,
    );
    let scratch = Scratch::new(&ok);
    scratch.write("in.ndjson", "");
    let output = scratch.command("validate").output().unwrap();
    assert_exit(&output, 0);
}

/// `sluice plugin run` over a keyed plugin: the departures and idle records
/// of a few flights, and each plane's state printed at the end.
#[test]
fn plugin_run_runs_a_keyed_plugin_and_prints_its_state() {
    let lines = [
        r#"{"tailnum":"N1","event_time":"2013-01-01T10:00:00Z","cancelled":false}"#,
        r#"{"tailnum":"N2","event_time":"2013-01-01T11:00:00Z","cancelled":false}"#,
        r#"{"tailnum":"N1","event_time":"2013-01-01T12:30:00Z","cancelled":false}"#,
        r#"{"tailnum":"N2","event_time":"2013-01-20T11:00:00Z","cancelled":true}"#,
        r#"{"tailnum":"N1","event_time":"2013-01-20T12:30:00Z","cancelled":false}"#,
    ];
    let scratch = Scratch::new("");
    scratch.write("in.ndjson", &(lines.join("\n") + "\n"));
    let output = std::process::Command::new(sluice_bin())
        .args(["plugin", "run"])
        .arg(plugins_dir().join("plane_gaps.wasm"))
        .args([
            "--key",
            "/tailnum",
            "--timestamp",
            "/event_time",
            "--batch",
            "2",
        ])
        .stdin(std::fs::File::open(scratch.path("in.ndjson")).unwrap())
        .output()
        .unwrap();
    assert_exit(&output, 0);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let out: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let (want, _) = expected(&lines.map(str::to_string), 1);
    let mut got: Vec<String> = out.iter().map(canonical).collect();
    got.sort_unstable();
    assert_eq!(got, want);
    let stderr = String::from_utf8_lossy(&output.stderr);
    // N1 last departed 2013-01-20T12:30Z, N2 2013-01-01T11:00Z.
    assert!(
        stderr.contains("state: N1 = {\"last_ms\":1358685000000}"),
        "{stderr}"
    );
    assert!(
        stderr.contains("state: N2 = {\"last_ms\":1357038000000}"),
        "{stderr}"
    );
    assert!(
        stderr.contains("state: 2 key(s), 0 timer(s) left"),
        "{stderr}"
    );
}

/// WIT 0.1.0 is frozen and still served: a processor built against it (the
/// identity plugin) and a keyed processor built against 0.2.0 run in one
/// chain, and the output is the keyed plugin's ground truth.
#[test]
fn components_of_wit_0_1_0_and_0_2_0_run_in_one_chain() {
    let lines = flights_lines(5_000);
    let (want, _) = expected(&lines, 1);
    let scratch = Scratch::new(
        &Config::new()
            .file_source("f", "in.ndjson")
            .key("/tailnum")
            .timestamp("/event_time")
            .file_sink("out", "out.ndjson")
            .file_sink("dlq", "dlq.ndjson")
            .pipeline("p", "f", &["out"])
            .partitions(1)
            .processor(r#"{ plugin = "identity.wasm" }"#)
            .processor(r#"{ plugin = "plane_gaps.wasm" }"#)
            .dead_letter("dlq")
            .build(),
    );
    scratch.write("in.ndjson", &(lines.join("\n") + "\n"));
    let output = scratch.run();
    assert_exit(&output, 0);
    let got = got(&scratch, "out.ndjson");
    assert!(got == want, "{}", first_difference(&got, &want));
    for (plugin, world) in [
        ("identity.wasm", "world:    sluice:plugin/processor@0.3.0\n"),
        (
            "plane_gaps.wasm",
            "world:    sluice:plugin/keyed-processor@0.2.0\n",
        ),
    ] {
        let check = std::process::Command::new(sluice_bin())
            .args(["plugin", "check"])
            .arg(plugins_dir().join(plugin))
            .output()
            .unwrap();
        assert_exit(&check, 0);
        let text = String::from_utf8_lossy(&check.stdout);
        assert!(text.contains(world), "{plugin}: {text}");
    }
}
