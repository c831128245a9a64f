//! Sinks: where output records go. Each sink runs on its own thread behind a
//! bounded channel of batches, so a slow sink fills its channel and blocks the
//! workers that feed it (backpressure), and nothing is dropped.
//!
//! Each kind is one file holding its config struct, its checks, its writer and
//! its tests, behind the [`Sink`] and [`Output`] traits; [`KINDS`] lists them.
//!
//! - `file` ([`file`]), `stdout` ([`stdout`]): a batch is written as
//!   newline-terminated values with a single `write_all`, so the output only
//!   ever holds whole batches of whole lines;
//! - `blackhole` ([`blackhole`]): discards everything (benchmarks);
//! - `kafka` ([`kafka`]): one Kafka record per event, through an idempotent
//!   producer; a sync waits for every delivery report;
//! - `postgres` ([`postgres`]): one row per record, a batch per statement and
//!   transaction, `append` or `upsert`;
//! - `http` ([`http`]): a batch per POST (or several, past `max_body_bytes`),
//!   retried with back-off and an `Idempotency-Key`;
//! - `parquet` ([`parquet`]): Parquet files in Hive-style partition folders,
//!   each renamed into place once whole (at checkpoints with `exactly_once`).
//!
//! A record an output refuses for good (a database constraint, an HTTP 4xx)
//! goes to the sending pipeline's dead-letter sink (see
//! [`Output::take_refused`]); a transient failure is tried again (see
//! [`Retry`]).

pub mod dead_letter;

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use sluice_plugin_sdk::Batch;

pub use crate::config::{BuildContext, Claim};
use crate::config::{ComponentTable, ConfigError, ConfigSource};
use crate::sink::dead_letter::{DeadLetter, DeadRecord};
use crate::stats::Stats;

pub mod blackhole;
pub mod file;
pub mod http;
pub mod kafka;
pub mod parquet;
pub mod postgres;
pub mod stdout;

/// A kind of sink: its `type` name and the function that reads its table
/// (see [`crate::config::Kind`]).
pub type Kind = crate::config::Kind<dyn SinkConfig>;

/// Every kind of sink. A new kind: its file, and one line here.
pub const KINDS: &[Kind] = &[
    Kind {
        name: "stdout",
        parse: parse_as::<stdout::StdoutConfig>,
        fields: crate::config::fields_of::<stdout::StdoutConfig>,
    },
    Kind {
        name: "file",
        parse: parse_as::<file::FileConfig>,
        fields: crate::config::fields_of::<file::FileConfig>,
    },
    Kind {
        name: "blackhole",
        parse: parse_as::<blackhole::BlackholeConfig>,
        fields: crate::config::fields_of::<blackhole::BlackholeConfig>,
    },
    Kind {
        name: "http",
        parse: parse_as::<http::HttpConfig>,
        fields: crate::config::fields_of::<http::HttpConfig>,
    },
    Kind {
        name: "kafka",
        parse: parse_as::<kafka::KafkaConfig>,
        fields: crate::config::fields_of::<kafka::KafkaConfig>,
    },
    Kind {
        name: "postgres",
        parse: parse_as::<postgres::PostgresConfig>,
        fields: crate::config::fields_of::<postgres::PostgresConfig>,
    },
    Kind {
        name: "parquet",
        parse: parse_as::<parquet::ParquetConfig>,
        fields: crate::config::fields_of::<parquet::ParquetConfig>,
    },
];

fn parse_as<T: SinkConfig + serde::de::DeserializeOwned + 'static>(
    table: &ComponentTable,
    source: &ConfigSource,
) -> Result<Box<dyn SinkConfig>, ConfigError> {
    Ok(Box::new(crate::config::deserialize_own::<T>(
        table,
        source,
        &[],
    )?))
}

