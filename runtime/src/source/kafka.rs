//! The Kafka source: a member of a consumer group (rdkafka's `BaseConsumer`,
//! polled on the source thread), never auto-committing.
//!
//! ```text
//! poll ─► record (value; key, timestamp and headers from Kafka unless the
//!         source's `key`/`timestamp` pointers say otherwise)
//!      ─► worker (partition_by = "source": Kafka partition mod workers)
//! every checkpoint interval (default 1 s): barrier ─► every worker and the
//!   window operator ─► every sink synced (Kafka sinks: every delivery
//!   acknowledged) ─► local checkpoint ─► window state of each Kafka partition
//!   to the changelog topic ─► offsets committed (synchronously)
//! ```
//!
//! So an offset is committed only once every record before it is in every
//! sink (at-least-once end to end), and the batch → acknowledgement → commit
//! path is the one function [`Side::checkpoint`]: a transactional variant
//! (Kafka → Kafka exactly-once, one transaction per checkpoint carrying the
//! output and the offsets) would replace its last two steps.
//!
//! **Rebalances** (eager protocol; rdkafka calls [`GroupContext`] inside
//! `poll`): before partitions are revoked, a checkpoint finishes every batch
//! in flight and commits — a clean rebalance writes nothing twice — and the
//! window operator forgets their state. When partitions are assigned, the
//! state of each is read back from the changelog and reading resumes at the
//! offset saved with it; partitions without state start at their committed
//! offset, else at `start`.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer as _, ConsumerContext};
use rdkafka::message::{BorrowedMessage, Message as _};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientContext, Statistics};

use super::{Chunk, Outbox, Record, now_ms};
use crate::checkpoint::changelog::{Changelog, TaskState, changelog_key};
use crate::checkpoint::{BarrierKind, Checkpointer, KafkaPosition, Position};
use crate::config::ConfigError;
use crate::sink::dead_letter::DeadLetter;
use crate::source::router::Router;
use crate::stats::Stats;
use crate::window::operator::WindowMsg;

/// How long reading or writing the changelog may take.
const CHANGELOG_TIMEOUT: Duration = Duration::from_secs(30);

/// Records polled between two looks at whether a checkpoint is due.
const CHECKPOINT_CHECK_RECORDS: u32 = 256;

/// Where a Kafka source starts reading a partition that has no committed
/// offset for its group (librdkafka's `auto.offset.reset`). A committed offset
/// (or a changelog checkpoint) always wins: that is how a restart resumes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KafkaStart {
    /// At the partition's first retained record (default).
    #[default]
    Earliest,
    /// At the partition's end: only records produced from now on.
    Latest,
    /// Only at a committed offset: a partition without one is an error.
    Committed,
}

/// How a Kafka source's records are spread over the partition workers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PartitionBy {
    /// By a hash of the record key.
    Key,
    /// By the Kafka partition (worker = partition mod workers), so a
    /// partition's records keep their order and their offsets together
    /// (default, and required with windows).
    Source,
}

/// `[sources.NAME] type = "kafka"`: the kind's own fields.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// The bootstrap brokers, `host:port[,host:port…]`.
    pub brokers: Option<toml::Spanned<String>>,
    /// The topics to subscribe to; a name starting with `^` is a regular
    /// expression (librdkafka's pattern subscription).
    pub topics: Option<toml::Spanned<Vec<String>>>,
    /// The consumer group. Daemons with the same `group_id` share the
    /// topics' partitions; offsets are committed for this group.
    pub group_id: Option<toml::Spanned<String>>,
    /// Where a partition without a committed offset starts.
    #[serde(default)]
    pub start: Option<toml::Spanned<KafkaStart>>,
    /// librdkafka consumer properties, passed through as given
    /// (<https://github.com/confluentinc/librdkafka/blob/master/CONFIGURATION.md>).
    /// `enable.auto.commit`, `enable.auto.offset.store` and `group.id` are
    /// sluice's own and cannot be set here.
    #[serde(default)]
    pub properties: BTreeMap<String, toml::Spanned<toml::Value>>,
    /// `source` (default) or `key`.
    pub partition_by: Option<toml::Spanned<PartitionBy>>,
    /// Windowed pipelines: the compacted topic that holds each Kafka
    /// partition's window state, so that the daemon that takes a partition over
    /// restores it. Default `<group_id>-<pipeline>-changelog` (Kafka Streams'
    /// `<application.id>-<store>-changelog`).
    pub changelog_topic: Option<toml::Spanned<String>>,
}

