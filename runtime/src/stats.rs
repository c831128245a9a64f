//! A pipeline's counters, shared by its threads (source, workers, window
//! operator, checkpointer) and read by the admin API, the metrics and the
//! summary. A leaf module: it depends on nothing of the crate.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64};

/// A pipeline's counters, shared by its threads.
#[derive(Debug)]
pub struct Stats {
    /// Lines read from the source (empty lines not counted).
    pub records_in: AtomicU64,
    /// Records (or window rows) written and accepted by every sink of the
    /// pipeline (once per record, whatever the fan-out): counted by the sink
    /// threads when the last of them has written the batch, not when it is
    /// handed to them.
    pub records_out: AtomicU64,
    /// Records (or window rows) handed to the sinks that a sink stopped before
    /// writing (a write error: the batch that failed and those queued behind
    /// it). Not in `records_out`; with a checkpoint, the replay after a
    /// restart writes them again.
    pub unwritten: AtomicU64,
    /// Records sent to the dead-letter sink (or dropped for want of one): lines
    /// that could not be decoded, records a plugin refused, records of batches
    /// that failed under `on_error = "dead-letter"`.
    pub rejected: AtomicU64,
    /// Records of batches dropped under `on_error = "skip"`.
    pub skipped: AtomicU64,
    /// Micro-batches processed.
    pub batches: AtomicU64,
    /// Records too late for every window they belong to (also counted in
    /// `rejected` when dead-lettered), and records a `dedup` stage dropped
    /// as older than its watermark.
    pub late: AtomicU64,
    /// Records a `dedup` stage dropped as duplicates of one it passed.
    pub duplicates: AtomicU64,
    /// Records an inner `join` dropped for want of a match in its table.
    pub unmatched: AtomicU64,
    /// Checkpoints taken.
    pub checkpoints: AtomicU64,
    /// The window operator's watermark, ms since the epoch; `i64::MIN`: none.
    pub watermark_ms: AtomicI64,
    /// Records read but not processed because the pipeline stopped on an error
    /// (`on_error = "stop"`, a sink that failed): the failed batch and everything
    /// queued behind it.
    pub failed: AtomicU64,
    /// Records read but dropped because the pipeline was full and the source
    /// cannot wait (UDP: a datagram cannot be pushed back). Also counted in
    /// `records_in`.
    pub dropped: AtomicU64,
    /// Records each partition worker took in (one entry per partition): how
    /// evenly the router spread them (see [`Stats::skew`]).
    pub partition_records: Box<[AtomicU64]>,
}

impl Stats {
    /// Counters for a pipeline of `partitions` partition workers.
    pub fn with_partitions(partitions: usize) -> Self {
        Stats {
            partition_records: (0..partitions).map(|_| AtomicU64::new(0)).collect(),
            ..Stats::default()
        }
    }

    /// Records per partition worker so far.
    pub fn partition_counts(&self) -> Vec<u64> {
        self.partition_records
            .iter()
            .map(|c| c.load(std::sync::atomic::Ordering::Relaxed))
            .collect()
    }

    /// How unevenly the partitions got their records: the busiest
    /// partition's count over the mean (1.0: even; `partitions`: all on
    /// one). The busiest worker bounds the pipeline, so 1.33 on two
    /// partitions means the second core does half the first's work. `None`
    /// before any record, or with one partition.
    pub fn skew(counts: &[u64]) -> Option<f64> {
        let total: u64 = counts.iter().sum();
        if counts.len() < 2 || total == 0 {
            return None;
        }
        let max = *counts.iter().max().expect("not empty") as f64;
        Some(max / (total as f64 / counts.len() as f64))
    }
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            records_in: AtomicU64::new(0),
            records_out: AtomicU64::new(0),
            unwritten: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            skipped: AtomicU64::new(0),
            batches: AtomicU64::new(0),
            late: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            unmatched: AtomicU64::new(0),
            checkpoints: AtomicU64::new(0),
            watermark_ms: AtomicI64::new(i64::MIN),
            partition_records: Box::new([]),
        }
    }
}

/// A sink's own figures, kept by its thread, read by the admin API
/// (`/metrics`, `/sinks`).
#[derive(Debug, Default)]
pub struct SinkStats {
    /// Records (or window rows) written, whichever pipeline sent them.
    pub records_written: AtomicU64,
    /// Writes tried again after a transient error (a full disk, a database
    /// or an HTTP server away).
    pub write_retries: AtomicU64,
    /// Records the output refused for good (a database constraint, an HTTP
    /// 4xx), sent to the dead-letter sink.
    pub records_refused: AtomicU64,
    /// The sink cannot write at the moment (opening and waiting, or retrying a
    /// write): its queue fills and the pipelines feeding it wait.
    pub blocked: AtomicBool,
}
