//! A running pipeline: one source thread, a bounded channel per partition, one
//! worker thread per partition, all feeding the shared sinks.
//!
//! ```text
//! source ──► router ──► channel[p] ──► worker p: batcher → processors → sinks
//! ```

pub mod worker;

pub mod processor;

pub mod batcher;

pub mod builtin;

pub mod keyed;
pub mod spill;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context as _;

use arc_swap::ArcSwap;

use crate::checkpoint::{Checkpoint, CheckpointSpec, Checkpointer, Store};
use crate::pipeline::processor::{Step, StepSpec};
use crate::pipeline::worker::{WindowFeed, Worker};
use crate::sink::SinkHandle;
use crate::sink::dead_letter::DeadLetter;
use crate::source::router::Router;
use crate::source::{self, SourceSpec};
use crate::window::operator::{self, WindowSpec};

/// Batches each worker may have queued for the window operator.
const WINDOW_QUEUE_BATCHES: usize = 4;

pub use crate::stats::Stats;

pub use crate::pipeline::worker::Chain;

/// Everything needed to start a pipeline.
#[derive(Debug)]
pub struct PipelineSpec {
    /// Name in the config.
    pub name: String,
    /// Its source.
    pub source: SourceSpec,
    /// Number of partition workers.
    pub partitions: usize,
    /// `partition_by = "balance"`: records go round-robin, whatever the key.
    pub balance: bool,
    /// Batch limits and processor chain: what a config reload may change in a
    /// running pipeline.
    pub chain: Arc<Chain>,
    /// Names of the output sinks.
    pub sinks: Vec<String>,
    /// Name of the dead-letter sink.
    pub dead_letter: Option<String>,
    /// Capacity of each partition channel, in records (rounded down to whole
    /// chunks of [`source::CHUNK_RECORDS`], at least one).
    pub queue_records: usize,
    /// Windowed aggregation after the chain, if configured.
    pub window: Option<Arc<WindowSpec>>,
    /// How often to checkpoint, if at all.
    pub checkpoint: Option<CheckpointSpec>,
}

/// A pipeline's checkpointing at start: where checkpoints go and the one to
/// resume from.
#[derive(Debug, Clone)]
pub struct Resume {
    /// The store.
    pub store: Arc<Store>,
    /// The last checkpoint, if any (already checked against the pipeline's
    /// shape).
    pub checkpoint: Option<Checkpoint>,
    /// The pipeline's sinks that no other pipeline of the config writes to.
    pub exclusive_sinks: std::collections::BTreeSet<String>,
}

impl PipelineSpec {
    /// Everything but the [`Chain`], field by field: what a config reload
    /// cannot change without restarting the pipeline.
    pub fn shape(&self) -> Vec<(&'static str, String)> {
        vec![
            ("source", format!("{:?}", self.source)),
            ("partitions", self.partitions.to_string()),
            ("sinks", format!("{:?}", self.sinks)),
            ("dead_letter", format!("{:?}", self.dead_letter)),
            ("queue_records", self.queue_records.to_string()),
            ("window or aggregate", format!("{:?}", self.window)),
            ("checkpoint", format!("{:?}", self.checkpoint)),
            // A Kafka source tags records with their partition's task, and
            // moves keyed state through the changelog, only when the chain
            // it started with has a keyed processor.
            (
                "keyed processors on a Kafka source",
                (self.source.input.window_tasks() && self.has_keyed()).to_string(),
            ),
        ]
    }

    /// Whether the chain has a keyed processor.
    pub fn has_keyed(&self) -> bool {
        self.chain
            .stages
            .iter()
            .any(|s| matches!(s, StepSpec::Plugin(s) if s.keyed.is_some()))
    }

    /// What a checkpoint must match to be restored (see [`Checkpoint::shape`]).
    pub fn checkpoint_shape(&self) -> BTreeMap<String, String> {
        shape_of(&self.source, self.partitions, self.window.as_deref())
    }

