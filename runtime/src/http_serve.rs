//! Serving an axum app on hyper's HTTP/1 connections under limits: the admin
//! API and the `http` source both do, with their own numbers. A leaf module.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The limits a server holds every connection to.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// A request's head (line and headers) must arrive within this.
    pub head: Duration,
    /// A connection is closed this long after it was accepted, whatever it
    /// does (requests and bodies included).
    pub connection: Duration,
    /// Connections served at once; past it a new one is closed on accept (a
    /// warning logged, at most once a minute).
    pub max_connections: usize,
    /// Whether a connection may carry more than one request.
    pub keep_alive: bool,
}

/// Accepts connections from `listener` until `shutdown` completes, each
/// served on its own task under `limits`; then waits for the connections
/// still open (their requests are answered). `what` names the server in log
/// lines.
///
/// A client that half-closes its side after sending a request (HTTP/1.1
/// allows it) still gets its answer (hyper's `half_close`): otherwise the
/// request's handler would be dropped mid-way and the client, unanswered,
/// would send it again.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    limits: Limits,
    what: String,
    shutdown: impl Future<Output = ()>,
) {
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    let mut connections = tokio::task::JoinSet::new();
    let mut warned: Option<Instant> = None;
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors and the like: wait, as axum does.
                    tracing::debug!("{what}: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        while connections.try_join_next().is_some() {}
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            if warned.is_none_or(|t| t.elapsed() > Duration::from_secs(60)) {
                warned = Some(Instant::now());
                tracing::warn!(
                    "{what}: {} connections open, closing new ones until some end",
                    limits.max_connections
                );
            }
            drop(stream);
            continue;
        };
        let app = app.clone();
        let peer = stream.peer_addr().ok();
        connections.spawn(async move {
            serve_connection(hyper_util::rt::TokioIo::new(stream), app, limits, peer).await;
            drop(slot);
        });
    }
    drop(listener);
    while connections.join_next().await.is_some() {}
}

/// When the connection a request came on is closed (see
/// [`Limits::connection`]); a request extension, so that a handler that
/// streams its answer for longer (a tap) can move it.
#[derive(Debug, Clone)]
pub struct ConnectionDeadline(Arc<(std::sync::Mutex<Instant>, tokio::sync::Notify)>);

impl ConnectionDeadline {
    /// Closes the connection at `at` instead (sooner or later).
    pub fn set(&self, at: Instant) {
        *self.0.0.lock().expect("deadline lock") = at;
        self.0.1.notify_one();
    }

    fn get(&self) -> Instant {
        *self.0.0.lock().expect("deadline lock")
    }
}

/// The address of the client a request came from (none: not a TCP
/// connection); a request extension.
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub Option<std::net::SocketAddr>);

/// Serves `app` on one connection, `io`, from `peer`, under `limits` (all
/// but `max_connections`), until the client or a limit ends it. [`serve`]
/// calls it for each connection it accepts; the fuzz target `admin` (fuzz/)
/// for bytes in memory. Each request carries the connection's
/// [`ConnectionDeadline`] and [`Peer`] as extensions.
pub async fn serve_connection<I>(
    io: I,
    app: axum::Router,
    limits: Limits,
    peer: Option<std::net::SocketAddr>,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin,
{
    let deadline = ConnectionDeadline(Arc::new((
        std::sync::Mutex::new(Instant::now() + limits.connection),
        tokio::sync::Notify::new(),
    )));
    let app = app
        .layer(axum::Extension(deadline.clone()))
        .layer(axum::Extension(Peer(peer)));
    let service = hyper_util::service::TowerToHyperService::new(app);
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(limits.head)
        .keep_alive(limits.keep_alive)
        .half_close(true)
        .serve_connection(io, service);
    tokio::pin!(connection);
    loop {
        let at = deadline.get();
        tokio::select! {
            _ = &mut connection => return,
            () = tokio::time::sleep_until(at.into()) => {
                if deadline.get() <= Instant::now() {
                    return;
                }
            }
            // Moved: wait for the new deadline.
            () = deadline.0.1.notified() => {}
        }
    }
}
