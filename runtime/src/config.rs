//! The daemon's configuration file: TOML, unknown fields refused, durations and
//! sizes in human units (`"200ms"`, `"4MiB"`).
//!
//! Every error names the file, the line and column, and the field, e.g.
//! `examples/bad.toml:7:12: field `interval`: invalid duration "5 parsecs": …`.
//! Relative paths in the file are relative to the file's own folder, so a config
//! works from whatever directory the daemon is started in.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};
use toml::Spanned;

/// A whole configuration file, as parsed (before the topology checks it).
#[derive(Debug)]
pub struct Config {
    /// Daemon-wide settings (`[daemon]`).
    pub daemon: DaemonConfig,
    /// Named sources (`[sources.NAME]`), each read by its kind's file
    /// (`source::parse`).
    pub sources: BTreeMap<String, Spanned<ComponentTable>>,
    /// Named sinks (`[sinks.NAME]`), each read by its kind's file
    /// (`sink::parse`).
    pub sinks: BTreeMap<String, Spanned<ComponentTable>>,
    /// Named pipelines (`[pipelines.NAME]`).
    pub pipelines: BTreeMap<String, Spanned<PipelineConfig>>,
    /// Named lookup tables (`[tables.NAME]`), each read by `table::TableConfig`
    /// (the `join` stage looks records up in them).
    pub tables: BTreeMap<String, Spanned<ComponentTable>>,
}

/// The file as serde reads it in a first pass: sources and sinks only as
/// tables with a `type` (their fields are their kind's to read).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    daemon: DaemonConfig,
    #[serde(default)]
    sources: BTreeMap<String, Spanned<RawComponent>>,
    #[serde(default)]
    sinks: BTreeMap<String, Spanned<RawComponent>>,
    #[serde(default)]
    pipelines: BTreeMap<String, Spanned<PipelineConfig>>,
    #[serde(default)]
    tables: BTreeMap<String, Spanned<serde::de::IgnoredAny>>,
}

#[derive(Debug, Deserialize)]
struct RawComponent {
    #[serde(rename = "type")]
    kind: Spanned<String>,
    #[serde(flatten)]
    _fields: BTreeMap<String, serde::de::IgnoredAny>,
}

/// `[daemon]`: settings shared by every pipeline.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DaemonConfig {
    /// Folder the `plugin = "NAME.wasm"` entries are looked up in. Default
    /// `plugins`, relative to the config file.
    #[serde(default = "default_plugins_dir")]
    pub plugins_dir: Spanned<PathBuf>,
    /// Folder for what the daemon keeps between runs: compiled plugins
    /// (`compiled/`) and the status (`status.json`). Default: `$STATE_DIRECTORY`
    /// when systemd sets it, else `state`, relative to the config file.
    pub state_dir: Option<Spanned<PathBuf>>,
    /// Watch the plugin files and swap a changed one in at the next batch
    /// boundary. Default `true`.
    #[serde(default = "default_true")]
    pub hot_reload: bool,
    /// Address of the admin HTTP API (`/health`, `/ready`, `/metrics`,
    /// `/pipelines`, `/plugins`, `POST /reload`), or `"off"`. Default
    /// `"127.0.0.1:9464"`.
    pub admin: Option<Spanned<String>>,
    /// Allow `admin` on an address other than loopback. Default `false`.
    #[serde(default)]
    pub admin_allow_remote: bool,
    /// A file holding the token (its first line) a client off the loopback
    /// must show (`Authorization: Bearer TOKEN`) to tap records (`GET /tap`:
    /// records are user data); relative to the config file. Default: none
    /// (taps from the loopback only).
    pub admin_token_file: Option<Spanned<PathBuf>>,
    /// Bound on the compile cache (`STATE_DIR/compiled/`), bytes: past it,
    /// after a plugin is compiled and stored, the least recently used
    /// entries are removed (see [`crate::wasm::compile_cache`]). Default
    /// `"1GiB"`.
    #[serde(default = "default_compile_cache_max", deserialize_with = "de_size")]
    pub compile_cache_max: u64,
    /// Log level, or `tracing` filter directives (`"warn,sluice=debug"`), read
    /// at start. `RUST_LOG`, when set, takes precedence. Default `"info"`.
    pub log_level: Option<Spanned<String>>,
    /// `[daemon.telemetry]`: OpenTelemetry export. Default: off.
    #[serde(default)]
    pub telemetry: TelemetryConfig,
}

/// `[daemon.telemetry]`: metrics and traces exported over OTLP/HTTP (protobuf).
/// The admin API's Prometheus `/metrics` works without it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetryConfig {
    /// Base URL of an OTLP/HTTP receiver, e.g. `"http://127.0.0.1:4318"`:
    /// traces go to `/v1/traces`, metrics to `/v1/metrics`. `http://` or
    /// `https://`. Default: none (nothing exported).
    pub otlp_endpoint: Option<Spanned<String>>,
    /// A PEM file of the CA certificates that sign an `https://` collector's
    /// certificate (a private CA), trusted instead of Mozilla's roots.
    /// Default: none.
    pub ca_file: Option<Spanned<std::path::PathBuf>>,
    /// How often metrics are exported (they are also exported at shutdown).
    /// Default `"10s"`, at most a day.
    #[serde(default = "default_export_interval", deserialize_with = "de_duration")]
    pub export_interval: Duration,
}

fn default_export_interval() -> Duration {
    Duration::from_secs(10)
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        TelemetryConfig {
            otlp_endpoint: None,
            ca_file: None,
            export_interval: default_export_interval(),
        }
    }
}

impl Default for DaemonConfig {
    fn default() -> Self {
        DaemonConfig {
            plugins_dir: Spanned::new(0..0, default_plugins_dir_path()),
            state_dir: None,
            hot_reload: true,
            admin: None,
            admin_allow_remote: false,
            admin_token_file: None,
            log_level: None,
            compile_cache_max: default_compile_cache_max(),
            telemetry: TelemetryConfig::default(),
        }
    }
}

fn default_compile_cache_max() -> u64 {
    crate::wasm::compile_cache::DEFAULT_MAX_BYTES
}

fn default_true() -> bool {
    true
}

fn default_plugins_dir_path() -> PathBuf {
    PathBuf::from("plugins")
}

fn default_plugins_dir() -> Spanned<PathBuf> {
    Spanned::new(0..0, default_plugins_dir_path())
}

/// How a source's lines are decoded into events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    /// One JSON value per line (NDJSON). A line that is not valid JSON goes to
    /// the dead-letter sink.
    #[default]
    Json,
    /// Each line is an opaque payload; `key` and `timestamp` cannot be used.
    Text,
    /// Each line is a row of comma-separated values (RFC 4180), made a JSON
    /// object whose members the header row names (see [`crate::format::csv`]).
    Csv,
    /// Each line is a syslog message (RFC 5424 or RFC 3164), made a JSON
    /// object (see [`crate::format::syslog`]).
    Syslog,
}

/// What a source does with a record that has no event time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MissingTimestamp {
    /// The time the line was read.
    #[default]
    Now,
    /// To the dead-letter sink, with the reason.
    DeadLetter,
}