impl super::SourceConfig for KafkaConfig {
    fn build(&self, cx: &super::BuildContext<'_>) -> Result<super::Built, ConfigError> {
        let needs = |field: &str| {
            cx.config.error(
                cx.table.span.clone(),
                format!("source `{}`: a kafka source needs `{field}`", cx.name),
            )
        };
        let brokers = self.brokers.as_ref().ok_or_else(|| needs("brokers"))?;
        if brokers.get_ref().trim().is_empty() {
            return Err(cx.config.error(brokers.span(), "`brokers` cannot be empty"));
        }
        let topics = self.topics.as_ref().ok_or_else(|| needs("topics"))?;
        if topics.get_ref().is_empty() || topics.get_ref().iter().any(String::is_empty) {
            return Err(cx.config.error(
                topics.span(),
                "`topics` needs at least one topic name (or a `^regex`)",
            ));
        }
        let group_id = self.group_id.as_ref().ok_or_else(|| needs("group_id"))?;
        if group_id.get_ref().is_empty() {
            return Err(cx
                .config
                .error(group_id.span(), "`group_id` cannot be empty"));
        }
        let input = KafkaInput {
            brokers: brokers.get_ref().clone(),
            topics: topics.get_ref().clone(),
            group_id: group_id.get_ref().clone(),
            start: self
                .start
                .as_ref()
                .map(|x| *x.get_ref())
                .unwrap_or_default(),
            properties: crate::kafka::properties_from_config(
                &self.properties,
                &[
                    "bootstrap.servers",
                    "group.id",
                    "enable.auto.commit",
                    "enable.auto.offset.store",
                    "auto.offset.reset",
                ],
                cx.config,
            )?,
            partition_by: self
                .partition_by
                .as_ref()
                .map_or(PartitionBy::Source, |p| *p.get_ref()),
            changelog_topic: match &self.changelog_topic {
                Some(t) => t.get_ref().clone(),
                // Kafka Streams' `<application.id>-<store>-changelog`.
                None => format!("{}-{}-changelog", group_id.get_ref(), cx.pipeline),
            },
        };
        Ok(super::Built {
            claims: vec![(
                super::Claim::KafkaGroup {
                    brokers: input.brokers.clone(),
                    group: input.group_id.clone(),
                },
                cx.table.span.clone(),
            )],
            source: Arc::new(KafkaSource(input)),
        })
    }

    fn check_windowed(&self, cx: &super::BuildContext<'_>) -> Result<(), ConfigError> {
        match &self.partition_by {
            Some(p) if *p.get_ref() == PartitionBy::Key => Err(cx.config.error(
                p.span(),
                format!(
                    "pipeline `{}` has windows: its Kafka source must keep partition_by = \"source\", so that each Kafka partition's windows and watermark stay together and can move to another daemon with the partition",
                    cx.pipeline
                ),
            )),
            _ => Ok(()),
        }
    }
}

/// The Kafka source, built. Its `Debug` text is `Kafka(KafkaInput { … })`.
#[derive(Clone, PartialEq, Eq)]
pub struct KafkaSource(pub KafkaInput);

impl std::fmt::Debug for KafkaSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Kafka").field(&self.0).finish()
    }
}

impl super::Source for KafkaSource {
    fn describe(&self) -> String {
        format!(
            "kafka {} (group {})",
            self.0.topics.join(","),
            self.0.group_id
        )
    }

    fn has_first_line(&self) -> bool {
        false // records come and go by offset: no header row
    }

