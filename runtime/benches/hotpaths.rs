//! The host's per-record hot paths on real flights, so that regressions show:
//! decoding a source line (one-pass JSON pointer walk), routing (murmur2),
//! batching, window assignment and aggregate updates.
//!
//! `cargo bench -p sluice --bench hotpaths`. Throughput is in records per second.

use std::io::BufRead;
use std::path::Path;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use sluice::aggregate::{Acc, Op};
use sluice::decode::{Decoder, Pointer};
use sluice::pipeline::batcher::{BatchLimits, Batcher};
use sluice::source::router::Router;
use sluice::window::{Window, WindowKind};

const N: usize = 10_000;

fn flights() -> Vec<String> {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/data/flights-2013.ndjson.gz");
    let file = std::fs::File::open(path).unwrap();
    std::io::BufReader::new(flate2::read::MultiGzDecoder::new(file))
        .lines()
        .take(N)
        .map(Result::unwrap)
        .collect()
}

fn hot_paths(c: &mut Criterion) {
    let lines = flights();
    let decoder = Decoder::new(
        Some(Pointer::parse("/carrier").unwrap()),
        Some(Pointer::parse("/event_time").unwrap()),
    );
    let decoded: Vec<_> = lines
        .iter()
        .map(|l| decoder.decode(l.as_bytes()).unwrap())
        .collect();
    let mut group = c.benchmark_group("hot_paths");
    group.throughput(Throughput::Elements(N as u64));
    group.measurement_time(Duration::from_secs(3));

    group.bench_function("decode_key_and_time", |b| {
        b.iter(|| {
            for line in &lines {
                std::hint::black_box(decoder.decode(line.as_bytes()).unwrap());
            }
        })
    });
    group.bench_function("route_murmur2", |b| {
        let mut router = Router::new(8);
        b.iter(|| {
            for d in &decoded {
                std::hint::black_box(router.route(d.key.as_deref()));
            }
        })
    });
    group.bench_function("batch_1024", |b| {
        let limits = BatchLimits {
            max_records: 1024,
            max_bytes: 4 << 20,
            interval: Duration::from_secs(1),
        };
        let now = Instant::now();
        // As a partition worker gets them: chunks of 256 records (the source's
        // `CHUNK_RECORDS`), each appended run by run with `push_events`.
        let chunks: Vec<sluice_plugin_sdk::Batch> = lines
            .chunks(256)
            .zip(decoded.chunks(256))
            .map(|(lines, decoded)| {
                let mut chunk = sluice_plugin_sdk::Batch::new();
                for (line, d) in lines.iter().zip(decoded) {
                    chunk.push(
                        Some(d.key.as_deref().unwrap_or_default()),
                        line.as_bytes(),
                        d.timestamp_ms.unwrap_or(0),
                    );
                }
                chunk
            })
            .collect();
        b.iter(|| {
            let mut batcher = Batcher::new(limits);
            let mut closed = 0;
            for chunk in &chunks {
                let mut at = 0;
                while at < chunk.len() {
                    at = batcher
                        .push_events(chunk, at..chunk.len(), now, |batch| closed += batch.len());
                }
            }
            std::hint::black_box(closed)
        })
    });
    for (name, kind) in [
        (
            "assign_tumbling_1h",
            WindowKind::Tumbling { size: 3_600_000 },
        ),
        (
            "assign_sliding_1h_every_15m",
            WindowKind::Sliding {
                size: 3_600_000,
                slide: 900_000,
            },
        ),
    ] {
        group.bench_function(name, |b| {
            let mut out: Vec<Window> = Vec::new();
            b.iter(|| {
                for d in &decoded {
                    kind.assign(d.timestamp_ms.unwrap_or(0), &mut out);
                    std::hint::black_box(&out);
                }
            })
        });
    }
    let values: Vec<serde_json::Value> = lines
        .iter()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["dep_delay"].clone())
        .collect();
    for op in [
        Op::Count,
        Op::Avg,
        Op::Max,
        Op::CountDistinct,
        Op::ApproxCountDistinct,
    ] {
        group.bench_function(format!("aggregate_{}", op.name()), |b| {
            b.iter(|| {
                let mut acc = Acc::new(op);
                for (i, v) in values.iter().enumerate() {
                    acc.update(Some(v), i as i64);
                }
                std::hint::black_box(acc.finish())
            })
        });
    }
    group.finish();
}

criterion_group!(benches, hot_paths);
criterion_main!(benches);
