//! The `parquet` sink: records into Apache Parquet files in a directory, in
//! Hive-style partition folders, each file written under a hidden name and
//! renamed into place once whole.
//!
//! ```toml
//! [sinks.lake]
//! type = "parquet"
//! path = "lake/hourly"          # a directory, relative to the config file
//! compression = "zstd"          # zstd (default) | snappy | none
//! schema = { key = "string", window_start = "timestamp_ms", delayed = "int64", avg_dep_delay = "double" }
//! partition_by = { field = "/window_start", date = "dt" }   # lake/hourly/dt=2013-01-01/
//! roll_rows = 1000000           # optional: a new file after this many rows
//! roll_bytes = "128MiB"         # a new file past this size (default 128MiB)
//! roll_interval = "5m"          # a new file when the open one is this old (default 5m)
//! exactly_once = true           # files appear at checkpoints (needs `checkpoint`)
//! ```
//!
//! **Columns.** `schema` maps each column to one of `string`, `int64`,
//! `double`, `boolean`, `timestamp_ms` (UTC, milliseconds; from epoch
//! milliseconds or an RFC 3339 string) and `json` (any value, as its JSON text
//! in a string column); the columns are the schema's, in its order, and other
//! fields of a record are left out. Without `schema`, the columns are inferred
//! from the first batch (in order of first appearance: a JSON string is
//! `string`, an integer `int64`, any other number `double`, `true`/`false`
//! `boolean`, an object or array `json`; a field that is null in every record
//! of that batch is `string`) and then fixed for the sink's life: a later record
//! with a field the first batch did not have is refused. A value that does not
//! fit its column (`"abc"` for `int64`) is refused too. A missing or null value
//! is a null. A refused record fails the write with an error naming the field
//! and showing the record, and the sink stops (as for any write error): the
//! records are not silently nulled. Every column is nullable.
//!
//! **Partitions** (Hive's layout, which Spark, pyarrow, DuckDB and Trino read
//! as columns): `partition_by` is a JSON pointer, `"/dest"` → `dest=JFK/`; a
//! table `{ field = "/dest", name = "airport" }` → `airport=JFK/`; or the UTC
//! date of an event time (epoch ms or RFC 3339), `{ field = "/window_start",
//! date = "dt" }` → `dt=2013-01-01/`; or a list of these, one folder level
//! each. A value is escaped as Hive escapes it (`/`, `=`, `%`, control
//! characters … as `%2F`), a missing or null one is
//! `__HIVE_DEFAULT_PARTITION__`. A top-level field used as a folder (not a
//! date) is left out of the files, as Spark does: readers take it from the
//! path. At most [`MAX_OPEN_FILES`] files are open at once: past that the
//! oldest rolls.
//!
//! **Files.** A file is written as `.part-EPOCH-SEQ.parquet.inprogress` (the
//! leading `.` hides it from pyarrow, DuckDB, Spark and Hive, which skip
//! names beginning with `.` or `_`), fsync'd when it closes, then renamed to
//! `part-EPOCH-SEQ.parquet` in the same folder, and the folder fsync'd: a reader
//! listing `*.parquet` sees whole files only. When the rename happens:
//!
//! - `exactly_once = true` (a checkpointed pipeline of its own; checked at
//!   `validate`): a checkpoint closes the open files and the checkpoint
//!   records the epoch they belong to (the two-phase commit of the postgres
//!   sink's `exactly_once`, Flink's `TwoPhaseCommitSinkFunction`); once the
//!   checkpoint is saved, that epoch's files are renamed. On start, the files
//!   an earlier run left hidden are settled against the restored checkpoint:
//!   those of an epoch it recorded (or earlier) are renamed into place (their
//!   checkpoint was saved, the rename was lost to a crash), later ones deleted
//!   (the replay writes their rows again). After a `kill -9`, each row is in
//!   exactly one visible file. Spark's file sink reaches the same end with a
//!   log of committed files (`_spark_metadata/`) that its own readers must
//!   consult; here the name is the log — a hidden file is uncommitted — so any
//!   Parquet reader sees only committed data. A file holds at most one
//!   checkpoint interval of rows (rolling splits it further).
//! - otherwise (at-least-once): a file is renamed when it rolls, when the sink
//!   is synced (a checkpoint, or an HTTP source's delivery) and when the sink
//!   finishes. Hidden files left by a crash are deleted at the next start:
//!   the rows in them were never acknowledged. After a crash, rows written
//!   between the last checkpoint and the crash may be written again.
//!
//! Rolling (`roll_rows`, `roll_bytes`, `roll_interval`) is checked when a batch
//! is written: an idle sink keeps its open file until the next batch (or
//! checkpoint). A write or rename error (a full disk included) stops the
//! sink: a half-encoded file cannot be taken back batch by batch, and a
//! restart settles the directory.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use arrow_array::builder::{
    BooleanBuilder, Float64Builder, Int64Builder, StringBuilder, TimestampMillisecondBuilder,
};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use parquet::arrow::ArrowWriter;
use parquet::file::properties::WriterProperties;
use serde_json::{Map, Value};
use sluice_plugin_sdk::Batch;
use toml::Spanned;

use super::{Built, Claim, Output, Resume, SinkSpec};
use crate::config::{BuildContext, ConfigError};

/// `[sinks.NAME] type = "parquet"`: the kind's own fields.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParquetConfig {
    /// The directory of the files (created if missing), relative to the
    /// config file.
    pub path: Option<Spanned<PathBuf>>,
    /// `zstd` (default, level 3), `snappy` or `none`.
    #[serde(default)]
    pub compression: Compression,
    /// Column → type (see the module's doc); without it, inferred from the
    /// first batch.
    pub schema: Option<Spanned<toml::Table>>,
    /// Partition folders: a JSON pointer, a table `{ field, name }` or
    /// `{ field, date }`, or a list of these (see the module's doc).
    pub partition_by: Option<Spanned<toml::Value>>,
    /// A new file once the open one holds this many rows. Default: no limit.
    #[serde(default, deserialize_with = "de_rows")]
    pub roll_rows: Option<u64>,
    /// A new file once the open one is this large (bytes written, plus the
    /// row group being encoded). Default 128MiB.
    #[serde(
        default = "default_roll_bytes",
        deserialize_with = "crate::config::de_size"
    )]
    pub roll_bytes: u64,
    /// A new file once the open one is this old (checked when a batch comes).
    /// Default 5m.
    #[serde(
        default = "default_roll_interval",
        deserialize_with = "crate::config::de_duration"
    )]
    pub roll_interval: Duration,
    /// Files appear only when a checkpoint completes, and a crash leaves no
    /// duplicate row (see the module's doc). Needs a checkpointed pipeline
    /// of its own. Default false (at-least-once).
    #[serde(default)]
    pub exactly_once: bool,
}