/// The fields every source takes beside its `type`: how its lines become
/// events. The kind's own fields are in its file under `source/` (Vector's
/// one-file components).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecodeConfig {
    /// How lines are decoded. Default `json`.
    #[serde(default)]
    pub format: Format,
    /// Longest line accepted; a longer one goes to the dead-letter sink with its
    /// first KiB, and reading goes on after it. Default `"1MiB"`, at most `"64MiB"`.
    #[serde(default = "default_max_line", deserialize_with = "de_batch_bytes")]
    pub max_line_bytes: u64,
    /// JSON pointer (RFC 6901) to the event key, e.g. `/carrier`. A string is used
    /// as its UTF-8 bytes, another value as its JSON text; absent or null means no
    /// key.
    pub key: Option<Spanned<String>>,
    /// JSON pointer (RFC 6901) to the event time: an RFC 3339 string or a number of
    /// milliseconds since the Unix epoch. Absent or null means the time the line
    /// was read (processing time), unless `missing_timestamp` says otherwise.
    pub timestamp: Option<Spanned<String>>,
    /// A record whose `timestamp` field is absent or null: `now` (default)
    /// takes the time it was read; `dead-letter` sends it to the dead-letter
    /// sink (what an event-time job wants: a read time would drag the
    /// watermark to now).
    #[serde(default)]
    pub missing_timestamp: Option<Spanned<MissingTimestamp>>,
    /// With `format = "csv"`: the delimiter, an optional header, column
    /// types and null values (see [`crate::format::csv::CsvOptions`]).
    #[serde(default)]
    pub csv: Option<Spanned<crate::format::csv::CsvOptions>>,
    /// Threads that decode lines in parallel (JSON validation, key, event
    /// time, partition) while the source's own thread only reads and cuts
    /// lines; records reach each partition in input order all the same (see
    /// [`crate::source::parallel`]). Default: the machine's cores (at most
    /// 4) for `format = "json"` on `file`, `dir` and `generator` sources, 0
    /// for `stdin`; refused on the other kinds. JSON only.
    #[serde(default)]
    pub decode_threads: Option<Spanned<usize>>,
}

impl DecodeConfig {
    /// The fields of [`DecodeConfig`], as written in a source table.
    pub const FIELDS: &'static [&'static str] = &[
        "format",
        "max_line_bytes",
        "key",
        "timestamp",
        "missing_timestamp",
        "csv",
        "decode_threads",
    ];
}

/// A `[sources.NAME]` or `[sinks.NAME]` table as written: its `type`, and
/// the config text it is in, so that the kind's own file (`source/KIND.rs`,
/// `sink/KIND.rs`) deserializes the table into its config struct with errors
/// still located in the file (read `type` first, then the table).
#[derive(Debug, Clone)]
pub struct ComponentTable {
    /// `"sources"`, `"sinks"` or `"tables"`.
    pub section: &'static str,
    /// The name after the section (`[sources.NAME]`).
    pub name: String,
    /// The `type` field (`"file"`, `"kafka"`, …); `"table"` for a
    /// `[tables.NAME]` (which has none).
    pub kind: Spanned<String>,
    /// Where the table is in the file.
    pub span: Range<usize>,
    /// The whole config text.
    text: std::sync::Arc<str>,
}

/// A table of the config file with its fields' places, borrowed from the text.
pub type TableValue<'a> = Spanned<toml::de::DeValue<'a>>;

impl ComponentTable {
    /// The table, with the places of its fields.
    pub fn table(&self) -> TableValue<'_> {
        let missing = || {
            Spanned::new(
                self.span.clone(),
                toml::de::DeValue::Table(Default::default()),
            )
        };
        let Ok(root) = toml::de::DeTable::parse(&self.text) else {
            return missing();
        };
        let found = root
            .get_ref()
            .get(self.section)
            .and_then(|s| s.get_ref().as_table())
            .and_then(|t| t.get(self.name.as_str()))
            .cloned();
        found.unwrap_or_else(missing)
    }

    /// The span of field `name` in the table, if it is there.
    pub fn field_span(&self, name: &str) -> Option<Range<usize>> {
        self.table()
            .get_ref()
            .as_table()?
            .get(name)
            .map(|v| v.span())
    }

    /// The table without `type`, split in two: the fields named in `split`
    /// and the rest, each as a table value with the table's span.
    pub fn split(&self, split: &[&str]) -> (TableValue<'_>, TableValue<'_>) {
        let table = self.table();
        let span = table.span();
        let mut picked = toml::de::DeTable::new();
        let mut rest = toml::de::DeTable::new();
        if let Some(t) = table.get_ref().as_table() {
            for (k, v) in t.iter() {
                if k.get_ref() == "type" {
                    continue;
                }
                if split.contains(&k.get_ref().as_ref()) {
                    picked.insert(k.clone(), v.clone());
                } else {
                    rest.insert(k.clone(), v.clone());
                }
            }
        }
        (
            Spanned::new(span.clone(), toml::de::DeValue::Table(picked)),
            Spanned::new(span, toml::de::DeValue::Table(rest)),
        )
    }
}

/// What a source's or sink's config needs to build what runs (see
/// `source::SourceConfig`, `sink::SinkConfig`).
#[derive(Debug)]
pub struct BuildContext<'a> {
    /// The source's or sink's name.
    pub name: &'a str,
    /// The pipeline that reads it (each pipeline builds its own source); empty
    /// for a sink.
    pub pipeline: &'a str,
    /// The table, for the places of its fields.
    pub table: &'a ComponentTable,
    /// The config text, for located errors.
    pub config: &'a ConfigSource,
    /// Relative paths are resolved against this folder (the config file's).
    pub base: &'a Path,
}

impl BuildContext<'_> {
    /// An error at field `field` of the table (at the table when it is absent).
    pub fn error_at(&self, field: &str, message: impl Into<String>) -> ConfigError {
        let span = self
            .table
            .field_span(field)
            .unwrap_or(self.table.span.clone());
        self.config.error(span, message)
    }
}

/// What a source or sink claims, each with its place in the file (to name
/// if another one claims it too).
pub type ClaimList = Vec<(Claim, Range<usize>)>;

/// Something a source or sink holds that no other one may hold at once.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Claim {
    /// A file read or written (refused twice: writes would interleave or loop).
    File(PathBuf),
    /// A directory whose files (those matching `pattern`, if given) a source
    /// reads: no other source may read it, no sink write such a file in it.
    Directory {
        /// The directory.
        path: PathBuf,
        /// The file-name glob, if any.
        pattern: Option<String>,
    },
    /// A directory a sink writes its files into (a parquet sink's): no other
    /// sink may write into it, nor into a folder inside it.
    OutputDirectory(PathBuf),
    /// The daemon's standard input (one pipeline may read it).
    Stdin,
    /// The daemon's standard output (one sink may write it).
    Stdout,
    /// A Kafka consumer group at these brokers (one pipeline per group).
    KafkaGroup {
        /// Bootstrap brokers.
        brokers: String,
        /// The group.
        group: String,
    },
    /// A listening socket (TCP or UDP, by `proto`).
    Listen {
        /// `tcp` or `udp`.
        proto: &'static str,
        /// The address.
        address: std::net::SocketAddr,
    },
}

/// An unknown field that another kind takes: says which (`"`topics` is for
/// kafka sources"), ahead of serde's message.
pub fn hint_other_kind<'a>(
    message: &str,
    what: &str,
    this: &str,
    kinds: impl Iterator<Item = (&'a str, &'static [&'static str])>,
) -> String {
    let Some(field) = message
        .strip_prefix("unknown field `")
        .and_then(|m| m.split('`').next())
    else {
        return message.to_string();
    };
    let takers: Vec<&str> = kinds
        .filter(|(name, fields)| *name != this && fields.contains(&field))
        .map(|(name, _)| name)
        .collect();
    if takers.is_empty() {
        return message.to_string();
    }
    format!(
        "`{field}` is for {} {what}s, and this is a {this} {what} ({message})",
        takers.join(" and ")
    )
}

/// The field names of a struct config `T` (what its derived `Deserialize`
/// declares), for messages such as "`topics` is for kafka sources".
pub fn fields_of<T: serde::de::DeserializeOwned>() -> &'static [&'static str] {
    /// A deserializer that only records the fields a struct asks for.
    struct Fields(std::cell::Cell<&'static [&'static str]>);
    impl<'de> Deserializer<'de> for &Fields {
        type Error = serde::de::value::Error;
        fn deserialize_any<V: serde::de::Visitor<'de>>(
            self,
            _: V,
        ) -> Result<V::Value, Self::Error> {
            Err(serde::de::Error::custom("fields only"))
        }
        fn deserialize_struct<V: serde::de::Visitor<'de>>(
            self,
            _name: &'static str,
            fields: &'static [&'static str],
            _visitor: V,
        ) -> Result<V::Value, Self::Error> {
            self.0.set(fields);
            Err(serde::de::Error::custom("fields only"))
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
            bytes byte_buf option unit unit_struct newtype_struct seq tuple
            tuple_struct map enum identifier ignored_any
        }
    }
    let fields = Fields(std::cell::Cell::new(&[]));
    let _ = T::deserialize(&fields);
    fields.0.get()
}

