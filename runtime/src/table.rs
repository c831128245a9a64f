//! Lookup tables (`[tables.NAME]`): a CSV (with a header row) or NDJSON file
//! held in memory as key → JSON object, for the `join` stage
//! (`pipeline::builtin::Join`).
//!
//! ```toml
//! [tables.airports]
//! path = "../data/airports.csv"   # relative to the config file
//! key = "faa"                     # CSV: a column; NDJSON: a JSON pointer ("/faa")
//! ```
//!
//! The file is watched (as plugin files are: [`crate::wasm::reload::watch_file`])
//! and, when it changes, read again and swapped in whole ([`ArcSwap`]): a
//! partition sees the old table or the new one for a whole batch, never a
//! mix. A file that cannot be read or parsed keeps the old table running, and
//! the reason is logged and counted ([`TableSlot::failed_reloads`]). A later
//! row with the same key replaces an earlier one (as a compacted topic
//! would).
//!
//! A table can also be a **Kafka topic** (Kafka Streams' `GlobalKTable`):
//!
//! ```toml
//! [tables.airports]
//! topic = "airports"              # every partition, from the beginning
//! brokers = "127.0.0.1:9092"
//! # key = "/faa"                  # default: the message key
//! ```
//!
//! The daemon reads the topic to its end before any pipeline starts
//! ([`TableSlot::watch`]), then follows it on a thread of its own: a record
//! sets its key's row (its value, a JSON object), a tombstone (no value)
//! deletes it, and the changes are swapped in as a new table at most every
//! [`KAFKA_PUBLISH_EVERY`]. Use a compacted topic (`cleanup.policy=compact`),
//! so that it keeps the latest row of every key.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arc_swap::ArcSwap;
use serde::Deserialize;
use serde_json::Value;
use toml::Spanned;

use crate::config::{ComponentTable, ConfigError, ConfigSource};
use crate::format::csv::{CsvFormat, CsvOptions};

/// How a table file is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TableFormat {
    /// Comma-separated values with a header row (RFC 4180; see
    /// [`crate::format::csv`]); every row an object of its columns.
    Csv,
    /// One JSON object per line.
    Json,
}

impl TableFormat {
    /// A file's format when none is given: CSV for a `.csv` file, else NDJSON.
    pub fn of_path(path: &Path) -> Self {
        if path.extension().is_some_and(|e| e == "csv") {
            TableFormat::Csv
        } else {
            TableFormat::Json
        }
    }
}

/// `[tables.NAME]` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableConfig {
    /// The file, relative to the config file. A `.gz` file is not read.
    /// Exactly one of `path` and `topic`.
    pub path: Option<Spanned<PathBuf>>,
    /// A Kafka topic whose records are the rows (every partition, from the
    /// beginning, then followed): value a JSON object, no value (a
    /// tombstone) deletes the key's row.
    pub topic: Option<Spanned<String>>,
    /// With `topic`: the bootstrap brokers, `host:port[,host:port…]`.
    pub brokers: Option<Spanned<String>>,
    /// With `topic`: librdkafka consumer properties, passed through (as a
    /// Kafka source's).
    #[serde(default)]
    pub properties: std::collections::BTreeMap<String, Spanned<toml::Value>>,
    /// `csv` or `json` (files). Default: `csv` for a `.csv` file, else `json`.
    pub format: Option<Spanned<TableFormat>>,
    /// The key of each row: a column name (CSV) or a JSON pointer (NDJSON,
    /// e.g. `/faa`). A string key is its text, another value its JSON text.
    /// Required for a file; for a topic, a pointer into the value, and by
    /// default the message key.
    pub key: Option<Spanned<String>>,
    /// CSV only: column types and null values, as a source's `csv` table
    /// (a header row is required: `header` cannot be given).
    #[serde(default)]
    pub csv: Option<CsvOptions>,
}

/// Where a Kafka table's rows come from (`topic`, `brokers`, `properties`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaTable {
    /// Bootstrap brokers.
    pub brokers: String,
    /// The topic.
    pub topic: String,
    /// librdkafka properties, passed through.
    pub properties: std::collections::BTreeMap<String, String>,
}