fn default_roll_bytes() -> u64 {
    128 << 20
}

fn default_roll_interval() -> Duration {
    Duration::from_secs(300)
}

fn de_rows<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    match <u64 as serde::Deserialize>::deserialize(d)? {
        0 => Err(serde::de::Error::custom("must be at least 1")),
        n => Ok(Some(n)),
    }
}

/// The compression of the column chunks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// Zstandard, level 3 (the parquet crate's default level).
    #[default]
    Zstd,
    /// Snappy.
    Snappy,
    /// Uncompressed.
    None,
}

/// The type of a column (the Parquet type it is written as).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ColumnType {
    /// A JSON string (UTF-8 `BYTE_ARRAY`, `STRING`).
    String,
    /// A JSON integer that fits 64 bits (`INT64`).
    Int64,
    /// Any JSON number (`DOUBLE`).
    Double,
    /// `true` or `false` (`BOOLEAN`).
    Boolean,
    /// Epoch milliseconds, or an RFC 3339 string (`INT64`,
    /// `TIMESTAMP(MILLIS, isAdjustedToUTC = true)`).
    TimestampMs,
    /// Any JSON value, as its JSON text (`STRING`).
    Json,
}

/// The names of the types, for messages.
const TYPE_NAMES: &str = "string, int64, double, boolean, timestamp_ms, json";

impl ColumnType {
    fn name(self) -> &'static str {
        match self {
            ColumnType::String => "string",
            ColumnType::Int64 => "int64",
            ColumnType::Double => "double",
            ColumnType::Boolean => "boolean",
            ColumnType::TimestampMs => "timestamp_ms",
            ColumnType::Json => "json",
        }
    }

    fn arrow(self) -> DataType {
        match self {
            ColumnType::String | ColumnType::Json => DataType::Utf8,
            ColumnType::Int64 => DataType::Int64,
            ColumnType::Double => DataType::Float64,
            ColumnType::Boolean => DataType::Boolean,
            ColumnType::TimestampMs => {
                DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()))
            }
        }
    }
}

/// One level of partition folders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    /// The JSON pointer of the value.
    pub pointer: String,
    /// The folder's key (`dest` in `dest=JFK`).
    pub name: String,
    /// The value is an event time and the folder its UTC date.
    pub date: bool,
    /// The top-level field left out of the files (a field folder of a
    /// one-token pointer).
    pub drops: Option<String>,
}

/// At most this many files are open at once (one per partition folder being
/// written): past it, the file opened longest ago rolls.
pub const MAX_OPEN_FILES: usize = 64;

/// Rows per row group: bounds the memory a file being encoded holds.
const ROW_GROUP_ROWS: usize = 128 * 1024;

impl super::SinkConfig for ParquetConfig {
    fn build(&self, cx: &BuildContext<'_>) -> Result<Built, ConfigError> {
        let path = self.path.as_ref().ok_or_else(|| {
            cx.error_at(
                "path",
                format!(
                    "sink `{}`: a parquet sink needs `path`, a directory",
                    cx.name
                ),
            )
        })?;
        let dir = crate::config::resolve(cx.base, path.get_ref());
        if let Some(blocker) = dir.ancestors().find(|a| a.exists()).filter(|a| !a.is_dir()) {
            return Err(cx.config.error(
                path.span(),
                format!(
                    "{} is not a directory: a parquet sink writes a directory of files",
                    blocker.display()
                ),
            ));
        }
        let partitions = match &self.partition_by {
            None => Vec::new(),
            Some(p) => parse_partitions(p.get_ref())
                .map_err(|e| cx.config.error(p.span(), format!("`partition_by`: {e}")))?,
        };
        let schema = match &self.schema {
            None => None,
            Some(s) => {
                let mut columns = Vec::new();
                for (column, ty) in s.get_ref() {
                    let ty = ty
                        .as_str()
                        .and_then(|t| {
                            use serde::de::IntoDeserializer as _;
                            let t: serde::de::value::StrDeserializer<'_, serde::de::value::Error> =
                                t.into_deserializer();
                            <ColumnType as serde::Deserialize>::deserialize(t).ok()
                        })
                        .ok_or_else(|| {
                            cx.config.error(
                                s.span(),
                                format!(
                                    "column `{column}`: {ty} is not a type; use one of {TYPE_NAMES}"
                                ),
                            )
                        })?;
                    if let Some(p) = partitions
                        .iter()
                        .find(|p| p.drops.as_deref() == Some(column.as_str()))
                    {
                        return Err(cx.config.error(
                            s.span(),
                            format!(
                                "column `{column}` is a partition folder (`{}=…/`): the files do not hold it",
                                p.name
                            ),
                        ));
                    }
                    columns.push((column.clone(), ty));
                }
                if columns.is_empty() {
                    return Err(cx.config.error(s.span(), "`schema` is empty"));
                }
                Some(columns)
            }
        };
        Ok(Built {
            claims: vec![(Claim::OutputDirectory(dir.clone()), path.span())],
            spec: SinkSpec(Arc::new(ParquetSink {
                dir,
                compression: self.compression,
                schema,
                partitions,
                roll_rows: self.roll_rows,
                roll_bytes: self.roll_bytes,
                roll_interval: self.roll_interval,
                exactly_once: self.exactly_once,
            })),
        })
    }
}

/// Reads `partition_by` (see the module's doc).
fn parse_partitions(value: &toml::Value) -> Result<Vec<Partition>, String> {
    let one = |value: &toml::Value| -> Result<Partition, String> {
        let (pointer, name, date) = match value {
            toml::Value::String(p) => (p.clone(), None, false),
            toml::Value::Table(t) => {
                if let Some(k) = t
                    .keys()
                    .find(|k| !["field", "name", "date"].contains(&k.as_str()))
                {
                    return Err(format!(
                        "unknown key `{k}` (a level takes `field` and `name` or `date`)"
                    ));
                }
                let field = t
                    .get("field")
                    .and_then(toml::Value::as_str)
                    .ok_or("a level needs `field`, a JSON pointer")?;
                let text = |k: &str| -> Result<Option<String>, String> {
                    match t.get(k) {
                        None => Ok(None),
                        Some(toml::Value::String(s)) => Ok(Some(s.clone())),
                        Some(_) => Err(format!("`{k}` is a folder key: a string")),
                    }
                };
                match (text("name")?, text("date")?) {
                    (Some(_), Some(_)) => {
                        return Err(
                            "give `name` (the value as it is) or `date` (its UTC date), not both"
                                .into(),
                        );
                    }
                    (name, None) => (field.to_string(), name, false),
                    (None, Some(date)) => (field.to_string(), Some(date), true),
                }
            }
            other => {
                return Err(format!(
                    "{other} is not a JSON pointer (\"/dest\"), a table ({{ field = \"/window_start\", date = \"dt\" }}) or a list of these"
                ));
            }
        };
        let parsed = crate::decode::Pointer::parse(&pointer)?;
        let last = parsed
            .last()
            .ok_or_else(|| format!("{pointer:?} points at the whole record"))?
            .to_string();
        let name = name.unwrap_or_else(|| last.clone());
        if name.is_empty() || name.starts_with(['.', '_']) || name.contains(['/', '=', '\0']) {
            return Err(format!(
                "{name:?} cannot be a folder key (not empty, no leading `.` or `_`, no `/` or `=`)"
            ));
        }
        let top_level = pointer.matches('/').count() == 1;
        Ok(Partition {
            drops: (top_level && !date).then_some(last),
            pointer,
            name,
            date,
        })
    };
    let levels = match value {
        toml::Value::Array(list) if list.is_empty() => return Err("the list is empty".into()),
        toml::Value::Array(list) => list.iter().map(one).collect::<Result<Vec<_>, _>>()?,
        other => vec![one(other)?],
    };
    Ok(levels)
}