    fn replay(&self) -> super::Replay {
        super::Replay::Committed
    }

    fn window_tasks(&self) -> bool {
        true
    }

    fn keyed_refusal(&self) -> Option<String> {
        (self.0.partition_by == PartitionBy::Key).then(|| {
            "a keyed processor keeps its state per Kafka partition, so that the state moves with the partition on a rebalance: the Kafka source must keep partition_by = \"source\" (the default)".to_string()
        })
    }

    fn stamps_event_time(&self) -> bool {
        true // the Kafka record's timestamp
    }

    fn reset_note(&self) -> Option<String> {
        Some(format!(
            "it reads Kafka: it resumes from group `{}`'s committed offsets and its changelog topic, not from a local checkpoint (any was removed). To start it over, give it a new `group_id` and `changelog_topic`.",
            self.0.group_id
        ))
    }

    fn run(&self, cx: super::SourceContext<'_>) -> anyhow::Result<()> {
        let checkpointer = cx.checkpointer.context("a Kafka source checkpoints")?;
        run(
            cx.pipeline,
            cx.spec,
            &self.0,
            cx.router,
            cx.partitions,
            cx.dead_letter,
            &cx.stats,
            cx.stop,
            checkpointer,
            cx.window,
            cx.keyed,
        )
    }
}

/// A Kafka source's configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaInput {
    /// Bootstrap brokers, `host:port[,…]`.
    pub brokers: String,
    /// Topics subscribed to (`^…`: a regular expression).
    pub topics: Vec<String>,
    /// The consumer group.
    pub group_id: String,
    /// Where a partition without a committed offset starts.
    pub start: KafkaStart,
    /// librdkafka consumer properties, passed through.
    pub properties: BTreeMap<String, String>,
    /// How records are spread over the workers.
    pub partition_by: PartitionBy,
    /// The changelog topic of a windowed pipeline.
    pub changelog_topic: String,
}

/// What the source knows of one assigned Kafka partition.
#[derive(Debug)]
struct Assigned {
    /// Its window task id.
    task: u32,
    /// The offset of the next record to hand on (`None`: nothing read or
    /// restored since it was assigned).
    next: Option<i64>,
}

/// The source's state, shared by its poll loop and the rebalance callback
/// (which runs inside `poll`, on the same thread: the lock is never
/// contended).
struct Side {
    pipeline: String,
    spec: super::SourceSpec,
    input: KafkaInput,
    router: Router,
    outbox: Outbox,
    dead_letter: DeadLetter,
    stats: Arc<Stats>,
    checkpointer: Checkpointer,
    /// The window operator's input, for a windowed pipeline.
    window: Option<flume::Sender<WindowMsg>>,
    /// The chain has a keyed processor: records carry their partition's
    /// task, and each partition's keyed state moves through the changelog.
    keyed: bool,
    changelog: Option<Changelog>,
    assigned: BTreeMap<(String, i32), Assigned>,
    next_task: u32,
    /// An error met inside a callback, for the poll loop to return.
    error: Option<anyhow::Error>,
    /// The consumer is closing after the last checkpoint: a revocation now
    /// needs no checkpoint.
    closing: bool,
}

/// The consumer's context: rebalances, statistics and logs.
pub struct GroupContext {
    side: Arc<Mutex<Side>>,
    log: crate::kafka::QuietLog,
}

fn lock(side: &Mutex<Side>) -> MutexGuard<'_, Side> {
    side.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl ClientContext for GroupContext {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
        self.log.log("consumer", level, fac, message);
    }

    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        self.log.error("consumer", &error, reason);
    }

    fn stats(&self, statistics: Statistics) {
        let side = lock(&self.side);
        let pipeline = side.pipeline.clone();
        for (topic, t) in &statistics.topics {
            for (partition, p) in &t.partitions {
                if side.assigned.contains_key(&(topic.clone(), *partition)) && p.consumer_lag >= 0 {
                    crate::obs::metrics::consumer_lag(&pipeline, topic, *partition, p.consumer_lag);
                }
            }
        }
    }
}

