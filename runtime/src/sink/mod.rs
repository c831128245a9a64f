//! Sinks: where output records go. Each sink runs on its own thread behind a
//! bounded channel of batches, so a slow sink fills its channel and blocks the
//! workers that feed it (backpressure), and nothing is dropped.
//!
//! - `file`, `stdout`: a batch is written as newline-terminated values with a
//!   single `write_all`, so the output only ever holds whole batches of whole
//!   lines: a sink stopped between batches leaves nothing half-written.
//! - `kafka` ([`kafka`]): one Kafka record per event, through an idempotent
//!   producer; a sync waits for every delivery report.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;

use anyhow::Context as _;

use sluice_plugin_sdk::Batch;

use crate::config::SinkKind;

pub mod kafka;

/// Batches waiting for one sink. Small: each entry is a whole batch.
const SINK_QUEUE_BATCHES: usize = 16;

/// What a sink does with its batches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SinkSpec {
    /// Standard output.
    Stdout,
    /// A file, created if missing; appended to, or truncated first.
    File {
        /// The file.
        path: PathBuf,
        /// Truncate at start.
        truncate: bool,
    },
    /// Discards everything.
    Blackhole,
    /// A Kafka topic.
    Kafka(kafka::KafkaSinkSpec),
}

impl SinkSpec {
    /// The spec for a config entry (`path` already resolved; not for Kafka,
    /// which `topology` builds).
    pub fn new(kind: SinkKind, path: Option<PathBuf>, truncate: bool) -> Option<Self> {
        Some(match kind {
            SinkKind::Stdout => SinkSpec::Stdout,
            SinkKind::Blackhole => SinkSpec::Blackhole,
            SinkKind::Kafka => return None,
            SinkKind::File => SinkSpec::File {
                path: path?,
                truncate,
            },
        })
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
        let mut out: Box<dyn Output> = match spec {
            SinkSpec::Stdout => Box::new(StdoutOutput::default()),
            SinkSpec::Blackhole => Box::new(Blackhole),
            SinkSpec::Kafka(spec) => Box::new(kafka::KafkaOutput::new(name, spec)?),
            SinkSpec::File { path, truncate } => {
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir).with_context(|| {
                        format!("sink `{name}`: cannot create {}", dir.display())
                    })?;
                }
                let regular = std::fs::metadata(path).map_or(true, |m| m.is_file());
                let file = if regular {
                    let truncate = *truncate && resume.is_none();
                    OpenOptions::new()
                        .create(true)
                        .read(true)
                        .write(true)
                        .append(!truncate)
                        .truncate(truncate)
                        .open(path)
                } else {
                    // A FIFO (or a device) is opened for writing only: the open
                    // waits for a reader, and a reader that goes away fails the
                    // sink (EPIPE) instead of the records piling up unread in
                    // the pipe, as they would with the pipe open for reading
                    // too.
                    tracing::info!(sink = name, path = %path.display(), "not a regular file: waiting for a reader");
                    OpenOptions::new().write(true).open(path)
                }
                .with_context(|| format!("sink `{name}`: cannot open {}", path.display()))?;
                if let Some(Resume::CutTo(len)) = resume.filter(|_| regular) {
                    cut_back(&file, len, name, path)?;
                }
                Box::new(FileOutput::new(file, regular, name, path)?)
            }
        };
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
                max_record_bytes: match spec {
                    SinkSpec::Kafka(k) => Some(k.max_record_bytes()),
                    _ => None,
                },
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

/// Cuts a file sink back to the length a checkpoint recorded.
fn cut_back(file: &File, len: u64, name: &str, path: &std::path::Path) -> anyhow::Result<()> {
    let now = file.metadata()?.len();
    if now > len {
        tracing::info!(sink = name, path = %path.display(), checkpoint_bytes = len, discarded_bytes = now - len, "resuming: output written after the checkpoint is cut off and will be written again");
        file.set_len(len)
            .with_context(|| format!("sink `{name}`: cannot cut {} back", path.display()))?;
    } else if now < len {
        tracing::warn!(sink = name, path = %path.display(), checkpoint_bytes = len, bytes = now, "resuming: the file is shorter than at the checkpoint (changed by something else?): appending to it");
    }
    Ok(())
}