/// Reads a `[sinks.NAME]` table: `type` first, then the kind's fields.
///
/// # Errors
/// An unknown `type`, or a field the kind refuses, located in the file.
pub fn parse(
    table: &ComponentTable,
    source: &ConfigSource,
) -> Result<Box<dyn SinkConfig>, ConfigError> {
    crate::config::read_kind(KINDS, "sink", table, source)
}

/// A sink's config, as its kind read it: checks itself and builds the sink.
pub trait SinkConfig: fmt::Debug + Send + Sync {
    /// Checks the fields and builds the sink.
    ///
    /// # Errors
    /// A located [`ConfigError`].
    fn build(&self, cx: &BuildContext<'_>) -> Result<Built, ConfigError>;
}

/// A built sink and what it claims (see [`Claim`]).
#[derive(Debug)]
pub struct Built {
    /// The sink.
    pub spec: SinkSpec,
    /// What it holds alone, each with its place in the file.
    pub claims: crate::config::ClaimList,
}

/// A sink, ready to open; one file per kind under `sink/`. Its `Debug` text
/// is its identity: a config reload restarts nothing whose text is the same.
pub trait Sink: fmt::Debug + Send + Sync + 'static {
    /// Opens the output, on the sink's own thread (an open may wait: a FIFO
    /// for its reader; nothing else waits for it, and the records wait in the
    /// sink's queue). With `resume` (a checkpointed pipeline resuming), a sink
    /// that can be cut back to a checkpoint's length does so (see [`Resume`]).
    /// An open that waits gives up once [`stopping`] says so.
    ///
    /// # Errors
    /// The output cannot be opened, or the daemon stopped while it waited.
    fn open(&self, name: &str, resume: Option<Resume>) -> anyhow::Result<Box<dyn Output>>;

    /// The largest record (key + value + headers, bytes) the sink takes, if it
    /// has a limit (Kafka: the producer's `message.max.bytes`).
    fn max_record_bytes(&self) -> Option<usize> {
        None
    }

    /// Whether the sink commits only at checkpoints (two-phase): its pipeline
    /// must be checkpointed, and it must be that pipeline's alone.
    fn exactly_once(&self) -> bool {
        false
    }
}

/// Batches waiting for one sink. Small: each entry is a whole batch.
const SINK_QUEUE_BATCHES: usize = 16;

/// A built sink, shared: compared by its identity (its `Debug` text).
#[derive(Debug, Clone)]
pub struct SinkSpec(pub Arc<dyn Sink>);

impl PartialEq for SinkSpec {
    fn eq(&self, other: &Self) -> bool {
        format!("{:?}", self.0) == format!("{:?}", other.0)
    }
}

/// How a file sink of a resuming, checkpointed pipeline is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resume {
    /// After a crash: cut back to this length (bytes), what the checkpoint
    /// recorded.
    CutTo(u64),
    /// After a stop or the end of the input (or a sink another pipeline
    /// shares): keep the output as it is (a file not truncated either). The
    /// value the checkpoint recorded for the sink, if any (a postgres sink's
    /// epoch).
    Keep(Option<u64>),
}

/// When the daemon began to stop (SIGTERM, SIGINT); unset while it runs.
static STOPPED_AT: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();

/// How long a sink that cannot write (a full disk, brokers or a database
/// away) goes on trying once the daemon is stopping, before it gives up on
/// what it holds.
pub const STOP_LIMIT: Duration = Duration::from_secs(30);

/// The daemon is stopping: a sink that waits for its output (a FIFO's reader)
/// gives up at once, one that retries a write or waits for acknowledgements
/// gives up [`STOP_LIMIT`] after the stop (what it could not write is counted
/// as unwritten; a checkpointed pipeline replays it at the next start, a Kafka
/// source reads again what it did not commit).
pub fn daemon_stopping() {
    let _ = STOPPED_AT.set(Instant::now());
}

/// Whether the daemon is stopping (see [`daemon_stopping`]): an open that
/// waits (see [`Sink::open`]) gives up.
pub fn stopping() -> bool {
    STOPPED_AT.get().is_some()
}