    /// The last checkpoint of this pipeline in `store`, if it can be resumed.
    ///
    /// # Errors
    /// The store cannot be read, or the checkpoint was taken with another
    /// source, partition count or window.
    pub fn load_checkpoint(&self, store: &Store) -> anyhow::Result<Option<Checkpoint>> {
        let Some(checkpoint) = store.load(&self.name)? else {
            return Ok(None);
        };
        let changes = crate::checkpoint::shape_changes(&checkpoint.shape, &self.checkpoint_shape());
        anyhow::ensure!(
            changes.is_empty(),
            "pipeline `{}`: its checkpoint in {} cannot be resumed: changed since it was taken: {}. Undo the change, or (with the daemon stopped) forget the checkpoint with `sluice checkpoints --config <this config file> --reset {}`: the pipeline then starts from the beginning of its input{}",
            self.name,
            store.path().display(),
            changes
                .iter()
                .map(|c| c.split(':').next().unwrap_or_default())
                .collect::<Vec<_>>()
                .join(" and "),
            self.name,
            changes
                .iter()
                .map(|c| format!("\n  {c}"))
                .collect::<String>()
        );
        Ok(Some(checkpoint))
    }
}

/// A pipeline whose threads are running.
#[derive(Debug)]
pub struct RunningPipeline {
    /// Name in the config.
    pub name: String,
    /// Live counters.
    pub stats: Arc<Stats>,
    /// The chain its workers run; store a new one to swap it at their next
    /// batch boundary.
    pub chain: Arc<ArcSwap<Chain>>,
    started: Instant,
    source: JoinHandle<anyhow::Result<()>>,
    workers: Vec<JoinHandle<anyhow::Result<()>>>,
}

