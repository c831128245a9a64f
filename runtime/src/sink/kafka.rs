//! The Kafka sink: one Kafka record per event — the event's value, key,
//! headers and timestamp — through an idempotent producer
//! (`enable.idempotence=true`, hence `acks=all`: a broker retry never
//! duplicates or reorders a record).
//!
//! Nothing is dropped: a full producer queue blocks the sink (and so, through
//! its bounded channel, the workers: backpressure); a record whose delivery
//! fails for good (after librdkafka's own retries, `message.timeout.ms`) is
//! sent again, with a warning, until it is delivered — not at once but after
//! a pause that starts at 100 ms and doubles while resends keep failing (up
//! to 5 s), the sink holding its input meanwhile. The producer is replaced
//! by a new one (a new producer id) when it cannot deliver any more: a fatal
//! error, a delivery error about its producer id, epoch or sequence (an
//! idempotent producer whose records timed out bumps its own epoch, which a
//! broker may refuse for good: tansu answers ProducerFenced), or 5 rounds of
//! resends in a row failing with nothing delivered. A sync (a checkpoint)
//! returns only once every record sent before it has been acknowledged by
//! the broker, so the source commits no offset past what Kafka holds.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
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
/// stopping (a checkpoint's sync or the sink's finish): every sink's limit.
const FINISH_LIMIT: Duration = super::STOP_LIMIT;

/// The first pause before records whose delivery failed are sent again; it
/// doubles after each round of resends that fails again with nothing
/// delivered, up to [`RESEND_PAUSE_MAX`], and is back to this once a record
/// is delivered.
const RESEND_PAUSE_FIRST: Duration = Duration::from_millis(100);

/// The longest pause between two rounds of resends.
const RESEND_PAUSE_MAX: Duration = Duration::from_secs(5);

/// Rounds of resends in a row that fail with nothing delivered between
/// them, after which the producer is replaced whatever the errors were.
const FAILED_ROUNDS_BEFORE_NEW_PRODUCER: u32 = 5;

/// The pause after `pause` when a round of resends fails again: twice as
/// long, up to [`RESEND_PAUSE_MAX`].
fn next_pause(pause: Duration) -> Duration {
    (pause * 2).min(RESEND_PAUSE_MAX)
}

/// Whether a record's delivery error says that the producer which sent it
/// cannot deliver it: the brokers do not (or no longer) know its producer id
/// or take its epoch, or its sequence broke, or the producer hit a fatal
/// error. librdkafka's idempotent producer reports these per record (not
/// always as a [`fatal_error`](rdkafka::client::Client::fatal_error)), and a
/// record sent again through the same producer fails the same way.
fn needs_new_producer(code: RDKafkaErrorCode) -> bool {
    use RDKafkaErrorCode as E;
    matches!(
        code,
        E::ProducerFenced
            | E::InvalidProducerEpoch
            | E::UnknownProducerId
            | E::OutOfOrderSequenceNumber
            | E::InvalidProducerIdMapping
            | E::Fenced
            | E::Fatal
            | E::GaplessGuarantee
    )
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
    /// librdkafka's code of `error`.
    code: Option<RDKafkaErrorCode>,
}

/// What the delivery reports of a sink's producers say, shared by them (the
/// reports a replaced producer serves while it is dropped land here too).
#[derive(Default)]
struct Delivery {
    /// The records whose delivery failed, to be sent again.
    failed: Mutex<Vec<Undelivered>>,
    /// Records acknowledged since the sink last looked.
    delivered: AtomicU64,
}

impl Delivery {
    /// The failed records, taken out.
    fn take_failed(&self) -> Vec<Undelivered> {
        std::mem::take(&mut *self.failed_lock())
    }

