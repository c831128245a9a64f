//! A partition worker: one thread per partition that cuts its records into
//! micro-batches, runs each batch through the processor chain, and hands the
//! output to the sinks.
//!
//! Wasm runs here, on a dedicated OS thread, never on the tokio reactor. A key's
//! records all come to one worker, in order, and leave it in order.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use anyhow::anyhow;
use sluice_plugin_sdk::{Batch, Event};

use crate::batcher::{BatchLimits, Batcher};
use crate::config::OnError;
use crate::dead_letter::{DeadLetter, DeadRecord};
use crate::pipeline::Stats;
use crate::processor::{Stage, StageSpec};
use crate::sink::SinkHandle;
use crate::source::Record;

/// Everything one partition worker owns.
#[derive(Debug)]
pub struct Worker {
    /// Pipeline name.
    pub pipeline: String,
    /// Partition index.
    pub partition: usize,
    /// Batch limits.
    pub limits: BatchLimits,
    /// The processor chain, one instance per stage.
    pub stages: Vec<Stage>,
    /// Where output goes (fan-out: every sink gets every record).
    pub sinks: Vec<SinkHandle>,
    /// Where failed and refused records go.
    pub dead_letter: DeadLetter,
    /// The pipeline's counters.
    pub stats: Arc<Stats>,
    /// Set when this worker stops on an error, so the source stops reading.
    pub stop: Arc<AtomicBool>,
}

impl Worker {
    /// Runs until every sender of `records` is gone, then flushes the open batch.
    ///
    /// # Errors
    /// A stage with `on_error = "stop"` failed, or a sink stopped.
    pub fn run(mut self, records: flume::Receiver<Vec<Record>>) -> anyhow::Result<()> {
        let mut batcher = Batcher::new(self.limits);
        let result = self.batch_loop(&records, &mut batcher);
        if result.is_err() {
            // The pipeline stops: tell the source, and count what will not be
            // processed — the open batch and everything still queued, until the
            // source has let go of the channel.
            self.stop.store(true, Ordering::Relaxed);
            let mut unprocessed = batcher.take().len();
            for chunk in records.iter() {
                unprocessed += chunk.len();
            }
            self.stats
                .failed
                .fetch_add(unprocessed as u64, Ordering::Relaxed);
        }
        result
    }

    fn batch_loop(
        &mut self,
        records: &flume::Receiver<Vec<Record>>,
        batcher: &mut Batcher,
    ) -> anyhow::Result<()> {
        let mut closed: Vec<Batch> = Vec::with_capacity(2);
        loop {
            let received = match batcher.deadline() {
                Some(deadline) => records.recv_deadline(deadline),
                None => records
                    .recv()
                    .map_err(|_| flume::RecvTimeoutError::Disconnected),
            };
            match received {
                Ok(chunk) => {
                    let now = Instant::now();
                    let mut chunk = chunk.into_iter();
                    while let Some(record) = chunk.next() {
                        batcher.push(&record.key, &record.value, record.timestamp_ms, now, |b| {
                            closed.push(b)
                        });
                        while !closed.is_empty() {
                            let batch = closed.remove(0);
                            let len = batch.len();
                            if let Err(e) = self.process(batch) {
                                // This batch, any other closed one, and the rest of
                                // the chunk are not processed.
                                let rest =
                                    closed.iter().map(Batch::len).sum::<usize>() + chunk.len();
                                self.stats
                                    .failed
                                    .fetch_add((len + rest) as u64, Ordering::Relaxed);
                                return Err(e);
                            }
                        }
                    }
                }
                Err(flume::RecvTimeoutError::Timeout) => self.process_or_count(batcher.take())?,
                Err(flume::RecvTimeoutError::Disconnected) => {
                    if !batcher.is_empty() {
                        self.process_or_count(batcher.take())?;
                    }
                    return Ok(());
                }
            }
        }
    }

    /// [`Worker::process`], counting the batch as failed when it fails.
    fn process_or_count(&mut self, batch: Batch) -> anyhow::Result<()> {
        let len = batch.len();
        self.process(batch).inspect_err(|_| {
            self.stats.failed.fetch_add(len as u64, Ordering::Relaxed);
        })
    }