impl PipelineSpec {
    /// Makes every partition's plugin instances, then starts the worker threads and
    /// the source thread. Setting `cancel` makes the source stop reading; the
    /// workers then drain what was read and stop.
    ///
    /// # Errors
    /// A plugin instance cannot be made or configured, a sink is missing, or a
    /// thread cannot be spawned.
    pub fn start(
        &self,
        sinks: &BTreeMap<String, SinkHandle>,
        cancel: Arc<AtomicBool>,
        resume: Option<Resume>,
    ) -> anyhow::Result<RunningPipeline> {
        let stats = Arc::new(Stats::with_partitions(self.partitions));
        let chain = Arc::new(ArcSwap::new(self.chain.clone()));
        let sink = |name: &String| {
            sinks
                .get(name)
                .cloned()
                .with_context(|| format!("sink `{name}` is not running"))
        };
        let outputs = self
            .sinks
            .iter()
            .map(sink)
            .collect::<anyhow::Result<Vec<_>>>()?;
        let dead_letter =
            DeadLetter::new(&self.name, self.dead_letter.as_ref().map(sink).transpose()?);
        dead_letter.tap().set_points(crate::obs::tap::Points {
            stages: self
                .chain
                .stages
                .iter()
                .map(|s| s.label().to_string())
                .collect(),
            window: self.window.is_some(),
            sinks: self.sinks.clone(),
            dead_letter: self.dead_letter.is_some(),
        });
        // Set when a worker stops on an error, so the source stops too.
        let failed = Arc::new(AtomicBool::new(false));
        let restored = resume.as_ref().and_then(|r| r.checkpoint.clone());
        if let Some(c) = &restored {
            tracing::info!(
                pipeline = %self.name,
                checkpoint = c.id,
                position = %c.position,
                open_windows = c.window.as_ref().map_or(0, |w| w.fixed.len() + w.sessions.len()),
                dedup_keys = c.stages.values().map(|s| match s {
                    crate::checkpoint::StageSnapshot::Dedup(d) => d.keys.len(),
                    crate::checkpoint::StageSnapshot::Keyed(_) => 0,
                }).sum::<usize>(),
                keyed_keys = c.stages.values().map(|s| match s {
                    crate::checkpoint::StageSnapshot::Keyed(k) => k.entries.len(),
                    crate::checkpoint::StageSnapshot::Dedup(_) => 0,
                }).sum::<usize>(),
                finished = c.finished,
                "resuming from checkpoint"
            );
        }
        let (restored_window, resume_at, restored_stages) = match restored {
            Some(c) => (c.window.clone(), Some(c.position.clone()), c.stages),
            None => (None, None, Default::default()),
        };
        let checkpointed = self.checkpoint.is_some() && resume.is_some();
        let kafka = self.source.input.window_tasks();
        let checkpointer = match (&self.checkpoint, &resume) {
            (Some(spec), Some(resume)) => Some(Checkpointer::new(
                self.name.clone(),
                *spec,
                resume.store.clone(),
                self.checkpoint_shape(),
                self.partitions,
                self.window.is_some(),
                (
                    self.sinks
                        .iter()
                        .chain(&self.dead_letter)
                        .map(sink)
                        .collect::<anyhow::Result<Vec<_>>>()?,
                    resume.exclusive_sinks.clone(),
                ),
                failed.clone(),
                resume.checkpoint.as_ref(),
            )),
            _ => None,
        };

        let mut senders = Vec::with_capacity(self.partitions);
        let mut workers = Vec::with_capacity(self.partitions + 1);
        // The window operator, fed by every worker.
        // A Kafka source sends the window operator the state of the partitions
        // it is assigned, and tells it which it lost.
        let mut window_control = None;
        let window = match &self.window {
            Some(spec) => {
                let (feed, handle, control) = self.spawn_window(
                    spec,
                    &outputs,
                    &dead_letter,
                    &stats,
                    restored_window,
                    checkpointed,
                    kafka,
                )?;
                workers.push(handle);
                window_control = control;
                Some(feed)
            }
            None => None,
        };
        for partition in 0..self.partitions {
            let stages = Step::chain(&self.name, partition, &self.chain.stages, &restored_stages)?;
            // A keyed state in the checkpoint that no stage takes up (its
            // plugin renamed or removed) is dropped: say so.
            for (name, snapshot) in &restored_stages {
                if let crate::checkpoint::StageSnapshot::Keyed(k) = snapshot
                    && name.starts_with(&format!("p{partition} keyed "))
                    && !stages.iter().any(|s| {
                        matches!(s, Step::Plugin(stage) if stage.is_keyed() && &stage.state_name() == name)
                    })
                {
                    tracing::warn!(
                        pipeline = %self.name,
                        partition,
                        state = %name,
                        keys = k.entries.len(),
                        timers = k.event_timers.len() + k.processing_timers.len(),
                        "the checkpoint holds a keyed state that no stage of the chain takes up (its plugin was renamed or removed): it is dropped"
                    );
                }
            }
            let worker = Worker {
                pipeline: self.name.clone(),
                partition,
                chain: chain.clone(),
                running: self.chain.clone(),
                refused: None,
                stages,
                window: window.clone(),
                sinks: outputs.clone(),
                dead_letter: dead_letter.clone(),
                stats: stats.clone(),
                metrics: crate::obs::metrics::pipeline(&self.name),
                stop: failed.clone(),
                task: None,
                saved_and_stopped: false,
            };
            let (tx, rx) = flume::bounded((self.queue_records / source::CHUNK_RECORDS).max(1));
            senders.push(tx);
            workers.push(
                std::thread::Builder::new()
                    .name(format!("{}-p{partition}", self.name))
                    .spawn(move || worker.run(rx))?,
            );
        }

        // The workers hold the window operator's senders now.
        drop(window);

        let spec = self.source.clone();
        let router = Router::new(self.partitions).balanced(self.balance);
        let source_stats = stats.clone();
        let pipeline = self.name.clone();
        let keyed = self.has_keyed();
        let source = std::thread::Builder::new()
            .name(format!("{}-source", self.name))
            .spawn(move || {
                let stop = || cancel.load(Ordering::Relaxed) || failed.load(Ordering::Relaxed);
                spec.input.run(source::SourceContext {
                    pipeline: &pipeline,
                    spec: &spec,
                    router,
                    partitions: senders,
                    dead_letter,
                    stats: source_stats,
                    stop: &stop,
                    checkpointer,
                    resume: resume_at,
                    window: window_control,
                    keyed,
                })
            })?;
        Ok(RunningPipeline {
            name: self.name.clone(),
            stats,
            chain,
            started: Instant::now(),
            source,
            workers,
        })
    }
}

/// A started window operator: the workers' feed, its thread, and the source's
/// control sender (see [`PipelineSpec::spawn_window`]).
type WindowStarted = (
    WindowFeed,
    JoinHandle<anyhow::Result<()>>,
    Option<flume::Sender<operator::WindowMsg>>,
);

