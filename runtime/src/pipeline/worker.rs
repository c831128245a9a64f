//! A partition worker: one thread per partition that cuts its records into
//! micro-batches, runs each batch through the processor chain, and hands the
//! output to the sinks.
//!
//! Wasm runs here, on a dedicated OS thread, never on the tokio reactor. A key's
//! records all come to one worker, in order, and leave it in order.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::anyhow;
use sluice_plugin_sdk::{Batch, Event};

use arc_swap::ArcSwap;

use crate::checkpoint::{Ack, Barrier, BarrierKind};
use crate::config::OnError;
use crate::obs::tap::Point;
use crate::pipeline::batcher::BatchLimits;
use crate::pipeline::batcher::Batcher;
use crate::pipeline::builtin;
use crate::pipeline::processor::{Flush, Step, StepSpec};
use crate::sink::SinkHandle;
use crate::sink::dead_letter::{DeadLetter, DeadRecord};
use crate::source::Chunk;
use crate::stats::Stats;
use crate::wasm::plugin::Plugin;
use crate::window::operator::{WindowInput, WindowMsg, WindowSpec};

/// The part of a pipeline a config reload swaps in place: the workers pick a new
/// one up at their next batch boundary.
#[derive(Debug)]
pub struct Chain {
    /// When a micro-batch closes.
    pub limits: BatchLimits,
    /// The processor chain.
    pub stages: Vec<StepSpec>,
}

impl Chain {
    /// A text that differs when the chain differs (limits, and each stage's
    /// plugin file, config, limits, policy and breaker).
    pub fn fingerprint(&self) -> String {
        let stages: Vec<String> = self.stages.iter().map(StepSpec::fingerprint).collect();
        format!("{:?}|{stages:?}", self.limits)
    }
}

/// A worker's way into its pipeline's window operator.
#[derive(Debug, Clone)]
pub struct WindowFeed {
    /// What the operator needs from each record.
    pub spec: Arc<WindowSpec>,
    /// The operator's input.
    pub tx: flume::Sender<WindowMsg>,
    /// Whether the watermark follows the event times of the chain's output
    /// rather than those of its input: when the source stamps records with
    /// the time they were read (no `timestamp`), the processors may set the
    /// real event time (the stock `parse` plugin's `event_time`), and only
    /// then can windows of old events close on time.
    pub watermark_from_output: bool,
}

/// Everything one partition worker owns.
#[derive(Debug)]
pub struct Worker {
    /// Pipeline name.
    pub pipeline: String,
    /// Partition index.
    pub partition: usize,
    /// The pipeline's current chain (a config reload stores a new one).
    pub chain: Arc<ArcSwap<Chain>>,
    /// The chain this worker runs.
    pub running: Arc<Chain>,
    /// A newer chain whose stages could not start here, and when (retried
    /// after [`crate::pipeline::processor::RETRY_REFUSED`]).
    pub refused: Option<(Arc<Chain>, std::time::Instant)>,
    /// The processor chain, one instance per stage (and its state, for a
    /// built-in stage that keeps some).
    pub stages: Vec<Step>,
    /// The window operator the output goes to, when the pipeline has windows.
    pub window: Option<WindowFeed>,
    /// Where output goes (fan-out: every sink gets every record).
    pub sinks: Vec<SinkHandle>,
    /// Where failed and refused records go.
    pub dead_letter: DeadLetter,
    /// The pipeline's counters.
    pub stats: Arc<Stats>,
    /// The pipeline's batch histograms and tracer.
    pub metrics: Arc<crate::obs::metrics::PipelineMetrics>,
    /// Set when this worker stops on an error, so the source stops reading.
    pub stop: Arc<AtomicBool>,
    /// The window task of the open batch's records (Kafka: a batch holds
    /// one Kafka partition's records only, so that its windows stay that
    /// partition's).
    pub task: Option<u32>,
    /// A stop barrier saved the state: the end of the input that follows
    /// fires no timer.
    pub saved_and_stopped: bool,
}

/// The latest event time of `batch` that windows can take (others do not
/// move the watermark).
fn max_event_time(batch: &Batch) -> Option<i64> {
    batch
        .iter()
        .map(|e| e.timestamp_ms())
        .filter(|t| crate::window::TIME_RANGE.contains(t))
        .max()
}

/// How often an idle worker looks at whether its sinks are still running.
const SINK_CHECK: Duration = Duration::from_secs(1);