/// A kind of component (a source or sink kind, `C` its config trait): its
/// `type` name, the function that reads its table, and its own field names
/// (for "`topics` is for kafka sources"). `source::KINDS` and `sink::KINDS`
/// list them, one line a kind.
pub struct Kind<C: ?Sized> {
    /// The `type` value.
    pub name: &'static str,
    /// Reads the kind's own fields of a table into its config struct.
    pub parse: fn(&ComponentTable, &ConfigSource) -> Result<Box<C>, ConfigError>,
    /// The kind's own field names.
    pub fields: fn() -> &'static [&'static str],
}

impl<C: ?Sized> fmt::Debug for Kind<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Kind").field("name", &self.name).finish()
    }
}

/// Reads `table` with the kind its `type` names among `kinds` (of `what`:
/// `"source"`, `"sink"`).
///
/// # Errors
/// An unknown `type` (listing the kinds), or a field the kind refuses, both
/// located; an unknown field that another kind takes names that kind.
pub fn read_kind<C: ?Sized>(
    kinds: &[Kind<C>],
    what: &str,
    table: &ComponentTable,
    source: &ConfigSource,
) -> Result<Box<C>, ConfigError> {
    let kind = kinds
        .iter()
        .find(|k| k.name == table.kind.get_ref())
        .ok_or_else(|| unknown_kind(table, source, what, kinds.iter().map(|k| k.name)))?;
    (kind.parse)(table, source).map_err(|mut e| {
        e.message = hint_other_kind(
            &e.message,
            what,
            kind.name,
            kinds.iter().map(|k| (k.name, (k.fields)())),
        );
        e
    })
}

/// The error for a `type` no kind of `what` (`"source"`, `"sink"`) has,
/// listing the kinds there are.
pub fn unknown_kind<'a>(
    table: &ComponentTable,
    source: &ConfigSource,
    what: &str,
    names: impl Iterator<Item = &'a str>,
) -> ConfigError {
    source.error(
        table.kind.span(),
        format!(
            "unknown {what} type `{}`, expected one of {}",
            table.kind.get_ref(),
            names
                .map(|n| format!("`{n}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    )
}

/// A kind's own fields of `table` (all but `type` and the `shared` ones)
/// deserialized into `T`, errors located.
///
/// # Errors
/// As [`deserialize_table`].
pub fn deserialize_own<T: serde::de::DeserializeOwned>(
    table: &ComponentTable,
    source: &ConfigSource,
    shared: &[&str],
) -> Result<T, ConfigError> {
    let (_, own) = table.split(shared);
    deserialize_table(own, source, shared)
}

/// Deserializes a table value (from [`ComponentTable::split`]) into `T`, with
/// errors located in `source`; `extra` names fields the table may also hold
/// (shared fields taken out before), for the message on an unknown field.
///
/// # Errors
/// A field of the wrong type, an unknown field, a missing required field.
pub fn deserialize_table<T: serde::de::DeserializeOwned>(
    value: TableValue<'_>,
    source: &ConfigSource,
    extra: &[&str],
) -> Result<T, ConfigError> {
    let span = value.span();
    T::deserialize(toml::de::ValueDeserializer::from(value)).map_err(|e| {
        let mut message = e.message().trim_end().to_string();
        if message.starts_with("unknown field") && !extra.is_empty() {
            message.push_str(&format!(
                ", or one of the fields every such table takes: `{}`",
                extra.join("`, `")
            ));
        }
        source.error(e.span().unwrap_or(span), message)
    })
}

/// What a stage does with a batch that failed: a trap, a timeout, an
/// out-of-memory, or an error returned by the plugin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnError {
    /// Send every record of the batch to the dead-letter sink with the reason.
    DeadLetter,
    /// Drop the batch, log it and count it (`skipped` in the summary).
    Skip,
    /// Stop the pipeline; the daemon drains the other pipelines and exits 1.
    Stop,
}

/// `batch = { … }`: when a micro-batch closes. Whichever limit is reached first
/// closes it (Spark's trigger interval, Vector's batch settings).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchConfig {
    /// Most records in one batch. Default 4096.
    #[serde(default = "default_max_records", deserialize_with = "de_positive")]
    pub max_records: usize,
    /// Most bytes (keys + values) in one batch; a single larger record makes a
    /// batch of its own. Default `"4MiB"`, at most `"64MiB"`.
    #[serde(default = "default_max_bytes", deserialize_with = "de_batch_bytes")]
    pub max_bytes: u64,
    /// Longest time a batch stays open after its first record, at most a day.
    /// Default `"200ms"`.
    #[serde(default = "default_interval", deserialize_with = "de_duration")]
    pub interval: Duration,
}

pub fn default_max_line() -> u64 {
    1 << 20
}

fn default_max_records() -> usize {
    4096
}
fn default_max_bytes() -> u64 {
    4 << 20
}
fn default_interval() -> Duration {
    Duration::from_millis(200)
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig {
            max_records: default_max_records(),
            max_bytes: default_max_bytes(),
            interval: default_interval(),
        }
    }
}

/// One entry of `processors = [ … ]`: a Wasm plugin and its settings, or a
/// built-in stage (`join`, `dedup`) on host-owned state. Exactly one of
/// `plugin`, `join` and `dedup` is given; the other fields are the plugin's
/// (but `on_error`, which every stage takes).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProcessorConfig {
    /// The component file, looked up in `daemon.plugins_dir` (or a path).
    pub plugin: Option<Spanned<String>>,
    /// A lookup join against a `[tables.NAME]` (see [`JoinConfig`]).
    pub join: Option<Spanned<JoinConfig>>,
    /// Deduplication within a watermark (see [`DedupConfig`]).
    pub dedup: Option<Spanned<DedupConfig>>,
    /// Passed to the plugin's `configure` as (name, value) string pairs; numbers and
    /// booleans are passed in their TOML text form.
    #[serde(default)]
    pub config: BTreeMap<String, Spanned<toml::Value>>,
    /// Most linear memory one instance may grow to. Default `"64MiB"`.
    #[serde(default = "default_memory_limit", deserialize_with = "de_size")]
    pub memory_limit: u64,
    /// Longest one call (`configure` or `process`) may run before it is cut off,
    /// between `"10ms"` and `"1h"`. Default `"1s"`.
    #[serde(default = "default_timeout", deserialize_with = "de_timeout")]
    pub timeout: Duration,
    /// This stage's error policy; default: the pipeline's `on_error`. For a
    /// built-in stage: what happens to a record that is not JSON, or that a
    /// full dedup state cannot take.
    pub on_error: Option<OnError>,
    /// When to stop calling a plugin that keeps failing.
    #[serde(default)]
    pub circuit_breaker: BreakerConfig,
    /// Keyed processors only: how long a key's state lives after it was last
    /// written, in processing time (Flink's `StateTtlConfig` with
    /// `OnCreateAndWrite` and `NeverReturnExpired`; Spark's TTL for
    /// `transformWithState`): an expired state is never handed to the
    /// plugin. Between 1ms and 366days; default: no expiry.
    #[serde(default, deserialize_with = "de_opt_within")]
    pub state_ttl: Option<Duration>,
    /// Keyed processors only: how far the watermark that fires event-time
    /// timers stays behind the largest event time the partition has seen
    /// (Flink's bounded out-of-orderness). Default `"0s"`.
    #[serde(default, deserialize_with = "de_opt_duration")]
    pub watermark: Option<Duration>,
    /// Keyed processors only: most bytes of state (keys, values and timers)
    /// one partition keeps in memory; past it, states spill to disk (see
    /// `state_spill`). Default `"256MiB"`.
    #[serde(default, deserialize_with = "de_opt_size")]
    pub state_memory: Option<u64>,
    /// Keyed processors only: whether states past `state_memory` go to a
    /// file on disk, least recently used first (`true`, the default), or a
    /// record of a new key past it is refused (`false`).
    #[serde(default)]
    pub state_spill: Option<bool>,
}