/// When a sink still trying gives up: [`STOP_LIMIT`] after the daemon began
/// to stop; `None` while it runs.
pub fn stop_deadline() -> Option<Instant> {
    STOPPED_AT.get().map(|at| *at + STOP_LIMIT)
}

pub use crate::stats::SinkStats;

/// One batch handed to every sink of a pipeline: counted as the pipeline's
/// `records_out` once the last sink has written it, as `unwritten` if it was
/// handed to all of them and a sink stopped before writing it (dropped
/// unwritten). A batch that could not be handed to every sink is the
/// sender's to count (the pipeline counts it as failed).
#[derive(Debug)]
struct Tally {
    records: u64,
    remaining: AtomicUsize,
    handed: AtomicBool,
    /// The most records one sink refused (see [`Output::take_refused`]): they
    /// went to the dead-letter sink, and are not in `records_out`.
    refused: AtomicU64,
    stats: Arc<Stats>,
    /// Where the records a sink refuses go: the sending pipeline's
    /// dead-letter sink.
    dead_letter: DeadLetter,
}

impl Tally {
    fn written(&self) {
        if self.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.stats.records_out.fetch_add(
                self.records - self.refused.load(Ordering::Relaxed),
                Ordering::Relaxed,
            );
        }
    }
}

impl Drop for Tally {
    fn drop(&mut self) {
        if *self.handed.get_mut() && *self.remaining.get_mut() > 0 {
            self.stats
                .unwritten
                .fetch_add(self.records, Ordering::Relaxed);
        }
    }
}

/// Hands `batch` to every sink in `sinks` (blocking while a queue is full)
/// and counts it in `stats` as the sinks write it (see [`Stats::records_out`],
/// [`Stats::unwritten`]). With no sink, the records are out at once. A
/// record a sink refuses (see [`Output::take_refused`]) goes to
/// `dead_letter` with the sink's reason, and counts as `rejected`.
///
/// # Errors
/// A sink has stopped; the batch is then not counted here.
pub fn deliver(
    sinks: &[SinkHandle],
    batch: Batch,
    stats: &Arc<Stats>,
    dead_letter: &DeadLetter,
) -> anyhow::Result<()> {
    let tap = dead_letter.tap();
    if tap.watched() {
        for sink in sinks {
            let at = format!("sink:{}", sink.name);
            let seen = crate::obs::tap::Seen {
                pipeline: dead_letter.pipeline(),
                at: &at,
                ..Default::default()
            };
            tap.offer(
                &crate::obs::tap::Point::Sink(sink.name.clone()),
                seen,
                &batch,
            );
        }
    }
    if sinks.is_empty() || batch.is_empty() {
        stats
            .records_out
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        return Ok(());
    }
    let tally = Arc::new(Tally {
        records: batch.len() as u64,
        remaining: AtomicUsize::new(sinks.len()),
        handed: AtomicBool::new(false),
        refused: AtomicU64::new(0),
        stats: stats.clone(),
        dead_letter: dead_letter.clone(),
    });
    let batch = Arc::new(batch);
    for sink in sinks {
        sink.tx
            .send(SinkMsg::Records(batch.clone(), Some(tally.clone())))
            .map_err(|_| anyhow::anyhow!("sink `{}` has stopped", sink.name))?;
    }
    tally.handed.store(true, Ordering::Relaxed);
    Ok(())
}

/// What a sink's thread is sent.
#[derive(Debug)]
enum SinkMsg {
    /// A batch, and how it is counted (none: the sender counts it itself).
    Records(Arc<Batch>, Option<Arc<Tally>>),
    /// Write out everything sent before, to stable storage, and answer with the
    /// output's length in bytes (`None`: not a file).
    Sync(flume::Sender<anyhow::Result<Option<u64>>>),
    /// The checkpoint the last sync was for is saved.
    Committed,
}

