//! A partition worker: one thread per partition that cuts its records into
//! micro-batches, runs each batch through the processor chain, and hands the
//! output to the sinks.
//!
//! Wasm runs here, on a dedicated OS thread, never on the tokio reactor. A key's
//! records all come to one worker, in order, and leave it in order.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use anyhow::anyhow;
use sluice_plugin_sdk::Batch;

use crate::batcher::{BatchLimits, Batcher};
use crate::config::OnError;
use crate::dead_letter::{DeadLetter, DeadRecord};
use crate::pipeline::Stats;
use crate::processor::Stage;
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
}

impl Worker {
    /// Runs until every sender of `records` is gone, then flushes the open batch.
    ///
    /// # Errors
    /// A stage with `on_error = "stop"` failed, or a sink stopped.
    pub fn run(mut self, records: flume::Receiver<Vec<Record>>) -> anyhow::Result<()> {
        let mut batcher = Batcher::new(self.limits);
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
                    for record in chunk {
                        batcher.push(&record.key, &record.value, record.timestamp_ms, now, |b| {
                            closed.push(b)
                        });
                        for batch in closed.drain(..) {
                            self.process(batch)?;
                        }
                    }
                }
                Err(flume::RecvTimeoutError::Timeout) => self.process(batcher.take())?,
                Err(flume::RecvTimeoutError::Disconnected) => {
                    if !batcher.is_empty() {
                        self.process(batcher.take())?;
                    }
                    return Ok(());
                }
            }
        }
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
                        let records: Vec<DeadRecord<'_>> = processed
                            .rejected
                            .iter()
                            .filter_map(|(index, reason)| {
                                let event = current.get(*index as usize)?;
                                Some(DeadRecord {
                                    stage: &spec.label,
                                    plugin: Some((&spec.plugin.name, &spec.plugin.version)),
                                    partition: Some(self.partition),
                                    reason,
                                    key: event.key().unwrap_or_default(),
                                    timestamp_ms: Some(event.timestamp_ms()),
                                    original: event.value(),
                                })
                            })
                            .collect();
                        self.stats
                            .rejected
                            .fetch_add(records.len() as u64, Ordering::Relaxed);
                        self.dead_letter.send(&records)?;
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
                            let records: Vec<DeadRecord<'_>> = current
                                .iter()
                                .map(|event| DeadRecord {
                                    stage: &spec.label,
                                    plugin: Some((&spec.plugin.name, &spec.plugin.version)),
                                    partition: Some(self.partition),
                                    reason: &reason,
                                    key: event.key().unwrap_or_default(),
                                    timestamp_ms: Some(event.timestamp_ms()),
                                    original: event.value(),
                                })
                                .collect();
                            self.stats
                                .rejected
                                .fetch_add(records.len() as u64, Ordering::Relaxed);
                            self.dead_letter.send(&records)?;
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
    /// sink.
    fn write(&self, output: &Batch) -> anyhow::Result<()> {
        if output.is_empty() {
            return Ok(());
        }
        let mut lines = Vec::with_capacity(output.values_len() + output.len());
        for event in output {
            lines.extend_from_slice(event.value());
            lines.push(b'\n');
        }
        let lines = Arc::new(lines);
        for sink in &self.sinks {
            sink.send(lines.clone())?;
        }
        self.stats
            .records_out
            .fetch_add(output.len() as u64, Ordering::Relaxed);
        Ok(())
    }
}
