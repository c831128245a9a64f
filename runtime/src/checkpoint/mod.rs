//! Checkpoints: a pipeline's source position, window state, the state of its
//! built-in stages (`dedup`) and sink lengths,
//! written together, atomically, to an embedded store (redb) in the state
//! directory, so that a restarted daemon resumes where the last checkpoint
//! left off — no window lost, none counted twice.
//!
//! ```text
//! source: every `interval` (or `batches` batches) ── flush ──► Barrier ──► every partition
//!   worker p: closes its open batch, runs it, acks the state of its built-in
//!             stages (`dedup`, if any), then passes the barrier on
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

pub mod changelog;

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

/// The operator's state at a checkpoint: open windows and the watermark.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WindowSnapshot {
    /// Tumbling and sliding windows: (start ms, end ms, group, accumulators).
    pub fixed: Vec<(i64, i64, Vec<u8>, Vec<crate::aggregate::Acc>)>,
    /// Sessions: (group, start ms, end ms, accumulators).
    pub sessions: Vec<(Vec<u8>, i64, i64, Vec<crate::aggregate::Acc>)>,
    /// The watermark, ms.
    pub watermark: i64,
    /// Per partition, the largest event time seen (ms).
    pub partitions: Vec<Option<i64>>,
}

/// One partition's `dedup` state at a checkpoint (see
/// `pipeline::builtin::DedupState`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DedupSnapshot {
    /// The largest event time the stage had seen on the partition (ms).
    pub max_ts: Option<i64>,
    /// The live keys (a JSON array of the key values) and their first event
    /// time (ms), in the order they came.
    pub keys: Vec<(String, i64)>,
}

/// One partition's keyed-processor state at a checkpoint (see
/// `pipeline::keyed::KeyedState`): every live key's state bytes and the
/// timers. Keys and values are base64 (RFC 4648 §4) in the JSON.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyedSnapshot {
    /// The largest event time the stage had seen on the partition (ms).
    pub max_ts: Option<i64>,
    /// (key, state, when it was last written: wall clock, ms since the
    /// epoch), sorted by key.
    pub entries: Vec<(B64, B64, i64)>,
    /// Event-time timers as (time ms, key), in time order.
    pub event_timers: Vec<(i64, B64)>,
    /// Processing-time timers as (time ms, key), in time order.
    pub processing_timers: Vec<(i64, B64)>,
}

/// Bytes written as a base64 string (standard alphabet, padded) in JSON.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct B64(pub Vec<u8>);

impl Serialize for B64 {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use base64::Engine as _;
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(&self.0))
    }
}

impl<'de> Deserialize<'de> for B64 {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use base64::Engine as _;
        let text = String::deserialize(d)?;
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .map(B64)
            .map_err(serde::de::Error::custom)
    }
}

/// The state of one stage of one partition at a checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum StageSnapshot {
    /// A `dedup` stage's (the form checkpoints had before keyed stages).
    Dedup(DedupSnapshot),
    /// A keyed processor's.
    Keyed(KeyedSnapshot),
}

/// The stages' state at a checkpoint: state name (the partition and the
/// stage, `DedupSpec::state_name`, `KeyedSpec::state_name`) → state.
pub type StageSnapshots = BTreeMap<String, StageSnapshot>;

/// What the names of [`task_state_name`] start with.
const TASK_PREFIX: &str = "task:";

/// The name under which a partition worker hands the checkpointer the state
/// of stage `stage` (e.g. `keyed plane_gaps`) for a Kafka partition's task
/// `task` (the source's id of the partition): `task:ID STAGE`. The
/// checkpointer knows which partition a task is, and saves the state as
/// `TOPIC/PARTITION STAGE` (see [`task_of_state`]).
pub fn task_state_name(task: u32, stage: &str) -> String {
    format!("{TASK_PREFIX}{task} {stage}")
}

