//! The `udp` source: a bound UDP socket; each datagram is one record (one
//! trailing `\n` or `\r\n` is taken off, as `echo … | nc -u` sends).
//!
//! ```toml
//! [sources.in]
//! type = "udp"
//! address = "127.0.0.1:9000"   # the socket; port 0: any free port (logged)
//! max_line_bytes = "64KiB"     # a longer datagram goes to the dead-letter sink
//! ```
//!
//! UDP cannot push back: a sender is never told to wait. So when the
//! pipeline is behind (its partition queue full) a datagram is **dropped**,
//! never waited for: each drop is counted in the pipeline's `records_dropped`
//! (`sluice_records_dropped_total` on `/metrics`, `dropped=` in the summary,
//! also counted in `records_in`) and logged at most once per 10 s with the
//! count since. Datagrams the kernel drops before sluice reads them (the
//! socket's receive buffer full: `netstat -su`, "receive buffer errors") are
//! not in that count. A datagram longer than `max_line_bytes` goes to the
//! dead-letter sink with its first KiB.
//!
//! A socket cannot be read again: no checkpoints. On stop, the records
//! already read are processed.

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Context as _;

use super::{Outbox, TOO_LONG_PREFIX};
use crate::config::ConfigError;

/// `[sources.NAME] type = "udp"`: the kind's own fields.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UdpConfig {
    /// The socket, `IP:PORT` (`"127.0.0.1:9000"`); port 0 takes any free port,
    /// written to the log. Required.
    pub address: Option<toml::Spanned<String>>,
}

impl super::SourceConfig for UdpConfig {
    fn build(&self, cx: &super::BuildContext<'_>) -> Result<super::Built, ConfigError> {
        let address = super::tcp::parse_address(self.address.as_ref(), "udp", cx)?;
        Ok(super::Built {
            claims: super::tcp::listen_claim("udp", address, cx),
            source: Arc::new(UdpSource { address }),
        })
    }
}

/// A udp source, built. Its `Debug` text is its identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UdpSource {
    /// The bound socket.
    pub address: SocketAddr,
}

/// The largest UDP payload (65,535 − 8 bytes of UDP header − 20 of IPv4).
const MAX_DATAGRAM: usize = 65_507;

/// How long the source waits for a datagram while records wait for room in a
/// full partition queue (it tries again after).
const RETRY: Duration = Duration::from_millis(5);

/// The shortest time between two "dropped" warnings.
const WARN_EVERY: Duration = Duration::from_secs(10);

impl super::Source for UdpSource {
    fn describe(&self) -> String {
        format!("udp {}", self.address)
    }

    fn has_first_line(&self) -> bool {
        false
    }

    fn replay(&self) -> super::Replay {
        super::Replay::No(
            "checkpoints need a source that can be read again from a position (a file); a UDP socket cannot".into(),
        )
    }

    fn run(&self, cx: super::SourceContext<'_>) -> anyhow::Result<()> {
        let socket = UdpSocket::bind(self.address).with_context(|| {
            format!(
                "source `{}`: cannot listen on udp {}",
                cx.spec.name, self.address
            )
        })?;
        socket.set_nonblocking(true)?;
        tracing::info!(
            pipeline = %cx.pipeline,
            "source `{}` listening on udp {}",
            cx.spec.name,
            socket.local_addr()?
        );
        receive(&socket, cx)
    }
}

/// Counts dropped datagrams and says so in the log, at most every
/// [`WARN_EVERY`].
struct Drops {
    since_warned: u64,
    warned: Option<Instant>,
}

impl Drops {
    fn drop_one(&mut self, source: &str, stats: &crate::stats::Stats) {
        stats.dropped.fetch_add(1, Ordering::Relaxed);
        self.since_warned += 1;
        if self.warned.is_none_or(|t| t.elapsed() >= WARN_EVERY) {
            tracing::warn!(
                source = %source,
                dropped = self.since_warned,
                "udp source: the pipeline is full, dropping datagrams (UDP cannot make its senders wait); see records_dropped"
            );
            self.warned = Some(Instant::now());
            self.since_warned = 0;
        }
    }
}

