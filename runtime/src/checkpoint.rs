//! Checkpoints: a pipeline's source position, window state and sink lengths,
//! written together, atomically, to an embedded store (redb) in the state
//! directory, so that a restarted daemon resumes where the last checkpoint
//! left off — no window lost, none counted twice.
//!
//! ```text
//! source: every `interval` (or `batches` batches) ── flush ──► Barrier ──► every partition
//!   worker p: closes its open batch, runs it, then passes the barrier on
//!     └─► window operator: once it has the barrier of every partition, snapshots
//!         its windows and watermark ──► Ack ──► source
//!   source: asks each sink to write out and fsync (its length in bytes),
//!           commits {position, windows, sink lengths} in one redb transaction
//! ```
//!
//! The source waits for the checkpoint to complete before reading on, so no
//! record read after the barrier can be anywhere in the pipeline while the
//! snapshot is taken: the barrier needs no alignment (this is a micro-batch
//! boundary across all partitions, as in Spark Structured Streaming, where a
//! micro-batch's offsets and state are committed together; Flink's aligned
//! barriers give the same cut without pausing the source).
//!
//! On restart the source opens its file at the saved byte offset (for gzip, an
//! offset into the decompressed stream, reached by decompressing up to it), the
//! window operator restores its windows and watermark, and each file sink that
//! only this pipeline writes is cut back to its length at the checkpoint, so
//! output written after it (and written again by the replay) appears once:
//! file sinks are exactly-once across a crash; `stdout` and sinks shared by
//! several pipelines are at-least-once.
//!
//! A stop (SIGTERM, SIGINT) takes a final checkpoint *without* emitting the open
//! windows (Flink's stop-with-savepoint); only the end of the input emits them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use redb::{ReadableDatabase as _, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::sink::SinkHandle;
use crate::stats::Stats;
use crate::window::WindowSnapshot;

/// The file, in the state directory, that holds every pipeline's checkpoint.
pub const STORE_FILE: &str = "checkpoints.redb";

/// Pipeline name → JSON of its [`Checkpoint`].
const TABLE: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("checkpoints");

/// Version of the [`Checkpoint`] layout; a checkpoint of another version is
/// refused with a clear error rather than misread.
const FORMAT: u32 = 1;

/// How often a pipeline checkpoints (`checkpoint = { interval, batches }`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckpointSpec {
    /// At most this long between checkpoints while records flow.
    pub interval: Duration,
    /// Also after this many micro-batches (counted over all partitions), if set.
    pub batches: Option<u64>,
}

/// Where a source was: what it had handed to the partitions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Position {
    /// A file source.
    File(FilePosition),
    /// A Kafka source.
    Kafka(KafkaPosition),
}

impl std::fmt::Display for Position {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Position::File(p) => write!(f, "{} byte {}", p.path.display(), p.offset),
            Position::Kafka(k) => {
                let parts: Vec<String> = k
                    .kafka
                    .iter()
                    .map(|(t, p, o)| format!("{t}/{p}@{o}"))
                    .collect();
                write!(f, "kafka {}", parts.join(" "))
            }
        }
    }
}

/// A Kafka source's position: per assigned partition, the offset of the next
/// record to read (the offset Kafka commits, as Kafka's consumers do).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KafkaPosition {
    /// (topic, partition, next offset), sorted.
    pub kafka: Vec<(String, i32, i64)>,
}

/// Where a file source was: the byte just after the last line handed to the
/// partitions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FilePosition {
    /// The file read.
    pub path: PathBuf,
    /// Its inode when read, to tell a replaced file from the same one.
    pub inode: u64,
    /// Bytes consumed: a file offset, or for gzip an offset into the
    /// decompressed stream.
    pub offset: u64,
    /// Plain files: a hash (FNV-1a 64) of the [`FINGERPRINT_BYTES`] bytes
    /// before `offset`, to tell the same file from one rewritten in place
    /// (same inode) while the daemon was down.
    #[serde(default)]
    pub fingerprint: Option<u64>,
}

/// Bytes before a position that its fingerprint covers.
pub const FINGERPRINT_BYTES: u64 = 256;

/// The fingerprint of the bytes of `file` before `offset` (see
/// [`Position::fingerprint`]); `None` if they cannot be read.
pub fn fingerprint(file: &std::fs::File, offset: u64) -> Option<u64> {
    use std::os::unix::fs::FileExt as _;
    let start = offset.saturating_sub(FINGERPRINT_BYTES);
    let mut buf = vec![0u8; (offset - start) as usize];
    file.read_exact_at(&mut buf, start).ok()?;
    Some(buf.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    }))
}