/// The task id and the stage of a state named by [`task_state_name`];
/// `None` for any other name.
pub fn task_of_state(name: &str) -> Option<(u32, &str)> {
    let (task, stage) = name.strip_prefix(TASK_PREFIX)?.split_once(' ')?;
    Some((task.parse().ok()?, stage))
}

/// The file, in the state directory, that holds every pipeline's checkpoint.
pub const STORE_FILE: &str = "checkpoints.redb";

/// Pipeline name → JSON of its [`Checkpoint`].
const TABLE: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("checkpoints");

/// Version of the [`Checkpoint`] layout; a checkpoint of another version is
/// refused with a clear error rather than misread.
pub const FORMAT: u32 = 1;

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
    /// A file source over a directory. (After the others: positions are
    /// untagged, and a checkpoint of an earlier version holds one of them.)
    Dir(DirPosition),
    /// A generator source (after the others, for the same reason).
    Generator(GeneratorPosition),
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
            Position::Dir(d) => {
                write!(f, "{}/: {} files read", d.dir.display(), d.done.len())?;
                match &d.current {
                    Some(p) => write!(f, ", {} byte {}", p.path.display(), p.offset),
                    None => Ok(()),
                }
            }
            Position::Generator(g) => write!(f, "generator record {}", g.generated),
        }
    }
}

/// A generator source's position: the records it generated, so the number
/// of the next (its records are a function of their number).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GeneratorPosition {
    /// Records generated.
    pub generated: u64,
}

/// A Kafka source's position: per assigned partition, the offset of the next
/// record to read (the offset Kafka commits, as Kafka's consumers do).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KafkaPosition {
    /// (topic, partition, next offset), sorted.
    pub kafka: Vec<(String, i32, i64)>,
}

