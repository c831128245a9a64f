//! The changelog: a compacted Kafka topic holding, per source partition, the
//! window state and the keyed processors' state, and the offset they belong
//! with (Kafka Streams' state-store changelog), so that the daemon that takes
//! a partition over restores it. Read when partitions are assigned, written
//! at each checkpoint.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::message::Message as _;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer as _, ProducerContext};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};

use super::{KeyedSnapshot, WindowSnapshot};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};

use crate::kafka::{Quiet, QuietLog, ensure_topic, wait_delivered};

/// Counts the changelog records whose delivery failed.
#[derive(Default)]
struct ChangelogReports {
    failed: std::sync::atomic::AtomicUsize,
    log: QuietLog,
}

impl rdkafka::ClientContext for ChangelogReports {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
        self.log.log("changelog producer", level, fac, message);
    }
    fn error(&self, error: KafkaError, reason: &str) {
        self.log.error("changelog producer", &error, reason);
    }
}

impl ProducerContext for ChangelogReports {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &rdkafka::producer::DeliveryResult<'_>, _: ()) {
        if result.is_err() {
            self.failed
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

/// One changelog record: a Kafka partition's state — its windows, and the
/// keys and timers of each keyed processor — and the offset of the first
/// record it has not seen. State and offset are one record, so a daemon that
/// restores them always gets a state that has seen exactly the records
/// before that offset.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TaskState {
    /// The next offset to read in the source partition.
    pub offset: i64,
    /// Its windows and watermark (`None`: no window open yet).
    pub window: Option<WindowSnapshot>,
    /// The partition's state in each keyed processor of the chain: the
    /// stage's name (`keyed PLUGIN`, `keyed PLUGIN#2`: see
    /// `pipeline::keyed::KeyedSpec::stage_name`) → its keys, timers and
    /// largest event time (Kafka Streams' changelog of a task's state store;
    /// here in the task's one record, with its offset). Empty for a
    /// pipeline without keyed processors (and in records written before
    /// them).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub keyed: BTreeMap<String, KeyedSnapshot>,
    /// What the state depends on (format, key and timestamp, window,
    /// aggregates; see [`crate::checkpoint::Checkpoint::shape`]): a state saved
    /// with another is not restored.
    #[serde(default)]
    pub shape: BTreeMap<String, String>,
}

/// The changelog key of a source partition's state.
pub fn changelog_key(pipeline: &str, topic: &str, partition: i32) -> String {
    format!("{pipeline}/{topic}/{partition}")
}

/// Writes and reads a pipeline's changelog topic.
pub struct Changelog {
    /// The topic.
    pub topic: String,
    producer: BaseProducer<ChangelogReports>,
    config: ClientConfig,
}

impl std::fmt::Debug for Changelog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Changelog")
            .field("topic", &self.topic)
            .finish()
    }
}

impl Changelog {
    /// Opens (creating it if needed: one partition, compacted) the changelog
    /// `topic`.
    ///
    /// # Errors
    /// The topic cannot be created or the producer made.
    pub fn open(config: &ClientConfig, topic: &str) -> anyhow::Result<Self> {
        ensure_topic(config, topic, 1, true)?;
        let producer = config
            .clone()
            .set("enable.idempotence", "true")
            .set("linger.ms", "0")
            .create_with_context(ChangelogReports::default())
            .context("cannot make the changelog producer")?;
        Ok(Changelog {
            topic: topic.to_string(),
            producer,
            config: config.clone(),
        })
    }

    /// Writes `states` (key → state) and waits until the broker has them all.
    ///
    /// # Errors
    /// A record cannot be encoded or is not delivered within `timeout`.
    pub fn write(&self, states: &[(String, TaskState)], timeout: Duration) -> anyhow::Result<()> {
        for (key, state) in states {
            let value = serde_json::to_vec(state)?;
            let mut record = BaseRecord::<str, [u8]>::to(&self.topic)
                .key(key.as_str())
                .payload(&value);
            loop {
                match self.producer.send(record) {
                    Ok(()) => break,
                    Err((e, r)) if e.rdkafka_error_code() == Some(RDKafkaErrorCode::QueueFull) => {
                        self.producer.poll(Duration::from_millis(10));
                        record = r;
                    }
                    Err((e, _)) => {
                        return Err(e).with_context(|| {
                            format!("cannot write to changelog topic `{}`", self.topic)
                        });
                    }
                }
            }
        }
        let delivered = wait_delivered(&self.producer, timeout);
        let failed = self
            .producer
            .context()
            .failed
            .swap(0, std::sync::atomic::Ordering::Relaxed);
        anyhow::ensure!(
            delivered && failed == 0,
            "changelog topic `{}`: the state was not acknowledged within {timeout:?} ({failed} record(s) refused)",
            self.topic
        );
        Ok(())
    }

    /// The latest state of each of `keys` in the changelog (keys without one
    /// are left out), read from its start to its current end.
    ///
    /// # Errors
    /// The changelog cannot be read within `timeout`, or holds a record that
    /// is not a [`TaskState`].
    pub fn read(
        &self,
        keys: &[String],
        timeout: Duration,
    ) -> anyhow::Result<BTreeMap<String, TaskState>> {
        // Read up to the end the broker reports in its fetch responses (a
        // partition EOF event), not to a ListOffsets "latest" offset: tansu
        // 0.6 answers that with the last batch's base offset + 1.
        let consumer: BaseConsumer<Quiet> = self
            .config
            .clone()
            .set("group.id", format!("{}-reader", self.topic))
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "true")
            .set("fetch.wait.max.ms", "10")
            .create_with_context(Quiet {
                client: "changelog reader",
                ..Quiet::default()
            })
            .context("cannot make the changelog reader")?;
        let mut found = BTreeMap::new();
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&self.topic, 0, Offset::Beginning)?;
        consumer.assign(&tpl)?;
        drop(tpl);
        let deadline = Instant::now() + timeout;
        loop {
            anyhow::ensure!(
                Instant::now() < deadline,
                "changelog topic `{}`: not read to its end within {timeout:?}",
                self.topic
            );
            let message = match consumer.poll(Duration::from_millis(100)) {
                None => continue,
                Some(Err(KafkaError::PartitionEOF(_))) => break,
                Some(Err(e)) => {
                    return Err(e)
                        .with_context(|| format!("cannot read changelog topic `{}`", self.topic));
                }
                Some(Ok(message)) => message,
            };
            let Some(key) = message.key().and_then(|k| std::str::from_utf8(k).ok()) else {
                continue;
            };
            if !keys.iter().any(|k| k == key) {
                continue;
            }
            match message.payload() {
                Some(value) => {
                    let state: TaskState = serde_json::from_slice(value).with_context(|| {
                        format!(
                            "changelog topic `{}`: the record at offset {} is not a sluice partition state",
                            self.topic,
                            message.offset()
                        )
                    })?;
                    found.insert(key.to_string(), state);
                }
                // A tombstone: the state was deleted.
                None => {
                    found.remove(key);
                }
            }
        }
        Ok(found)
    }
}
