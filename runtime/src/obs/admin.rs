//! The admin HTTP API (axum), on 127.0.0.1:9464 by default:
//!
//! | route | answer |
//! |---|---|
//! | `GET /` | 200: the web console to a browser (`Accept: text/html`, [`CONSOLE`]); else these routes, as text (a 404 lists them too) |
//! | `GET /health` | 200 `ok` while the process serves (liveness) |
//! | `GET /about` | JSON: `pid`, `config` and `state_dir` (absolute), `version`: which daemon answers (`sluice top --config` checks it) |
//! | `GET /ready` | 200 `ready` once every pipeline runs, 503 while starting, reloading or stopping |
//! | `GET /metrics` | Prometheus text format 0.0.4: per-pipeline counters and batch histograms, per-plugin call durations, failures, memory, reloads (see [`crate::obs::metrics`]) |
//! | `GET /pipelines` | JSON: each pipeline's counters, whether it runs, its watermark, batch durations, Kafka lag and flow |
//! | `GET /plugins` | JSON: each plugin file's status (as `status.json`) |
//! | `GET /sinks` | JSON: each sink's records written, write retries (a full disk), and whether it is blocked (cannot write or open: its pipelines wait) |
//! | `GET /stages` | JSON: each stage's plugin version, calls, p50/p99 call time, traps (see [`stages`]) |
//! | `GET /tap?pipeline=P&at=POINT` | NDJSON, streamed: a sample of the records passing a point of a pipeline (see [`crate::obs::tap`] and [`tap`]) |
//! | `POST /reload` | 202: reload the config, as SIGHUP does |
//!
//! Metric names follow Prometheus' conventions for OpenTelemetry-style
//! instruments: `sluice_` prefix, `_total` for counters, labels `pipeline`,
//! `plugin`. A port that cannot be bound is logged and the daemon runs on,
//! trying it again every 2 s ([`start`]).
//!
//! Hardening (the API has no authentication; it listens on loopback unless
//! `admin_allow_remote`):
//! - a request that changes something (any method but GET and HEAD, i.e.
//!   `POST /reload`) is refused with 403 unless its `Host` is an IP address,
//!   `localhost` or this machine's host name (a DNS-rebinding page sends its own
//!   name), and it carries no `Origin` other than `http://` + that `Host`, and
//!   no `Sec-Fetch-Site: cross-site` (a cross-site page's POST carries both);
//! - no route takes a body: a request declaring more than [`MAX_BODY`] bytes,
//!   or a chunked body, gets 413 without being read;
//! - one request per connection, its head read within [`HEAD_TIMEOUT`], the
//!   whole exchange within [`CONNECTION_TIMEOUT`]; at most [`MAX_CONNECTIONS`]
//!   at once (more are closed as they come, the longest-idle ones end by their
//!   timeouts).

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use crate::obs::metrics::label;
use crate::stats::Stats;
use crate::wasm::reload::PluginSlot;

/// What the admin API shows; the daemon keeps it current.
#[derive(Debug)]
pub struct AdminState {
    /// Every pipeline started: name, counters, whether it still runs.
    pub pipelines: Mutex<Vec<(String, Arc<Stats>, bool)>>,
    /// The plugin slots of the running config.
    pub plugins: Mutex<Vec<Arc<PluginSlot>>>,
    /// Every running sink: name and figures.
    pub sinks: Mutex<Vec<(String, Arc<crate::stats::SinkStats>)>>,
    /// The daemon's state folder, made absolute: which daemon this is (one
    /// per state folder), for `GET /about` and `sluice top --config`.
    pub state_dir: std::path::PathBuf,
    /// The config file the daemon started with, absolute.
    pub config_file: std::path::PathBuf,
    /// Every pipeline runs and no reload is under way.
    pub ready: AtomicBool,
    /// Where `POST /reload` sends its request (none: reload not available).
    pub reload: Option<tokio::sync::mpsc::UnboundedSender<&'static str>>,
    /// The bearer token a client off the loopback must show to tap records
    /// (`[daemon] admin_token_file`); none: such a client cannot tap.
    pub tap_token: Option<String>,
}

