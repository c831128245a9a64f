//! Sources: read lines, decode them into records, route each record to its
//! partition worker.
//!
//! Each kind is one file holding its config struct, its checks, its run loop
//! and its tests, behind the [`Source`] trait (Vector's one-file components);
//! [`KINDS`] lists them. Adding a kind is its file plus one line there.
//!
//! - `file` ([`file`]): plain or gzip, read to its end or followed like `tail -F`;
//!   or a directory's files, each read once ([`dir`]);
//! - `stdin` ([`stdin`]): read to its end;
//! - `kafka` ([`kafka`]): topics read as a member of a consumer group;
//! - `tcp` ([`tcp`]): newline-delimited records from many connections;
//! - `udp` ([`udp`]): one record per datagram, dropped (and counted) when the
//!   pipeline is full;
//! - `generator` ([`generator`]): synthetic records from a template;
//! - `http` ([`http`]): records `POST`ed as NDJSON or a JSON array.
//!
//! What every source shares is here: the fields that say how a line becomes an
//! event ([`crate::config::DecodeConfig`]), the read loop over a [`Lines`]
//! reader, and the [`Outbox`] that chunks records per partition.
//!
//! Formats (`json`, `text`, `csv`, `syslog`) are decoded by a [`LineDecoder`]:
//! [`run_lines`] keeps one per source. A kind with a read loop of its own
//! keeps one per input (a connection, a request): when
//! [`LineDecoder::header_row`] is true, the input's first line goes to
//! [`LineDecoder::set_header`] (the CSV header), every other line to
//! [`LineDecoder::decode`]; its [`Event`] gives the key, the event time and
//! the value (the JSON object a CSV row or syslog line became).
//!
//! Every send into a partition channel blocks while that channel is full, so a
//! slow worker or sink slows the source down (backpressure). A line that cannot
//! be decoded goes to the dead-letter sink; empty lines are skipped.

pub mod parallel;
mod records;
pub mod router;
pub use records::Records;

use std::fmt;
use std::io::{self, Read};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;

use crate::checkpoint::{Barrier, BarrierKind, Checkpointer, Position};
pub use crate::config::{BuildContext, Claim};
use crate::config::{ComponentTable, ConfigError, ConfigSource, DecodeConfig, Format};
use crate::decode::{Decoder, Pointer};
use crate::format::csv::{CsvFormat, Header};
use crate::sink::dead_letter::{DeadLetter, DeadRecord};
use crate::source::router::Router;
use crate::stats::Stats;
use crate::window::operator::WindowMsg;

pub mod dir;
pub mod file;
pub mod generator;
pub mod http;
pub mod kafka;
pub mod stdin;
pub mod stream;
pub mod tcp;
pub mod udp;

pub use file::is_gzip;

/// A kind of source: its `type` name and the function that reads its table
/// (see [`crate::config::Kind`]).
pub type Kind = crate::config::Kind<dyn SourceConfig>;

/// Every kind of source. A new kind: its file, and one line here.
pub const KINDS: &[Kind] = &[
    Kind {
        name: "file",
        parse: parse_as::<file::FileConfig>,
        fields: crate::config::fields_of::<file::FileConfig>,
    },
    Kind {
        name: "stdin",
        parse: parse_as::<stdin::StdinConfig>,
        fields: crate::config::fields_of::<stdin::StdinConfig>,
    },
    Kind {
        name: "kafka",
        parse: parse_as::<kafka::KafkaConfig>,
        fields: crate::config::fields_of::<kafka::KafkaConfig>,
    },
    Kind {
        name: "tcp",
        parse: parse_as::<tcp::TcpConfig>,
        fields: crate::config::fields_of::<tcp::TcpConfig>,
    },
    Kind {
        name: "udp",
        parse: parse_as::<udp::UdpConfig>,
        fields: crate::config::fields_of::<udp::UdpConfig>,
    },
    Kind {
        name: "generator",
        parse: parse_as::<generator::GeneratorConfig>,
        fields: crate::config::fields_of::<generator::GeneratorConfig>,
    },
    Kind {
        name: "http",
        parse: parse_as::<http::HttpConfig>,
        fields: crate::config::fields_of::<http::HttpConfig>,
    },
];

fn parse_as<T: SourceConfig + serde::de::DeserializeOwned + 'static>(
    table: &ComponentTable,
    source: &ConfigSource,
) -> Result<Box<dyn SourceConfig>, ConfigError> {
    Ok(Box::new(crate::config::deserialize_own::<T>(
        table,
        source,
        DecodeConfig::FIELDS,
    )?))
}

/// A `[sources.NAME]` table read by its kind.
#[derive(Debug)]
pub struct Parsed {
    /// The shared fields.
    pub decode: DecodeConfig,
    /// The kind's own fields.
    pub config: Box<dyn SourceConfig>,
}

/// Reads a `[sources.NAME]` table: `type` first, then the shared fields and
/// the kind's own, each refusing unknown fields.
///
/// # Errors
/// An unknown `type`, or a field the kind refuses, located in the file.
pub fn parse(table: &ComponentTable, source: &ConfigSource) -> Result<Parsed, ConfigError> {
    let (shared, _) = table.split(DecodeConfig::FIELDS);
    let decode: DecodeConfig = crate::config::deserialize_table(shared, source, &[])?;
    let config = crate::config::read_kind(KINDS, "source", table, source)?;
    Ok(Parsed { decode, config })
}