impl ConsumerContext for GroupContext {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        let mut side = lock(&self.side);
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                let assignment = side.on_assign(tpl);
                if let Err(e) = consumer.assign(&assignment) {
                    side.fail(
                        anyhow::Error::new(e).context("cannot take up the assigned partitions"),
                    );
                }
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                // Lost (the session timed out: the group may have given the
                // partitions away already) rather than revoked: nothing may be
                // committed, and the brokers may be out of reach anyway. What
                // was read since the last checkpoint is read again by whoever
                // gets the partitions.
                let lost = consumer.assignment_lost();
                if lost {
                    tracing::warn!(pipeline = %side.pipeline, "Kafka partitions lost (session timed out): not checkpointing them");
                }
                side.on_revoke(consumer, tpl, !lost);
                let _ = consumer.unassign();
            }
            other => {
                tracing::error!(pipeline = %side.pipeline, "Kafka rebalance error: {other:?}");
                side.on_revoke(consumer, tpl, false);
                let _ = consumer.unassign();
            }
        }
    }
}

impl Side {
    fn fail(&mut self, error: anyhow::Error) {
        tracing::error!(pipeline = %self.pipeline, "{error:#}");
        if self.error.is_none() {
            self.error = Some(error);
        }
    }

    /// Partitions assigned: restores their state from the changelog and says
    /// where to read each.
    fn on_assign(&mut self, tpl: &TopicPartitionList) -> TopicPartitionList {
        let parts: Vec<(String, i32)> = tpl
            .elements()
            .iter()
            .map(|e| (e.topic().to_string(), e.partition()))
            .collect();
        let mut assignment = TopicPartitionList::new();
        for (topic, partition) in &parts {
            assignment.add_partition(topic, *partition);
            let task = self.next_task;
            self.next_task += 1;
            self.assigned
                .insert((topic.clone(), *partition), Assigned { task, next: None });
            self.checkpointer
                .task_names
                .insert(task, format!("{topic}/{partition}"));
        }
        if let Some(changelog) = &self.changelog {
            let keys: Vec<String> = parts
                .iter()
                .map(|(t, p)| changelog_key(&self.pipeline, t, *p))
                .collect();
            match changelog.read(&keys, CHANGELOG_TIMEOUT) {
                Ok(mut states) => {
                    let now = self.state_shape();
                    let changed: Vec<String> = states
                        .values()
                        .filter(|s| !s.shape.is_empty())
                        .flat_map(|s| crate::checkpoint::shape_changes(&s.shape, &now))
                        .collect::<std::collections::BTreeSet<_>>()
                        .into_iter()
                        .collect();
                    if !changed.is_empty() {
                        self.fail(anyhow::anyhow!(
                            "pipeline `{}`: the state in changelog topic `{}` was saved with another window or aggregates and cannot be resumed:{}\nUndo the change, or start the state over with a new `changelog_topic` and `group_id`",
                            self.pipeline,
                            changelog.topic,
                            changed.iter().map(|c| format!("\n  {c}")).collect::<String>()
                        ));
                        return assignment;
                    }
                    for (topic, partition) in &parts {
                        let key = changelog_key(&self.pipeline, topic, *partition);
                        let Some(state) = states.remove(&key) else {
                            continue;
                        };
                        let a = self
                            .assigned
                            .get_mut(&(topic.clone(), *partition))
                            .expect("just assigned");
                        a.next = Some(state.offset);
                        let task = a.task;
                        let _ = assignment.set_partition_offset(
                            topic,
                            *partition,
                            Offset::Offset(state.offset),
                        );
                        let windows = state
                            .window
                            .as_ref()
                            .map_or(0, |w| w.fixed.len() + w.sessions.len());
                        let keys: usize = state.keyed.values().map(|k| k.entries.len()).sum();
                        let timers: usize = state
                            .keyed
                            .values()
                            .map(|k| k.event_timers.len() + k.processing_timers.len())
                            .sum();
                        tracing::info!(
                            pipeline = %self.pipeline,
                            topic = %topic,
                            partition,
                            offset = state.offset,
                            open_windows = windows,
                            keyed_keys = keys,
                            keyed_timers = timers,
                            "partition assigned: state restored from the changelog"
                        );
                        if self.keyed {
                            self.restore_keyed(*partition, task, state.keyed);
                        }
                        if let (Some(window), Some(tx)) = (state.window, &self.window) {
                            let _ = tx.send(WindowMsg::Restore(task, Box::new(window)));
                        }
                    }
                }
                Err(e) => {
                    self.fail(e.context("cannot restore the state of the assigned partitions"));
                }
            }
        }
        tracing::info!(
            pipeline = %self.pipeline,
            partitions = ?parts,
            "Kafka partitions assigned"
        );
        assignment
    }

