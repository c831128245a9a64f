//! The daemon's metrics beyond the pipeline counters ([`crate::stats::Stats`]):
//! batch size and duration per pipeline, plugin call duration, failures and
//! memory per plugin version, config reloads.
//!
//! Every instrument is kept here (atomics, fixed histogram buckets) for the
//! admin API's Prometheus `/metrics`, which needs no collector; histograms are
//! also recorded into the OpenTelemetry SDK's instruments, which only export
//! when OTLP is configured (see [`crate::obs::telemetry`]; otherwise they are the
//! API's no-op). Names follow OpenTelemetry's conventions
//! (`sluice.batch.duration`, unit `s`), and their Prometheus form follows the
//! OpenTelemetry-to-Prometheus rules (`sluice_batch_duration_seconds`,
//! `_total` for counters).
//!
//! The registry is process-wide: a daemon is one process, and a stage or a
//! worker finds its instruments by name without threading them through every
//! constructor.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Instant;

use opentelemetry::KeyValue;
use opentelemetry::trace::{Span as _, TraceContextExt as _, Tracer as _};

/// Bucket bounds of durations, in seconds (OpenTelemetry's default bounds
/// scaled to seconds: 5 ms … 10 s, plus finer ones below 5 ms for fast plugins).
pub const DURATION_BOUNDS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75,
    1.0, 2.5, 5.0, 7.5, 10.0,
];

/// Bucket bounds of batch sizes, in records.
pub const SIZE_BOUNDS: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0, 4096.0, 8192.0,
    16384.0, 65536.0,
];

/// A histogram with fixed buckets: cumulative counts for Prometheus, and the
/// matching OpenTelemetry instrument.
pub struct Histogram {
    bounds: &'static [f64],
    /// Observations ≤ `bounds[i]` and > `bounds[i-1]`; the last one is `+Inf`.
    buckets: Box<[AtomicU64]>,
    count: AtomicU64,
    /// The sum of the observations, as `f64` bits.
    sum: AtomicU64,
    otel: opentelemetry::metrics::Histogram<f64>,
    attributes: Vec<KeyValue>,
}

impl std::fmt::Debug for Histogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Histogram")
            .field("count", &self.count.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl Histogram {
    fn new(
        name: &'static str,
        unit: &'static str,
        description: &'static str,
        bounds: &'static [f64],
        attributes: Vec<KeyValue>,
    ) -> Self {
        let otel = opentelemetry::global::meter("sluice")
            .f64_histogram(name)
            .with_unit(unit)
            .with_description(description)
            .with_boundaries(bounds.to_vec())
            .build();
        Histogram {
            bounds,
            buckets: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            sum: AtomicU64::new(0f64.to_bits()),
            otel,
            attributes,
        }
    }

    /// Records one observation (in the instrument's unit).
    pub fn observe(&self, value: f64) {
        let i = self.bounds.partition_point(|b| *b < value);
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
        let _ = self
            .sum
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| {
                Some((f64::from_bits(bits) + value).to_bits())
            });
        self.otel.record(value, &self.attributes);
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// The sum of the observations so far.
    pub fn sum(&self) -> f64 {
        f64::from_bits(self.sum.load(Ordering::Relaxed))
    }

    /// The `q`-quantile (0–1) of the observations, estimated as Prometheus'
    /// `histogram_quantile` does: linear within the bucket it falls in (the
    /// first bucket from 0; in the last, open one, its lower bound). `None`
    /// without observations.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let counts: Vec<u64> = (self.buckets.iter())
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = q.clamp(0.0, 1.0) * total as f64;
        let mut below = 0u64;
        for (i, &n) in counts.iter().enumerate() {
            if n > 0 && (below + n) as f64 >= rank {
                let lower = if i == 0 { 0.0 } else { self.bounds[i - 1] };
                let Some(&upper) = self.bounds.get(i) else {
                    return Some(lower);
                };
                let within = (rank - below as f64) / n as f64;
                return Some(lower + (upper - lower) * within.clamp(0.0, 1.0));
            }
            below += n;
        }
        self.bounds.last().copied()
    }

    /// Writes the `_bucket`, `_sum` and `_count` series of `name` with the
    /// (already rendered) `labels`, e.g. `pipeline="p"`.
    fn render(&self, text: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0;
        for (i, bucket) in self.buckets.iter().enumerate() {
            cumulative += bucket.load(Ordering::Relaxed);
            let le = match self.bounds.get(i) {
                Some(b) => b.to_string(),
                None => "+Inf".to_string(),
            };
            let _ = writeln!(
                text,
                "{name}_bucket{{{labels}{sep}le=\"{le}\"}} {cumulative}"
            );
        }
        let _ = writeln!(text, "{name}_sum{{{labels}}} {}", self.sum());
        let _ = writeln!(text, "{name}_count{{{labels}}} {}", self.count());
    }
}

