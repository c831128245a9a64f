//! The `tcp` source: a listening socket; each connection sends
//! newline-delimited records (`\n` or `\r\n`), many connections at once.
//!
//! ```toml
//! [sources.in]
//! type = "tcp"
//! address = "127.0.0.1:9000"   # the listening socket; port 0: any free port (logged)
//! max_connections = 64         # more wait in the listen backlog until one closes
//! format = "text"              # or "json" (default), with `key`, `timestamp`…
//! ```
//!
//! - **One thread per connection**, each running the shared read loop
//!   ([`super::run_lines`]) over the socket: the same decoding, chunking and
//!   dead-letter handling as a file or stdin.
//! - **Backpressure by not reading**: when the pipeline is behind, a
//!   connection's thread waits on the partition channel, stops reading, the
//!   socket's receive buffer fills and the client's `send` blocks. Nothing is
//!   dropped.
//! - **Memory**: each connection holds at most one read (64 KiB) plus one line
//!   (`max_line_bytes`) and a chunk of records per partition; what waits beyond
//!   that waits in the kernel's socket buffers and the clients.
//! - **`max_connections`**: past it the source stops accepting; new connections
//!   wait in the kernel's listen backlog (their handshake completes and their
//!   first bytes are buffered, then their sends block), and are taken when a
//!   connection closes. When the backlog is full too, the kernel ignores
//!   further connection attempts (the client retries its SYN, then times out).
//! - **A connection closed (or reset) mid-line**: the bytes after its last
//!   newline go to the dead-letter sink, with the peer's address in the reason.
//! - **Stop**: the source stops accepting (the listening socket is closed),
//!   each connection processes the complete lines it has read, and is closed;
//!   what its client sent after that is not read.
//! - A socket cannot be read again: no checkpoints.
//!
//! It listens only on `address`: `127.0.0.1` for this machine alone,
//! `0.0.0.0` (or `[::]`) for every interface.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::Context as _;

use super::stream::{StreamLines, Unterminated};
use crate::config::ConfigError;

/// `[sources.NAME] type = "tcp"`: the kind's own fields.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TcpConfig {
    /// The listening socket, `IP:PORT` (`"127.0.0.1:9000"`, `"[::1]:9000"`);
    /// port 0 takes any free port, written to the log. Required.
    pub address: Option<toml::Spanned<String>>,
    /// Connections read at once (at least 1). Default 64; more wait in the
    /// listen backlog until one closes.
    #[serde(default = "default_max_connections")]
    pub max_connections: toml::Spanned<usize>,
}

fn default_max_connections() -> toml::Spanned<usize> {
    toml::Spanned::new(0..0, DEFAULT_MAX_CONNECTIONS)
}

/// Connections a `tcp` source reads at once unless told otherwise.
pub const DEFAULT_MAX_CONNECTIONS: usize = 64;

/// Reads the `address` field of a socket source of kind `kind` (`tcp`,
/// `udp`): an IP address and a port.
///
/// # Errors
/// The field is missing, or not `IP:PORT`.
pub(super) fn parse_address(
    address: Option<&toml::Spanned<String>>,
    kind: &str,
    cx: &super::BuildContext<'_>,
) -> Result<SocketAddr, ConfigError> {
    let address = address.ok_or_else(|| {
        cx.config.error(
            cx.table.span.clone(),
            format!(
                "source `{}`: a {kind} source needs `address`, the socket to listen on (e.g. \"127.0.0.1:9000\")",
                cx.name
            ),
        )
    })?;
    address.get_ref().parse().map_err(|_| {
        cx.config.error(
            address.span(),
            format!(
                "`{}` is not an IP address and port, e.g. \"127.0.0.1:9000\" (this machine only) or \"0.0.0.0:9000\" (every interface)",
                address.get_ref()
            ),
        )
    })
}

/// The claim on a listening socket (none for port 0: each such source gets a
/// port of its own).
pub(super) fn listen_claim(
    proto: &'static str,
    address: SocketAddr,
    cx: &super::BuildContext<'_>,
) -> Vec<(super::Claim, std::ops::Range<usize>)> {
    if address.port() == 0 {
        return Vec::new();
    }
    let span = cx
        .table
        .field_span("address")
        .unwrap_or(cx.table.span.clone());
    vec![(super::Claim::Listen { proto, address }, span)]
}

impl super::SourceConfig for TcpConfig {
    fn build(&self, cx: &super::BuildContext<'_>) -> Result<super::Built, ConfigError> {
        let address = parse_address(self.address.as_ref(), "tcp", cx)?;
        let max_connections = *self.max_connections.get_ref();
        if max_connections == 0 {
            return Err(cx.error_at("max_connections", "`max_connections` must be at least 1"));
        }
        Ok(super::Built {
            claims: listen_claim("tcp", address, cx),
            source: Arc::new(TcpSource {
                address,
                max_connections,
            }),
        })
    }
}

/// A tcp source, built. Its `Debug` text is its identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpSource {
    /// The listening socket.
    pub address: SocketAddr,
    /// Connections read at once.
    pub max_connections: usize,
}

impl super::Source for TcpSource {
    fn describe(&self) -> String {
        format!("tcp {}", self.address)
    }

    fn replay(&self) -> super::Replay {
        super::Replay::No(
            "checkpoints need a source that can be read again from a position (a file); a TCP socket cannot".into(),
        )
    }

