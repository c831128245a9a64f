//! Where the time of a Wasm stage goes, and what each plugin language costs: a
//! custom measurement (no criterion: it covers every combination in about a
//! minute), for `bench/run.py`.
//!
//! `cargo bench -p sluice --bench wasm_cost` — environment:
//! - `WASM_COST_PLUGINS`: `label=path.wasm,…` extra components of the
//!   flights_delay logic (the Python, JavaScript and C ones, or an older build of
//!   the Rust one); the Rust identity and flights_delay components come from
//!   runtime/build.rs;
//! - `WASM_COST_SIZES`: batch sizes (default `1,4,16,64,256,1024,4096,16384`);
//! - `WASM_COST_BUDGET_MS`: time per cell and round (default 150);
//! - `WASM_COST_ROUNDS`: rounds (default 3); each round runs every implementation
//!   once per size, in turn (A B C … A B C …), the figure is the median of rounds;
//! - `WASM_COST_SHAPES`: record shapes (default `small,1kb`; also `flight`).
//!
//! *native flights_delay (serde only)* is the plugin's serde_json path alone (its
//! code before the SDK's field scanner), beside the plugin as it is.
//!
//! Records: real flights (examples/data), as two shapes: `small`, the seven
//! fields flights_delay reads (~125 bytes, the smallest valid flight), and `1kb`,
//! the whole flight padded with a `note` field to 1,024 bytes; and, when asked
//! for, `flight`, each flight as it is in the file (~430 bytes, 24 fields). Prints one JSON
//! object per cell on stdout: impl, shape, batch, records_per_s (median), rounds;
//! and, per shape, the host's own per-record work before any plugin sees a record
//! (the source's decode of key and event time, `"impl": "host decode"`, batch 0).

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sluice::decode::{Decoder, Pointer};
use sluice::wasm::plugin::{Instance, Limits, LogTags, PluginHost};
use sluice_plugin_sdk::{Batch, Config, Output, Processor};

fn flights(n: usize) -> Vec<serde_json::Value> {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/data/flights-2013.ndjson.gz");
    let file = std::fs::File::open(path).unwrap();
    std::io::BufReader::new(flate2::read::MultiGzDecoder::new(file))
        .lines()
        .take(n)
        .map(|l| serde_json::from_str(&l.unwrap()).unwrap())
        .collect()
}

fn shape(flights: &[serde_json::Value], kind: &str) -> Vec<(String, String, i64)> {
    flights
        .iter()
        .map(|f| {
            let carrier = f["carrier"].as_str().unwrap().to_string();
            let ts = f["event_time_ms"].as_i64().unwrap();
            let value = match kind {
                "small" => serde_json::json!({
                    "carrier": f["carrier"], "flight": f["flight"], "origin": f["origin"],
                    "dest": f["dest"], "dep_delay": f["dep_delay"], "arr_delay": f["arr_delay"],
                    "event_time": f["event_time"],
                })
                .to_string(),
                "flight" => f.to_string(),
                _ => {
                    let mut obj = f.clone();
                    let base = obj.to_string().len() + r#","note":"""#.len();
                    obj["note"] = "x".repeat(1024usize.saturating_sub(base)).into();
                    obj.to_string()
                }
            };
            (carrier, value, ts)
        })
        .collect()
}

fn batch_of(records: &[(String, String, i64)], size: usize, offset: usize) -> Batch {
    let mut batch = Batch::with_capacity(size, size * records[0].1.len());
    for i in 0..size {
        let (k, v, t) = &records[(offset + i) % records.len()];
        batch.push(Some(k.as_bytes()), v.as_bytes(), *t);
    }
    batch
}

enum Impl {
    Native(Box<dyn FnMut(&Batch) -> usize>),
    Wasm(Instance),
}

impl Impl {
    fn run(&mut self, batch: &mut Batch) -> usize {
        match self {
            Impl::Native(f) => f(batch),
            Impl::Wasm(i) => i.process(batch).unwrap().events.len(),
        }
    }
}

fn native<P: Processor + 'static>(config: &[(String, String)]) -> Impl {
    let mut p = P::configure(&Config::from_pairs(config.to_vec())).unwrap();
    Impl::Native(Box::new(move |batch: &Batch| {
        let mut out = Output::with_capacity(batch.len(), batch.values_len());
        p.process(batch, &mut out).unwrap();
        out.events.len()
    }))
}