/// A source's config, as its kind read it: checks itself and builds what
/// runs.
pub trait SourceConfig: fmt::Debug + Send + Sync {
    /// Checks the fields and builds the source. `cx` gives the pipeline,
    /// the shared fields and located errors.
    ///
    /// # Errors
    /// A located [`ConfigError`].
    fn build(&self, cx: &BuildContext<'_>) -> Result<Built, ConfigError>;

    /// Checks that the source can feed event-time windows (called when its
    /// pipeline has them).
    ///
    /// # Errors
    /// A located [`ConfigError`].
    fn check_windowed(&self, cx: &BuildContext<'_>) -> Result<(), ConfigError> {
        let _ = cx;
        Ok(())
    }
}

/// A built source and what it claims (see [`Claim`]), each with the place in
/// the file to name if another source or sink claims it too.
#[derive(Debug)]
pub struct Built {
    /// The source.
    pub source: Arc<dyn Source>,
    /// What it holds alone.
    pub claims: crate::config::ClaimList,
}

/// How a source can be checkpointed (Spark's "replayable source" requirement
/// for end-to-end guarantees).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Replay {
    /// It cannot be read again: no checkpoint (the reason, for the error).
    No(String),
    /// It is read again from a position that a local checkpoint keeps (a file).
    Position,
    /// It keeps its own position where it is read from (Kafka: offsets
    /// committed to the group at each checkpoint, always on).
    Committed,
}

/// A source, ready to run; one file per kind under `source/`.
///
/// Its `Debug` text is its identity: what a checkpoint records and a config
/// reload compares (so it holds no place in the config file).
pub trait Source: fmt::Debug + Send + Sync + 'static {
    /// What it reads, for messages (`"in.ndjson"`, `"stdin"`, `"kafka t (group g)"`).
    fn describe(&self) -> String;
    /// Whether and how it can be checkpointed.
    fn replay(&self) -> Replay;
    /// Whether its input has a first line, from which `format = "csv"` reads
    /// its header row: a file or stdin has; a Kafka topic (whose records
    /// come and go by offset) has not, so CSV there needs `csv.header`.
    fn has_first_line(&self) -> bool {
        true
    }
    /// Whether it keeps its records' window state per partition of its own
    /// (a Kafka partition: window tasks that move with the partition).
    fn window_tasks(&self) -> bool {
        false
    }
    /// Why a keyed processor cannot keep its state per partition of this
    /// source (a Kafka source spreading a partition's records over the
    /// workers by key), or `None`.
    fn keyed_refusal(&self) -> Option<String> {
        None
    }
    /// Whether its records carry an event time of their own without a
    /// `timestamp` pointer (a Kafka record's timestamp). When they do not
    /// and no `timestamp` is set, a record's time is when it was read, and a
    /// windowed pipeline's watermark follows the event times its processors
    /// give their output instead (see [`crate::pipeline::worker::WindowFeed`]).
    fn stamps_event_time(&self) -> bool {
        false
    }
    /// Whether `decode_threads` (see [`parallel`]) applies, and its default:
    /// `Some(true)` for a kind that reads one big input on one thread, where
    /// more threads pay (file, dir, generator: on by default); `Some(false)`
    /// where it may be set (stdin); `None` where it cannot (a socket source
    /// runs a read loop per connection; Kafka, HTTP and UDP decode in their
    /// own loops): `decode_threads` above 0 is refused there.
    fn parallel_decode(&self) -> Option<bool> {
        None
    }
    /// Runs until the input ends, `cx.stop()` turns true or a worker is gone.
    ///
    /// # Errors
    /// The input cannot be opened, read or resumed, the dead-letter sink
    /// stopped, or a checkpoint could not be written.
    fn run(&self, cx: SourceContext<'_>) -> anyhow::Result<()>;
    /// What a local checkpoint of this source is kept for, when it is not the
    /// place to resume from (Kafka resumes from its group's offsets): said
    /// by `sluice checkpoints --reset`.
    fn reset_note(&self) -> Option<String> {
        None
    }
}

/// What a running source is given.
pub struct SourceContext<'a> {
    /// The pipeline's name.
    pub pipeline: &'a str,
    /// The source's decoding and name.
    pub spec: &'a SourceSpec,
    /// Picks a record's partition.
    pub router: Router,
    /// One channel per partition worker.
    pub partitions: Vec<flume::Sender<Chunk>>,
    /// Where records that cannot be decoded go.
    pub dead_letter: DeadLetter,
    /// The pipeline's counters.
    pub stats: Arc<Stats>,
    /// Turns true when the source must stop.
    pub stop: &'a dyn Fn() -> bool,
    /// Takes checkpoints, when the pipeline has them.
    pub checkpointer: Option<Checkpointer>,
    /// The position of the checkpoint to resume from.
    pub resume: Option<Position>,
    /// The window operator's input, for a source with window tasks.
    pub window: Option<flume::Sender<WindowMsg>>,
    /// Whether the chain has a keyed processor: a Kafka source then tags
    /// each record with its partition's task and moves the keyed state of
    /// each partition through the changelog ([`Chunk::Restore`],
    /// [`Chunk::Forget`]).
    pub keyed: bool,
}

/// Bytes of an overlong line kept for the dead-letter record.
pub(crate) const TOO_LONG_PREFIX: usize = 1024;

/// Records handed to a partition worker at once. Sending chunks instead of single
/// records cuts channel operations and thread wake-ups by this factor; a chunk is
/// also sent as soon as the input has nothing more buffered, so a slow input adds
/// no latency.
pub const CHUNK_RECORDS: usize = 256;

/// Bytes of keys and values after which a chunk is full even with fewer than
/// [`CHUNK_RECORDS`] records (checked after each record: a chunk holds at most
/// this plus one record). A worker's channel holds `queue_records /
/// CHUNK_RECORDS` chunks, so this bounds its memory by bytes too: about 8 MiB
/// per partition at the default `queue_records`, at most 32 × (256 KiB + the
/// largest record), where a bound in records alone let 8,192 records of any
/// size wait (8 GiB of 1 MiB lines). Smaller chunks cost a worker wake-up
/// each: at 64 KiB, a job of 2 KiB records without plugins took 23% more CPU.
pub const CHUNK_BYTES: usize = 256 << 10;