/// The answer to `GET /`, and the body of a 404.
pub const ROUTES: &str = "\
sluice admin API
GET  /health     200 ok while the daemon serves (liveness)
GET  /about      JSON: which daemon answers (pid, state folder, version)
GET  /ready      200 once every pipeline runs; 503 while starting, reloading or stopping
GET  /metrics    Prometheus text: pipeline, plugin and batch metrics
GET  /pipelines  JSON: each pipeline's counters, whether it runs, its watermark
GET  /plugins    JSON: each plugin file's status
GET  /sinks      JSON: each sink's records written, write retries, whether it is blocked
GET  /stages     JSON: each stage's plugin version, calls, p50/p99 call time, failures
GET  /tap        NDJSON, streamed: records passing a point (?pipeline=P&at=source|N:PLUGIN|window|sink:NAME|dead_letter
                 &partition=N&sample=N&limit=N&max_records=N&max_bytes=N&seconds=N)
POST /reload     202: reload the config, as SIGHUP
";

/// The largest request body declared (`Content-Length`) that is accepted; no
/// route reads one.
pub const MAX_BODY: u64 = 4096;
/// The request head (line and headers) must arrive within this from the connection's start.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(5);
/// A connection is closed this long after it was accepted, whatever it does.
pub const CONNECTION_TIMEOUT: Duration = Duration::from_secs(30);
/// Connections served at once; more are closed on accept.
pub const MAX_CONNECTIONS: usize = 64;

/// How often a busy admin address is tried again.
pub const RETRY_EVERY: Duration = Duration::from_secs(2);

/// Serves the API on `addr` ([`serve`]), logging `admin API listening on
/// ADDR`; when the address cannot be bound (another daemon there), logs why
/// and tries again every [`RETRY_EVERY`] in the background until it can.
pub async fn start(addr: SocketAddr, state: Arc<AdminState>) {
    let e = match serve(addr, state.clone()).await {
        Ok(bound) => {
            tracing::info!("admin API listening on {bound}");
            return;
        }
        Err(e) => e,
    };
    tracing::error!(
        "admin API not listening: cannot listen on {addr}: {e} (another daemon there? set [daemon] admin to another address, or \"off\"); trying again every {}s",
        RETRY_EVERY.as_secs()
    );
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(RETRY_EVERY).await;
            if let Ok(bound) = serve(addr, state.clone()).await {
                tracing::info!("admin API listening on {bound} (it was busy)");
                return;
            }
        }
    });
}

/// Binds `addr` and serves the API on the current tokio runtime; returns the
/// bound address (useful with port 0).
///
/// # Errors
/// The address cannot be bound.
pub async fn serve(addr: SocketAddr, state: Arc<AdminState>) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    tokio::spawn(crate::http_serve::serve(
        listener,
        router(state),
        LIMITS,
        "admin API".into(),
        std::future::pending(),
    ));
    Ok(bound)
}

/// The limits [`serve`] holds each connection to.
pub const LIMITS: crate::http_serve::Limits = crate::http_serve::Limits {
    head: HEAD_TIMEOUT,
    connection: CONNECTION_TIMEOUT,
    max_connections: MAX_CONNECTIONS,
    keep_alive: false,
};

/// The API's routes, behind the [`check`] of every request: what [`serve`]
/// serves on each connection (the fuzz target `admin` in fuzz/ feeds it
/// requests through [`crate::http_serve::serve_connection`]).
pub fn router(state: Arc<AdminState>) -> Router {
    Router::new()
        .route("/", get(root))
        .route("/health", get(|| async { "ok\n" }))
        .route("/about", get(about))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .route("/pipelines", get(pipelines))
        .route("/plugins", get(plugins))
        .route("/sinks", get(sinks))
        .route("/tap", get(tap))
        .route("/stages", get(stages))
        .route("/reload", post(reload))
        .fallback(|| async { (StatusCode::NOT_FOUND, format!("no such route\n\n{ROUTES}")) })
        .layer(axum::middleware::from_fn(guard))
        .with_state(state)
}

/// The checks every request passes before its route (see the module's doc).
async fn guard(request: Request, next: Next) -> Response {
    if let Err((status, why)) = check(request.method(), request.headers()) {
        let mut response = (status, format!("{why}\n")).into_response();
        response.headers_mut().insert(
            header::CONNECTION,
            header::HeaderValue::from_static("close"),
        );
        return response;
    }
    next.run(request).await
}