/// A handle to a running sink; clone it to feed the sink from several workers.
#[derive(Debug, Clone)]
pub struct SinkHandle {
    /// The sink's name in the config.
    pub name: String,
    /// The largest record (key + value + headers, bytes) the sink takes, if it
    /// has a limit (Kafka: the producer's `message.max.bytes`). A larger one
    /// could never be written: the workers send it to the dead-letter sink
    /// instead of letting it stop the pipeline at every restart.
    pub max_record_bytes: Option<usize>,
    tx: flume::Sender<SinkMsg>,
}

impl SinkHandle {
    /// Hands a batch to the sink; blocks while its queue is full.
    ///
    /// # Errors
    /// The sink has stopped (after a write error, which it logged).
    pub fn send(&self, batch: Arc<Batch>) -> anyhow::Result<()> {
        self.send_batch(batch)
    }

    /// Whether the sink's thread has ended (a write error, which it logged):
    /// a worker with nothing to send checks this, so that a pipeline whose
    /// sink failed stops even when no more records come (a quiet socket).
    pub fn has_stopped(&self) -> bool {
        self.tx.is_disconnected()
    }

    fn send_batch(&self, batch: Arc<Batch>) -> anyhow::Result<()> {
        self.tx
            .send(SinkMsg::Records(batch, None))
            .map_err(|_| anyhow::anyhow!("sink `{}` has stopped", self.name))
    }

    /// Waits until the sink has written everything sent to it before this call
    /// (by any handle whose send returned) and synced it to stable storage
    /// (`fdatasync` for a file); returns a file sink's length in bytes, `None`
    /// for other sinks. A checkpoint records this length.
    ///
    /// # Errors
    /// The sink has stopped, or the write or sync failed.
    pub fn sync(&self) -> anyhow::Result<Option<u64>> {
        self.start_sync()?.wait()
    }

    /// Tells the sink that the checkpoint its last sync was for is saved (the
    /// second phase of a two-phase commit, see [`Output::committed`]); does
    /// not wait.
    ///
    /// # Errors
    /// The sink has stopped.
    pub fn committed(&self) -> anyhow::Result<()> {
        self.tx
            .send(SinkMsg::Committed)
            .map_err(|_| anyhow::anyhow!("sink `{}` has stopped", self.name))
    }

    /// [`SinkHandle::sync`] in two steps, so that several sinks sync at once:
    /// asks for the sync, then [`PendingSync::wait`] waits for it.
    ///
    /// # Errors
    /// The sink has stopped.
    pub fn start_sync(&self) -> anyhow::Result<PendingSync> {
        let (tx, rx) = flume::bounded(1);
        self.tx
            .send(SinkMsg::Sync(tx))
            .map_err(|_| anyhow::anyhow!("sink `{}` has stopped", self.name))?;
        Ok(PendingSync {
            name: self.name.clone(),
            rx,
            sink: self.tx.clone(),
        })
    }
}

/// A sync a sink was asked for (see [`SinkHandle::start_sync`]).
#[derive(Debug)]
pub struct PendingSync {
    name: String,
    rx: flume::Receiver<anyhow::Result<Option<u64>>>,
    /// The sink's input: disconnected once its thread is gone (a sink that
    /// failed leaves the sync request queued, unanswered).
    sink: flume::Sender<SinkMsg>,
}

impl PendingSync {
    /// Waits for the sync; the file sink's length in bytes, `None` for other
    /// sinks.
    ///
    /// # Errors
    /// The sink stopped, or the write or sync failed.
    pub fn wait(self) -> anyhow::Result<Option<u64>> {
        loop {
            match self.rx.recv_timeout(std::time::Duration::from_millis(100)) {
                Ok(result) => return result,
                Err(flume::RecvTimeoutError::Timeout) if !self.sink.is_disconnected() => {}
                Err(_) => anyhow::bail!("sink `{}` has stopped", self.name),
            }
        }
    }
}

