//! What the Kafka source and sink share: client configuration, topic
//! creation, and the changelog of window and keyed state.
//!
//! The changelog (Kafka Streams' design, "state stores … backed by a
//! compacted changelog topic"): at every checkpoint of a windowed or keyed
//! pipeline that reads Kafka, the window state and the keyed processors'
//! state of each assigned Kafka partition are written to a compacted topic,
//! keyed `pipeline/topic/partition`, together with the offset the state has
//! seen up to (a state larger than a Kafka record in parts, the record that
//! points to them last: `checkpoint::changelog::encode`). A daemon that is
//! assigned the partition — after a restart, or taking it over from another
//! daemon of its group — reads the latest record of that key, takes up the
//! state and reads the partition from that offset. State and offset travel
//! in one record, so they always agree: no window counts a record twice or
//! misses one, no keyed state change is lost or applied twice, whatever
//! daemon ends up with the partition.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll, Wake};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;

use rdkafka::error::{KafkaError, RDKafkaErrorCode};

use rdkafka::producer::{BaseProducer, Producer as _, ProducerContext};

/// How long a metadata or admin request may take before it is an error.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

static STOP: std::sync::LazyLock<std::sync::Arc<std::sync::atomic::AtomicBool>> =
    std::sync::LazyLock::new(Default::default);

/// Whether SIGTERM or SIGINT has come (see [`watch_stop_signals`]): a
/// blocking wait on a broker at start-up or in a config reload (a Kafka
/// lookup table read to its end) gives up, since the daemon's signal loop
/// cannot run meanwhile.
pub fn stop_requested() -> bool {
    STOP.load(std::sync::atomic::Ordering::Relaxed)
}

/// Registers actions for SIGTERM and SIGINT that set [`stop_requested`]
/// (signal-hook's `flag`), beside tokio's own handlers, which still receive
/// the signals.
///
/// # Errors
/// The actions cannot be registered.
pub fn watch_stop_signals() -> std::io::Result<()> {
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(signal, std::sync::Arc::clone(&STOP))?;
    }
    Ok(())
}

/// A librdkafka client configuration: `bootstrap.servers` and the user's
/// pass-through `properties` (which win over nothing sluice sets itself: the
/// callers set their own keys after this).
pub fn client_config(brokers: &str, properties: &BTreeMap<String, String>) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", brokers);
    for (key, value) in properties {
        config.set(key, value);
    }
    config
}

/// Lets a repeated warning through at most once per [`QuietLog::EVERY`] (a
/// broker that is down makes the same thing fail many times a second).
#[derive(Debug, Default)]
pub struct Throttle(Option<Instant>);

impl Throttle {
    /// Whether to log now (and if so, the next one waits).
    pub fn ready(&mut self) -> bool {
        if self.0.is_some_and(|t| t.elapsed() < QuietLog::EVERY) {
            return false;
        }
        self.0 = Some(Instant::now());
        true
    }
}

/// librdkafka's log lines and error events, into `tracing`, each kind at most
/// once per [`QuietLog::EVERY`] (with a broker down, librdkafka repeats the
/// same error many times a second).
#[derive(Debug, Default)]
pub struct QuietLog {
    last: std::sync::Mutex<BTreeMap<String, (Instant, u64)>>,
}

impl QuietLog {
    /// The shortest time between two lines of one kind.
    pub const EVERY: Duration = Duration::from_secs(10);

    /// Whether a line of `kind` may be written now; and how many of its kind
    /// were held back since the last.
    fn admit(&self, kind: &str) -> Option<u64> {
        let mut last = self
            .last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match last.get_mut(kind) {
            Some((at, held)) if at.elapsed() < Self::EVERY => {
                *held += 1;
                None
            }
            Some((at, held)) => {
                let n = *held;
                *at = Instant::now();
                *held = 0;
                Some(n)
            }
            None => {
                last.insert(kind.to_string(), (Instant::now(), 0));
                Some(0)
            }
        }
    }

    /// A librdkafka log line (`ClientContext::log`).
    pub fn log(
        &self,
        client: &str,
        level: rdkafka::config::RDKafkaLogLevel,
        fac: &str,
        message: &str,
    ) {
        use rdkafka::config::RDKafkaLogLevel as L;
        let Some(held) = self.admit(fac) else {
            return;
        };
        match level {
            L::Emerg | L::Alert | L::Critical | L::Error => {
                tracing::error!(target: "librdkafka", client, fac, held, "{message}");
            }
            L::Warning => tracing::warn!(target: "librdkafka", client, fac, held, "{message}"),
            L::Notice | L::Info => {
                tracing::info!(target: "librdkafka", client, fac, held, "{message}")
            }
            L::Debug => tracing::debug!(target: "librdkafka", client, fac, held, "{message}"),
        }
    }