/// One pipeline's batch instruments, and its tracer when traces are exported.
pub struct PipelineMetrics {
    /// The pipeline.
    pub pipeline: String,
    /// `sluice.batch.size`: records per micro-batch (its input).
    pub batch_size: Histogram,
    /// `sluice.batch.duration` (s): the processor chain and the dead-letter
    /// sink, up to the hand-off to the sinks (or the window operator).
    pub batch_duration: Histogram,
    /// `sluice.checkpoint.duration` (s): from the barrier to the commit (the
    /// source is paused meanwhile).
    pub checkpoint_duration: Histogram,
    tracer: Option<opentelemetry::global::BoxedTracer>,
}

impl std::fmt::Debug for PipelineMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PipelineMetrics")
            .field("pipeline", &self.pipeline)
            .field("batch_size", &self.batch_size)
            .field("batch_duration", &self.batch_duration)
            .field("traced", &self.tracer.is_some())
            .finish()
    }
}

/// One plugin version's instruments in one stage of one pipeline.
#[derive(Debug)]
pub struct PluginMetrics {
    /// `pipeline`, `stage`, `plugin`, `version`.
    labels: [String; 4],
    /// `sluice.plugin.call.duration` (s): each `process` call, bisection
    /// retries included.
    pub call_duration: Histogram,
    /// `sluice.plugin.traps`: calls that trapped (panic, out-of-bounds, …).
    pub traps: AtomicU64,
    /// `sluice.plugin.timeouts`: calls interrupted at their deadline.
    pub timeouts: AtomicU64,
    /// `sluice.plugin.out_of_memory`: calls that hit the memory limit.
    pub out_of_memory: AtomicU64,
    /// `sluice.plugin.memory.high_water` (By): the largest linear memory any
    /// instance of this version reached.
    pub memory_high_water: AtomicU64,
    /// `sluice.plugin.breakers.open`: partitions whose circuit breaker for
    /// this version is open or half-open now (a gauge, 0 to `partitions`).
    pub breakers_open: AtomicU64,
    /// `sluice.plugin.breaker.opened`: times a breaker of this version
    /// opened (or opened again after a failed trial batch).
    pub breaker_opened: AtomicU64,
}

