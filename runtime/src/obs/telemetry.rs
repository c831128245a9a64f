//! OpenTelemetry export over OTLP/HTTP (protobuf), when `[daemon.telemetry]
//! otlp_endpoint` is set: a span per micro-batch with a child span per stage
//! (see [`crate::obs::metrics::BatchTimer`]), and every metric of the admin API's
//! `/metrics` under its OpenTelemetry name (`sluice.records.in`, …).
//!
//! The exporters run on the SDK's own threads (batch span processor, periodic
//! metric reader) and post with the daemon's blocking HTTP client
//! ([`crate::http_client`]): `http://` and `https://` collectors (TLS by
//! rustls; a private CA from `ca_file`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry_otlp::{Protocol, WithExportConfig as _, WithHttpConfig as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider};
use opentelemetry_sdk::trace::SdkTracerProvider;

use crate::obs::admin::AdminState;

use crate::obs::metrics::TRACES;

/// Whether OTLP export runs (configured and started): spans are made, and
/// the observable instruments registered.
pub fn enabled() -> bool {
    crate::obs::metrics::otlp_enabled()
}

/// Checks an `otlp_endpoint`: an `http://HOST:PORT` or `https://HOST:PORT`
/// URL with no path.
///
/// # Errors
/// Why it is not one, as a sentence.
pub fn check_endpoint(endpoint: &str) -> Result<(), String> {
    crate::http_client::check_url(endpoint)?;
    let rest = endpoint
        .strip_prefix("http://")
        .or_else(|| endpoint.strip_prefix("https://"))
        .unwrap_or(endpoint);
    let authority = rest.trim_end_matches('/');
    if authority.contains(['/', '?', '#']) {
        return Err(format!(
            "{endpoint:?} must be a base URL such as \"http://127.0.0.1:4318\" (the /v1/traces and /v1/metrics paths are added)"
        ));
    }
    Ok(())
}

/// The running exporters; [`Telemetry::shutdown`] flushes them.
#[derive(Debug)]
pub struct Telemetry {
    tracer: SdkTracerProvider,
    meter: SdkMeterProvider,
}

/// Starts the OTLP exporters to `endpoint` (checked by [`check_endpoint`])
/// and installs them as OpenTelemetry's global providers. Call it before the
/// topology is built: instruments and tracers are taken from the globals.
/// `ca_file`: a PEM file of the CAs that sign the collector's certificate
/// (`https://`), instead of Mozilla's roots.
///
/// # Errors
/// An exporter cannot be built; `ca_file` cannot be read.
pub fn init(
    endpoint: &str,
    export_interval: Duration,
    ca_file: Option<&std::path::Path>,
) -> anyhow::Result<Telemetry> {
    let base = endpoint.trim_end_matches('/');
    let http = Http(crate::http_client::agent(HTTP_TIMEOUT, ca_file)?);
    let resource = Resource::builder()
        .with_service_name("sluice")
        .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
        .build();
    let spans = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(http.clone())
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(format!("{base}/v1/traces"))
        .build()?;
    let tracer = SdkTracerProvider::builder()
        .with_batch_exporter(spans)
        .with_resource(resource.clone())
        .build();
    let metrics = opentelemetry_otlp::MetricExporter::builder()
        .with_http()
        .with_http_client(http.clone())
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(format!("{base}/v1/metrics"))
        .build()?;
    let reader = PeriodicReader::builder(metrics)
        .with_interval(export_interval)
        .build();
    let meter = SdkMeterProvider::builder()
        .with_reader(reader)
        .with_resource(resource)
        .build();
    opentelemetry::global::set_tracer_provider(tracer.clone());
    opentelemetry::global::set_meter_provider(meter.clone());
    TRACES.store(true, Ordering::Relaxed);
    tracing::info!("exporting traces and metrics over OTLP/HTTP to {base}");
    Ok(Telemetry { tracer, meter })
}

impl Telemetry {
    /// Exports what is left (spans, a last collection of the metrics) and
    /// stops the exporters. Blocks up to the exporters' timeouts.
    pub fn shutdown(self) {
        TRACES.store(false, Ordering::Relaxed);
        if let Err(e) = self.tracer.shutdown() {
            tracing::warn!("OTLP trace export at shutdown failed: {e}");
        }
        if let Err(e) = self.meter.shutdown() {
            tracing::warn!("OTLP metric export at shutdown failed: {e}");
        }
    }
}