/// Most time a Kafka table's changes wait before they are swapped in.
pub const KAFKA_PUBLISH_EVERY: std::time::Duration = std::time::Duration::from_millis(200);

/// Longest a Kafka table's first read (to the end of the topic) may take
/// before the daemon gives up starting.
pub const KAFKA_BOOTSTRAP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// What a table is read with, checked.
#[derive(Debug, Clone)]
pub struct TableSpec {
    /// The table's name.
    pub name: String,
    /// The file, absolute or relative to the daemon's folder (empty for a
    /// Kafka table).
    pub path: PathBuf,
    /// A Kafka table: its topic (then `path`, `format` and `csv` are not
    /// used, and an empty `key` means the message key).
    pub kafka: Option<KafkaTable>,
    /// How it is read.
    pub format: TableFormat,
    /// Column name (CSV) or JSON pointer (NDJSON).
    pub key: String,
    /// CSV options.
    pub csv: CsvOptions,
}

/// A table in memory: key → the row as JSON object text.
#[derive(Debug, Default)]
pub struct Table {
    rows: HashMap<String, Box<str>>,
}

impl Table {
    /// The row of `key`, as JSON object text.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.rows.get(key).map(|r| &**r)
    }

    /// Rows (distinct keys).
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether it has no row.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }
}

/// Why a table file could not be loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoadError {
    /// The key column is not in the CSV header (the message names the
    /// columns there are).
    Key(String),
    /// The file cannot be read, or a line cannot be parsed (`line N: …`).
    File(String),
}

impl std::fmt::Display for LoadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LoadError::Key(m) | LoadError::File(m) => f.write_str(m),
        }
    }
}

/// The key text of a JSON value: a string is its content, null none, another
/// value its JSON text (the rule of a source's `key`).
pub fn key_text(value: &Value) -> Option<std::borrow::Cow<'_, str>> {
    match value {
        Value::Null => None,
        Value::String(s) => Some(std::borrow::Cow::Borrowed(s)),
        other => Some(std::borrow::Cow::Owned(other.to_string())),
    }
}

impl TableSpec {
    /// Reads `[tables.NAME]` and loads its file once, so that `sluice
    /// validate` finds a missing file, a broken line or a missing key column.
    ///
    /// # Errors
    /// A located error: at `path` when the file cannot be read or parsed, at
    /// `key` when the key column is not in the header.
    pub fn build(
        table: &ComponentTable,
        source: &ConfigSource,
        base: &Path,
    ) -> Result<(TableSpec, Table), ConfigError> {
        let (_, own) = table.split(&[]);
        let config: TableConfig = crate::config::deserialize_table(own, source, &[])?;
        if let Some(topic) = &config.topic {
            return Self::build_kafka(table, &config, topic, source);
        }
        refuse_given(
            table,
            source,
            &[
                ("brokers", config.brokers.is_some()),
                ("properties", !config.properties.is_empty()),
            ],
            "a table read from a Kafka `topic`",
        )?;
        let Some(path) = &config.path else {
            return Err(source.error(
                table.span.clone(),
                format!(
                    "table `{}` needs a `path` (a CSV or NDJSON file) or a Kafka `topic`",
                    table.name
                ),
            ));
        };
        let Some(key) = &config.key else {
            return Err(source.error(
                table.span.clone(),
                format!(
                    "table `{}` needs a `key`: a column (CSV) or a JSON pointer (NDJSON)",
                    table.name
                ),
            ));
        };
        let path = crate::config::resolve(base, path.get_ref());
        let format = match &config.format {
            Some(f) => *f.get_ref(),
            None => TableFormat::of_path(&path),
        };
        let csv = config.csv.clone().unwrap_or_default();
        if let Some(options) = &config.csv {
            if format != TableFormat::Csv {
                return Err(table_error(table, source, "csv", "`csv` is for CSV tables"));
            }
            if options.header.is_some() {
                return Err(table_error(
                    table,
                    source,
                    "csv",
                    "a table file needs its header row: `csv.header` cannot be given",
                ));
            }
        }
        if format == TableFormat::Json {
            crate::decode::Pointer::parse(key.get_ref())
                .map_err(|e| source.error(key.span(), e))?;
        }
        let spec = TableSpec {
            name: table.name.clone(),
            path,
            kafka: None,
            format,
            key: key.get_ref().clone(),
            csv,
        };
        let loaded = spec.load().map_err(|e| match e {
            LoadError::Key(m) => source.error(key.span(), m),
            LoadError::File(m) => source.error(
                config.path.as_ref().expect("a file table").span(),
                format!("table `{}`: {}: {m}", spec.name, spec.path.display()),
            ),
        })?;
        Ok((spec, loaded))
    }

