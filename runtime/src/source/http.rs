//! The `http` source: records `POST`ed to one path, as NDJSON (one record a
//! line) or, with `format = "json"`, as a JSON array (one record an element,
//! written as compact JSON).
//!
//! ```toml
//! [sources.web]
//! type = "http"
//! address = "127.0.0.1:8080"   # loopback only, unless allow_remote = true
//! path = "/ingest"             # default "/"
//! ack = "sink"                 # or "pipeline" (default), see below
//! max_body_bytes = "10MiB"     # larger bodies: 413; at most 64MiB
//! token = "s3cret"             # optional: `Authorization: Bearer s3cret` required (401)
//! ```
//!
//! Answers:
//!
//! | status | when |
//! |---|---|
//! | 200 `{"accepted":N,"dead_letter":M}` | the records are in the pipeline (`ack = "pipeline"`: handed to the partition workers' queues), or with `ack = "sink"` every sink (outputs and dead letter) wrote and synced them; `M` lines could not be decoded and went to the dead-letter sink |
//! | 400 | the body is not valid JSON array (when it starts with `[`), or could not be read |
//! | 401 + `WWW-Authenticate: Bearer` | `token` is set and the request does not carry it (RFC 6750 §3) |
//! | 404, 405 + `Allow: POST` | another path; another method than `POST` |
//! | 413 | the body is longer than `max_body_bytes` (RFC 9110 §15.5.14); nothing is taken |
//! | 503 + `Retry-After: 1` | a partition queue the request needs is full (RFC 9110 §10.2.3); nothing is taken |
//! | 503 | the pipeline has stopped (on an error or shutting down); part of the request may have been taken first |
//! | 500 | with `ack = "sink"`: a sink could not write or sync, or the pipeline stopped; the records may or may not be in the sinks. Also when the records were taken but the dead-letter sink had stopped |
//!
//! A request is taken whole or not at all: its records go to the partition
//! queues under one lock, each partition's share as one chunk, only when
//! every queue it needs has room (the source is their only writer, so the
//! room cannot be taken between the look and the send). A queue of a
//! partition then holds up to `queue_records / 256` requests' shares.
//!
//! `ack = "sink"` is end-to-end acknowledgement, as Vector's
//! `acknowledgements`: after a request's records are in the queues, the
//! answer waits for a delivery request ([`super::Chunk::Deliver`]) sent
//! through every partition queue after them; each worker processes what came
//! before it, hands the output to the sinks and has them sync. Requests
//! answered by one such round share it (group commit). A daemon killed at
//! any moment has thus written every record it acknowledged. A pipeline with
//! windows holds records in its windows, not its sinks: it refuses `ack =
//! "sink"`.
//!
//! It cannot be read again from a position: a pipeline reading it takes no
//! checkpoints (a client whose request got no 200 sends it again).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use axum::body::{Body, HttpBody as _};
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};

use super::{Chunk, POLL, Record, SourceSpec};
use crate::config::Format;
use crate::sink::dead_letter::{DeadLetter, DeadRecord};
use crate::source::router::Router;
use crate::stats::Stats;

/// When a request is answered 200.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AckMode {
    /// Once its records are in the partition queues.
    #[default]
    Pipeline,
    /// Once every sink wrote and synced them.
    Sink,
}

/// `[sources.NAME] type = "http"`: the kind's own fields.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// The address to listen on, `IP:PORT` (port 0: any free port, logged).
    pub address: Option<toml::Spanned<String>>,
    /// Allow an `address` that is not loopback. Default false.
    #[serde(default)]
    pub allow_remote: bool,
    /// The path records are posted to; default `/`.
    pub path: Option<toml::Spanned<String>>,
    /// When to answer 200: `pipeline` (default) or `sink`.
    #[serde(default)]
    pub ack: AckMode,
    /// Longest body accepted, in bytes (`"10MiB"` or a number); default
    /// 10 MiB, at most 64 MiB.
    #[serde(
        default = "default_max_body",
        deserialize_with = "crate::config::de_batch_bytes"
    )]
    pub max_body_bytes: u64,
    /// A bearer token requests must carry (`Authorization: Bearer TOKEN`).
    pub token: Option<toml::Spanned<String>>,
}

fn default_max_body() -> u64 {
    10 << 20
}

/// How long in-flight requests may take to finish once the source stops.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// How long a client may take to send a request's head (the admin API's
/// limit too): a client that stalls mid-head is cut off.
const HEAD_TIMEOUT: Duration = Duration::from_secs(5);