/// Registers the counters and gauges the daemon keeps as atomics (pipeline
/// counters, plugin failures and memory, reloads) as observable instruments,
/// read at each export.
pub fn observe(admin: Arc<AdminState>) {
    use crate::obs::admin::COUNTERS;
    let meter = opentelemetry::global::meter("sluice");
    for (name, help) in COUNTERS {
        let state = admin.clone();
        // `records_in` → `sluice.records.in`; `batches` → `sluice.batches`.
        let otel_name = format!("sluice.{}", name.replace('_', "."));
        let unit = if name == "batches" {
            "{batch}"
        } else {
            "{record}"
        };
        meter
            .u64_observable_counter(otel_name)
            .with_unit(unit)
            .with_description(help)
            .with_callback(move |observer| {
                for (pipeline, stats, _) in state.pipelines.lock().expect("admin lock").iter() {
                    observer.observe(
                        crate::obs::admin::counter(stats, name),
                        &[KeyValue::new("pipeline", pipeline.clone())],
                    );
                }
            })
            .build();
    }
    type Read = fn(&crate::obs::metrics::PluginMetrics) -> u64;
    let plugin_counters: [(&str, &str, Read); 3] = [
        ("sluice.plugin.traps", "Plugin calls that trapped.", |p| {
            p.traps.load(Ordering::Relaxed)
        }),
        (
            "sluice.plugin.timeouts",
            "Plugin calls interrupted at their deadline.",
            |p| p.timeouts.load(Ordering::Relaxed),
        ),
        (
            "sluice.plugin.out_of_memory",
            "Plugin calls that hit the instance's memory limit.",
            |p| p.out_of_memory.load(Ordering::Relaxed),
        ),
    ];
    for (name, help, read) in plugin_counters {
        meter
            .u64_observable_counter(name)
            .with_unit("{call}")
            .with_description(help)
            .with_callback(move |observer| {
                for p in crate::obs::metrics::plugins() {
                    observer.observe(read(&p), &p.attributes());
                }
            })
            .build();
    }
    meter
        .u64_observable_gauge("sluice.plugin.memory.high_water")
        .with_unit("By")
        .with_description("The largest linear memory an instance of the plugin reached.")
        .with_callback(|observer| {
            for p in crate::obs::metrics::plugins() {
                observer.observe(p.memory_high_water.load(Ordering::Relaxed), &p.attributes());
            }
        })
        .build();
    for (name, _, unit, help, value) in crate::obs::metrics::KEYED_GAUGES {
        meter
            .u64_observable_gauge(name)
            .with_unit(unit)
            .with_description(help)
            .with_callback(move |observer| {
                for ((pipeline, stage, partition), g) in crate::obs::metrics::keyed_states() {
                    observer.observe(
                        value(&g),
                        &[
                            KeyValue::new("pipeline", pipeline),
                            KeyValue::new("stage", stage),
                            KeyValue::new("partition", partition as i64),
                        ],
                    );
                }
            })
            .build();
    }
    meter
        .u64_observable_gauge("sluice.plugin.breakers.open")
        .with_unit("{partition}")
        .with_description("Partitions whose circuit breaker for the plugin is open or half-open.")
        .with_callback(|observer| {
            for p in crate::obs::metrics::plugins() {
                observer.observe(p.breakers_open.load(Ordering::Relaxed), &p.attributes());
            }
        })
        .build();
    meter
        .u64_observable_counter("sluice.plugin.breaker.opened")
        .with_unit("{opening}")
        .with_description("Times a circuit breaker of the plugin opened.")
        .with_callback(|observer| {
            for p in crate::obs::metrics::plugins() {
                observer.observe(p.breaker_opened.load(Ordering::Relaxed), &p.attributes());
            }
        })
        .build();
    for (name, description, failures) in [
        (
            "sluice.plugin.reloads",
            "Plugin versions swapped in.",
            false,
        ),
        (
            "sluice.plugin.reload_failures",
            "Plugin files refused (the running version kept serving).",
            true,
        ),
    ] {
        let state = admin.clone();
        meter
            .u64_observable_counter(name)
            .with_unit("{reload}")
            .with_description(description)
            .with_callback(move |observer| {
                for p in crate::obs::admin::plugin_statuses(&state) {
                    let value = if failures {
                        p.reload_failures
                    } else {
                        p.reloads
                    };
                    observer.observe(value, &[KeyValue::new("plugin", p.name.clone())]);
                }
            })
            .build();
    }
    for (name, description, unit, new_producers) in [
        (
            "sluice.kafka.sink.resent",
            "Records a Kafka sink sent again after their delivery failed.",
            "{record}",
            false,
        ),
        (
            "sluice.kafka.sink.new_producers",
            "Producers a Kafka sink made to replace one that could not deliver.",
            "{producer}",
            true,
        ),
    ] {
        meter
            .u64_observable_counter(name)
            .with_unit(unit)
            .with_description(description)
            .with_callback(move |observer| {
                for (sink, resent, new) in crate::obs::metrics::kafka_sinks() {
                    let value = if new_producers { new } else { resent };
                    observer.observe(value, &[KeyValue::new("sink", sink)]);
                }
            })
            .build();
    }
    for (name, description, failures) in [
        ("sluice.config.reloads", "Config reloads applied.", false),
        (
            "sluice.config.reload_failures",
            "Config reloads refused (the running config stays).",
            true,
        ),
    ] {
        meter
            .u64_observable_counter(name)
            .with_unit("{reload}")
            .with_description(description)
            .with_callback(move |observer| {
                let r = crate::obs::metrics::registry();
                let counter = if failures {
                    &r.config_reload_failures
                } else {
                    &r.config_reloads
                };
                observer.observe(counter.load(Ordering::Relaxed), &[]);
            })
            .build();
    }
}

