//! Sources: read lines, decode them into records, route each record to its
//! partition worker.
//!
//! - `file`: plain or gzip (recognised by its magic bytes, not its name), read to
//!   its end, or followed like `tail -F`: appended lines are picked up, and a file
//!   that is replaced (new inode) or truncated is reopened from its start.
//! - `stdin`: read to its end.
//!
//! Every send into a partition channel blocks while that channel is full, so a
//! slow worker or sink slows the source down (backpressure). A line that cannot
//! be decoded goes to the dead-letter sink; empty lines are skipped.

use std::io::{self, Read};
use std::path::PathBuf;
use std::sync::atomic::Ordering;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;

use crate::config::Format;
use crate::dead_letter::{DeadLetter, DeadRecord};
use crate::decode::Decoder;
use crate::pipeline::Stats;
use crate::router::Router;

mod file;
mod stdin;

use file::FileLines;
pub use file::is_gzip;
use stdin::StdinLines;

/// Bytes of an overlong line kept for the dead-letter record.
pub(crate) const TOO_LONG_PREFIX: usize = 1024;

/// Records handed to a partition worker at once. Sending chunks instead of single
/// records cuts channel operations and thread wake-ups by this factor; a chunk is
/// also sent as soon as the input has nothing more buffered, so a slow input adds
/// no latency.
pub const CHUNK_RECORDS: usize = 256;

/// How often a waiting source (end of a followed file, quiet stdin) checks for
/// shutdown and new data.
pub(crate) const POLL: Duration = Duration::from_millis(100);

/// One decoded record on its way to a partition worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Key bytes; empty when the record has none.
    pub key: Vec<u8>,
    /// The line, without its line terminator.
    pub value: Vec<u8>,
    /// Event time, ms since the Unix epoch.
    pub timestamp_ms: i64,
}

/// Where a source reads from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// A file.
    File {
        /// The file.
        path: PathBuf,
        /// Keep reading at its end (`tail -F`).
        follow: bool,
    },
    /// Standard input.
    Stdin,
}

/// A source, ready to run.
#[derive(Debug, Clone)]
pub struct SourceSpec {
    /// Name in the config.
    pub name: String,
    /// What to read.
    pub input: Input,
    /// How to decode a line.
    pub format: Format,
    /// Key and event-time extraction.
    pub decoder: Decoder,
    /// Longest line accepted, in bytes; a longer one goes to the dead-letter sink.
    pub max_line_bytes: usize,
}

/// What one read produced.
pub(crate) enum Read1 {
    Line,
    /// A line longer than the limit, of this many bytes; the buffer holds its
    /// first [`TOO_LONG_PREFIX`] bytes, the rest was skipped.
    TooLong(u64),
    /// Nothing more now; try again (follow mode, quiet stdin).
    Idle,
    /// Busy skipping an overlong line: call again (after checking for stop).
    Pending,
    Eof,
}

/// A reader of lines that can wait without blocking shutdown.
pub(crate) trait Lines {
    /// Reads the next line (terminator stripped) into `buf`.
    fn next_line(&mut self, buf: &mut Vec<u8>) -> io::Result<Read1>;
    /// Whether the next line would need a read from the input (a system call,
    /// perhaps a wait): the moment to hand pending records to the workers.
    fn drained(&self) -> bool;
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

/// Records waiting to be sent, per partition.
struct Outbox<'a> {
    pending: Vec<Vec<Record>>,
    senders: Vec<flume::Sender<Vec<Record>>>,
    stats: &'a Stats,
}

/// A partition worker is gone (its pipeline stopped on an error).
struct WorkerGone;

