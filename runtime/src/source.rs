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

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use flate2::read::MultiGzDecoder;

use crate::config::Format;
use crate::dead_letter::{DeadLetter, DeadRecord};
use crate::decode::Decoder;
use crate::pipeline::Stats;
use crate::router::Router;

/// Bytes of an overlong line kept for the dead-letter record.
const TOO_LONG_PREFIX: usize = 1024;

/// The first two bytes of a gzip member (RFC 1952 §2.3.1).
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// Records handed to a partition worker at once. Sending chunks instead of single
/// records cuts channel operations and thread wake-ups by this factor; a chunk is
/// also sent as soon as the input has nothing more buffered, so a slow input adds
/// no latency.
pub const CHUNK_RECORDS: usize = 256;

/// How often a waiting source (end of a followed file, quiet stdin) checks for
/// shutdown and new data.
const POLL: Duration = Duration::from_millis(100);

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
enum Read1 {
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
trait Lines {
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

/// A file read to its end, or followed.
struct FileLines {
    path: PathBuf,
    follow: bool,
    reader: BufReader<Box<dyn Read + Send>>,
    /// Bytes of a followed file consumed so far, and its inode, to spot truncation
    /// and replacement.
    position: u64,
    inode: u64,
    /// A partial last line of a followed file, kept until its newline arrives.
    pending: Vec<u8>,
    /// Longest line accepted, in bytes.
    max_line: usize,
    /// Skipping the rest of an overlong line: its first bytes, and its length so far.
    skipping: Option<(Vec<u8>, u64)>,
    /// The unterminated last line of a file that was replaced: the next line.
    carry: Option<Vec<u8>>,
}

fn inode_of(meta: &std::fs::Metadata) -> u64 {
    use std::os::unix::fs::MetadataExt;
    meta.ino()
}

impl FileLines {
    fn open(path: PathBuf, follow: bool, max_line: usize) -> anyhow::Result<Self> {
        let mut file =
            File::open(&path).with_context(|| format!("cannot open {}", path.display()))?;
        let inode = inode_of(&file.metadata()?);
        let mut magic = [0u8; 2];
        let n = read_up_to(&mut file, &mut magic)?;
        let head = io::Cursor::new(magic[..n].to_vec());
        let gzip = n == 2 && magic == GZIP_MAGIC;
        if gzip && follow {
            anyhow::bail!(
                "{} is gzip-compressed: `follow` works on plain files only",
                path.display()
            );
        }
        let raw: Box<dyn Read + Send> = Box::new(head.chain(file));
        let reader: Box<dyn Read + Send> = if gzip {
            Box::new(Gunzip::start(raw, &path)?)
        } else {
            raw
        };
        Ok(FileLines {
            path,
            follow,
            reader: BufReader::with_capacity(256 << 10, reader),
            position: 0,
            inode,
            pending: Vec::new(),
            max_line,
            skipping: None,
            carry: None,
        })
    }

