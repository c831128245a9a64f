//! The Kafka sink: one Kafka record per event — the event's value, key,
//! headers and timestamp — through an idempotent producer
//! (`enable.idempotence=true`, hence `acks=all`: a broker retry never
//! duplicates or reorders a record).
//!
//! Nothing is dropped: a full producer queue blocks the sink (and so, through
//! its bounded channel, the workers: backpressure); a record whose delivery
//! fails for good (after librdkafka's own retries, `message.timeout.ms`) is
//! sent again, with a warning, until it is delivered. A sync (a checkpoint)
//! returns only once every record sent before it has been acknowledged by the
//! broker, so the source commits no offset past what Kafka holds.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use rdkafka::ClientContext;
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::message::{Header, Message as _, OwnedHeaders};
use rdkafka::producer::{
    BaseProducer, BaseRecord, DeliveryResult, Producer as _, ProducerContext, PurgeConfig,
};
use serde_json::Value;
use sluice_plugin_sdk::Batch;

use super::Output;
use crate::decode::{Pointer, extract_into};
use crate::kafka::Throttle;

/// How long a sink waits for the last acknowledgements once the daemon is
/// stopping (a checkpoint's sync or the sink's finish).
const FINISH_LIMIT: Duration = Duration::from_secs(30);

/// Set when the daemon stops (SIGTERM, SIGINT).
static STOPPING: AtomicBool = AtomicBool::new(false);

/// The daemon is stopping: a sink still waiting for brokers gives up after
/// [`FINISH_LIMIT`] (nothing is lost: the offsets of what it could not
/// deliver are not committed, so those records are read again at the next
/// start).
pub fn daemon_stopping() {
    STOPPING.store(true, Ordering::Relaxed);
}

/// `[sinks.NAME] type = "kafka"`: the kind's own fields.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// The bootstrap brokers, `host:port[,host:port…]`.
    pub brokers: Option<toml::Spanned<String>>,
    /// The topic records go to (required)…
    pub topic: Option<toml::Spanned<String>>,
    /// …unless this JSON pointer (RFC 6901) finds a string field in the record:
    /// then that field names its topic.
    pub topic_field: Option<toml::Spanned<String>>,
    /// librdkafka producer properties, passed through as given.
    /// `enable.idempotence` is always on (and `acks` therefore `all`).
    #[serde(default)]
    pub properties: BTreeMap<String, toml::Spanned<toml::Value>>,
    /// Create `topic` at start, with this many partitions, if it does not
    /// exist. Default: do not create it.
    pub partitions: Option<toml::Spanned<i32>>,
}

impl super::SinkConfig for KafkaConfig {
    fn build(
        &self,
        cx: &crate::config::BuildContext<'_>,
    ) -> Result<super::Built, crate::config::ConfigError> {
        let needs = |field: &str| {
            cx.config.error(
                cx.table.span.clone(),
                format!("sink `{}`: a kafka sink needs `{field}`", cx.name),
            )
        };
        let brokers = self.brokers.as_ref().ok_or_else(|| needs("brokers"))?;
        if brokers.get_ref().trim().is_empty() {
            return Err(cx.config.error(brokers.span(), "`brokers` cannot be empty"));
        }
        let topic = self.topic.as_ref().ok_or_else(|| needs("topic"))?;
        if topic.get_ref().is_empty() {
            return Err(cx.config.error(topic.span(), "`topic` cannot be empty"));
        }
        let topic_field = self
            .topic_field
            .as_ref()
            .map(|p| Pointer::parse(p.get_ref()).map_err(|e| cx.config.error(p.span(), e)))
            .transpose()?;
        let spec = KafkaSinkSpec {
            brokers: brokers.get_ref().clone(),
            topic: topic.get_ref().clone(),
            topic_field,
            properties: crate::kafka::properties_from_config(
                &self.properties,
                &["bootstrap.servers", "enable.idempotence"],
                cx.config,
            )?,
            create_partitions: match &self.partitions {
                Some(p) if *p.get_ref() < 1 => {
                    return Err(cx.config.error(p.span(), "`partitions` must be at least 1"));
                }
                p => p.as_ref().map(|p| *p.get_ref()),
            },
        };
        Ok(super::Built {
            spec: super::SinkSpec(std::sync::Arc::new(spec)),
            claims: Vec::new(),
        })
    }
}

impl super::Sink for KafkaSinkSpec {
    fn open(&self, name: &str, _resume: Option<super::Resume>) -> anyhow::Result<Box<dyn Output>> {
        Ok(Box::new(KafkaOutput::new(name, self)?))
    }

    fn max_record_bytes(&self) -> Option<usize> {
        Some(KafkaSinkSpec::max_record_bytes(self))
    }
}

/// A Kafka sink's configuration, built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaSinkSpec {
    /// Bootstrap brokers.
    pub brokers: String,
    /// The topic records go to…
    pub topic: String,
    /// …unless this field of the record holds a string: then it names the
    /// topic.
    pub topic_field: Option<Pointer>,
    /// librdkafka producer properties, passed through.
    pub properties: BTreeMap<String, String>,
    /// Create `topic` with this many partitions at start if it is missing.
    pub create_partitions: Option<i32>,
}