/// A parquet sink, built.
#[derive(Debug, Clone, PartialEq)]
pub struct ParquetSink {
    /// The directory.
    pub dir: PathBuf,
    /// Compression.
    pub compression: Compression,
    /// The columns from the config, if given.
    pub schema: Option<Vec<(String, ColumnType)>>,
    /// Partition folder levels.
    pub partitions: Vec<Partition>,
    /// Roll after this many rows.
    pub roll_rows: Option<u64>,
    /// Roll past this many bytes.
    pub roll_bytes: u64,
    /// Roll when this old.
    pub roll_interval: Duration,
    /// Files committed at checkpoints.
    pub exactly_once: bool,
}

impl super::Sink for ParquetSink {
    fn open(&self, name: &str, resume: Option<Resume>) -> anyhow::Result<Box<dyn Output>> {
        std::fs::create_dir_all(&self.dir)
            .with_context(|| format!("sink `{name}`: cannot create {}", self.dir.display()))?;
        let resumed = match resume {
            Some(Resume::CutTo(epoch) | Resume::Keep(Some(epoch))) => Some(epoch),
            Some(Resume::Keep(None)) | None => None,
        };
        let settled = settle(&self.dir, self.exactly_once, resumed)
            .with_context(|| format!("sink `{name}`: cannot settle {}", self.dir.display()))?;
        if settled.renamed + settled.deleted > 0 {
            tracing::info!(
                sink = name,
                renamed = settled.renamed,
                deleted = settled.deleted,
                "settled the files an earlier run left hidden (renamed: of a saved checkpoint; deleted: written after it, or unfinished)"
            );
        }
        let schema = self
            .schema
            .clone()
            .map(|columns| Columns::new(columns, false));
        Ok(Box::new(ParquetOutput {
            sink: self.clone(),
            name: name.to_string(),
            schema,
            open: BTreeMap::new(),
            epoch: settled.next_epoch,
            seq: 0,
            closed: Vec::new(),
            prepared: Vec::new(),
            synced: None,
        }))
    }

    fn exactly_once(&self) -> bool {
        self.exactly_once
    }
}

/// The columns written, fixed once known.
#[derive(Debug, Clone)]
struct Columns {
    list: Vec<(String, ColumnType)>,
    arrow: SchemaRef,
    /// Inferred: a record with another field is refused.
    strict: bool,
}

impl Columns {
    fn new(list: Vec<(String, ColumnType)>, strict: bool) -> Self {
        let arrow = Arc::new(Schema::new(
            list.iter()
                .map(|(n, t)| Field::new(n, t.arrow(), true))
                .collect::<Vec<_>>(),
        ));
        Columns {
            list,
            arrow,
            strict,
        }
    }
}

/// The name of a file of `epoch` and `seq`: (hidden while written, visible).
fn file_names(epoch: u64, seq: u64) -> (String, String) {
    let visible = format!("part-{epoch:010}-{seq:06}.parquet");
    (format!(".{visible}.inprogress"), visible)
}

/// A file name this sink wrote: (hidden, epoch).
fn parse_name(name: &str) -> Option<(bool, u64)> {
    let (hidden, rest) = match name.strip_prefix('.') {
        Some(rest) => (true, rest.strip_suffix(".parquet.inprogress")?),
        None => (false, name.strip_suffix(".parquet")?),
    };
    let rest = rest.strip_prefix("part-")?;
    let (epoch, seq) = rest.split_once('-')?;
    if epoch.len() != 10 || seq.len() < 6 || !seq.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((hidden, epoch.parse().ok()?))
}

/// What [`settle`] did.
#[derive(Debug, PartialEq, Eq)]
pub struct Settled {
    /// Hidden files renamed into place.
    pub renamed: usize,
    /// Hidden files deleted.
    pub deleted: usize,
    /// The epoch to write next: after every epoch seen and the resumed one.
    pub next_epoch: u64,
}

/// Settles what an earlier run left in `dir` (its partition folders too):
/// with `exactly_once`, a hidden file of an epoch at or before `resumed` (the
/// epoch the restored checkpoint recorded) is renamed into place, any other
/// hidden file deleted; without, every hidden file is deleted.
///
/// # Errors
/// A folder cannot be read, a file renamed or deleted.
pub fn settle(dir: &Path, exactly_once: bool, resumed: Option<u64>) -> anyhow::Result<Settled> {
    let mut settled = Settled {
        renamed: 0,
        deleted: 0,
        next_epoch: 0,
    };
    let mut highest = resumed.unwrap_or(0);
    let mut folders = vec![dir.to_path_buf()];
    while let Some(folder) = folders.pop() {
        let mut changed = false;
        for entry in std::fs::read_dir(&folder)? {
            let entry = entry?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if entry.file_type()?.is_dir() {
                if !name.starts_with(['.', '_']) {
                    folders.push(entry.path());
                }
                continue;
            }
            let Some((hidden, epoch)) = parse_name(name) else {
                continue;
            };
            highest = highest.max(epoch);
            if !hidden {
                continue;
            }
            if exactly_once && resumed.is_some_and(|r| epoch <= r) {
                let visible = &name[1..name.len() - ".inprogress".len()];
                std::fs::rename(entry.path(), folder.join(visible))?;
                settled.renamed += 1;
            } else {
                std::fs::remove_file(entry.path())?;
                settled.deleted += 1;
            }
            changed = true;
        }
        if changed {
            sync_dir(&folder)?;
        }
    }
    settled.next_epoch = highest + 1;
    Ok(settled)
}

/// fsync of a directory: its entries (a file created or renamed in it) are
/// durable.
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// A file being written.
struct OpenFile {
    writer: ArrowWriter<File>,
    folder: PathBuf,
    hidden: String,
    visible: String,
    rows: u64,
    opened: Instant,
}