    /// A `topic` table: checked here, read when the daemon starts it
    /// ([`TableSlot::watch`]), so `sluice validate` needs no broker.
    fn build_kafka(
        table: &ComponentTable,
        config: &TableConfig,
        topic: &Spanned<String>,
        source: &ConfigSource,
    ) -> Result<(TableSpec, Table), ConfigError> {
        refuse_given(
            table,
            source,
            &[
                ("path", config.path.is_some()),
                ("format", config.format.is_some()),
                ("csv", config.csv.is_some()),
            ],
            "a table read from a file, not a Kafka `topic`",
        )?;
        let Some(brokers) = &config.brokers else {
            return Err(source.error(
                topic.span(),
                format!(
                    "table `{}` reads a Kafka topic: it needs `brokers` (`host:port[,host:port…]`)",
                    table.name
                ),
            ));
        };
        if topic.get_ref().is_empty() {
            return Err(source.error(topic.span(), "`topic` is empty"));
        }
        if brokers.get_ref().trim().is_empty() {
            return Err(source.error(
                brokers.span(),
                "`brokers` is empty: give `host:port[,host:port…]`",
            ));
        }
        if let Some(key) = &config.key {
            crate::decode::Pointer::parse(key.get_ref())
                .map_err(|e| source.error(key.span(), e))?;
        }
        let properties = crate::kafka::properties_from_config(
            &config.properties,
            &["group.id", "enable.auto.commit", "enable.partition.eof"],
            source,
        )?;
        if let Err(e) = crate::kafka::check_properties(&properties) {
            return Err(table_error(table, source, "properties", &e));
        }
        let spec = TableSpec {
            name: table.name.clone(),
            path: PathBuf::new(),
            kafka: Some(KafkaTable {
                brokers: brokers.get_ref().clone(),
                topic: topic.get_ref().clone(),
                properties,
            }),
            format: TableFormat::Json,
            key: config
                .key
                .as_ref()
                .map(|k| k.get_ref().clone())
                .unwrap_or_default(),
            csv: CsvOptions::default(),
        };
        Ok((spec, Table::default()))
    }

    /// Reads the file into a [`Table`].
    ///
    /// # Errors
    /// See [`LoadError`].
    pub fn load(&self) -> Result<Table, LoadError> {
        if let Some(kafka) = &self.kafka {
            return Err(LoadError::File(format!(
                "table `{}` is read from Kafka topic `{}`, not a file",
                self.name, kafka.topic
            )));
        }
        let text = std::fs::read_to_string(&self.path)
            .map_err(|e| LoadError::File(format!("cannot read: {e}")))?;
        match self.format {
            TableFormat::Csv => self.load_csv(&text),
            TableFormat::Json => self.load_json(&text),
        }
    }

