//! Lines from a byte stream that cannot be read again: the daemon's standard
//! input, a TCP connection. Shared by the kinds that read one (`stdin`,
//! `tcp`); not a kind itself.
//!
//! The stream is polled before each read, so waiting for input never blocks
//! shutdown, and read into a buffer of our own, so that on shutdown every
//! complete line taken from the stream is still processed (see
//! [`Lines::holds_taken_lines`]). The buffer holds at most one read
//! ([`STREAM_READ`]) plus one line (`max_line_bytes`): a slow pipeline stops
//! the reads, it never grows the buffer.

use std::io::{self, Read};
use std::os::fd::AsFd;

use super::{Lines, POLL, Read1, TOO_LONG_PREFIX, line_len, strip_eol};

/// Bytes asked of one `read`: more than `Stdin`'s own 8 KiB buffer, so reads
/// go straight to the file descriptor and nothing is held back there.
pub const STREAM_READ: usize = 64 * 1024;

/// What a last line without a newline is, at the end of the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unterminated {
    /// A line all the same (a file or pipe whose writer did not end its last
    /// line: `printf 'a\nb' | sluice run`).
    Line,
    /// A fragment, sent to the dead-letter sink: the stream was cut mid-line
    /// (a TCP connection closed or reset by its client). The text names the
    /// stream for the reason (`"connection from 127.0.0.1:50312"`).
    Fragment(String),
}

/// Newline-delimited lines read from `R` (`\n` or `\r\n`).
pub struct StreamLines<R> {
    input: R,
    buf: Vec<u8>,
    /// Start of the unconsumed bytes in `buf`.
    start: usize,
    eof: bool,
    /// Longest line accepted, in bytes.
    max_line: usize,
    /// Skipping the rest of an overlong line: its first bytes, and its length so far.
    skipping: Option<(Vec<u8>, u64)>,
    /// What a last line without a newline is.
    unterminated: Unterminated,
    /// A read error that ended a stream whose errors end it (a reset
    /// connection), for the fragment's reason.
    failure: Option<String>,
    /// Lines given so far (lines and overlong ones): the first is a CSV
    /// header.
    given: u64,
}

impl<R: Read + AsFd + Send> StreamLines<R> {
    /// Lines of `input`, each at most `max_line` bytes (a longer one is
    /// [`Read1::TooLong`]); the last, unterminated one is what `unterminated`
    /// says.
    ///
    /// With [`Unterminated::Fragment`], a read error (a connection reset)
    /// ends the stream like its end does, instead of failing the source.
    pub fn new(input: R, max_line: usize, unterminated: Unterminated) -> Self {
        StreamLines {
            given: 0,
            input,
            buf: Vec::with_capacity(STREAM_READ),
            start: 0,
            eof: false,
            max_line,
            skipping: None,
            unterminated,
            failure: None,
        }
    }

    /// Waits up to [`POLL`] for input; true when a read will not block.
    fn readable(&self) -> io::Result<bool> {
        use rustix::event::{PollFd, PollFlags, Timespec, poll};
        let mut fds = [PollFd::new(&self.input, PollFlags::IN)];
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

    /// Reads once from the input into the buffer (after moving the unread
    /// bytes to its front).
    fn fill(&mut self) -> io::Result<()> {
        self.buf.drain(..self.start);
        self.start = 0;
        let len = self.buf.len();
        self.buf.resize(len + STREAM_READ, 0);
        let n = loop {
            match self.input.read(&mut self.buf[len..]) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => break other,
            }
        };
        self.buf.truncate(len + *n.as_ref().unwrap_or(&0));
        match n {
            Ok(0) => self.eof = true,
            Ok(_) => {}
            Err(e) if matches!(self.unterminated, Unterminated::Fragment(_)) => {
                self.failure = Some(e.to_string());
                self.eof = true;
            }
            Err(e) => return Err(e),
        }
        Ok(())
    }
}

