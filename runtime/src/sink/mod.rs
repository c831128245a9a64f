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
//!   producer; a sync waits for every delivery report.

pub mod dead_letter;

use std::fmt;
use std::sync::Arc;
use std::thread::JoinHandle;

use sluice_plugin_sdk::Batch;

pub use crate::config::{BuildContext, Claim};
use crate::config::{ComponentTable, ConfigError, ConfigSource};

pub mod blackhole;
pub mod file;
pub mod kafka;
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
        name: "kafka",
        parse: parse_as::<kafka::KafkaConfig>,
        fields: crate::config::fields_of::<kafka::KafkaConfig>,
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
    /// Opens the output. With `resume` (a checkpointed pipeline resuming), a
    /// sink that can be cut back to a checkpoint's length does so (see
    /// [`Resume`]).
    ///
    /// # Errors
    /// The output cannot be opened.
    fn open(&self, name: &str, resume: Option<Resume>) -> anyhow::Result<Box<dyn Output>>;

    /// The largest record (key + value + headers, bytes) the sink takes, if it
    /// has a limit (Kafka: the producer's `message.max.bytes`).
    fn max_record_bytes(&self) -> Option<usize> {
        None
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
    /// After a stop or the end of the input: nothing was written after the
    /// checkpoint; keep the file as it is (not truncated either).
    Keep,
}

/// What a sink's thread is sent.
#[derive(Debug)]
enum SinkMsg {
    /// A batch.
    Records(Arc<Batch>),
    /// Write out everything sent before, to stable storage, and answer with the
    /// output's length in bytes (`None`: not a file).
    Sync(flume::Sender<anyhow::Result<Option<u64>>>),
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
            .send(SinkMsg::Records(batch))
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
    thread: JoinHandle<anyhow::Result<()>>,
}

impl RunningSink {
    /// Opens the sink's output and starts its thread. With `resume` (a
    /// checkpointed pipeline resuming), a file sink is not truncated; after a
    /// crash it is cut back to the length its checkpoint recorded: what was
    /// written after the checkpoint is written again by the replay.
    ///
    /// # Errors
    /// The output file cannot be opened.
    pub fn start(name: &str, spec: &SinkSpec, resume: Option<Resume>) -> anyhow::Result<Self> {
        let mut out = spec.0.open(name, resume)?;
        let (tx, rx) = flume::bounded::<SinkMsg>(SINK_QUEUE_BATCHES);
        let sink_name = name.to_string();
        let thread = std::thread::Builder::new()
            .name(format!("sink-{name}"))
            .spawn(move || {
                let result = (|| {
                    for msg in rx.iter() {
                        match msg {
                            SinkMsg::Records(batch) => out.write_batch(&batch)?,
                            SinkMsg::Sync(reply) => {
                                let synced = out.sync();
                                let failed = synced.is_err();
                                let _ = reply.send(synced);
                                if failed {
                                    anyhow::bail!("sync failed");
                                }
                            }
                        }
                    }
                    out.finish()
                })();
                if let Err(e) = &result {
                    tracing::error!(sink = %sink_name, "sink failed: {e:#}");
                }
                result
            })?;
        Ok(RunningSink {
            handle: SinkHandle {
                name: name.to_string(),
                max_record_bytes: spec.0.max_record_bytes(),
                tx,
            },
            thread,
        })
    }

    /// Waits for the sink to write out everything it was sent (once every handle
    /// is dropped) and flushes it to stable storage.
    ///
    /// # Errors
    /// A write or flush failed.
    pub fn finish(self) -> anyhow::Result<()> {
        let RunningSink { handle, thread } = self;
        drop(handle);
        thread
            .join()
            .map_err(|_| anyhow::anyhow!("sink thread panicked"))?
    }
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
    /// Writes a batch (all of it, or fails).
    ///
    /// # Errors
    /// The write failed; the sink stops.
    fn write_batch(&mut self, batch: &Batch) -> anyhow::Result<()>;
    /// Writes out what was written so far, durably; a file's length in bytes
    /// (`None` for other outputs), which a checkpoint records.
    ///
    /// # Errors
    /// The write or the sync failed.
    fn sync(&mut self) -> anyhow::Result<Option<u64>>;
    /// Writes out everything; the sink is done.
    ///
    /// # Errors
    /// The final write or sync failed.
    fn finish(&mut self) -> anyhow::Result<()>;
}