fn de_opt_within<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    de_within(d).map(Some)
}

fn de_opt_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    de_lag(d).map(Some)
}

fn de_opt_size<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    de_size(d).map(Some)
}

/// `join = { table = "airports", on = "/dest", as = "/dest_airport", kind = "left" }`:
/// looks the value at `on` up in a lookup table and inserts the row found (a
/// JSON object) at `as` (Spark's stream-static join, with the table swapped
/// when its file changes).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JoinConfig {
    /// The `[tables.NAME]` to look up in.
    pub table: Spanned<String>,
    /// JSON pointer to the record's lookup key: a string matches a table key
    /// equal to it, another value its JSON text (`1545`); absent or null
    /// matches nothing.
    pub on: Spanned<String>,
    /// JSON pointer where the row is inserted (objects on the way are
    /// created; a value already there is replaced).
    #[serde(rename = "as")]
    pub target: Spanned<String>,
    /// `left` (default): a record without a match passes unchanged;
    /// `inner`: it is dropped and counted (`records_unmatched`).
    #[serde(default)]
    pub kind: JoinKind,
}

/// Which records a join keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JoinKind {
    /// Every record; a matched one gets the row.
    #[default]
    Left,
    /// Matched records only.
    Inner,
}

/// `dedup = { key = ["/carrier", "/flight"], within = "1h" }`: Spark's
/// `dropDuplicatesWithinWatermark` (see `pipeline::builtin::Dedup`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DedupConfig {
    /// JSON pointers whose values, together, identify a record (at most 32).
    pub key: Spanned<Vec<Spanned<String>>>,
    /// The watermark delay and how long a key is remembered: a key's state
    /// lives until the watermark (the largest event time seen by the
    /// partition, minus `within`) passes its first event time plus
    /// `within`; a record older than the watermark is dropped as late.
    /// Between 1ms and 366days.
    #[serde(deserialize_with = "de_within")]
    pub within: Duration,
    /// Most keys one partition's state may hold; a record that would add
    /// one more goes to the stage's error policy. Default 1000000.
    #[serde(default = "default_max_keys", deserialize_with = "de_positive")]
    pub max_keys: usize,
}

fn default_max_keys() -> usize {
    1_000_000
}

fn de_within<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    de_window_len(d).map(|d| d.unwrap_or_default())
}

/// `circuit_breaker = { … }` of a processor. A failed batch is bisected until
/// the records that make the plugin fail alone are found (poison records); after
/// `failures` poison records in a row, with no successful call between, the
/// breaker opens and, for
/// `cooldown`, batches go to the error policy without calling the plugin; then
/// one batch is tried again (half-open): a success closes the breaker, a failure
/// opens it again. A new version of the plugin closes it. (The pattern of
/// Nygard's *Release It!*, as resilience4j names its states.)
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BreakerConfig {
    /// Poison records in a row (no successful call between) that open the
    /// breaker, at least 1. Default 5.
    #[serde(default = "default_breaker_failures", deserialize_with = "de_positive")]
    pub failures: usize,
    /// How long it stays open, at most a day. Default `"30s"`.
    #[serde(default = "default_breaker_cooldown", deserialize_with = "de_duration")]
    pub cooldown: Duration,
    /// Most failed calls the bisection of one batch may make (each may cost up
    /// to the stage's `timeout`); past it, the records not yet isolated go to
    /// the error policy together. At least 1. Default 32 (enough to isolate two
    /// poison records in a batch of 65,536).
    #[serde(default = "default_bisect_limit", deserialize_with = "de_positive")]
    pub bisect_limit: usize,
}

fn default_bisect_limit() -> usize {
    32
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            failures: default_breaker_failures(),
            cooldown: default_breaker_cooldown(),
            bisect_limit: default_bisect_limit(),
        }
    }
}

fn default_breaker_failures() -> usize {
    5
}
fn default_breaker_cooldown() -> Duration {
    Duration::from_secs(30)
}

fn default_memory_limit() -> u64 {
    64 << 20
}
fn default_timeout() -> Duration {
    Duration::from_secs(1)
}

/// `[pipelines.NAME]`: source → partitions → micro-batches → processors → sinks.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    /// Name of the source to read.
    pub source: Spanned<String>,
    /// Number of partition workers; records go to `murmur2(key) % partitions`.
    /// Default 1.
    #[serde(default = "default_partitions")]
    pub partitions: Spanned<usize>,
    /// How records are spread over the partitions: `key` (default) or
    /// `balance`.
    pub partition_by: Option<Spanned<PartitionMode>>,
    /// Micro-batch limits.
    #[serde(default)]
    pub batch: BatchConfig,
    /// The processor chain, run in order on every batch.
    #[serde(default)]
    pub processors: Vec<ProcessorConfig>,
    /// Names of the sinks every output record is written to.
    pub sinks: Spanned<Vec<Spanned<String>>>,
    /// Name of the sink that receives dead-lettered records (with the reason, the
    /// stage and the original bytes). Without one, such records are logged,
    /// counted and dropped.
    pub dead_letter: Option<Spanned<String>>,
    /// Default error policy of the stages. Default `dead-letter` when
    /// `dead_letter` is set, else `skip`.
    pub on_error: Option<OnError>,
    /// Capacity, in records, of each bounded channel between the source and a
    /// partition worker. Default 8192. The channel holds `queue_records / 256`
    /// chunks (at least one), each closed at 256 records or at the record that
    /// takes it to 256 KiB, so records of over 1 KiB fill it with fewer than
    /// `queue_records`: about 8 MiB per partition by default, at most 32 ×
    /// (256 KiB + the largest record). (The HTTP source sends each request's
    /// share as one chunk, bounded by its `max_body`.)
    #[serde(default = "default_queue", deserialize_with = "de_positive")]
    pub queue_records: usize,
    /// Event-time windows after the processor chain; needs `aggregate`.
    pub window: Option<Spanned<WindowConfig>>,
    /// What each window computes; needs `window`.
    pub aggregate: Option<Spanned<Vec<AggregateConfig>>>,
    /// Checkpoints of the source position, window state and sink lengths (see
    /// `checkpoint.rs`); needs a source that can be read again from a
    /// position (a file, Kafka, a generator with `start`). Off when absent.
    pub checkpoint: Option<Spanned<CheckpointConfig>>,
}