/// How long one connection may last, requests and bodies included (a body of
/// `max_body_bytes` = 64 MiB at 1.2 MB/s): a stalled body is cut off, and
/// with it what the request had not yet handed to the pipeline.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(60);

/// Most connections served at once; past it a new one is closed at once (and
/// a warning logged, at most once a minute), so that idle or stalled clients
/// cannot hold the daemon's memory or file descriptors.
const MAX_CONNECTIONS: usize = 256;

impl super::SourceConfig for HttpConfig {
    fn build(
        &self,
        cx: &super::BuildContext<'_>,
    ) -> Result<super::Built, crate::config::ConfigError> {
        let text = self.address.as_ref().ok_or_else(|| {
            cx.config.error(
                cx.table.span.clone(),
                format!(
                    "source `{}`: an http source needs `address`, such as \"127.0.0.1:8080\"",
                    cx.name
                ),
            )
        })?;
        let address: SocketAddr = text.get_ref().parse().map_err(|e| {
            cx.config.error(
                text.span(),
                format!(
                    "field `address`: {:?} is not an address such as \"127.0.0.1:8080\": {e}",
                    text.get_ref()
                ),
            )
        })?;
        if !address.ip().is_loopback() && !self.allow_remote {
            return Err(cx.config.error(
                text.span(),
                format!(
                    "field `address`: {address} is not a loopback address; set `allow_remote = true` to take records from beyond this machine"
                ),
            ));
        }
        let path = match &self.path {
            None => "/".to_string(),
            Some(p) if p.get_ref().starts_with('/') => p.get_ref().clone(),
            Some(p) => {
                return Err(cx
                    .config
                    .error(p.span(), "field `path`: a path starts with `/`"));
            }
        };
        if let Some(t) = &self.token
            && t.get_ref().is_empty()
        {
            return Err(cx
                .config
                .error(t.span(), "field `token`: empty (leave it out for no token)"));
        }
        // Port 0 is any free port: two of them do not collide.
        let claims = if address.port() == 0 {
            Vec::new()
        } else {
            vec![(
                super::Claim::Listen {
                    proto: "tcp",
                    address,
                },
                text.span(),
            )]
        };
        Ok(super::Built {
            source: Arc::new(HttpSource {
                address,
                path,
                ack: self.ack,
                max_body_bytes: usize::try_from(self.max_body_bytes).unwrap_or(usize::MAX),
                token: self.token.as_ref().map(|t| t.get_ref().clone()),
            }),
            claims,
        })
    }

    fn check_windowed(
        &self,
        cx: &super::BuildContext<'_>,
    ) -> Result<(), crate::config::ConfigError> {
        if self.ack == AckMode::Sink {
            return Err(cx.error_at(
                "ack",
                "`ack = \"sink\"` answers once the sinks hold the records, but a pipeline with windows holds them in its windows until they close: use ack = \"pipeline\"",
            ));
        }
        Ok(())
    }
}

/// An http source, built. Its `Debug` text shows a hash of the token, not
/// the token.
#[derive(Clone)]
pub struct HttpSource {
    /// Where it listens.
    pub address: SocketAddr,
    /// The path records are posted to.
    pub path: String,
    /// When a request is answered 200.
    pub ack: AckMode,
    /// Longest body accepted, in bytes.
    pub max_body_bytes: usize,
    /// The bearer token requests must carry.
    pub token: Option<String>,
}

impl std::fmt::Debug for HttpSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use sha2::Digest as _;
        let token = self.token.as_ref().map(|t| {
            let digest = sha2::Sha256::digest(t.as_bytes());
            let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
            format!("sha256:{hex}")
        });
        f.debug_struct("Http")
            .field("address", &self.address)
            .field("path", &self.path)
            .field("ack", &self.ack)
            .field("max_body_bytes", &self.max_body_bytes)
            .field("token", &token)
            .finish()
    }
}

impl super::Source for HttpSource {
    fn describe(&self) -> String {
        format!("http://{}{}", self.address, self.path)
    }

    fn replay(&self) -> super::Replay {
        super::Replay::No(
            "checkpoints need a source that can be read again from a position (a file); requests to an http source cannot".into(),
        )
    }

