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
        connections.spawn(async move {
            serve_connection(hyper_util::rt::TokioIo::new(stream), app, limits).await;
            drop(slot);
        });
    }
    drop(listener);
    while connections.join_next().await.is_some() {}
}

/// Serves `app` on one connection, `io`, under `limits` (all but
/// `max_connections`), until the client or a limit ends it. [`serve`] calls
/// it for each connection it accepts; the fuzz target `admin` (fuzz/) for
/// bytes in memory.
pub async fn serve_connection<I>(io: I, app: axum::Router, limits: Limits)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin,
{
    let service = hyper_util::service::TowerToHyperService::new(app);
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(limits.head)
        .keep_alive(limits.keep_alive)
        .half_close(true)
        .serve_connection(io, service);
    let _ = tokio::time::timeout(limits.connection, connection).await;
}