impl PipelineSpec {
    /// Starts the window operator's thread; the feed the workers send it
    /// batches on, its handle, and (for a source with window tasks) the
    /// sender the source gives it partition state on.
    #[allow(clippy::too_many_arguments)]
    fn spawn_window(
        &self,
        spec: &Arc<WindowSpec>,
        outputs: &[SinkHandle],
        dead_letter: &DeadLetter,
        stats: &Arc<Stats>,
        restored: Option<crate::checkpoint::WindowSnapshot>,
        checkpointed: bool,
        tasks: bool,
    ) -> anyhow::Result<WindowStarted> {
        let (tx, rx) = flume::bounded(WINDOW_QUEUE_BATCHES * self.partitions);
        let control = tasks.then(|| tx.clone());
        let (spec2, name, partitions) = (spec.clone(), self.name.clone(), self.partitions);
        let (outputs, dead_letter, stats) = (outputs.to_vec(), dead_letter.clone(), stats.clone());
        let handle = std::thread::Builder::new()
            .name(format!("{}-window", self.name))
            .spawn(move || {
                operator::run(
                    &name,
                    &spec2,
                    partitions,
                    rx,
                    &outputs,
                    &dead_letter,
                    &stats,
                    restored,
                    checkpointed,
                    tasks,
                )
            })?;
        Ok((
            WindowFeed {
                spec: spec.clone(),
                tx,
                watermark_from_output: !self.source.decoder.has_timestamp()
                    && !self.source.input.stamps_event_time(),
            },
            handle,
            control,
        ))
    }
}

impl RunningPipeline {
    /// Waits for the source to end and the workers to drain.
    ///
    /// # Errors
    /// The first error of the source or a worker; the summary is returned either
    /// way.
    pub fn wait(self) -> (Summary, anyhow::Result<()>) {
        let mut result = join(self.source);
        for worker in self.workers {
            let r = join(worker);
            if result.is_ok() {
                result = r;
            }
        }
        let summary = Summary::of(&self.name, &self.stats, self.started.elapsed());
        if let Some(skew) = Stats::skew(&summary.partition_records)
            && skew >= SKEW_WARNING
        {
            tracing::warn!(
                pipeline = %self.name,
                partition_records = ?summary.partition_records,
                skew = format!("{skew:.2}"),
                "the partitions got their records unevenly: the busiest worker had {skew:.2}× the mean, and it bounds the pipeline (a skewed key; partition_by = \"balance\" spreads records evenly when no stage needs a key's records together)"
            );
        }
        (summary, result)
    }
}

fn join(handle: JoinHandle<anyhow::Result<()>>) -> anyhow::Result<()> {
    handle
        .join()
        .unwrap_or_else(|_| Err(anyhow::anyhow!("a pipeline thread panicked")))
}

/// The figures of one pipeline run.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    /// Pipeline name.
    pub pipeline: String,
    /// See [`Stats::records_in`].
    pub records_in: u64,
    /// See [`Stats::records_out`].
    pub records_out: u64,
    /// See [`Stats::unwritten`].
    pub unwritten: u64,
    /// See [`Stats::rejected`].
    pub rejected: u64,
    /// See [`Stats::skipped`].
    pub skipped: u64,
    /// See [`Stats::batches`].
    pub batches: u64,
    /// See [`Stats::late`].
    pub late: u64,
    /// See [`Stats::failed`].
    pub failed: u64,
    /// See [`Stats::checkpoints`].
    pub checkpoints: u64,
    /// See [`Stats::dropped`].
    pub dropped: u64,
    /// See [`Stats::duplicates`].
    pub duplicates: u64,
    /// See [`Stats::unmatched`].
    pub unmatched: u64,
    /// See [`Stats::partition_records`].
    pub partition_records: Vec<u64>,
    /// Wall time since the pipeline started.
    pub elapsed: Duration,
}