/// How often a waiting source (end of a followed file, quiet stdin) checks for
/// shutdown and new data.
pub(crate) const POLL: Duration = Duration::from_millis(100);

/// One decoded record on its way to a partition worker, owned: what a source
/// that keeps records one by one (Kafka, HTTP, UDP) builds; a chunk packs them
/// ([`Records`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Key bytes; empty when the record has none.
    pub key: Vec<u8>,
    /// The line, without its line terminator.
    pub value: Vec<u8>,
    /// Event time, ms since the Unix epoch.
    pub timestamp_ms: i64,
    /// Headers, as (name, value) pairs (Kafka record headers; none for lines).
    pub headers: Vec<(String, Vec<u8>)>,
    /// The window task of the record's Kafka partition (see
    /// [`crate::window::operator::Task`]); `None` for other sources.
    pub task: Option<u32>,
}

/// What a source sends a partition worker: records, a checkpoint barrier
/// after the last record before the checkpoint, or a request to deliver.
#[derive(Debug)]
pub enum Chunk {
    /// Records, in order, packed.
    Records(Records),
    /// Process what came before, then pass the barrier on.
    Barrier(Barrier),
    /// Process what came before, hand the output to the sinks, have every
    /// sink of the worker (outputs and dead letter) write it out and sync it
    /// to stable storage, then answer: `Ok` once they did, the error of the
    /// first that could not. End-to-end acknowledgement (the `http` source's
    /// `ack = "sink"`, as Vector's `acknowledgements`); a pipeline with
    /// windows holds its records in window state, not in its sinks, so it is
    /// never sent one.
    Deliver(flume::Sender<anyhow::Result<()>>),
    /// A Kafka source was assigned a partition: process what came before,
    /// then take up the keyed state of its task (the source's task id) from
    /// the partition's changelog record (stage name, as
    /// `KeyedSpec::stage_name`, → state; empty: the partition starts
    /// without state). Sent before any record of the partition.
    Restore(
        u32,
        Box<std::collections::BTreeMap<String, crate::checkpoint::KeyedSnapshot>>,
    ),
    /// A Kafka source gave these partition tasks up (a rebalance): process
    /// what came before, then drop their keyed states.
    Forget(Vec<u32>),
}

impl Chunk {
    /// Records in the chunk (0 for a barrier or a delivery request).
    pub fn len(&self) -> usize {
        match self {
            Chunk::Records(r) => r.len(),
            Chunk::Barrier(_) | Chunk::Deliver(_) | Chunk::Restore(..) | Chunk::Forget(_) => 0,
        }
    }

    /// Whether it holds no record.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A source, ready to run.
#[derive(Debug, Clone)]
pub struct SourceSpec {
    /// Name in the config.
    pub name: String,
    /// What to read: the kind's own part.
    pub input: Arc<dyn Source>,
    /// How to decode a line.
    pub format: Format,
    /// Key and event-time extraction.
    pub decoder: Decoder,
    /// Longest line accepted, in bytes; a longer one goes to the dead-letter sink.
    pub max_line_bytes: usize,
    /// A record without an event time: read time, or dead letter.
    pub missing_timestamp: crate::config::MissingTimestamp,
    /// With `format = "csv"`: how rows are split and typed.
    pub csv: Option<Arc<CsvFormat>>,
    /// Decoder threads beside the source's own (0: it decodes itself); see
    /// [`parallel`].
    pub decode_threads: usize,
}

impl SourceSpec {
    /// The spec of source `name` (of pipeline `pipeline`, `windowed` if it
    /// has event-time windows), from its table: the kind builds its part, the
    /// shared fields are checked here.
    ///
    /// # Errors
    /// A located [`ConfigError`].
    pub fn build(
        name: &str,
        pipeline: &str,
        table: &ComponentTable,
        config: &ConfigSource,
        base: &std::path::Path,
        windowed: bool,
    ) -> Result<(SourceSpec, crate::config::ClaimList), ConfigError> {
        let parsed = parse(table, config)?;
        let d = &parsed.decode;
        let cx = BuildContext {
            name,
            pipeline,
            table,
            config,
            base,
        };
        let built = parsed.config.build(&cx)?;
        if windowed {
            parsed.config.check_windowed(&cx)?;
        }
        let pointer = |p: &Option<toml::Spanned<String>>| -> Result<Option<Pointer>, ConfigError> {
            p.as_ref()
                .map(|p| {
                    if d.format == Format::Text {
                        return Err(config.error(
                            p.span(),
                            "`key` and `timestamp` need format = \"json\", \"csv\" or \"syslog\"",
                        ));
                    }
                    Pointer::parse(p.get_ref()).map_err(|e| config.error(p.span(), e))
                })
                .transpose()
        };
        let missing_timestamp = match &d.missing_timestamp {
            None => crate::config::MissingTimestamp::Now,
            Some(m) => {
                if d.timestamp.is_none() && *m.get_ref() != crate::config::MissingTimestamp::Now {
                    return Err(config.error(
                        m.span(),
                        "`missing_timestamp` needs `timestamp`: the field whose absence it is about",
                    ));
                }
                *m.get_ref()
            }
        };
        let csv = match (&d.csv, d.format) {
            (Some(c), f) if f != Format::Csv => {
                return Err(config.error(c.span(), "`csv` is for format = \"csv\""));
            }
            (c, Format::Csv) => {
                let span = c.as_ref().map_or(table.span.clone(), |c| c.span());
                let options = c.as_ref().map(|c| c.get_ref().clone()).unwrap_or_default();
                let csv = CsvFormat::new(&options).map_err(|e| config.error(span.clone(), e))?;
                if csv.fixed_header().is_none() && !built.source.has_first_line() {
                    return Err(config.error(
                        span,
                        format!(
                            "source `{name}` ({}) has no first line to read a CSV header row from: name the columns with `csv = {{ header = [...] }}`",
                            built.source.describe()
                        ),
                    ));
                }
                Some(Arc::new(csv))
            }
            _ => None,
        };
        let decode_threads = match &d.decode_threads {
            Some(n) if d.format != Format::Json && *n.get_ref() > 0 => {
                return Err(config.error(n.span(), "`decode_threads` is for format = \"json\""));
            }
            Some(n) if *n.get_ref() > 64 => {
                return Err(config.error(n.span(), "`decode_threads` is at most 64"));
            }
            Some(n) if *n.get_ref() > 0 && built.source.parallel_decode().is_none() => {
                return Err(config.error(
                    n.span(),
                    format!(
                        "`decode_threads` is for file, generator and stdin sources, not {}",
                        built.source.describe()
                    ),
                ));
            }
            Some(n) => *n.get_ref(),
            None if d.format == Format::Json && built.source.parallel_decode() == Some(true) => {
                parallel::auto_threads()
            }
            None => 0,
        };
        let spec = SourceSpec {
            name: name.to_string(),
            input: built.source,
            format: d.format,
            decoder: Decoder::new(pointer(&d.key)?, pointer(&d.timestamp)?),
            max_line_bytes: usize::try_from(d.max_line_bytes).unwrap_or(usize::MAX),
            missing_timestamp,
            csv,
            decode_threads,
        };
        Ok((spec, built.claims))
    }