/// Whether a request with `method` and `headers` may go on; else the status
/// and the reason.
pub fn check(method: &Method, headers: &HeaderMap) -> Result<(), (StatusCode, String)> {
    let too_large = |what: &str| {
        Err((
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("{what}: no admin route takes a body larger than {MAX_BODY} bytes"),
        ))
    };
    for length in headers.get_all(header::CONTENT_LENGTH) {
        match length
            .to_str()
            .ok()
            .and_then(|l| l.trim().parse::<u64>().ok())
        {
            Some(n) if n <= MAX_BODY => {}
            _ => return too_large("Content-Length"),
        }
    }
    if headers.contains_key(header::TRANSFER_ENCODING) {
        return too_large("Transfer-Encoding");
    }
    if method == Method::GET || method == Method::HEAD {
        return Ok(());
    }
    let forbidden = |why: String| Err((StatusCode::FORBIDDEN, why));
    let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) else {
        return forbidden(format!("{method} needs a Host header"));
    };
    if !local_host(host) {
        return forbidden(format!(
            "{method} with Host {host:?}: only an IP address, localhost or this machine's name (see docs/operations/admin-api.md)"
        ));
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let same = origin
            .to_str()
            .is_ok_and(|o| o.eq_ignore_ascii_case(&format!("http://{host}")));
        if !same {
            return forbidden(format!(
                "{method} from the web page of another origin ({origin:?})"
            ));
        }
    }
    if headers
        .get("sec-fetch-site")
        .is_some_and(|s| s.as_bytes().eq_ignore_ascii_case(b"cross-site"))
    {
        return forbidden(format!("{method} from a cross-site web page"));
    }
    Ok(())
}

/// Whether the `Host` header value `host` (`NAME[:PORT]`) names this machine
/// by address: an IP address, `localhost`, or the kernel's host name.
fn local_host(host: &str) -> bool {
    let name = if let Some(v6) = host.strip_prefix('[') {
        match v6.split_once(']') {
            Some((addr, rest)) if rest.is_empty() || rest.starts_with(':') => {
                return addr.parse::<std::net::Ipv6Addr>().is_ok();
            }
            _ => return false,
        }
    } else {
        host.rsplit_once(':').map_or(host, |(name, _port)| name)
    };
    let name = name.strip_suffix('.').unwrap_or(name);
    if name.parse::<std::net::Ipv4Addr>().is_ok() || name.eq_ignore_ascii_case("localhost") {
        return true;
    }
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .is_ok_and(|h| !h.trim().is_empty() && h.trim().eq_ignore_ascii_case(name))
}

async fn about(State(state): State<Arc<AdminState>>) -> impl IntoResponse {
    axum::Json(serde_json::json!({
        "pid": std::process::id(),
        "state_dir": state.state_dir,
        "config": state.config_file,
        "version": env!("CARGO_PKG_VERSION"),
    }))
}

async fn ready(State(state): State<Arc<AdminState>>) -> impl IntoResponse {
    if state.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}

/// The pipeline counters: name (Prometheus adds `sluice_` and `_total`;
/// OpenTelemetry's name is `sluice.` and the name with dots) and help.
pub const COUNTERS: [(&str, &str); 12] = [
    ("records_in", "Records read by the pipeline's source."),
    (
        "records_out",
        "Records (or window rows) written and accepted by every sink of the pipeline.",
    ),
    (
        "records_unwritten",
        "Records (or window rows) handed to a sink that stopped before writing them.",
    ),
    ("records_rejected", "Records sent to the dead-letter sink."),
    ("records_skipped", "Records dropped by on_error = \"skip\"."),
    (
        "records_failed",
        "Records read but not processed because the pipeline stopped on an error.",
    ),
    (
        "records_late",
        "Records too late for every window they belong to, or older than a dedup stage's watermark.",
    ),
    (
        "records_dropped",
        "Records dropped because the pipeline was full and the source cannot wait (UDP).",
    ),
    (
        "records_duplicate",
        "Records a dedup stage dropped as duplicates.",
    ),
    (
        "records_unmatched",
        "Records an inner join dropped for want of a match in its table.",
    ),
    ("batches", "Micro-batches processed."),
    (
        "checkpoints",
        "Checkpoints committed (source position, window state, sink lengths).",
    ),
];