/// Receives datagrams until `cx.stop()`.
///
/// # Errors
/// The socket fails, or the dead-letter sink stopped.
fn receive(socket: &UdpSocket, cx: super::SourceContext<'_>) -> anyhow::Result<()> {
    let super::SourceContext {
        spec,
        mut router,
        partitions,
        dead_letter,
        stats,
        stop,
        ..
    } = cx;
    let mut outbox = Outbox::new(partitions, stats.clone());
    // A datagram has no first line: CSV needs `csv.header`.
    let decoder = super::LineDecoder::new(spec);
    // One byte more than accepted: a datagram that fills it is too long
    // (recv cuts a datagram to the buffer, silently).
    let mut buf = vec![0u8; spec.max_line_bytes.min(MAX_DATAGRAM) + 1];
    let mut drops = Drops {
        since_warned: 0,
        warned: None,
    };
    while !stop() {
        let n = match socket.recv(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                // Nothing to read now: hand what waits to the workers.
                let all_sent = match outbox.try_flush_all() {
                    Ok(all) => all,
                    Err(super::WorkerGone) => return Ok(()),
                };
                wait(socket, if all_sent { super::POLL } else { RETRY });
                continue;
            }
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("source `{}`: udp receive failed", spec.name));
            }
        };
        let mut datagram = &buf[..n];
        if n > spec.max_line_bytes {
            stats.records_in.fetch_add(1, Ordering::Relaxed);
            let reason = format!(
                "datagram of more than max_line_bytes ({}) bytes; `original` holds its first {} bytes",
                spec.max_line_bytes,
                TOO_LONG_PREFIX.min(n)
            );
            super::reject_line(
                &dead_letter,
                &stats,
                &reason,
                &datagram[..TOO_LONG_PREFIX.min(n)],
            )?;
            continue;
        }
        if let Some(line) = datagram.strip_suffix(b"\n") {
            datagram = line.strip_suffix(b"\r").unwrap_or(line);
        }
        let Some((partition, event)) =
            super::route_line(spec, &decoder, &mut router, datagram, &dead_letter, &stats)?
        else {
            continue;
        };
        match outbox.offer(partition, event.into_record(datagram)) {
            Ok(None) => {}
            Ok(Some(_dropped)) => drops.drop_one(&spec.name, &stats),
            Err(super::WorkerGone) => return Ok(()),
        }
    }
    // Stopping: what was read is processed (the workers drain it).
    let _ = outbox.flush_all();
    if drops.since_warned > 0 {
        tracing::warn!(source = %spec.name, dropped = drops.since_warned, "udp source: datagrams dropped since the last warning");
    }
    Ok(())
}

/// Waits up to `max` for a datagram.
fn wait(socket: &UdpSocket, max: Duration) {
    use rustix::event::{PollFd, PollFlags, Timespec, poll};
    let mut fds = [PollFd::new(socket, PollFlags::IN)];
    let timeout = Timespec {
        tv_sec: 0,
        tv_nsec: max.as_nanos() as _,
    };
    let _ = poll(&mut fds, Some(&timeout));
}

#[cfg(test)]
mod tests {
    use super::super::{Chunk, Record};
    use super::*;
    use crate::stats::Stats;

    fn record(n: u8) -> Record {
        Record {
            key: Vec::new(),
            value: vec![n],
            timestamp_ms: 0,
            headers: Vec::new(),
            task: None,
        }
    }

    #[test]
    fn offer_never_waits_and_gives_back_what_finds_no_room() {
        let (tx, rx) = flume::bounded(1);
        let mut outbox = Outbox::new(vec![tx], Arc::new(Stats::default()));
        let chunk = super::super::CHUNK_RECORDS;
        // A first chunk fills the channel, a second waits in the outbox; then
        // there is no room: every further record comes back.
        for i in 0..2 * chunk {
            assert!(
                outbox.offer(0, record(i as u8)).unwrap().is_none(),
                "record {i}"
            );
        }
        assert_eq!(outbox.offer(0, record(7)).unwrap(), Some(record(7)));
        assert!(!outbox.try_flush_all().unwrap());
        // The worker takes the first chunk: the waiting one goes.
        assert_eq!(rx.recv().unwrap().len(), chunk);
        assert!(outbox.try_flush_all().unwrap());
        assert!(!outbox.is_pending());
        match rx.recv().unwrap() {
            Chunk::Records(r) => assert_eq!(r.len(), chunk),
            other => panic!("not records: {other:?}"),
        }
    }

    #[test]
    fn offer_reports_a_worker_gone() {
        let (tx, rx) = flume::bounded(1);
        let stats = Arc::new(Stats::default());
        let mut outbox = Outbox::new(vec![tx], stats.clone());
        drop(rx);
        let chunk = super::super::CHUNK_RECORDS;
        for i in 0..chunk - 1 {
            assert!(outbox.offer(0, record(i as u8)).is_ok());
        }
        assert!(outbox.offer(0, record(0)).is_err());
        assert_eq!(stats.failed.load(Ordering::Relaxed), chunk as u64);
    }
}