/// A whole file, fsync'd, still hidden.
#[derive(Debug)]
struct Closed {
    epoch: u64,
    folder: PathBuf,
    hidden: String,
    visible: String,
}

impl Closed {
    /// Renames it into place (the folder is fsync'd by the caller).
    fn publish(&self) -> anyhow::Result<()> {
        std::fs::rename(
            self.folder.join(&self.hidden),
            self.folder.join(&self.visible),
        )
        .with_context(|| {
            format!(
                "cannot rename {} into place",
                self.folder.join(&self.hidden).display()
            )
        })
    }
}

/// The sink's output: the open files, by partition folder.
struct ParquetOutput {
    sink: ParquetSink,
    name: String,
    /// Known once configured or inferred.
    schema: Option<Columns>,
    /// Open files by partition folder (relative, `""` without partitions).
    open: BTreeMap<String, OpenFile>,
    /// The epoch files are written for now.
    epoch: u64,
    /// The next file's number in the epoch.
    seq: u64,
    /// `exactly_once`: files of the current epoch closed (rolled) and hidden.
    closed: Vec<Closed>,
    /// `exactly_once`: files of synced epochs, waiting for their checkpoint.
    prepared: Vec<Closed>,
    /// `exactly_once`: the epoch of the last sync.
    synced: Option<u64>,
}

impl ParquetOutput {
    fn properties(&self) -> WriterProperties {
        let compression = match self.sink.compression {
            Compression::Zstd => parquet::basic::Compression::ZSTD(Default::default()),
            Compression::Snappy => parquet::basic::Compression::SNAPPY,
            Compression::None => parquet::basic::Compression::UNCOMPRESSED,
        };
        WriterProperties::builder()
            .set_compression(compression)
            .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
            .build()
    }

    /// Opens a new hidden file in partition folder `part`.
    fn open_file(&mut self, part: &str, schema: &SchemaRef) -> anyhow::Result<OpenFile> {
        if self.open.len() >= MAX_OPEN_FILES
            && let Some(oldest) = self
                .open
                .iter()
                .min_by_key(|(_, f)| f.opened)
                .map(|(p, _)| p.clone())
        {
            self.roll(&oldest)?;
        }
        let folder = if part.is_empty() {
            self.sink.dir.clone()
        } else {
            self.sink.dir.join(part)
        };
        if !folder.is_dir() {
            std::fs::create_dir_all(&folder)
                .with_context(|| format!("cannot create {}", folder.display()))?;
            // Every level made now, durable in its parent.
            for level in folder.ancestors().skip(1) {
                sync_dir(level)?;
                if level == self.sink.dir {
                    break;
                }
            }
        }
        let (hidden, visible) = file_names(self.epoch, self.seq);
        self.seq += 1;
        let file = File::create(folder.join(&hidden))
            .with_context(|| format!("cannot create {}", folder.join(&hidden).display()))?;
        let writer = ArrowWriter::try_new(file, schema.clone(), Some(self.properties()))?;
        Ok(OpenFile {
            writer,
            folder,
            hidden,
            visible,
            rows: 0,
            opened: Instant::now(),
        })
    }

    /// Closes the open file of `part` (footer written, fsync'd): with
    /// `exactly_once` it waits, hidden, for its epoch's checkpoint; else it is
    /// renamed into place at once.
    fn roll(&mut self, part: &str) -> anyhow::Result<()> {
        let Some(open) = self.open.remove(part) else {
            return Ok(());
        };
        let closed = close(open, self.epoch)?;
        if self.sink.exactly_once {
            self.closed.push(closed);
        } else {
            closed.publish()?;
            sync_dir(&closed.folder)?;
        }
        Ok(())
    }

    fn roll_all(&mut self) -> anyhow::Result<()> {
        let parts: Vec<String> = self.open.keys().cloned().collect();
        for part in parts {
            self.roll(&part)?;
        }
        Ok(())
    }

    /// Whether the open file of `part` is due to roll.
    fn due(&self, file: &OpenFile) -> bool {
        self.sink.roll_rows.is_some_and(|r| file.rows >= r)
            || (file.writer.bytes_written() + file.writer.in_progress_size()) as u64
                >= self.sink.roll_bytes
            || file.opened.elapsed() >= self.sink.roll_interval
    }

    /// The partition folder of a record (relative; `""` without
    /// partitions), leaving out of it the fields the folders hold.
    fn partition_of(&self, record: &mut Value) -> anyhow::Result<String> {
        let mut path = String::new();
        for p in &self.sink.partitions {
            let value = record.pointer(&p.pointer).unwrap_or(&Value::Null);
            let text = folder_value(value, p.date)
                .with_context(|| format!("partition field `{}`", p.pointer))?;
            if !path.is_empty() {
                path.push('/');
            }
            path.push_str(&p.name);
            path.push('=');
            path.push_str(&text);
        }
        for p in &self.sink.partitions {
            if let (Some(field), Value::Object(map)) = (&p.drops, &mut *record) {
                map.shift_remove(field);
            }
        }
        Ok(path)
    }
}

/// Closes a file: footer, fsync.
fn close(open: OpenFile, epoch: u64) -> anyhow::Result<Closed> {
    let path = open.folder.join(&open.hidden);
    let file = open
        .writer
        .into_inner()
        .with_context(|| format!("cannot finish {}", path.display()))?;
    file.sync_all()
        .with_context(|| format!("cannot fsync {}", path.display()))?;
    Ok(Closed {
        epoch,
        folder: open.folder,
        hidden: open.hidden,
        visible: open.visible,
    })
}

/// The folder value of a partition field: the value (Hive-escaped), or with
/// `date` the UTC date of the event time it holds; a missing or null value is
/// `__HIVE_DEFAULT_PARTITION__`.
///
/// # Errors
/// An object or array, or with `date` a value that is not an event time.
pub fn folder_value(value: &Value, date: bool) -> anyhow::Result<String> {
    if value.is_null() {
        return Ok("__HIVE_DEFAULT_PARTITION__".into());
    }
    if date {
        let ms = crate::decode::parse_event_time(value).map_err(anyhow::Error::msg)?;
        let t = chrono::DateTime::from_timestamp_millis(ms)
            .with_context(|| format!("{ms} ms is out of range"))?;
        return Ok(t.format("%Y-%m-%d").to_string());
    }
    let text = match value {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        other => anyhow::bail!("{other} is not a string, number or boolean"),
    };
    Ok(hive_escape(&text))
}

