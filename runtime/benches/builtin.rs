//! Throughput of the built-in stages (`join`, `dedup`) on real flights, in
//! batches of 1024 as a partition worker runs them, beside a plain copy of the
//! same batches (what any stage pays to pass a record on).
//!
//! `cargo bench -p sluice --bench builtin`. Throughput is in records per second.
//!
//! - `copy_batch`: every record pushed into a new batch (the floor);
//! - `join_left_splice`: flights ⋈ airports on `/dest`, the row spliced in at
//!   `/dest_airport` (the record's text is not parsed into a tree);
//! - `join_left_nested`: the same row at `/dest/airport/row` — a path that needs
//!   the record parsed, changed and written again (the fallback), for contrast;
//! - `dedup_10pct_repeats`: dedup on carrier, flight and scheduled departure,
//!   `within = "1h"`, over the flights with every 10th one repeated (the
//!   examples/dedup input), state carried from batch to batch.

use std::io::BufRead;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use sluice::config::{JoinKind, OnError};
use sluice::decode::Pointer;
use sluice::pipeline::builtin::{DedupSpec, DedupState, JoinSpec, join};
use sluice::table::{TableFormat, TableSlot, TableSpec};
use sluice_plugin_sdk::Batch;

const N: usize = 100_000;
const BATCH: usize = 1024;

fn repo() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The first `N` flights, with every 10th one repeated with an event time 5
/// minutes later where that time falls (the examples/dedup input), cut into
/// batches of [`BATCH`] (event time from `event_time_ms`).
fn batches(repeats: bool) -> Vec<Batch> {
    let file = std::fs::File::open(repo().join("examples/data/flights-2013.ndjson.gz")).unwrap();
    let lines: Vec<String> = std::io::BufReader::new(flate2::read::MultiGzDecoder::new(file))
        .lines()
        .take(N)
        .map(Result::unwrap)
        .collect();
    let mut records: Vec<(String, i64)> = Vec::with_capacity(N * 11 / 10);
    let mut pending: std::collections::VecDeque<(String, i64)> = Default::default();
    for (i, line) in lines.iter().enumerate() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let ts = v["event_time_ms"].as_i64().unwrap();
        while pending.front().is_some_and(|(_, at)| *at <= ts) {
            records.push(pending.pop_front().unwrap());
        }
        records.push((line.clone(), ts));
        if repeats && i % 10 == 9 {
            pending.push_back((line.clone(), ts + 300_000));
        }
    }
    records.extend(pending);
    records
        .chunks(BATCH)
        .map(|chunk| {
            let mut b = Batch::with_capacity(chunk.len(), 0);
            for (line, ts) in chunk {
                b.push(Some(b"k"), line.as_bytes(), *ts);
            }
            b
        })
        .collect()
}

fn airports() -> Arc<TableSlot> {
    let spec = TableSpec {
        name: "airports".into(),
        path: repo().join("examples/data/airports.csv"),
        kafka: None,
        format: TableFormat::Csv,
        key: "faa".into(),
        csv: Default::default(),
    };
    let table = spec.load().unwrap();
    TableSlot::new(spec, table)
}

fn builtin(c: &mut Criterion) {
    let plain = batches(false);
    let with_repeats = batches(true);
    let mut group = c.benchmark_group("builtin");
    group.measurement_time(Duration::from_secs(5));
    group.sample_size(20);

    let records = |b: &[Batch]| b.iter().map(Batch::len).sum::<usize>() as u64;
    group.throughput(Throughput::Elements(records(&plain)));
    group.bench_function("copy_batch", |b| {
        b.iter(|| {
            for batch in &plain {
                let mut out = Batch::with_capacity(batch.len(), batch.values_len());
                for event in batch {
                    out.push_event(&event);
                }
                std::hint::black_box(out);
            }
        })
    });
    let table = airports();
    for (name, target) in [
        ("join_left_splice", "/dest_airport"),
        ("join_left_nested", "/dest/airport/row"),
    ] {
        let spec = JoinSpec {
            label: "0:join:airports".into(),
            table: table.clone(),
            on: Pointer::parse("/dest").unwrap(),
            target: Pointer::parse(target).unwrap(),
            kind: JoinKind::Left,
            on_error: OnError::Skip,
        };
        group.bench_function(name, |b| {
            b.iter(|| {
                for batch in &plain {
                    std::hint::black_box(join(&spec, batch));
                }
            })
        });
    }
    group.throughput(Throughput::Elements(records(&with_repeats)));
    let spec = DedupSpec {
        label: "0:dedup".into(),
        keys: ["/carrier", "/flight", "/sched_dep_ts"]
            .iter()
            .map(|p| Pointer::parse(p).unwrap())
            .collect(),
        within_ms: 3_600_000,
        max_keys: 1_000_000,
        on_error: OnError::Skip,
    };
    group.bench_function("dedup_10pct_repeats", |b| {
        b.iter(|| {
            let mut state = DedupState::default();
            let mut dropped = 0;
            for batch in &with_repeats {
                dropped += state.process(&spec, batch).duplicates;
            }
            assert_eq!(dropped, (N / 10) as u64);
            std::hint::black_box(dropped)
        })
    });
    group.finish();
}

criterion_group!(benches, builtin);
criterion_main!(benches);
