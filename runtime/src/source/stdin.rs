//! The `stdin` source: the daemon's standard input, read to its end. One
//! pipeline may read it; it cannot be checkpointed (a pipe cannot be read
//! again).
//!
//! ```toml
//! [sources.in]
//! type = "stdin"
//! ```

use std::io::{self, Read};

use super::{Lines, POLL, Read1, TOO_LONG_PREFIX, line_len, strip_eol};

/// `[sources.NAME] type = "stdin"`: no fields of its own.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StdinConfig {}

impl super::SourceConfig for StdinConfig {
    fn build(
        &self,
        cx: &super::BuildContext<'_>,
    ) -> Result<super::Built, crate::config::ConfigError> {
        Ok(super::Built {
            source: std::sync::Arc::new(Stdin),
            claims: vec![(super::Claim::Stdin, cx.table.span.clone())],
        })
    }
}

/// The stdin source, built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stdin;

impl super::Source for Stdin {
    fn describe(&self) -> String {
        "stdin".into()
    }

    fn replay(&self) -> super::Replay {
        super::Replay::No(
            "checkpoints need a source that can be read again from a position (a file); stdin cannot".into(),
        )
    }

    fn run(&self, cx: super::SourceContext<'_>) -> anyhow::Result<()> {
        let lines = StdinLines::new(cx.spec.max_line_bytes);
        super::run_lines(cx, Box::new(lines))
    }
}

/// Standard input. It is polled before each read, so waiting for input never
/// blocks shutdown, and read into a buffer of our own, so that on shutdown every
/// complete line taken from the pipe is still processed.
pub struct StdinLines {
    stdin: io::Stdin,
    buf: Vec<u8>,
    /// Start of the unconsumed bytes in `buf`.
    start: usize,
    eof: bool,
    /// Longest line accepted, in bytes.
    max_line: usize,
    /// Skipping the rest of an overlong line: its first bytes, and its length so far.
    skipping: Option<(Vec<u8>, u64)>,
    /// Lines (and overlong lines) given so far.
    given: u64,
}

impl StdinLines {
    pub(super) fn new(max_line: usize) -> Self {
        StdinLines {
            stdin: io::stdin(),
            buf: Vec::with_capacity(STDIN_READ),
            start: 0,
            eof: false,
            max_line,
            skipping: None,
            given: 0,
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
                    self.given += 1;
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
                self.given += 1;
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
                self.given += 1;
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

    fn line_is_first(&self) -> bool {
        self.given == 1
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