    /// Its identity (see [`Source`]): what a checkpoint records.
    pub fn identity(&self) -> String {
        format!("{:?}", self.input)
    }
}

/// What one read produced.
#[derive(Debug)]
pub enum Read1 {
    /// A line is in the buffer.
    Line,
    /// A line longer than the limit, of this many bytes; the buffer holds its
    /// first [`TOO_LONG_PREFIX`] bytes, the rest was skipped.
    TooLong(u64),
    /// Nothing more now; try again (follow mode, quiet stdin).
    Idle,
    /// Busy skipping an overlong line: call again (after checking for stop).
    Pending,
    /// The buffer holds bytes that are no record, for this reason (a TCP
    /// connection closed mid-line): they go to the dead-letter sink.
    Reject(String),
    /// The end of the input.
    Eof,
}

/// A reader of lines that can wait without blocking shutdown.
pub trait Lines: Send {
    /// Reads the next line (terminator stripped) into `buf`.
    fn next_line(&mut self, buf: &mut Vec<u8>) -> io::Result<Read1>;
    /// Whether the next line would need a read from the input (a system call,
    /// perhaps a wait): the moment to hand pending records to the workers.
    fn drained(&self) -> bool;
    /// Whether reading on when [`Lines::drained`] may wait for the input
    /// (a pipe or socket polled for up to [`POLL`]): then lines being
    /// decoded in parallel are forwarded first, not after the wait. A file
    /// answers at once (`Idle` at its end).
    fn waits_when_drained(&self) -> bool {
        false
    }
    /// A partial line still waiting for its newline (a followed file).
    fn unterminated(&self) -> Option<&[u8]> {
        None
    }
    /// Called once reading stops: give back what was read but not used, where
    /// the input allows it.
    fn release(&mut self) {}
    /// Whether complete lines were taken from the input that cannot be read again
    /// (a pipe): they are processed before stopping. A file can be read again, so
    /// a file source stops at once.
    fn holds_taken_lines(&self) -> bool {
        false
    }
    /// Where the next line starts, when the input can be read again from there
    /// (a file, not inside an overlong line being skipped).
    fn position(&self) -> Option<Position> {
        None
    }
    /// Nothing to read now ([`Read1::Idle`]): waits up to `max` for more.
    fn wait(&mut self, max: Duration) {
        let _ = max; // stdin waits inside its own read
    }
    /// Whether the line the last [`Lines::next_line`] gave ([`Read1::Line`]
    /// or [`Read1::TooLong`]) is the first line of its input: byte 0 of a
    /// file (also after a followed file was replaced, and of each file of a
    /// directory), the first line of stdin. `format = "csv"` reads it as the
    /// header row. Default false.
    fn line_is_first(&self) -> bool {
        false
    }
    /// The first line of the input being read, read again from its start:
    /// the CSV header when reading resumed past it (from a checkpoint).
    ///
    /// # Errors
    /// Why it cannot be had (the input cannot be read again, was replaced,
    /// or its first line is longer than `max_line_bytes`).
    fn first_line(&mut self) -> Result<Vec<u8>, String> {
        Err("the input's first line was not read and cannot be read again".into())
    }
}

/// A line's record parts, decoded by the source's format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event<'a> {
    /// The key at the `key` pointer, if set and found (borrowed from the
    /// line when it is a JSON string without escapes).
    pub key: Option<std::borrow::Cow<'a, [u8]>>,
    /// The event time at the `timestamp` pointer (ms since the Unix epoch),
    /// if set and found.
    pub timestamp_ms: Option<i64>,
    /// The record's value when it is not the line itself: the JSON object a
    /// CSV row or syslog message became.
    pub value: Option<Vec<u8>>,
}

/// Decodes the lines of one input by its source's format (`json`, `text`,
/// `csv`, `syslog`), keeping the CSV header of the input being read. Every
/// source kind decodes through one: a new input (a file, a connection)
/// gets a new one, or [`LineDecoder::set_header`] at its first line.
#[derive(Debug, Clone)]
pub struct LineDecoder {
    /// `format = "csv"`: the header of the input being read (`Err`: why it
    /// has none), or `None` before it is known.
    header: Option<Result<Arc<Header>, String>>,
}