impl PipelineConfig {
    /// Where entry `index` of `processors` is in the file: its first field
    /// (an entry has no span of its own).
    pub fn processors_span(&self, index: usize) -> Range<usize> {
        let Some(p) = self.processors.get(index) else {
            return self.source.span();
        };
        [
            p.plugin.as_ref().map(Spanned::span),
            p.join.as_ref().map(Spanned::span),
            p.dedup.as_ref().map(Spanned::span),
        ]
        .into_iter()
        .flatten()
        .min_by_key(|s| s.start)
        .or_else(|| p.config.values().next().map(Spanned::span))
        .unwrap_or_else(|| self.source.span())
    }
}

/// `partition_by` of a pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PartitionMode {
    /// By `toPositive(murmur2(key)) % partitions` (Kafka's default
    /// partitioner): a key's records reach one worker, in order, as keyed
    /// state (`dedup`, keyed processors) needs; keyless records round-robin.
    #[default]
    Key,
    /// Round-robin, record by record, whatever the key: even load when no
    /// stage needs a key's records together (a skewed key — 67% of the
    /// flights keyed by `dest` on one of two workers — no longer caps the
    /// pipeline at one core). Records keep their key (windows still group
    /// by it: the window operator is the pipeline's).
    Balance,
}

/// `checkpoint = { interval = "1s", batches = 100 }`: a checkpoint whenever
/// either is reached (while records flow), and on shutdown and at the end of
/// the input.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointConfig {
    /// Longest time between two checkpoints while records flow. Default `"1s"`.
    #[serde(
        default = "default_checkpoint_interval",
        deserialize_with = "de_duration"
    )]
    pub interval: Duration,
    /// Also after this many micro-batches, counted over all partitions.
    #[serde(default, deserialize_with = "de_opt_positive")]
    pub batches: Option<u64>,
}

fn default_checkpoint_interval() -> Duration {
    Duration::from_secs(1)
}

fn de_opt_positive<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    let n = u64::deserialize(d)?;
    if n == 0 {
        return Err(serde::de::Error::custom("must be at least 1"));
    }
    Ok(Some(n))
}

/// Kinds of window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WindowKindName {
    /// Fixed, non-overlapping (`size`).
    Tumbling,
    /// Overlapping (`size`, `slide`).
    Sliding,
    /// Per key, closed by a `gap` without records.
    Session,
}

/// When window results are written (Spark Structured Streaming's output modes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutputMode {
    /// Each window once, final, when the watermark passes its end (plus the
    /// allowed lateness).
    #[default]
    Append,
    /// After every micro-batch, the windows it changed, with their values so far.
    Update,
}

/// What happens to a record too late for every window it belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LatePolicy {
    /// To the dead-letter sink, with the reason (needs `dead_letter`).
    DeadLetter,
    /// Dropped and counted (`late` in the summary).
    Drop,
}

/// `group_by`: the event key, or the values at JSON pointers.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum GroupBy {
    /// `"key"`: the event key.
    Key(String),
    /// `["/carrier", "/origin"]`: the values at these pointers.
    Fields(Vec<String>),
}

impl Default for GroupBy {
    fn default() -> Self {
        GroupBy::Key("key".into())
    }
}

/// `window = { … }` of a pipeline.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WindowConfig {
    /// `tumbling` | `sliding` | `session`.
    pub kind: WindowKindName,
    /// Window length (tumbling, sliding), up to a year.
    #[serde(default, deserialize_with = "de_window_len")]
    pub size: Option<Duration>,
    /// Distance between window starts (sliding); at most `size`.
    #[serde(default, deserialize_with = "de_window_len")]
    pub slide: Option<Duration>,
    /// Inactivity gap that closes a session.
    #[serde(default, deserialize_with = "de_window_len")]
    pub gap: Option<Duration>,
    /// How far behind the largest event time seen the watermark stays. Default
    /// `"0s"`.
    #[serde(default, deserialize_with = "de_lag")]
    pub watermark: Duration,
    /// How long after the watermark passes a window's end records for it are
    /// still taken. Default `"0s"`.
    #[serde(default, deserialize_with = "de_lag")]
    pub allowed_lateness: Duration,
    /// A partition silent for this long stops holding the watermark back.
    /// Default `"30s"`.
    #[serde(default = "default_idle_timeout", deserialize_with = "de_duration")]
    pub idle_timeout: Duration,
    /// `append` (default) or `update`.
    #[serde(default)]
    pub output_mode: OutputMode,
    /// `"key"` (default) or a list of JSON pointers.
    #[serde(default)]
    pub group_by: GroupBy,
    /// Late records: `dead-letter` (default when the pipeline has a dead-letter
    /// sink) or `drop`.
    pub late: Option<LatePolicy>,
}

fn default_idle_timeout() -> Duration {
    Duration::from_secs(30)
}

/// One entry of `aggregate = [ … ]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AggregateConfig {
    /// The function.
    pub op: crate::aggregate::Op,
    /// JSON pointer to the value; none: the record itself (`count` only).
    pub field: Option<Spanned<String>>,
    /// Output field name; default `OP` or `OP_FIELD` (last pointer token).
    #[serde(rename = "as")]
    pub name: Option<String>,
    /// `op = "wasm"`: the aggregator component (`.wasm`), relative to
    /// `plugins_dir`.
    pub plugin: Option<Spanned<String>>,
    /// `op = "wasm"`: the table passed to the plugin's `configure`.
    #[serde(default)]
    pub config: BTreeMap<String, Spanned<toml::Value>>,
    /// `op = "wasm"`: linear memory limit of the plugin's instance. Default
    /// `"64MiB"`.
    #[serde(default = "default_memory_limit", deserialize_with = "de_size")]
    pub memory_limit: u64,
    /// `op = "wasm"`: deadline of one call. Default `"1s"`.
    #[serde(default = "default_timeout", deserialize_with = "de_timeout")]
    pub timeout: Duration,
}

/// Most a window, slide or gap may be: a year.
const MAX_WINDOW: Duration = Duration::from_secs(366 * 86_400);

fn de_window_len<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let d = parse_duration(&String::deserialize(d)?)?;
    if d < Duration::from_millis(1) || d > MAX_WINDOW {
        return Err(serde::de::Error::custom("must be between 1ms and 366days"));
    }
    Ok(Some(d))
}

fn de_lag<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let d = parse_duration(&String::deserialize(d)?)?;
    if d > MAX_WINDOW {
        return Err(serde::de::Error::custom("must be at most 366days"));
    }
    Ok(d)
}

fn default_partitions() -> Spanned<usize> {
    Spanned::new(0..0, 1)
}
fn default_queue() -> usize {
    8192
}

fn parse_duration<E: serde::de::Error>(text: &str) -> Result<Duration, E> {
    humantime::parse_duration(text)
        .map_err(|e| E::custom(format!("invalid duration {text:?}: {e}")))
}

/// A batch interval: longer than 0s, at most a day.
pub fn de_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let d = parse_duration(&String::deserialize(d)?)?;
    if d.is_zero() {
        return Err(serde::de::Error::custom("must be longer than 0s"));
    }
    if d > Duration::from_secs(86_400) {
        return Err(serde::de::Error::custom("must be at most 1day"));
    }
    Ok(d)
}

/// A plugin call deadline: between 10ms (the epoch tick) and 1h.
pub fn de_timeout<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let d = parse_duration(&String::deserialize(d)?)?;
    if d < Duration::from_millis(10) || d > Duration::from_secs(3600) {
        return Err(serde::de::Error::custom(format!(
            "{} is out of range: a plugin timeout is between 10ms and 1h",
            humantime::format_duration(d)
        )));
    }
    Ok(d)
}

pub fn de_positive<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    match usize::deserialize(d)? {
        0 => Err(serde::de::Error::custom("must be at least 1")),
        n => Ok(n),
    }
}