/// The value of the counter `name` (one of [`COUNTERS`]) in `stats`.
pub fn counter(stats: &Stats, name: &str) -> u64 {
    let c = match name {
        "records_in" => &stats.records_in,
        "records_out" => &stats.records_out,
        "records_unwritten" => &stats.unwritten,
        "records_rejected" => &stats.rejected,
        "records_skipped" => &stats.skipped,
        "records_failed" => &stats.failed,
        "records_late" => &stats.late,
        "records_dropped" => &stats.dropped,
        "records_duplicate" => &stats.duplicates,
        "records_unmatched" => &stats.unmatched,
        "checkpoints" => &stats.checkpoints,
        _ => &stats.batches,
    };
    c.load(Ordering::Relaxed)
}

async fn metrics(State(state): State<Arc<AdminState>>) -> impl IntoResponse {
    let mut text = String::new();
    let pipelines = state.pipelines.lock().expect("admin lock").clone();
    for (name, help) in COUNTERS {
        let _ = writeln!(text, "# HELP sluice_{name}_total {help}");
        let _ = writeln!(text, "# TYPE sluice_{name}_total counter");
        for (pipeline, stats, _) in &pipelines {
            let _ = writeln!(
                text,
                "sluice_{name}_total{{pipeline=\"{}\"}} {}",
                label(pipeline),
                counter(stats, name)
            );
        }
    }
    let _ = writeln!(
        text,
        "# HELP sluice_pipeline_watermark_seconds The window operator's watermark (event time, s since the epoch)."
    );
    let _ = writeln!(text, "# TYPE sluice_pipeline_watermark_seconds gauge");
    for (pipeline, stats, _) in &pipelines {
        let watermark = stats.watermark_ms.load(Ordering::Relaxed);
        if watermark != i64::MIN && watermark != i64::MAX {
            let _ = writeln!(
                text,
                "sluice_pipeline_watermark_seconds{{pipeline=\"{}\"}} {}",
                label(pipeline),
                watermark as f64 / 1000.0
            );
        }
    }
    let _ = writeln!(
        text,
        "# HELP sluice_pipeline_running Whether the pipeline runs (1) or ended (0)."
    );
    let _ = writeln!(text, "# TYPE sluice_pipeline_running gauge");
    for (pipeline, _, running) in &pipelines {
        let _ = writeln!(
            text,
            "sluice_pipeline_running{{pipeline=\"{}\"}} {}",
            label(pipeline),
            u8::from(*running)
        );
    }
    let plugins = plugin_statuses(&state);
    for (metric, help) in [
        ("plugin_reloads", "Plugin versions swapped in."),
        (
            "plugin_reload_failures",
            "Plugin files refused (the running version kept serving).",
        ),
    ] {
        let _ = writeln!(text, "# HELP sluice_{metric}_total {help}");
        let _ = writeln!(text, "# TYPE sluice_{metric}_total counter");
        for p in &plugins {
            let value = if metric == "plugin_reloads" {
                p.reloads
            } else {
                p.reload_failures
            };
            let _ = writeln!(
                text,
                "sluice_{metric}_total{{plugin=\"{}\"}} {value}",
                label(&p.name)
            );
        }
    }
    let _ = writeln!(
        text,
        "# HELP sluice_plugin_info The running version of each plugin (content hash)."
    );
    let _ = writeln!(text, "# TYPE sluice_plugin_info gauge");
    for p in &plugins {
        let _ = writeln!(
            text,
            "sluice_plugin_info{{plugin=\"{}\",version=\"{}\"}} 1",
            label(&p.name),
            label(&p.version)
        );
    }
    render_sinks(&state, &mut text);
    crate::obs::metrics::render_prometheus(&mut text);
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
}