    fn load_csv(&self, text: &str) -> Result<Table, LoadError> {
        let format = CsvFormat::new(&self.csv).map_err(LoadError::File)?;
        let mut lines = text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty());
        let (_, first) = lines
            .next()
            .ok_or_else(|| LoadError::File("empty: no header row".into()))?;
        let header = format
            .header(first.as_bytes())
            .map_err(|e| LoadError::File(format!("line 1 (the header): {e}")))?;
        if !header.names().iter().any(|n| n == &self.key) {
            return Err(LoadError::Key(format!(
                "key column `{}` is not in the header of {} (columns: {})",
                self.key,
                self.path.display(),
                header.names().join(", ")
            )));
        }
        let mut rows = HashMap::new();
        for (i, line) in lines {
            let row = format
                .row(&header, line.as_bytes())
                .map_err(|e| LoadError::File(format!("line {}: {e}", i + 1)))?;
            let key = row
                .get(&self.key)
                .and_then(key_text)
                .ok_or_else(|| {
                    LoadError::File(format!(
                        "line {}: no value in key column `{}`",
                        i + 1,
                        self.key
                    ))
                })?
                .into_owned();
            let json = serde_json::to_string(&row).expect("a JSON object serializes");
            rows.insert(key, json.into_boxed_str());
        }
        Ok(Table { rows })
    }

    fn load_json(&self, text: &str) -> Result<Table, LoadError> {
        let mut rows = HashMap::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            let value: Value = serde_json::from_str(line)
                .map_err(|e| LoadError::File(format!("line {}: invalid JSON: {e}", i + 1)))?;
            if !value.is_object() {
                return Err(LoadError::File(format!(
                    "line {}: a table row must be a JSON object",
                    i + 1
                )));
            }
            let key = value
                .pointer(&self.key)
                .and_then(key_text)
                .ok_or_else(|| {
                    LoadError::File(format!("line {}: no value at key `{}`", i + 1, self.key))
                })?
                .into_owned();
            rows.insert(key, line.into());
        }
        Ok(Table { rows })
    }
}

fn table_error(
    table: &ComponentTable,
    source: &ConfigSource,
    field: &str,
    message: &str,
) -> ConfigError {
    source.error(
        table.field_span(field).unwrap_or(table.span.clone()),
        message,
    )
}

/// The first of `fields` (name, whether the table gives it) that is given,
/// as an error located at it: "`NAME` is for {kind}".
fn refuse_given(
    table: &ComponentTable,
    source: &ConfigSource,
    fields: &[(&str, bool)],
    kind: &str,
) -> Result<(), ConfigError> {
    match fields.iter().find(|(_, given)| *given) {
        Some((field, _)) => Err(table_error(
            table,
            source,
            field,
            &format!("`{field}` is for {kind}"),
        )),
        None => Ok(()),
    }
}

/// The daemon's lookup tables by name, as stages and plugins read them.
pub type TableSet = std::collections::BTreeMap<String, Arc<TableSlot>>;

impl crate::wasm::keyed::TableLookup for TableSet {
    fn lookup(&self, table: &str, key: &str) -> Result<Option<String>, String> {
        let slot = self.get(table).ok_or_else(|| {
            let known: Vec<&str> = self.keys().map(String::as_str).collect();
            format!(
                "no table `{table}` (the daemon's tables: {})",
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            )
        })?;
        Ok(slot.current().get(key).map(str::to_string))
    }
}

/// A table that runs: the current [`Table`], swapped whole when its file
/// changes. Shared by every `join` stage that reads it.
#[derive(Debug)]
pub struct TableSlot {
    /// How it is read.
    pub spec: TableSpec,
    current: ArcSwap<Table>,
    /// Loads that replaced the table (the first one not counted).
    pub reloads: AtomicU64,
    /// Loads that failed and kept the old table.
    pub failed_reloads: AtomicU64,
}

impl TableSlot {
    /// A slot holding `table`, loaded from `spec`.
    pub fn new(spec: TableSpec, table: Table) -> Arc<Self> {
        Arc::new(TableSlot {
            spec,
            current: ArcSwap::from_pointee(table),
            reloads: AtomicU64::new(0),
            failed_reloads: AtomicU64::new(0),
        })
    }

    /// The table now (held for a whole batch).
    pub fn current(&self) -> Arc<Table> {
        self.current.load_full()
    }

    /// Reads the file again; swaps the new table in when it loads, keeps the
    /// old one and logs why when it does not. Returns whether it swapped.
    pub fn reload(&self) -> bool {
        match self.spec.load() {
            Ok(table) => {
                let rows = table.len();
                self.current.store(Arc::new(table));
                self.reloads.fetch_add(1, Ordering::Relaxed);
                tracing::info!(table = %self.spec.name, rows, "lookup table reloaded");
                true
            }
            Err(e) => {
                self.failed_reloads.fetch_add(1, Ordering::Relaxed);
                tracing::error!(
                    table = %self.spec.name,
                    path = %self.spec.path.display(),
                    "lookup table file cannot be loaded, the old table stays: {e}"
                );
                false
            }
        }
    }