    /// Runs one batch through the chain and writes what comes out.
    fn process(&mut self, batch: Batch) -> anyhow::Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        self.stats.batches.fetch_add(1, Ordering::Relaxed);
        let mut current = batch;
        for stage in &mut self.stages {
            match stage.run(&mut current) {
                Ok(processed) => {
                    if !processed.rejected.is_empty() {
                        let spec = stage.spec();
                        let refused = processed.rejected.iter().filter_map(|(index, reason)| {
                            Some((current.get(*index as usize)?, reason.as_str()))
                        });
                        dead_letter_events(
                            &self.dead_letter,
                            &self.stats,
                            self.partition,
                            spec,
                            refused,
                        )?;
                    }
                    current = processed.events;
                }
                Err(error) => {
                    let spec = stage.spec();
                    let reason = error.to_string();
                    tracing::error!(
                        pipeline = %self.pipeline,
                        stage = %spec.label,
                        plugin = %spec.plugin.name,
                        version = %spec.plugin.version,
                        partition = self.partition,
                        records = current.len(),
                        on_error = ?spec.on_error,
                        "batch failed: {reason}"
                    );
                    match spec.on_error {
                        OnError::DeadLetter => {
                            let failed = current.iter().map(|e| (e, reason.as_str()));
                            dead_letter_events(
                                &self.dead_letter,
                                &self.stats,
                                self.partition,
                                spec,
                                failed,
                            )?;
                        }
                        OnError::Skip => {
                            self.stats
                                .skipped
                                .fetch_add(current.len() as u64, Ordering::Relaxed);
                        }
                        OnError::Stop => {
                            return Err(anyhow!(
                                "pipeline `{}` stopped (on_error = \"stop\"): stage {} failed on a batch of {} record(s): {reason}",
                                self.pipeline,
                                spec.label,
                                current.len()
                            ));
                        }
                    }
                    return Ok(());
                }
            }
        }
        self.write(&current)
    }

    /// Encodes the output as newline-terminated records and sends it to every
    /// sink. An output record holding a line break would split into two lines: it
    /// goes to the dead-letter sink instead.
    fn write(&self, output: &Batch) -> anyhow::Result<()> {
        if output.is_empty() {
            return Ok(());
        }
        let mut lines = Vec::with_capacity(output.values_len() + output.len());
        let mut broken = Vec::new();
        for event in output {
            if event.value().contains(&b'\n') {
                broken.push(DeadRecord {
                    stage: "output",
                    plugin: None,
                    partition: Some(self.partition),
                    reason: "output record contains a line break; sinks write one record per line",
                    key: event.key().unwrap_or_default(),
                    timestamp_ms: Some(event.timestamp_ms()),
                    original: event.value(),
                });
                continue;
            }
            lines.extend_from_slice(event.value());
            lines.push(b'\n');
        }
        self.dead_letter.send(&broken)?;
        self.stats
            .rejected
            .fetch_add(broken.len() as u64, Ordering::Relaxed);
        let written = output.len() - broken.len();
        if written > 0 {
            let lines = Arc::new(lines);
            for sink in &self.sinks {
                sink.send(lines.clone())?;
            }
        }
        self.stats
            .records_out
            .fetch_add(written as u64, Ordering::Relaxed);
        Ok(())
    }
}

/// Sends events of a stage's input batch, each with its reason, to the
/// dead-letter sink, and counts them.
fn dead_letter_events<'a>(
    dead_letter: &DeadLetter,
    stats: &Stats,
    partition: usize,
    spec: &StageSpec,
    events: impl Iterator<Item = (Event<'a>, &'a str)>,
) -> anyhow::Result<()> {
    let records: Vec<DeadRecord<'_>> = events
        .map(|(event, reason)| DeadRecord {
            stage: &spec.label,
            plugin: Some((&spec.plugin.name, &spec.plugin.version)),
            partition: Some(partition),
            reason,
            key: event.key().unwrap_or_default(),
            timestamp_ms: Some(event.timestamp_ms()),
            original: event.value(),
        })
        .collect();
    dead_letter.send(&records)?;
    stats
        .rejected
        .fetch_add(records.len() as u64, Ordering::Relaxed);
    Ok(())
}