impl LineDecoder {
    /// A decoder for `spec`'s format; a CSV header given in the config
    /// (`csv.header`) is known from the start.
    pub fn new(spec: &SourceSpec) -> Self {
        LineDecoder {
            header: spec
                .csv
                .as_ref()
                .and_then(|c| c.fixed_header().cloned())
                .map(Ok),
        }
    }

    /// Whether the first line of an input is a header row, not a record
    /// (`format = "csv"` without `csv.header`).
    pub fn header_row(spec: &SourceSpec) -> bool {
        spec.csv
            .as_ref()
            .is_some_and(|c| c.fixed_header().is_none())
    }

    /// Whether a record needs a header that is not known yet: then give it
    /// one with [`LineDecoder::set_header`] (the input's first line, read
    /// again) or [`LineDecoder::no_header`].
    pub fn needs_header(&self, spec: &SourceSpec) -> bool {
        spec.csv.is_some() && self.header.is_none()
    }

    /// Reads `line` as the CSV header row of the input being read.
    ///
    /// # Errors
    /// Why it is no header (see [`CsvFormat::header`]); the records of this
    /// input then go to the dead-letter sink with that reason.
    pub fn set_header(&mut self, spec: &SourceSpec, line: &[u8]) -> Result<(), String> {
        let Some(csv) = &spec.csv else {
            return Ok(());
        };
        let header = csv.header(line).map(Arc::new);
        let result = header.as_ref().map(|_| ()).map_err(Clone::clone);
        self.header = Some(header);
        result
    }

    /// The input being read has no usable header row, for `reason`.
    pub fn no_header(&mut self, reason: String) {
        self.header = Some(Err(reason));
    }

    /// Decodes one line (not blank) into a record's parts.
    ///
    /// # Errors
    /// The reason for the dead-letter sink: invalid JSON, a CSV row that
    /// does not fit its header or types, a line that is not syslog, a bad
    /// event time, or (`missing_timestamp = "dead-letter"`) none.
    pub fn decode<'a>(&self, spec: &SourceSpec, line: &'a [u8]) -> Result<Event<'a>, String> {
        self.decode_indexed(spec, line, None)
    }

    /// [`LineDecoder::decode`], and for a JSON line the scanner decided
    /// alone, its top-level members in `members` when given (see
    /// [`crate::decode::Decoder::decode_indexed`]; emptied first).
    ///
    /// # Errors
    /// As [`LineDecoder::decode`].
    pub fn decode_indexed<'a>(
        &self,
        spec: &SourceSpec,
        line: &'a [u8],
        mut members: Option<&mut Vec<u16>>,
    ) -> Result<Event<'a>, String> {
        if let Some(m) = members.as_deref_mut() {
            m.clear();
        }
        let (decoded, value) = match spec.format {
            Format::Text => {
                return Ok(Event {
                    key: None,
                    timestamp_ms: None,
                    value: None,
                });
            }
            Format::Json => (spec.decoder.decode_indexed(line, members)?, None),
            Format::Csv => {
                let csv = spec.csv.as_ref().expect("a csv source has its CsvFormat");
                let header = match &self.header {
                    Some(Ok(h)) => h,
                    Some(Err(reason)) => return Err(format!("no CSV header: {reason}")),
                    None => return Err("no CSV header row was read".into()),
                };
                let object = serde_json::Value::Object(csv.row(header, line)?);
                (spec.decoder.decode_value(&object)?, Some(object))
            }
            Format::Syslog => {
                let object = serde_json::Value::Object(crate::format::syslog::parse(line)?);
                (spec.decoder.decode_value(&object)?, Some(object))
            }
        };
        if decoded.timestamp_ms.is_none()
            && spec.decoder.has_timestamp()
            && spec.missing_timestamp == crate::config::MissingTimestamp::DeadLetter
        {
            return Err("no event time: the `timestamp` field is missing or null (missing_timestamp = \"dead-letter\")".into());
        }
        Ok(Event {
            key: decoded.key,
            timestamp_ms: decoded.timestamp_ms,
            value: value.map(|v| serde_json::to_vec(&v).expect("a JSON value serializes")),
        })
    }
}

pub(crate) fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// Length of a line without its terminator (`\n` or `\r\n`).
pub(crate) fn line_len(line: &[u8]) -> usize {
    let mut len = line.len();
    if line[..len].ends_with(b"\n") {
        len -= 1;
        if line[..len].ends_with(b"\r") {
            len -= 1;
        }
    }
    len
}

pub(crate) fn strip_eol(buf: &mut Vec<u8>) {
    if buf.last() == Some(&b'\n') {
        buf.pop();
        if buf.last() == Some(&b'\r') {
            buf.pop();
        }
    }
}

/// Records waiting to be sent, per partition, packed as they arrive.
pub struct Outbox {
    pending: Vec<Records>,
    senders: Vec<flume::Sender<Chunk>>,
    stats: Arc<Stats>,
}

/// A partition worker is gone (its pipeline stopped on an error).
#[derive(Debug)]
pub struct WorkerGone;

impl Outbox {
    /// An empty outbox for these partition channels.
    pub fn new(senders: Vec<flume::Sender<Chunk>>, stats: Arc<Stats>) -> Self {
        Outbox {
            pending: (0..senders.len()).map(|_| Records::default()).collect(),
            senders,
            stats,
        }
    }

    /// Queues `record` for `partition`; sends a full chunk (blocking while
    /// the worker's channel is full).
    ///
    /// # Errors
    /// The worker is gone.
    pub fn push(&mut self, partition: usize, record: Record) -> Result<(), WorkerGone> {
        self.pending[partition].push_record(&record);
        self.flush_full(partition)
    }