impl PluginMetrics {
    /// Counts a failed call by its kind (plugin errors and malformed outputs
    /// are the plugin's answers, not failures of the instance: not counted).
    pub fn count_failure(&self, error: &crate::wasm::plugin::CallError) {
        use crate::wasm::plugin::CallError;
        let counter = match error {
            CallError::Trap(_) => &self.traps,
            CallError::Timeout(_) => &self.timeouts,
            CallError::OutOfMemory(_) => &self.out_of_memory,
            CallError::Plugin(_) | CallError::Malformed(_) => return,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Raises the memory high-water mark to `bytes` if higher.
    pub fn memory(&self, bytes: u64) {
        self.memory_high_water.fetch_max(bytes, Ordering::Relaxed);
    }

    /// The series' `pipeline`, `stage`, `plugin` and `version`.
    pub fn labels(&self) -> &[String; 4] {
        &self.labels
    }

    /// The OpenTelemetry attributes of this series.
    pub fn attributes(&self) -> Vec<KeyValue> {
        attributes(&self.labels)
    }
}

fn attributes(labels: &[String; 4]) -> Vec<KeyValue> {
    ["pipeline", "stage", "plugin", "version"]
        .iter()
        .zip(labels)
        .map(|(k, v)| KeyValue::new(*k, v.clone()))
        .collect()
}

/// The process-wide registry.
#[derive(Debug, Default)]
pub struct Registry {
    pipelines: Mutex<BTreeMap<String, Arc<PipelineMetrics>>>,
    plugins: Mutex<BTreeMap<[String; 4], Arc<PluginMetrics>>>,
    /// `sluice.config.reloads`: config reloads applied.
    pub config_reloads: AtomicU64,
    /// `sluice.config.reload_failures`: config reloads refused.
    pub config_reload_failures: AtomicU64,
    /// `sluice.consumer.lag`: per (pipeline, topic, partition) of a Kafka
    /// source, the records between its position and the partition's end.
    consumer_lag: Mutex<BTreeMap<(String, String, i32), i64>>,
    /// Per Kafka sink: `sluice.kafka.sink.resent` (records sent again after
    /// their delivery failed) and `sluice.kafka.sink.new_producers` (producers
    /// made to replace one that could not deliver).
    kafka_sinks: Mutex<BTreeMap<String, [u64; 2]>>,
    /// Per (pipeline, stage, partition) of a keyed stage: see
    /// [`KeyedStateGauges`].
    keyed: Mutex<BTreeMap<(String, String, usize), KeyedStateGauges>>,
}

/// A keyed stage's state on one partition worker (every Kafka partition it
/// holds together), as last reported (at most once a second).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KeyedStateGauges {
    /// `sluice.keyed.keys`: keys with a state, in memory and spilled.
    pub keys: u64,
    /// `sluice.keyed.spilled_keys`: keys whose state is on disk only.
    pub spilled_keys: u64,
    /// `sluice.keyed.memory` (By): bytes counted against `state_memory`.
    pub memory_bytes: u64,
    /// `sluice.keyed.timers`: timers set, both domains.
    pub timers: u64,
    /// `sluice.keyed.spill_failed`: 1 once the spill file failed.
    pub spill_failed: u64,
}

/// Sets a keyed stage's gauges on one partition.
pub fn keyed_state(pipeline: &str, stage: &str, partition: usize, gauges: KeyedStateGauges) {
    REGISTRY
        .keyed
        .lock()
        .expect("metrics lock")
        .insert((pipeline.to_string(), stage.to_string(), partition), gauges);
}

/// Every keyed stage's gauges: ((pipeline, stage, partition), gauges).
pub fn keyed_states() -> Vec<((String, String, usize), KeyedStateGauges)> {
    REGISTRY
        .keyed
        .lock()
        .expect("metrics lock")
        .iter()
        .map(|(k, v)| (k.clone(), *v))
        .collect()
}

/// One keyed gauge: (OpenTelemetry name, Prometheus name, unit, help, which
/// field).
pub type KeyedGauge = (
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    fn(&KeyedStateGauges) -> u64,
);

/// The keyed gauges.
pub const KEYED_GAUGES: [KeyedGauge; 5] = [
    (
        "sluice.keyed.keys",
        "sluice_keyed_keys",
        "{key}",
        "Keys with a state in a keyed stage's partition, in memory and spilled.",
        |g| g.keys,
    ),
    (
        "sluice.keyed.spilled_keys",
        "sluice_keyed_spilled_keys",
        "{key}",
        "Keys whose state a keyed stage's partition holds on disk only (past state_memory).",
        |g| g.spilled_keys,
    ),
    (
        "sluice.keyed.memory",
        "sluice_keyed_memory_bytes",
        "By",
        "Bytes of keyed state held in memory, counted against state_memory.",
        |g| g.memory_bytes,
    ),
    (
        "sluice.keyed.timers",
        "sluice_keyed_timers",
        "{timer}",
        "Timers set in a keyed stage's partition, both domains.",
        |g| g.timers,
    ),
    (
        "sluice.keyed.spill_failed",
        "sluice_keyed_spill_failed",
        "1",
        "1 once a keyed stage's spill file failed on this partition.",
        |g| g.spill_failed,
    ),
];

/// Counts `records` a Kafka sink sends again after their delivery failed.
pub fn kafka_sink_resent(sink: &str, records: u64) {
    let mut sinks = REGISTRY.kafka_sinks.lock().expect("metrics lock");
    sinks.entry(sink.to_string()).or_default()[0] += records;
}

/// Counts a producer a Kafka sink made to replace one that could not deliver.
pub fn kafka_sink_new_producer(sink: &str) {
    let mut sinks = REGISTRY.kafka_sinks.lock().expect("metrics lock");
    sinks.entry(sink.to_string()).or_default()[1] += 1;
}

/// Each Kafka sink that sent records again: (sink, records sent again, new
/// producers).
pub fn kafka_sinks() -> Vec<(String, u64, u64)> {
    REGISTRY
        .kafka_sinks
        .lock()
        .expect("metrics lock")
        .iter()
        .map(|(sink, [resent, new])| (sink.clone(), *resent, *new))
        .collect()
}

/// Records a Kafka partition's consumer lag (records), from librdkafka's
/// statistics (`consumer_lag`: high watermark − position).
pub fn consumer_lag(pipeline: &str, topic: &str, partition: i32, lag: i64) {
    REGISTRY
        .consumer_lag
        .lock()
        .expect("metrics lock")
        .insert((pipeline.to_string(), topic.to_string(), partition), lag);
}

/// Forgets a partition's lag (it was revoked: another daemon reads it now).
pub fn forget_consumer_lag(pipeline: &str, topic: &str, partition: i32) {
    REGISTRY
        .consumer_lag
        .lock()
        .expect("metrics lock")
        .remove(&(pipeline.to_string(), topic.to_string(), partition));
}

/// The consumer lag of each Kafka partition `pipeline` reads: (topic,
/// partition, records).
pub fn consumer_lags(pipeline: &str) -> Vec<(String, i32, i64)> {
    REGISTRY
        .consumer_lag
        .lock()
        .expect("metrics lock")
        .iter()
        .filter(|((p, _, _), _)| p == pipeline)
        .map(|((_, t, part), lag)| (t.clone(), *part, *lag))
        .collect()
}

static REGISTRY: LazyLock<Registry> = LazyLock::new(Registry::default);

/// The process-wide registry.
pub fn registry() -> &'static Registry {
    &REGISTRY
}