/// Escapes a partition value as Hive's `FileUtils.escapePathName` does: the
/// characters it lists (`"#%'*/:=?\{[]^` and DEL) and control characters as
/// `%XX`; an empty value is the default partition.
pub fn hive_escape(text: &str) -> String {
    if text.is_empty() {
        return "__HIVE_DEFAULT_PARTITION__".into();
    }
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_ascii_control() || "\"#%'*/:=?\\{[]^\u{7f}".contains(c) {
            out.push_str(&format!("%{:02X}", c as u32));
        } else {
            out.push(c);
        }
    }
    // `.` and `..` as a whole value would name other folders.
    if out == "." || out == ".." {
        out = out.replace('.', "%2E");
    }
    out
}

/// The columns of `records` (in order of first appearance), from their
/// values (see the module's doc).
///
/// # Errors
/// A field with values of two kinds (a string and a number).
pub fn infer(records: &[Value]) -> anyhow::Result<Vec<(String, ColumnType)>> {
    let mut columns: Vec<(String, Option<ColumnType>)> = Vec::new();
    for record in records {
        let Value::Object(map) = record else { continue };
        for (field, value) in map {
            let ty = match value {
                Value::Null => None,
                Value::String(_) => Some(ColumnType::String),
                Value::Number(n) if n.is_i64() => Some(ColumnType::Int64),
                Value::Number(_) => Some(ColumnType::Double),
                Value::Bool(_) => Some(ColumnType::Boolean),
                Value::Array(_) | Value::Object(_) => Some(ColumnType::Json),
            };
            let slot = match columns.iter_mut().find(|(n, _)| n == field) {
                Some((_, slot)) => slot,
                None => {
                    columns.push((field.clone(), None));
                    &mut columns.last_mut().expect("pushed").1
                }
            };
            *slot = match (*slot, ty) {
                (a, None) => a,
                (None, b) => b,
                (Some(a), Some(b)) if a == b => Some(a),
                (Some(ColumnType::Int64), Some(ColumnType::Double))
                | (Some(ColumnType::Double), Some(ColumnType::Int64)) => Some(ColumnType::Double),
                (Some(a), Some(b)) => anyhow::bail!(
                    "field `{field}` is {} in one record and {} in another: give its type in `schema`",
                    a.name(),
                    b.name()
                ),
            };
        }
    }
    Ok(columns
        .into_iter()
        .map(|(n, t)| (n, t.unwrap_or(ColumnType::String)))
        .collect())
}

/// The first 200 bytes of a record, for messages.
fn shown(record: &Value) -> String {
    let text = record.to_string();
    match text.char_indices().nth(200) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text,
    }
}

/// `records` as an Arrow batch of `columns`.
///
/// # Errors
/// A value that does not fit its column's type, or (with an inferred schema)
/// a field that is not a column: the message names the field and shows the
/// record.
fn to_arrow(columns: &Columns, records: &[Value]) -> anyhow::Result<RecordBatch> {
    let empty = Map::new();
    let objects: Vec<&Map<String, Value>> = records
        .iter()
        .map(|r| r.as_object().unwrap_or(&empty))
        .collect();
    if columns.strict {
        for (record, object) in records.iter().zip(&objects) {
            if let Some(field) = object
                .keys()
                .find(|k| !columns.list.iter().any(|(n, _)| n == *k))
            {
                anyhow::bail!(
                    "field `{field}` is not in the schema (inferred from the first batch: {}): {}",
                    columns
                        .list
                        .iter()
                        .map(|(n, t)| format!("{n} {}", t.name()))
                        .collect::<Vec<_>>()
                        .join(", "),
                    shown(record)
                );
            }
        }
    }
    let mut arrays: Vec<ArrayRef> = Vec::with_capacity(columns.list.len());
    for (column, ty) in &columns.list {
        let values = objects
            .iter()
            .map(|o| o.get(column).filter(|v| !v.is_null()));
        let misfit = |i: usize, v: &Value| {
            anyhow::anyhow!(
                "field `{column}`: {} does not fit its type {}: {}",
                shown(v),
                ty.name(),
                shown(&records[i])
            )
        };
        let array: ArrayRef = match ty {
            ColumnType::String => {
                let mut b = StringBuilder::new();
                for (i, v) in values.enumerate() {
                    match v {
                        None => b.append_null(),
                        Some(Value::String(s)) => b.append_value(s),
                        Some(v) => return Err(misfit(i, v)),
                    }
                }
                Arc::new(b.finish())
            }
            ColumnType::Json => {
                let mut b = StringBuilder::new();
                for v in values {
                    match v {
                        None => b.append_null(),
                        Some(v) => b.append_value(v.to_string()),
                    }
                }
                Arc::new(b.finish())
            }
            ColumnType::Int64 => {
                let mut b = Int64Builder::with_capacity(records.len());
                for (i, v) in values.enumerate() {
                    match v {
                        None => b.append_null(),
                        Some(v) => b.append_value(v.as_i64().ok_or_else(|| misfit(i, v))?),
                    }
                }
                Arc::new(b.finish())
            }
            ColumnType::Double => {
                let mut b = Float64Builder::with_capacity(records.len());
                for (i, v) in values.enumerate() {
                    match v {
                        None => b.append_null(),
                        Some(v) => b.append_value(v.as_f64().ok_or_else(|| misfit(i, v))?),
                    }
                }
                Arc::new(b.finish())
            }
            ColumnType::Boolean => {
                let mut b = BooleanBuilder::with_capacity(records.len());
                for (i, v) in values.enumerate() {
                    match v {
                        None => b.append_null(),
                        Some(v) => b.append_value(v.as_bool().ok_or_else(|| misfit(i, v))?),
                    }
                }
                Arc::new(b.finish())
            }
            ColumnType::TimestampMs => {
                let mut b =
                    TimestampMillisecondBuilder::with_capacity(records.len()).with_timezone("UTC");
                for (i, v) in values.enumerate() {
                    match v {
                        None => b.append_null(),
                        Some(v @ (Value::Number(_) | Value::String(_))) => b.append_value(
                            crate::decode::parse_event_time(v).map_err(|_| misfit(i, v))?,
                        ),
                        Some(v) => return Err(misfit(i, v)),
                    }
                }
                Arc::new(b.finish())
            }
        };
        arrays.push(array);
    }
    Ok(RecordBatch::try_new_with_options(
        columns.arrow.clone(),
        arrays,
        &arrow_array::RecordBatchOptions::new().with_row_count(Some(records.len())),
    )?)
}