    /// A librdkafka error event (`ClientContext::error`); partition-end
    /// events are not errors.
    pub fn error(&self, client: &str, error: &KafkaError, reason: &str) {
        // The end of a partition, which readers that ask for it
        // (`enable.partition.eof`) also get as a global error: not an error.
        if matches!(error, KafkaError::PartitionEOF(_))
            || error.rdkafka_error_code() == Some(rdkafka::types::RDKafkaErrorCode::PartitionEOF)
        {
            return;
        }
        if let Some(held) = self.admit(&format!("{:?}", error.rdkafka_error_code())) {
            tracing::error!(target: "librdkafka", client, held, "{error}: {reason}");
        }
    }
}

/// A client context that only logs, quietly.
#[derive(Debug, Default)]
pub struct Quiet {
    /// Its log.
    pub log: QuietLog,
    /// What the client is, in log lines.
    pub client: &'static str,
}

impl rdkafka::ClientContext for Quiet {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
        self.log.log(self.client, level, fac, message);
    }
    fn error(&self, error: KafkaError, reason: &str) {
        self.log.error(self.client, &error, reason);
    }
}

impl rdkafka::consumer::ConsumerContext for Quiet {}

/// Checks librdkafka `properties` (names and values) without making a client.
///
/// # Errors
/// librdkafka's reason, e.g. "No such configuration property".
pub fn check_properties(properties: &BTreeMap<String, String>) -> Result<(), String> {
    let mut config = ClientConfig::new();
    for (key, value) in properties {
        config.set(key, value);
        if let Err(e) = config.create_native_config() {
            return Err(format!("property `{key}`: {e}"));
        }
    }
    Ok(())
}

/// The headers of a Kafka message as (name, value) pairs, in order (a null
/// value as empty).
pub fn headers_of<M: rdkafka::message::Message>(message: &M) -> Vec<(String, Vec<u8>)> {
    use rdkafka::message::Headers as _;
    message
        .headers()
        .map(|hs| {
            hs.iter()
                .map(|h| (h.key.to_string(), h.value.unwrap_or_default().to_vec()))
                .collect()
        })
        .unwrap_or_default()
}

/// Runs a future to completion on this thread (the admin client's futures are
/// completed by its own background thread).
pub fn block_on<F: Future>(future: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Arc::new(Unpark(std::thread::current())).into();
    let mut cx = Context::from_waker(&waker);
    let mut future = std::pin::pin!(future);
    loop {
        if let Poll::Ready(v) = future.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::park_timeout(Duration::from_millis(50));
    }
}

/// Waits up to `timeout` until no record `producer` was sent is in flight
/// (each acknowledged or failed, its delivery report served); whether none
/// is. Used instead of rdkafka's `flush`, which waits in steps of up to
/// 100 ms: a checkpoint's sync took ≥ 100 ms with it, ~1 ms with this
/// (tansu on 127.0.0.1).
pub fn wait_delivered<C: ProducerContext>(producer: &BaseProducer<C>, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        producer.poll(Duration::ZERO);
        if producer.in_flight_count() == 0 {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        producer.poll(Duration::from_millis(1));
    }
}

/// Creates `topic` with `partitions` partitions (replication factor 1, and
/// `cleanup.policy=compact` when `compacted`) unless it exists.
///
/// # Errors
/// The brokers cannot be reached, or refuse to create it.
pub fn ensure_topic(
    config: &ClientConfig,
    topic: &str,
    partitions: i32,
    compacted: bool,
) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> = config
        .create()
        .context("cannot make a Kafka admin client")?;
    let mut new = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
    if compacted {
        new = new.set("cleanup.policy", "compact");
    }
    let options = AdminOptions::new().operation_timeout(Some(REQUEST_TIMEOUT));
    let results = block_on(admin.create_topics(&[new], &options))
        .with_context(|| format!("cannot create Kafka topic `{topic}`"))?;
    for result in results {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => anyhow::bail!("cannot create Kafka topic `{name}`: {code}"),
        }
    }
    Ok(())
}

/// librdkafka properties from a config table (`properties = { … }` of a
/// Kafka source or sink): strings, integers, floats and
/// booleans, as their text; `own` lists the keys sluice sets itself.
pub fn properties_from_config(
    properties: &BTreeMap<String, toml::Spanned<toml::Value>>,
    own: &[&str],
    source: &crate::config::ConfigSource,
) -> Result<BTreeMap<String, String>, crate::config::ConfigError> {
    let mut out = BTreeMap::new();
    for (key, value) in properties {
        if own.contains(&key.as_str()) {
            return Err(source.error(
                value.span(),
                format!("`{key}` is set by sluice itself and cannot be passed through"),
            ));
        }
        let text = match value.get_ref() {
            toml::Value::String(s) => s.clone(),
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Float(f) => f.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            other => {
                return Err(source.error(
                    value.span(),
                    format!(
                        "property `{key}`: a {} is not a librdkafka property value (give a string, number or boolean)",
                        other.type_str()
                    ),
                ));
            }
        };
        out.insert(key.clone(), text);
        // librdkafka checks the name and the value (not yet how they fit
        // together: that is checked when the client is made, at start).
        if let Err(e) = check_properties(&out) {
            return Err(source.error(value.span(), e));
        }
    }
    Ok(out)
}