/// A size: a number of bytes, or a string with a unit (`"4MiB"`, `"512KB"`).
fn parse_size<E: serde::de::Error>(value: toml::Value) -> Result<u64, E> {
    let n = match &value {
        toml::Value::Integer(n) => u64::try_from(*n).ok(),
        toml::Value::String(text) => text.parse::<bytesize::ByteSize>().ok().map(|b| b.as_u64()),
        _ => None,
    };
    match n {
        Some(n) if n > 0 => Ok(n),
        _ => Err(E::custom(format!(
            "invalid size {value}: use a positive number of bytes or a size such as \"512KiB\", \"4MiB\", \"1GB\""
        ))),
    }
}

pub fn de_size<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    parse_size(toml::Value::deserialize(d)?)
}

/// Most bytes in one batch: wasmtime caps what one call may copy between host
/// and guest (past ~128 MiB a call fails), so batches stay well below.
pub const MAX_BATCH_BYTES: u64 = 64 << 20;

pub fn de_batch_bytes<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let n = de_size(d)?;
    if n > MAX_BATCH_BYTES {
        return Err(serde::de::Error::custom(format!(
            "{n} bytes is more than a batch (or a line) may hold: at most 64MiB"
        )));
    }
    Ok(n)
}

/// A configuration error, located in its file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The config file.
    pub file: PathBuf,
    /// 1-based line (0 when the error has no place in the file).
    pub line: usize,
    /// 1-based column, in characters.
    pub column: usize,
    /// What is wrong, naming the field.
    pub message: String,
    /// The offending line of the file, for display.
    pub source_line: Option<String>,
}

impl ConfigError {
    /// `FILE:LINE:COL: MESSAGE` on one line (for a log line).
    pub fn one_line(&self) -> String {
        if self.line == 0 {
            format!("{}: {}", self.file.display(), self.message)
        } else {
            format!(
                "{}:{}:{}: {}",
                self.file.display(),
                self.line,
                self.column,
                self.message
            )
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            return write!(f, "{}: {}", self.file.display(), self.message);
        }
        write!(
            f,
            "{}:{}:{}: {}",
            self.file.display(),
            self.line,
            self.column,
            self.message
        )?;
        if let Some(src) = &self.source_line {
            let pad = " ".repeat(self.line.to_string().len());
            write!(
                f,
                "\n{pad} |\n{} | {src}\n{pad} | {}^",
                self.line,
                " ".repeat(self.column.saturating_sub(1))
            )?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// The text of a config file, for turning byte spans into located errors.
#[derive(Debug, Clone)]
pub struct ConfigSource {
    /// Where it was read from.
    pub file: PathBuf,
    /// Its contents, as parsed: with each `${NAME}` replaced (see
    /// [`interpolate`]).
    pub text: String,
    /// The file as written, when `${…}`s were replaced in `text`: errors
    /// show its lines and columns, not `text`'s (which may hold secrets, and
    /// whose columns move after a replacement). `None`: `text` is the file.
    pub written: Option<Written>,
}

/// A config file as written, and where each `${…}` in it was replaced.
#[derive(Debug, Clone)]
pub struct Written {
    /// The file's text.
    pub text: String,
    /// Each replacement, in order.
    pub substitutions: Vec<Substitution>,
}

/// One `${…}` (or `$${`) replaced in a config's text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Substitution {
    /// Byte range of the `${…}` in the file as written.
    pub written: Range<usize>,
    /// Byte range of what replaced it in the text parsed.
    pub parsed: Range<usize>,
    /// The variable's name (`None` for a `$${`).
    pub name: Option<String>,
}

impl Written {
    /// The offset in the written file of byte `at` of the parsed text, and
    /// the variable whose value holds it (if one does: the offset is then
    /// its `${`).
    fn place(&self, at: usize) -> (usize, Option<&str>) {
        let i = self.substitutions.partition_point(|s| s.parsed.start <= at);
        let Some(s) = i.checked_sub(1).map(|i| &self.substitutions[i]) else {
            return (at, None);
        };
        if at < s.parsed.end {
            (s.written.start, s.name.as_deref())
        } else {
            (at - s.parsed.end + s.written.end, None)
        }
    }
}

impl ConfigSource {
    /// The source of a config file whose text (as written) is `text`, with
    /// each `${NAME}` replaced from `var` (see [`interpolate`]).
    ///
    /// # Errors
    /// As [`interpolate`]'s, located at the `${`.
    pub fn interpolated(
        file: PathBuf,
        text: String,
        var: impl Fn(&str) -> Option<std::ffi::OsString>,
    ) -> Result<ConfigSource, ConfigError> {
        let source = ConfigSource {
            file,
            text,
            written: None,
        };
        let (text, substitutions) = interpolate(&source.text, var)
            .map_err(|(at, message)| source.error(at..at, message))?;
        if substitutions.is_empty() {
            return Ok(source);
        }
        Ok(ConfigSource {
            file: source.file,
            text,
            written: Some(Written {
                text: source.text,
                substitutions,
            }),
        })
    }

    /// A located error for the byte range `span`; the message is prefixed with
    /// the field name found at that place (`field `interval`: …`).
    pub fn error(&self, span: Range<usize>, message: impl Into<String>) -> ConfigError {
        let mut message = message.into();
        let start = span.start.min(self.text.len());
        let (text, start) = match &self.written {
            None => (self.text.as_str(), start),
            Some(written) => {
                let (start, variable) = written.place(start);
                if let Some(name) = variable {
                    message = format!(
                        "{message} (in the value of `${{{name}}}`, which TOML reads as written in its place)"
                    );
                }
                (written.text.as_str(), start.min(written.text.len()))
            }
        };
        let before = &text[..start];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = text[line_start..start].chars().count() + 1;
        let source_line = text[line_start..].lines().next().unwrap_or("").to_string();
        let prefix = &text[line_start..start];
        // At a value, or inside a string value (a `${` in one, say).
        let field = field_before(prefix).or_else(|| {
            let quote = prefix.rfind(['"', '\''])?;
            field_before(&prefix[..quote])
        });
        let message = match field {
            Some(field) if !message.contains(&format!("`{field}`")) => {
                format!("field `{field}`: {message}")
            }
            _ => message,
        };
        ConfigError {
            file: self.file.clone(),
            line,
            column,
            message,
            source_line: Some(source_line),
        }
    }

    /// An error with no place in the file (it cannot be read, say).
    pub fn unplaced(&self, message: impl Into<String>) -> ConfigError {
        ConfigError {
            file: self.file.clone(),
            line: 0,
            column: 0,
            message: message.into(),
            source_line: None,
        }
    }
}

/// The key whose value starts right after `prefix` (`… interval = ` → `interval`).
fn field_before(prefix: &str) -> Option<&str> {
    let prefix = prefix.trim_end().strip_suffix('=')?.trim_end();
    // A quoted key may hold dots (`"linger.ms" = 5`): all of it.
    if let Some(inner) = prefix.strip_suffix('"') {
        let key = &inner[inner.rfind('"')? + 1..];
        return (!key.is_empty()).then_some(key);
    }
    // After the last character that cannot be in a bare key (it may take
    // more than one byte).
    let start = prefix
        .char_indices()
        .rfind(|&(_, c)| !(c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '"'))
        .map_or(0, |(i, c)| i + c.len_utf8());
    let key = prefix[start..].trim_matches('"');
    (!key.is_empty()).then_some(key)
}

impl Config {
    /// Reads and parses `path` (no cross-reference checks: see [`Config::validate`]).
    ///
    /// # Errors
    /// The file cannot be read, is not TOML, or has an unknown field or a value of
    /// the wrong type: a [`ConfigError`] with its place.
    pub fn load(path: &Path) -> Result<(Config, ConfigSource), ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.to_path_buf(),
            line: 0,
            column: 0,
            message: format!("cannot read the config file: {e}"),
            source_line: None,
        })?;
        let source =
            ConfigSource::interpolated(path.to_path_buf(), text, |name| std::env::var_os(name))?;
        let config = Self::parse(&source)?;
        Ok((config, source))
    }

    /// Parses the text of `source`.
    ///
    /// # Errors
    /// As [`Config::load`].
    pub fn parse(source: &ConfigSource) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(&source.text).map_err(|e| {
            let message = e.message().trim_end().to_string();
            match e.span() {
                Some(span) => source.error(span, message),
                None => source.unplaced(message),
            }
        })?;
        let text: std::sync::Arc<str> = source.text.as_str().into();
        let tables = |section: &'static str, raw: BTreeMap<String, Spanned<RawComponent>>| {
            raw.into_iter()
                .map(|(name, c)| {
                    let span = c.span();
                    let table = ComponentTable {
                        section,
                        name: name.clone(),
                        kind: c.into_inner().kind,
                        span: span.clone(),
                        text: text.clone(),
                    };
                    (name, Spanned::new(span, table))
                })
                .collect()
        };
        Ok(Config {
            daemon: raw.daemon,
            sources: tables("sources", raw.sources),
            sinks: tables("sinks", raw.sinks),
            pipelines: raw.pipelines,
            tables: raw
                .tables
                .into_iter()
                .map(|(name, t)| {
                    let span = t.span();
                    let table = ComponentTable {
                        section: "tables",
                        name: name.clone(),
                        kind: Spanned::new(span.clone(), "table".to_string()),
                        span: span.clone(),
                        text: text.clone(),
                    };
                    (name, Spanned::new(span, table))
                })
                .collect(),
        })
    }

    /// The folder relative paths in the file are resolved against.
    pub fn base_dir(source: &ConfigSource) -> PathBuf {
        source
            .file
            .parent()
            .map(Path::to_path_buf)
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or_else(|| PathBuf::from("."))
    }
}