    /// Hands Kafka partition `partition`'s keyed state (from its changelog
    /// record) to the worker that will get its records, as task `task`:
    /// after the records already queued for that worker, before any of the
    /// partition's.
    fn restore_keyed(
        &mut self,
        partition: i32,
        task: u32,
        states: BTreeMap<String, crate::checkpoint::KeyedSnapshot>,
    ) {
        let worker = usize::try_from(partition).unwrap_or(0) % self.outbox.senders.len();
        if self.outbox.flush(worker).is_err()
            || self.outbox.senders[worker]
                .send(Chunk::Restore(task, Box::new(states)))
                .is_err()
        {
            self.fail(anyhow::anyhow!(
                "pipeline `{}`: a partition worker stopped before the keyed state of partition {partition} could be restored",
                self.pipeline
            ));
        }
    }

    /// Partitions revoked: checkpoints (and commits) everything read from
    /// them, then forgets their state.
    fn on_revoke(
        &mut self,
        consumer: &BaseConsumer<GroupContext>,
        tpl: &TopicPartitionList,
        checkpoint: bool,
    ) {
        let parts: Vec<(String, i32)> = tpl
            .elements()
            .iter()
            .map(|e| (e.topic().to_string(), e.partition()))
            .collect();
        if checkpoint
            && !self.closing
            && self.error.is_none()
            && !parts.is_empty()
            && let Err(e) = self.checkpoint(BarrierKind::Periodic, consumer)
        {
            self.fail(e.context("checkpoint before giving up partitions failed"));
        }
        let mut tasks = Vec::new();
        for part in &parts {
            if let Some(a) = self.assigned.remove(part) {
                crate::obs::metrics::forget_consumer_lag(&self.pipeline, &part.0, part.1);
                tasks.push(a.task);
                self.checkpointer.task_names.remove(&a.task);
            }
        }
        if self.keyed && !tasks.is_empty() {
            // After what was read from them: their records are processed
            // on the state they belong to, then the state is dropped.
            if self.outbox.flush_all().is_ok() {
                for tx in &self.outbox.senders {
                    let _ = tx.send(Chunk::Forget(tasks.clone()));
                }
            }
        }
        if let Some(tx) = &self.window
            && !tasks.is_empty()
        {
            let _ = tx.send(WindowMsg::Forget(tasks));
        }
        tracing::info!(pipeline = %self.pipeline, partitions = ?parts, "Kafka partitions revoked");
    }

    /// What the window state of a partition depends on: the checkpoint shape
    /// without the source's connection settings and the worker count (a
    /// Kafka partition's task does not depend on them).
    fn state_shape(&self) -> BTreeMap<String, String> {
        let mut shape = self.checkpointer.shape.clone();
        shape.retain(|k, _| k != "source" && k != "partitions");
        shape
    }

    /// The position: each assigned partition's next offset.
    fn position(&self) -> Position {
        Position::Kafka(KafkaPosition {
            kafka: self
                .assigned
                .iter()
                .filter_map(|((t, p), a)| Some((t.clone(), *p, a.next?)))
                .collect(),
        })
    }