    fn failed_lock(&self) -> std::sync::MutexGuard<'_, Vec<Undelivered>> {
        self.failed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A producer's context: its delivery reports into [`Delivery`], its log
/// into `tracing`.
struct Reports {
    delivery: Arc<Delivery>,
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
        match result {
            Ok(_) => {
                self.delivery.delivered.fetch_add(1, Ordering::Relaxed);
            }
            Err((error, message)) => {
                let headers = crate::kafka::headers_of(message);
                self.delivery.failed_lock().push(Undelivered {
                    topic: message.topic().to_string(),
                    key: message.key().map(<[u8]>::to_vec),
                    value: message.payload().unwrap_or_default().to_vec(),
                    timestamp_ms: message.timestamp().to_millis(),
                    headers,
                    error: error.to_string(),
                    code: error.rdkafka_error_code(),
                });
            }
        }
    }
}

/// The running sink's producer.
pub(super) struct KafkaOutput {
    name: String,
    spec: KafkaSinkSpec,
    producer: BaseProducer<Reports>,
    /// The delivery reports of `producer` and of those it replaced.
    delivery: Arc<Delivery>,
    /// The pause before the next round of resends.
    pause: Duration,
    /// Rounds of resends in a row with nothing delivered.
    failed_rounds: u32,
    /// Producers made to replace one that could not deliver.
    new_producers: u64,
    /// The warnings: "waiting for delivery", "sending again" (with the
    /// records sent again since the last one), "a new producer" (with the
    /// producers made since the last one), an illegal `topic_field`.
    warned: Throttle,
    resent: (Throttle, usize),
    replaced: (Throttle, usize),
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

/// A new idempotent producer for `spec`, reporting to `delivery`.
fn producer(
    name: &str,
    spec: &KafkaSinkSpec,
    delivery: &Arc<Delivery>,
) -> anyhow::Result<BaseProducer<Reports>> {
    let reports = Reports {
        delivery: delivery.clone(),
        log: crate::kafka::QuietLog::default(),
    };
    crate::kafka::client_config(&spec.brokers, &spec.properties)
        .set("enable.idempotence", "true")
        .create_with_context(reports)
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
        let delivery = Arc::new(Delivery::default());
        Ok(KafkaOutput {
            name: name.to_string(),
            spec: spec.clone(),
            producer: producer(name, spec, &delivery)?,
            delivery,
            pause: RESEND_PAUSE_FIRST,
            failed_rounds: 0,
            new_producers: 0,
            warned: Throttle::default(),
            resent: (Throttle::default(), 0),
            replaced: (Throttle::default(), 0),
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
                    // Backpressure: serve delivery reports until there is
                    // room — or until a stopping daemon has waited long
                    // enough (the record's offset is not committed).
                    anyhow::ensure!(
                        super::stop_deadline().is_none_or(|d| Instant::now() < d),
                        "sink `{}`: the Kafka producer's queue stayed full for {FINISH_LIMIT:?} after the stop; its source offsets were not committed, so the records are read again at the next start",
                        self.name
                    );
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

    /// Sends the records whose delivery failed again, after a pause (no
    /// longer than `deadline`) — through a new producer when this one cannot
    /// deliver them (see [`KafkaOutput::why_new_producer`]).
    fn resend_failed(&mut self, deadline: Option<Instant>) -> anyhow::Result<()> {
        if self.delivery.delivered.swap(0, Ordering::Relaxed) > 0 {
            // The brokers take records: the next failure is sent again soon.
            self.pause = RESEND_PAUSE_FIRST;
            self.failed_rounds = 0;
        }
        let mut failed = self.delivery.take_failed();
        let Some(first) = failed.first() else {
            return Ok(());
        };
        self.failed_rounds += 1;
        if let Some(reason) = self.why_new_producer(first, &failed) {
            self.replace_producer(&reason)?;
            // Its records still queued or in flight were purged: they come
            // back as failed delivery reports.
            failed.extend(self.delivery.take_failed());
            self.failed_rounds = 0;
        }
        self.resent.1 += failed.len();
        crate::obs::metrics::kafka_sink_resent(&self.name, failed.len() as u64);
        if self.resent.0.ready() {
            tracing::warn!(
                sink = %self.name,
                records = self.resent.1,
                pause_ms = self.pause.as_millis() as u64,
                "Kafka did not take {} record(s) ({}): sending them again",
                self.resent.1,
                failed[0].error
            );
            self.resent.1 = 0;
        }
        self.wait_out_pause(deadline);
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

    /// Why the producer must be replaced before `failed` (whose first record
    /// is `first`) is sent again, if it must: it hit a fatal error, a
    /// delivery error says it cannot deliver ([`needs_new_producer`]), or
    /// [`FAILED_ROUNDS_BEFORE_NEW_PRODUCER`] rounds of resends failed in a row.
    fn why_new_producer(&self, first: &Undelivered, failed: &[Undelivered]) -> Option<String> {
        if let Some((code, reason)) = self.producer.client().fatal_error() {
            return Some(format!("it hit a fatal error ({code:?}: {reason})"));
        }
        if let Some(u) = failed
            .iter()
            .find(|u| u.code.is_some_and(needs_new_producer))
        {
            return Some(format!("the brokers refuse its records ({})", u.error));
        }
        (self.failed_rounds >= FAILED_ROUNDS_BEFORE_NEW_PRODUCER).then(|| {
            format!(
                "{} rounds of resends failed with nothing delivered (last: {})",
                self.failed_rounds, first.error
            )
        })
    }

    /// Replaces the producer by a new one (a new producer id and epoch);
    /// the old one's records still queued or in flight fail (purged) and
    /// come back as delivery reports, to be sent again.
    fn replace_producer(&mut self, reason: &str) -> anyhow::Result<()> {
        self.new_producers += 1;
        self.replaced.1 += 1;
        crate::obs::metrics::kafka_sink_new_producer(&self.name);
        if self.replaced.0.ready() {
            tracing::warn!(
                sink = %self.name,
                new_producers = self.replaced.1,
                "the Kafka producer cannot deliver: {reason}; making a new one and sending its undelivered records again"
            );
            self.replaced.1 = 0;
        }
        self.producer
            .purge(PurgeConfig::default().queue().inflight());
        crate::kafka::wait_delivered(&self.producer, Duration::from_secs(5));
        let new = producer(&self.name, &self.spec, &self.delivery)?;
        // Dropped here: the reports its drop serves still go to `delivery`.
        drop(std::mem::replace(&mut self.producer, new));
        Ok(())
    }

    /// Waits out the pause before a round of resends, serving delivery
    /// reports meanwhile, but not past `deadline`; the next pause, should
    /// this round fail too, is twice as long.
    fn wait_out_pause(&mut self, deadline: Option<Instant>) {
        let mut until = Instant::now() + self.pause;
        if let Some(deadline) = deadline {
            until = until.min(deadline);
        }
        loop {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            self.producer.poll(left.min(Duration::from_millis(100)));
        }
        self.pause = next_pause(self.pause);
    }

    /// Whether every record sent so far is acknowledged: none in flight,
    /// none failed and waiting to be sent again.
    fn all_acknowledged(&self) -> bool {
        self.producer.in_flight_count() == 0 && self.delivery.failed_lock().is_empty()
    }

    /// Waits until every record sent so far is acknowledged (sending failed
    /// ones again), however long the brokers take — or, with a `limit`, fails
    /// after it; once the daemon is stopping, fails [`FINISH_LIMIT`] after
    /// the stop.
    fn drain(&mut self, limit: Option<Duration>) -> anyhow::Result<()> {
        let started = Instant::now();
        loop {
            let (deadline, allowed) = match limit {
                Some(limit) => (Some(started + limit), limit),
                None => (super::stop_deadline(), FINISH_LIMIT),
            };
            let wait = deadline.map_or(Duration::from_secs(1), |d| {
                d.saturating_duration_since(Instant::now())
                    .min(Duration::from_secs(1))
            });
            crate::kafka::wait_delivered(&self.producer, wait);
            self.resend_failed(deadline)?;
            if self.all_acknowledged() {
                return Ok(());
            }
            anyhow::ensure!(
                deadline.is_none_or(|d| Instant::now() < d),
                "sink `{}`: {} record(s) not acknowledged by Kafka after {allowed:?}; their source offsets were not committed, so they are read again at the next start",
                self.name,
                self.producer.in_flight_count() as usize + self.delivery.failed_lock().len()
            );
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
        // Serve delivery reports; failures are sent again (after a pause:
        // the sink holds its input meanwhile).
        self.producer.poll(Duration::ZERO);
        self.resend_failed(None)
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

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::consumer::{BaseConsumer, Consumer as _};
    use rdkafka::mocking::MockCluster;
    use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
    use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};

    #[test]
    fn the_pause_between_resends_doubles_up_to_5_s() {
        let mut pauses = vec![RESEND_PAUSE_FIRST];
        for _ in 0..8 {
            pauses.push(next_pause(*pauses.last().unwrap()));
        }
        let want = [100, 200, 400, 800, 1600, 3200, 5000, 5000, 5000].map(Duration::from_millis);
        assert_eq!(pauses, want);
    }

    #[test]
    fn producer_id_epoch_and_sequence_errors_need_a_new_producer_timeouts_do_not() {
        use RDKafkaErrorCode as E;
        for code in [
            E::ProducerFenced,
            E::InvalidProducerEpoch,
            E::UnknownProducerId,
            E::OutOfOrderSequenceNumber,
            E::Fatal,
        ] {
            assert!(needs_new_producer(code), "{code:?}");
        }
        for code in [
            E::MessageTimedOut,
            E::QueueFull,
            E::BrokerTransportFailure,
            E::NotEnoughReplicas,
            E::MessageSizeTooLarge,
        ] {
            assert!(!needs_new_producer(code), "{code:?}");
        }
    }

    fn spec(brokers: &str) -> KafkaSinkSpec {
        KafkaSinkSpec {
            brokers: brokers.to_string(),
            topic: "t".to_string(),
            topic_field: None,
            properties: BTreeMap::new(),
            create_partitions: None,
        }
    }

    /// Records `first..first + n`: key `k{i}`, value `{"n":i}`.
    fn batch(first: usize, n: usize) -> Batch {
        let mut batch = Batch::new();
        for i in first..first + n {
            batch.push(
                Some(format!("k{i}").as_bytes()),
                format!(r#"{{"n":{i}}}"#).as_bytes(),
                1_600_000_000_000,
            );
        }
        batch
    }

    /// How many times each key is in topic `t` of `brokers` (read until
    /// `want` records came, or 30 s).
    fn read_back(brokers: &str, want: usize) -> BTreeMap<String, usize> {
        let consumer: BaseConsumer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("group.id", "read-back")
            .create()
            .unwrap();
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset("t", 0, Offset::Beginning).unwrap();
        consumer.assign(&tpl).unwrap();
        let mut keys = BTreeMap::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut n = 0;
        while n < want && Instant::now() < deadline {
            if let Some(m) = consumer.poll(Duration::from_millis(100)) {
                let m = m.unwrap();
                let key = String::from_utf8_lossy(m.key().unwrap()).into_owned();
                *keys.entry(key).or_default() += 1;
                n += 1;
            }
        }
        keys
    }

    /// The broker answers produce requests with ProducerFenced (as tansu
    /// does to an idempotent producer that bumped its own epoch): the sink
    /// makes a new producer and delivers every record.
    #[test]
    fn records_refused_as_fenced_are_delivered_through_a_new_producer() {
        let cluster = MockCluster::new(1).unwrap();
        cluster.create_topic("t", 1, 1).unwrap();
        let brokers = cluster.bootstrap_servers();
        let mut out = KafkaOutput::new("k", &spec(&brokers)).unwrap();
        out.write_batch(&batch(0, 10)).unwrap();
        out.sync().unwrap();
        assert_eq!(out.new_producers, 0, "nothing refused yet");
        cluster.request_errors(
            RDKafkaApiKey::Produce,
            &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_PRODUCER_FENCED; 2],
        );
        out.write_batch(&batch(10, 90)).unwrap();
        out.sync().unwrap();
        assert!(
            out.new_producers >= 1,
            "{} new producers",
            out.new_producers
        );
        let keys = read_back(&brokers, 100);
        let missing: Vec<usize> = (0..100)
            .filter(|i| !keys.contains_key(&format!("k{i}")))
            .collect();
        assert!(missing.is_empty(), "missing {missing:?}");
    }
}