    /// Queues a record without headers or task for `partition`, copying
    /// `key` (empty: none) and `value` into the chunk: no allocation per
    /// record. Sends a full chunk as [`Outbox::push`] does.
    ///
    /// # Errors
    /// The worker is gone.
    pub fn push_parts(
        &mut self,
        partition: usize,
        key: &[u8],
        value: &[u8],
        timestamp_ms: i64,
    ) -> Result<(), WorkerGone> {
        self.pending[partition].push(key, value, timestamp_ms);
        self.flush_full(partition)
    }

    fn flush_full(&mut self, partition: usize) -> Result<(), WorkerGone> {
        if self.pending[partition].is_full() {
            self.flush(partition)?;
        }
        Ok(())
    }

    /// Sends `records` to `partition` as one chunk, after what is pending
    /// there (blocking while the worker's channel is full).
    ///
    /// # Errors
    /// The worker is gone.
    pub fn send_records(&mut self, partition: usize, records: Records) -> Result<(), WorkerGone> {
        self.flush(partition)?;
        let n = records.len() as u64;
        self.senders[partition]
            .send(Chunk::Records(records))
            .map_err(|_| {
                self.stats.failed.fetch_add(n, Ordering::Relaxed);
                WorkerGone
            })
    }

    /// An empty chunk for `partition`, sized like the one it follows.
    fn fresh(&self, partition: usize) -> Records {
        let bytes = self.pending[partition].values_len().min(CHUNK_BYTES);
        Records::with_capacity(CHUNK_RECORDS, bytes)
    }

    /// Sends `partition`'s pending records.
    ///
    /// # Errors
    /// The worker is gone.
    pub fn flush(&mut self, partition: usize) -> Result<(), WorkerGone> {
        if self.pending[partition].is_empty() {
            return Ok(());
        }
        let fresh = self.fresh(partition);
        let chunk = std::mem::replace(&mut self.pending[partition], fresh);
        // Blocks while the worker's channel is full: backpressure.
        self.senders[partition]
            .send(Chunk::Records(chunk))
            .map_err(|e| {
                self.stats
                    .failed
                    .fetch_add(e.0.len() as u64, Ordering::Relaxed);
                WorkerGone
            })
    }

    /// Queues `record` for `partition` without ever waiting, for an input
    /// that cannot be slowed down (UDP): a full chunk is sent if the
    /// worker's channel has room, and kept otherwise. Returns the record
    /// when it cannot be queued (a full chunk waits already): the caller
    /// drops it.
    ///
    /// # Errors
    /// The worker is gone.
    pub fn offer(
        &mut self,
        partition: usize,
        record: Record,
    ) -> Result<Option<Record>, WorkerGone> {
        if self.pending[partition].is_full() && !self.try_flush(partition)? {
            return Ok(Some(record));
        }
        self.pending[partition].push_record(&record);
        if self.pending[partition].is_full() {
            self.try_flush(partition)?;
        }
        Ok(None)
    }

    /// Sends `partition`'s pending records if its worker's channel has room
    /// now; true when nothing is left pending.
    ///
    /// # Errors
    /// The worker is gone.
    pub fn try_flush(&mut self, partition: usize) -> Result<bool, WorkerGone> {
        if self.pending[partition].is_empty() {
            return Ok(true);
        }
        let fresh = self.fresh(partition);
        let chunk = std::mem::replace(&mut self.pending[partition], fresh);
        match self.senders[partition].try_send(Chunk::Records(chunk)) {
            Ok(()) => Ok(true),
            Err(flume::TrySendError::Full(Chunk::Records(chunk))) => {
                self.pending[partition] = chunk;
                Ok(false)
            }
            Err(e) => {
                let records = e.into_inner().len();
                self.stats
                    .failed
                    .fetch_add(records as u64, Ordering::Relaxed);
                Err(WorkerGone)
            }
        }
    }

    /// [`Outbox::try_flush`] of every partition; true when nothing is left
    /// pending.
    ///
    /// # Errors
    /// A worker is gone.
    pub fn try_flush_all(&mut self) -> Result<bool, WorkerGone> {
        let mut all = true;
        for p in 0..self.pending.len() {
            all &= self.try_flush(p)?;
        }
        Ok(all)
    }

    /// Whether records wait to be sent.
    pub fn is_pending(&self) -> bool {
        self.pending.iter().any(|p| !p.is_empty())
    }

    /// Sends every partition's pending records, then `barrier` to each.
    pub fn barrier(&mut self, barrier: &Barrier) -> bool {
        self.flush_all().is_ok()
            && self
                .senders
                .iter()
                .all(|tx| tx.send(Chunk::Barrier(barrier.clone())).is_ok())
    }