/// The instruments of `pipeline` (made on first use).
pub fn pipeline(name: &str) -> Arc<PipelineMetrics> {
    let mut pipelines = REGISTRY.pipelines.lock().expect("metrics lock");
    pipelines
        .entry(name.to_string())
        .or_insert_with(|| {
            let attrs = vec![KeyValue::new("pipeline", name.to_string())];
            Arc::new(PipelineMetrics {
                pipeline: name.to_string(),
                batch_size: Histogram::new(
                    "sluice.batch.size",
                    "{record}",
                    "Records per micro-batch.",
                    SIZE_BOUNDS,
                    attrs.clone(),
                ),
                batch_duration: Histogram::new(
                    "sluice.batch.duration",
                    "s",
                    "Time to run a micro-batch through the processor chain, up to its hand-off to the sinks.",
                    DURATION_BOUNDS,
                    attrs.clone(),
                ),
                checkpoint_duration: Histogram::new(
                    "sluice.checkpoint.duration",
                    "s",
                    "Time from a checkpoint's barrier to its commit (the source waits meanwhile).",
                    DURATION_BOUNDS,
                    attrs,
                ),
                tracer: otlp_enabled()
                    .then(|| opentelemetry::global::tracer("sluice")),
            })
        })
        .clone()
}

/// The instruments of `plugin` at `version` in `stage` of `pipeline` (made on
/// first use).
pub fn plugin(pipeline: &str, stage: &str, plugin: &str, version: &str) -> Arc<PluginMetrics> {
    let labels = [pipeline, stage, plugin, version].map(str::to_string);
    let mut plugins = REGISTRY.plugins.lock().expect("metrics lock");
    plugins
        .entry(labels.clone())
        .or_insert_with(|| {
            Arc::new(PluginMetrics {
                call_duration: Histogram::new(
                    "sluice.plugin.call.duration",
                    "s",
                    "Duration of each call of a plugin's `process`.",
                    DURATION_BOUNDS,
                    attributes(&labels),
                ),
                labels,
                traps: AtomicU64::new(0),
                timeouts: AtomicU64::new(0),
                out_of_memory: AtomicU64::new(0),
                memory_high_water: AtomicU64::new(0),
                breakers_open: AtomicU64::new(0),
                breaker_opened: AtomicU64::new(0),
            })
        })
        .clone()
}