    /// Takes a checkpoint, writes the window state of each partition to the
    /// changelog and commits the offsets. Returns whether it did.
    fn checkpoint(
        &mut self,
        kind: BarrierKind,
        consumer: &BaseConsumer<GroupContext>,
    ) -> anyhow::Result<bool> {
        let position = self.position();
        let outbox = &mut self.outbox;
        let Some(checkpoint) = self
            .checkpointer
            .take(kind, position, &self.stats, &mut |b| outbox.barrier(b))?
        else {
            return Ok(false);
        };
        let Position::Kafka(KafkaPosition { kafka: offsets }) = &checkpoint.position else {
            unreachable!("a Kafka source's position")
        };
        let started = Instant::now();
        if let Some(changelog) = &self.changelog {
            let states: Vec<(String, TaskState)> = offsets
                .iter()
                .map(|(t, p, next)| {
                    (
                        changelog_key(&self.pipeline, t, *p),
                        TaskState {
                            offset: *next,
                            window: checkpoint.tasks.get(&format!("{t}/{p}")).cloned(),
                            keyed: keyed_states_of(&checkpoint.stages, t, *p),
                            shape: self.state_shape(),
                            parts: None,
                        },
                    )
                })
                .collect();
            changelog.write(&states, CHANGELOG_TIMEOUT)?;
        }
        if !offsets.is_empty() {
            let mut tpl = TopicPartitionList::new();
            for (t, p, next) in offsets {
                tpl.add_partition_offset(t, *p, Offset::Offset(*next))?;
            }
            // A commit refused (a rebalance under way) is not lost data: the
            // records after the last commit are read again.
            if let Err(e) = consumer.commit(&tpl, CommitMode::Sync) {
                tracing::warn!(pipeline = %self.pipeline, "offset commit failed: {e}");
            }
        }
        tracing::debug!(
            pipeline = %self.pipeline,
            id = checkpoint.id,
            ms = started.elapsed().as_secs_f64() * 1e3,
            "changelog written and offsets committed"
        );
        Ok(true)
    }

    /// Takes a periodic checkpoint if one is due and the source has moved.
    fn checkpoint_if_due(&mut self, consumer: &BaseConsumer<GroupContext>) -> anyhow::Result<()> {
        if !self.checkpointer.due(&self.stats) {
            return Ok(());
        }
        let position = self.position();
        if self.checkpointer.moved(&position) {
            self.checkpoint(BarrierKind::Periodic, consumer)?;
        } else {
            self.checkpointer.postpone();
        }
        Ok(())
    }