/// A running sink thread.
#[derive(Debug)]
pub struct RunningSink {
    /// The handle the pipelines clone.
    pub handle: SinkHandle,
    /// The sink's own figures.
    pub stats: Arc<SinkStats>,
    thread: JoinHandle<anyhow::Result<()>>,
}

/// How long [`RunningSink::start`] waits for an output to open before it lets
/// the open go on in the background (a FIFO waiting for its reader).
const OPEN_WAIT: Duration = Duration::from_millis(500);

/// The first wait before a write is tried again; it doubles up to
/// [`RETRY_MAX`].
const RETRY_FIRST: Duration = Duration::from_millis(100);
/// The longest wait between two tries of a write.
const RETRY_MAX: Duration = Duration::from_secs(5);
/// A sink that keeps failing to write logs it again at most this often.
const RETRY_LOG_EVERY: Duration = Duration::from_secs(30);

impl RunningSink {
    /// Starts the sink's thread, which opens its output. With `resume` (a
    /// checkpointed pipeline resuming), a file sink is not truncated; after a
    /// crash it is cut back to the length its checkpoint recorded: what was
    /// written after the checkpoint is written again by the replay.
    ///
    /// Waits at most [`OPEN_WAIT`] for the open: an output that takes longer
    /// (a FIFO waiting for its reader) opens in the background while the
    /// records wait in the sink's queue, and nothing else (the admin API, the
    /// other sinks) waits for it.
    ///
    /// # Errors
    /// The output cannot be opened (found within [`OPEN_WAIT`]).
    pub fn start(name: &str, spec: &SinkSpec, resume: Option<Resume>) -> anyhow::Result<Self> {
        let (tx, rx) = flume::bounded::<SinkMsg>(SINK_QUEUE_BATCHES);
        let (opened_tx, opened_rx) = flume::bounded::<anyhow::Result<()>>(1);
        let stats = Arc::new(SinkStats::default());
        let sink = spec.0.clone();
        let (sink_name, sink_stats) = (name.to_string(), stats.clone());
        let thread = std::thread::Builder::new()
            .name(format!("sink-{name}"))
            .spawn(move || {
                sink_stats.blocked.store(true, Ordering::Relaxed);
                let out = sink.open(&sink_name, resume);
                sink_stats.blocked.store(false, Ordering::Relaxed);
                let out = match out {
                    Ok(out) => {
                        let _ = opened_tx.send(Ok(()));
                        out
                    }
                    Err(e) => {
                        // Whoever waits for the open reports it; once
                        // nobody waits, the log says it.
                        if let Err(flume::SendError(Err(e))) = opened_tx.send(Err(e)) {
                            tracing::error!(sink = %sink_name, "sink failed: {e:#}");
                            return Err(e);
                        }
                        return Err(anyhow::anyhow!("sink `{sink_name}` could not open"));
                    }
                };
                drop(opened_tx);
                let result = drain(out, &rx, &sink_name, &sink_stats);
                if let Err(e) = &result {
                    tracing::error!(sink = %sink_name, "sink failed: {e:#}");
                }
                result
            })?;
        match opened_rx.recv_timeout(OPEN_WAIT) {
            Ok(Err(e)) => {
                let _ = thread.join();
                return Err(e);
            }
            Ok(Ok(())) | Err(flume::RecvTimeoutError::Disconnected) => {}
            Err(flume::RecvTimeoutError::Timeout) => {
                tracing::info!(
                    sink = name,
                    "the sink's output is not open yet (a FIFO waiting for its reader?): records wait for it"
                );
            }
        }
        Ok(RunningSink {
            handle: SinkHandle {
                name: name.to_string(),
                max_record_bytes: spec.0.max_record_bytes(),
                tx,
            },
            stats,
            thread,
        })
    }