/// Every plugin's instruments, by (pipeline, stage, plugin, version).
pub fn plugins() -> Vec<Arc<PluginMetrics>> {
    REGISTRY
        .plugins
        .lock()
        .expect("metrics lock")
        .values()
        .cloned()
        .collect()
}

/// A micro-batch being processed: records its size now, and its duration and
/// span when dropped.
#[must_use = "the batch is timed until this is dropped"]
pub struct BatchTimer {
    metrics: Arc<PipelineMetrics>,
    started: Instant,
    /// The batch span's context (traces exported only).
    context: Option<opentelemetry::Context>,
}

impl std::fmt::Debug for BatchTimer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchTimer")
            .field("pipeline", &self.metrics.pipeline)
            .finish_non_exhaustive()
    }
}

impl PipelineMetrics {
    /// Starts timing a batch of `records` records on `partition`; with traces
    /// exported, opens its `batch` span.
    pub fn start_batch(self: &Arc<Self>, partition: usize, records: usize) -> BatchTimer {
        self.batch_size.observe(records as f64);
        let context = self.tracer.as_ref().map(|tracer| {
            let span = tracer
                .span_builder("batch")
                .with_attributes([
                    KeyValue::new("pipeline", self.pipeline.clone()),
                    KeyValue::new("partition", partition as i64),
                    KeyValue::new("records", records as i64),
                ])
                .start(tracer);
            opentelemetry::Context::current_with_span(span)
        });
        BatchTimer {
            metrics: self.clone(),
            started: Instant::now(),
            context,
        }
    }
}

/// A stage's span, a child of its batch's; ends when dropped.
pub struct StageSpan(Option<opentelemetry::global::BoxedSpan>);

impl std::fmt::Debug for StageSpan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("StageSpan").field(&self.0.is_some()).finish()
    }
}

impl BatchTimer {
    /// Opens the child span of one stage (traces exported only), named after
    /// the stage (`stage 0:identity`).
    pub fn stage(&self, label: &str) -> StageSpan {
        let (Some(tracer), Some(parent)) = (&self.metrics.tracer, &self.context) else {
            return StageSpan(None);
        };
        let span = tracer
            .span_builder(format!("stage {label}"))
            .with_attributes([KeyValue::new("stage", label.to_string())])
            .start_with_context(tracer, parent);
        StageSpan(Some(span))
    }

    /// Marks the batch span as failed, with `error`.
    pub fn fail(&self, error: &str) {
        if let Some(cx) = &self.context {
            cx.span()
                .set_status(opentelemetry::trace::Status::error(error.to_string()));
        }
    }
}