/// Replaces each `${NAME}` and `${NAME:-DEFAULT}` in a config file's text with
/// the value of the environment variable `NAME` (for `:-`, DEFAULT when
/// `NAME` is unset or empty, as in POSIX sh); `$${` stands for a literal
/// `${`. This is Vector's syntax for environment variables in a config
/// (vector.dev, "Configuration: Environment variables"); unlike Vector, an
/// unset variable without a default is an error, not an empty string. It
/// runs over the whole text (comments too) before TOML parsing; a `$` not
/// followed by `{` is left as it is.
///
/// `var` looks a name up (`std::env::var_os` in the daemon). A name is
/// `[A-Za-z_][A-Za-z0-9_]*`. Returns the text to parse and where each
/// replacement was made (for [`ConfigSource::error`]).
///
/// # Errors
/// `(byte offset of the `${`, message)`: an unset variable without a
/// default, a value that is not UTF-8 or holds a line break (it would move
/// every later line of the file, and error locations with it), or a `${`
/// without a valid name and closing `}`.
pub fn interpolate(
    text: &str,
    var: impl Fn(&str) -> Option<std::ffi::OsString>,
) -> Result<(String, Vec<Substitution>), (usize, String)> {
    let mut out = String::with_capacity(text.len());
    let mut substitutions = Vec::new();
    // Bytes before `rest` are in `out` already.
    let mut rest = 0;
    while let Some(found) = text[rest..].find("${") {
        let at = rest + found;
        if text[..at].ends_with('$') {
            // `$${`: a literal `${`.
            out.push_str(&text[rest..at - 1]);
            substitutions.push(Substitution {
                written: at - 1..at + 2,
                parsed: out.len()..out.len() + 2,
                name: None,
            });
            out.push_str("${");
            rest = at + 2;
            continue;
        }
        out.push_str(&text[rest..at]);
        let inner_start = at + 2;
        let close = text[inner_start..]
            .find(['}', '\n'])
            .map(|i| inner_start + i)
            .filter(|&i| text.as_bytes()[i] == b'}')
            .ok_or_else(|| (at, "`${` without its closing `}` on the same line (write `$${` for a literal `${`)".to_string()))?;
        let inner = &text[inner_start..close];
        let (name, default) = match inner.split_once(":-") {
            Some((name, default)) => (name, Some(default)),
            None => (inner, None),
        };
        if default.is_some_and(|d| d.contains("${")) {
            return Err((
                at,
                "a `${` in a default: defaults are plain text, not nested (`$${` for a literal `${`)".to_string(),
            ));
        }
        let valid = name
            .chars()
            .enumerate()
            .all(|(i, c)| c == '_' || c.is_ascii_alphabetic() || (i > 0 && c.is_ascii_digit()));
        if name.is_empty() || !valid {
            return Err((
                at,
                format!(
                    "`${{{inner}}}`: not an environment variable's name (`${{NAME}}` or `${{NAME:-DEFAULT}}`; `$${{` for a literal `${{`)"
                ),
            ));
        }
        let value = match var(name) {
            Some(v) if !(v.is_empty() && default.is_some()) => v
                .into_string()
                .map_err(|_| (at, format!("environment variable `{name}` is not UTF-8")))?,
            _ => match default {
                Some(default) => default.to_string(),
                None => {
                    return Err((
                        at,
                        format!(
                            "environment variable `{name}` is not set (`${{{name}:-DEFAULT}}` gives a default)"
                        ),
                    ));
                }
            },
        };
        if value.contains(['\n', '\r']) {
            return Err((
                at,
                format!(
                    "environment variable `{name}` holds a line break, which a config value cannot take"
                ),
            ));
        }
        substitutions.push(Substitution {
            written: at..close + 1,
            parsed: out.len()..out.len() + value.len(),
            name: Some(name.to_string()),
        });
        out.push_str(&value);
        rest = close + 1;
    }
    out.push_str(&text[rest..]);
    Ok((out, substitutions))
}

/// The state folder of `config`: `daemon.state_dir` (relative to the config
/// file), else `$STATE_DIRECTORY` (set by systemd's `StateDirectory=`; the first
/// of a colon-separated list), else `state` beside the config file.
pub fn state_dir(config: &Config, source: &ConfigSource) -> PathBuf {
    let base = Config::base_dir(source);
    if let Some(dir) = &config.daemon.state_dir {
        return resolve(&base, dir.get_ref());
    }
    if let Some(dir) = std::env::var_os("STATE_DIRECTORY")
        .and_then(|v| {
            v.to_str()
                .and_then(|s| s.split(':').next())
                .map(PathBuf::from)
        })
        .filter(|p| !p.as_os_str().is_empty())
    {
        return dir;
    }
    resolve(&base, Path::new("state"))
}

/// `path` made absolute against the config file's folder.
pub fn resolve(base: &Path, path: &Path) -> PathBuf {
    if path.is_absolute() || base == Path::new(".") {
        path.to_path_buf()
    } else {
        base.join(path)
    }
}