    /// Waits for the sink to write out everything it was sent (once every handle
    /// is dropped) and flushes it to stable storage.
    ///
    /// # Errors
    /// A write or flush failed.
    pub fn finish(self) -> anyhow::Result<()> {
        let RunningSink { handle, thread, .. } = self;
        drop(handle);
        thread
            .join()
            .map_err(|_| anyhow::anyhow!("sink thread panicked"))?
    }
}

/// The sink thread's loop: writes each batch it is sent (see [`write_retrying`]),
/// syncs on request, and finishes the output once every sender is gone.
fn drain(
    mut out: Box<dyn Output>,
    rx: &flume::Receiver<SinkMsg>,
    name: &str,
    stats: &SinkStats,
) -> anyhow::Result<()> {
    // A sink that commits at checkpoints has written a batch only once the
    // checkpoint after it is saved: until then its tallies wait here (and
    // count as unwritten if the sink stops first).
    let deferred = out.commits_at_checkpoints();
    let mut uncommitted: Vec<(u64, Option<Arc<Tally>>)> = Vec::new();
    let mut prepared: Vec<(u64, Option<Arc<Tally>>)> = Vec::new();
    let written = |(records, tally): (u64, Option<Arc<Tally>>)| {
        stats.records_written.fetch_add(records, Ordering::Relaxed);
        if let Some(tally) = tally {
            tally.written();
        }
    };
    for msg in rx.iter() {
        match msg {
            SinkMsg::Records(batch, tally) => {
                write_retrying(out.as_mut(), &batch, name, stats)?;
                let refused = out.take_refused();
                if !refused.is_empty() {
                    dead_letter_refused(&batch, &refused, tally.as_deref(), name, stats)?;
                }
                let done = (batch.len() as u64 - refused.len() as u64, tally);
                if deferred {
                    uncommitted.push(done);
                } else {
                    written(done);
                }
            }
            SinkMsg::Sync(reply) => {
                let synced = out.sync();
                let failure = synced.as_ref().err().map(|e| format!("{e:#}"));
                let _ = reply.send(synced);
                if let Some(e) = failure {
                    anyhow::bail!("sync failed: {e}");
                }
                prepared.append(&mut uncommitted);
            }
            SinkMsg::Committed => {
                out.committed()?;
                prepared.drain(..).for_each(written);
            }
        }
    }
    out.finish()
}

/// Sends the records of `batch` that the sink refused to the dead-letter sink
/// of the pipeline that sent it (`tally`'s), stage `sink:NAME`; without a
/// tally (the batch is itself dead letters) they are logged, not sent on.
///
/// # Errors
/// The dead-letter sink has stopped.
fn dead_letter_refused(
    batch: &Batch,
    refused: &[Refused],
    tally: Option<&Tally>,
    name: &str,
    stats: &SinkStats,
) -> anyhow::Result<()> {
    stats
        .records_refused
        .fetch_add(refused.len() as u64, Ordering::Relaxed);
    let stage = format!("sink:{name}");
    let Some(tally) = tally else {
        for r in refused {
            let original = batch.get(r.index).map(|e| e.value()).unwrap_or_default();
            tracing::warn!(
                sink = name,
                reason = %r.reason,
                "a dead letter was refused by the dead-letter sink itself, and is dropped: {}",
                String::from_utf8_lossy(&original[..original.len().min(1024)])
            );
        }
        return Ok(());
    };
    if tally.dead_letter.sink().is_some_and(|dl| dl.name == name) {
        anyhow::bail!("the sink refused records and is its own dead-letter sink");
    }
    tally
        .refused
        .fetch_max(refused.len() as u64, Ordering::Relaxed);
    let records: Vec<DeadRecord<'_>> = refused
        .iter()
        .filter_map(|r| {
            let event = batch.get(r.index)?;
            Some(DeadRecord {
                stage: &stage,
                plugin: None,
                partition: None,
                reason: &r.reason,
                key: event.key().unwrap_or_default(),
                timestamp_ms: Some(event.timestamp_ms()),
                original: event.value(),
            })
        })
        .collect();
    tally.dead_letter.send(&records)?;
    tally
        .stats
        .rejected
        .fetch_add(records.len() as u64, Ordering::Relaxed);
    Ok(())
}