    fn run(&self, cx: super::SourceContext<'_>) -> anyhow::Result<()> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind(self.address))
            .with_context(|| {
                format!(
                    "source `{}`: cannot listen on {}",
                    cx.spec.name, self.address
                )
            })?;
        let bound = listener.local_addr()?;
        tracing::info!(source = %cx.spec.name, "http source listening on {bound}");
        let shared = Arc::new(Shared {
            source: self.clone(),
            spec: cx.spec.clone(),
            dead_letter: cx.dead_letter,
            stats: cx.stats,
            queues: Mutex::new(Queues {
                senders: cx.partitions,
                router: cx.router,
                waiting: Vec::new(),
            }),
            wake: Condvar::new(),
            closing: AtomicBool::new(false),
        });
        let acker = match self.ack {
            AckMode::Sink => {
                let shared = shared.clone();
                Some(
                    std::thread::Builder::new()
                        .name(format!("{}-ack", cx.pipeline))
                        .spawn(move || deliver_loop(&shared))?,
                )
            }
            AckMode::Pipeline => None,
        };
        let app = axum::Router::new()
            .fallback(ingest)
            .with_state(shared.clone());
        let (shutdown, shutting_down) = tokio::sync::oneshot::channel::<()>();
        let server = runtime.spawn(crate::http_serve::serve(
            listener,
            app,
            crate::http_serve::Limits {
                head: HEAD_TIMEOUT,
                connection: CONNECTION_TIMEOUT,
                max_connections: MAX_CONNECTIONS,
                keep_alive: true,
            },
            format!("source `{}`", cx.spec.name),
            async {
                let _ = shutting_down.await;
            },
        ));
        let stop = cx.stop;
        runtime.block_on(async {
            while !stop() && !server.is_finished() {
                tokio::time::sleep(POLL).await;
            }
        });
        let _ = shutdown.send(());
        // Requests under way are answered (a delivery waits for its round).
        let served = runtime.block_on(async { tokio::time::timeout(SHUTDOWN_GRACE, server).await });
        drop(runtime); // and with it every connection still open
        shared.closing.store(true, Ordering::Relaxed);
        shared.wake.notify_all();
        if let Some(acker) = acker {
            let _ = acker.join();
        }
        let _ = served;
        Ok(())
    }
}

/// What every request handler and the delivery thread share.
struct Shared {
    source: HttpSource,
    spec: SourceSpec,
    dead_letter: DeadLetter,
    stats: Arc<Stats>,
    /// Locked to send to the partition queues: whoever holds it is the only
    /// writer.
    queues: Mutex<Queues>,
    /// Wakes the delivery thread when a request waits.
    wake: Condvar,
    /// Set once no request will come any more.
    closing: AtomicBool,
}

struct Queues {
    senders: Vec<flume::Sender<Chunk>>,
    router: Router,
    /// `ack = "sink"`: requests whose records are in the queues, waiting for
    /// a delivery round.
    waiting: Vec<tokio::sync::oneshot::Sender<Result<(), String>>>,
}

