//! Each example plugin as a Wasm component vs the very same Rust code compiled
//! natively into the host, on real flights, batch sizes 1, 64, 1024 and 16384.
//!
//! `cargo bench -p sluice --bench plugins` (the components come from
//! runtime/build.rs). Throughput is in records (elements) per second; the ratio
//! wasm/native per batch size is what the Wasm stage costs, and
//! wasm/wasm-no-epoch what the per-call deadline (epoch checks) costs.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use sluice::wasm::plugin::{Limits, LogTags, PluginHost};
use sluice_plugin_sdk::{Batch, Config, Output, Processor};

const SIZES: [usize; 4] = [1, 64, 1024, 16384];

fn flights(n: usize) -> Vec<String> {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/data/flights-2013.ndjson.gz");
    let file = std::fs::File::open(path).unwrap();
    std::io::BufReader::new(flate2::read::MultiGzDecoder::new(file))
        .lines()
        .take(n)
        .map(Result::unwrap)
        .collect()
}

fn batch_of(lines: &[String]) -> Batch {
    let mut batch = Batch::new();
    for (i, line) in lines.iter().enumerate() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        batch.push(
            Some(v["carrier"].as_str().unwrap().as_bytes()),
            line.as_bytes(),
            i as i64,
        );
    }
    batch
}

fn bench_plugin<P: Processor>(
    c: &mut Criterion,
    hosts: &Hosts,
    file: &str,
    config: &[(&str, &str)],
    lines: &[String],
) {
    let name = file.trim_end_matches(".wasm");
    let pairs: Vec<(String, String)> = config
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let path = PathBuf::from(env!("SLUICE_PLUGINS_DIR")).join(file);
    let limits = Limits {
        memory_bytes: 1 << 30,
        timeout: Duration::from_secs(60),
    };
    let instantiate = |host: &PluginHost| {
        host.load(&path)
            .unwrap()
            .instantiate(&pairs, limits, LogTags::default())
            .unwrap()
    };
    let mut instance = instantiate(&hosts.daemon);
    let mut bare = instantiate(&hosts.without_deadlines);
    let mut native = P::configure(&Config::from_pairs(pairs.clone())).unwrap();

    let mut group = c.benchmark_group(name);
    group.warm_up_time(Duration::from_millis(500));
    group.measurement_time(Duration::from_secs(2));
    group.sample_size(20);
    for size in SIZES {
        let mut batch = batch_of(&lines[..size]);
        group.throughput(Throughput::Elements(size as u64));
        group.bench_with_input(BenchmarkId::new("native", size), &size, |b, _| {
            b.iter(|| {
                let mut out = Output::with_capacity(batch.len(), batch.values_len());
                native.process(&batch, &mut out).unwrap();
                out
            })
        });
        group.bench_with_input(BenchmarkId::new("wasm", size), &size, |b, _| {
            b.iter(|| instance.process(&mut batch).unwrap())
        });
        // The same without epoch checks (no deadline): what the deadline costs.
        group.bench_with_input(BenchmarkId::new("wasm-no-epoch", size), &size, |b, _| {
            b.iter(|| bare.process(&mut batch).unwrap())
        });
    }
    group.finish();
}

/// The daemon's host, and one compiled without epoch interruption.
struct Hosts {
    daemon: PluginHost,
    without_deadlines: PluginHost,
}

fn plugins(c: &mut Criterion) {
    let host = Hosts {
        daemon: PluginHost::new().unwrap(),
        without_deadlines: PluginHost::without_deadlines_for_benchmarks().unwrap(),
    };
    let lines = flights(*SIZES.iter().max().unwrap());
    bench_plugin::<identity::Identity>(c, &host, "identity.wasm", &[], &lines);
    bench_plugin::<uppercase::Uppercase>(c, &host, "uppercase.wasm", &[], &lines);
    bench_plugin::<flights_delay::FlightsDelay>(
        c,
        &host,
        "flights_delay.wasm",
        &[("min_delay", "15")],
        &lines,
    );
}

criterion_group!(benches, plugins);
criterion_main!(benches);