/// The sinks' metrics, labelled `sink`.
fn render_sinks(state: &AdminState, text: &mut String) {
    let sinks = state.sinks.lock().expect("admin lock").clone();
    for (metric, kind, help) in [
        (
            "sink_records_written_total",
            "counter",
            "Records (or window rows) the sink wrote, from every pipeline.",
        ),
        (
            "sink_write_retries_total",
            "counter",
            "Writes tried again after a transient error (a full disk, a database or HTTP server away).",
        ),
        (
            "sink_records_refused_total",
            "counter",
            "Records the sink's destination refused for good (a constraint, an HTTP 4xx), sent to the dead-letter sink.",
        ),
        (
            "sink_blocked",
            "gauge",
            "1 while the sink cannot write (retrying, or its output not open yet): its pipelines wait.",
        ),
    ] {
        let _ = writeln!(text, "# HELP sluice_{metric} {help}");
        let _ = writeln!(text, "# TYPE sluice_{metric} {kind}");
        for (name, s) in &sinks {
            let value = match metric {
                "sink_records_written_total" => s.records_written.load(Ordering::Relaxed),
                "sink_write_retries_total" => s.write_retries.load(Ordering::Relaxed),
                "sink_records_refused_total" => s.records_refused.load(Ordering::Relaxed),
                _ => u64::from(s.blocked.load(Ordering::Relaxed)),
            };
            let _ = writeln!(text, "sluice_{metric}{{sink=\"{}\"}} {value}", label(name));
        }
    }
}

/// The web console (`console.html`, embedded): one page of plain HTML and
/// JavaScript that reads the JSON routes.
pub const CONSOLE: &str = include_str!("console.html");

/// `GET /`: the web console to a browser (`Accept: text/html`), the routes
/// as text to anything else (curl, scripts).
async fn root(headers: HeaderMap) -> Response {
    let html = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("text/html"));
    if html {
        (
            [
                (header::CONTENT_TYPE, "text/html; charset=utf-8"),
                (header::CACHE_CONTROL, "no-store"),
            ],
            CONSOLE,
        )
            .into_response()
    } else {
        ROUTES.into_response()
    }
}

/// The longest a tap streams, seconds (its default is 10 minutes).
pub const TAP_MAX_SECONDS: u64 = 24 * 3600;