/// The delivery thread of `ack = "sink"`: while requests wait, sends a
/// delivery request through every partition queue (after their records),
/// waits for every worker's answer, and answers the requests it was sent
/// for.
fn deliver_loop(shared: &Shared) {
    loop {
        let mut queues = shared.queues.lock().unwrap_or_else(|e| e.into_inner());
        while queues.waiting.is_empty() && !shared.closing.load(Ordering::Relaxed) {
            queues = shared
                .wake
                .wait_timeout(queues, POLL)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        if queues.waiting.is_empty() {
            return; // closing, nobody waits
        }
        // Every queue needs room: the request waits behind the records.
        if queues.senders.iter().any(flume::Sender::is_full) {
            if shared.closing.load(Ordering::Relaxed) {
                return; // the source stopped: nobody waits for these any more
            }
            drop(queues);
            std::thread::sleep(Duration::from_millis(1));
            continue;
        }
        let waiting = std::mem::take(&mut queues.waiting);
        let (done, answers) = flume::unbounded();
        let mut result = Ok(());
        let mut sent = 0;
        for tx in &queues.senders {
            match tx.try_send(Chunk::Deliver(done.clone())) {
                Ok(()) => sent += 1,
                Err(_) => result = Err("the pipeline has stopped".to_string()),
            }
        }
        drop(queues);
        drop(done);
        let mut answered = 0;
        while answered < sent {
            match answers.recv_timeout(POLL) {
                Ok(Ok(())) => answered += 1,
                Ok(Err(e)) => {
                    answered += 1;
                    result = Err(format!("{e:#}"));
                }
                // A worker stuck behind a sink that does not move: once the
                // source stopped, nobody waits for the answer.
                Err(flume::RecvTimeoutError::Timeout)
                    if !shared.closing.load(Ordering::Relaxed) => {}
                Err(_) => {
                    // A worker dropped the request (it stopped on an error),
                    // or the source stopped.
                    result = Err("the pipeline has stopped".to_string());
                    break;
                }
            }
        }
        for w in waiting {
            let _ = w.send(result.clone());
        }
    }
}

/// The answer to every request.
async fn ingest(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let source = &shared.source;
    if uri.path() != source.path {
        return (StatusCode::NOT_FOUND, "not found\n").into_response();
    }
    if method != Method::POST {
        return (
            StatusCode::METHOD_NOT_ALLOWED,
            [(header::ALLOW, "POST")],
            "records are sent with POST\n",
        )
            .into_response();
    }
    if let Some(token) = &source.token
        && !bearer_matches(&headers, token)
    {
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            "a bearer token is required\n",
        )
            .into_response();
    }
    let too_large = || {
        (
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "the body is longer than max_body_bytes ({} bytes)\n",
                source.max_body_bytes
            ),
        )
            .into_response()
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > source.max_body_bytes as u64) {
        return too_large();
    }
    let body = match read_body(body, source.max_body_bytes).await {
        Ok(Some(body)) => body,
        Ok(None) => return too_large(),
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                format!("cannot read the body: {e}\n"),
            )
                .into_response();
        }
    };
    let decoded = match decode_body(&shared.spec, &body) {
        Ok(d) => d,
        Err(e) => return (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response(),
    };
    let (accepted, rejected) = (decoded.records.len(), decoded.rejected.len());
    match shared.enqueue(decoded) {
        Ok(()) => {}
        Err(Refused::Full) => {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                [(header::RETRY_AFTER, "1")],
                "the pipeline's queue is full: retry later\n",
            )
                .into_response();
        }
        Err(Refused::Stopped(e)) => {
            return (StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n")).into_response();
        }
        Err(Refused::DeadLetter(e)) => {
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                format!(
                    "the records are in the pipeline, the lines it could not decode are not: {e}\n"
                ),
            )
                .into_response();
        }
    }
    if source.ack == AckMode::Sink {
        let (tx, rx) = tokio::sync::oneshot::channel();
        shared
            .queues
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .waiting
            .push(tx);
        shared.wake.notify_one();
        match rx.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                return (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("not acknowledged: {e}\n"),
                )
                    .into_response();
            }
            Err(_) => {
                return (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "not acknowledged: the source is stopping\n",
                )
                    .into_response();
            }
        }
    }
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        format!("{{\"accepted\":{accepted},\"dead_letter\":{rejected}}}\n"),
    )
        .into_response()
}