/// One pipeline's checkpoint.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Layout version ([`FORMAT`]).
    pub format: u32,
    /// Increases by one per checkpoint of the pipeline.
    pub id: u64,
    /// What the state depends on, field by field (source, partitions, window,
    /// aggregates): a checkpoint taken with another shape is not restored.
    pub shape: BTreeMap<String, String>,
    /// When it was taken, ms since the epoch.
    pub taken_at_ms: i64,
    /// Where the source resumes.
    pub position: Position,
    /// Length in bytes of each file sink the pipeline writes to, after it wrote
    /// out everything before the barrier.
    pub sinks: BTreeMap<String, u64>,
    /// The sinks only this pipeline wrote to when the checkpoint was taken: only
    /// those may be cut back (a shared one holds other pipelines' output after
    /// the saved length).
    #[serde(default)]
    pub exclusive: std::collections::BTreeSet<String>,
    /// The window operator's state, for a windowed pipeline reading a file.
    pub window: Option<WindowSnapshot>,
    /// A windowed pipeline reading Kafka: the window state of each Kafka
    /// partition, as `topic/partition` → state (each partition's windows and
    /// watermark are its own, as a Kafka Streams task's).
    #[serde(default)]
    pub tasks: BTreeMap<String, WindowSnapshot>,
    /// The input was read to its end and every window emitted.
    pub finished: bool,
    /// Taken as the pipeline stopped (a signal, a reload that removed it): it
    /// wrote nothing after it.
    #[serde(default)]
    pub stopped: bool,
}

/// The checkpoint store: one redb database, one row per pipeline.
#[derive(Debug)]
pub struct Store {
    db: redb::Database,
    path: PathBuf,
}

impl Store {
    /// Opens (or creates) `STATE_DIR/checkpoints.redb`.
    ///
    /// # Errors
    /// The file cannot be created, is not a redb database, or is held by another
    /// running daemon (redb locks it).
    pub fn open(state_dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(state_dir)
            .with_context(|| format!("cannot create {}", state_dir.display()))?;
        let path = state_dir.join(STORE_FILE);
        // redb makes a new database of an empty file: one cut to nothing
        // (a full disk, a careless `: >`) would silently lose every
        // checkpoint, and the pipelines would start over.
        if std::fs::metadata(&path).is_ok_and(|m| m.len() == 0) {
            anyhow::bail!(
                "the checkpoint store {} is empty (cut short?): remove it to start every checkpointed pipeline from the beginning of its input",
                path.display()
            );
        }
        let db = redb::Database::create(&path).with_context(|| {
            format!(
                "cannot open the checkpoint store {} (is another sluice using this state_dir?)",
                path.display()
            )
        })?;
        Ok(Store { db, path })
    }

    /// The store's file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The last checkpoint of `pipeline`, if any.
    ///
    /// # Errors
    /// The store cannot be read, or the row is not a checkpoint this version
    /// understands.
    pub fn load(&self, pipeline: &str) -> anyhow::Result<Option<Checkpoint>> {
        let tx = self.db.begin_read()?;
        let table = match tx.open_table(TABLE) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let Some(row) = table.get(pipeline)? else {
            return Ok(None);
        };
        let checkpoint: Checkpoint = serde_json::from_slice(row.value()).with_context(|| {
            format!(
                "the checkpoint of pipeline `{pipeline}` in {} cannot be read",
                self.path.display()
            )
        })?;
        anyhow::ensure!(
            checkpoint.format == FORMAT,
            "the checkpoint of pipeline `{pipeline}` in {} has layout {}, this sluice reads {FORMAT}",
            self.path.display(),
            checkpoint.format
        );
        Ok(Some(checkpoint))
    }