/// Where a file source over a directory was: the files it read to their
/// end (Spark's file source keeps this set too), and where it was in the one
/// it was reading.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirPosition {
    /// The directory.
    pub dir: PathBuf,
    /// Names of the files read to their end.
    pub done: std::collections::BTreeSet<String>,
    /// The file being read and where, if any.
    pub current: Option<FilePosition>,
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
    /// The state of the stateful stages (`dedup`, keyed processors) of every
    /// partition; a Kafka partition's keyed state is under
    /// `TOPIC/PARTITION keyed PLUGIN` (and in the changelog).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub stages: StageSnapshots,
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
    /// The database; `None` once closed.
    db: Option<redb::Database>,
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
        let db = unpanicked(&path, || {
            redb::Database::create(&path).with_context(|| {
                format!(
                    "cannot open the checkpoint store {} (is another sluice using this state_dir?)",
                    path.display()
                )
            })
        })?;
        Ok(Store { db: Some(db), path })
    }

    fn db(&self) -> &redb::Database {
        self.db.as_ref().expect("a store is open until dropped")
    }

    /// Closes the store, as dropping it does (which logs the error instead).
    ///
    /// # Errors
    /// redb failed writing out its state: it panics there on some corrupted
    /// files (found by the fuzz target `checkpoint_store`).
    pub fn close(mut self) -> anyhow::Result<()> {
        self.close_db()
    }

    fn close_db(&mut self) -> anyhow::Result<()> {
        match self.db.take() {
            Some(db) => unpanicked(&self.path, move || {
                drop(db);
                Ok(())
            }),
            None => Ok(()),
        }
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
        let row = unpanicked(&self.path, || {
            let tx = self.db().begin_read()?;
            let table = match tx.open_table(TABLE) {
                Ok(t) => t,
                Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
                Err(e) => return Err(e.into()),
            };
            Ok(table.get(pipeline)?.map(|row| row.value().to_vec()))
        })?;
        let Some(row) = row else {
            return Ok(None);
        };
        let checkpoint: Checkpoint = serde_json::from_slice(&row).with_context(|| {
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
        unpanicked(&self.path, || {
            let tx = self.db().begin_write()?;
            {
                let mut table = tx.open_table(TABLE)?;
                table.insert(pipeline, bytes.as_slice())?;
            }
            tx.commit()?;
            Ok(())
        })
    }

    /// Forgets the checkpoint of `pipeline`; returns whether there was one.
    ///
    /// # Errors
    /// The store cannot be written.
    pub fn remove(&self, pipeline: &str) -> anyhow::Result<bool> {
        unpanicked(&self.path, || {
            let tx = self.db().begin_write()?;
            let removed = {
                let mut table = tx.open_table(TABLE)?;
                table.remove(pipeline)?.is_some()
            };
            tx.commit()?;
            Ok(removed)
        })
    }

    /// Every pipeline with a checkpoint, and its checkpoint.
    ///
    /// # Errors
    /// The store cannot be read.
    pub fn list(&self) -> anyhow::Result<Vec<(String, anyhow::Result<Checkpoint>)>> {
        let rows = unpanicked(&self.path, || {
            let tx = self.db().begin_read()?;
            let table = match tx.open_table(TABLE) {
                Ok(t) => t,
                Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
                Err(e) => return Err(e.into()),
            };
            let mut rows = Vec::new();
            for row in redb::ReadableTable::iter(&table)? {
                let (k, v) = row?;
                rows.push((k.value().to_string(), v.value().to_vec()));
            }
            Ok(rows)
        })?;
        Ok(rows
            .into_iter()
            .map(|(name, row)| {
                (
                    name,
                    serde_json::from_slice(&row).map_err(anyhow::Error::from),
                )
            })
            .collect())
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        if let Err(e) = self.close_db() {
            tracing::warn!("closing the checkpoint store: {e:#}");
        }
    }
}

/// Runs `f`, which calls redb on the store at `path`, with a panic turned
/// into an error: redb panics on some corrupted files (a page of an unknown
/// type, met while repairing the file at open; a free-page bitmap out of
/// bounds, while writing its state at close) instead of returning
/// `StorageError::Corrupted` — found by the fuzz target `checkpoint_store`.
fn unpanicked<T>(path: &Path, f: impl FnOnce() -> anyhow::Result<T>) -> anyhow::Result<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|panic| {
        let why = panic
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| panic.downcast_ref::<&str>().copied())
            .unwrap_or("a panic");
        Err(anyhow::anyhow!(
            "the checkpoint store {} is corrupted (redb: {why}): remove it, with the daemon stopped, to start every checkpointed pipeline from the beginning of its input",
            path.display()
        ))
    })
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
    /// [`crate::window::operator::Task`]).
    Window(Box<BTreeMap<u32, WindowSnapshot>>),
    /// A partition worker whose chain keeps state (`dedup`), with that state
    /// at the barrier. Sent before the worker passes the barrier on, so on
    /// the (FIFO) ack channel it comes before the [`Ack::Worker`] or
    /// [`Ack::Window`] that completes the barrier: it is collected, not
    /// counted.
    Stages(Box<StageSnapshots>),
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
        let mut stages = StageSnapshots::new();
        let mut received = 0;
        while received < expected {
            match acks.recv_timeout(Duration::from_millis(100)) {
                Ok(Ack::Stages(state)) => stages.extend(*state),
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
            stages: stages
                .into_iter()
                .filter_map(|(name, state)| {
                    match task_of_state(&name) {
                        // A Kafka partition's keyed state: under its
                        // partition's name, as its windows are.
                        Some((task, stage)) => {
                            Some((format!("{} {stage}", self.task_names.get(&task)?), state))
                        }
                        None => Some((name, state)),
                    }
                })
                .collect(),
            finished: kind == BarrierKind::End,
            stopped: kind == BarrierKind::Stop,
        };
        self.store.save(&self.pipeline, &checkpoint)?;
        // Saved: a sink that prepared its writes at the sync commits them.
        for sink in &self.sinks {
            let _ = sink.committed();
        }
        self.last_id = checkpoint.id;
        self.last_at = Instant::now();
        self.last_batches = stats.batches.load(Ordering::Relaxed);
        self.last_position = Some(checkpoint.position.clone());
        stats.checkpoints.fetch_add(1, Ordering::Relaxed);
        crate::obs::metrics::pipeline(&self.pipeline)
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

#[cfg(test)]
mod tests {
    //! The store, and the barrier protocol: the checkpointer waits for every
    //! partition's acknowledgement, syncs the sinks, then commits.

    use std::collections::BTreeSet;

    use sluice_plugin_sdk::Batch;

    use super::*;
    use crate::testkit::FileSink;

    fn position(offset: u64) -> Position {
        Position::File(FilePosition {
            path: PathBuf::from("in.ndjson"),
            inode: 42,
            offset,
            fingerprint: Some(7),
        })
    }

    fn shape(partitions: &str) -> BTreeMap<String, String> {
        BTreeMap::from([
            ("source".to_string(), "in.ndjson".to_string()),
            ("partitions".to_string(), partitions.to_string()),
        ])
    }

    fn checkpoint(id: u64) -> Checkpoint {
        Checkpoint {
            format: FORMAT,
            id,
            shape: shape("2"),
            taken_at_ms: 1_700_000_000_000,
            position: position(123),
            sinks: BTreeMap::from([("out".to_string(), 456)]),
            exclusive: BTreeSet::from(["out".to_string()]),
            window: None,
            tasks: BTreeMap::new(),
            stages: StageSnapshots::new(),
            finished: false,
            stopped: false,
        }
    }

    /// Checkpoints compared by their JSON (the form the store keeps).
    fn same(a: &Checkpoint, b: &Checkpoint) -> bool {
        serde_json::to_value(a).unwrap() == serde_json::to_value(b).unwrap()
    }

    fn checkpointer(
        store: Arc<Store>,
        partitions: usize,
        windowed: bool,
        sinks: Vec<SinkHandle>,
    ) -> Checkpointer {
        let names: BTreeSet<String> = sinks.iter().map(|s| s.name.clone()).collect();
        Checkpointer::new(
            "unit-checkpoint".into(),
            CheckpointSpec {
                interval: Duration::from_secs(3600),
                batches: Some(3),
            },
            store,
            shape("2"),
            partitions,
            windowed,
            (sinks, names),
            Arc::new(AtomicBool::new(false)),
            None,
        )
    }

    /// A batch of `lines`; returns the bytes they take in a file.
    fn send_lines(sink: &SinkHandle, lines: &[&str]) -> u64 {
        let mut batch = Batch::new();
        for line in lines {
            batch.push(None, line.as_bytes(), 0);
        }
        sink.send(Arc::new(batch)).unwrap();
        lines.iter().map(|l| l.len() as u64 + 1).sum()
    }

    /// A store file with one page overwritten (all zeros, all ones, a copy
    /// of another page) is refused with an error, or read and closed: never
    /// a panic. redb panics on some of these (an unknown page type, met
    /// while repairing the file at open; a bitmap index out of bounds, while
    /// writing its state at close; found by the fuzz target
    /// `checkpoint_store`).
    #[test]
    fn a_store_with_a_corrupted_page_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store.save("p", &checkpoint(1)).unwrap();
        drop(store);
        let file = dir.path().join(STORE_FILE);
        let sound = std::fs::read(&file).unwrap();
        const PAGE: usize = 4096;
        assert!(sound.len() >= 8 * PAGE, "{} bytes", sound.len());
        let pages = sound.len() / PAGE;
        let mut refused = Vec::new();
        for page in 0..pages {
            let at = page * PAGE..(page + 1) * PAGE;
            // Every byte 0, every byte 1, or a copy of another page.
            let mut damaged = vec![vec![0x00; PAGE], vec![0xff; PAGE]];
            damaged.extend(
                (0..pages)
                    .filter(|&other| other != page)
                    .map(|other| sound[other * PAGE..(other + 1) * PAGE].to_vec()),
            );
            for content in damaged {
                let mut bytes = sound.clone();
                bytes[at.clone()].copy_from_slice(&content);
                std::fs::write(&file, &bytes).unwrap();
                let read = Store::open(dir.path()).and_then(|store| {
                    store.list()?;
                    store.load("p")?;
                    store.close()
                });
                if let Err(e) = read {
                    refused.push(format!("{e:#}"));
                }
            }
        }
        // Some of them reach redb's panics (caught), not only its errors.
        let caught = refused
            .iter()
            .filter(|e| e.contains("is corrupted (redb: "))
            .count();
        assert!(caught > 0, "{refused:#?}");
        assert!(
            refused
                .iter()
                .all(|e| e.contains(&file.display().to_string())),
            "{refused:#?}"
        );
    }

    #[test]
    fn the_store_saves_loads_lists_and_removes_checkpoints() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        assert!(store.load("p").unwrap().is_none());
        assert!(store.list().unwrap().is_empty());
        store.save("p", &checkpoint(1)).unwrap();
        store.save("p", &checkpoint(2)).unwrap();
        store.save("q", &checkpoint(9)).unwrap();
        drop(store);
        // Reopened: what was committed is there.
        let store = Store::open(dir.path()).unwrap();
        assert!(same(&store.load("p").unwrap().unwrap(), &checkpoint(2)));
        let listed: Vec<(String, u64)> = store
            .list()
            .unwrap()
            .into_iter()
            .map(|(name, c)| (name, c.unwrap().id))
            .collect();
        assert_eq!(listed, vec![("p".to_string(), 2), ("q".to_string(), 9)]);
        assert!(store.remove("p").unwrap());
        assert!(!store.remove("p").unwrap());
        assert!(store.load("p").unwrap().is_none());
        assert!(store.load("q").unwrap().is_some());
    }

    #[test]
    fn a_checkpoint_of_another_layout_or_an_empty_store_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let future = Checkpoint {
            format: FORMAT + 1,
            ..checkpoint(1)
        };
        store.save("p", &future).unwrap();
        let error = store.load("p").unwrap_err().to_string();
        assert!(
            error.contains(&format!("has layout {}", FORMAT + 1)),
            "{error}"
        );
        drop(store);

        let empty = tempfile::tempdir().unwrap();
        std::fs::write(empty.path().join(STORE_FILE), b"").unwrap();
        let error = Store::open(empty.path()).unwrap_err().to_string();
        assert!(error.contains("is empty"), "{error}");
    }

    #[test]
    fn no_checkpoint_is_taken_until_every_partition_acknowledged() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path()).unwrap());
        let out = FileSink::start("out");
        let mut cp = checkpointer(store.clone(), 3, false, vec![out.handle()]);
        let stats = Stats::default();
        // Two of three partitions pass the barrier; the third stops (drops it).
        let mut sent = 0;
        let taken = cp
            .take(BarrierKind::Periodic, position(10), &stats, &mut |b| {
                sent += 1;
                for _ in 0..2 {
                    b.ack.send(Ack::Worker).unwrap();
                }
                true
            })
            .unwrap();
        assert_eq!(sent, 1);
        assert!(taken.is_none());
        assert!(store.load("unit-checkpoint").unwrap().is_none());
        assert_eq!(stats.checkpoints.load(Ordering::Relaxed), 0);

        // All three: taken, with the next id.
        let taken = cp
            .take(BarrierKind::Periodic, position(10), &stats, &mut |b| {
                for _ in 0..3 {
                    b.ack.send(Ack::Worker).unwrap();
                }
                true
            })
            .unwrap()
            .expect("a checkpoint");
        assert_eq!(taken.id, 1);
        assert!(same(
            &store.load("unit-checkpoint").unwrap().unwrap(),
            &taken
        ));
        assert_eq!(stats.checkpoints.load(Ordering::Relaxed), 1);
        drop(cp);
        out.finish();
    }

    #[test]
    fn a_checkpoint_records_the_synced_sinks_the_position_and_why_it_was_taken() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path()).unwrap());
        let out = FileSink::start("out");
        let dlq = FileSink::start("dlq");
        let mut cp = checkpointer(store.clone(), 1, false, vec![out.handle(), dlq.handle()]);
        let stats = Stats::default();
        let ack = |b: &Barrier| b.ack.send(Ack::Worker).is_ok();

        let out_bytes =
            send_lines(&out.handle(), &["one", "two"]) + send_lines(&out.handle(), &["three"]);
        let dlq_bytes = send_lines(&dlq.handle(), &[r#"{"reason":"x"}"#]);
        let first = cp
            .take(BarrierKind::Periodic, position(100), &stats, &mut { ack })
            .unwrap()
            .unwrap();
        assert_eq!(first.id, 1);
        assert_eq!(
            first.sinks,
            BTreeMap::from([
                ("dlq".to_string(), dlq_bytes),
                ("out".to_string(), out_bytes)
            ])
        );
        // Synced: the file holds that much already.
        assert_eq!(std::fs::metadata(out.path()).unwrap().len(), out_bytes);
        assert_eq!(first.position, position(100));
        assert_eq!(first.shape, shape("2"));
        assert_eq!(
            first.exclusive,
            BTreeSet::from(["dlq".into(), "out".into()])
        );
        assert!(!first.finished && !first.stopped);
        assert!(!cp.moved(&position(100)));
        assert!(cp.moved(&position(101)));

        let more = send_lines(&out.handle(), &["four"]);
        let stop = cp
            .take(BarrierKind::Stop, position(120), &stats, &mut { ack })
            .unwrap()
            .unwrap();
        assert_eq!((stop.id, stop.stopped, stop.finished), (2, true, false));
        assert_eq!(stop.sinks["out"], out_bytes + more);
        assert_eq!(stop.sinks["dlq"], dlq_bytes);
        let end = cp
            .take(BarrierKind::End, position(130), &stats, &mut { ack })
            .unwrap()
            .unwrap();
        assert_eq!((end.id, end.stopped, end.finished), (3, false, true));
        assert!(same(&store.load("unit-checkpoint").unwrap().unwrap(), &end));
        drop(cp);
        out.finish();
        dlq.finish();
    }

    #[test]
    fn a_windowed_pipeline_waits_for_the_window_operator_and_saves_its_state() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path()).unwrap());
        let mut cp = checkpointer(store.clone(), 4, true, Vec::new());
        let snapshot = WindowSnapshot {
            fixed: vec![(0, 10, b"a".to_vec(), vec![crate::aggregate::Acc::Count(3)])],
            sessions: Vec::new(),
            watermark: 5,
            partitions: vec![Some(5), Some(9), None, None],
        };
        let state = snapshot.clone();
        let taken = cp
            .take(
                BarrierKind::Periodic,
                position(1),
                &Stats::default(),
                &mut |b| {
                    // One acknowledgement stands for every partition.
                    let tasks = BTreeMap::from([(0, state.clone())]);
                    b.ack.send(Ack::Window(Box::new(tasks))).is_ok()
                },
            )
            .unwrap()
            .unwrap();
        let saved = taken.window.expect("the window state");
        assert_eq!(
            serde_json::to_value(&saved).unwrap(),
            serde_json::to_value(&snapshot).unwrap()
        );
        assert!(taken.tasks.is_empty());
        assert!(taken.sinks.is_empty());
    }

    #[test]
    fn a_failed_pipeline_or_a_refused_barrier_takes_no_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path()).unwrap());
        let mut cp = checkpointer(store.clone(), 1, false, Vec::new());
        let stats = Stats::default();
        // A partition is gone: the barrier cannot be sent.
        let refused = cp
            .take(BarrierKind::Periodic, position(1), &stats, &mut |_| false)
            .unwrap();
        assert!(refused.is_none());
        cp.failed.store(true, Ordering::Relaxed);
        let mut sent = false;
        let failed = cp
            .take(BarrierKind::Periodic, position(1), &stats, &mut |b| {
                sent = true;
                b.ack.send(Ack::Worker).is_ok()
            })
            .unwrap();
        assert!(failed.is_none());
        assert!(!sent, "no barrier is sent once the pipeline failed");
        assert!(store.load("unit-checkpoint").unwrap().is_none());
        assert_eq!(cp.last_id, 0);
    }

    #[test]
    fn a_checkpoint_is_due_every_n_batches() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path()).unwrap());
        let mut cp = checkpointer(store, 1, false, Vec::new());
        let stats = Stats::default();
        stats.batches.store(2, Ordering::Relaxed);
        assert!(!cp.due(&stats));
        stats.batches.store(3, Ordering::Relaxed);
        assert!(cp.due(&stats));
        cp.take(BarrierKind::Periodic, position(1), &stats, &mut |b| {
            b.ack.send(Ack::Worker).is_ok()
        })
        .unwrap()
        .unwrap();
        assert!(!cp.due(&stats), "counted from the last checkpoint");
        stats.batches.store(5, Ordering::Relaxed);
        assert!(!cp.due(&stats));
        stats.batches.store(6, Ordering::Relaxed);
        assert!(cp.due(&stats));
    }

    #[test]
    fn a_checkpoint_through_a_running_worker_holds_exactly_the_output_before_the_barrier() {
        use crate::config::{BreakerConfig, OnError};
        use crate::source::{Chunk, Record};
        use crate::testkit::{slot, stage_spec};

        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path()).unwrap());
        let out = FileSink::start("out");
        let chain = Arc::new(crate::pipeline::worker::Chain {
            // Batches close at 1000 records: only the barrier closes the first.
            limits: crate::pipeline::batcher::BatchLimits {
                max_records: 1000,
                max_bytes: 1 << 30,
                interval: Duration::from_secs(3600),
            },
            stages: vec![crate::pipeline::processor::StepSpec::Plugin(stage_spec(
                slot("identity"),
                &[],
                OnError::Stop,
                BreakerConfig::default(),
            ))],
        });
        let stats = Arc::new(Stats::default());
        let worker = crate::pipeline::worker::Worker {
            pipeline: "unit-checkpoint".into(),
            partition: 0,
            chain: Arc::new(arc_swap::ArcSwap::new(chain.clone())),
            stages: crate::pipeline::processor::Step::chain(
                "unit-checkpoint",
                0,
                &chain.stages,
                &Default::default(),
            )
            .unwrap(),
            running: chain,
            refused: None,
            window: None,
            sinks: vec![out.handle()],
            dead_letter: crate::sink::dead_letter::DeadLetter::new("unit-checkpoint", None),
            stats: stats.clone(),
            metrics: crate::obs::metrics::pipeline("unit-checkpoint"),
            stop: Arc::new(AtomicBool::new(false)),
            task: None,
            saved_and_stopped: false,
        };
        let (tx, rx) = flume::unbounded();
        let thread = std::thread::spawn(move || worker.run(rx));
        let lines = |range: std::ops::Range<usize>| -> Vec<Record> {
            range
                .map(|i| Record {
                    key: Vec::new(),
                    value: format!("line {i}").into_bytes(),
                    timestamp_ms: 0,
                    headers: Vec::new(),
                    task: None,
                })
                .collect()
        };
        let before = lines(0..7);
        let bytes: u64 = before.iter().map(|r| r.value.len() as u64 + 1).sum();
        tx.send(Chunk::Records(before.into())).unwrap();
        let mut cp = checkpointer(store.clone(), 1, false, vec![out.handle()]);
        let taken = cp
            .take(BarrierKind::Periodic, position(70), &stats, &mut |b| {
                tx.send(Chunk::Barrier(b.clone())).is_ok()
            })
            .unwrap()
            .expect("a checkpoint");
        assert_eq!(taken.sinks["out"], bytes);
        assert_eq!(stats.batches.load(Ordering::Relaxed), 1);
        tx.send(Chunk::Records(lines(7..10).into())).unwrap();
        drop(tx);
        thread.join().unwrap().unwrap();
        drop(cp);
        let written = out.finish();
        assert_eq!(written.len(), 10);
        let at_checkpoint: u64 = written[..7].iter().map(|l| l.len() as u64 + 1).sum();
        assert_eq!(taken.sinks["out"], at_checkpoint);
    }

    #[test]
    fn a_resumed_checkpointer_goes_on_from_the_last_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path()).unwrap());
        let last = checkpoint(41);
        let mut cp = Checkpointer::new(
            "unit-checkpoint".into(),
            CheckpointSpec {
                interval: Duration::from_secs(3600),
                batches: None,
            },
            store.clone(),
            shape("2"),
            1,
            false,
            (Vec::new(), BTreeSet::new()),
            Arc::new(AtomicBool::new(false)),
            Some(&last),
        );
        assert!(!cp.moved(&last.position), "nothing new to save there");
        let next = cp
            .take(
                BarrierKind::Periodic,
                position(200),
                &Stats::default(),
                &mut |b| b.ack.send(Ack::Worker).is_ok(),
            )
            .unwrap()
            .unwrap();
        assert_eq!(next.id, 42);
        assert_eq!(store.load("unit-checkpoint").unwrap().unwrap().id, 42);
    }

    #[test]
    fn shape_changes_names_each_field_that_differs() {
        let then = shape("2");
        let mut now = shape("4");
        now.insert("window".into(), "tumbling 10s".into());
        assert_eq!(
            shape_changes(&then, &now),
            vec![
                "partitions: 2 → now 4".to_string(),
                "window: (none) → now tumbling 10s".to_string(),
            ]
        );
        assert!(shape_changes(&then, &shape("2")).is_empty());
        assert_eq!(
            shape_changes(&now, &then),
            vec![
                "partitions: 4 → now 2".to_string(),
                "window: tumbling 10s → now (none)".to_string(),
            ]
        );
    }

    /// Positions are stored untagged: a checkpoint written before
    /// [`Position::Dir`] existed still reads as the position it was, and a
    /// directory's reads back as itself.
    #[test]
    fn positions_of_every_kind_read_back() {
        let file = r#"{"path":"in.ndjson","inode":7,"offset":42,"fingerprint":null}"#;
        assert_eq!(
            serde_json::from_str::<Position>(file).unwrap(),
            Position::File(FilePosition {
                path: "in.ndjson".into(),
                inode: 7,
                offset: 42,
                fingerprint: None,
            })
        );
        let kafka = r#"{"kafka":[["t",0,5]]}"#;
        assert_eq!(
            serde_json::from_str::<Position>(kafka).unwrap(),
            Position::Kafka(KafkaPosition {
                kafka: vec![("t".into(), 0, 5)]
            })
        );
        let dir = Position::Dir(DirPosition {
            dir: "incoming".into(),
            done: ["a.log".to_string(), "b.log".to_string()].into(),
            current: Some(FilePosition {
                path: "incoming/c.log".into(),
                inode: 9,
                offset: 3,
                fingerprint: Some(1),
            }),
        });
        let text = serde_json::to_string(&dir).unwrap();
        assert_eq!(serde_json::from_str::<Position>(&text).unwrap(), dir);
        assert_eq!(
            dir.to_string(),
            "incoming/: 2 files read, incoming/c.log byte 3"
        );
    }
}