    /// Sends a record the source cannot turn into an event to the dead-letter
    /// sink: the reason names its topic, partition and offset; its key and
    /// Kafka timestamp go with it.
    fn reject(
        &self,
        message: &BorrowedMessage<'_>,
        reason: &str,
        original: &[u8],
    ) -> anyhow::Result<()> {
        let reason = format!(
            "{reason} (topic {}, partition {}, offset {})",
            message.topic(),
            message.partition(),
            message.offset()
        );
        self.dead_letter
            .send(&[crate::sink::dead_letter::DeadRecord {
                stage: "source",
                plugin: None,
                partition: None,
                reason: &reason,
                key: message.key().unwrap_or_default(),
                timestamp_ms: message.timestamp().to_millis(),
                original,
            }])
            .inspect_err(|_| {
                self.stats.failed.fetch_add(1, Ordering::Relaxed);
            })?;
        self.stats.rejected.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Hands one polled record to its worker.
    fn handle(&mut self, message: &BorrowedMessage<'_>) -> anyhow::Result<bool> {
        let tasked = self.window.is_some() || self.keyed;
        // A few assigned partitions: found by comparison, with no key to
        // allocate per record.
        let Some(a) = self
            .assigned
            .iter_mut()
            .find(|((t, p), _)| *p == message.partition() && t == message.topic())
            .map(|(_, a)| a)
        else {
            return Ok(true); // fetched before its partition was revoked
        };
        a.next = Some(message.offset() + 1);
        let task = tasked.then_some(a.task);
        let Some(value) = message.payload() else {
            return Ok(true); // a tombstone: no event
        };
        if value.is_empty() {
            return Ok(true);
        }
        self.stats.records_in.fetch_add(1, Ordering::Relaxed);
        let kafka_time = message.timestamp().to_millis();
        if value.len() > self.spec.max_line_bytes {
            let kept = &value[..value.len().min(super::TOO_LONG_PREFIX)];
            let reason = format!(
                "record of {} bytes is longer than max_line_bytes ({}); `original` holds its first {} bytes",
                value.len(),
                self.spec.max_line_bytes,
                kept.len()
            );
            self.reject(message, &reason, kept)?;
            return Ok(true);
        }
        // A Kafka record has no first line: a CSV header is in the config
        // (`csv.header`, checked when the source was built).
        let event = match super::LineDecoder::new(&self.spec).decode(&self.spec, value) {
            Ok(event) => event,
            Err(reason) => {
                self.reject(message, &reason, value)?;
                return Ok(true);
            }
        };
        let mut key = event.key.filter(|_| self.spec.decoder.has_key());
        let mut timestamp_ms = event
            .timestamp_ms
            .filter(|_| self.spec.decoder.has_timestamp());
        if !self.spec.decoder.has_key() {
            key = message.key().map(std::borrow::Cow::Borrowed);
        }
        if !self.spec.decoder.has_timestamp() {
            timestamp_ms = kafka_time;
        }
        let worker = match self.input.partition_by {
            PartitionBy::Source => {
                usize::try_from(message.partition()).unwrap_or(0) % self.outbox.senders.len()
            }
            PartitionBy::Key => self.router.route(key.as_deref()),
        };
        let headers = crate::kafka::headers_of(message);
        let record = Record {
            key: key.map(std::borrow::Cow::into_owned).unwrap_or_default(),
            value: event.value.unwrap_or_else(|| value.to_vec()),
            timestamp_ms: timestamp_ms.unwrap_or_else(now_ms),
            headers,
            task,
        };
        Ok(self.outbox.push(worker, record).is_ok())
    }
}

/// The keyed states of Kafka partition `topic`/`partition` among a
/// checkpoint's stage states (saved as `TOPIC/PARTITION keyed PLUGIN`), by
/// stage name (`keyed PLUGIN`).
fn keyed_states_of(
    stages: &crate::checkpoint::StageSnapshots,
    topic: &str,
    partition: i32,
) -> BTreeMap<String, crate::checkpoint::KeyedSnapshot> {
    let prefix = format!("{topic}/{partition} ");
    stages
        .iter()
        .filter_map(|(name, state)| match state {
            crate::checkpoint::StageSnapshot::Keyed(k) => {
                Some((name.strip_prefix(&prefix)?.to_string(), k.clone()))
            }
            crate::checkpoint::StageSnapshot::Dedup(_) => None,
        })
        .collect()
}

/// Runs a Kafka source until `stop()` turns true or the pipeline fails.
/// `checkpointer` decides when offsets are committed; `window` is the
/// window operator's input of a windowed pipeline (which then keeps its state
/// per Kafka partition and in the changelog).
///
/// # Errors
/// The consumer cannot be made or subscribe, the changelog cannot be read or
/// written, the dead-letter sink stopped, or a checkpoint failed.
#[allow(clippy::too_many_arguments)]
pub fn run(
    pipeline: &str,
    spec: &super::SourceSpec,
    input: &KafkaInput,
    router: Router,
    partitions: Vec<flume::Sender<Chunk>>,
    dead_letter: DeadLetter,
    stats: &Arc<Stats>,
    stop: &dyn Fn() -> bool,
    checkpointer: Checkpointer,
    window: Option<flume::Sender<WindowMsg>>,
    keyed: bool,
) -> anyhow::Result<()> {
    let base = crate::kafka::client_config(&input.brokers, &input.properties);
    let changelog = match window.is_some() || keyed {
        true => Some(Changelog::open(&base, &input.changelog_topic)?),
        false => None,
    };
    let side = Arc::new(Mutex::new(Side {
        pipeline: pipeline.to_string(),
        spec: spec.clone(),
        input: input.clone(),
        router,
        outbox: Outbox::new(partitions, stats.clone()),
        dead_letter,
        stats: stats.clone(),
        checkpointer,
        window,
        keyed,
        changelog,
        assigned: BTreeMap::new(),
        next_task: 0,
        error: None,
        closing: false,
    }));
    let mut config = base;
    if !input.properties.contains_key("statistics.interval.ms") {
        config.set("statistics.interval.ms", "1000");
    }
    let consumer: BaseConsumer<GroupContext> = config
        .set("group.id", &input.group_id)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set(
            "auto.offset.reset",
            match input.start {
                KafkaStart::Earliest => "earliest",
                KafkaStart::Latest => "latest",
                KafkaStart::Committed => "error",
            },
        )
        .create_with_context(GroupContext {
            side: side.clone(),
            log: crate::kafka::QuietLog::default(),
        })
        .with_context(|| format!("source `{}`: cannot make a Kafka consumer", spec.name))?;
    let topics: Vec<&str> = input.topics.iter().map(String::as_str).collect();
    consumer
        .subscribe(&topics)
        .with_context(|| format!("source `{}`: cannot subscribe to {topics:?}", spec.name))?;
    tracing::info!(pipeline, source = %spec.name, group = %input.group_id, topics = ?topics, "Kafka consumer started");
    let result = poll_loop(&consumer, &side, stop);
    // The last checkpoint: what was read is processed and committed.
    {
        let mut s = lock(&side);
        let flushed = s.outbox.flush_all().is_ok();
        if result.is_ok() && flushed && s.error.is_none() {
            let taken = s.checkpoint(BarrierKind::Stop, &consumer);
            s.closing = true;
            drop(s);
            taken?;
        } else {
            s.closing = true;
        }
    }
    drop(consumer); // leaves the group (a revocation that needs no checkpoint)
    result
}

fn poll_loop(
    consumer: &BaseConsumer<GroupContext>,
    side: &Mutex<Side>,
    stop: &dyn Fn() -> bool,
) -> anyhow::Result<()> {
    let mut until_check = CHECKPOINT_CHECK_RECORDS;
    let mut consumer_errors = crate::kafka::Throttle::default();
    while !stop() {
        // Nothing more buffered: hand on what is pending, then wait.
        let mut polled = consumer.poll(Duration::ZERO);
        if polled.is_none() {
            {
                let mut s = lock(side);
                if let Some(e) = s.error.take() {
                    return Err(e);
                }
                if s.outbox.flush_all().is_err() {
                    return Ok(()); // a worker stopped on an error
                }
                s.checkpoint_if_due(consumer)?;
            }
            polled = consumer.poll(super::POLL);
        }
        let mut s = lock(side);
        if let Some(e) = s.error.take() {
            return Err(e);
        }
        match polled {
            None => {}
            Some(Err(e))
                if e.rdkafka_error_code()
                    == Some(rdkafka::error::RDKafkaErrorCode::AutoOffsetReset) =>
            {
                return Err(anyhow::anyhow!(
                    "pipeline `{}`: a partition has no committed offset for group `{}` and start = \"committed\": {e}. Use start = \"earliest\" or \"latest\" for a new group",
                    s.pipeline,
                    s.input.group_id
                ));
            }
            // Transport and broker errors are retried by librdkafka.
            Some(Err(e)) if consumer_errors.ready() => {
                tracing::warn!(pipeline = %s.pipeline, "Kafka consumer: {e}");
            }
            Some(Err(_)) => {}
            Some(Ok(message)) => {
                if !s.handle(&message)? {
                    return Ok(()); // a worker stopped on an error
                }
                until_check -= 1;
                if until_check == 0 {
                    until_check = CHECKPOINT_CHECK_RECORDS;
                    s.checkpoint_if_due(consumer)?;
                }
            }
        }
    }
    Ok(())
}