    /// Keeps the table up to date until the handle returned is dropped: a
    /// file is watched and read again when it changes; a Kafka topic is read
    /// to its end first (this waits for it, at most
    /// [`KAFKA_BOOTSTRAP_TIMEOUT`]), then followed on a thread.
    ///
    /// # Errors
    /// The file's folder cannot be watched; the topic cannot be read to its
    /// end (no broker, no such topic).
    pub fn watch(self: &Arc<Self>) -> anyhow::Result<TableWatch> {
        if self.spec.kafka.is_some() {
            return Ok(TableWatch::Kafka(KafkaFollower::start(self.clone())?));
        }
        let slot = self.clone();
        let watcher = crate::wasm::reload::watch_file(&self.spec.path, move || {
            slot.reload();
        })
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot watch the file of table `{}` ({}): {e}",
                self.spec.name,
                self.spec.path.display()
            )
        })?;
        Ok(TableWatch::File(watcher))
    }

    /// Whether the table is read from Kafka (followed whatever `hot_reload`
    /// says: a topic is a stream, not a file to reload).
    pub fn is_kafka(&self) -> bool {
        self.spec.kafka.is_some()
    }

    fn publish(&self, rows: &HashMap<String, Box<str>>) {
        self.current.store(Arc::new(Table { rows: rows.clone() }));
        self.reloads.fetch_add(1, Ordering::Relaxed);
    }
}

/// What keeps a table up to date (see [`TableSlot::watch`]); dropping it
/// stops that.
#[derive(Debug)]
pub enum TableWatch {
    /// A file's watcher.
    File(notify::RecommendedWatcher),
    /// A Kafka topic's follower thread.
    Kafka(KafkaFollower),
}

/// The thread that follows a Kafka table's topic.
#[derive(Debug)]
pub struct KafkaFollower {
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for KafkaFollower {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Applies one record of a Kafka table's topic to `rows`: the row key is
/// the message key (UTF-8), or the value at the table's `key` pointer; a
/// record without a value (a tombstone) deletes the message key's row.
/// Returns whether `rows` changed; a record that cannot be a row is logged
/// and skipped.
fn apply_kafka_record<M: rdkafka::message::Message>(
    spec: &TableSpec,
    rows: &mut HashMap<String, Box<str>>,
    message: &M,
) -> bool {
    let skip = |why: &str| {
        tracing::warn!(
            table = %spec.name,
            partition = message.partition(),
            offset = message.offset(),
            "lookup table record skipped: {why}"
        );
        false
    };
    let message_key = message.key().map(std::str::from_utf8);
    let Some(payload) = message.payload() else {
        return match message_key {
            Some(Ok(key)) => rows.remove(key).is_some(),
            _ => skip("a tombstone without a UTF-8 key"),
        };
    };
    let Ok(text) = std::str::from_utf8(payload) else {
        return skip("the value is not UTF-8");
    };
    let value: Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) => return skip(&format!("the value is not JSON: {e}")),
    };
    if !value.is_object() {
        return skip("a table row must be a JSON object");
    }
    let key = if spec.key.is_empty() {
        match message_key {
            Some(Ok(key)) => key.to_string(),
            _ => return skip("no UTF-8 message key (set `key` to take it from the value)"),
        }
    } else {
        match value.pointer(&spec.key).and_then(key_text) {
            Some(key) => key.into_owned(),
            None => return skip(&format!("no value at key `{}`", spec.key)),
        }
    };
    let row: Box<str> = serde_json::to_string(&value)
        .expect("a JSON object serializes")
        .into();
    rows.insert(key, row);
    true
}

