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
    /// Set on the record of a state too large for one Kafka record: the
    /// state itself is in `parts.count` records of its own (see
    /// [`encode`]), and this record only says where (its other fields are
    /// the state's offset and shape, the rest empty).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parts: Option<Parts>,
    /// What the state depends on (format, key and timestamp, window,
    /// aggregates; see [`crate::checkpoint::Checkpoint::shape`]): a state saved
    /// with another is not restored.
    #[serde(default)]
    pub shape: BTreeMap<String, String>,
}

/// Where the parts of a large state are: `count` records keyed
/// `KEY#SET/INDEX` (see [`part_key`]), which, in index order, hold the state's
/// JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Parts {
    /// Which of the key's two sets of parts (0 or 1): a state is written to
    /// the set the current record does not point to, then the record that
    /// points to it, so a crash mid-write leaves the last state whole.
    pub set: u8,
    /// How many parts.
    pub count: u32,
}

/// Most bytes of state JSON in one changelog record: a larger state is cut
/// into parts of this size. Under librdkafka's and Kafka's default
/// `message.max.bytes` (1,000,000 bytes, key and overhead included).
pub const PART_BYTES: usize = 512 * 1024;

/// The key of part `index` of set `set` of the state under `key`.
pub fn part_key(key: &str, set: u8, index: u32) -> String {
    format!("{key}#{set}/{index}")
}

/// The records that write `state` under `key`, in the order they must be
/// written: the state's JSON in one record when it fits in `part_bytes`;
/// else its parts in set `set`, then the record that points to them (a
/// state store's changelog kept consistent with its offset whatever its
/// size: the pointer is written last, and the broker keeps a partition's
/// records in order).
///
/// # Errors
/// The state cannot be encoded.
pub fn encode(
    key: &str,
    state: &TaskState,
    set: u8,
    part_bytes: usize,
) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
    let json = serde_json::to_vec(state)?;
    if json.len() <= part_bytes {
        return Ok(vec![(key.to_string(), json)]);
    }
    let mut records: Vec<(String, Vec<u8>)> = json
        .chunks(part_bytes)
        .enumerate()
        .map(|(i, part)| (part_key(key, set, i as u32), part.to_vec()))
        .collect();
    let head = TaskState {
        offset: state.offset,
        window: None,
        keyed: BTreeMap::new(),
        shape: state.shape.clone(),
        parts: Some(Parts {
            set,
            count: u32::try_from(records.len()).context("too many parts")?,
        }),
    };
    records.push((key.to_string(), serde_json::to_vec(&head)?));
    Ok(records)
}