impl Worker {
    /// Runs until every sender of `records` is gone, then flushes the open batch.
    ///
    /// # Errors
    /// A stage with `on_error = "stop"` failed, or a sink stopped.
    pub fn run(mut self, records: flume::Receiver<Chunk>) -> anyhow::Result<()> {
        let mut batcher = Batcher::new(self.running.limits);
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
        records: &flume::Receiver<Chunk>,
        batcher: &mut Batcher,
    ) -> anyhow::Result<()> {
        let mut closed: Vec<Batch> = Vec::with_capacity(2);
        loop {
            // Between batches: the moment to take up a reloaded chain.
            self.follow_chain(batcher);
            let received = match batcher.deadline() {
                Some(deadline) => records.recv_deadline(deadline),
                // Nothing open: wait, looking now and then at the sinks (a
                // sink that failed while no record comes would otherwise
                // leave the pipeline running with a dead sink).
                None => match records.recv_timeout(SINK_CHECK) {
                    Err(flume::RecvTimeoutError::Timeout) => {
                        // A pause: processing-time timers that are due fire.
                        if self.stages.iter().any(|s| match s {
                            Step::Plugin(stage) => stage.processing_due(),
                            _ => false,
                        }) {
                            self.flush_or_count(Flush::Tick)?;
                        }
                        if let Some(sink) = self
                            .sinks
                            .iter()
                            .chain(self.dead_letter.sink())
                            .find(|s| s.has_stopped())
                        {
                            anyhow::bail!("sink `{}` has stopped", sink.name);
                        }
                        continue;
                    }
                    other => other,
                },
            };
            match received {
                Ok(Chunk::Barrier(barrier)) => {
                    if !batcher.is_empty() {
                        self.process_or_count(batcher.take())?;
                    }
                    match barrier.kind {
                        // The end of the input: keyed stages fire every
                        // event-time timer before their state is saved (and
                        // not again when the input closes).
                        BarrierKind::End => {
                            self.flush_or_count(Flush::End)?;
                            self.saved_and_stopped = true;
                        }
                        // Stopping: the timers are saved, not fired.
                        BarrierKind::Stop => self.saved_and_stopped = true,
                        BarrierKind::Periodic => {}
                    }
                    self.pass_barrier(barrier)?;
                }
                Ok(Chunk::Restore(task, states)) => {
                    if !batcher.is_empty() {
                        self.process_or_count(batcher.take())?;
                    }
                    for step in &mut self.stages {
                        if let Step::Plugin(stage) = step
                            && stage.is_keyed()
                        {
                            let keys = stage.restore_task(task, &states);
                            tracing::debug!(
                                pipeline = %self.pipeline,
                                partition = self.partition,
                                stage = %stage.spec().label,
                                task,
                                keys,
                                "keyed state of a Kafka partition taken up"
                            );
                        }
                    }
                }
                Ok(Chunk::Forget(tasks)) => {
                    if !batcher.is_empty() {
                        self.process_or_count(batcher.take())?;
                    }
                    for step in &mut self.stages {
                        if let Step::Plugin(stage) = step {
                            stage.forget_tasks(&tasks);
                        }
                    }
                }
                Ok(Chunk::Deliver(done)) => {
                    if !batcher.is_empty() {
                        self.process_or_count(batcher.take())?;
                    }
                    // The source may have given up waiting.
                    let _ = done.send(self.sync_sinks());
                }
                Ok(Chunk::Records(chunk)) => {
                    // The first records after a pause start a batch: a chain
                    // reloaded during the pause takes them (not only the
                    // batch after).
                    if batcher.is_empty() {
                        self.follow_chain(batcher);
                    }
                    let now = Instant::now();
                    let mut i = 0;
                    while i < chunk.len() {
                        // A run of records of one task goes into the batcher
                        // in bulk (one copy per column per batch).
                        let task = chunk.task(i);
                        let run_end = chunk.task_run_end(i);
                        if task != self.task && !batcher.is_empty() {
                            closed.push(batcher.take());
                        }
                        // A batch closed before this run's task began is
                        // still the previous task's: it runs first.
                        self.run_closed(&mut closed, chunk.len() - i)?;
                        self.task = task;
                        while i < run_end {
                            i = batcher
                                .push_events(chunk.events(), i..run_end, now, |b| closed.push(b));
                            self.run_closed(&mut closed, chunk.len() - i)?;
                        }
                    }
                }
                Err(flume::RecvTimeoutError::Timeout) => self.process_or_count(batcher.take())?,
                Err(flume::RecvTimeoutError::Disconnected) => {
                    if !batcher.is_empty() {
                        self.process_or_count(batcher.take())?;
                    }
                    // The input ended (or, without checkpoints, the daemon
                    // stops: the state would be lost anyway): as the window
                    // operator emits every window, keyed stages fire every
                    // event-time timer. Not after a stop barrier saved them.
                    if !self.saved_and_stopped {
                        self.flush_or_count(Flush::End)?;
                    }
                    return Ok(());
                }
            }
        }
    }

    /// Everything before `barrier` has been processed: passes it on to the
    /// window operator, or acknowledges it.
    fn pass_barrier(&self, barrier: Barrier) -> anyhow::Result<()> {
        // The state of the built-in stages first: on the ack channel it comes
        // before what completes the barrier.
        let mut state: crate::checkpoint::StageSnapshots = self
            .stages
            .iter()
            .filter_map(|step| match step {
                Step::Dedup(spec, state) => Some((
                    spec.state_name(self.partition),
                    crate::checkpoint::StageSnapshot::Dedup(state.snapshot()),
                )),
                _ => None,
            })
            .collect();
        for step in &self.stages {
            if let Step::Plugin(stage) = step {
                state.extend(stage.keyed_snapshot()?);
            }
        }
        if !state.is_empty() {
            let _ = barrier.ack.send(Ack::Stages(Box::new(state)));
        }
        match &self.window {
            Some(feed) => feed.tx.send(WindowMsg::Barrier(barrier)).map_err(|_| {
                anyhow!(
                    "the window operator of pipeline `{}` has stopped",
                    self.pipeline
                )
            }),
            None => {
                // The source may have given up waiting (the pipeline failed).
                let _ = barrier.ack.send(Ack::Worker);
                Ok(())
            }
        }
    }

    /// Has every sink this worker writes to (outputs and dead letter) write
    /// out what it was handed and sync it (see [`Chunk::Deliver`]). The sinks
    /// sync at once.
    fn sync_sinks(&self) -> anyhow::Result<()> {
        let pending = self
            .sinks
            .iter()
            .chain(self.dead_letter.sink())
            .map(SinkHandle::start_sync)
            .collect::<anyhow::Result<Vec<_>>>()?;
        for sync in pending {
            sync.wait()?;
        }
        Ok(())
    }

    /// Moves to the pipeline's current chain if a config reload changed it. A
    /// chain whose stages cannot start here is logged and the running one kept.
    fn follow_chain(&mut self, batcher: &mut Batcher) {
        let latest = self.chain.load();
        if Arc::ptr_eq(&latest, &self.running)
            || self.refused.as_ref().is_some_and(|(r, at)| {
                Arc::ptr_eq(r, &latest) && at.elapsed() < crate::pipeline::processor::RETRY_REFUSED
            })
        {
            return;
        }
        let latest = arc_swap::Guard::into_inner(latest);
        match Step::chain(
            &self.pipeline,
            self.partition,
            &latest.stages,
            &Default::default(),
        ) {
            Ok(mut stages) => {
                // A dedup stage keeps its state across the reload (matched by
                // its key pointers), a keyed one too (by its plugin).
                for step in &mut stages {
                    if let Step::Plugin(stage) = step
                        && stage.is_keyed()
                    {
                        let name = stage.state_name();
                        for old in &mut self.stages {
                            if let Step::Plugin(old) = old
                                && old.is_keyed()
                                && old.state_name() == name
                                && let Some(state) = old.take_keyed_state()
                            {
                                stage.set_keyed_state(state);
                                break;
                            }
                        }
                    }
                    if let Step::Dedup(spec, state) = step {
                        let name = spec.state_name(self.partition);
                        for old in &mut self.stages {
                            if let Step::Dedup(old_spec, old_state) = old
                                && old_spec.state_name(self.partition) == name
                            {
                                std::mem::swap(state, old_state);
                            }
                        }
                    }
                }
                batcher.set_limits(latest.limits);
                self.stages = stages;
                self.running = latest;
                self.refused = None;
                tracing::debug!(
                    pipeline = %self.pipeline,
                    partition = self.partition,
                    "partition switched to the reloaded chain"
                );
            }
            Err(e) => {
                tracing::error!(
                    pipeline = %self.pipeline,
                    partition = self.partition,
                    "reloaded chain cannot start on this partition, the running one keeps serving: {e:#}"
                );
                self.refused = Some((latest, Instant::now()));
            }
        }
    }

