//! The admin HTTP API (axum), on 127.0.0.1:9464 by default:
//!
//! | route | answer |
//! |---|---|
//! | `GET /health` | 200 `ok` while the process serves (liveness) |
//! | `GET /ready` | 200 `ready` once every pipeline runs, 503 while starting, reloading or stopping |
//! | `GET /metrics` | Prometheus text format 0.0.4: per-pipeline counters and batch histograms, per-plugin call durations, failures, memory, reloads (see [`crate::obs::metrics`]) |
//! | `GET /pipelines` | JSON: each pipeline's counters and whether it runs |
//! | `GET /plugins` | JSON: each plugin file's status (as `status.json`) |
//! | `POST /reload` | 202: reload the config, as SIGHUP does |
//!
//! Metric names follow Prometheus' conventions for OpenTelemetry-style
//! instruments: `sluice_` prefix, `_total` for counters, labels `pipeline`,
//! `plugin`. A port that cannot be bound is logged and the daemon runs on.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
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
    /// Every pipeline runs and no reload is under way.
    pub ready: AtomicBool,
    /// Where `POST /reload` sends its request (none: reload not available).
    pub reload: Option<tokio::sync::mpsc::UnboundedSender<&'static str>>,
}

/// Binds `addr` and serves the API on the current tokio runtime; returns the
/// bound address (useful with port 0).
///
/// # Errors
/// The address cannot be bound.
pub async fn serve(addr: SocketAddr, state: Arc<AdminState>) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let app = Router::new()
        .route("/health", get(|| async { "ok\n" }))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .route("/pipelines", get(pipelines))
        .route("/plugins", get(plugins))
        .route("/reload", post(reload))
        .with_state(state);
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!("admin API stopped: {e}");
        }
    });
    Ok(bound)
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
pub const COUNTERS: [(&str, &str); 9] = [
    ("records_in", "Records read by the pipeline's source."),
    (
        "records_out",
        "Records (or window rows) written to the sinks.",
    ),
    ("records_rejected", "Records sent to the dead-letter sink."),
    ("records_skipped", "Records dropped by on_error = \"skip\"."),
    (
        "records_failed",
        "Records read but not processed because the pipeline stopped on an error.",
    ),
    (
        "records_late",
        "Records too late for every window they belong to.",
    ),
    (
        "records_dropped",
        "Records dropped because the pipeline was full and the source cannot wait (UDP).",
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
        "records_rejected" => &stats.rejected,
        "records_skipped" => &stats.skipped,
        "records_failed" => &stats.failed,
        "records_late" => &stats.late,
        "records_dropped" => &stats.dropped,
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
    crate::obs::metrics::render_prometheus(&mut text);
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
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
            serde_json::Value::Object(obj)
        })
        .collect();
    axum::Json(list)
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