impl<R: Read + AsFd + Send> Lines for StreamLines<R> {
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
                line.clear();
                line.extend_from_slice(rest);
                self.start = self.buf.len();
                return Ok(match &self.unterminated {
                    // A last line without a newline: a line all the same.
                    Unterminated::Line => {
                        self.given += 1;
                        Read1::Line
                    }
                    Unterminated::Fragment(stream) => Read1::Reject(match &self.failure {
                        None => format!(
                            "{stream} closed mid-line: its last {} bytes had no newline",
                            line.len()
                        ),
                        Some(e) => format!(
                            "{stream} failed mid-line ({e}): its last {} bytes had no newline",
                            line.len()
                        ),
                    }),
                });
            }
            if !self.readable()? {
                return Ok(Read1::Idle);
            }
            self.fill()?;
        }
    }

    fn drained(&self) -> bool {
        !self.buf[self.start..].contains(&b'\n')
    }

    fn waits_when_drained(&self) -> bool {
        true
    }

    fn line_is_first(&self) -> bool {
        self.given == 1
    }

    fn unterminated(&self) -> Option<&[u8]> {
        let rest = &self.buf[self.start..];
        (!rest.is_empty()).then_some(rest)
    }

    fn holds_taken_lines(&self) -> bool {
        !self.drained()
    }

    /// When the input is a file (stdin redirected from one), seeks back over
    /// the bytes read but not processed, so whoever reads it next
    /// (`sluice run …; cat`) starts where sluice stopped. A socket or a pipe
    /// cannot seek: nothing happens.
    fn release(&mut self) {
        let unread = (self.buf.len() - self.start) as i64;
        if unread > 0
            && rustix::fs::seek(&self.input, rustix::fs::SeekFrom::Current(-unread)).is_ok()
        {
            self.start = self.buf.len();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;
    use std::os::unix::net::UnixStream;

    /// All that `lines` reads until its end: each line (or reject/too-long) as text.
    fn read_all(lines: &mut dyn Lines) -> Vec<String> {
        let mut out = Vec::new();
        let mut buf = Vec::new();
        loop {
            match lines.next_line(&mut buf).unwrap() {
                Read1::Line => out.push(String::from_utf8_lossy(&buf).into_owned()),
                Read1::TooLong(n) => out.push(format!("too long {n}")),
                Read1::Reject(reason) => out.push(format!(
                    "reject {} ({reason})",
                    String::from_utf8_lossy(&buf)
                )),
                Read1::Idle | Read1::Pending => {}
                Read1::Eof => return out,
            }
        }
    }

    fn stream_of(bytes: &[u8]) -> UnixStream {
        let (mut a, b) = UnixStream::pair().unwrap();
        a.write_all(bytes).unwrap();
        drop(a);
        b
    }

    #[test]
    fn a_fragment_at_the_end_is_rejected_with_its_stream() {
        let mut lines = StreamLines::new(
            stream_of(b"a\r\nb\n\ncut"),
            100,
            Unterminated::Fragment("connection from x".into()),
        );
        assert_eq!(
            read_all(&mut lines),
            [
                "a",
                "b",
                "",
                "reject cut (connection from x closed mid-line: its last 3 bytes had no newline)"
            ]
        );
    }

    #[test]
    fn an_unterminated_last_line_is_a_line_when_told_so() {
        let mut lines = StreamLines::new(stream_of(b"a\nlast"), 100, Unterminated::Line);
        assert_eq!(read_all(&mut lines), ["a", "last"]);
    }

    #[test]
    fn an_overlong_line_is_skipped_and_reading_goes_on() {
        let long = "x".repeat(50);
        let input = format!("ok\n{long}\nafter\n");
        let mut lines = StreamLines::new(stream_of(input.as_bytes()), 10, Unterminated::Line);
        assert_eq!(read_all(&mut lines), ["ok", "too long 50", "after"]);
    }

    #[test]
    fn lines_across_many_reads_arrive_whole() {
        // More than one read's worth, with lines straddling read boundaries.
        let want: Vec<String> = (0..20_000).map(|n| format!("{{\"n\":{n}}}")).collect();
        let text = want.join("\n") + "\n";
        assert!(text.len() > 2 * STREAM_READ);
        let (mut a, b) = UnixStream::pair().unwrap();
        let writer = std::thread::spawn(move || a.write_all(text.as_bytes()).unwrap());
        let mut lines = StreamLines::new(b, 100, Unterminated::Fragment("s".into()));
        assert_eq!(read_all(&mut lines), want);
        writer.join().unwrap();
    }
}