    /// Sends every partition's pending records (to each worker still running).
    ///
    /// # Errors
    /// A worker is gone.
    pub fn flush_all(&mut self) -> Result<(), WorkerGone> {
        let mut result = Ok(());
        for p in 0..self.pending.len() {
            if self.flush(p).is_err() {
                result = Err(WorkerGone);
            }
        }
        result
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Runs a source of lines until its input ends, `stop()` turns true, or a
/// worker is gone: the run loop of the line-reading kinds.
///
/// Each line is decoded, routed with `router`, and sent to `partitions[p]` in
/// chunks of up to [`CHUNK_RECORDS`].
///
/// With a `checkpointer`, a checkpoint is taken whenever one is due (see
/// [`crate::checkpoint`]), and a last one when the input ends or `stop()` turns
/// true.
///
/// # Errors
/// The input cannot be read, the dead-letter sink stopped, or a checkpoint
/// could not be written.
pub fn run_lines(cx: SourceContext<'_>, mut lines: Box<dyn Lines>) -> anyhow::Result<()> {
    let SourceContext {
        spec,
        mut router,
        partitions,
        dead_letter,
        stats,
        stop,
        mut checkpointer,
        ..
    } = cx;
    let stats = &stats;
    let dead_letter = &dead_letter;
    let mut checkpointer = checkpointer.as_mut();
    let mut outbox = Outbox::new(partitions, stats.clone());
    // A first checkpoint before reading anything: the sinks' lengths at the
    // start, so that a crash before the first periodic checkpoint cuts back
    // what this run wrote (an appending sink would otherwise hold it twice).
    if let Some(cp) = checkpointer.as_deref_mut()
        && cp.last_id == 0
        && let Some(position) = lines.position()
    {
        cp.take(BarrierKind::Periodic, position, stats, &mut |b| {
            outbox.barrier(b)
        })?;
    }
    let result = read_loop(
        spec,
        lines.as_mut(),
        &mut router,
        &mut outbox,
        dead_letter,
        stats,
        stop,
        checkpointer.as_deref_mut(),
    );
    // Whatever was read is processed, also on shutdown and after a read error. (A
    // worker that is gone stopped on an error, which the pipeline reports.)
    let flushed = outbox.flush_all();
    let ended = result?;
    if let Some(cp) = checkpointer
        && flushed.is_ok()
        && ended != Ended::WorkerGone
        && let Some(position) = lines.position()
    {
        let kind = if ended == Ended::Eof {
            BarrierKind::End
        } else {
            BarrierKind::Stop
        };
        cp.take(kind, position, stats, &mut |b| outbox.barrier(b))?;
    }
    Ok(())
}

/// Why reading stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ended {
    /// The end of the input.
    Eof,
    /// `stop()` turned true.
    Stopped,
    /// A partition worker stopped on an error.
    WorkerGone,
}

/// Lines read between two looks at whether a checkpoint is due.
const CHECKPOINT_CHECK_LINES: u32 = 256;

/// Takes a periodic checkpoint if one is due and the source has moved since the
/// last.
fn checkpoint_if_due(
    cp: &mut Checkpointer,
    lines: &dyn Lines,
    outbox: &mut Outbox,
    stats: &Stats,
) -> anyhow::Result<()> {
    if !cp.due(stats) {
        return Ok(());
    }
    match lines.position() {
        Some(position) if cp.moved(&position) => {
            cp.take(BarrierKind::Periodic, position, stats, &mut |b| {
                outbox.barrier(b)
            })?;
        }
        Some(_) => cp.postpone(),
        None => {} // inside an overlong line: at the next line
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn read_loop(
    spec: &SourceSpec,
    lines: &mut dyn Lines,
    router: &mut Router,
    outbox: &mut Outbox,
    dead_letter: &DeadLetter,
    stats: &Stats,
    stop: &dyn Fn() -> bool,
    checkpointer: Option<&mut Checkpointer>,
) -> anyhow::Result<Ended> {
    let mut pool = match spec.decode_threads {
        0 => None,
        n => Some(parallel::DecodePool::start(spec, router, n)?),
    };
    let result = read_lines(
        spec,
        lines,
        router,
        outbox,
        dead_letter,
        stats,
        stop,
        checkpointer,
        &mut pool,
    );
    // The lines handed to the decoders were read: they are forwarded
    // whatever ended the reading (the input failing too), as the lines a
    // source's own thread decoded are.
    if let Some(pool) = pool.as_mut()
        && !matches!(result, Ok(Ended::WorkerGone))
    {
        match pool.drain(outbox, dead_letter, stats) {
            Ok(Ok(())) => {}
            Ok(Err(WorkerGone)) if result.is_ok() => return Ok(Ended::WorkerGone),
            Err(e) if result.is_ok() => return Err(e),
            Ok(Err(WorkerGone)) | Err(_) => {} // the first error is the one told
        }
    }
    result
}

#[allow(clippy::too_many_arguments)]
fn read_lines(
    spec: &SourceSpec,
    lines: &mut dyn Lines,
    router: &mut Router,
    outbox: &mut Outbox,
    dead_letter: &DeadLetter,
    stats: &Stats,
    stop: &dyn Fn() -> bool,
    mut checkpointer: Option<&mut Checkpointer>,
    pool: &mut Option<parallel::DecodePool>,
) -> anyhow::Result<Ended> {
    let mut buf = Vec::with_capacity(1024);
    let mut decoder = LineDecoder::new(spec);
    let header_row = LineDecoder::header_row(spec);
    let mut until_check = CHECKPOINT_CHECK_LINES;
    let mut ended = Ended::Stopped;
    // Every line read so far forwarded (to the workers or the dead-letter
    // sink): before a checkpoint, a line dead-lettered here, an idle input.
    macro_rules! drain {
        () => {
            if let Some(pool) = pool.as_mut()
                && pool.drain(outbox, dead_letter, stats)?.is_err()
            {
                ended = Ended::WorkerGone;
                break;
            }
        };
    }
    // On stop, lines already taken from an input that cannot give them back are
    // still processed.
    while !stop() || lines.holds_taken_lines() {
        if lines.drained() {
            if lines.waits_when_drained() {
                drain!();
            }
            if outbox.flush_all().is_err() {
                ended = Ended::WorkerGone;
                break;
            }
        }
        if let Some(cp) = checkpointer.as_deref_mut() {
            until_check -= 1;
            if until_check == 0 {
                until_check = CHECKPOINT_CHECK_LINES;
                // Due is decided once: the blocks in flight are forwarded
                // before the checkpoint's barrier, never after it.
                if cp.due(stats) {
                    drain!();
                    checkpoint_if_due(cp, lines, outbox, stats)?;
                }
            }
        }
        match lines
            .next_line(&mut buf)
            .with_context(|| format!("source `{}`: read failed", spec.name))?
        {
            Read1::Eof => {
                ended = Ended::Eof;
                break;
            }
            Read1::Idle => {
                drain!();
                if outbox.flush_all().is_err() {
                    ended = Ended::WorkerGone;
                    break;
                }
                if let Some(cp) = checkpointer.as_deref_mut() {
                    checkpoint_if_due(cp, lines, outbox, stats)?;
                }
                lines.wait(POLL);
                continue;
            }
            Read1::Pending => continue,
            Read1::Line => {}
            Read1::TooLong(len) => {
                drain!();
                stats.records_in.fetch_add(1, Ordering::Relaxed);
                let reason = format!(
                    "line of {len} bytes is longer than max_line_bytes ({}); `original` holds its first {} bytes",
                    spec.max_line_bytes,
                    buf.len()
                );
                if header_row && lines.line_is_first() {
                    decoder.no_header(format!("the header row: {reason}"));
                }
                reject_line(dead_letter, stats, &reason, &buf)?;
                continue;
            }
            Read1::Reject(reason) => {
                drain!();
                stats.records_in.fetch_add(1, Ordering::Relaxed);
                reject_line(dead_letter, stats, &reason, &buf)?;
                continue;
            }
        }
        // The first line of a CSV input names the fields.
        if header_row && lines.line_is_first() {
            if let Err(reason) = decoder.set_header(spec, &buf) {
                stats.records_in.fetch_add(1, Ordering::Relaxed);
                reject_line(dead_letter, stats, &reason, &buf)?;
            }
            continue;
        }
        if decoder.needs_header(spec) && !is_blank(spec, &buf) {
            // Resumed past the header row: read it again from the input's start.
            let header = lines.first_line();
            match header.and_then(|h| decoder.set_header(spec, &h)) {
                Ok(()) => {}
                Err(reason) => {
                    tracing::warn!(source = %spec.name, "no CSV header: {reason}");
                    decoder.no_header(reason);
                }
            }
        }
        if let Some(pool) = pool.as_mut() {
            if pool.push_line(&buf, outbox, dead_letter, stats)?.is_err() {
                ended = Ended::WorkerGone;
                break;
            }
            continue;
        }
        let Some((partition, event)) =
            route_line(spec, &decoder, router, &buf, dead_letter, stats)?
        else {
            continue;
        };
        let pushed = outbox.push_parts(
            partition,
            event.key.as_deref().unwrap_or_default(),
            event.value.as_deref().unwrap_or(&buf),
            event.timestamp_ms.unwrap_or_else(now_ms),
        );
        if pushed.is_err() {
            ended = Ended::WorkerGone;
            break; // the pipeline stopped on an error: stop reading
        }
    }
    lines.release();
    if let Some(partial) = lines.unterminated() {
        tracing::warn!(
            source = %spec.name,
            bytes = partial.len(),
            "stopping with an unterminated last line, not processed: {}",
            String::from_utf8_lossy(&partial[..partial.len().min(256)])
        );
    }
    Ok(ended)
}

/// Turns a line into a record and picks its partition: the decoding every
/// source of lines or datagrams shares.
///
/// A blank line is no record (`None`, not counted): an empty one always, a
/// whitespace-only one in JSON (where it holds no value). Any other line is
/// counted in `records_in`; one that cannot be decoded (or lacks the event
/// time `missing_timestamp = "dead-letter"` asks for) goes to the dead-letter
/// sink (`None`).
///
/// # Errors
/// The dead-letter sink stopped.
pub(crate) fn route_line<'l>(
    spec: &SourceSpec,
    decoder: &LineDecoder,
    router: &mut Router,
    line: &'l [u8],
    dead_letter: &DeadLetter,
    stats: &Stats,
) -> anyhow::Result<Option<(usize, Event<'l>)>> {
    if is_blank(spec, line) {
        return Ok(None);
    }
    stats.records_in.fetch_add(1, Ordering::Relaxed);
    let event = match decoder.decode(spec, line) {
        Ok(event) => event,
        Err(reason) => {
            reject_line(dead_letter, stats, &reason, line)?;
            return Ok(None);
        }
    };
    let partition = router.route(event.key.as_deref());
    Ok(Some((partition, event)))
}

impl Event<'_> {
    /// The record of `line` decoded as `self`: an event time stamped now
    /// when it has none (a copy of the line unless the format made a value).
    pub fn into_record(self, line: &[u8]) -> Record {
        Record {
            key: self
                .key
                .map(std::borrow::Cow::into_owned)
                .unwrap_or_default(),
            value: self.value.unwrap_or_else(|| line.to_vec()),
            timestamp_ms: self.timestamp_ms.unwrap_or_else(now_ms),
            headers: Vec::new(),
            task: None,
        }
    }
}

/// Blank lines are not records: empty ones always, whitespace-only ones in
/// JSON and syslog (where they hold no value). Neither is counted.
fn is_blank(spec: &SourceSpec, line: &[u8]) -> bool {
    is_blank_in(spec.format, line)
}

/// [`is_blank`] for a line of `format`.
fn is_blank_in(format: Format, line: &[u8]) -> bool {
    line.is_empty()
        || (matches!(format, Format::Json | Format::Syslog)
            && line.iter().all(u8::is_ascii_whitespace))
}

/// Sends a line the source could not turn into a record to the dead-letter sink.
pub(crate) fn reject_line(
    dead_letter: &DeadLetter,
    stats: &Stats,
    reason: &str,
    line: &[u8],
) -> anyhow::Result<()> {
    dead_letter
        .send(&[DeadRecord {
            stage: "source",
            plugin: None,
            partition: None,
            reason,
            key: &[],
            timestamp_ms: None,
            original: line,
        }])
        .inspect_err(|_| {
            stats.failed.fetch_add(1, Ordering::Relaxed);
        })?;
    stats.rejected.fetch_add(1, Ordering::Relaxed);
    Ok(())
}