    /// Runs the keyed stages without a batch (`flush`), the rest of the
    /// chain on what they emit, once per task a keyed stage holds a state
    /// for (each Kafka partition's timers are its own); a failure counts
    /// nothing more as failed.
    fn flush_or_count(&mut self, flush: Flush) -> anyhow::Result<()> {
        // A task without a state yet has no timer to fire.
        let mut tasks: Vec<Option<u32>> = self
            .stages
            .iter()
            .flat_map(|step| match step {
                Step::Plugin(stage) => stage.keyed_tasks(),
                _ => Vec::new(),
            })
            .collect();
        tasks.sort_unstable();
        tasks.dedup();
        let open = self.task;
        for task in tasks {
            self.task = task;
            let ran = self.run_chain(Batch::new(), Some(flush));
            if let Err(failed) = ran {
                self.task = open;
                return Err(failed.error);
            }
        }
        self.task = open;
        Ok(())
    }

    /// [`Worker::process`], counting the batch as failed when it fails.
    fn process_or_count(&mut self, batch: Batch) -> anyhow::Result<()> {
        self.process(batch).map_err(|failed| {
            self.stats
                .failed
                .fetch_add(failed.unaccounted as u64, Ordering::Relaxed);
            failed.error
        })
    }

    /// Runs one batch through the chain, then sends what the stages refused to
    /// the dead-letter sink and what came out to the sinks. Nothing is sent
    /// before the whole chain has run, so a batch that stops the pipeline is
    /// counted once, as failed.
    /// Processes the batches in `closed`, oldest first. On a failure, the
    /// batches after the failed one and the chunk's `unbatched` records (not
    /// yet in the batcher) are counted as failed with what the failed batch
    /// left unaccounted; the batcher's open batch is counted by
    /// [`Worker::run`].
    fn run_closed(&mut self, closed: &mut Vec<Batch>, unbatched: usize) -> anyhow::Result<()> {
        while !closed.is_empty() {
            let batch = closed.remove(0);
            if let Err(failed) = self.process(batch) {
                let rest = closed.iter().map(Batch::len).sum::<usize>() + unbatched;
                self.stats
                    .failed
                    .fetch_add((failed.unaccounted + rest) as u64, Ordering::Relaxed);
                return Err(failed.error);
            }
        }
        Ok(())
    }

    fn process(&mut self, batch: Batch) -> Result<(), BatchFailed> {
        if batch.is_empty() {
            return Ok(());
        }
        self.run_chain(batch, None)
    }