    /// Replaces the checkpoint of `pipeline`, durably (one fsync'd redb commit).
    ///
    /// # Errors
    /// The store cannot be written.
    pub fn save(&self, pipeline: &str, checkpoint: &Checkpoint) -> anyhow::Result<()> {
        let bytes = serde_json::to_vec(checkpoint)?;
        let tx = self.db.begin_write()?;
        {
            let mut table = tx.open_table(TABLE)?;
            table.insert(pipeline, bytes.as_slice())?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Forgets the checkpoint of `pipeline`; returns whether there was one.
    ///
    /// # Errors
    /// The store cannot be written.
    pub fn remove(&self, pipeline: &str) -> anyhow::Result<bool> {
        let tx = self.db.begin_write()?;
        let removed = {
            let mut table = tx.open_table(TABLE)?;
            table.remove(pipeline)?.is_some()
        };
        tx.commit()?;
        Ok(removed)
    }

    /// Every pipeline with a checkpoint, and its checkpoint.
    ///
    /// # Errors
    /// The store cannot be read.
    pub fn list(&self) -> anyhow::Result<Vec<(String, anyhow::Result<Checkpoint>)>> {
        let tx = self.db.begin_read()?;
        let table = match tx.open_table(TABLE) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        };
        let mut out = Vec::new();
        for row in redb::ReadableTable::iter(&table)? {
            let (k, v) = row?;
            let parsed = serde_json::from_slice(v.value()).map_err(anyhow::Error::from);
            out.push((k.value().to_string(), parsed));
        }
        Ok(out)
    }
}

/// Why a barrier was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BarrierKind {
    /// A periodic checkpoint: the pipeline goes on.
    Periodic,
    /// The pipeline is stopping (a signal, a reload that removed it): the open
    /// windows are saved, not emitted.
    Stop,
    /// The input ended: every window is emitted, then saved (empty).
    End,
}

/// A checkpoint barrier, sent in-band after a partition's last record before
/// the checkpoint.
#[derive(Debug, Clone)]
pub struct Barrier {
    /// The checkpoint's id.
    pub id: u64,
    /// Why.
    pub kind: BarrierKind,
    /// Where the acknowledgement goes (the source, waiting).
    pub ack: flume::Sender<Ack>,
}

/// An acknowledgement of a [`Barrier`]: everything before it has been processed
/// and handed to the sinks.
#[derive(Debug)]
pub enum Ack {
    /// A partition worker of a pipeline without windows.
    Worker,
    /// The window operator, with its state at the barrier: per task (see
    /// [`crate::window_operator::Task`]).
    Window(Box<BTreeMap<u32, WindowSnapshot>>),
}

/// The source's side of checkpointing: when to take one, and taking it.
#[derive(Debug)]
pub struct Checkpointer {
    /// Pipeline name.
    pub pipeline: String,
    /// How often.
    pub spec: CheckpointSpec,
    /// Where checkpoints go.
    pub store: Arc<Store>,
    /// See [`Checkpoint::shape`].
    pub shape: BTreeMap<String, String>,
    /// Partition workers: the acks a pipeline without windows waits for.
    pub partitions: usize,
    /// Whether the window operator acknowledges (once, with its state).
    pub windowed: bool,
    /// Every sink the pipeline writes to (outputs and dead letter).
    pub sinks: Vec<SinkHandle>,
    /// Those only this pipeline writes to.
    pub exclusive: std::collections::BTreeSet<String>,
    /// Set when a worker stopped on an error: no checkpoint is taken then.
    pub failed: Arc<AtomicBool>,
    /// The id of the last checkpoint (restored, or 0).
    pub last_id: u64,
    last_at: Instant,
    last_batches: u64,
    last_position: Option<Position>,
    /// Kafka sources: task id → `topic/partition`, the names the window state
    /// of each task is saved under.
    pub task_names: BTreeMap<u32, String>,
}