/// The exporters' HTTP client: the daemon's one client (see
/// [`crate::http_client`]), blocking, with TLS for `https://` collectors.
#[derive(Debug, Clone)]
struct Http(ureq::Agent);

/// The longest an export request may take (connect, send, answer).
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);

#[async_trait::async_trait]
impl opentelemetry_http::HttpClient for Http {
    async fn send_bytes(
        &self,
        request: opentelemetry_http::Request<opentelemetry_http::Bytes>,
    ) -> Result<
        opentelemetry_http::Response<opentelemetry_http::Bytes>,
        opentelemetry_http::HttpError,
    > {
        // The SDK calls this from its exporter threads (a blocking executor):
        // blocking I/O here blocks no async runtime.
        let url = request.uri().to_string();
        let result = post(&self.0, request);
        let failure = match &result {
            Ok(response) if response.status().is_success() => None,
            Ok(response) => Some(format!("HTTP {}", response.status())),
            Err(e) => Some(e.to_string()),
        };
        note_export(&url, failure);
        Ok(result?)
    }
}

/// Set while exports fail, so that a collector that is down costs one
/// warning, not one per export.
static FAILING: AtomicBool = AtomicBool::new(false);

/// Logs the first failed export (and the first success after failures).
fn note_export(url: &str, failure: Option<String>) {
    match failure {
        Some(why) if !FAILING.swap(true, Ordering::Relaxed) => tracing::warn!(
            "OTLP export to {url} failed: {why}; the pipelines run on, and further failures are not logged until an export succeeds"
        ),
        None if FAILING.swap(false, Ordering::Relaxed) => {
            tracing::info!("OTLP export to {url} works again")
        }
        _ => {}
    }
}

/// Sends `request` and reads the whole answer (at most 1 MiB of body: a
/// collector's answer is small).
fn post(
    agent: &ureq::Agent,
    request: opentelemetry_http::Request<opentelemetry_http::Bytes>,
) -> Result<opentelemetry_http::Response<opentelemetry_http::Bytes>, ureq::Error> {
    let (parts, body) = request.into_parts();
    let request = ureq::http::Request::from_parts(parts, body.to_vec());
    let mut response = agent.run(request)?;
    let body = response
        .body_mut()
        .with_config()
        .limit(1 << 20)
        .read_to_vec()?;
    let (parts, _) = response.into_parts();
    Ok(opentelemetry_http::Response::from_parts(
        parts,
        opentelemetry_http::Bytes::from(body),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        assert!(check_endpoint("http://127.0.0.1:4318").is_ok());
        assert!(check_endpoint("http://collector:4318/").is_ok());
        assert!(check_endpoint("https://collector:4318").is_ok());
        assert!(check_endpoint("ftp://collector:4318").is_err());
        assert!(check_endpoint("http://collector:4318/v1/traces").is_err());
        assert!(check_endpoint("http://").is_err());
    }
}