impl StageSpan {
    /// Names the plugin version that ran the stage (`plugin`, `version`).
    pub fn plugin(&mut self, plugin: &crate::wasm::plugin::Plugin) {
        if let Some(span) = &mut self.0 {
            span.set_attribute(KeyValue::new("plugin", plugin.name.clone()));
            span.set_attribute(KeyValue::new("version", plugin.version.clone()));
        }
    }

    /// Marks the stage span as failed, with `error`.
    pub fn fail(&mut self, error: &str) {
        if let Some(span) = &mut self.0 {
            span.set_status(opentelemetry::trace::Status::error(error.to_string()));
        }
    }
}

impl Drop for StageSpan {
    fn drop(&mut self) {
        if let Some(span) = &mut self.0 {
            span.end();
        }
    }
}

impl Drop for BatchTimer {
    fn drop(&mut self) {
        self.metrics
            .batch_duration
            .observe(self.started.elapsed().as_secs_f64());
        if let Some(cx) = &self.context {
            cx.span().end();
        }
    }
}

/// A Prometheus label value, escaped (`\`, `"`, line feed).
pub fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn help(text: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(text, "# HELP {name} {help}");
    let _ = writeln!(text, "# TYPE {name} {kind}");
}

/// Appends this registry's series to a Prometheus text exposition.
pub fn render_prometheus(text: &mut String) {
    let pipelines: Vec<_> = REGISTRY
        .pipelines
        .lock()
        .expect("metrics lock")
        .values()
        .cloned()
        .collect();
    help(
        text,
        "sluice_batch_size",
        "histogram",
        "Records per micro-batch.",
    );
    for p in &pipelines {
        p.batch_size.render(
            text,
            "sluice_batch_size",
            &format!("pipeline=\"{}\"", label(&p.pipeline)),
        );
    }
    help(
        text,
        "sluice_batch_duration_seconds",
        "histogram",
        "Time to run a micro-batch through the processor chain, up to its hand-off to the sinks.",
    );
    for p in &pipelines {
        p.batch_duration.render(
            text,
            "sluice_batch_duration_seconds",
            &format!("pipeline=\"{}\"", label(&p.pipeline)),
        );
    }
    help(
        text,
        "sluice_checkpoint_duration_seconds",
        "histogram",
        "Time from a checkpoint's barrier to its commit (the source waits meanwhile).",
    );
    for p in &pipelines {
        p.checkpoint_duration.render(
            text,
            "sluice_checkpoint_duration_seconds",
            &format!("pipeline=\"{}\"", label(&p.pipeline)),
        );
    }
    help(
        text,
        "sluice_consumer_lag",
        "gauge",
        "Records between a Kafka source group's committed offset and its partition's end (librdkafka statistics, each second).",
    );
    for ((pipeline, topic, partition), lag) in
        REGISTRY.consumer_lag.lock().expect("metrics lock").iter()
    {
        let _ = writeln!(
            text,
            "sluice_consumer_lag{{pipeline=\"{}\",topic=\"{}\",partition=\"{partition}\"}} {lag}",
            label(pipeline),
            label(topic)
        );
    }
    let keyed = keyed_states();
    for (_, name, _, what, value) in KEYED_GAUGES {
        help(text, name, "gauge", what);
        for ((pipeline, stage, partition), g) in &keyed {
            let _ = writeln!(
                text,
                "{name}{{pipeline=\"{}\",stage=\"{}\",partition=\"{partition}\"}} {}",
                label(pipeline),
                label(stage),
                value(g)
            );
        }
    }
    let kafka_sinks = kafka_sinks();
    for (name, what, value) in [
        (
            "sluice_kafka_sink_resent_total",
            "Records a Kafka sink sent again after their delivery failed.",
            (|s: &(String, u64, u64)| s.1) as fn(&(String, u64, u64)) -> u64,
        ),
        (
            "sluice_kafka_sink_new_producers_total",
            "Producers a Kafka sink made to replace one that could not deliver (fenced, unknown producer id, …).",
            |s| s.2,
        ),
    ] {
        help(text, name, "counter", what);
        for s in &kafka_sinks {
            let _ = writeln!(text, "{name}{{sink=\"{}\"}} {}", label(&s.0), value(s));
        }
    }
    let plugins = plugins();
    let labels = |p: &PluginMetrics| {
        format!(
            "pipeline=\"{}\",stage=\"{}\",plugin=\"{}\",version=\"{}\"",
            label(&p.labels[0]),
            label(&p.labels[1]),
            label(&p.labels[2]),
            label(&p.labels[3])
        )
    };
    help(
        text,
        "sluice_plugin_call_duration_seconds",
        "histogram",
        "Duration of each call of a plugin's `process`.",
    );
    for p in &plugins {
        p.call_duration
            .render(text, "sluice_plugin_call_duration_seconds", &labels(p));
    }
    for (name, kind, what, value) in [
        (
            "sluice_plugin_traps_total",
            "counter",
            "Plugin calls that trapped.",
            (|p: &PluginMetrics| p.traps.load(Ordering::Relaxed)) as fn(&PluginMetrics) -> u64,
        ),
        (
            "sluice_plugin_timeouts_total",
            "counter",
            "Plugin calls interrupted at their deadline.",
            |p| p.timeouts.load(Ordering::Relaxed),
        ),
        (
            "sluice_plugin_out_of_memory_total",
            "counter",
            "Plugin calls that hit the instance's memory limit.",
            |p| p.out_of_memory.load(Ordering::Relaxed),
        ),
        (
            "sluice_plugin_memory_high_water_bytes",
            "gauge",
            "The largest linear memory an instance of the plugin reached.",
            |p| p.memory_high_water.load(Ordering::Relaxed),
        ),
        (
            "sluice_plugin_breakers_open",
            "gauge",
            "Partitions whose circuit breaker for the plugin is open or half-open.",
            |p| p.breakers_open.load(Ordering::Relaxed),
        ),
        (
            "sluice_plugin_breaker_opened_total",
            "counter",
            "Times a circuit breaker of the plugin opened.",
            |p| p.breaker_opened.load(Ordering::Relaxed),
        ),
    ] {
        help(text, name, kind, what);
        for p in &plugins {
            let _ = writeln!(text, "{name}{{{}}} {}", labels(p), value(p));
        }
    }
    for (name, what, counter) in [
        (
            "sluice_config_reloads_total",
            "Config reloads applied (SIGHUP, POST /reload, file change).",
            &REGISTRY.config_reloads,
        ),
        (
            "sluice_config_reload_failures_total",
            "Config reloads refused (the running config stays).",
            &REGISTRY.config_reload_failures,
        ),
    ] {
        help(text, name, "counter", what);
        let _ = writeln!(text, "{name} {}", counter.load(Ordering::Relaxed));
    }
}

/// Set while OTLP export runs (by [`crate::obs::telemetry`], which starts it).
pub(crate) static TRACES: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether OTLP export runs (configured and started): spans are made, and
/// the observable instruments registered.
pub fn otlp_enabled() -> bool {
    TRACES.load(std::sync::atomic::Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_interpolate_within_the_bucket() {
        static BOUNDS: &[f64] = &[1.0, 2.0, 4.0];
        let h = Histogram::new("test.q", "s", "test", BOUNDS, Vec::new());
        assert_eq!(h.quantile(0.5), None);
        // 10 in (0,1], 10 in (1,2], 0 in (2,4], 1 above 4.
        for _ in 0..10 {
            h.observe(0.5);
            h.observe(1.5);
        }
        h.observe(9.0);
        // Rank 10.5 of 21: half a bucket into (1,2].
        assert!((h.quantile(0.5).unwrap() - 1.05).abs() < 1e-9);
        // Rank 21: the open bucket, at its lower bound.
        assert_eq!(h.quantile(1.0), Some(4.0));
        assert!((h.quantile(0.1).unwrap() - 0.21).abs() < 1e-9);
    }
}