/// A record an output refused for good (a database constraint, an HTTP 4xx):
/// it goes to the dead-letter sink with the reason, and the sink goes on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// The record's index in the batch.
    pub index: usize,
    /// Why, in the words of whatever refused it (the database's error text,
    /// the HTTP status and body).
    pub reason: String,
}

/// Marks a write error as one that may go away by itself (a database
/// connection lost, a server restarting): attach it with
/// `error.context(Retry("…"))` and the sink's thread writes the batch again,
/// with back-off, instead of stopping (see [`is_transient`]).
#[derive(Debug, Clone, Copy)]
pub struct Retry(pub &'static str);

impl fmt::Display for Retry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

/// How long the server that refused a write asked to wait before the next
/// try (HTTP `Retry-After`): attach it under [`Retry`], as
/// `error.context(RetryAfter(wait)).context(Retry("…"))`; the next try comes
/// no sooner (see [`write_retrying`]).
#[derive(Debug, Clone, Copy)]
pub struct RetryAfter(pub Duration);

impl fmt::Display for RetryAfter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the server asks to wait {:?}", self.0)
    }
}

/// Whether a write error may go away by itself: the output marked it
/// [`Retry`] (a file sink: its disk or quota full, `ENOSPC`/`EDQUOT`; a
/// database connection lost).
pub fn is_transient(error: &anyhow::Error) -> bool {
    error.downcast_ref::<Retry>().is_some()
}

/// Writes `batch`; a transient error (see [`is_transient`]) is tried again,
/// after 100 ms, doubling up to 5 s, each wait drawn between half and all of
/// it ("equal jitter", so that sinks failing together do not retry in step),
/// or after the [`RetryAfter`] the error carries if that is longer, for as
/// long as it lasts: the sink's queue fills meanwhile and the pipelines wait
/// (backpressure), and nothing is dropped. Once the daemon is stopping it gives up after [`STOP_LIMIT`].
/// Logs the first failure, then every 30 s, and the recovery; counts the
/// tries in [`SinkStats::write_retries`].
///
/// # Errors
/// A write error that is not transient, or a transient one when giving up.
fn write_retrying(
    out: &mut dyn Output,
    batch: &Batch,
    name: &str,
    stats: &SinkStats,
) -> anyhow::Result<()> {
    let mut delay = RETRY_FIRST;
    let mut failing: Option<(Instant, u64)> = None;
    let mut logged: Option<Instant> = None;
    loop {
        let error = match out.write_batch(batch) {
            Ok(()) => {
                if let Some((since, tries)) = failing {
                    stats.blocked.store(false, Ordering::Relaxed);
                    tracing::info!(
                        sink = name,
                        retries = tries,
                        waited_s = since.elapsed().as_secs_f64(),
                        "the sink writes again"
                    );
                }
                return Ok(());
            }
            Err(e) if is_transient(&e) => e,
            Err(e) => return Err(e),
        };
        if stop_deadline().is_some_and(|d| Instant::now() >= d) {
            return Err(error.context(format!(
                "the daemon stopped {} s ago and the sink still cannot write: giving up on this batch of {} record(s) and those queued behind it",
                STOP_LIMIT.as_secs(),
                batch.len()
            )));
        }
        let (_, tries) = failing.get_or_insert((Instant::now(), 0));
        *tries += 1;
        stats.write_retries.fetch_add(1, Ordering::Relaxed);
        stats.blocked.store(true, Ordering::Relaxed);
        if logged.is_none_or(|t| t.elapsed() >= RETRY_LOG_EVERY) {
            logged = Some(Instant::now());
            tracing::warn!(
                sink = name,
                retries = *tries,
                "cannot write: {error:#}; trying again (up to every {} s) while the records wait",
                RETRY_MAX.as_secs()
            );
        }
        let asked = error.downcast_ref::<RetryAfter>().map(|r| r.0);
        let wait = jittered(delay).max(asked.unwrap_or_default());
        // Not past the stop's deadline, if there is one.
        let until_deadline = stop_deadline().map(|d| d.saturating_duration_since(Instant::now()));
        std::thread::sleep(until_deadline.map_or(wait, |left| wait.min(left)));
        delay = (delay * 2).min(RETRY_MAX);
    }
}