/// `GET /tap`: streams, as NDJSON, a sample of the records passing a point of
/// a pipeline (see [`crate::obs::tap`] for the lines). Query parameters:
/// `pipeline` (may be left out when there is one), `at` (default `source`),
/// `partition`, `sample` (every N-th record, `N` or `1/N`; default 1),
/// `limit` (lines, then the answer ends), `max_records` a second (default
/// 100, at most 10,000), `max_bytes` a second (default 1 MiB), `seconds`
/// (the answer ends after it; default 600, at most a day). 400 for a
/// pipeline or point that does not exist (the message lists them); from a
/// client off the loopback (`admin_allow_remote`), 401 unless it shows
/// `Authorization: Bearer TOKEN` of `[daemon] admin_token_file` (records are
/// user data).
async fn tap(
    State(state): State<Arc<AdminState>>,
    axum::Extension(deadline): axum::Extension<crate::http_serve::ConnectionDeadline>,
    axum::Extension(peer): axum::Extension<crate::http_serve::Peer>,
    headers: HeaderMap,
    uri: axum::http::Uri,
) -> Response {
    use crate::obs::tap::{DEFAULT_MAX_BYTES, DEFAULT_MAX_RECORDS, LIMIT_MAX_RECORDS, Point};
    let bad = |message: String| (StatusCode::BAD_REQUEST, message + "\n").into_response();
    let remote = peer.0.is_some_and(|p| !p.ip().is_loopback());
    if remote {
        let shown = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        match &state.tap_token {
            Some(token)
                if shown.is_some_and(|s| constant_time_eq(s.as_bytes(), token.as_bytes())) => {}
            Some(_) => {
                return (
                    StatusCode::UNAUTHORIZED,
                    "a tap from off this machine needs `Authorization: Bearer TOKEN`, the token of [daemon] admin_token_file\n",
                )
                    .into_response();
            }
            None => {
                return (
                    StatusCode::FORBIDDEN,
                    "taps are for this machine only: set [daemon] admin_token_file to allow them from elsewhere with a token\n",
                )
                    .into_response();
            }
        }
    }
    let query = parse_query(uri.query().unwrap_or_default());
    let param = |name: &str| {
        query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let number = |name: &str, default: u64| -> Result<u64, String> {
        match param(name) {
            None => Ok(default),
            Some(v) => v
                .parse::<u64>()
                .map_err(|_| format!("`{name}` must be a whole number, not {v:?}")),
        }
    };
    let names: Vec<String> = (state.pipelines.lock().expect("admin lock").iter())
        .map(|(n, _, _)| n.clone())
        .collect();
    let pipeline = match param("pipeline") {
        Some(p) if names.iter().any(|n| n == p) => p.to_string(),
        None if names.len() == 1 => names[0].clone(),
        other => {
            return bad(format!(
                "{}: the pipelines are {}",
                other.map_or("give `pipeline`".into(), |p| format!("no pipeline {p:?}")),
                names.join(", ")
            ));
        }
    };
    let at = param("at").unwrap_or("source");
    let hub = crate::obs::tap::hub(&pipeline);
    let point = match Point::parse(at) {
        Ok(point) => point,
        Err(e) => {
            return bad(format!(
                "{e}; this pipeline's points: {}",
                hub.points().names().join(", ")
            ));
        }
    };
    if let Err(e) = hub.points().check(&point, at) {
        return bad(e);
    }
    let sample = match param("sample") {
        None => Ok(1),
        Some(v) => v
            .strip_prefix("1/")
            .unwrap_or(v)
            .parse::<u64>()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| format!("`sample` is N or 1/N (every N-th record), not {v:?}")),
    };
    let request = (|| {
        Ok::<_, String>(crate::obs::tap::TapRequest {
            point,
            partition: match param("partition") {
                None => None,
                Some(_) => Some(number("partition", 0)? as usize),
            },
            sample: sample?,
            limit: match param("limit") {
                None => None,
                Some(_) => Some(number("limit", 0)?.max(1)),
            },
            max_records: number("max_records", DEFAULT_MAX_RECORDS)?.clamp(1, LIMIT_MAX_RECORDS),
            max_bytes: number("max_bytes", DEFAULT_MAX_BYTES)?.max(1),
        })
    })();
    let request = match request {
        Ok(r) => r,
        Err(e) => return bad(e),
    };
    let seconds = match number("seconds", 600) {
        Ok(s) => s.clamp(1, TAP_MAX_SECONDS),
        Err(e) => return bad(e),
    };
    // The answer ends by itself after `seconds` (a whole chunked body, which
    // a client reads as a clean end); the connection's deadline, a little
    // later, is only the backstop.
    let seconds = Duration::from_secs(seconds);
    deadline.set(std::time::Instant::now() + seconds + Duration::from_secs(5));
    hub.prune();
    let lines = futures_util::StreamExt::take_until(
        hub.subscribe(request).into_stream(),
        tokio::time::sleep(seconds),
    );
    (
        [
            (header::CONTENT_TYPE, "application/x-ndjson"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        axum::body::Body::from_stream(lines),
    )
        .into_response()
}

/// `a` and `b` equal, in a time that does not depend on where they differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

/// The pairs of a query string (`a=1&b=x%3Ay`), percent- and `+`-decoded.
fn parse_query(query: &str) -> Vec<(String, String)> {
    let decode = |text: &str| {
        let bytes = text.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'+' => out.push(b' '),
                b'%' if i + 2 < bytes.len()
                    && bytes[i + 1].is_ascii_hexdigit()
                    && bytes[i + 2].is_ascii_hexdigit() =>
                {
                    let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("00");
                    out.push(u8::from_str_radix(hex, 16).unwrap_or(0));
                    i += 2;
                }
                b => out.push(b),
            }
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    };
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}

async fn sinks(State(state): State<Arc<AdminState>>) -> impl IntoResponse {
    let sinks = state.sinks.lock().expect("admin lock").clone();
    let list: Vec<serde_json::Value> = sinks
        .iter()
        .map(|(name, s)| {
            serde_json::json!({
                "sink": name,
                "records_written": s.records_written.load(Ordering::Relaxed),
                "write_retries": s.write_retries.load(Ordering::Relaxed),
                "records_refused": s.records_refused.load(Ordering::Relaxed),
                "blocked": s.blocked.load(Ordering::Relaxed),
            })
        })
        .collect();
    axum::Json(list)
}

async fn pipelines(State(state): State<Arc<AdminState>>) -> impl IntoResponse {
    let pipelines = state.pipelines.lock().expect("admin lock").clone();
    let list: Vec<serde_json::Value> = pipelines
        .iter()
        .map(|(name, stats, running)| {
            let mut obj = serde_json::Map::new();
            obj.insert("pipeline".into(), name.clone().into());
            obj.insert("running".into(), (*running).into());
            for (c, _) in COUNTERS {
                obj.insert(c.into(), counter(stats, c).into());
            }
            // Event time the window operator has reached (null: no windows,
            // or nothing seen yet).
            let watermark = stats.watermark_ms.load(Ordering::Relaxed);
            obj.insert(
                "watermark".into(),
                if watermark == i64::MIN {
                    serde_json::Value::Null
                } else {
                    crate::time::rfc3339(watermark).into()
                },
            );
            // Records per partition worker, and how uneven (see
            // `Stats::skew`; null with one partition or no record yet).
            let counts = stats.partition_counts();
            obj.insert(
                "skew".into(),
                crate::stats::Stats::skew(&counts).map_or(serde_json::Value::Null, |s| {
                    ((s * 100.0).round() / 100.0).into()
                }),
            );
            obj.insert("partition_records".into(), counts.into());
            // Its micro-batches' durations (the chain and the dead-letter
            // sink, see `PipelineMetrics::batch_duration`): count and sum
            // (seconds; a client takes the mean over an interval from two
            // readings) and p50/p99 (ms) since start.
            let m = crate::obs::metrics::pipeline(name);
            let ms = |q: f64| m.batch_duration.quantile(q).map(|s| s * 1000.0);
            obj.insert(
                "batch_duration".into(),
                serde_json::json!({
                    "count": m.batch_duration.count(),
                    "sum_seconds": m.batch_duration.sum(),
                    "p50_ms": ms(0.5),
                    "p99_ms": ms(0.99),
                }),
            );
            // A Kafka source's lag per assigned partition (records behind
            // the partition's end), from librdkafka's statistics.
            let lags = crate::obs::metrics::consumer_lags(name);
            if !lags.is_empty() {
                obj.insert(
                    "consumer_lag".into(),
                    lags.into_iter()
                        .map(|(topic, partition, lag)| {
                            serde_json::json!({"topic": topic, "partition": partition, "lag": lag})
                        })
                        .collect::<Vec<_>>()
                        .into(),
                );
            }
            // Its flow, as taps name the points: the stages' labels, whether
            // it has windows, its sinks and its dead-letter sink.
            let points = crate::obs::tap::hub(name).points();
            obj.insert(
                "flow".into(),
                serde_json::json!({
                    "stages": points.stages,
                    "window": points.window,
                    "sinks": points.sinks,
                    "dead_letter": points.dead_letter,
                }),
            );
            serde_json::Value::Object(obj)
        })
        .collect();
    axum::Json(list)
}

/// `GET /stages`: each (pipeline, stage, plugin version) that ran: calls,
/// their p50 and p99 duration (ms, estimated from the histogram's buckets as
/// Prometheus' `histogram_quantile`; null before the first call), traps,
/// timeouts and out-of-memory failures, the largest linear memory reached,
/// the partitions whose circuit breaker is open or half-open now
/// (`breakers_open`) and the times one opened (`breaker_opened`).
async fn stages() -> impl IntoResponse {
    let mut list: Vec<(Vec<String>, serde_json::Value)> = crate::obs::metrics::plugins()
        .iter()
        .map(|p| {
            let [pipeline, stage, plugin, version] = p.labels().clone();
            let ms = |q: f64| p.call_duration.quantile(q).map(|s| s * 1000.0);
            let value = serde_json::json!({
                "pipeline": pipeline,
                "stage": stage,
                "plugin": plugin,
                "version": version,
                "calls": p.call_duration.count(),
                "p50_ms": ms(0.5),
                "p99_ms": ms(0.99),
                "traps": p.traps.load(Ordering::Relaxed),
                "timeouts": p.timeouts.load(Ordering::Relaxed),
                "out_of_memory": p.out_of_memory.load(Ordering::Relaxed),
                "memory_high_water_bytes": p.memory_high_water.load(Ordering::Relaxed),
                "breakers_open": p.breakers_open.load(Ordering::Relaxed),
                "breaker_opened": p.breaker_opened.load(Ordering::Relaxed),
            });
            (vec![pipeline, stage, version], value)
        })
        .collect();
    list.sort_by(|a, b| a.0.cmp(&b.0));
    axum::Json(list.into_iter().map(|(_, v)| v).collect::<Vec<_>>())
}

async fn plugins(State(state): State<Arc<AdminState>>) -> impl IntoResponse {
    axum::Json(plugin_statuses(&state))
}

/// The status of each plugin of the running config.
pub fn plugin_statuses(state: &AdminState) -> Vec<crate::wasm::reload::PluginStatus> {
    state
        .plugins
        .lock()
        .expect("admin lock")
        .iter()
        .map(|s| s.status())
        .collect()
}

async fn reload(State(state): State<Arc<AdminState>>) -> impl IntoResponse {
    match &state.reload {
        Some(tx) if tx.send("POST /reload").is_ok() => (StatusCode::ACCEPTED, "reloading\n"),
        _ => (StatusCode::SERVICE_UNAVAILABLE, "reload is not available\n"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_strings_are_decoded() {
        assert_eq!(
            parse_query("pipeline=hourly&at=sink%3Aout&x=a+b&bad=%zz&end=%4"),
            [
                ("pipeline".into(), "hourly".into()),
                ("at".into(), "sink:out".into()),
                ("x".into(), "a b".into()),
                ("bad".into(), "%zz".into()),
                ("end".into(), "%4".into()),
            ]
        );
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }

    fn post(headers: &[(&'static str, &str)]) -> Result<(), StatusCode> {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.append(*name, value.parse().unwrap());
        }
        check(&Method::POST, &map).map_err(|(status, _)| status)
    }

    #[test]
    fn hosts_by_address_or_localhost_pass_names_do_not() {
        for host in [
            "127.0.0.1:9464",
            "127.0.0.1",
            "10.1.2.3:80",
            "localhost:9464",
            "LOCALHOST.:1",
            "[::1]:9464",
            "[::1]",
        ] {
            assert_eq!(post(&[("host", host)]), Ok(()), "{host}");
        }
        for host in [
            "evil.example:9464",
            "127.0.0.1.evil.example:9464",
            "localhost.evil.example",
            "[::1]x",
            "[evil]:1",
            "",
        ] {
            assert_eq!(
                post(&[("host", host)]),
                Err(StatusCode::FORBIDDEN),
                "{host}"
            );
        }
        assert_eq!(post(&[]), Err(StatusCode::FORBIDDEN));
    }

    #[test]
    fn only_the_same_origin_and_no_cross_site_fetch() {
        let host = ("host", "127.0.0.1:9464");
        assert_eq!(post(&[host, ("origin", "http://127.0.0.1:9464")]), Ok(()));
        assert_eq!(post(&[host, ("sec-fetch-site", "same-origin")]), Ok(()));
        for (name, value) in [
            ("origin", "http://evil.example"),
            ("origin", "null"),
            ("origin", "http://127.0.0.1:9465"),
            ("sec-fetch-site", "cross-site"),
        ] {
            assert_eq!(
                post(&[host, (name, value)]),
                Err(StatusCode::FORBIDDEN),
                "{name}: {value}"
            );
        }
        // GET is not checked: scrapers use whatever name they were given.
        let mut map = HeaderMap::new();
        map.insert("host", "metrics.example".parse().unwrap());
        map.insert("origin", "http://evil.example".parse().unwrap());
        assert!(check(&Method::GET, &map).is_ok());
    }

    #[test]
    fn bodies_are_bounded_for_every_method() {
        let host = ("host", "127.0.0.1:9464");
        assert_eq!(post(&[host, ("content-length", "4096")]), Ok(()));
        for (name, value) in [
            ("content-length", "4097"),
            ("content-length", "10000000000"),
            ("content-length", "-1"),
            ("content-length", "x"),
            ("transfer-encoding", "chunked"),
        ] {
            assert_eq!(
                post(&[host, (name, value)]),
                Err(StatusCode::PAYLOAD_TOO_LARGE),
                "{name}: {value}"
            );
        }
        let mut map = HeaderMap::new();
        map.insert("content-length", "5000".parse().unwrap());
        assert_eq!(
            check(&Method::GET, &map).map_err(|(s, _)| s),
            Err(StatusCode::PAYLOAD_TOO_LARGE)
        );
    }
}