/// The state a record read under `key` stands for: itself, or the state
/// whose parts it points to, put together from `parts` (part key → bytes,
/// the latest of each).
///
/// # Errors
/// A part is missing or the parts are not a state.
pub fn decode(
    key: &str,
    record: TaskState,
    parts: &BTreeMap<String, Vec<u8>>,
) -> anyhow::Result<TaskState> {
    let Some(p) = record.parts else {
        return Ok(record);
    };
    let mut json = Vec::new();
    for index in 0..p.count {
        let part = parts.get(&part_key(key, p.set, index)).with_context(|| {
            format!(
                "part {index} of {} of the state of `{key}` is missing",
                p.count
            )
        })?;
        json.extend_from_slice(part);
    }
    let state: TaskState = serde_json::from_slice(&json).with_context(|| {
        format!(
            "the {} parts of the state of `{key}` are not a state",
            p.count
        )
    })?;
    Ok(state)
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
    /// The set of parts each key's current record points to (keys whose
    /// record is whole are not here): the next large state of the key goes
    /// to the other set.
    sets: std::sync::Mutex<BTreeMap<String, u8>>,
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
            sets: std::sync::Mutex::default(),
        })
    }

    /// Writes `states` (key → state) and waits until the broker has them all.
    ///
    /// # Errors
    /// A record cannot be encoded or is not delivered within `timeout`.
    pub fn write(&self, states: &[(String, TaskState)], timeout: Duration) -> anyhow::Result<()> {
        let mut sets = self
            .sets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut records = Vec::new();
        for (key, state) in states {
            // The set the current record does not point to.
            let set = sets.get(key).map_or(0, |s| 1 - s);
            let encoded = encode(key, state, set, PART_BYTES)?;
            match encoded.len() {
                1 => sets.remove(key),
                _ => sets.insert(key.clone(), set),
            };
            records.extend(encoded);
        }
        drop(sets);
        for (key, value) in &records {
            let mut record = BaseRecord::<str, [u8]>::to(&self.topic)
                .key(key.as_str())
                .payload(value);
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
        let mut parts: BTreeMap<String, Vec<u8>> = BTreeMap::new();
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
                // A part of a wanted key's large state.
                if let Some((owner, _)) = key.rsplit_once('#')
                    && keys.iter().any(|k| k == owner)
                {
                    match message.payload() {
                        Some(value) => parts.insert(key.to_string(), value.to_vec()),
                        None => parts.remove(key),
                    };
                }
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
        let mut sets = self
            .sets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut states = BTreeMap::new();
        for (key, record) in found {
            match record.parts {
                Some(p) => sets.insert(key.clone(), p.set),
                None => sets.remove(&key),
            };
            let state = decode(&key, record, &parts)
                .with_context(|| format!("changelog topic `{}`", self.topic))?;
            states.insert(key, state);
        }
        Ok(states)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::B64;

    /// A partition state of `keys` keys with a keyed stage's values and timers.
    fn state(offset: i64, keys: usize) -> TaskState {
        let snapshot = KeyedSnapshot {
            max_ts: Some(1_357_000_000_000),
            entries: (0..keys)
                .map(|k| {
                    (
                        B64(format!("N{k:05}").into_bytes()),
                        B64(format!("{{\"last_ms\":{}}}", 1_357_000_000_000 + k as i64)
                            .into_bytes()),
                        k as i64,
                    )
                })
                .collect(),
            event_timers: (0..keys)
                .map(|k| (k as i64, B64(format!("N{k:05}").into_bytes())))
                .collect(),
            processing_timers: Vec::new(),
        };
        TaskState {
            offset,
            keyed: BTreeMap::from([("keyed plane_gaps".to_string(), snapshot)]),
            shape: BTreeMap::from([("format".to_string(), "json".to_string())]),
            ..TaskState::default()
        }
    }

    /// What a compacted topic holds after `records` were written in order:
    /// the latest value of each key.
    fn compact(topic: &mut BTreeMap<String, Vec<u8>>, records: Vec<(String, Vec<u8>)>) {
        for (key, value) in records {
            topic.insert(key, value);
        }
    }

    /// The state under `key` in `topic`, as `Changelog::read` puts it
    /// together.
    fn read(topic: &BTreeMap<String, Vec<u8>>, key: &str) -> TaskState {
        let record: TaskState = serde_json::from_slice(&topic[key]).unwrap();
        decode(key, record, topic).unwrap()
    }

    fn json(state: &TaskState) -> String {
        serde_json::to_string(state).unwrap()
    }

    #[test]
    fn a_small_state_is_one_record() {
        let s = state(7, 3);
        let records = encode("p/t/0", &s, 0, PART_BYTES).unwrap();
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].0, "p/t/0");
        let mut topic = BTreeMap::new();
        compact(&mut topic, records);
        assert_eq!(json(&read(&topic, "p/t/0")), json(&s));
    }

    #[test]
    fn a_large_state_is_cut_into_parts_and_put_together() {
        let s = state(42, 2_000);
        let whole = serde_json::to_vec(&s).unwrap().len();
        let records = encode("p/t/1", &s, 1, 10_000).unwrap();
        // The parts (every one but the last of 10,000 bytes), then the
        // record that points to them.
        assert_eq!(records.len(), whole.div_ceil(10_000) + 1);
        assert!(
            records[..records.len() - 1]
                .iter()
                .all(|(_, v)| v.len() <= 10_000)
        );
        assert_eq!(records[0].0, "p/t/1#1/0");
        let (key, head) = records.last().unwrap();
        assert_eq!(key, "p/t/1");
        let head: TaskState = serde_json::from_slice(head).unwrap();
        assert_eq!(head.offset, 42, "the pointer carries the offset too");
        assert!(head.keyed.is_empty());
        assert_eq!(
            head.parts,
            Some(Parts {
                set: 1,
                count: (records.len() - 1) as u32
            })
        );
        let mut topic = BTreeMap::new();
        compact(&mut topic, records);
        assert_eq!(json(&read(&topic, "p/t/1")), json(&s));
    }

    #[test]
    fn a_write_cut_short_leaves_the_last_whole_state() {
        let mut topic = BTreeMap::new();
        let first = state(100, 2_000);
        compact(&mut topic, encode("k", &first, 0, 10_000).unwrap());
        // The next state goes to the other set; the daemon dies after two
        // of its parts reached the broker, before the pointer.
        let second = state(200, 2_500);
        let records = encode("k", &second, 1, 10_000).unwrap();
        assert!(
            records
                .iter()
                .all(|(k, _)| k == "k" || k.starts_with("k#1/"))
        );
        compact(&mut topic, records[..2].to_vec());
        assert_eq!(json(&read(&topic, "k")), json(&first));
        // Written whole, it is the state.
        compact(&mut topic, records);
        assert_eq!(json(&read(&topic, "k")), json(&second));
        // Then a smaller state again: one record, the parts left unread.
        let third = state(300, 1);
        compact(&mut topic, encode("k", &third, 0, 10_000).unwrap());
        assert_eq!(json(&read(&topic, "k")), json(&third));
    }

    #[test]
    fn a_missing_part_is_an_error_naming_it() {
        let mut topic = BTreeMap::new();
        compact(
            &mut topic,
            encode("k", &state(1, 2_000), 0, 10_000).unwrap(),
        );
        topic.remove("k#0/1");
        let record: TaskState = serde_json::from_slice(&topic["k"]).unwrap();
        let error = decode("k", record, &topic).unwrap_err().to_string();
        assert!(error.contains("part 1 of"), "{error}");
    }
}