impl KafkaSinkSpec {
    /// The largest record the producer accepts: its `message.max.bytes`
    /// (librdkafka's default 1,000,000 bytes unless set in `properties`).
    pub fn max_record_bytes(&self) -> usize {
        self.properties
            .get("message.max.bytes")
            .and_then(|v| v.parse().ok())
            .unwrap_or(1_000_000)
    }
}

/// A record whose delivery failed, kept to be sent again.
struct Undelivered {
    topic: String,
    key: Option<Vec<u8>>,
    value: Vec<u8>,
    timestamp_ms: Option<i64>,
    headers: Vec<(String, Vec<u8>)>,
    error: String,
}

/// Collects the delivery reports that failed.
#[derive(Default)]
struct Reports {
    failed: Mutex<Vec<Undelivered>>,
    log: crate::kafka::QuietLog,
}

impl ClientContext for Reports {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
        self.log.log("sink producer", level, fac, message);
    }
    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        self.log.error("sink producer", &error, reason);
    }
}

impl ProducerContext for Reports {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((error, message)) = result {
            let headers = crate::kafka::headers_of(message);
            self.failed
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push(Undelivered {
                    topic: message.topic().to_string(),
                    key: message.key().map(<[u8]>::to_vec),
                    value: message.payload().unwrap_or_default().to_vec(),
                    timestamp_ms: message.timestamp().to_millis(),
                    headers,
                    error: error.to_string(),
                });
        }
    }
}

/// The running sink's producer.
pub(super) struct KafkaOutput {
    name: String,
    spec: KafkaSinkSpec,
    producer: BaseProducer<Reports>,
    /// The warnings: "waiting for delivery", "sending again" (with the
    /// records sent again since the last one), an illegal `topic_field`.
    warned: Throttle,
    resent: (Throttle, usize),
    illegal: Throttle,
}