impl Output for ParquetOutput {
    fn write_batch(&mut self, batch: &Batch) -> anyhow::Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        // Everything is converted before anything is written: a record that
        // does not fit fails the batch with nothing of it in a file.
        let mut groups: BTreeMap<String, Vec<Value>> = BTreeMap::new();
        for event in batch {
            let mut record: Value = serde_json::from_slice(event.value()).with_context(|| {
                format!(
                    "a record is not JSON: {}",
                    String::from_utf8_lossy(&event.value()[..event.value().len().min(200)])
                )
            })?;
            if !record.is_object() {
                anyhow::bail!("a record is not a JSON object: {}", shown(&record));
            }
            let part = self.partition_of(&mut record)?;
            groups.entry(part).or_default().push(record);
        }
        let columns = match &self.schema {
            Some(c) => c.clone(),
            None => {
                let all: Vec<Value> = groups.values().flatten().cloned().collect();
                let inferred = infer(&all)?;
                if inferred.is_empty() {
                    anyhow::bail!("the first batch's records have no field to make a column of");
                }
                tracing::info!(
                    sink = %self.name,
                    columns = %inferred.iter().map(|(n, t)| format!("{n} {}", t.name())).collect::<Vec<_>>().join(", "),
                    "schema inferred from the first batch"
                );
                let c = Columns::new(inferred, true);
                self.schema = Some(c.clone());
                c
            }
        };
        let mut converted = Vec::with_capacity(groups.len());
        for (part, records) in &groups {
            converted.push((part, to_arrow(&columns, records)?, records.len() as u64));
        }
        for (part, arrow, rows) in converted {
            if !self.open.contains_key(part) {
                let file = self.open_file(part, &columns.arrow)?;
                self.open.insert(part.clone(), file);
            }
            let file = self.open.get_mut(part).expect("opened");
            file.writer.write(&arrow).with_context(|| {
                format!("cannot write {}", file.folder.join(&file.hidden).display())
            })?;
            file.rows += rows;
        }
        let due: Vec<String> = (self.open.iter())
            .filter(|(_, f)| self.due(f))
            .map(|(p, _)| p.clone())
            .collect();
        for part in due {
            self.roll(&part)?;
        }
        Ok(())
    }

    fn sync(&mut self) -> anyhow::Result<Option<u64>> {
        self.roll_all()?;
        if !self.sink.exactly_once {
            return Ok(None);
        }
        if self.closed.is_empty() {
            // Nothing since the last checkpoint: it stands for this one too.
            return Ok(Some(self.epoch - 1));
        }
        // The hidden names durable before the checkpoint records the epoch.
        let mut folders: Vec<&PathBuf> = self.closed.iter().map(|c| &c.folder).collect();
        folders.sort();
        folders.dedup();
        for folder in folders {
            sync_dir(folder)?;
        }
        self.prepared.append(&mut self.closed);
        self.synced = Some(self.epoch);
        self.epoch += 1;
        self.seq = 0;
        Ok(Some(self.epoch - 1))
    }

    fn commits_at_checkpoints(&self) -> bool {
        self.sink.exactly_once
    }

    fn committed(&mut self) -> anyhow::Result<()> {
        let Some(synced) = self.synced else {
            return Ok(());
        };
        let (now, later): (Vec<Closed>, Vec<Closed>) = std::mem::take(&mut self.prepared)
            .into_iter()
            .partition(|c| c.epoch <= synced);
        self.prepared = later;
        let mut folders = Vec::new();
        for c in &now {
            c.publish()?;
            folders.push(c.folder.clone());
        }
        folders.sort();
        folders.dedup();
        for folder in folders {
            sync_dir(&folder)?;
        }
        Ok(())
    }

    fn finish(&mut self) -> anyhow::Result<()> {
        if !self.sink.exactly_once {
            return self.roll_all();
        }
        // Rows after the last checkpoint: a resumed run writes them again.
        let mut deleted = 0;
        for (_, open) in std::mem::take(&mut self.open) {
            drop(open.writer);
            let _ = std::fs::remove_file(open.folder.join(&open.hidden));
            deleted += 1;
        }
        for c in std::mem::take(&mut self.closed) {
            let _ = std::fs::remove_file(c.folder.join(&c.hidden));
            deleted += 1;
        }
        if deleted > 0 {
            tracing::info!(
                sink = %self.name,
                files = deleted,
                "files written after the last checkpoint are deleted: a resumed run writes their rows again"
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::Sink as _;

    fn sink(dir: &Path, exactly_once: bool) -> ParquetSink {
        ParquetSink {
            dir: dir.to_path_buf(),
            compression: Compression::Zstd,
            schema: None,
            partitions: Vec::new(),
            roll_rows: None,
            roll_bytes: default_roll_bytes(),
            roll_interval: default_roll_interval(),
            exactly_once,
        }
    }

    fn batch(lines: &[&str]) -> Batch {
        Batch::from_lines(&(lines.join("\n") + "\n"))
    }

    /// Every file under `dir`, relative, sorted.
    fn files(dir: &Path) -> Vec<String> {
        let mut out = Vec::new();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap() {
                let e = e.unwrap();
                if e.file_type().unwrap().is_dir() {
                    stack.push(e.path());
                } else {
                    out.push(
                        e.path()
                            .strip_prefix(dir)
                            .unwrap()
                            .to_string_lossy()
                            .into_owned(),
                    );
                }
            }
        }
        out.sort();
        out
    }

    /// Whether a file is a whole Parquet file: `PAR1` at both ends (the
    /// footer is written last). The parquet crate's reader is not built;
    /// pyarrow reads the files in tests/all/parquet.rs.
    fn is_whole(path: &Path) -> bool {
        let bytes = std::fs::read(path).unwrap();
        bytes.len() > 12 && bytes.starts_with(b"PAR1") && bytes.ends_with(b"PAR1")
    }

    #[test]
    fn names_round_trip() {
        let (hidden, visible) = file_names(12, 3);
        assert_eq!(visible, "part-0000000012-000003.parquet");
        assert_eq!(hidden, ".part-0000000012-000003.parquet.inprogress");
        assert_eq!(parse_name(&hidden), Some((true, 12)));
        assert_eq!(parse_name(&visible), Some((false, 12)));
        assert_eq!(parse_name("part-12-3.parquet"), None);
        assert_eq!(parse_name("other.parquet"), None);
    }

    #[test]
    fn partition_values_are_hive_escaped() {
        assert_eq!(hive_escape("JFK"), "JFK");
        assert_eq!(hive_escape("a/b=c%"), "a%2Fb%3Dc%25");
        assert_eq!(hive_escape(""), "__HIVE_DEFAULT_PARTITION__");
        assert_eq!(hive_escape(".."), "%2E%2E");
        assert_eq!(hive_escape("new\nline"), "new%0Aline");
        assert_eq!(
            folder_value(&Value::Null, false).unwrap(),
            "__HIVE_DEFAULT_PARTITION__"
        );
        assert_eq!(folder_value(&serde_json::json!(7), false).unwrap(), "7");
        assert_eq!(
            folder_value(&serde_json::json!("2013-01-01T23:59:59.999Z"), true).unwrap(),
            "2013-01-01"
        );
        // 2013-01-02T00:00:00Z in epoch ms.
        assert_eq!(
            folder_value(&serde_json::json!(1_357_084_800_000_i64), true).unwrap(),
            "2013-01-02"
        );
        assert!(folder_value(&serde_json::json!("soon"), true).is_err());
        assert!(folder_value(&serde_json::json!({"a": 1}), false).is_err());
    }

    #[test]
    fn partition_by_shapes() {
        let parse = |text: &str| {
            let v: toml::Table = toml::from_str(&format!("p = {text}")).unwrap();
            parse_partitions(&v["p"])
        };
        let p = parse("\"/dest\"").unwrap();
        assert_eq!(
            p,
            [Partition {
                pointer: "/dest".into(),
                name: "dest".into(),
                date: false,
                drops: Some("dest".into())
            }]
        );
        let p = parse(
            "[{ field = \"/a/b\", name = \"x\" }, { field = \"/window_start\", date = \"dt\" }]",
        )
        .unwrap();
        assert_eq!((p[0].name.as_str(), p[0].drops.as_deref()), ("x", None));
        assert_eq!(
            (p[1].name.as_str(), p[1].date, p[1].drops.as_deref()),
            ("dt", true, None)
        );
        assert!(
            parse("\"dest\"")
                .unwrap_err()
                .contains("must start with `/`")
        );
        assert!(
            parse("{ field = \"/a\", name = \"x\", date = \"y\" }")
                .unwrap_err()
                .contains("not both")
        );
        assert!(
            parse("{ field = \"/a\", nme = \"x\" }")
                .unwrap_err()
                .contains("unknown key `nme`")
        );
        assert!(parse("[]").is_err());
        assert!(parse("{ field = \"/a\", name = \"_x\" }").is_err());
    }

    #[test]
    fn partition_folders_and_dropped_fields() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = sink(dir.path(), false);
        let levels: toml::Table =
            toml::from_str("p = [\"/dest\", { field = \"/t\", date = \"dt\" }]").unwrap();
        s.partitions = parse_partitions(&levels["p"]).unwrap();
        let mut out = s.open("t", None).unwrap();
        out.write_batch(&batch(&[
            r#"{"dest":"JFK","t":"2013-01-01T10:00:00Z","n":1}"#,
            r#"{"dest":"a/b","t":"2013-01-02T10:00:00Z","n":2}"#,
            r#"{"t":"2013-01-02T11:00:00Z","n":3}"#,
            r#"{"dest":"JFK","t":"2013-01-01T11:00:00Z","n":4}"#,
        ]))
        .unwrap();
        // Nothing visible before the files close.
        assert!(files(dir.path()).iter().all(|f| f.contains("/.part-")));
        out.finish().unwrap();
        let got = files(dir.path());
        assert_eq!(
            got,
            [
                "dest=JFK/dt=2013-01-01/part-0000000001-000000.parquet",
                "dest=__HIVE_DEFAULT_PARTITION__/dt=2013-01-02/part-0000000001-000001.parquet",
                "dest=a%2Fb/dt=2013-01-02/part-0000000001-000002.parquet",
            ]
        );
        assert!(got.iter().all(|f| is_whole(&dir.path().join(f))));
        // `dest` is in the path, not in the file: the inferred schema has t, n.
        let columns = out_schema(&s);
        assert_eq!(columns, ["t string", "n int64"]);
    }

    /// The columns a fresh output of `s` infers from one record with a
    /// partition field (a test helper).
    fn out_schema(s: &ParquetSink) -> Vec<String> {
        let mut record: Value =
            serde_json::from_str(r#"{"dest":"JFK","t":"2013-01-01T10:00:00Z","n":1}"#).unwrap();
        let out = ParquetOutput {
            sink: s.clone(),
            name: "t".into(),
            schema: None,
            open: BTreeMap::new(),
            epoch: 1,
            seq: 0,
            closed: Vec::new(),
            prepared: Vec::new(),
            synced: None,
        };
        out.partition_of(&mut record).unwrap();
        infer(&[record])
            .unwrap()
            .into_iter()
            .map(|(n, t)| format!("{n} {}", t.name()))
            .collect()
    }

    #[test]
    fn rolls_by_rows_and_bytes_and_interval() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = sink(dir.path(), false);
        s.roll_rows = Some(3);
        let mut out = s.open("t", None).unwrap();
        for i in 0..7 {
            out.write_batch(&batch(&[&format!("{{\"n\":{i}}}")]))
                .unwrap();
        }
        // Two files of 3 rows rolled and visible; the 7th row still hidden.
        let got = files(dir.path());
        assert_eq!(
            got,
            [
                ".part-0000000001-000002.parquet.inprogress",
                "part-0000000001-000000.parquet",
                "part-0000000001-000001.parquet",
            ]
        );
        out.finish().unwrap();
        assert_eq!(files(dir.path()).len(), 3);

        let dir = tempfile::tempdir().unwrap();
        let mut s = sink(dir.path(), false);
        s.roll_bytes = 1;
        let mut out = s.open("t", None).unwrap();
        out.write_batch(&batch(&[r#"{"n":1}"#, r#"{"n":2}"#]))
            .unwrap();
        out.write_batch(&batch(&[r#"{"n":3}"#])).unwrap();
        // Each batch past 1 byte: a file each, at once.
        assert_eq!(files(dir.path()).len(), 2);
        assert!(files(dir.path()).iter().all(|f| f.starts_with("part-")));

        let dir = tempfile::tempdir().unwrap();
        let mut s = sink(dir.path(), false);
        s.roll_interval = Duration::from_millis(50);
        let mut out = s.open("t", None).unwrap();
        out.write_batch(&batch(&[r#"{"n":1}"#])).unwrap();
        assert!(files(dir.path())[0].starts_with(".part-"));
        std::thread::sleep(Duration::from_millis(60));
        out.write_batch(&batch(&[r#"{"n":2}"#])).unwrap();
        assert_eq!(files(dir.path()), ["part-0000000001-000000.parquet"]);
    }

    #[test]
    fn exactly_once_publishes_at_commit_and_settles_on_resume() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = sink(dir.path(), true);
        s.roll_rows = Some(2);
        let mut out = s.open("t", None).unwrap();
        out.write_batch(&batch(&[r#"{"n":1}"#, r#"{"n":2}"#]))
            .unwrap();
        out.write_batch(&batch(&[r#"{"n":3}"#])).unwrap();
        // Rolled, but hidden until the checkpoint.
        assert!(files(dir.path()).iter().all(|f| f.starts_with(".part-")));
        assert_eq!(out.sync().unwrap(), Some(1));
        assert!(files(dir.path()).iter().all(|f| f.starts_with(".part-")));
        out.committed().unwrap();
        assert_eq!(
            files(dir.path()),
            [
                "part-0000000001-000000.parquet",
                "part-0000000001-000001.parquet"
            ]
        );
        // No new rows: the checkpoint stands for the last epoch.
        assert_eq!(out.sync().unwrap(), Some(1));
        // Epoch 2 prepared (its checkpoint saved, then a crash before the
        // rename), epoch 3 prepared and not saved, epoch 4 half-written.
        out.write_batch(&batch(&[r#"{"n":4}"#])).unwrap();
        assert_eq!(out.sync().unwrap(), Some(2));
        out.write_batch(&batch(&[r#"{"n":5}"#])).unwrap();
        assert_eq!(out.sync().unwrap(), Some(3));
        out.write_batch(&batch(&[r#"{"n":6}"#])).unwrap();
        drop(out); // kill -9: no finish
        let hidden: Vec<String> = files(dir.path())
            .into_iter()
            .filter(|f| f.starts_with('.'))
            .collect();
        assert_eq!(hidden.len(), 3, "{hidden:?}");
        let settled = settle(dir.path(), true, Some(2)).unwrap();
        assert_eq!(
            settled,
            Settled {
                renamed: 1,
                deleted: 2,
                next_epoch: 5
            }
        );
        assert_eq!(
            files(dir.path()),
            [
                "part-0000000001-000000.parquet",
                "part-0000000001-000001.parquet",
                "part-0000000002-000000.parquet",
            ]
        );
        assert!(
            files(dir.path())
                .iter()
                .all(|f| is_whole(&dir.path().join(f)))
        );
        // Resumed through the sink: the next epoch follows every one left
        // (3 and 4 were deleted: their numbers are free again).
        let mut out = s.open("t", Some(Resume::CutTo(2))).unwrap();
        out.write_batch(&batch(&[r#"{"n":5}"#])).unwrap();
        assert_eq!(out.sync().unwrap(), Some(3));
        out.committed().unwrap();
        // A fresh start (no checkpoint) deletes every hidden file.
        out.write_batch(&batch(&[r#"{"n":6}"#])).unwrap();
        drop(out);
        let settled = settle(dir.path(), true, None).unwrap();
        assert_eq!((settled.renamed, settled.deleted), (0, 1));
        // Without exactly_once, every hidden file is deleted.
        std::fs::write(
            dir.path()
                .join(".part-0000000001-000009.parquet.inprogress"),
            "x",
        )
        .unwrap();
        let settled = settle(dir.path(), false, Some(9)).unwrap();
        assert_eq!(
            (settled.renamed, settled.deleted, settled.next_epoch),
            (0, 1, 10)
        );
    }

    #[test]
    fn exactly_once_finish_drops_what_no_checkpoint_covers() {
        let dir = tempfile::tempdir().unwrap();
        let s = sink(dir.path(), true);
        let mut out = s.open("t", None).unwrap();
        out.write_batch(&batch(&[r#"{"n":1}"#])).unwrap();
        assert_eq!(out.sync().unwrap(), Some(1));
        out.committed().unwrap();
        out.write_batch(&batch(&[r#"{"n":2}"#])).unwrap();
        out.finish().unwrap();
        assert_eq!(files(dir.path()), ["part-0000000001-000000.parquet"]);
    }

    #[test]
    fn schema_inference_and_mismatch() {
        let rows = |lines: &[&str]| -> Vec<Value> {
            lines
                .iter()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect()
        };
        let inferred = infer(&rows(&[
            r#"{"s":"a","i":1,"d":1.5,"b":true,"o":{"x":1},"n":null}"#,
            r#"{"i":2,"d":2,"late":[1]}"#,
        ]))
        .unwrap();
        let names: Vec<String> = inferred
            .iter()
            .map(|(n, t)| format!("{n} {}", t.name()))
            .collect();
        assert_eq!(
            names,
            [
                "s string",
                "i int64",
                "d double",
                "b boolean",
                "o json",
                "n string",
                "late json"
            ]
        );
        let e = infer(&rows(&[r#"{"x":"a"}"#, r#"{"x":1}"#])).unwrap_err();
        assert!(
            e.to_string()
                .contains("field `x` is string in one record and int64"),
            "{e}"
        );

        let columns = Columns::new(inferred, true);
        let batch = to_arrow(
            &columns,
            &rows(&[
                r#"{"s":"a","i":1,"d":1.5,"b":true,"o":{"x":1}}"#,
                r#"{"i":null}"#,
            ]),
        )
        .unwrap();
        assert_eq!((batch.num_rows(), batch.num_columns()), (2, 7));
        assert_eq!(batch.column(1).null_count(), 1);
        // A new field, a value of another type: refused, naming the field.
        let e = to_arrow(&columns, &rows(&[r#"{"s":"a","extra":1}"#])).unwrap_err();
        assert!(
            e.to_string().contains("field `extra` is not in the schema"),
            "{e}"
        );
        let e = to_arrow(&columns, &rows(&[r#"{"i":"abc"}"#])).unwrap_err();
        assert!(
            e.to_string()
                .contains("field `i`: \"abc\" does not fit its type int64"),
            "{e}"
        );
        let e = to_arrow(&columns, &rows(&[r#"{"i":1.5}"#])).unwrap_err();
        assert!(e.to_string().contains("field `i`"), "{e}");

        // A configured schema: other fields are left out; timestamps from
        // RFC 3339 or epoch ms.
        let columns = Columns::new(
            vec![
                ("t".into(), ColumnType::TimestampMs),
                ("n".into(), ColumnType::Int64),
            ],
            false,
        );
        let batch = to_arrow(
            &columns,
            &rows(&[
                r#"{"t":"2013-01-01T00:00:01Z","n":1,"other":"x"}"#,
                r#"{"t":1000,"n":2}"#,
            ]),
        )
        .unwrap();
        let t = batch
            .column(0)
            .as_any()
            .downcast_ref::<arrow_array::TimestampMillisecondArray>()
            .unwrap();
        assert_eq!(t.values().as_ref(), [1_356_998_401_000, 1000]);
        let e = to_arrow(&columns, &rows(&[r#"{"t":"yesterday"}"#])).unwrap_err();
        assert!(e.to_string().contains("field `t`"), "{e}");
    }

    #[test]
    fn a_record_that_does_not_fit_fails_the_write_and_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let s = sink(dir.path(), false);
        let mut out = s.open("t", None).unwrap();
        out.write_batch(&batch(&[r#"{"n":1}"#])).unwrap();
        let e = out
            .write_batch(&batch(&[r#"{"n":2}"#, r#"{"n":"two"}"#]))
            .unwrap_err();
        assert!(format!("{e:#}").contains("field `n`"), "{e:#}");
        out.finish().unwrap();
        let got = files(dir.path());
        assert_eq!(got.len(), 1);
        assert!(is_whole(&dir.path().join(&got[0])));
    }
}