fn wasm(host: &PluginHost, path: &Path, config: &[(String, String)]) -> Impl {
    let limits = Limits {
        memory_bytes: 2 << 30,
        timeout: Duration::from_secs(120),
    };
    let plugin = host
        .load(path)
        .unwrap_or_else(|e| panic!("{}: {e:#}", path.display()));
    Impl::Wasm(
        plugin
            .instantiate(config, limits, LogTags::default())
            .unwrap(),
    )
}

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else is taken from the command line.
    let sizes: Vec<usize> = env_or("WASM_COST_SIZES", "1,4,16,64,256,1024,4096,16384")
        .split(',')
        .map(|s| s.trim().parse().unwrap())
        .collect();
    let budget = Duration::from_millis(env_or("WASM_COST_BUDGET_MS", "150").parse().unwrap());
    let rounds: usize = env_or("WASM_COST_ROUNDS", "3").parse().unwrap();
    let plugins = PathBuf::from(env!("SLUICE_PLUGINS_DIR"));
    let fd_config = vec![("min_delay".to_string(), "15".to_string())];
    let host = PluginHost::new().unwrap();
    let bare = PluginHost::without_deadlines_for_benchmarks().unwrap();

    let mut impls: Vec<(String, Impl)> = vec![
        ("native identity".into(), native::<identity::Identity>(&[])),
        (
            "wasm identity (rust)".into(),
            wasm(&host, &plugins.join("identity.wasm"), &[]),
        ),
        (
            "native flights_delay".into(),
            native::<flights_delay::FlightsDelay>(&fd_config),
        ),
        (
            "native flights_delay (serde only)".into(),
            native::<flights_delay::SerdeOnly>(&fd_config),
        ),
        (
            "wasm flights_delay (rust)".into(),
            wasm(&host, &plugins.join("flights_delay.wasm"), &fd_config),
        ),
        (
            "wasm flights_delay (rust, no epoch)".into(),
            wasm(&bare, &plugins.join("flights_delay.wasm"), &fd_config),
        ),
    ];
    for item in env_or("WASM_COST_PLUGINS", "")
        .split(',')
        .filter(|s| !s.is_empty())
    {
        let (label, path) = item.split_once('=').expect("label=path");
        eprintln!("wasm_cost: compiling {label} ({path})");
        impls.push((
            format!("wasm flights_delay ({label})"),
            wasm(&host, Path::new(path), &fd_config),
        ));
    }

    let max = *sizes.iter().max().unwrap();
    let all = flights(max.max(4096));
    for kind in env_or("WASM_COST_SHAPES", "small,1kb").split(',') {
        let kind = kind.trim();
        let records = shape(&all, kind);
        let bytes = records.iter().map(|r| r.1.len()).sum::<usize>() / records.len();
        let decoder = Decoder::new(
            Some(Pointer::parse("/carrier").unwrap()),
            Some(Pointer::parse("/event_time").unwrap()),
        );
        let mut rates = Vec::new();
        for _ in 0..rounds {
            let mut n = 0usize;
            let t0 = Instant::now();
            while t0.elapsed() < budget {
                for r in &records {
                    std::hint::black_box(decoder.decode(r.1.as_bytes()).unwrap());
                }
                n += records.len();
            }
            rates.push(n as f64 / t0.elapsed().as_secs_f64());
        }
        rates.sort_by(f64::total_cmp);
        println!(
            "{}",
            serde_json::json!({
                "impl": "host decode", "shape": kind, "avg_bytes": bytes, "batch": 0,
                "records_per_s": rates[rates.len() / 2], "rounds": rates,
            })
        );
        for &size in &sizes {
            let mut rates: Vec<Vec<f64>> = vec![Vec::new(); impls.len()];
            for _ in 0..rounds {
                for (i, (_, imp)) in impls.iter_mut().enumerate() {
                    let mut batch = batch_of(&records, size, 0);
                    imp.run(&mut batch); // warm
                    let mut n = 0usize;
                    let t0 = Instant::now();
                    while t0.elapsed() < budget {
                        imp.run(&mut batch);
                        n += size;
                    }
                    rates[i].push(n as f64 / t0.elapsed().as_secs_f64());
                }
            }
            for (i, (label, _)) in impls.iter().enumerate() {
                let mut r = rates[i].clone();
                r.sort_by(f64::total_cmp);
                println!(
                    "{}",
                    serde_json::json!({
                        "impl": label, "shape": kind, "avg_bytes": bytes, "batch": size,
                        "records_per_s": r[r.len() / 2], "rounds": r,
                    })
                );
            }
            eprintln!("wasm_cost: {kind} batch {size} done");
        }
    }
}