/// Whether `headers` carry `Authorization: Bearer TOKEN` (RFC 6750 §2.1; the
/// scheme is case-insensitive, RFC 9110 §11.1), compared in constant time.
fn bearer_matches(headers: &HeaderMap, token: &str) -> bool {
    let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let Some((scheme, given)) = value.split_once(' ') else {
        return false;
    };
    let given = given.trim().as_bytes();
    scheme.eq_ignore_ascii_case("bearer")
        && given.len() == token.len()
        && given
            .iter()
            .zip(token.as_bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

/// Reads the body, up to `limit` bytes; `None` when it is longer.
async fn read_body(mut body: Body, limit: usize) -> Result<Option<Vec<u8>>, axum::Error> {
    let mut buf = Vec::new();
    while let Some(frame) =
        std::future::poll_fn(|cx| std::pin::Pin::new(&mut body).poll_frame(cx)).await
    {
        if let Ok(data) = frame?.into_data() {
            if buf.len() + data.len() > limit {
                return Ok(None);
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(Some(buf))
}

/// A request's records, and the lines that are none (reason, bytes).
#[derive(Debug, Default)]
struct Decoded {
    records: Vec<Record>,
    rejected: Vec<(String, Vec<u8>)>,
}

/// Splits a body into records: the elements of a JSON array (a JSON source
/// whose body starts with `[`), else the lines, each decoded by the source's
/// format as every line source decodes them ([`super::LineDecoder`]); with
/// `format = "csv"` and no `csv.header`, a body's first line is its header
/// row. Blank lines are skipped; a line that cannot be decoded or is longer
/// than `max_line_bytes` is rejected, for the dead-letter sink.
///
/// # Errors
/// A body that starts with `[` and is not a JSON array.
fn decode_body(spec: &SourceSpec, body: &[u8]) -> Result<Decoded, String> {
    let array = spec.format == Format::Json
        && body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[');
    let elements: Vec<Vec<u8>>;
    let lines: Vec<&[u8]> = if array {
        let values: Vec<serde_json::Value> = serde_json::from_slice(body)
            .map_err(|e| format!("the body starts with `[` but is not a JSON array: {e}"))?;
        elements = values
            .iter()
            .map(|v| serde_json::to_vec(v).unwrap_or_default())
            .collect();
        elements.iter().map(Vec::as_slice).collect()
    } else {
        body.split(|&b| b == b'\n')
            .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
            .collect()
    };
    let mut decoder = super::LineDecoder::new(spec);
    let mut header_row = super::LineDecoder::header_row(spec);
    let mut out = Decoded::default();
    for line in lines {
        if line.is_empty()
            || (matches!(spec.format, Format::Json | Format::Syslog)
                && line.iter().all(u8::is_ascii_whitespace))
        {
            continue;
        }
        if line.len() > spec.max_line_bytes {
            let reason = format!(
                "record of {} bytes is longer than max_line_bytes ({}); `original` holds its first {} bytes",
                line.len(),
                spec.max_line_bytes,
                super::TOO_LONG_PREFIX.min(line.len())
            );
            if std::mem::take(&mut header_row) {
                decoder.no_header(format!("the header row: {reason}"));
            }
            out.rejected.push((
                reason,
                line[..super::TOO_LONG_PREFIX.min(line.len())].to_vec(),
            ));
            continue;
        }
        if std::mem::take(&mut header_row) {
            if let Err(reason) = decoder.set_header(spec, line) {
                out.rejected.push((reason, line.to_vec()));
            }
            continue;
        }
        match decoder.decode(spec, line) {
            Ok(event) => out.records.push(event.into_record(line)),
            Err(reason) => out.rejected.push((reason, line.to_vec())),
        }
    }
    Ok(out)
}

/// Why a request's records were not taken.
enum Refused {
    /// A queue it needs is full.
    Full,
    /// The pipeline stopped (a worker is gone): nothing was taken.
    Stopped(String),
    /// The records were taken, but the dead-letter sink stopped before it
    /// took the lines that could not be decoded.
    DeadLetter(String),
}

impl Shared {
    /// Hands a request's records to the partition queues, all or none (see
    /// the module doc), then its rejected lines to the dead-letter sink.
    fn enqueue(&self, decoded: Decoded) -> Result<(), Refused> {
        let Decoded { records, rejected } = decoded;
        let (accepted, refused) = (records.len() as u64, rejected.len() as u64);
        let mut queues = self.queues.lock().unwrap_or_else(|e| e.into_inner());
        let mut shares: Vec<Vec<Record>> = vec![Vec::new(); queues.senders.len()];
        for record in records {
            let key = (!record.key.is_empty()).then_some(record.key.as_slice());
            let p = queues.router.route(key);
            shares[p].push(record);
        }
        if shares
            .iter()
            .zip(&queues.senders)
            .any(|(share, tx)| !share.is_empty() && tx.is_full())
        {
            return Err(Refused::Full);
        }
        for (share, tx) in shares.into_iter().zip(&queues.senders) {
            if !share.is_empty() && tx.try_send(Chunk::Records(share.into())).is_err() {
                // Not full (it had room, and only we send): disconnected.
                return Err(Refused::Stopped("the pipeline has stopped".into()));
            }
        }
        self.stats
            .records_in
            .fetch_add(accepted + refused, Ordering::Relaxed);
        // Under the lock still: a delivery round sent after this request's
        // records is also after its dead letters.
        let dead: Vec<DeadRecord<'_>> = rejected
            .iter()
            .map(|(reason, line)| DeadRecord {
                stage: "source",
                plugin: None,
                partition: None,
                reason,
                key: &[],
                timestamp_ms: None,
                original: line,
            })
            .collect();
        if let Err(e) = self.dead_letter.send(&dead) {
            self.stats.failed.fetch_add(refused, Ordering::Relaxed);
            return Err(Refused::DeadLetter(format!("{e:#}")));
        }
        self.stats.rejected.fetch_add(refused, Ordering::Relaxed);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_tokens_are_compared_whole() {
        let with = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::AUTHORIZATION, v.parse().unwrap());
            h
        };
        assert!(bearer_matches(&with("Bearer s3cret"), "s3cret"));
        assert!(bearer_matches(&with("bearer s3cret"), "s3cret"));
        assert!(!bearer_matches(&with("Bearer s3cre"), "s3cret"));
        assert!(!bearer_matches(&with("Bearer s3cretX"), "s3cret"));
        assert!(!bearer_matches(&with("Basic s3cret"), "s3cret"));
        assert!(!bearer_matches(&HeaderMap::new(), "s3cret"));
    }
}