/// Newline-terminated values of `batch`, into `buf` (cleared first).
fn lines_of(batch: &Batch, buf: &mut Vec<u8>) {
    buf.clear();
    buf.reserve(batch.values_len() + batch.len());
    for event in batch {
        buf.extend_from_slice(event.value());
        buf.push(b'\n');
    }
}

trait Output: Send {
    fn write_batch(&mut self, batch: &Batch) -> anyhow::Result<()>;
    /// Writes out what was written so far, durably; a file's length.
    fn sync(&mut self) -> anyhow::Result<Option<u64>>;
    fn finish(&mut self) -> anyhow::Result<()>;
}

#[derive(Default)]
struct StdoutOutput {
    buf: Vec<u8>,
}

impl Output for StdoutOutput {
    fn write_batch(&mut self, batch: &Batch) -> anyhow::Result<()> {
        lines_of(batch, &mut self.buf);
        let mut out = std::io::stdout().lock();
        out.write_all(&self.buf)?;
        out.flush()?;
        Ok(())
    }
    fn sync(&mut self) -> anyhow::Result<Option<u64>> {
        std::io::stdout().flush()?;
        Ok(None)
    }
    fn finish(&mut self) -> anyhow::Result<()> {
        std::io::stdout().flush()?;
        Ok(())
    }
}

/// A file written batch by batch. A batch that cannot be written whole (a full
/// disk) is cut off again, so the file never ends in half a line.
struct FileOutput {
    file: File,
    /// Length of the file after the last whole batch.
    len: u64,
    /// A regular file (not a FIFO or a device): it has a length to record
    /// and cut back to, and can be fsync'd.
    regular: bool,
    /// The lines of the batch being written.
    buf: Vec<u8>,
}

impl FileOutput {
    /// Takes an opened file; when appending to a file whose last line was cut
    /// short (a previous process killed mid-write), ends that line first so new
    /// records do not glue onto it.
    fn new(
        mut file: File,
        regular: bool,
        name: &str,
        path: &std::path::Path,
    ) -> anyhow::Result<Self> {
        use std::io::{Read, Seek, SeekFrom};
        let mut len = file.metadata()?.len();
        if len > 0 {
            let mut last = [0u8];
            file.seek(SeekFrom::Start(len - 1))?;
            file.read_exact(&mut last)?;
            if last[0] != b'\n' {
                tracing::warn!(sink = name, path = %path.display(), "the file ends in an unterminated line: ending it before appending");
                file.write_all(b"\n")?;
                len += 1;
            }
        }
        Ok(FileOutput {
            file,
            len,
            regular,
            buf: Vec::new(),
        })
    }
}

impl Output for FileOutput {
    fn write_batch(&mut self, batch: &Batch) -> anyhow::Result<()> {
        lines_of(batch, &mut self.buf);
        let lines = &self.buf;
        if let Err(e) = self.file.write_all(lines) {
            // Take back the part that was written, then report.
            let _ = self.file.set_len(self.len);
            return Err(e.into());
        }
        self.len += lines.len() as u64;
        Ok(())
    }
    fn sync(&mut self) -> anyhow::Result<Option<u64>> {
        if !self.regular {
            // A pipe or a device: written through, nothing to fsync or cut
            // back (at-least-once).
            return Ok(None);
        }
        self.file.sync_data()?;
        Ok(Some(self.len))
    }
    fn finish(&mut self) -> anyhow::Result<()> {
        if self.regular {
            self.file.sync_data()?;
        }
        Ok(())
    }
}

struct Blackhole;

impl Output for Blackhole {
    fn write_batch(&mut self, _batch: &Batch) -> anyhow::Result<()> {
        Ok(())
    }
    fn sync(&mut self) -> anyhow::Result<Option<u64>> {
        Ok(None)
    }
    fn finish(&mut self) -> anyhow::Result<()> {
        Ok(())
    }
}