    /// [`Worker::process`]; with `flush`, `batch` is empty and the keyed
    /// stages run their timers alone (see [`Flush`]).
    fn run_chain(&mut self, batch: Batch, flush: Option<Flush>) -> Result<(), BatchFailed> {
        if flush.is_none() {
            self.stats.batches.fetch_add(1, Ordering::Relaxed);
            if let Some(c) = self.stats.partition_records.get(self.partition) {
                c.fetch_add(batch.len() as u64, Ordering::Relaxed);
            }
        }
        let input_len = batch.len();
        // Size now; duration and the batch span when this is dropped (before
        // the hand-off to the sinks, or on a failure).
        let timer = self.metrics.start_batch(self.partition, input_len);
        // For the watermark (windowed pipelines only): the input's latest event
        // time; times windows cannot take do not move it.
        let max_input_ts = self
            .window
            .as_ref()
            .filter(|feed| !feed.watermark_from_output)
            .and_then(|_| max_event_time(&batch));
        let watched = self.dead_letter.tap().watched();
        if watched {
            let seen = crate::obs::tap::Seen {
                pipeline: &self.pipeline,
                at: "source",
                partition: Some(self.partition),
                plugin_version: None,
            };
            self.dead_letter.tap().offer(&Point::Source, seen, &batch);
        }
        let mut refused: Vec<Refused> = Vec::new();
        let mut skipped = 0;
        let mut current = batch;
        for (index, step) in self.stages.iter_mut().enumerate() {
            let stage = match step {
                Step::Plugin(stage) => stage,
                Step::Join(..) | Step::Dedup(..) => {
                    let mut span = timer.stage(step.label());
                    let (output, on_error) = match step {
                        Step::Join(spec) => (builtin::join(spec, &current), spec.on_error),
                        Step::Dedup(spec, state) => (state.process(spec, &current), spec.on_error),
                        Step::Plugin(_) => unreachable!("matched above"),
                    };
                    let label = step.label();
                    let stats = &self.stats;
                    stats
                        .duplicates
                        .fetch_add(output.duplicates, Ordering::Relaxed);
                    stats.late.fetch_add(output.late, Ordering::Relaxed);
                    stats
                        .unmatched
                        .fetch_add(output.unmatched, Ordering::Relaxed);
                    if let Some((_, reason)) = output.refused.first() {
                        span.fail(&format!(
                            "{} record(s) refused ({on_error:?}): {reason}",
                            output.refused.len()
                        ));
                        match on_error {
                            OnError::Skip => {
                                tracing::warn!(
                                    pipeline = %self.pipeline,
                                    stage = %label,
                                    partition = self.partition,
                                    records = output.refused.len(),
                                    "records skipped (on_error = \"skip\"): {reason}"
                                );
                                skipped += output.refused.len();
                            }
                            OnError::DeadLetter => {
                                for (i, reason) in output.refused {
                                    if let Some(event) = current.get(i as usize) {
                                        refused.push(Refused::of(index, None, &event, reason));
                                    }
                                }
                            }
                            OnError::Stop => {
                                let reason = reason.clone();
                                timer.fail(&reason);
                                tracing::error!(
                                    pipeline = %self.pipeline,
                                    stage = %label,
                                    partition = self.partition,
                                    "record refused, stopping the pipeline (on_error = \"stop\"): {reason}"
                                );
                                return Err(BatchFailed {
                                    error: anyhow!(
                                        "pipeline `{}` stopped (on_error = \"stop\"): stage {label} refused a record: {reason}",
                                        self.pipeline
                                    ),
                                    unaccounted: input_len,
                                });
                            }
                        }
                    }
                    current = output.events;
                    if watched {
                        let seen = crate::obs::tap::Seen {
                            pipeline: &self.pipeline,
                            at: label,
                            partition: Some(self.partition),
                            plugin_version: None,
                        };
                        self.dead_letter
                            .tap()
                            .offer(&Point::Stage(index), seen, &current);
                    }
                    continue;
                }
            };
            if current.is_empty() && !stage.is_keyed() {
                continue;
            }
            let mut span = timer.stage(&stage.spec().label);
            let processed = if stage.is_keyed() {
                stage.process_keyed(&current, self.task, flush)
            } else {
                stage.process(&mut current)
            };
            // After the call: the stage may have switched to a reloaded version.
            span.plugin(stage.plugin());
            let output = match processed {
                Ok(output) => output,
                Err(error) => {
                    span.fail(&error.to_string());
                    timer.fail(&error.to_string());
                    let spec = stage.spec();
                    let plugin = stage.plugin();
                    // Under another policy, only a stage that cannot go on
                    // (a keyed state whose spill file failed) fails a batch.
                    let why = if spec.on_error == OnError::Stop {
                        "on_error = \"stop\""
                    } else {
                        "the stage cannot go on"
                    };
                    tracing::error!(
                        pipeline = %self.pipeline,
                        stage = %spec.label,
                        plugin = %plugin.name,
                        version = %plugin.version,
                        partition = self.partition,
                        records = current.len(),
                        "batch failed, stopping the pipeline ({why}): {error}"
                    );
                    return Err(BatchFailed {
                        error: anyhow!(
                            "pipeline `{}` stopped ({why}): stage {} ({} {}) failed on a batch of {} record(s): {error}",
                            self.pipeline,
                            spec.label,
                            plugin.name,
                            plugin.version,
                            current.len()
                        ),
                        unaccounted: input_len,
                    });
                }
            };
            if let Some((_, reason)) = output.failed.first() {
                span.fail(&format!(
                    "{} record(s) failed ({:?}): {reason}",
                    output.failed.len(),
                    stage.spec().on_error
                ));
            }
            for (i, reason) in output.rejected {
                if let Some(event) = current.get(i as usize) {
                    refused.push(Refused::of(index, Some(stage.plugin()), &event, reason));
                }
            }
            match stage.spec().on_error {
                OnError::Skip => {
                    if !output.failed.is_empty() {
                        tracing::warn!(
                            pipeline = %self.pipeline,
                            stage = %stage.spec().label,
                            partition = self.partition,
                            records = output.failed.len(),
                            "records skipped (on_error = \"skip\"): {}",
                            output.failed[0].1
                        );
                    }
                    skipped += output.failed.len();
                }
                OnError::DeadLetter | OnError::Stop => {
                    for (i, reason) in output.failed {
                        if let Some(event) = current.get(i as usize) {
                            refused.push(Refused::of(index, Some(stage.plugin()), &event, reason));
                        }
                    }
                }
            }
            current = output.events;
            if watched {
                let seen = crate::obs::tap::Seen {
                    pipeline: &self.pipeline,
                    at: &stage.spec().label,
                    partition: Some(self.partition),
                    plugin_version: Some(&stage.plugin().version),
                };
                self.dead_letter
                    .tap()
                    .offer(&Point::Stage(index), seen, &current);
            }
        }
        self.dead_letter_refused(&refused)
            .map_err(|error| BatchFailed {
                error,
                unaccounted: input_len,
            })?;
        self.stats
            .skipped
            .fetch_add(skipped as u64, Ordering::Relaxed);
        // The batch is timed up to its hand-off: once a record is out, every
        // figure of its batch is.
        drop(timer);
        let written = match &self.window {
            Some(feed) => {
                let max_ts = match feed.watermark_from_output {
                    true => max_event_time(&current),
                    false => max_input_ts,
                };
                self.to_window(feed, current, max_ts)
            }
            None => self.write(current),
        };
        written.map_err(|error| BatchFailed {
            error,
            unaccounted: input_len.saturating_sub(refused.len() + skipped),
        })
    }

    /// Hands the chain's output to the window operator: what it needs is read
    /// here (in parallel over partitions); records that cannot be aggregated go
    /// to the dead-letter sink.
    fn to_window(
        &self,
        feed: &WindowFeed,
        output: Batch,
        max_input_ts: Option<i64>,
    ) -> anyhow::Result<()> {
        let (events, values, unreadable) = feed.spec.prepare(output);
        if !unreadable.is_empty() {
            let records: Vec<DeadRecord<'_>> = unreadable
                .iter()
                .map(|u| DeadRecord {
                    stage: "window",
                    plugin: None,
                    partition: Some(self.partition),
                    reason: &u.reason,
                    key: &u.key,
                    timestamp_ms: Some(u.timestamp_ms),
                    original: &u.value,
                })
                .collect();
            self.dead_letter.send(&records)?;
            self.stats
                .rejected
                .fetch_add(records.len() as u64, Ordering::Relaxed);
        }
        feed.tx
            .send(WindowMsg::Batch(WindowInput {
                partition: self.partition,
                task: self.task,
                max_input_ts,
                events,
                values,
            }))
            .map_err(|_| {
                anyhow!(
                    "the window operator of pipeline `{}` has stopped",
                    self.pipeline
                )
            })
    }

