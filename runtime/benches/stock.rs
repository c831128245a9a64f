//! The stock plugins against the hand-written Rust filter, side by side in
//! one run: every flight (336,776, batches of 4,096) through each component
//! in the daemon's host (deadlines on), the cases alternated round by round
//! (A B C … A B C …, the order rotated), records/s and the ratio to the
//! hand-written plugin taken per round, medians over the rounds.
//!
//! `cargo bench -p sluice --bench stock` (`SLUICE_BENCH_ROUNDS`, default 7;
//! `SLUICE_BENCH_CASES=a,b`: only the cases whose name contains one of
//! these; `SLUICE_BENCH_GAIN=label=path.wasm[@way],…`: other builds of
//! flights_gain run beside the others; `SLUICE_BENCH_CLOCK=cpu`: the
//! thread's time on a CPU instead of the wall clock, for a busy machine;
//! `SLUICE_BENCH_REFERENCE`: the case the ratios are taken against,
//! by a part of its name, default the hand-written projection).
//!
//! Also the SDK's ways of writing one edit (`flights_gain`, `way = …`): the
//! template's record edit, the same with the edited fields named too, a
//! `serde_json::Map`
//! (the template before), and by hand with the field scanner.
//! Measures the Wasm stage alone (lowering the batch, the guest, lifting
//! its output), not the source's decode or the sinks.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sluice::wasm::plugin::{Limits, LogTags, PluginHost};
use sluice_plugin_sdk::Batch;

const BATCH: usize = 4096;

/// The seven fields `flights_delay` projects.
const SEVEN: &str =
    r#"["/carrier", "/flight", "/origin", "/dest", "/dep_delay", "/arr_delay", "/event_time"]"#;

struct Case {
    name: &'static str,
    file: &'static str,
    config: Vec<(&'static str, &'static str)>,
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "flights_delay, min_delay 15 (hand-written; 72,914 out)",
            file: "flights_delay.wasm",
            config: vec![("min_delay", "15")],
        },
        Case {
            name: "flights_delay, min_delay -1e9 (hand-written projection; 328,521 out)",
            file: "flights_delay.wasm",
            config: vec![("min_delay", "-1e9")],
        },
        Case {
            name: "fields: keep the same 7 fields (336,776 out)",
            file: "stock/fields.wasm",
            config: vec![("keep", SEVEN)],
        },
        Case {
            name: "fields: drop 1 field (336,776 out)",
            file: "stock/fields.wasm",
            config: vec![("drop", "/tailnum")],
        },
        Case {
            name: "jq: flights_delay's filter and projection (72,914 out)",
            file: "stock/jq.wasm",
            config: vec![(
                "program",
                "select(.dep_delay != null and .dep_delay >= 15) | {carrier, flight, origin, dest, dep_delay, arr_delay, event_time}",
            )],
        },
        Case {
            name: "flights_gain, way edit: Record of the fields read + Edit, as the template (327,346 out)",
            file: "flights_gain.wasm",
            config: vec![("way", "edit")],
        },
        Case {
            name: "flights_gain, way edit-all-named: the edited fields named too (327,346 out)",
            file: "flights_gain.wasm",
            config: vec![("way", "edit-all-named")],
        },
        Case {
            name: "flights_gain, way serde: serde_json::Map + push_json, the template before (327,346 out)",
            file: "flights_gain.wasm",
            config: vec![("way", "serde")],
        },
        Case {
            name: "flights_gain, way scan: by hand with scan::fields and offsets (327,346 out)",
            file: "flights_gain.wasm",
            config: vec![("way", "scan")],
        },
        Case {
            name: "jq: carrier UA, with a route field (58,665 out)",
            file: "stock/jq.wasm",
            config: vec![(
                "program",
                r#"select(.carrier == "UA") | .route = .origin + "-" + .dest"#,
            )],
        },
    ]
}

/// `SLUICE_BENCH_GAIN=label=path.wasm[@way],…`: other builds of flights_gain
/// (an SDK change against the SDK before it), each run the template's way
/// (`way = edit`, or the way given) beside the cases above.
fn other_builds() -> Vec<Case> {
    let spec = std::env::var("SLUICE_BENCH_GAIN").unwrap_or_default();
    spec.split(',')
        .filter(|s| !s.is_empty())
        .map(|s| {
            let (label, path) = s.split_once('=').expect("SLUICE_BENCH_GAIN: label=path");
            let (path, way) = path.split_once('@').unwrap_or((path, "edit"));
            let leak = |s: &str| -> &'static str { Box::leak(s.into()) };
            Case {
                name: leak(&format!("flights_gain {label}, way {way} ({path})")),
                file: leak(path),
                config: vec![("way", leak(way))],
            }
        })
        .collect()
}