    fn run(&self, cx: super::SourceContext<'_>) -> anyhow::Result<()> {
        let listener = TcpListener::bind(self.address).with_context(|| {
            format!(
                "source `{}`: cannot listen on tcp {}",
                cx.spec.name, self.address
            )
        })?;
        listener.set_nonblocking(true)?;
        tracing::info!(
            pipeline = %cx.pipeline,
            "source `{}` listening on tcp {}",
            cx.spec.name,
            listener.local_addr()?
        );
        accept_loop(listener, self.max_connections, cx)
    }
}

/// What every connection's thread shares.
struct Shared<'a> {
    pipeline: &'a str,
    spec: &'a super::SourceSpec,
    router: crate::source::router::Router,
    partitions: Vec<flume::Sender<super::Chunk>>,
    dead_letter: crate::sink::dead_letter::DeadLetter,
    stats: Arc<crate::stats::Stats>,
    /// Set when the source stops: each connection finishes the lines it read.
    closing: AtomicBool,
    /// The first error of a connection (the dead-letter sink stopped): the
    /// source stops with it.
    error: Mutex<Option<anyhow::Error>>,
}

/// Accepts connections until `cx.stop()` or a connection's error, each read
/// on a thread of its own, at most `max` at once; then waits for them.
fn accept_loop(
    listener: TcpListener,
    max: usize,
    cx: super::SourceContext<'_>,
) -> anyhow::Result<()> {
    let stop = cx.stop;
    let shared = Shared {
        pipeline: cx.pipeline,
        spec: cx.spec,
        router: cx.router,
        partitions: cx.partitions,
        dead_letter: cx.dead_letter,
        stats: cx.stats,
        closing: AtomicBool::new(false),
        error: Mutex::new(None),
    };
    let failed = || {
        shared
            .error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
    };
    // Each connection's thread says when it ends, so that a source at
    // `max` connections takes the next one at once.
    let (ended_tx, ended) = flume::unbounded::<()>();
    std::thread::scope(|scope| {
        let mut open: Vec<std::thread::ScopedJoinHandle<'_, ()>> = Vec::new();
        while !stop() && !failed() {
            open.retain(|c| !c.is_finished());
            if open.len() >= max {
                let _ = ended.recv_timeout(super::POLL);
                continue;
            }
            if !readable(&listener) {
                continue;
            }
            let (stream, peer) = match listener.accept() {
                Ok(accepted) => accepted,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted
                    ) =>
                {
                    continue;
                }
                Err(e) => {
                    // Out of file descriptors, or the peer gave up before we
                    // accepted: the listener itself is fine.
                    tracing::warn!(source = %shared.spec.name, "tcp accept failed: {e}");
                    std::thread::sleep(super::POLL);
                    continue;
                }
            };
            tracing::debug!(source = %shared.spec.name, %peer, "tcp connection");
            let (shared, ended_tx) = (&shared, ended_tx.clone());
            let spawned = std::thread::Builder::new()
                .name(format!("{}-tcp", shared.pipeline))
                .spawn_scoped(scope, move || {
                    let result = read_connection(shared, stream, peer);
                    if let Err(e) = result {
                        shared.closing.store(true, Ordering::Relaxed);
                        shared
                            .error
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .get_or_insert(e);
                    }
                    let _ = ended_tx.send(());
                });
            match spawned {
                Ok(handle) => open.push(handle),
                Err(e) => {
                    tracing::warn!(source = %shared.spec.name, %peer, "cannot start a thread for a tcp connection, closing it: {e}")
                }
            }
        }
        // Stop accepting: connections still in the backlog are refused.
        drop(listener);
        shared.closing.store(true, Ordering::Relaxed);
    });
    match shared.error.into_inner().unwrap_or_else(|e| e.into_inner()) {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Waits up to [`super::POLL`] for a connection to accept.
fn readable(listener: &TcpListener) -> bool {
    use rustix::event::{PollFd, PollFlags, Timespec, poll};
    let mut fds = [PollFd::new(listener, PollFlags::IN)];
    let timeout = Timespec {
        tv_sec: 0,
        tv_nsec: super::POLL.as_nanos() as _,
    };
    matches!(poll(&mut fds, Some(&timeout)), Ok(n) if n > 0)
}

/// Reads one connection with the shared read loop until its client closes
/// it or the source stops.
///
/// # Errors
/// The dead-letter sink stopped.
fn read_connection(shared: &Shared<'_>, stream: TcpStream, peer: SocketAddr) -> anyhow::Result<()> {
    // Accepted sockets do not inherit the listener's O_NONBLOCK on Linux;
    // say so anyway: the lines reader polls before each blocking read.
    stream.set_nonblocking(false)?;
    let lines = StreamLines::new(
        stream,
        shared.spec.max_line_bytes,
        Unterminated::Fragment(format!("tcp connection from {peer}")),
    );
    let stop = || shared.closing.load(Ordering::Relaxed);
    super::run_lines(
        super::SourceContext {
            pipeline: shared.pipeline,
            spec: shared.spec,
            router: shared.router.clone(),
            partitions: shared.partitions.clone(),
            dead_letter: shared.dead_letter.clone(),
            stats: shared.stats.clone(),
            stop: &stop,
            checkpointer: None,
            resume: None,
            window: None,
            keyed: false,
        },
        Box::new(lines),
    )
}