impl Summary {
    fn of(name: &str, stats: &Stats, elapsed: Duration) -> Self {
        Summary {
            pipeline: name.to_string(),
            records_in: stats.records_in.load(Ordering::Relaxed),
            records_out: stats.records_out.load(Ordering::Relaxed),
            unwritten: stats.unwritten.load(Ordering::Relaxed),
            rejected: stats.rejected.load(Ordering::Relaxed),
            skipped: stats.skipped.load(Ordering::Relaxed),
            batches: stats.batches.load(Ordering::Relaxed),
            late: stats.late.load(Ordering::Relaxed),
            failed: stats.failed.load(Ordering::Relaxed),
            checkpoints: stats.checkpoints.load(Ordering::Relaxed),
            dropped: stats.dropped.load(Ordering::Relaxed),
            duplicates: stats.duplicates.load(Ordering::Relaxed),
            unmatched: stats.unmatched.load(Ordering::Relaxed),
            partition_records: stats.partition_counts(),
            elapsed,
        }
    }

    /// Reads again the counters the sinks keep (`records_out`, `unwritten`,
    /// and `rejected` for the records a sink refused):
    /// a pipeline's workers end before its sinks have written everything, so
    /// the final figures are those read once the sinks have finished.
    pub fn settle(&mut self, stats: &Stats) {
        self.records_out = stats.records_out.load(Ordering::Relaxed);
        self.unwritten = stats.unwritten.load(Ordering::Relaxed);
        // Records a sink refused went to the dead-letter sink from its thread.
        self.rejected = stats.rejected.load(Ordering::Relaxed);
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.elapsed.as_secs_f64();
        let rate = if secs > 0.0 {
            self.records_in as f64 / secs
        } else {
            0.0
        };
        write!(
            f,
            "pipeline={} in={} out={} rejected={} skipped={} failed={} unwritten={} late={} batches={} checkpoints={} dropped={} duplicates={} unmatched={} elapsed={:.3}s rate={:.0} records/s",
            self.pipeline,
            self.records_in,
            self.records_out,
            self.rejected,
            self.skipped,
            self.failed,
            self.unwritten,
            self.late,
            self.batches,
            self.checkpoints,
            self.dropped,
            self.duplicates,
            self.unmatched,
            secs,
            rate
        )?;
        // With several partitions: how evenly they were loaded.
        if let Some(skew) = Stats::skew(&self.partition_records) {
            let counts: Vec<String> = self.partition_records.iter().map(u64::to_string).collect();
            write!(f, " partition_records={} skew={skew:.2}", counts.join("/"))?;
        }
        Ok(())
    }
}

/// The skew ([`Stats::skew`]) at which a finished pipeline warns: the
/// busiest partition had half as much again as the mean.
pub const SKEW_WARNING: f64 = 1.25;

/// The shape a checkpoint must match to be restored, field by field: the
/// source's input, format, key and timestamp, the partition count, the window
/// and the aggregates (not a
/// plugin's version, memory limit or deadline: an aggregator's state carries
/// over to a new version, as on a swap).
pub fn shape_of(
    source: &SourceSpec,
    partitions: usize,
    window: Option<&WindowSpec>,
) -> BTreeMap<String, String> {
    let mut shape = BTreeMap::new();
    shape.insert("source".to_string(), source.identity());
    // The key routes records to partitions and groups them; the event time
    // places them in windows.
    shape.insert(
        "source format, key and timestamp".to_string(),
        format!("{:?} {:?}", source.format, source.decoder),
    );
    shape.insert("partitions".to_string(), partitions.to_string());
    if let Some(w) = window {
        shape.insert(
            "window".to_string(),
            format!(
                "{:?}, watermark {} ms, allowed_lateness {} ms, {:?} mode, group by {:?}",
                w.kind, w.delay_ms, w.lateness_ms, w.mode, w.grouping
            ),
        );
        let aggregates: Vec<String> = w
            .aggregates
            .iter()
            .map(|a| {
                let field = a.field.map(|i| w.pointers[i].to_string());
                match &a.udf {
                    Some(u) => format!(
                        "{} = wasm {}({}) {:?}",
                        a.name,
                        u.slot.path.display(),
                        field.unwrap_or_default(),
                        u.config
                    ),
                    None => format!(
                        "{} = {}({})",
                        a.name,
                        a.op.name(),
                        field.unwrap_or_default()
                    ),
                }
            })
            .collect();
        shape.insert("aggregates".to_string(), aggregates.join(", "));
    }
    shape
}