impl Outbox<'_> {
    fn push(&mut self, partition: usize, record: Record) -> Result<(), WorkerGone> {
        self.pending[partition].push(record);
        if self.pending[partition].len() >= CHUNK_RECORDS {
            self.flush(partition)?;
        }
        Ok(())
    }

    fn flush(&mut self, partition: usize) -> Result<(), WorkerGone> {
        if self.pending[partition].is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(
            &mut self.pending[partition],
            Vec::with_capacity(CHUNK_RECORDS),
        );
        // Blocks while the worker's channel is full: backpressure.
        self.senders[partition].send(chunk).map_err(|e| {
            self.stats
                .failed
                .fetch_add(e.0.len() as u64, Ordering::Relaxed);
            WorkerGone
        })
    }

    /// Sends every partition's pending records (to each worker still running).
    fn flush_all(&mut self) -> Result<(), WorkerGone> {
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

/// Runs a source until its input ends, `stop()` turns true, or a worker is gone.
///
/// Each line is decoded, routed with `router`, and sent to `partitions[p]` in
/// chunks of up to [`CHUNK_RECORDS`].
///
/// # Errors
/// The input cannot be opened or read, or the dead-letter sink stopped.
pub fn run(
    spec: &SourceSpec,
    mut router: Router,
    partitions: Vec<flume::Sender<Vec<Record>>>,
    dead_letter: &DeadLetter,
    stats: &Stats,
    stop: &dyn Fn() -> bool,
) -> anyhow::Result<()> {
    let mut lines: Box<dyn Lines> = match &spec.input {
        Input::File { path, follow } => {
            Box::new(FileLines::open(path.clone(), *follow, spec.max_line_bytes)?)
        }
        Input::Stdin => Box::new(StdinLines::new(spec.max_line_bytes)),
    };
    let mut outbox = Outbox {
        pending: (0..partitions.len())
            .map(|_| Vec::with_capacity(CHUNK_RECORDS))
            .collect(),
        senders: partitions,
        stats,
    };
    let result = read_loop(
        spec,
        lines.as_mut(),
        &mut router,
        &mut outbox,
        dead_letter,
        stats,
        stop,
    );
    // Whatever was read is processed, also on shutdown and after a read error. (A
    // worker that is gone stopped on an error, which the pipeline reports.)
    let _ = outbox.flush_all();
    result
}

fn read_loop(
    spec: &SourceSpec,
    lines: &mut dyn Lines,
    router: &mut Router,
    outbox: &mut Outbox<'_>,
    dead_letter: &DeadLetter,
    stats: &Stats,
    stop: &dyn Fn() -> bool,
) -> anyhow::Result<()> {
    let mut buf = Vec::with_capacity(1024);
    // On stop, lines already taken from an input that cannot give them back are
    // still processed.
    while !stop() || lines.holds_taken_lines() {
        if lines.drained() && outbox.flush_all().is_err() {
            break;
        }
        match lines
            .next_line(&mut buf)
            .with_context(|| format!("source `{}`: read failed", spec.name))?
        {
            Read1::Eof => break,
            Read1::Idle => {
                if outbox.flush_all().is_err() {
                    break;
                }
                if matches!(spec.input, Input::File { .. }) {
                    std::thread::sleep(POLL);
                }
                continue;
            }
            Read1::Pending => continue,
            Read1::Line => {}
            Read1::TooLong(len) => {
                stats.records_in.fetch_add(1, Ordering::Relaxed);
                let reason = format!(
                    "line of {len} bytes is longer than max_line_bytes ({}); `original` holds its first {} bytes",
                    spec.max_line_bytes,
                    buf.len()
                );
                reject_line(dead_letter, stats, &reason, &buf)?;
                continue;
            }
        }
        // Blank lines are not records: empty ones always, whitespace-only ones in
        // JSON (where they hold no value). Neither is counted.
        if buf.is_empty()
            || (spec.format == Format::Json && buf.iter().all(u8::is_ascii_whitespace))
        {
            continue;
        }
        stats.records_in.fetch_add(1, Ordering::Relaxed);
        let (key, timestamp_ms) = match spec.format {
            Format::Text => (None, now_ms()),
            Format::Json => match spec.decoder.decode(&buf) {
                Ok(d) => (d.key, d.timestamp_ms.unwrap_or_else(now_ms)),
                Err(reason) => {
                    reject_line(dead_letter, stats, &reason, &buf)?;
                    continue;
                }
            },
        };
        let partition = router.route(key.as_deref());
        let record = Record {
            key: key.unwrap_or_default(),
            value: buf.clone(), // exact-size copy; `buf` keeps its capacity
            timestamp_ms,
        };
        if outbox.push(partition, record).is_err() {
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
    Ok(())
}

/// Sends a line the source could not turn into a record to the dead-letter sink.
fn reject_line(
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