/// A wait between `delay / 2` and `delay`, drawn at random ("equal jitter":
/// AWS Architecture Blog, "Exponential Backoff And Jitter").
fn jittered(delay: Duration) -> Duration {
    use std::hash::{BuildHasher as _, Hasher as _};
    // A fresh `RandomState` is randomly keyed: its hash is a random number.
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(delay.subsec_nanos());
    let fraction = (hasher.finish() >> 11) as f64 / (1u64 << 53) as f64;
    delay / 2 + delay.mul_f64(fraction / 2.0)
}

/// Newline-terminated values of `batch`, into `buf` (cleared first).
pub fn lines_of(batch: &Batch, buf: &mut Vec<u8>) {
    buf.clear();
    buf.reserve(batch.values_len() + batch.len());
    for event in batch {
        buf.extend_from_slice(event.value());
        buf.push(b'\n');
    }
}

/// A sink's open output, driven by the sink's thread.
pub trait Output: Send {
    /// Writes a batch (all of it, or fails). A failed write leaves the output
    /// as it was before the batch where it can (a file is cut back), so that
    /// the batch can be written again: a transient error (see
    /// [`is_transient`]) is tried again.
    ///
    /// # Errors
    /// The write failed; unless transient, the sink stops.
    fn write_batch(&mut self, batch: &Batch) -> anyhow::Result<()>;
    /// The records of the last [`Output::write_batch`] that the output
    /// refused for good (the rest were written): they go to the sending
    /// pipeline's dead-letter sink. Called once after each write.
    fn take_refused(&mut self) -> Vec<Refused> {
        Vec::new()
    }
    /// Writes out what was written so far, durably; a file's length in bytes
    /// (`None` for other outputs), which a checkpoint records.
    ///
    /// # Errors
    /// The write or the sync failed.
    fn sync(&mut self) -> anyhow::Result<Option<u64>>;
    /// Whether what it writes becomes visible only at checkpoints (a
    /// two-phase commit): its records count as written once
    /// [`Output::committed`] says so, not when written.
    fn commits_at_checkpoints(&self) -> bool {
        false
    }
    /// The checkpoint of the last [`Output::sync`] is saved: a sink that
    /// commits in two phases commits what that sync prepared.
    ///
    /// # Errors
    /// The sink cannot go on.
    fn committed(&mut self) -> anyhow::Result<()> {
        Ok(())
    }
    /// Writes out everything; the sink is done.
    ///
    /// # Errors
    /// The final write or sync failed.
    fn finish(&mut self) -> anyhow::Result<()>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jittered_waits_stay_between_half_and_all() {
        let delay = Duration::from_millis(800);
        let waits: Vec<Duration> = (0..200).map(|_| jittered(delay)).collect();
        assert!(waits.iter().all(|w| *w >= delay / 2 && *w <= delay));
        // Drawn, not fixed: 200 draws are not all one value.
        assert!(waits.iter().any(|w| *w != waits[0]));
    }

    #[test]
    fn retry_after_is_found_under_retry() {
        let e = anyhow::anyhow!("503")
            .context(RetryAfter(Duration::from_secs(7)))
            .context(Retry("try again"));
        assert!(is_transient(&e));
        assert_eq!(
            e.downcast_ref::<RetryAfter>().map(|r| r.0),
            Some(Duration::from_secs(7))
        );
    }
}