    /// Sends the records the stages refused to the dead-letter sink, and counts
    /// them.
    fn dead_letter_refused(&self, refused: &[Refused]) -> anyhow::Result<()> {
        let records: Vec<DeadRecord<'_>> = refused
            .iter()
            .map(|r| DeadRecord {
                stage: self.stages[r.stage].label(),
                plugin: r
                    .plugin
                    .as_ref()
                    .map(|p| (p.name.as_str(), p.version.as_str())),
                partition: Some(self.partition),
                reason: &r.reason,
                key: &r.key,
                timestamp_ms: Some(r.timestamp_ms),
                original: &r.original,
            })
            .collect();
        self.dead_letter.send(&records)?;
        self.stats
            .rejected
            .fetch_add(records.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    /// Sends the output to every sink. An output record holding a line break
    /// would split into two lines in a file, and one larger than a sink takes
    /// (a Kafka sink's `message.max.bytes`) could never be written: they go to
    /// the dead-letter sink instead (so every sink still gets the same
    /// records).
    fn write(&self, output: Batch) -> anyhow::Result<()> {
        if output.is_empty() {
            return Ok(());
        }
        let limit = self
            .sinks
            .iter()
            .filter_map(|s| s.max_record_bytes.map(|m| (m, s.name.as_str())))
            .min();
        // One pass: the index of each record no sink may get, and why.
        let mut refused: Vec<(usize, String)> = Vec::new();
        for event in &output {
            if event.value().contains(&b'\n') {
                refused.push((
                    event.index(),
                    "output record contains a line break; sinks write one record per line".into(),
                ));
            } else if let Some((max, sink)) = limit {
                let size = event.key().map_or(0, <[u8]>::len)
                    + event.value().len()
                    + event
                        .headers()
                        .map(|(n, v)| n.len() + v.len())
                        .sum::<usize>();
                if size > max {
                    refused.push((
                        event.index(),
                        format!(
                            "output record of {size} bytes (key, value and headers) is larger than sink `{sink}` takes ({max} bytes, its message.max.bytes)"
                        ),
                    ));
                }
            }
        }
        let broken: Vec<DeadRecord<'_>> = refused
            .iter()
            .map(|(i, reason)| {
                let event = output.get(*i).expect("an index of the batch");
                DeadRecord {
                    stage: "output",
                    plugin: None,
                    partition: Some(self.partition),
                    reason,
                    key: event.key().unwrap_or_default(),
                    timestamp_ms: Some(event.timestamp_ms()),
                    original: event.value(),
                }
            })
            .collect();
        self.dead_letter.send(&broken)?;
        self.stats
            .rejected
            .fetch_add(broken.len() as u64, Ordering::Relaxed);
        drop(broken);
        let output = if refused.is_empty() {
            output
        } else {
            let mut skip = refused.iter().map(|(i, _)| *i).peekable();
            let mut kept = Batch::with_capacity(output.len() - refused.len(), output.values_len());
            for event in &output {
                if skip.next_if_eq(&event.index()).is_none() {
                    kept.push_event(&event);
                }
            }
            kept
        };
        crate::sink::deliver(&self.sinks, output, &self.stats, &self.dead_letter)
    }
}

/// A batch that did not go through: why, and how many of its input records are
/// in no other counter.
#[derive(Debug)]
struct BatchFailed {
    error: anyhow::Error,
    unaccounted: usize,
}

/// A record a stage refused (or whose batch failed under `dead-letter`), kept
/// until the chain has run.
#[derive(Debug)]
struct Refused {
    /// Index of the stage in the chain.
    stage: usize,
    /// The plugin version that ran the batch (none for a built-in stage).
    plugin: Option<Arc<Plugin>>,
    reason: String,
    key: Vec<u8>,
    timestamp_ms: i64,
    /// The bytes the stage received.
    original: Vec<u8>,
}

impl Refused {
    fn of(stage: usize, plugin: Option<&Arc<Plugin>>, event: &Event<'_>, reason: String) -> Self {
        Refused {
            stage,
            plugin: plugin.cloned(),
            reason,
            key: event.key().unwrap_or_default().to_vec(),
            timestamp_ms: event.timestamp_ms(),
            original: event.value().to_vec(),
        }
    }
}

#[cfg(test)]
mod tests {
    //! A worker on the test thread (or one of its own), fed chunks over a flume
    //! channel as the source feeds it, writing to real file sinks.

    use std::time::Duration;

    use serde_json::Value;

    use super::*;
    use crate::config::BreakerConfig;
    use crate::pipeline::batcher::BatchLimits;
    use crate::pipeline::processor::StageSpec;
    use crate::source::Record;
    use crate::testkit::{FileSink, plugins_dir, slot, stage_spec};

    const PIPELINE: &str = "unit-worker";

    /// Batches close at `max_records` records or at the end of the input
    /// (never on time in these tests).
    fn limits(max_records: usize) -> BatchLimits {
        BatchLimits {
            max_records,
            max_bytes: 1 << 30,
            interval: Duration::from_secs(3600),
        }
    }

    fn worker(
        specs: Vec<Arc<StageSpec>>,
        max_records: usize,
        sinks: Vec<SinkHandle>,
        dead_letter: Option<SinkHandle>,
        window: Option<WindowFeed>,
    ) -> (Worker, Arc<Stats>) {
        let running = Arc::new(Chain {
            limits: limits(max_records),
            stages: specs.into_iter().map(StepSpec::Plugin).collect(),
        });
        let stats = Arc::new(Stats::default());
        let worker = Worker {
            pipeline: PIPELINE.into(),
            partition: 0,
            chain: Arc::new(ArcSwap::new(running.clone())),
            stages: Step::chain(PIPELINE, 0, &running.stages, &Default::default())
                .expect("the chain starts"),
            running,
            refused: None,
            window,
            sinks,
            dead_letter: DeadLetter::new(PIPELINE, dead_letter),
            stats: stats.clone(),
            metrics: crate::obs::metrics::pipeline(PIPELINE),
            stop: Arc::new(AtomicBool::new(false)),
            task: None,
            saved_and_stopped: false,
        };
        (worker, stats)
    }

    fn identity() -> Vec<Arc<StageSpec>> {
        vec![stage_spec(
            slot("identity"),
            &[],
            OnError::Stop,
            BreakerConfig::default(),
        )]
    }

    /// `misbehave` failing on batches that hold `POISON`.
    fn poisoned(on_error: OnError) -> Vec<Arc<StageSpec>> {
        vec![stage_spec(
            slot("misbehave"),
            &[("mode", "fail"), ("trigger", "POISON")],
            on_error,
            BreakerConfig {
                failures: 1000,
                ..BreakerConfig::default()
            },
        )]
    }

    /// Record `i`: key `k{i}`, value `value`, event time `1000 + i`.
    fn record(i: usize, value: &str) -> Record {
        Record {
            key: format!("k{i}").into_bytes(),
            value: value.as_bytes().to_vec(),
            timestamp_ms: 1000 + i as i64,
            headers: Vec::new(),
            task: None,
        }
    }

    /// Records `r{i}` for `i` in `range`; those in `poison` carry `POISON`.
    fn records(range: std::ops::Range<usize>, poison: &[usize]) -> Vec<Record> {
        range
            .map(|i| {
                let value = if poison.contains(&i) {
                    format!("r{i} POISON")
                } else {
                    format!("r{i}")
                };
                record(i, &value)
            })
            .collect()
    }

    fn values(records: &[Record]) -> Vec<String> {
        records
            .iter()
            .map(|r| String::from_utf8(r.value.clone()).unwrap())
            .collect()
    }

    fn count(counter: &std::sync::atomic::AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    /// The chunks, queued, then the end of the input: the worker's whole run.
    fn feed(chunks: Vec<Chunk>) -> flume::Receiver<Chunk> {
        let (tx, rx) = flume::unbounded();
        for chunk in chunks {
            tx.send(chunk).unwrap();
        }
        rx
    }

    fn json(line: &str) -> Value {
        serde_json::from_str(line).unwrap_or_else(|e| panic!("{line}: {e}"))
    }

    #[test]
    fn records_reach_the_sink_in_order_in_batches_of_max_records() {
        let out = FileSink::start("out");
        let (worker, stats) = worker(identity(), 3, vec![out.handle()], None, None);
        let input = records(0..10, &[]);
        worker
            .run(feed(vec![
                Chunk::Records(input[..4].to_vec().into()),
                Chunk::Records(input[4..].to_vec().into()),
            ]))
            .unwrap();
        assert_eq!(out.finish(), values(&input));
        assert_eq!(count(&stats.batches), 10_u64.div_ceil(3));
        assert_eq!(count(&stats.records_out), 10);
        for counter in [&stats.rejected, &stats.skipped, &stats.failed] {
            assert_eq!(count(counter), 0);
        }
    }

    #[test]
    fn a_barrier_is_acknowledged_once_the_records_before_it_are_in_the_sink() {
        let out = FileSink::start("out");
        // Batches never fill up: only the barrier closes the first one.
        let (worker, stats) = worker(identity(), 1000, vec![out.handle()], None, None);
        let (tx, rx) = flume::unbounded();
        let thread = std::thread::spawn(move || worker.run(rx));
        let before = records(0..5, &[]);
        tx.send(Chunk::Records(before.clone().into())).unwrap();
        let (ack_tx, ack_rx) = flume::unbounded();
        tx.send(Chunk::Barrier(Barrier {
            id: 1,
            kind: crate::checkpoint::BarrierKind::Periodic,
            ack: ack_tx,
        }))
        .unwrap();
        let ack = ack_rx
            .recv_timeout(Duration::from_secs(60))
            .expect("the barrier is acknowledged");
        assert!(matches!(ack, Ack::Worker), "{ack:?}");
        // Everything the worker sent before the ack is in the file once synced.
        let handle = out.handle();
        let len = handle.sync().unwrap().expect("a file's length");
        drop(handle);
        let lines = crate::testkit::read_lines(out.path());
        assert_eq!(lines, values(&before));
        let bytes: usize = values(&before).iter().map(|v| v.len() + 1).sum();
        assert_eq!(len, bytes as u64);
        assert_eq!(count(&stats.batches), 1);

        let after = records(5..8, &[]);
        tx.send(Chunk::Records(after.clone().into())).unwrap();
        drop(tx);
        thread.join().unwrap().unwrap();
        assert_eq!(out.finish(), values(&[before, after].concat()));
        assert_eq!(count(&stats.batches), 2);
        assert_eq!(count(&stats.records_out), 8);
    }

    #[test]
    fn a_delivery_request_is_answered_once_the_records_before_it_are_written() {
        let out = FileSink::start("out");
        // Batches never fill up: only the request closes the first one.
        let (worker, stats) = worker(identity(), 1000, vec![out.handle()], None, None);
        let (tx, rx) = flume::unbounded();
        let thread = std::thread::spawn(move || worker.run(rx));
        let before = records(0..5, &[]);
        tx.send(Chunk::Records(before.clone().into())).unwrap();
        let (done_tx, done_rx) = flume::unbounded();
        tx.send(Chunk::Deliver(done_tx)).unwrap();
        done_rx
            .recv_timeout(Duration::from_secs(60))
            .expect("the request is answered")
            .expect("delivered");
        // Read without syncing first: the worker had the sink write them.
        assert_eq!(crate::testkit::read_lines(out.path()), values(&before));
        assert_eq!(count(&stats.batches), 1);

        let after = records(5..8, &[]);
        tx.send(Chunk::Records(after.clone().into())).unwrap();
        drop(tx);
        thread.join().unwrap().unwrap();
        assert_eq!(out.finish(), values(&[before, after].concat()));
    }

    #[test]
    fn a_windowed_worker_passes_the_barrier_between_the_batches_around_it() {
        let spec = Arc::new(WindowSpec {
            kind: crate::window::WindowKind::Tumbling { size: 1000 },
            delay_ms: 0,
            lateness_ms: 0,
            idle_timeout: Duration::from_secs(3600),
            mode: crate::config::OutputMode::Append,
            grouping: crate::window::operator::Grouping::Key,
            aggregates: Vec::new(),
            pointers: Vec::new(),
            late: crate::config::LatePolicy::Drop,
        });
        let (window_tx, window_rx) = flume::unbounded();
        let window_feed = WindowFeed {
            spec,
            tx: window_tx,
            watermark_from_output: false,
        };
        let (worker, stats) = worker(identity(), 1000, Vec::new(), None, Some(window_feed));
        let (ack, _acks) = flume::unbounded();
        let barrier = Barrier {
            id: 7,
            kind: crate::checkpoint::BarrierKind::Periodic,
            ack,
        };
        let mut before = records(0..4, &[]);
        before[2].timestamp_ms = 5000; // the largest, not the last
        let after = records(4..6, &[]);
        worker
            .run(feed(vec![
                Chunk::Records(before.clone().into()),
                Chunk::Barrier(barrier),
                Chunk::Records(after.clone().into()),
            ]))
            .unwrap();
        let msgs: Vec<WindowMsg> = window_rx.drain().collect();
        assert_eq!(msgs.len(), 3, "{msgs:?}");
        match &msgs[0] {
            WindowMsg::Batch(input) => {
                assert_eq!(crate::testkit::values_of(&input.events), values(&before));
                assert_eq!(input.max_input_ts, Some(5000));
                assert_eq!(input.partition, 0);
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(&msgs[1], WindowMsg::Barrier(b) if b.id == 7));
        match &msgs[2] {
            WindowMsg::Batch(input) => {
                assert_eq!(crate::testkit::values_of(&input.events), values(&after));
                assert_eq!(input.max_input_ts, Some(1005));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(count(&stats.batches), 2);
        // The window operator counts what it writes, not the worker.
        assert_eq!(count(&stats.records_out), 0);
    }

    #[test]
    fn a_batch_never_mixes_the_records_of_two_kafka_partitions() {
        let spec = Arc::new(WindowSpec {
            kind: crate::window::WindowKind::Tumbling { size: 1000 },
            delay_ms: 0,
            lateness_ms: 0,
            idle_timeout: Duration::from_secs(3600),
            mode: crate::config::OutputMode::Append,
            grouping: crate::window::operator::Grouping::Key,
            aggregates: Vec::new(),
            pointers: Vec::new(),
            late: crate::config::LatePolicy::Drop,
        });
        let (window_tx, window_rx) = flume::unbounded();
        let window_feed = WindowFeed {
            spec,
            tx: window_tx,
            watermark_from_output: false,
        };
        let (worker, _stats) = worker(identity(), 1000, Vec::new(), None, Some(window_feed));
        let tasks = [Some(1), Some(1), Some(2), Some(1), Some(1)];
        let input: Vec<Record> = tasks
            .iter()
            .enumerate()
            .map(|(i, task)| Record {
                task: *task,
                ..record(i, &format!("r{i}"))
            })
            .collect();
        worker
            .run(feed(vec![
                Chunk::Records(input[..2].to_vec().into()),
                Chunk::Records(input[2..].to_vec().into()),
            ]))
            .unwrap();
        let batches: Vec<(Option<u32>, Vec<String>)> = window_rx
            .drain()
            .map(|msg| match msg {
                WindowMsg::Batch(input) => (input.task, crate::testkit::values_of(&input.events)),
                other => panic!("{other:?}"),
            })
            .collect();
        let strings = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            batches,
            vec![
                (Some(1), strings(&["r0", "r1"])),
                (Some(2), strings(&["r2"])),
                (Some(1), strings(&["r3", "r4"])),
            ]
        );
    }

    #[test]
    fn poison_records_go_to_the_dead_letter_sink_and_the_rest_on() {
        let out = FileSink::start("out");
        let dlq = FileSink::start("dlq");
        let (worker, stats) = worker(
            poisoned(OnError::DeadLetter),
            5,
            vec![out.handle()],
            Some(dlq.handle()),
            None,
        );
        let bad = [2, 13, 14];
        let input = records(0..20, &bad);
        worker
            .run(feed(vec![Chunk::Records(input.clone().into())]))
            .unwrap();
        let good: Vec<String> = (0..20)
            .filter(|i| !bad.contains(i))
            .map(|i| format!("r{i}"))
            .collect();
        assert_eq!(out.finish(), good);
        let dead = dlq.finish();
        assert_eq!(dead.len(), bad.len());
        let version = crate::wasm::plugin::content_version(
            &std::fs::read(plugins_dir().join("misbehave.wasm")).unwrap(),
        );
        for (line, i) in dead.iter().zip(bad) {
            let d = json(line);
            assert_eq!(d["pipeline"], PIPELINE);
            assert_eq!(d["stage"], "0:misbehave");
            assert_eq!(d["plugin"], "misbehave");
            assert_eq!(d["plugin_version"], version.as_str());
            assert_eq!(d["partition"], 0);
            assert_eq!(d["original"], format!("r{i} POISON"));
            assert_eq!(d["key"], format!("k{i}"));
            assert_eq!(d["timestamp_ms"], 1000 + i as i64);
            assert_eq!(
                d["reason"],
                "plugin error: misbehave: batch failed on purpose"
            );
        }
        assert_eq!(count(&stats.batches), 4);
        assert_eq!(count(&stats.rejected), bad.len() as u64);
        assert_eq!(count(&stats.records_out), good.len() as u64);
        assert_eq!(count(&stats.skipped), 0);
    }

    #[test]
    fn skip_drops_the_poison_records_and_counts_them() {
        let out = FileSink::start("out");
        let dlq = FileSink::start("dlq");
        let (worker, stats) = worker(
            poisoned(OnError::Skip),
            5,
            vec![out.handle()],
            Some(dlq.handle()),
            None,
        );
        let bad = [0, 9];
        worker
            .run(feed(vec![Chunk::Records(records(0..12, &bad).into())]))
            .unwrap();
        let good: Vec<String> = (0..12)
            .filter(|i| !bad.contains(i))
            .map(|i| format!("r{i}"))
            .collect();
        assert_eq!(out.finish(), good);
        assert!(dlq.finish().is_empty());
        assert_eq!(count(&stats.skipped), 2);
        assert_eq!(count(&stats.rejected), 0);
        assert_eq!(count(&stats.records_out), 10);
    }

    #[test]
    fn stop_fails_the_worker_and_counts_everything_not_written() {
        let out = FileSink::start("out");
        let (worker, stats) = worker(poisoned(OnError::Stop), 5, vec![out.handle()], None, None);
        let stop = worker.stop.clone();
        let input = records(0..20, &[7]);
        let error = worker
            .run(feed(vec![
                Chunk::Records(input[..12].to_vec().into()),
                Chunk::Records(input[12..].to_vec().into()),
            ]))
            .unwrap_err();
        assert!(
            error.to_string().contains("stopped (on_error = \"stop\")"),
            "{error}"
        );
        assert!(stop.load(Ordering::Relaxed), "the source is told to stop");
        // The batch before the poisoned one was written; nothing after.
        assert_eq!(out.finish(), values(&input[..5]));
        assert_eq!(count(&stats.records_out), 5);
        assert_eq!(count(&stats.failed), 20 - 5);
    }

    #[test]
    fn records_the_plugin_refuses_are_dead_lettered_once_with_the_first_reason() {
        let out = FileSink::start("out");
        let dlq = FileSink::start("dlq");
        let specs = vec![stage_spec(
            slot("misbehave"),
            &[("mode", "reject"), ("trigger", "BAD")],
            OnError::DeadLetter,
            BreakerConfig::default(),
        )];
        let (worker, stats) = worker(specs, 4, vec![out.handle()], Some(dlq.handle()), None);
        let input: Vec<Record> = ["a", "BAD1", "b", "c", "BAD4", "d"]
            .iter()
            .enumerate()
            .map(|(i, v)| record(i, v))
            .collect();
        worker
            .run(feed(vec![Chunk::Records(input.into())]))
            .unwrap();
        assert_eq!(out.finish(), ["a", "b", "c", "d"]);
        let dead: Vec<Value> = dlq.finish().iter().map(|l| json(l)).collect();
        let originals: Vec<&str> = dead
            .iter()
            .map(|d| d["original"].as_str().unwrap())
            .collect();
        assert_eq!(originals, ["BAD1", "BAD4"]);
        for d in &dead {
            assert_eq!(d["reason"], "misbehave: rejected on purpose");
        }
        assert_eq!(count(&stats.rejected), 2);
        assert_eq!(count(&stats.records_out), 4);
    }

    #[test]
    fn an_output_record_with_a_line_break_is_dead_lettered_not_split() {
        let out = FileSink::start("out");
        let dlq = FileSink::start("dlq");
        let (worker, stats) = worker(identity(), 10, vec![out.handle()], Some(dlq.handle()), None);
        let input = vec![record(0, "a"), record(1, "b\nc"), record(2, "d")];
        worker
            .run(feed(vec![Chunk::Records(input.into())]))
            .unwrap();
        assert_eq!(out.finish(), ["a", "d"]);
        let dead = dlq.finish();
        assert_eq!(dead.len(), 1);
        let d = json(&dead[0]);
        assert_eq!(d["stage"], "output");
        assert_eq!(d["original"], "b\nc");
        assert!(d["reason"].as_str().unwrap().contains("line break"), "{d}");
        assert_eq!(count(&stats.rejected), 1);
        assert_eq!(count(&stats.records_out), 2);
    }

    #[test]
    fn a_reloaded_chain_is_taken_up_at_the_next_batch() {
        let out = FileSink::start("out");
        let (worker, _stats) = worker(identity(), 1000, vec![out.handle()], None, None);
        let chain = worker.chain.clone();
        let (tx, rx) = flume::unbounded();
        let thread = std::thread::spawn(move || worker.run(rx));
        tx.send(Chunk::Records(vec![record(0, "a"), record(1, "b")].into()))
            .unwrap();
        let (ack, acks) = flume::unbounded();
        tx.send(Chunk::Barrier(Barrier {
            id: 1,
            kind: crate::checkpoint::BarrierKind::Periodic,
            ack,
        }))
        .unwrap();
        acks.recv_timeout(Duration::from_secs(60)).unwrap();
        // A config reload: the chain now upper-cases.
        chain.store(Arc::new(Chain {
            limits: limits(1000),
            stages: vec![StepSpec::Plugin(stage_spec(
                slot("uppercase"),
                &[],
                OnError::Stop,
                BreakerConfig::default(),
            ))],
        }));
        tx.send(Chunk::Records(vec![record(2, "c"), record(3, "d")].into()))
            .unwrap();
        drop(tx);
        thread.join().unwrap().unwrap();
        assert_eq!(out.finish(), ["a", "b", "C", "D"]);
    }

    #[test]
    fn records_the_window_cannot_read_are_dead_lettered_before_it() {
        let spec = Arc::new(WindowSpec {
            kind: crate::window::WindowKind::Tumbling { size: 1000 },
            delay_ms: 0,
            lateness_ms: 0,
            idle_timeout: Duration::from_secs(3600),
            mode: crate::config::OutputMode::Append,
            grouping: crate::window::operator::Grouping::Key,
            aggregates: vec![crate::window::operator::AggSpec {
                op: crate::aggregate::Op::Sum,
                field: Some(0),
                name: "sum".into(),
                udf: None,
            }],
            pointers: vec![crate::decode::Pointer::parse("/v").unwrap()],
            late: crate::config::LatePolicy::Drop,
        });
        let dlq = FileSink::start("dlq");
        let (window_tx, window_rx) = flume::unbounded();
        let (worker, stats) = worker(
            identity(),
            10,
            Vec::new(),
            Some(dlq.handle()),
            Some(WindowFeed {
                spec,
                tx: window_tx,
                watermark_from_output: false,
            }),
        );
        let input = vec![
            record(0, r#"{"v":1}"#),
            record(1, "not json"),
            record(2, r#"{"v":"x"}"#),
            record(3, r#"{"v":2.5}"#),
        ];
        worker
            .run(feed(vec![Chunk::Records(input.into())]))
            .unwrap();
        let dead: Vec<Value> = dlq.finish().iter().map(|l| json(l)).collect();
        let originals: Vec<&str> = dead
            .iter()
            .map(|d| d["original"].as_str().unwrap())
            .collect();
        assert_eq!(originals, ["not json", r#"{"v":"x"}"#]);
        assert!(dead.iter().all(|d| d["stage"] == "window"));
        assert!(
            dead[1]["reason"].as_str().unwrap().contains("not a number"),
            "{}",
            dead[1]
        );
        assert_eq!(count(&stats.rejected), 2);
        let msgs: Vec<WindowMsg> = window_rx.drain().collect();
        let [WindowMsg::Batch(input)] = &msgs[..] else {
            panic!("{msgs:?}")
        };
        assert_eq!(
            crate::testkit::values_of(&input.events),
            [r#"{"v":1}"#, r#"{"v":2.5}"#]
        );
        assert_eq!(input.values, vec![Some(json("1")), Some(json("2.5"))]);
        // The watermark counts every record the worker took in.
        assert_eq!(input.max_input_ts, Some(1003));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig {
            cases: 16,
            ..proptest::prelude::ProptestConfig::default()
        })]

        /// However the records are cut into chunks and batches, every one
        /// reaches the sink once, in order, in ⌈n / max_records⌉ batches.
        #[test]
        fn any_chunking_keeps_every_record_in_order(
            chunks in proptest::collection::vec(0usize..20, 1..8),
            max_records in 1usize..8,
        ) {
            let out = FileSink::start("out");
            let (worker, stats) = worker(identity(), max_records, vec![out.handle()], None, None);
            let mut next = 0;
            let mut all = Vec::new();
            let msgs = chunks
                .iter()
                .map(|&n| {
                    let chunk = records(next..next + n, &[]);
                    next += n;
                    all.extend(values(&chunk));
                    Chunk::Records(chunk.into())
                })
                .collect();
            worker.run(feed(msgs)).unwrap();
            proptest::prop_assert_eq!(out.finish(), all);
            proptest::prop_assert_eq!(count(&stats.records_out), next as u64);
            proptest::prop_assert_eq!(count(&stats.batches), next.div_ceil(max_records) as u64);
        }
    }
}