impl Checkpointer {
    /// A checkpointer whose last checkpoint had id `last_id`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        pipeline: String,
        spec: CheckpointSpec,
        store: Arc<Store>,
        shape: BTreeMap<String, String>,
        partitions: usize,
        windowed: bool,
        sinks: (Vec<SinkHandle>, std::collections::BTreeSet<String>),
        failed: Arc<AtomicBool>,
        last: Option<&Checkpoint>,
    ) -> Self {
        let (sinks, exclusive) = sinks;
        Checkpointer {
            pipeline,
            spec,
            store,
            shape,
            partitions,
            windowed,
            sinks,
            exclusive,
            failed,
            last_id: last.map_or(0, |c| c.id),
            last_at: Instant::now(),
            last_batches: 0,
            last_position: last.map(|c| c.position.clone()),
            task_names: BTreeMap::new(),
        }
    }

    /// Whether a periodic checkpoint is due (time or batches since the last).
    pub fn due(&self, stats: &Stats) -> bool {
        self.last_at.elapsed() >= self.spec.interval
            || self
                .spec
                .batches
                .is_some_and(|n| stats.batches.load(Ordering::Relaxed) - self.last_batches >= n)
    }

    /// Nothing moved since the last checkpoint: wait another interval.
    pub fn postpone(&mut self) {
        self.last_at = Instant::now();
    }

    /// Whether a checkpoint at `position` would save anything new.
    pub fn moved(&self, position: &Position) -> bool {
        self.last_position.as_ref() != Some(position)
    }

    /// Takes a checkpoint at `position`: `send` hands `barrier` to every
    /// partition (after their pending records); then waits for the acks, syncs
    /// the sinks and commits. Returns `false` (and saves nothing) when the
    /// pipeline failed or a partition is gone meanwhile; else the checkpoint
    /// saved.
    ///
    /// # Errors
    /// A sink cannot sync, or the store cannot be written.
    pub fn take(
        &mut self,
        kind: BarrierKind,
        position: Position,
        stats: &Stats,
        send: &mut dyn FnMut(&Barrier) -> bool,
    ) -> anyhow::Result<Option<Checkpoint>> {
        if self.failed.load(Ordering::Relaxed) {
            return Ok(None);
        }
        let started = Instant::now();
        let (ack, acks) = flume::unbounded();
        let barrier = Barrier {
            id: self.last_id + 1,
            kind,
            ack,
        };
        if !send(&barrier) {
            return Ok(None);
        }
        drop(barrier);
        let expected = if self.windowed { 1 } else { self.partitions };
        let mut tasks = BTreeMap::new();
        let mut received = 0;
        while received < expected {
            match acks.recv_timeout(Duration::from_millis(100)) {
                Ok(Ack::Worker) => received += 1,
                Ok(Ack::Window(snapshot)) => {
                    tasks = *snapshot;
                    received += 1;
                }
                Err(flume::RecvTimeoutError::Timeout) => {
                    if self.failed.load(Ordering::Relaxed) {
                        return Ok(None);
                    }
                }
                // Every holder of the barrier dropped it without acking: a
                // worker or the window operator stopped on an error.
                Err(flume::RecvTimeoutError::Disconnected) => return Ok(None),
            }
        }
        if self.failed.load(Ordering::Relaxed) {
            return Ok(None);
        }
        // Every sink syncs at once (each fsync on its own thread).
        let pending = self
            .sinks
            .iter()
            .map(|s| Ok((s.name.clone(), s.start_sync()?)))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let mut sinks = BTreeMap::new();
        for (name, sync) in pending {
            if let Some(len) = sync.wait()? {
                sinks.insert(name, len);
            }
        }
        let checkpoint = Checkpoint {
            format: FORMAT,
            id: self.last_id + 1,
            shape: self.shape.clone(),
            taken_at_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64),
            position,
            sinks,
            exclusive: self.exclusive.clone(),
            window: if self.task_names.is_empty() {
                tasks.remove(&0)
            } else {
                None
            },
            tasks: tasks
                .into_iter()
                .filter_map(|(task, w)| Some((self.task_names.get(&task)?.clone(), w)))
                .collect(),
            finished: kind == BarrierKind::End,
            stopped: kind == BarrierKind::Stop,
        };
        self.store.save(&self.pipeline, &checkpoint)?;
        self.last_id = checkpoint.id;
        self.last_at = Instant::now();
        self.last_batches = stats.batches.load(Ordering::Relaxed);
        self.last_position = Some(checkpoint.position.clone());
        stats.checkpoints.fetch_add(1, Ordering::Relaxed);
        crate::metrics::pipeline(&self.pipeline)
            .checkpoint_duration
            .observe(started.elapsed().as_secs_f64());
        tracing::debug!(
            pipeline = %self.pipeline,
            id = checkpoint.id,
            position = %checkpoint.position,
            ms = started.elapsed().as_secs_f64() * 1e3,
            "checkpoint"
        );
        Ok(Some(checkpoint))
    }
}

/// The fields in which `then` (a checkpoint's shape) and `now` differ, as
/// `field: then → now` lines.
pub fn shape_changes(
    then: &BTreeMap<String, String>,
    now: &BTreeMap<String, String>,
) -> Vec<String> {
    let none = String::from("(none)");
    let mut fields: Vec<&String> = then.keys().chain(now.keys()).collect();
    fields.sort();
    fields.dedup();
    fields
        .into_iter()
        .filter(|f| then.get(*f) != now.get(*f))
        .map(|f| {
            format!(
                "{f}: {} → now {}",
                then.get(f).unwrap_or(&none),
                now.get(f).unwrap_or(&none)
            )
        })
        .collect()
}
