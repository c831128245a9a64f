//! What host-owned keyed state costs: `plane_gaps` (a keyed processor: the
//! host groups each batch by key, hands the states of the keys it touches to
//! the component and applies what changed, with an idle timer per plane)
//! against the same per-record logic as a plain processor keeping the planes
//! in its own instance (`plane_gaps_local`, a baseline that would be wrong in
//! a daemon: an instance can be recycled), each as a Wasm component and
//! natively. A custom measurement, no criterion.
//!
//! `cargo bench -p sluice --bench keyed` — environment: `KEYED_RECORDS`
//! (default 100000 flights, keyed by tail number), `KEYED_BATCH` (default
//! 4096), `KEYED_ROUNDS` (default 5). Each round runs every implementation
//! once over all the records, in turn (A B C D, A B C D, …); the figure is
//! the median of rounds, in ns per record, and the ratio to the fastest.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sluice::pipeline::keyed::{KeyedSpec, KeyedState};
use sluice::wasm::plugin::{Limits, LogTags, PluginHost};
use sluice_plugin_sdk::{Batch, Config, KeyedHarness, Output, Processor};

fn env_or(name: &str, default: &str) -> usize {
    std::env::var(name)
        .unwrap_or_else(|_| default.to_string())
        .parse()
        .unwrap()
}

/// The first `n` flights as batches of `size`: (tailnum, line, event time).
fn batches(n: usize, size: usize) -> Vec<Batch> {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/data/flights-2013.ndjson.gz");
    let file = std::fs::File::open(path).unwrap();
    let lines: Vec<String> = std::io::BufReader::new(flate2::read::MultiGzDecoder::new(file))
        .lines()
        .take(n)
        .map(Result::unwrap)
        .collect();
    lines
        .chunks(size)
        .map(|chunk| {
            let mut batch = Batch::with_capacity(chunk.len(), chunk.len() * 400);
            for line in chunk {
                let v: serde_json::Value = serde_json::from_str(line).unwrap();
                let key = v["tailnum"].as_str().unwrap_or("");
                let ts = v["event_time_ms"].as_i64().unwrap();
                batch.push(Some(key.as_bytes()), line.as_bytes(), ts);
            }
            batch
        })
        .collect()
}

/// One pass over every batch; returns the records that came out.
type Pass = Box<dyn FnMut(&[Batch]) -> usize>;

fn limits() -> Limits {
    Limits {
        memory_bytes: 2 << 30,
        timeout: Duration::from_secs(120),
    }
}

fn wasm_keyed(host: &PluginHost, path: &Path) -> Pass {
    let plugin = host.load(path).unwrap();
    Box::new(move |batches| {
        let mut instance = plugin
            .instantiate(&[], limits(), LogTags::default())
            .unwrap();
        let spec = KeyedSpec::default();
        let mut state = KeyedState::default();
        let mut call = |c: &mut sluice::wasm::keyed::KeyedCall| instance.process_keyed(c);
        let mut out = 0;
        for batch in batches {
            out += state
                .process(&spec, batch, 0, false, 64, &mut call)
                .unwrap()
                .events
                .len();
        }
        out + state
            .finish(&spec, 0, false, &mut call)
            .unwrap()
            .events
            .len()
    })
}

fn wasm_local(host: &PluginHost, path: &Path) -> Pass {
    let plugin = host.load(path).unwrap();
    Box::new(move |batches| {
        let mut instance = plugin
            .instantiate(&[], limits(), LogTags::default())
            .unwrap();
        let mut out = 0;
        for batch in batches {
            let mut batch = batch.clone();
            out += instance.process(&mut batch).unwrap().events.len();
        }
        out
    })
}

fn native_local() -> Pass {
    Box::new(|batches| {
        let mut p = plane_gaps_local::PlaneGapsLocal::configure(&Config::default()).unwrap();
        let mut out = 0;
        for batch in batches {
            let mut o = Output::with_capacity(batch.len(), batch.values_len());
            p.process(batch, &mut o).unwrap();
            out += o.events.len();
        }
        out
    })
}

fn native_keyed() -> Pass {
    Box::new(|batches| {
        let mut h =
            KeyedHarness::<plane_gaps::PlaneGaps>::configure(Vec::<(String, String)>::new())
                .unwrap();
        for batch in batches {
            for event in batch {
                h.push(
                    event.key().unwrap_or_default(),
                    event.value(),
                    event.timestamp_ms(),
                );
            }
            h.run().unwrap();
        }
        h.advance_watermark(i64::MAX).unwrap();
        h.output().events.len()
    })
}

fn main() {
    let n = env_or("KEYED_RECORDS", "100000");
    let size = env_or("KEYED_BATCH", "4096");
    let rounds = env_or("KEYED_ROUNDS", "5");
    let plugins = PathBuf::from(env!("SLUICE_PLUGINS_DIR"));
    let host = PluginHost::new().unwrap();
    let batches = batches(n, size);
    let mut impls: Vec<(&str, Pass)> = vec![
        (
            "wasm keyed: plane_gaps, host-owned state and timers",
            wasm_keyed(&host, &plugins.join("plane_gaps.wasm")),
        ),
        (
            "wasm plain: plane_gaps_local, planes in the instance",
            wasm_local(&host, &plugins.join("plane_gaps_local.wasm")),
        ),
        (
            "native keyed: plane_gaps in the SDK's KeyedHarness",
            native_keyed(),
        ),
        ("native plain: plane_gaps_local", native_local()),
    ];
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); impls.len()];
    let mut outs = vec![0; impls.len()];
    for _ in 0..rounds {
        for (i, (_, pass)) in impls.iter_mut().enumerate() {
            let started = Instant::now();
            outs[i] = pass(&batches);
            times[i].push(started.elapsed().as_nanos() as f64 / n as f64);
        }
    }
    let medians: Vec<f64> = times
        .iter_mut()
        .map(|t| {
            t.sort_by(f64::total_cmp);
            t[t.len() / 2]
        })
        .collect();
    let best = medians.iter().copied().fold(f64::INFINITY, f64::min);
    println!("{n} flights keyed by tail number, batches of {size}, median of {rounds} rounds\n");
    println!("| implementation | records out | ns/record | × fastest |");
    println!("|---|---|---|---|");
    for (i, (name, _)) in impls.iter().enumerate() {
        println!(
            "| {name} | {} | {:.0} | {:.2} |",
            outs[i],
            medians[i],
            medians[i] / best
        );
    }
}