fn flights() -> Vec<String> {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/data/flights-2013.ndjson.gz");
    let file = std::fs::File::open(path).unwrap();
    std::io::BufReader::new(flate2::read::MultiGzDecoder::new(file))
        .lines()
        .map(Result::unwrap)
        .collect()
}

/// This thread's time on a CPU so far, in seconds: the first field of
/// Linux's `/proc/thread-self/schedstat` (nanoseconds), which a busy machine
/// does not inflate by the time the thread waits for a core. The guest runs
/// on the calling thread.
fn thread_cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat")
        .expect("SLUICE_BENCH_CLOCK=cpu needs Linux's /proc/thread-self/schedstat");
    let ns: f64 = stat
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .expect("schedstat: the first field is nanoseconds on a CPU");
    ns / 1e9
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing
    // of the kind and gets one quick round.
    let quick = !std::env::args().any(|a| a == "--bench");
    let rounds: usize = if quick {
        1
    } else {
        std::env::var("SLUICE_BENCH_ROUNDS")
            .ok()
            .and_then(|r| r.parse().ok())
            .unwrap_or(7)
    };
    let mut lines = flights();
    if quick {
        lines.truncate(BATCH);
    }
    let batches: Vec<Batch> = lines
        .chunks(BATCH)
        .map(|chunk| {
            let mut batch = Batch::with_capacity(chunk.len(), chunk.iter().map(String::len).sum());
            for (i, line) in chunk.iter().enumerate() {
                let carrier = &line[line.find("\"carrier\":\"").unwrap() + 11..][..2];
                batch.push(Some(carrier.as_bytes()), line.as_bytes(), i as i64);
            }
            batch
        })
        .collect();
    let host = PluginHost::new().unwrap();
    let plugins = PathBuf::from(env!("SLUICE_PLUGINS_DIR"));
    let limits = Limits {
        memory_bytes: 1 << 30,
        timeout: Duration::from_secs(60),
    };
    let only = std::env::var("SLUICE_BENCH_CASES").unwrap_or_default();
    let cases: Vec<Case> = cases()
        .into_iter()
        .chain(other_builds())
        .filter(|c| only.is_empty() || only.split(',').any(|o| c.name.contains(o)))
        .collect();
    let mut instances: Vec<_> = cases
        .iter()
        .map(|case| {
            let pairs: Vec<(String, String)> = case
                .config
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            // A path of its own (`SLUICE_BENCH_GAIN`) or one under the plugins folder.
            host.load(&plugins.join(case.file))
                .unwrap()
                .instantiate(&pairs, limits, LogTags::default())
                .unwrap()
        })
        .collect();
    let cpu_clock = std::env::var("SLUICE_BENCH_CLOCK").is_ok_and(|c| c == "cpu");
    let mut seconds: Vec<Vec<f64>> = vec![Vec::new(); cases.len()];
    let mut outputs = vec![0usize; cases.len()];
    // One warm-up pass each, then the rounds.
    for round in 0..=rounds {
        for k in 0..cases.len() {
            let c = (k + round) % cases.len();
            // The copies the calls take are made before the clock starts.
            let mut pass = batches.clone();
            let start = Instant::now();
            let cpu_start = cpu_clock.then(thread_cpu_seconds);
            let mut out = 0;
            for batch in &mut pass {
                let output = instances[c].process(batch).unwrap();
                assert!(output.rejected.is_empty(), "{}", cases[c].name);
                out += output.events.len();
            }
            let elapsed = match cpu_start {
                Some(cpu_start) => thread_cpu_seconds() - cpu_start,
                None => start.elapsed().as_secs_f64(),
            };
            outputs[c] = out;
            if round > 0 {
                seconds[c].push(elapsed);
            }
        }
    }
    let n = lines.len() as f64;
    // By default the hand-written projection of (nearly) every flight.
    let wanted = std::env::var("SLUICE_BENCH_REFERENCE")
        .unwrap_or_else(|_| "hand-written projection".to_string());
    let reference = cases
        .iter()
        .position(|c| c.name.contains(&wanted))
        .unwrap_or(0);
    println!(
        "{} flights, batches of {BATCH}, {rounds} rounds, medians; ratio = case time / reference time, per round; reference: {}",
        lines.len(),
        cases[reference].name
    );
    println!("| case | records/s | ns/record | out | time vs reference |");
    println!("|---|---:|---:|---:|---:|");
    for (c, case) in cases.iter().enumerate() {
        let t = median(seconds[c].clone());
        let ratio = median(
            seconds[c]
                .iter()
                .zip(&seconds[reference])
                .map(|(a, b)| a / b)
                .collect(),
        );
        println!(
            "| {} | {:.0} | {:.0} | {} | {:.2}× |",
            case.name,
            n / t,
            t / n * 1e9,
            outputs[c],
            ratio
        );
    }
}