impl KafkaFollower {
    /// Reads `slot`'s topic to its end (every partition, from the
    /// beginning) into the slot, then follows it on a thread.
    fn start(slot: Arc<TableSlot>) -> anyhow::Result<Self> {
        use anyhow::Context as _;
        use rdkafka::consumer::{BaseConsumer, Consumer as _};
        use rdkafka::error::KafkaError;
        use rdkafka::{Offset, TopicPartitionList};
        let kafka = slot.spec.kafka.clone().expect("a Kafka table");
        let name = slot.spec.name.clone();
        let what = || format!("table `{name}` (Kafka topic `{}`)", kafka.topic);
        let consumer: BaseConsumer<crate::kafka::Quiet> =
            crate::kafka::client_config(&kafka.brokers, &kafka.properties)
                .set("group.id", format!("sluice-table-{name}"))
                .set("enable.auto.commit", "false")
                .set("enable.partition.eof", "true")
                .set("fetch.wait.max.ms", "100")
                .create_with_context(crate::kafka::Quiet {
                    client: "lookup table",
                    ..Default::default()
                })
                .with_context(|| format!("{}: cannot make a consumer", what()))?;
        let deadline = std::time::Instant::now() + KAFKA_BOOTSTRAP_TIMEOUT;
        let partitions: Vec<i32> = loop {
            let found = consumer
                // Short tries, retried up to the deadline: a stop signal is
                // looked at between them.
                .fetch_metadata(Some(&kafka.topic), std::time::Duration::from_secs(1))
                .ok()
                .and_then(|md| {
                    md.topics()
                        .iter()
                        .find(|t| t.name() == kafka.topic && t.error().is_none())
                        .map(|t| t.partitions().iter().map(|p| p.id()).collect::<Vec<_>>())
                })
                .filter(|p| !p.is_empty());
            anyhow::ensure!(
                !crate::kafka::stop_requested(),
                "{}: a stop signal came while the daemon waited for its broker",
                what()
            );
            match found {
                Some(p) => break p,
                None if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(200));
                }
                None => anyhow::bail!(
                    "{}: no such topic on {} (or no broker answered) within {KAFKA_BOOTSTRAP_TIMEOUT:?}",
                    what(),
                    kafka.brokers
                ),
            }
        };
        let mut tpl = TopicPartitionList::new();
        for p in &partitions {
            tpl.add_partition_offset(&kafka.topic, *p, Offset::Beginning)?;
        }
        consumer.assign(&tpl)?;
        let mut rows: HashMap<String, Box<str>> = HashMap::new();
        let mut at_end = std::collections::BTreeSet::new();
        while at_end.len() < partitions.len() {
            anyhow::ensure!(
                !crate::kafka::stop_requested(),
                "{}: a stop signal came while it was read to its end",
                what()
            );
            anyhow::ensure!(
                std::time::Instant::now() < deadline,
                "{}: not read to its end within {KAFKA_BOOTSTRAP_TIMEOUT:?}",
                what()
            );
            match consumer.poll(std::time::Duration::from_millis(100)) {
                None => {}
                Some(Err(KafkaError::PartitionEOF(p))) => {
                    at_end.insert(p);
                }
                Some(Err(e)) => tracing::debug!(table = %name, "lookup table topic: {e}"),
                Some(Ok(message)) => {
                    apply_kafka_record(&slot.spec, &mut rows, &message);
                }
            }
        }
        slot.publish(&rows);
        tracing::info!(table = %name, topic = %kafka.topic, rows = rows.len(), "lookup table read from Kafka");
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name(format!("table-{name}"))
            .spawn(move || {
                let mut changed = false;
                let mut published = std::time::Instant::now();
                while !flag.load(Ordering::Relaxed) {
                    match consumer.poll(std::time::Duration::from_millis(100)) {
                        None | Some(Err(KafkaError::PartitionEOF(_))) => {}
                        Some(Err(e)) => tracing::debug!(table = %name, "lookup table topic: {e}"),
                        Some(Ok(message)) => {
                            changed |= apply_kafka_record(&slot.spec, &mut rows, &message);
                        }
                    }
                    if changed && published.elapsed() >= KAFKA_PUBLISH_EVERY {
                        slot.publish(&rows);
                        tracing::info!(table = %name, rows = rows.len(), "lookup table updated from Kafka");
                        changed = false;
                        published = std::time::Instant::now();
                    }
                }
            })?;
        Ok(KafkaFollower {
            stop,
            thread: Some(thread),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(path: &Path, format: TableFormat, key: &str) -> TableSpec {
        TableSpec {
            name: "t".into(),
            path: path.to_path_buf(),
            kafka: None,
            format,
            key: key.into(),
            csv: CsvOptions::default(),
        }
    }

    #[test]
    fn a_csv_table_is_keyed_by_its_column_and_rows_are_objects() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a.csv");
        std::fs::write(
            &file,
            "faa,name,alt\nJFK,John F Kennedy Intl,13\r\nLGA,\"La Guardia, NY\",22\n",
        )
        .unwrap();
        let table = spec(&file, TableFormat::Csv, "faa").load().unwrap();
        assert_eq!(table.len(), 2);
        let row: Value = serde_json::from_str(table.get("LGA").unwrap()).unwrap();
        assert_eq!(
            row,
            serde_json::json!({"faa": "LGA", "name": "La Guardia, NY", "alt": "22"})
        );
        assert!(table.get("EWR").is_none());
        match spec(&file, TableFormat::Csv, "code").load() {
            Err(LoadError::Key(m)) => assert!(m.contains("columns: faa, name, alt"), "{m}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_ndjson_table_is_keyed_by_a_pointer_and_later_rows_win() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a.ndjson");
        std::fs::write(
            &file,
            "{\"id\":{\"n\":7},\"v\":1}\n\n{\"id\":{\"n\":\"x\"},\"v\":2}\n{\"id\":{\"n\":7},\"v\":3}\n",
        )
        .unwrap();
        let table = spec(&file, TableFormat::Json, "/id/n").load().unwrap();
        assert_eq!(table.len(), 2);
        assert_eq!(table.get("7"), Some("{\"id\":{\"n\":7},\"v\":3}"));
        assert_eq!(table.get("x"), Some("{\"id\":{\"n\":\"x\"},\"v\":2}"));
        std::fs::write(&file, "{\"id\":{\"n\":1}}\n[1]\n").unwrap();
        assert_eq!(
            spec(&file, TableFormat::Json, "/id/n").load().unwrap_err(),
            LoadError::File("line 2: a table row must be a JSON object".into())
        );
    }

    #[test]
    fn a_broken_file_keeps_the_old_table_and_a_good_one_swaps_in() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a.csv");
        std::fs::write(&file, "k,v\na,1\n").unwrap();
        let spec = spec(&file, TableFormat::Csv, "k");
        let slot = TableSlot::new(spec.clone(), spec.load().unwrap());
        let before = slot.current();
        std::fs::write(&file, "k,v\nb,\"2\n").unwrap();
        assert!(!slot.reload());
        assert!(Arc::ptr_eq(&before, &slot.current()), "the old table stays");
        assert_eq!(slot.failed_reloads.load(Ordering::Relaxed), 1);
        std::fs::write(&file, "k,v\nb,2\n").unwrap();
        assert!(slot.reload());
        assert!(slot.current().get("a").is_none());
        assert!(slot.current().get("b").is_some());
        // A batch holding the old table still reads it whole.
        assert!(before.get("a").is_some());
    }

    #[test]
    fn the_watcher_swaps_the_table_when_the_file_changes() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a.csv");
        std::fs::write(&file, "k,v\na,1\n").unwrap();
        let spec = spec(&file, TableFormat::Csv, "k");
        let slot = TableSlot::new(spec.clone(), spec.load().unwrap());
        let _watcher = slot.watch().unwrap();
        // Written elsewhere and renamed over, as editors and `mv` do.
        let tmp = dir.path().join("a.csv.tmp");
        std::fs::write(&tmp, "k,v\nz,9\n").unwrap();
        std::fs::rename(&tmp, &file).unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while slot.current().get("z").is_none() {
            assert!(std::time::Instant::now() < deadline, "not reloaded");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        assert!(slot.current().get("a").is_none());
    }
}