    /// In follow mode at end of file: reopen when the file was replaced or
    /// truncated.
    fn check_rotation(&mut self) -> anyhow::Result<()> {
        let Ok(meta) = std::fs::metadata(&self.path) else {
            return Ok(()); // gone for now (mid-rotation): keep waiting
        };
        if inode_of(&meta) != self.inode || meta.len() < self.position {
            tracing::info!(path = %self.path.display(), "file replaced or truncated: reading it from the start");
            let partial = std::mem::take(&mut self.pending);
            *self = FileLines::open(self.path.clone(), true, self.max_line)?;
            if !partial.is_empty() {
                // The old file ended without a newline: its last line is done.
                tracing::warn!(path = %self.path.display(), bytes = partial.len(), "the replaced file's last line had no newline: taking it as a line");
                self.carry = Some(partial);
            }
        }
        Ok(())
    }
}

/// Whether the file at `path` starts with the gzip magic bytes (RFC 1952 §2.3.1).
///
/// # Errors
/// The file cannot be opened or read.
pub fn is_gzip(path: &std::path::Path) -> io::Result<bool> {
    // Never open a FIFO or a device to look: opening waits for a writer, and
    // bytes read would be gone.
    if !std::fs::metadata(path)?.is_file() {
        return Ok(false);
    }
    let mut magic = [0u8; 2];
    let n = read_up_to(&mut File::open(path)?, &mut magic)?;
    Ok(n == 2 && magic == GZIP_MAGIC)
}

/// Decompresses a gzip file on a thread of its own, a block ahead of the
/// reader: decompression and line decoding then run side by side instead of
/// taking turns on the source thread (the bundled flights read ~1.4× faster).
struct Gunzip {
    blocks: flume::Receiver<io::Result<Vec<u8>>>,
    block: Vec<u8>,
    at: usize,
}

/// Bytes of decompressed data per block, and blocks decompressed ahead.
const GUNZIP_BLOCK: usize = 256 << 10;
const GUNZIP_AHEAD: usize = 4;

impl Gunzip {
    fn start(raw: Box<dyn Read + Send>, path: &std::path::Path) -> io::Result<Self> {
        let (tx, blocks) = flume::bounded(GUNZIP_AHEAD);
        std::thread::Builder::new()
            .name(format!(
                "gunzip-{}",
                path.file_name().unwrap_or_default().to_string_lossy()
            ))
            .spawn(move || {
                let mut decoder = MultiGzDecoder::new(BufReader::with_capacity(GUNZIP_BLOCK, raw));
                loop {
                    let mut block = vec![0u8; GUNZIP_BLOCK];
                    let mut n = 0;
                    let mut error = None;
                    while n < block.len() {
                        match decoder.read(&mut block[n..]) {
                            Ok(0) => break,
                            Ok(k) => n += k,
                            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                            Err(e) => {
                                error = Some(e);
                                break;
                            }
                        }
                    }
                    block.truncate(n);
                    let end = n == 0 || error.is_some();
                    // Whatever decompressed before an error (a truncated file) is
                    // still read; the error comes after it. A send fails when the
                    // reader is gone (the source stopped): stop too.
                    if n > 0 && tx.send(Ok(block)).is_err() {
                        break;
                    }
                    if let Some(e) = error {
                        let _ = tx.send(Err(e));
                    }
                    if end {
                        break;
                    }
                }
            })?;
        Ok(Gunzip {
            blocks,
            block: Vec::new(),
            at: 0,
        })
    }
}

impl Read for Gunzip {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.at == self.block.len() {
            match self.blocks.recv() {
                Ok(Ok(block)) => {
                    self.block = block;
                    self.at = 0;
                }
                Ok(Err(e)) => return Err(e),
                Err(_) => return Ok(0), // end of the stream
            }
        }
        let n = buf.len().min(self.block.len() - self.at);
        buf[..n].copy_from_slice(&self.block[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
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
fn line_len(line: &[u8]) -> usize {
    let mut len = line.len();
    if line[..len].ends_with(b"\n") {
        len -= 1;
        if line[..len].ends_with(b"\r") {
            len -= 1;
        }
    }
    len
}

fn strip_eol(buf: &mut Vec<u8>) {
    if buf.last() == Some(&b'\n') {
        buf.pop();
        if buf.last() == Some(&b'\r') {
            buf.pop();
        }
    }
}

impl Lines for FileLines {
    fn next_line(&mut self, buf: &mut Vec<u8>) -> io::Result<Read1> {
        if let Some(line) = self.carry.take() {
            *buf = line;
            return Ok(Read1::Line);
        }
        buf.clear();
        buf.append(&mut self.pending);
        loop {
            if let Some((_, seen)) = &mut self.skipping {
                let available = self.reader.fill_buf()?;
                if available.is_empty() {
                    if self.follow {
                        self.check_rotation().map_err(io::Error::other)?;
                        return Ok(Read1::Idle);
                    }
                } else if let Some(i) = available.iter().position(|&b| b == b'\n') {
                    self.reader.consume(i + 1);
                    self.position += i as u64 + 1;
                    *seen += i as u64;
                } else {
                    let n = available.len();
                    self.reader.consume(n);
                    self.position += n as u64;
                    *seen += n as u64;
                    return Ok(Read1::Pending);
                }
                let (prefix, seen) = self.skipping.take().expect("skipping");
                *buf = prefix;
                return Ok(Read1::TooLong(seen));
            }
            // Read at most one byte past the limit: enough to know a line is too long.
            let room = (self.max_line + 2).saturating_sub(buf.len());
            let n = (&mut self.reader)
                .take(room as u64)
                .read_until(b'\n', buf)?;
            self.position += n as u64;
            let len = line_len(buf);
            if len > self.max_line {
                let mut prefix = buf[..TOO_LONG_PREFIX.min(buf.len())].to_vec();
                strip_eol(&mut prefix);
                if buf.last() == Some(&b'\n') {
                    *buf = prefix;
                    return Ok(Read1::TooLong(len as u64));
                }
                self.skipping = Some((prefix, buf.len() as u64));
                buf.clear();
                continue;
            }
            if buf.last() == Some(&b'\n') {
                strip_eol(buf);
                return Ok(Read1::Line);
            }
            if !self.follow {
                return Ok(if buf.is_empty() {
                    Read1::Eof
                } else {
                    Read1::Line
                });
            }
            // Following: a partial line waits for the rest.
            std::mem::swap(&mut self.pending, buf);
            self.check_rotation().map_err(io::Error::other)?;
            return Ok(Read1::Idle);
        }
    }

    fn drained(&self) -> bool {
        self.reader.buffer().is_empty()
    }

    fn unterminated(&self) -> Option<&[u8]> {
        (!self.pending.is_empty()).then_some(self.pending.as_slice())
    }
}

/// Standard input. It is polled before each read, so waiting for input never
/// blocks shutdown, and read into a buffer of our own, so that on shutdown every
/// complete line taken from the pipe is still processed.
struct StdinLines {
    stdin: io::Stdin,
    buf: Vec<u8>,
    /// Start of the unconsumed bytes in `buf`.
    start: usize,
    eof: bool,
    /// Longest line accepted, in bytes.
    max_line: usize,
    /// Skipping the rest of an overlong line: its first bytes, and its length so far.
    skipping: Option<(Vec<u8>, u64)>,
}

impl StdinLines {
    fn new(max_line: usize) -> Self {
        StdinLines {
            stdin: io::stdin(),
            buf: Vec::with_capacity(STDIN_READ),
            start: 0,
            eof: false,
            max_line,
            skipping: None,
        }
    }

    /// Waits up to [`POLL`] for input; true when a read will not block.
    fn readable(&self) -> io::Result<bool> {
        use rustix::event::{PollFd, PollFlags, Timespec, poll};
        let mut fds = [PollFd::new(&self.stdin, PollFlags::IN)];
        let timeout = Timespec {
            tv_sec: 0,
            tv_nsec: POLL.as_nanos() as _,
        };
        match poll(&mut fds, Some(&timeout)) {
            Ok(n) => Ok(n > 0),
            Err(rustix::io::Errno::INTR) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }
}

/// Bytes asked of one `read` on stdin: more than `Stdin`'s own 8 KiB buffer, so
/// reads go straight to the file descriptor and nothing is held back there.
const STDIN_READ: usize = 64 * 1024;

impl Lines for StdinLines {
    fn next_line(&mut self, line: &mut Vec<u8>) -> io::Result<Read1> {
        loop {
            let rest = &self.buf[self.start..];
            let newline = rest.iter().position(|&b| b == b'\n');
            if let Some((prefix, seen)) = &mut self.skipping {
                // Skipping the rest of an overlong line.
                let taken = newline.map_or(rest.len(), |i| i + 1);
                *seen += newline.unwrap_or(rest.len()) as u64;
                self.start += taken;
                if newline.is_some() || self.eof {
                    *line = std::mem::take(prefix);
                    let seen = *seen;
                    self.skipping = None;
                    return Ok(Read1::TooLong(seen));
                }
                if taken > 0 {
                    return Ok(Read1::Pending);
                }
            } else if newline.is_some_and(|i| line_len(&rest[..i]) > self.max_line)
                || (newline.is_none() && rest.len() > self.max_line + 1)
            {
                let end = newline.unwrap_or(rest.len());
                let mut prefix = rest[..TOO_LONG_PREFIX.min(end)].to_vec();
                strip_eol(&mut prefix);
                self.skipping = Some((prefix, 0));
                continue;
            } else if let Some(i) = newline {
                line.clear();
                line.extend_from_slice(&rest[..=i]);
                self.start += i + 1;
                strip_eol(line);
                return Ok(Read1::Line);
            }
            let rest = &self.buf[self.start..];
            if self.eof {
                if rest.is_empty() {
                    return Ok(Read1::Eof);
                }
                // A last line without a newline: a line all the same.
                line.clear();
                line.extend_from_slice(rest);
                self.start = self.buf.len();
                return Ok(Read1::Line);
            }
            if !self.readable()? {
                return Ok(Read1::Idle);
            }
            self.buf.drain(..self.start);
            self.start = 0;
            let len = self.buf.len();
            self.buf.resize(len + STDIN_READ, 0);
            let n = loop {
                match self.stdin.read(&mut self.buf[len..]) {
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    other => break other,
                }
            };
            self.buf.truncate(len + *n.as_ref().unwrap_or(&0));
            if n? == 0 {
                self.eof = true;
            }
        }
    }

    fn drained(&self) -> bool {
        !self.buf[self.start..].contains(&b'\n')
    }

    fn unterminated(&self) -> Option<&[u8]> {
        let rest = &self.buf[self.start..];
        (!rest.is_empty()).then_some(rest)
    }

    fn holds_taken_lines(&self) -> bool {
        !self.drained()
    }

    /// When stdin is a file, seeks back over the bytes read but not processed,
    /// so whoever reads it next (`sluice run …; cat`) starts where sluice stopped.
    fn release(&mut self) {
        let unread = (self.buf.len() - self.start) as i64;
        if unread > 0
            && rustix::fs::seek(&self.stdin, rustix::fs::SeekFrom::Current(-unread)).is_ok()
        {
            self.start = self.buf.len();
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

/// Shared between a pipeline's threads: set to stop the source.
pub type Cancel = Arc<AtomicBool>;