/// Whether `name` is a legal Kafka topic name: 1–249 characters of ASCII
/// letters, digits, `.`, `_` and `-`, and not `.` or `..` (Kafka's
/// `Topic.validate`).
fn legal_topic(name: &str) -> bool {
    (1..=249).contains(&name.len())
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// A new idempotent producer for `spec`.
fn producer(name: &str, spec: &KafkaSinkSpec) -> anyhow::Result<BaseProducer<Reports>> {
    crate::kafka::client_config(&spec.brokers, &spec.properties)
        .set("enable.idempotence", "true")
        .create_with_context(Reports::default())
        .with_context(|| format!("sink `{name}`: cannot make a Kafka producer"))
}

impl KafkaOutput {
    /// Makes the producer (it connects in the background), after creating
    /// the topic if asked to.
    pub(super) fn new(name: &str, spec: &KafkaSinkSpec) -> anyhow::Result<Self> {
        let config = crate::kafka::client_config(&spec.brokers, &spec.properties);
        if let Some(partitions) = spec.create_partitions {
            crate::kafka::ensure_topic(&config, &spec.topic, partitions, false)
                .with_context(|| format!("sink `{name}`"))?;
        }
        Ok(KafkaOutput {
            name: name.to_string(),
            spec: spec.clone(),
            producer: producer(name, spec)?,
            warned: Throttle::default(),
            resent: (Throttle::default(), 0),
            illegal: Throttle::default(),
        })
    }

    /// Hands one record to the producer, waiting while its queue is full.
    fn produce(
        &self,
        topic: &str,
        key: Option<&[u8]>,
        value: &[u8],
        timestamp_ms: Option<i64>,
        headers: &[(&str, &[u8])],
    ) -> anyhow::Result<()> {
        let mut record = BaseRecord::<[u8], [u8]>::to(topic).payload(value);
        if let Some(key) = key {
            record = record.key(key);
        }
        if let Some(ts) = timestamp_ms {
            record = record.timestamp(ts);
        }
        if !headers.is_empty() {
            let mut owned = OwnedHeaders::new_with_capacity(headers.len());
            for (name, value) in headers {
                owned = owned.insert(Header {
                    key: name,
                    value: Some(*value),
                });
            }
            record = record.headers(owned);
        }
        loop {
            match self.producer.send(record) {
                Ok(()) => return Ok(()),
                Err((e, r)) if e.rdkafka_error_code() == Some(RDKafkaErrorCode::QueueFull) => {
                    // Backpressure: serve delivery reports until there is room.
                    self.producer.poll(Duration::from_millis(100));
                    record = r;
                }
                Err((e, _)) => {
                    return Err(e).with_context(|| {
                        format!(
                            "sink `{}`: cannot produce a record of {} bytes to topic `{topic}`",
                            self.name,
                            value.len()
                        )
                    });
                }
            }
        }
    }

    /// Sends the records whose delivery failed again — through a new
    /// producer when this one hit a fatal error (an idempotent producer that
    /// was fenced, or whose producer id the brokers forgot, takes nothing
    /// more).
    fn resend_failed(&mut self) -> anyhow::Result<()> {
        let take = |p: &BaseProducer<Reports>| {
            std::mem::take(
                &mut *p
                    .context()
                    .failed
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner),
            )
        };
        let mut failed = take(&self.producer);
        if let Some((code, reason)) = self.producer.client().fatal_error() {
            tracing::error!(
                sink = %self.name,
                "the Kafka producer hit a fatal error ({code:?}: {reason}): making a new one and sending its undelivered records again"
            );
            // Its records still queued or in flight fail (purged) and come
            // back as delivery reports.
            self.producer
                .purge(PurgeConfig::default().queue().inflight());
            crate::kafka::wait_delivered(&self.producer, Duration::from_secs(5));
            let old = std::mem::replace(&mut self.producer, producer(&self.name, &self.spec)?);
            failed.extend(take(&old));
        }
        if let Some(first) = failed.first() {
            self.resent.1 += failed.len();
            if self.resent.0.ready() {
                tracing::warn!(
                    sink = %self.name,
                    records = self.resent.1,
                    "Kafka did not take {} record(s) ({}): sending them again",
                    self.resent.1,
                    first.error
                );
                self.resent.1 = 0;
            }
        }
        for u in failed {
            let headers: Vec<(&str, &[u8])> = u
                .headers
                .iter()
                .map(|(n, v)| (n.as_str(), v.as_slice()))
                .collect();
            self.produce(
                &u.topic,
                u.key.as_deref(),
                &u.value,
                u.timestamp_ms,
                &headers,
            )?;
        }
        Ok(())
    }

    /// Waits until every record sent so far is acknowledged (sending failed
    /// ones again), however long the brokers take — or, with a `limit`, fails
    /// after it.
    fn drain(&mut self, limit: Option<Duration>) -> anyhow::Result<()> {
        let started = Instant::now();
        let mut stopping_since = None;
        loop {
            if limit.is_none() && stopping_since.is_none() && STOPPING.load(Ordering::Relaxed) {
                stopping_since = Some(Instant::now());
            }
            let waited = match (limit, stopping_since) {
                (Some(limit), _) => Some((started.elapsed(), limit)),
                (None, Some(since)) => Some((since.elapsed(), FINISH_LIMIT)),
                (None, None) => None,
            };
            if let Some((waited, limit)) = waited {
                anyhow::ensure!(
                    waited < limit,
                    "sink `{}`: {} record(s) not acknowledged by Kafka after {limit:?}; their source offsets were not committed, so they are read again at the next start",
                    self.name,
                    self.producer.in_flight_count()
                );
            }
            crate::kafka::wait_delivered(&self.producer, Duration::from_secs(1));
            self.resend_failed()?;
            if self.producer.in_flight_count() == 0
                && self
                    .producer
                    .context()
                    .failed
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .is_empty()
            {
                return Ok(());
            }
            if self.warned.ready() {
                tracing::warn!(
                    sink = %self.name,
                    in_flight = self.producer.in_flight_count(),
                    waited_s = started.elapsed().as_secs(),
                    "waiting for Kafka to acknowledge records (brokers unreachable?); holding back the source"
                );
            }
        }
    }
}

impl Output for KafkaOutput {
    fn write_batch(&mut self, batch: &Batch) -> anyhow::Result<()> {
        let pointer = self.spec.topic_field.as_ref();
        let mut found = [None];
        for event in batch {
            let topic = match pointer {
                Some(p) => {
                    let _ = extract_into(event.value(), &[p], &mut found);
                    match found[0].take() {
                        Some(Value::String(t)) if legal_topic(&t) => Some(t),
                        Some(Value::String(t)) if !t.is_empty() => {
                            // Not a topic Kafka could create: the record
                            // goes to `topic`, never nowhere.
                            if self.illegal.ready() {
                                tracing::warn!(
                                    sink = %self.name,
                                    "`topic_field` holds {t:?}, not a legal Kafka topic name: the record goes to `{}`",
                                    self.spec.topic
                                );
                            }
                            None
                        }
                        _ => None,
                    }
                }
                None => None,
            };
            let headers: Vec<(&str, &[u8])> = event.headers().collect();
            self.produce(
                topic.as_deref().unwrap_or(&self.spec.topic),
                event.key(),
                event.value(),
                Some(event.timestamp_ms()),
                &headers,
            )?;
        }
        // Serve delivery reports; failures are sent again now.
        self.producer.poll(Duration::ZERO);
        self.resend_failed()
    }

    fn sync(&mut self) -> anyhow::Result<Option<u64>> {
        self.drain(None)?;
        Ok(None)
    }

    fn finish(&mut self) -> anyhow::Result<()> {
        // Shutting down: everything before the last checkpoint is already
        // acknowledged; do not hold the stop for ever.
        self.drain(Some(FINISH_LIMIT))
    }
}