/// The `config` table of a processor as (name, value) pairs sorted by name:
/// strings as they are, other values in their TOML text form.
pub fn plugin_config_pairs(
    table: &BTreeMap<String, Spanned<toml::Value>>,
) -> Vec<(String, String)> {
    table
        .iter()
        .map(|(k, v)| {
            let text = match v.get_ref() {
                toml::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            (k.clone(), text)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(&ConfigSource {
            file: PathBuf::from("t.toml"),
            text: text.to_string(),
            written: None,
        })
    }

    #[test]
    fn human_units_parse() {
        let c = parse(
            r#"
[sources.s]
type = "stdin"
[pipelines.p]
source = "s"
sinks = ["out"]
batch = { max_records = 10, max_bytes = "1KiB", interval = "1s 500ms" }
processors = [ { plugin = "x.wasm", memory_limit = 1048576, timeout = "20ms", config = { a = 1, b = "two" } } ]
"#,
        )
        .unwrap();
        let p = c.pipelines["p"].get_ref();
        assert_eq!(p.batch.max_bytes, 1024);
        assert_eq!(p.batch.interval, Duration::from_millis(1500));
        assert_eq!(p.processors[0].plugin.as_ref().unwrap().get_ref(), "x.wasm");
        assert_eq!(p.processors[0].memory_limit, 1 << 20);
        assert_eq!(p.processors[0].timeout, Duration::from_millis(20));
        assert_eq!(
            plugin_config_pairs(&p.processors[0].config),
            vec![("a".into(), "1".into()), ("b".into(), "two".into())]
        );
    }

    /// An error just after `KEY =` where KEY holds a character of more than
    /// one byte (which TOML refuses in a bare key) is located, not a panic
    /// (it sliced inside the character; found by the fuzz target `config`).
    #[test]
    fn an_error_after_a_key_with_a_multibyte_character_is_located() {
        assert_eq!(field_before("deadmissiҝ_timtampy ="), Some("_timtampy"));
        assert_eq!(field_before("  ké = "), None);
        assert_eq!(field_before("\"ké\" ="), Some("ké"));
        for text in ["deadmissiҝ_timtampy =,\n", "[daemon]\nadmin_ké = \n"] {
            let e = parse(text).unwrap_err();
            assert!(e.line >= 1 && !e.message.is_empty(), "{e}");
        }
    }

    #[test]
    fn errors_are_located_and_name_the_field() {
        let text = "[sources.s]\ntype = \"stdin\"\n\n[pipelines.p]\nsource = \"s\"\nsinks = []\nbatch = { interval = \"5 parsecs\" }\n";
        let e = parse(text).unwrap_err();
        assert_eq!((e.line, e.column), (7, 22), "{e}");
        assert!(e.message.starts_with("field `interval`: "), "{e}");
        assert!(e.message.contains("5 parsecs"), "{e}");

        let e = parse("[daemon]\nplugin_dir = \"x\"\n").unwrap_err();
        assert_eq!((e.line, e.column), (2, 1), "{e}");
        assert!(e.message.contains("unknown field `plugin_dir`"), "{e}");
    }

    /// `${NAME}`, `${NAME:-DEFAULT}` and `$${`, against a fixed
    /// environment: the expected texts are written out by hand.
    #[test]
    fn environment_variables_are_interpolated() {
        let env = |name: &str| match name {
            "DIR" => Some("/srv/t".into()),
            "EMPTY" => Some("".into()),
            "TWO_LINES" => Some("a\nb".into()),
            _ => None,
        };
        let ok = |text: &str| interpolate(text, env).unwrap().0;
        assert_eq!(ok("p = \"${DIR}/plugins\""), "p = \"/srv/t/plugins\"");
        assert_eq!(ok("p = \"${UNSET:-../t}/x\""), "p = \"../t/x\"");
        assert_eq!(ok("p = \"${DIR:-../t}\""), "p = \"/srv/t\"");
        assert_eq!(
            ok("p = \"${EMPTY:-d}\" q = \"${EMPTY}\""),
            "p = \"d\" q = \"\""
        );
        assert_eq!(
            ok("re = \"^a$ $x $${DIR} $$\""),
            "re = \"^a$ $x ${DIR} $$\""
        );
        assert_eq!(ok("${DIR}${DIR}"), "/srv/t/srv/t");
        assert_eq!(ok("é ${DIR:-é}"), "é /srv/t");
        let err = |text: &str| interpolate(text, env).unwrap_err();
        let (at, message) = err("a = 1\nb = \"${NOPE}\"");
        assert_eq!(at, 11);
        assert!(message.contains("`NOPE` is not set"), "{message}");
        assert!(err("b = \"${TWO_LINES}\"").1.contains("line break"));
        assert!(err("b = \"${DIR\"\n}").1.contains("without its closing"));
        assert!(
            err("b = \"${1X}\"")
                .1
                .contains("not an environment variable")
        );
        assert!(err("b = \"${}\"").1.contains("not an environment variable"));
        assert!(
            err("b = \"${A B}\"")
                .1
                .contains("not an environment variable")
        );
    }

    /// A config file with an unset variable: the error names the file, the
    /// line and column of the `${`, and the field.
    #[test]
    fn an_unset_variable_is_a_located_config_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.toml");
        let var = "SLUICE_TEST_SURELY_UNSET_VARIABLE";
        std::fs::write(
            &path,
            format!("[daemon]\nadmin = \"off\"\nplugins_dir = \"${{{var}}}/plugins\"\n"),
        )
        .unwrap();
        let e = Config::load(&path).unwrap_err();
        assert_eq!((e.line, e.column), (3, 16), "{e}");
        assert!(
            e.message.starts_with(&format!(
                "field `plugins_dir`: environment variable `{var}` is not set"
            )),
            "{e}"
        );
    }

    /// Errors after a replacement are placed in the file as written, and
    /// show its line, not the value: a later field's column is the file's
    /// (the value is longer than its `${…}`), an error inside a value is at
    /// its `${` with the variable named, and a secret in the line is not
    /// shown.
    #[test]
    fn errors_after_a_replacement_are_placed_in_the_file_as_written() {
        let env = |name: &str| match name {
            "OUT" => Some("a_much_longer_sink_name".into()),
            "TOKEN" => Some("s3cr3t".into()),
            "P" => Some("C:\\data".into()),
            _ => None,
        };
        let check = |text: &str| {
            let source =
                ConfigSource::interpolated(PathBuf::from("t.toml"), text.to_string(), env).unwrap();
            Config::parse(&source).unwrap_err()
        };
        let e = check("[pipelines.p]\nsource = \"in\"\nsinks = [\"${OUT}\", \"$${X}\"]\nbad = 1\n");
        assert_eq!((e.line, e.column), (4, 1), "{e}");
        // A value TOML refuses: at its `${`, the variable named.
        let e = check("[sources.s]\ntype = \"file\"\npath = \"${P}\"\n");
        assert_eq!((e.line, e.column), (3, 9), "{e}");
        assert!(e.message.starts_with("field `path`: "), "{e}");
        assert!(
            e.message
                .ends_with("(in the value of `${P}`, which TOML reads as written in its place)"),
            "{e}"
        );
        // A later error on a line with a secret: the file's line and column.
        let e = check("[daemon]\nadmin = \"${TOKEN}\" nope\n");
        assert_eq!(
            e.source_line.as_deref(),
            Some("admin = \"${TOKEN}\" nope"),
            "{e}"
        );
        assert_eq!((e.line, e.column), (2, 20), "{e}");
        assert!(!e.to_string().contains("s3cr3t"), "{e}");
        // The places themselves, value by value.
        let (parsed, subs) = interpolate("a${OUT}b$${c}${TOKEN}", env).unwrap();
        assert_eq!(parsed, "aa_much_longer_sink_nameb${c}s3cr3t");
        let written = Written {
            text: String::new(),
            substitutions: subs,
        };
        assert_eq!(written.place(0), (0, None));
        assert_eq!(written.place(1), (1, Some("OUT")));
        assert_eq!(written.place(23), (1, Some("OUT")));
        assert_eq!(written.place(24), (7, None)); // b
        assert_eq!(written.place(25), (8, None)); // the `$${`
        assert_eq!(written.place(27), (11, None)); // c
        assert_eq!(written.place(29), (13, Some("TOKEN")));
        assert!(
            interpolate("${A:-${B}}", env)
                .unwrap_err()
                .1
                .contains("a `${` in a default")
        );
    }
}
