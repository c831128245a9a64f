//! The state and timers of a keyed-processor stage (a component of the
//! `sluice:plugin/keyed-processor@0.2.0` world), owned by the host, one
//! [`KeyedState`] per partition, and the rules by which a batch and the
//! timers reach the plugin ([`KeyedState::process`]).
//!
//! The model is Flink's `KeyedProcessFunction` on a keyed stream (per-key
//! value state, event-time and processing-time timers) and Spark's
//! `transformWithState`, with the plugin sandboxed and stateless: every call
//! carries the states of the keys it touches, and returns their changes.
//!
//! Rules:
//! - **Key**: the record key (set by the source's `key`, or a Kafka message
//!   key). A record without one is refused (the stage's `on_error`): Kafka
//!   Streams drops such records from keyed operations; sluice never drops
//!   silently.
//! - **Watermark**: per partition, the largest event time the stage has
//!   seen minus the stage's `watermark` delay (Flink's bounded
//!   out-of-orderness), moved record by record, never back.
//! - **Event-time timers** fire when `time <= watermark`, in time order,
//!   after the record that moved the watermark there (Flink fires timers when
//!   the watermark that follows a record arrives): the host cuts the batch
//!   after that record, calls the plugin with the records so far, then with
//!   the due timers. A timer set during a call is known when the call
//!   returns; one already due then fires before the next record. At the end
//!   of the input every event-time timer fires (Flink's final watermark,
//!   `Long.MAX_VALUE`, at the end of a bounded input).
//! - **Processing-time timers** fire when the wall clock reaches them, at
//!   the start of a batch.
//! - **One timer per (key, domain, time)**: setting it twice keeps one
//!   (Flink's `TimerService`).
//! - **TTL** (`state_ttl`): a state not written for that long (wall clock)
//!   is never handed to the plugin again (Flink's `OnCreateAndWrite` +
//!   `NeverReturnExpired`; Spark's TTL is processing time too); it is
//!   dropped at the next checkpoint or when the state is full.
//! - **Errors**: a failed call changes no state and no timer; a failed call
//!   of records is bisected until the records that fail alone are found
//!   (they go to the stage's `on_error`), so the rest runs as if they were
//!   not there. A failed timer call is retried one timer at a time; a timer
//!   that fails alone is logged, counted and dropped.
//! - **Bound**: `state_memory` bytes per partition (keys, values, timers,
//!   with a fixed overhead per entry); a record of a new key that would go
//!   past it is refused, after expired states are dropped. The check is made
//!   before each call on the bytes held then: what one call writes is
//!   counted after it, so one call's growth can pass the bound.

use std::collections::{BTreeSet, HashMap, HashSet};

use sluice_plugin_sdk::Batch;

use super::spill::Spill;
use crate::checkpoint::{B64, KeyedSnapshot};
use crate::wasm::keyed::{CallTimer, KeyedCall, KeyedReturn, TimeDomain, TimerChange};
use crate::wasm::plugin::CallError;

/// Bytes counted per state entry beyond its key and value: the map's slot,
/// the vectors' headers, two heap blocks and the allocator's share of them.
/// With [`TIMER_OVERHEAD`], from a measured run: 300,000 keys of one timer
/// each grew the daemon by ~640 bytes a key (the first estimate, 64 + 48,
/// undercounted four times).
const ENTRY_OVERHEAD: usize = 200;
/// Bytes counted per timer beyond its key: a set entry, and the by-key
/// index's entry with its own copy of the key.
const TIMER_OVERHEAD: usize = 250;
/// Bytes counted per removed key whose spill row awaits deletion.
const GONE_OVERHEAD: usize = 64;
/// An eviction brings the state down to this share of `state_memory`
/// (percent), so that evictions come in rounds, not at every call.
const EVICT_TO_PERCENT: u64 = 75;
/// Most timers handed to one call.
const TIMERS_PER_CALL: usize = 4096;
/// Most rounds of timer calls at one watermark (a timer handler may set a
/// timer that is due at once; a plugin that always does would loop).
const TIMER_ROUNDS: usize = 64;

/// A keyed stage's settings (from the processor's config entry).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyedSpec {
    /// `state_ttl` in ms; `None`: states never expire.
    pub ttl_ms: Option<i64>,
    /// `watermark`: the delay behind the largest event time, ms.
    pub watermark_ms: i64,
    /// `state_memory`: most bytes of state one partition keeps in memory.
    pub memory_bytes: u64,
    /// `state_spill`: past `memory_bytes`, the least recently used states
    /// go to a file on disk (else a record of a new key is refused).
    pub spill: bool,
    /// Which keyed stage of this plugin in the chain it is (0: the first):
    /// two stages of one plugin keep two states.
    pub instance: usize,
}

impl Default for KeyedSpec {
    fn default() -> Self {
        KeyedSpec {
            ttl_ms: None,
            watermark_ms: 0,
            memory_bytes: 256 << 20,
            spill: true,
            instance: 0,
        }
    }
}

impl KeyedSpec {
    /// The name a partition's state is saved under in a checkpoint: the
    /// partition and the plugin's file stem (not the stage's place in the
    /// chain, so adding a stage before it keeps its state; not its version,
    /// so a new version receives the old one's state); a second stage of
    /// the same plugin has `#2` after it, and so on.
    pub fn state_name(&self, partition: usize, plugin: &str) -> String {
        format!("p{partition} {}", self.stage_name(plugin))
    }

    /// The name of the stage's state without its partition: `keyed PLUGIN`
    /// (`keyed PLUGIN#2` for a second stage of the same plugin). A Kafka
    /// partition's changelog record keeps its keyed states under these names
    /// ([`crate::checkpoint::changelog::TaskState::keyed`]).
    pub fn stage_name(&self, plugin: &str) -> String {
        match self.instance {
            0 => format!("keyed {plugin}"),
            n => format!("keyed {plugin}#{}", n + 1),
        }
    }

    /// The name a Kafka partition's state is handed to the checkpointer
    /// under, by the worker that holds it (see
    /// [`crate::checkpoint::task_state_name`]).
    pub fn task_state_name(&self, task: u32, plugin: &str) -> String {
        crate::checkpoint::task_state_name(task, &self.stage_name(plugin))
    }
}

#[derive(Debug, Clone)]
struct Entry {
    value: Vec<u8>,
    /// Wall clock of the last write, ms since the epoch.
    written_ms: i64,
    /// Changed since it was read from the spill file (or never there): an
    /// eviction writes it out.
    dirty: bool,
    /// The spill file has a row for the key (maybe an older value): a
    /// removal must delete it.
    on_disk: bool,
    /// The call count ([`KeyedState::tick`]) when it was last handed to the
    /// plugin: the least recently used are evicted first.
    used: u64,
}

/// What a keyed stage made of a batch (or of timers alone).
#[derive(Debug, Default)]
pub struct KeyedOutput {
    /// Records passed on: the plugin's output, in call order.
    pub events: Batch,
    /// (input index, reason) of records the plugin refused.
    pub rejected: Vec<(u32, String)>,
    /// (input index, reason) of records refused here (no key, a full state)
    /// or isolated as making the plugin fail.
    pub failed: Vec<(u32, String)>,
    /// Timers that fired and were handled.
    pub timers_fired: u64,
    /// Timers dropped because their call failed alone.
    pub timers_failed: u64,
}

/// One partition's keyed state: every key's state bytes and timers, and the
/// watermark.
#[derive(Debug, Default)]
pub struct KeyedState {
    /// The states held in memory: every key's when nothing was spilled.
    entries: HashMap<Vec<u8>, Entry>,
    /// The states evicted to disk (created at the first eviction).
    spill: Option<Spill>,
    /// Keys removed from memory whose spill row is stale: deleted from the
    /// file at the next eviction, never read from it meanwhile.
    gone: HashSet<Vec<u8>>,
    /// The spill file failed before anything was written to it: the state
    /// stays in memory, and new keys past the bound are refused.
    spill_broken: bool,
    /// The spill file failed while it held states (redb refuses every read
    /// after a failed write): the stage cannot go on without them, and its
    /// next call fails the pipeline with this reason.
    spill_dead: Option<String>,
    /// Calls so far (see [`Entry::used`]).
    tick: u64,
    event_timers: BTreeSet<(i64, Vec<u8>)>,
    /// The event-time timers again, by key: whether a key has one due.
    event_by_key: HashMap<Vec<u8>, BTreeSet<i64>>,
    processing_timers: BTreeSet<(i64, Vec<u8>)>,
    max_ts: Option<i64>,
    bytes: usize,
}

/// A keyed stage's states on one partition worker, by task: `None` for the
/// worker's partition itself (every source but Kafka), `Some(id)` for each
/// Kafka partition the worker reads (`id`: the source's task id of the
/// partition), so that a Kafka partition's state — keys, timers and
/// watermark — is its own and can move to another daemon with it (Kafka
/// Streams keeps one state store per task, a task per input partition;
/// Flink's key groups play that part there).
pub type TaskStates = std::collections::BTreeMap<Option<u32>, KeyedState>;

/// How the stage calls the plugin: one `process-keyed` call.
pub type Call<'a> = dyn FnMut(&mut KeyedCall) -> Result<KeyedReturn, CallError> + 'a;

impl KeyedState {
    /// The state saved in `snapshot`.
    pub fn restore(snapshot: &KeyedSnapshot) -> Self {
        let mut state = KeyedState {
            max_ts: snapshot.max_ts,
            ..KeyedState::default()
        };
        for (key, value, written_ms) in &snapshot.entries {
            state.put(&key.0, value.0.clone(), *written_ms);
        }
        for (time, key) in &snapshot.event_timers {
            state.set_timer(TimeDomain::EventTime, *time, &key.0);
        }
        for (time, key) in &snapshot.processing_timers {
            state.set_timer(TimeDomain::ProcessingTime, *time, &key.0);
        }
        state
    }

    /// The live state for a checkpoint (expired states left out), keys
    /// sorted.
    ///
    /// # Errors
    /// The spill file cannot be read.
    pub fn snapshot(&self, spec: &KeyedSpec, now: i64) -> anyhow::Result<KeyedSnapshot> {
        let mut entries: Vec<(B64, B64, i64)> = self
            .entries
            .iter()
            .filter(|(_, e)| !expired(spec, e, now))
            .map(|(k, e)| (B64(k.clone()), B64(e.value.clone()), e.written_ms))
            .collect();
        if let Some(spill) = &self.spill {
            spill.for_each(|key, (value, written_ms)| {
                let live = spec
                    .ttl_ms
                    .is_none_or(|ttl| written_ms.saturating_add(ttl) > now);
                if live && !self.entries.contains_key(key) && !self.gone.contains(key) {
                    entries.push((B64(key.to_vec()), B64(value), written_ms));
                }
            })?;
        }
        entries.sort();
        let timers = |set: &BTreeSet<(i64, Vec<u8>)>| {
            set.iter()
                .map(|(t, k)| (*t, B64(k.clone())))
                .collect::<Vec<_>>()
        };
        Ok(KeyedSnapshot {
            max_ts: self.max_ts,
            entries,
            event_timers: timers(&self.event_timers),
            processing_timers: timers(&self.processing_timers),
        })
    }

    /// Keys with a state, in memory and spilled (expired ones included
    /// until dropped).
    pub fn len(&self) -> usize {
        self.entries.len() + self.spilled()
    }

    /// Keys whose state is spilled to disk (and not in memory): the file's
    /// rows but those of keys in memory (an older copy) or removed.
    pub fn spilled(&self) -> usize {
        let rows = self.spill.as_ref().map_or(0, |s| s.keys() as usize);
        let shadowed = self.entries.values().filter(|e| e.on_disk).count() + self.gone.len();
        rows - shadowed
    }

    /// Whether the spill file failed (the state then stays in memory, or
    /// the stage fails).
    pub fn spill_failed(&self) -> bool {
        self.spill_broken || self.spill_dead.is_some()
    }

    /// Whether no key has a state.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes of state in memory, counted against `state_memory`.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Timers set, both domains.
    pub fn timers(&self) -> usize {
        self.event_timers.len() + self.processing_timers.len()
    }

    /// The state of `key` held in memory, unless it expired (see
    /// [`KeyedState::load`] for spilled ones).
    pub fn get(&self, spec: &KeyedSpec, key: &[u8], now: i64) -> Option<&[u8]> {
        self.entries
            .get(key)
            .filter(|e| !expired(spec, e, now))
            .map(|e| e.value.as_slice())
    }

    /// The watermark: the largest event time seen minus the delay.
    pub fn watermark(&self, spec: &KeyedSpec) -> i64 {
        self.max_ts
            .map_or(i64::MIN, |m| m.saturating_sub(spec.watermark_ms))
    }

    /// Whether a processing-time timer is due at `now`.
    pub fn processing_due(&self, now: i64) -> bool {
        self.processing_timers
            .first()
            .is_some_and(|(t, _)| *t <= now)
    }

    /// Sets `key`'s state; the key is copied only when it is new.
    fn put(&mut self, key: &[u8], value: Vec<u8>, written_ms: i64) {
        self.bytes += value.len();
        let used = self.tick;
        match self.entries.get_mut(key) {
            Some(entry) => {
                self.bytes -= entry.value.len();
                entry.value = value;
                entry.written_ms = written_ms;
                entry.dirty = true;
                entry.used = used;
            }
            None => {
                self.bytes += key.len() + ENTRY_OVERHEAD;
                let on_disk = self.gone.remove(key);
                if on_disk {
                    self.bytes -= key.len() + GONE_OVERHEAD;
                }
                self.entries.insert(
                    key.to_vec(),
                    Entry {
                        value,
                        written_ms,
                        dirty: true,
                        on_disk,
                        used,
                    },
                );
            }
        }
    }

    fn remove(&mut self, key: &[u8]) {
        if let Some(old) = self.entries.remove(key) {
            self.bytes -= key.len() + old.value.len() + ENTRY_OVERHEAD;
            if old.on_disk {
                self.bytes += key.len() + GONE_OVERHEAD;
                self.gone.insert(key.to_vec());
            }
        }
    }

    /// Reads the spilled states of `keys` into memory (once each; a key in
    /// memory or removed is not read). Returns the keys that could not be
    /// read, with why.
    fn load<'k>(&mut self, keys: impl Iterator<Item = &'k [u8]>) -> Result<(), String> {
        let Some(spill) = &self.spill else {
            return Ok(());
        };
        let mut wanted: Vec<&[u8]> = keys
            .filter(|k| !self.entries.contains_key(*k) && !self.gone.contains(*k))
            .collect();
        wanted.sort_unstable();
        wanted.dedup();
        if wanted.is_empty() {
            return Ok(());
        }
        let found = match spill.get_many(wanted.iter().copied()) {
            Ok(found) => found,
            Err(e) => {
                let reason = format!("keyed state: the spill file cannot be read: {e:#}");
                self.spill_dead = Some(reason.clone());
                return Err(reason);
            }
        };
        for (key, found) in wanted.into_iter().zip(found) {
            if let Some((value, written_ms)) = found {
                self.bytes += key.len() + value.len() + ENTRY_OVERHEAD;
                self.entries.insert(
                    key.to_vec(),
                    Entry {
                        value,
                        written_ms,
                        dirty: false,
                        on_disk: true,
                        used: self.tick,
                    },
                );
            }
        }
        Ok(())
    }

    /// Whether states past the bound go to disk (not when the spill file
    /// failed, or `state_spill = false`).
    fn spills(&self, spec: &KeyedSpec) -> bool {
        spec.spill && !self.spill_broken
    }

    /// When the state in memory is past `state_memory`: evicts the least
    /// recently used states to the spill file (writing those changed since
    /// they were read from it) until it is at [`EVICT_TO_PERCENT`] of it,
    /// and deletes the rows of removed keys. Timers stay in memory. A spill
    /// file that fails is logged, and the state stays in memory from then
    /// on (new keys past the bound are then refused).
    fn evict(&mut self, spec: &KeyedSpec) {
        if !self.spills(spec) || self.bytes as u64 <= spec.memory_bytes {
            return;
        }
        if self.spill.is_none() {
            match Spill::open() {
                Ok(spill) => {
                    tracing::info!(
                        keys = self.entries.len(),
                        bytes = self.bytes,
                        state_memory = spec.memory_bytes,
                        "keyed state past state_memory: the least recently used states spill to disk"
                    );
                    self.spill = Some(spill);
                }
                Err(e) => {
                    tracing::error!(
                        "keyed state cannot spill to disk, it stays in memory and new keys past state_memory are refused: {e:#}"
                    );
                    self.spill_broken = true;
                    return;
                }
            }
        }
        let target = (spec.memory_bytes / 100 * EVICT_TO_PERCENT) as usize;
        let gone_bytes: usize = self.gone.iter().map(|k| k.len() + GONE_OVERHEAD).sum();
        let mut by_use: Vec<(u64, &Vec<u8>, &Entry)> =
            self.entries.iter().map(|(k, e)| (e.used, k, e)).collect();
        by_use.sort_unstable_by_key(|(used, _, _)| *used);
        let mut left = self.bytes - gone_bytes;
        let mut evicted: Vec<&Vec<u8>> = Vec::new();
        for (_, key, entry) in by_use {
            if left <= target {
                break;
            }
            left -= key.len() + entry.value.len() + ENTRY_OVERHEAD;
            evicted.push(key);
        }
        let puts = evicted.iter().filter_map(|k| {
            let e = &self.entries[*k];
            e.dirty
                .then_some((k.as_slice(), e.value.as_slice(), e.written_ms))
        });
        let spill = self.spill.as_mut().expect("opened above");
        let held = spill.keys() > 0;
        if let Err(e) = spill.write(puts, self.gone.iter().map(Vec::as_slice)) {
            if held {
                // What the file holds cannot be read any more.
                self.spill_dead = Some(format!(
                    "keyed state: the spill file failed while it held {} states (a full disk?): {e:#}",
                    spill.keys()
                ));
            } else {
                tracing::error!(
                    "keyed state cannot spill to disk, it stays in memory and new keys past state_memory are refused: {e:#}"
                );
                self.spill = None;
                self.spill_broken = true;
            }
            return;
        }
        let evicted: Vec<Vec<u8>> = evicted.into_iter().cloned().collect();
        for key in &evicted {
            if let Some(old) = self.entries.remove(key) {
                self.bytes -= key.len() + old.value.len() + ENTRY_OVERHEAD;
            }
        }
        self.gone.clear();
        self.bytes -= gone_bytes;
    }

    fn timer_set(&mut self, domain: TimeDomain) -> &mut BTreeSet<(i64, Vec<u8>)> {
        match domain {
            TimeDomain::EventTime => &mut self.event_timers,
            TimeDomain::ProcessingTime => &mut self.processing_timers,
        }
    }

    fn set_timer(&mut self, domain: TimeDomain, time: i64, key: &[u8]) {
        if self.timer_set(domain).insert((time, key.to_vec())) {
            self.bytes += key.len() + TIMER_OVERHEAD;
            if domain == TimeDomain::EventTime {
                match self.event_by_key.get_mut(key) {
                    Some(times) => {
                        times.insert(time);
                    }
                    None => {
                        self.event_by_key
                            .insert(key.to_vec(), BTreeSet::from([time]));
                    }
                }
            }
        }
    }

    fn delete_timer(&mut self, domain: TimeDomain, time: i64, key: &[u8]) {
        if self.timer_set(domain).remove(&(time, key.to_vec())) {
            self.bytes -= key.len() + TIMER_OVERHEAD;
            if domain == TimeDomain::EventTime {
                self.unindex(time, key);
            }
        }
    }

    /// Drops an event-time timer from the index by key.
    fn unindex(&mut self, time: i64, key: &[u8]) {
        if let Some(times) = self.event_by_key.get_mut(key) {
            times.remove(&time);
            if times.is_empty() {
                self.event_by_key.remove(key);
            }
        }
    }

    /// Whether `key` has an event-time timer due at `watermark`.
    fn key_due(&self, key: &[u8], watermark: i64) -> bool {
        self.event_by_key
            .get(key)
            .and_then(|times| times.first())
            .is_some_and(|t| *t <= watermark)
    }

    /// Drops every expired state.
    fn drop_expired(&mut self, spec: &KeyedSpec, now: i64) {
        if spec.ttl_ms.is_none() {
            return;
        }
        let dead: Vec<Vec<u8>> = self
            .entries
            .iter()
            .filter(|(_, e)| expired(spec, e, now))
            .map(|(k, _)| k.clone())
            .collect();
        for key in dead {
            self.remove(&key);
        }
    }

    /// Applies what a successful call returned: `keys` are the call's.
    fn apply(&mut self, keys: &[Vec<u8>], ret: &mut KeyedReturn, now: i64) {
        for (group, value) in std::mem::take(&mut ret.updates) {
            let key = &keys[group as usize];
            match value {
                Some(value) => self.put(key, value, now),
                None => self.remove(key),
            }
        }
        for change in std::mem::take(&mut ret.timers) {
            match change {
                TimerChange::Set(t) => self.set_timer(t.domain, t.time, &keys[t.group as usize]),
                TimerChange::Delete(t) => {
                    self.delete_timer(t.domain, t.time, &keys[t.group as usize])
                }
            }
        }
    }

    /// Runs `batch` through the plugin (`call`) under the rules of the
    /// module: processing-time timers due at `now` first, then the records,
    /// cut where the watermark passes an event-time timer, then the timers
    /// due at the batch's final watermark. `stop`: the stage's `on_error` is
    /// `stop` (a failed call is returned, not bisected). `bisect_budget`:
    /// most failed calls a bisection may make.
    ///
    /// # Errors
    /// Only with `stop`: the first failed call; the state is then as it was
    /// after the last successful call.
    pub fn process(
        &mut self,
        spec: &KeyedSpec,
        batch: &Batch,
        now: i64,
        stop: bool,
        bisect_budget: usize,
        call: &mut Call<'_>,
    ) -> Result<KeyedOutput, CallError> {
        let mut run = Run {
            spec,
            now,
            stop,
            budget: bisect_budget,
            limit: bisect_budget,
            out: KeyedOutput {
                events: Batch::with_capacity(batch.len(), batch.values_len()),
                ..KeyedOutput::default()
            },
        };
        self.tick += 1;
        self.fail_if_dead()?;
        self.fire(&mut run, TimeDomain::ProcessingTime, now, call)?;
        // The largest event time and the watermark after each record of
        // the batch (they move record by record).
        let mut max_ts = self.max_ts;
        let (upto, after): (Vec<Option<i64>>, Vec<i64>) = batch
            .iter()
            .map(|event| {
                let ts = event.timestamp_ms();
                max_ts = Some(max_ts.map_or(ts, |m| m.max(ts)));
                (
                    max_ts,
                    max_ts.map_or(i64::MIN, |m| m.saturating_sub(spec.watermark_ms)),
                )
            })
            .unzip();
        let all: Vec<usize> = (0..batch.len()).collect();
        let marks = Marks {
            upto: &upto,
            after: &after,
        };
        self.run_records(&mut run, batch, &all, &marks, call)?;
        self.evict(spec);
        self.fail_if_dead()?;
        Ok(run.out)
    }

    /// A spill file that failed while holding states fails the stage (see
    /// `spill_dead`): a `Trap`, which the worker takes as a batch that
    /// cannot go on, whatever `on_error` says.
    fn fail_if_dead(&self) -> Result<(), CallError> {
        match &self.spill_dead {
            Some(reason) => Err(CallError::Trap(format!(
                "{reason}; the pipeline stops (a restart resumes from the last checkpoint)"
            ))),
            None => Ok(()),
        }
    }

    /// At the end of the input: every event-time timer fires (the final
    /// watermark), in time order.
    ///
    /// # Errors
    /// As [`KeyedState::process`].
    pub fn finish(
        &mut self,
        spec: &KeyedSpec,
        now: i64,
        stop: bool,
        call: &mut Call<'_>,
    ) -> Result<KeyedOutput, CallError> {
        let mut run = Run {
            spec,
            now,
            stop,
            budget: 0,
            limit: 0,
            out: KeyedOutput::default(),
        };
        self.fail_if_dead()?;
        self.fire(&mut run, TimeDomain::EventTime, i64::MAX, call)?;
        self.fail_if_dead()?;
        Ok(run.out)
    }

    /// Runs the records `indices` of `batch` (in order) through the plugin
    /// in parts, each ending at the record that moves the watermark past a
    /// known timer, the timers due then fired after it. When a timer a call
    /// sets is due at a record before the part's last, the call's result is
    /// dropped (nothing was applied: a call is a function of its input) and
    /// the part is run again up to that record, so the timer fires before the
    /// next one, as if the host had known it. A failed call is bisected, each
    /// half run the same way.
    fn run_records(
        &mut self,
        run: &mut Run<'_>,
        batch: &Batch,
        indices: &[usize],
        marks: &Marks<'_>,
        call: &mut Call<'_>,
    ) -> Result<(), CallError> {
        let after = marks.after;
        let key_of = |i: usize| batch.get(i).and_then(|e| e.key()).unwrap_or_default();
        let mut rest = indices;
        // Most records a part takes: after a cut, twice the part that stood,
        // doubling while no cut comes, so that a run of cuts (timers due at
        // once, a record far ahead in event time) costs calls in proportion
        // to the records, not to their square.
        let mut limit = usize::MAX;
        while !rest.is_empty() {
            // The part ends before the first record whose key has a known
            // timer due at the watermark before it (timers due before the
            // part's first record have fired).
            let end = match self.event_timers.first() {
                Some((earliest, _)) => (1..rest.len())
                    .find(|&pos| {
                        let before = after[rest[pos - 1]];
                        *earliest <= before && self.key_due(key_of(rest[pos]), before)
                    })
                    .unwrap_or(rest.len()),
                None => rest.len(),
            };
            let mut part = &rest[..end.min(limit)];
            let mut cut_here = false;
            let watermark = self.watermark(run.spec);
            loop {
                let (prepared, refused) = self.prepare(run, batch, part, watermark);
                let Some((mut input, taken)) = prepared else {
                    run.out.failed.extend(refused);
                    break;
                };
                match call(&mut input) {
                    Ok(mut ret) => {
                        if let Some(cut) =
                            first_missed(&ret.timers, &input.keys, part, after, key_of)
                        {
                            part = &part[..cut];
                            cut_here = true;
                            continue;
                        }
                        run.out.failed.extend(refused);
                        self.take(run, &input.keys, &taken, &mut ret);
                    }
                    Err(error) if run.stop => return Err(error),
                    Err(error) if taken.len() == 1 => {
                        run.out.failed.extend(refused);
                        run.out.failed.push((taken[0] as u32, error.to_string()));
                    }
                    Err(error) if run.budget == 0 => {
                        run.out.failed.extend(refused);
                        // The wording of a plain stage's (processor.rs).
                        let reason = format!(
                            "{error} (not isolated: bisection of this batch stopped after {} failed calls)",
                            run.limit
                        );
                        run.out
                            .failed
                            .extend(taken.iter().map(|&i| (i as u32, reason.clone())));
                    }
                    Err(_) => {
                        // Each half refuses its own records left out.
                        run.budget -= 1;
                        let (left, right) = part.split_at(part.len() / 2);
                        self.run_records(run, batch, left, marks, call)?;
                        self.run_records(run, batch, right, marks, call)?;
                    }
                }
                break;
            }
            limit = if cut_here {
                part.len().saturating_mul(2)
            } else {
                limit.saturating_mul(2)
            };
            let last = *part.last().expect("a part is not empty");
            self.max_ts = marks.upto[last];
            self.fire(run, TimeDomain::EventTime, after[last], call)?;
            rest = &rest[part.len()..];
        }
        Ok(())
    }

    /// The call for the records `indices` of `batch` and the indices it
    /// took (`None` when no record is left), and the records left out with
    /// why: records without a key, and records of new keys a full state
    /// cannot take.
    fn prepare(
        &mut self,
        run: &Run<'_>,
        batch: &Batch,
        indices: &[usize],
        watermark: i64,
    ) -> Prepared {
        let mut refused = Vec::new();
        let mut input = KeyedCall {
            watermark,
            now: run.now,
            events: Batch::with_capacity(indices.len(), 0),
            ..KeyedCall::default()
        };
        let mut groups: HashMap<&[u8], u32> = HashMap::new();
        let mut taken: Vec<usize> = Vec::with_capacity(indices.len());
        let (mut new_bytes, mut new_keys) = (0usize, 0usize);
        let key_of = |i: usize| batch.get(i).and_then(|e| e.key()).filter(|k| !k.is_empty());
        if let Err(reason) = self.load(indices.iter().filter_map(|&i| key_of(i))) {
            // The spilled states cannot be read: every record of the call
            // is refused with why (none can be run on a state it lacks).
            refused.extend(indices.iter().map(|&i| (i as u32, reason.clone())));
            return (None, refused);
        }
        let spills = self.spills(run.spec);
        for &i in indices {
            let Some(event) = batch.get(i) else { continue };
            let key = match event.key() {
                Some(k) if !k.is_empty() => k,
                _ => {
                    refused.push((
                        i as u32,
                        "no record key: a keyed processor keeps state per record key (set `key` on the source, or key the Kafka messages)".into(),
                    ));
                    continue;
                }
            };
            let group = match groups.get(key) {
                Some(g) => *g,
                None => {
                    let state = self.get(run.spec, key, run.now).map(<[u8]>::to_vec);
                    if let Some(entry) = self.entries.get_mut(key) {
                        entry.used = self.tick;
                    }
                    if state.is_none() && !self.entries.contains_key(key) && !spills {
                        let want = self.bytes + new_bytes + key.len() + ENTRY_OVERHEAD;
                        if want as u64 > run.spec.memory_bytes {
                            self.drop_expired(run.spec, run.now);
                        }
                        let want = self.bytes + new_bytes + key.len() + ENTRY_OVERHEAD;
                        if want as u64 > run.spec.memory_bytes {
                            let spill = if self.spill_broken {
                                "; its spill file failed (see the log), so it cannot spill to disk"
                            } else {
                                ""
                            };
                            refused.push((
                                i as u32,
                                format!(
                                    "keyed state full: this partition holds {} bytes of state for {} keys (with the new keys of this batch), state_memory = {}{spill} (raise it, set a state_ttl, or have the plugin clear states it no longer needs)",
                                    self.bytes + new_bytes,
                                    self.entries.len() + new_keys,
                                    run.spec.memory_bytes
                                ),
                            ));
                            continue;
                        }
                        new_bytes += key.len() + ENTRY_OVERHEAD;
                        new_keys += 1;
                    }
                    let g = input.keys.len() as u32;
                    input.keys.push(key.to_vec());
                    input.states.push(state);
                    groups.insert(key, g);
                    g
                }
            };
            input.events.push_event(&event);
            input.groups.push(group);
            taken.push(i);
        }
        ((!taken.is_empty()).then_some((input, taken)), refused)
    }

    /// Applies a successful call of the records `taken` and keeps its output.
    fn take(
        &mut self,
        run: &mut Run<'_>,
        keys: &[Vec<u8>],
        taken: &[usize],
        ret: &mut KeyedReturn,
    ) {
        self.apply(keys, ret, run.now);
        for (j, reason) in std::mem::take(&mut ret.rejected) {
            run.out.rejected.push((taken[j as usize] as u32, reason));
        }
        for event in &ret.events {
            run.out.events.push_event(&event);
        }
    }

    /// Fires the timers of `domain` due at `at` (`time <= at`), in time
    /// order, in calls of at most [`TIMERS_PER_CALL`], until none is due.
    fn fire(
        &mut self,
        run: &mut Run<'_>,
        domain: TimeDomain,
        at: i64,
        call: &mut Call<'_>,
    ) -> Result<(), CallError> {
        // Every timer due now fires; timers the handlers set that are due
        // at once fire in further rounds, at most TIMER_ROUNDS of them (a
        // plugin that always sets one would loop).
        let mut initial = self
            .timer_set(domain)
            .iter()
            .take_while(|(t, _)| *t <= at)
            .count();
        let mut rounds = 0;
        loop {
            if initial == 0 {
                if rounds == TIMER_ROUNDS {
                    let left = self
                        .timer_set(domain)
                        .iter()
                        .take_while(|(t, _)| *t <= at)
                        .count();
                    if left > 0 {
                        tracing::warn!(
                            ?domain,
                            timers = left,
                            "timers that set timers due at once: {TIMER_ROUNDS} rounds fired, {left} timer(s) left for the next batch"
                        );
                    }
                    return Ok(());
                }
                rounds += 1;
            }
            let mut due: Vec<(i64, Vec<u8>)> = Vec::new();
            let set = self.timer_set(domain);
            while due.len() < TIMERS_PER_CALL && set.first().is_some_and(|(t, _)| *t <= at) {
                due.push(set.pop_first().expect("a first timer"));
            }
            initial = initial.saturating_sub(due.len());
            if due.is_empty() {
                return Ok(());
            }
            if let Err(reason) = self.load(due.iter().map(|(_, k)| k.as_slice())) {
                // Tried again at the next batch: a timer is not lost to a
                // spill file that cannot be read now.
                tracing::error!(?domain, timers = due.len(), "timers wait: {reason}");
                self.timer_set(domain).extend(due);
                return Ok(());
            }
            for (time, key) in &due {
                self.bytes -= key.len() + TIMER_OVERHEAD;
                if domain == TimeDomain::EventTime {
                    self.unindex(*time, key);
                }
            }
            let called = self.call_timers(run, domain, &due, call);
            // States read back for the timers go out again before the next
            // round, so that timers firing together keep to the bound.
            self.evict(run.spec);
            match called {
                Ok(()) => {}
                Err(error) if run.stop => return Err(error),
                Err(_) => {
                    // One timer at a time: the ones that fail alone are
                    // dropped.
                    for timer in &due {
                        if let Err(error) =
                            self.call_timers(run, domain, std::slice::from_ref(timer), call)
                        {
                            run.out.timers_failed += 1;
                            tracing::error!(
                                key = %String::from_utf8_lossy(&timer.1),
                                time = timer.0,
                                ?domain,
                                "a timer failed and is dropped: {error}"
                            );
                        }
                    }
                }
            }
        }
    }

    /// One call with `due` timers (time order) and their keys' states.
    fn call_timers(
        &mut self,
        run: &mut Run<'_>,
        domain: TimeDomain,
        due: &[(i64, Vec<u8>)],
        call: &mut Call<'_>,
    ) -> Result<(), CallError> {
        let mut input = KeyedCall {
            watermark: self.watermark(run.spec),
            now: run.now,
            ..KeyedCall::default()
        };
        let mut groups: HashMap<&[u8], u32> = HashMap::new();
        for (time, key) in due {
            let group = *groups.entry(key.as_slice()).or_insert_with(|| {
                input.keys.push(key.clone());
                input
                    .states
                    .push(self.get(run.spec, key, run.now).map(<[u8]>::to_vec));
                input.keys.len() as u32 - 1
            });
            input.fired.push(CallTimer {
                group,
                domain,
                time: *time,
            });
        }
        let mut ret = call(&mut input)?;
        let keys = input.keys;
        self.apply(&keys, &mut ret, run.now);
        run.out.timers_fired += due.len() as u64;
        for event in &ret.events {
            run.out.events.push_event(&event);
        }
        Ok(())
    }
}

/// Where a call of the records `part` should have been cut: the first
/// position (≥ 1) of a record whose key got, from this call, an event-time
/// timer due at the watermark before that record (`after` of the record
/// before it) — the timer should have fired first. A timer set then deleted
/// by the call counts too (it was due in between); one set by a record after
/// that position gives a cut that was not needed, and the run again finds
/// nothing to cut. `None`: the call's result stands.
fn first_missed<'b>(
    changes: &[TimerChange],
    keys: &[Vec<u8>],
    part: &[usize],
    after: &[i64],
    key_of: impl Fn(usize) -> &'b [u8],
) -> Option<usize> {
    // Per key of the call, its earliest event-time timer set by the call.
    let mut earliest: HashMap<&[u8], i64> = HashMap::new();
    for change in changes {
        if let TimerChange::Set(t) = change
            && t.domain == TimeDomain::EventTime
        {
            let e = earliest
                .entry(keys[t.group as usize].as_slice())
                .or_insert(t.time);
            *e = (*e).min(t.time);
        }
    }
    if earliest.is_empty() {
        return None;
    }
    (1..part.len()).find(|&pos| {
        earliest
            .get(key_of(part[pos]))
            .is_some_and(|t| *t <= after[part[pos - 1]])
    })
}

/// A call ready to make with the batch indices it holds (`None`: no record
/// left), and the records refused before it, with why.
type Prepared = (Option<(KeyedCall, Vec<usize>)>, Vec<(u32, String)>);

/// Per record of a batch: the largest event time and the watermark after it.
struct Marks<'b> {
    upto: &'b [Option<i64>],
    after: &'b [i64],
}

/// One batch's run through the state.
struct Run<'s> {
    spec: &'s KeyedSpec,
    now: i64,
    stop: bool,
    budget: usize,
    /// The budget the batch started with (`bisect_limit`), for the reason
    /// of records left not isolated.
    limit: usize,
    out: KeyedOutput,
}

fn expired(spec: &KeyedSpec, entry: &Entry, now: i64) -> bool {
    spec.ttl_ms
        .is_some_and(|ttl| entry.written_ms.saturating_add(ttl) <= now)
}

/// The wall clock in ms since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// `sluice plugin run` for a keyed processor (as
/// [`crate::wasm::plugin_run::run`] for the others): the daemon's keyed state
/// ([`crate::pipeline::keyed::KeyedState`]) over one partition, a batch per
/// `--batch` lines, the end of the input firing every event-time timer; the
/// state of each key is printed on `diag` at the end (`state: KEY = VALUE`,
/// in key order, the value as text when it is UTF-8).
pub fn run_plugin(
    plugin: &crate::wasm::plugin::Plugin,
    options: &crate::wasm::plugin_run::RunOptions,
    input: impl std::io::BufRead,
    out: &mut impl std::io::Write,
    diag: &mut impl std::io::Write,
    keep_output: bool,
) -> anyhow::Result<crate::wasm::plugin_run::RunReport> {
    use crate::wasm::plugin_run::{RunReport, for_each_event};
    let tags = crate::wasm::plugin::LogTags::standalone("plugin-run", plugin);
    let start = || {
        let mut instance = plugin
            .instantiate(&options.config, options.limits, tags.clone())
            .map_err(|e| {
                anyhow::anyhow!("{} ({}) does not start: {e}", plugin.name, plugin.version)
            })?;
        if let Some(tables) = &options.tables {
            instance.set_tables(tables.clone());
        }
        anyhow::Ok(instance)
    };
    let mut instance = start()?;
    let spec = KeyedSpec::default();
    let mut state = KeyedState::default();
    let mut report = RunReport::default();
    let mut batch = Batch::new();
    let mut lines: Vec<u64> = Vec::new();
    let emit = |got: KeyedOutput,
                lines: &[u64],
                report: &mut RunReport,
                out: &mut dyn std::io::Write,
                diag: &mut dyn std::io::Write|
     -> anyhow::Result<()> {
        for (index, reason) in &got.rejected {
            writeln!(diag, "rejected: line {}: {reason}", lines[*index as usize])?;
        }
        report.rejected += got.rejected.len() as u64;
        for (index, reason) in &got.failed {
            writeln!(diag, "failed: line {}: {reason}", lines[*index as usize])?;
        }
        report.failed += got.failed.len() as u64;
        for event in &got.events {
            report.emit(event.value(), lines, keep_output, out, diag)?;
        }
        Ok(())
    };
    let mut call = |c: &mut crate::wasm::keyed::KeyedCall| {
        let result = instance.process_keyed(c);
        if let Err(e) = &result
            && e.poisons_instance()
            && let Ok(fresh) = start()
        {
            instance = fresh;
        }
        result
    };
    for_each_event(
        input,
        options,
        &mut report,
        diag,
        |line_no, key, ts, line, _members, report, diag| {
            if key.is_none_or(<[u8]>::is_empty) {
                // As the daemon: refused before the plugin, dead-lettered.
                writeln!(
                    diag,
                    "rejected: line {line_no}: no record key (a keyed processor keeps state per key: pass --key; the daemon dead-letters such records)"
                )?;
                report.rejected += 1;
                return Ok(());
            }
            batch.push(key, line, ts);
            lines.push(line_no);
            if batch.len() >= options.batch {
                let got = state.process(&spec, &batch, now_ms(), false, 64, &mut call)?;
                emit(got, &lines, report, out, diag)?;
                batch.clear();
                lines.clear();
            }
            Ok(())
        },
    )?;
    let got = state.process(&spec, &batch, now_ms(), false, 64, &mut call)?;
    emit(got, &lines, &mut report, out, diag)?;
    let got = state.finish(&spec, now_ms(), false, &mut call)?;
    emit(got, &[], &mut report, out, diag)?;
    out.flush()?;
    let snapshot = state.snapshot(&spec, now_ms())?;
    for (key, value, _) in &snapshot.entries {
        let text = |b: &[u8]| match std::str::from_utf8(b) {
            Ok(t) => t.to_string(),
            Err(_) => format!("0x{}", crate::wasm::compile_cache::hex(b)),
        };
        writeln!(diag, "state: {} = {}", text(&key.0), text(&value.0))?;
    }
    writeln!(
        diag,
        "state: {} key(s), {} timer(s) left",
        snapshot.entries.len(),
        snapshot.event_timers.len() + snapshot.processing_timers.len()
    )?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    const IDLE: i64 = 100;

    /// A native stand-in for a keyed plugin: per key, the time of its last
    /// record (8 bytes LE); each record comes out as `KEY:GAP` (`-` for the
    /// first); an event-time timer at last + IDLE emits `idle:KEY:TIME`. A
    /// record whose value is `poison` fails the call.
    fn gaps(
        calls: &mut usize,
    ) -> impl FnMut(&mut KeyedCall) -> Result<KeyedReturn, CallError> + '_ {
        move |call: &mut KeyedCall| {
            *calls += 1;
            let mut last: Vec<Option<i64>> = call
                .states
                .iter()
                .map(|s| {
                    s.as_ref()
                        .map(|b| i64::from_le_bytes(b[..8].try_into().unwrap()))
                })
                .collect();
            let mut changed = vec![false; last.len()];
            let mut ret = KeyedReturn::default();
            for (i, event) in call.events.iter().enumerate() {
                if event.value() == b"poison" {
                    return Err(CallError::Plugin("poison".into()));
                }
                let g = call.groups[i] as usize;
                let key = String::from_utf8(call.keys[g].clone()).unwrap();
                let ts = event.timestamp_ms();
                let gap = last[g].map_or("-".to_string(), |l| (ts - l).to_string());
                if let Some(l) = last[g] {
                    ret.timers.push(TimerChange::Delete(CallTimer {
                        group: g as u32,
                        domain: TimeDomain::EventTime,
                        time: l + IDLE,
                    }));
                }
                ret.timers.push(TimerChange::Set(CallTimer {
                    group: g as u32,
                    domain: TimeDomain::EventTime,
                    time: ts + IDLE,
                }));
                last[g] = Some(ts);
                changed[g] = true;
                ret.events
                    .push(Some(key.as_bytes()), format!("{key}:{gap}").as_bytes(), ts);
            }
            for t in &call.fired {
                let key = String::from_utf8(call.keys[t.group as usize].clone()).unwrap();
                ret.events.push(
                    Some(key.as_bytes()),
                    format!("idle:{key}:{}", t.time).as_bytes(),
                    t.time,
                );
            }
            for (g, c) in changed.iter().enumerate() {
                if *c {
                    ret.updates
                        .push((g as u32, last[g].map(|l| l.to_le_bytes().to_vec())));
                }
            }
            Ok(ret)
        }
    }

    fn batch(records: &[(&str, &str, i64)]) -> Batch {
        let mut b = Batch::new();
        for (key, value, ts) in records {
            b.push(Some(key.as_bytes()), value.as_bytes(), *ts);
        }
        b
    }

    /// Each key's outputs (`KEY:…` and `idle:KEY:…`), in order: what the
    /// rules fix (the order between keys is free).
    fn per_key(out: &[String]) -> BTreeMap<String, Vec<String>> {
        let mut keys: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for v in out {
            let key = v.trim_start_matches("idle:").split(':').next().unwrap();
            keys.entry(key.to_string()).or_default().push(v.clone());
        }
        keys
    }

    fn values(b: &Batch) -> Vec<String> {
        b.iter()
            .map(|e| String::from_utf8(e.value().to_vec()).unwrap())
            .collect()
    }

    /// Runs `records` cut into batches of `size`, then the end of the input.
    fn run_in(records: &[(&str, &str, i64)], size: usize, spec: &KeyedSpec) -> Vec<String> {
        run_counting(records, size, spec).0
    }

    /// [`run_in`], and the plugin calls it took.
    fn run_counting(
        records: &[(&str, &str, i64)],
        size: usize,
        spec: &KeyedSpec,
    ) -> (Vec<String>, usize) {
        let mut state = KeyedState::default();
        let mut calls = 0;
        let mut call = gaps(&mut calls);
        let mut out = Vec::new();
        for part in records.chunks(size) {
            let o = state
                .process(spec, &batch(part), 0, false, 64, &mut call)
                .unwrap();
            out.extend(values(&o.events));
        }
        out.extend(values(
            &state.finish(spec, 0, false, &mut call).unwrap().events,
        ));
        drop(call);
        (out, calls)
    }

    /// Records in event-time order: a at 0, 10, 200 (a gap past IDLE), b at
    /// 50, 300.
    const SORTED: [(&str, &str, i64); 5] = [
        ("a", "", 0),
        ("a", "", 10),
        ("b", "", 50),
        ("a", "", 200),
        ("b", "", 300),
    ];

    #[test]
    fn a_timer_fires_after_the_record_that_moves_the_watermark_past_it() {
        // Worked by hand, record by record: a's timer at 110 is due once the
        // watermark reaches 110, i.e. after a's own record at 200, which
        // deletes it first: no idle for a at 110. b's timer at 150 is due
        // after that record too, so b's idle comes after `a:190`. Then b at
        // 300 (gap 250) moves the watermark to a's timer at 300; the end of
        // the input fires b's at 400.
        let expected = [
            "a:-",
            "a:10",
            "b:-",
            "a:190",
            "idle:b:150",
            "b:250",
            "idle:a:300",
            "idle:b:400",
        ];
        // Record by record, the order is fixed...
        assert_eq!(run_in(&SORTED, 1, &KeyedSpec::default()), expected);
        // ...in bigger batches, each key's: a timer fires before its key's
        // next record, other keys' records may come first.
        for size in [2, 3, 5] {
            assert_eq!(
                per_key(&run_in(&SORTED, size, &KeyedSpec::default())),
                per_key(&expected.map(str::to_string)),
                "{size}"
            );
        }
    }

    #[test]
    fn batching_does_not_change_the_output() {
        // 40 keys, records 7 ms apart, a gap past IDLE here and there.
        let mut records = Vec::new();
        let keys: Vec<String> = (0..40).map(|k| format!("k{k}")).collect();
        for i in 0..400i64 {
            let k = ((i * 7919) % 40) as usize;
            records.push((keys[k].as_str(), "", i * 7));
        }
        let spec = KeyedSpec::default();
        // Record by record: the rules exactly.
        let whole = run_in(&records, 1, &spec);
        // Batches that span more event time than IDLE too: a call whose own
        // timer comes due inside it is cut there and run again.
        for size in [2, 3, 5, 8, 13, 50, 400] {
            assert_eq!(
                per_key(&run_in(&records, size, &spec)),
                per_key(&whole),
                "batches of {size}"
            );
        }
        // Every record comes out once, and every key ends with an idle record.
        assert_eq!(whole.iter().filter(|v| !v.starts_with("idle")).count(), 400);
        for k in &keys {
            assert!(whole.iter().any(|v| v.starts_with(&format!("idle:{k}:"))));
        }
    }

    #[test]
    fn a_timer_due_mid_batch_cuts_it_only_before_a_record_of_its_key() {
        // z's timer at 100 is due after a@120; the record after it is a's,
        // which z's timer cannot change: one call for the four records, one
        // for the timer.
        let records = [("z", "", 0), ("a", "", 50), ("a", "", 120), ("a", "", 130)];
        let (out, calls) = run_counting(&records, 4, &KeyedSpec::default());
        assert_eq!(out[..4], ["z:-", "a:-", "a:70", "a:10"]);
        assert_eq!(out[4], "idle:z:100");
        assert_eq!(calls, 2 + 1, "records, z's timer, then the end: a's");
        // A record of z after it: cut there, z's timer first.
        let records = [("z", "", 0), ("a", "", 50), ("a", "", 120), ("z", "", 130)];
        let (out, _) = run_counting(&records, 4, &KeyedSpec::default());
        assert_eq!(out[..5], ["z:-", "a:-", "a:70", "idle:z:100", "z:130"]);
    }

    #[test]
    fn at_the_end_every_timer_fires_however_many() {
        // More than TIMER_ROUNDS calls of TIMERS_PER_CALL timers.
        let n = TIMER_ROUNDS * TIMERS_PER_CALL + 1_000;
        let keys: Vec<String> = (0..n).map(|k| format!("k{k}")).collect();
        let records: Vec<(&str, &str, i64)> = keys.iter().map(|k| (k.as_str(), "", 0)).collect();
        let out = run_in(&records, n, &KeyedSpec::default());
        assert_eq!(out.iter().filter(|v| v.starts_with("idle:")).count(), n);
    }

    #[test]
    fn a_record_far_ahead_does_not_make_the_rest_of_the_batch_quadratic() {
        // After a record at 1e12 every record sets a timer due at once, and
        // each key recurs: a cut before nearly every record.
        let keys: Vec<String> = (0..50).map(|k| format!("k{k}")).collect();
        let mut records = vec![("far", "", 1_000_000_000_000)];
        for i in 0..2_000i64 {
            records.push((keys[(i % 50) as usize].as_str(), "", i));
        }
        let spec = KeyedSpec::default();
        let (mut calls, mut handed) = (0, 0);
        let mut state = KeyedState::default();
        let mut out = Vec::new();
        {
            let mut plugin = gaps(&mut calls);
            let mut call = |c: &mut KeyedCall| {
                handed += c.events.len();
                plugin(c)
            };
            let o = state
                .process(&spec, &batch(&records), 0, false, 64, &mut call)
                .unwrap();
            out.extend(values(&o.events));
            out.extend(values(
                &state.finish(&spec, 0, false, &mut call).unwrap().events,
            ));
        }
        let (one_by_one, _) = run_counting(&records, 1, &spec);
        assert_eq!(per_key(&out), per_key(&one_by_one));
        // Records handed to the plugin, dropped calls included: a few times
        // the batch, not its square (re-running the rest of the batch at
        // each cut would hand it about 2,000 × 2,000 / 2).
        assert!(handed < 4 * records.len(), "{handed} records handed over");
    }

    #[test]
    fn two_stages_of_one_plugin_keep_two_states() {
        let first = KeyedSpec::default();
        let second = KeyedSpec {
            instance: 1,
            ..first
        };
        assert_eq!(first.state_name(3, "plane_gaps"), "p3 keyed plane_gaps");
        assert_eq!(second.state_name(3, "plane_gaps"), "p3 keyed plane_gaps#2");
    }

    /// The output of `state` going on with `records` one by one, then the
    /// end of the input.
    fn rest_of(
        state: &mut KeyedState,
        spec: &KeyedSpec,
        records: &[(&str, &str, i64)],
        calls: &mut usize,
    ) -> Vec<String> {
        let mut call = gaps(calls);
        let mut out = Vec::new();
        for part in records.chunks(1) {
            let o = state
                .process(spec, &batch(part), 0, false, 64, &mut call)
                .unwrap();
            out.extend(values(&o.events));
        }
        out.extend(values(
            &state.finish(spec, 0, false, &mut call).unwrap().events,
        ));
        out
    }

    #[test]
    fn a_restored_snapshot_goes_on_as_if_nothing_happened() {
        let spec = KeyedSpec::default();
        let whole = run_in(&SORTED, 1, &spec);
        for cut in 1..SORTED.len() {
            let mut calls = 0;
            let mut first = KeyedState::default();
            let mut out = Vec::new();
            {
                let mut call = gaps(&mut calls);
                let o = first
                    .process(&spec, &batch(&SORTED[..cut]), 0, false, 64, &mut call)
                    .unwrap();
                out.extend(values(&o.events));
            }
            // Through JSON, as a checkpoint stores it.
            let json = serde_json::to_string(&first.snapshot(&spec, 0).unwrap()).unwrap();
            let mut second = KeyedState::restore(&serde_json::from_str(&json).unwrap());
            out.extend(rest_of(&mut second, &spec, &SORTED[cut..], &mut calls));
            assert_eq!(out, whole, "restored after {cut} records");
        }
    }

    /// The changelog record of a Kafka partition (offset, windows, keyed
    /// states) as the broker stores it: JSON bytes.
    fn through_the_changelog(
        task: &crate::checkpoint::changelog::TaskState,
    ) -> crate::checkpoint::changelog::TaskState {
        let bytes = serde_json::to_vec(task).unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[test]
    fn a_partition_state_moved_through_its_changelog_record_goes_on_as_if_nothing_happened() {
        // Two stages of one plugin, so two states in one record; the first
        // daemon runs the records before `cut` (with a processing-time
        // timer set, which must travel too), the one that takes the
        // partition over restores the record and runs the rest.
        let spec = KeyedSpec::default();
        let second_spec = KeyedSpec {
            instance: 1,
            ..spec
        };
        let whole = run_in(&SORTED, 1, &spec);
        for cut in 1..SORTED.len() {
            let mut calls = 0;
            let mut first = KeyedState::default();
            let mut out = Vec::new();
            {
                let mut call = gaps(&mut calls);
                for part in SORTED[..cut].chunks(1) {
                    let o = first
                        .process(&spec, &batch(part), 0, false, 64, &mut call)
                        .unwrap();
                    out.extend(values(&o.events));
                }
            }
            first.set_timer(TimeDomain::ProcessingTime, 9_000, b"a");
            let mut other = KeyedState::default();
            other.put(b"z", b"zz".to_vec(), 5);
            let record = crate::checkpoint::changelog::TaskState {
                offset: cut as i64,
                window: None,
                keyed: BTreeMap::from([
                    (spec.stage_name("gaps"), first.snapshot(&spec, 0).unwrap()),
                    (
                        second_spec.stage_name("gaps"),
                        other.snapshot(&spec, 0).unwrap(),
                    ),
                ]),
                shape: BTreeMap::new(),
                parts: None,
            };
            let read = through_the_changelog(&record);
            assert_eq!(read.offset, cut as i64);
            assert_eq!(read.keyed, record.keyed, "every key, value and timer");
            assert_eq!(
                read.keyed.keys().collect::<Vec<_>>(),
                ["keyed gaps", "keyed gaps#2"]
            );
            let mut second = KeyedState::restore(&read.keyed["keyed gaps"]);
            assert_eq!(second.len(), first.len());
            assert_eq!(second.timers(), first.timers());
            assert_eq!(second.watermark(&spec), first.watermark(&spec));
            assert!(second.processing_due(9_000) && !second.processing_due(8_999));
            assert_eq!(
                KeyedState::restore(&read.keyed["keyed gaps#2"]).get(&spec, b"z", 0),
                Some(&b"zz"[..])
            );
            second.delete_timer(TimeDomain::ProcessingTime, 9_000, b"a");
            out.extend(rest_of(&mut second, &spec, &SORTED[cut..], &mut calls));
            assert_eq!(out, whole, "moved after {cut} records");
        }
    }

    #[test]
    fn a_changelog_record_without_keyed_state_reads_as_none() {
        // A record a windowed pipeline wrote before keyed processors.
        let old = r#"{"offset":42,"window":null,"shape":{}}"#;
        let read: crate::checkpoint::changelog::TaskState = serde_json::from_str(old).unwrap();
        assert_eq!(read.offset, 42);
        assert!(read.keyed.is_empty());
        // And a record without keyed state is written without the field.
        let text = serde_json::to_string(&read).unwrap();
        assert!(!text.contains("keyed"), "{text}");
    }

    #[test]
    fn a_kafka_partition_state_is_named_by_its_task_then_its_partition() {
        let spec = KeyedSpec {
            instance: 1,
            ..KeyedSpec::default()
        };
        let name = spec.task_state_name(7, "plane_gaps");
        assert_eq!(name, "task:7 keyed plane_gaps#2");
        assert_eq!(
            crate::checkpoint::task_of_state(&name),
            Some((7, "keyed plane_gaps#2"))
        );
        // A partition worker's own state is not a task's.
        assert_eq!(
            crate::checkpoint::task_of_state(&spec.state_name(0, "plane_gaps")),
            None
        );
    }

    #[test]
    fn a_poison_record_is_isolated_and_changes_no_state() {
        let spec = KeyedSpec::default();
        let mut with_poison: Vec<(&str, &str, i64)> = SORTED.to_vec();
        with_poison.insert(2, ("a", "poison", 20));
        let mut state = KeyedState::default();
        let mut calls = 0;
        let mut call = gaps(&mut calls);
        let out = state
            .process(&spec, &batch(&with_poison), 0, false, 64, &mut call)
            .unwrap();
        assert_eq!(out.failed.len(), 1);
        assert_eq!(out.failed[0].0, 2);
        assert!(out.failed[0].1.contains("poison"), "{}", out.failed[0].1);
        // The rest as without it: a's gap from 10 to 200 is 190.
        let mut got = values(&out.events);
        got.extend(values(
            &state.finish(&spec, 0, false, &mut call).unwrap().events,
        ));
        assert_eq!(per_key(&got), per_key(&run_in(&SORTED, 1, &spec)));
        // With `stop`, the failed call comes back.
        let mut state = KeyedState::default();
        let err = state
            .process(&spec, &batch(&with_poison), 0, true, 64, &mut call)
            .unwrap_err();
        assert_eq!(err, CallError::Plugin("poison".into()));
    }

    #[test]
    fn a_record_without_a_key_is_refused_and_the_rest_goes_on() {
        let mut b = Batch::new();
        b.push(None, b"x", 1);
        b.push(Some(b"a"), b"y", 2);
        b.push(Some(b""), b"z", 3);
        let mut state = KeyedState::default();
        let mut calls = 0;
        let out = state
            .process(
                &KeyedSpec::default(),
                &b,
                0,
                false,
                64,
                &mut gaps(&mut calls),
            )
            .unwrap();
        let failed: Vec<u32> = out.failed.iter().map(|f| f.0).collect();
        assert_eq!(failed, vec![0, 2]);
        assert!(out.failed[0].1.contains("no record key"));
        assert_eq!(values(&out.events), ["a:-"]);
    }

    #[test]
    fn an_expired_state_is_not_handed_to_the_plugin() {
        let spec = KeyedSpec {
            ttl_ms: Some(1_000),
            ..KeyedSpec::default()
        };
        let mut state = KeyedState::default();
        let mut calls = 0;
        let mut call = gaps(&mut calls);
        let at = |state: &mut KeyedState, call: &mut Call<'_>, now: i64, ts: i64| {
            values(
                &state
                    .process(&spec, &batch(&[("a", "", ts)]), now, false, 64, call)
                    .unwrap()
                    .events,
            )
        };
        assert_eq!(at(&mut state, &mut call, 10_000, 0), ["a:-"]);
        // Written at 10,000; alive until 11,000 (exclusive).
        assert_eq!(at(&mut state, &mut call, 10_999, 5), ["a:5"]);
        // Rewritten at 10,999: expired at 11,999.
        assert!(state.get(&spec, b"a", 11_998).is_some());
        assert_eq!(at(&mut state, &mut call, 11_999, 9), ["a:-"]);
        // A checkpoint leaves expired states out.
        assert_eq!(state.snapshot(&spec, 20_000).unwrap().entries.len(), 0);
    }

    /// A counter per key that a record `clear` removes: the output is
    /// `KEY:COUNT` per record (`KEY:cleared` for a clear).
    fn counter(call: &mut KeyedCall) -> Result<KeyedReturn, CallError> {
        let mut count: Vec<Option<u64>> = call
            .states
            .iter()
            .map(|s| {
                s.as_ref()
                    .map(|b| u64::from_le_bytes(b[..8].try_into().unwrap()))
            })
            .collect();
        let mut changed = vec![false; count.len()];
        let mut ret = KeyedReturn::default();
        for (i, event) in call.events.iter().enumerate() {
            let g = call.groups[i] as usize;
            let key = String::from_utf8(call.keys[g].clone()).unwrap();
            changed[g] = true;
            let out = if event.value() == b"clear" {
                count[g] = None;
                format!("{key}:cleared")
            } else {
                let n = count[g].unwrap_or(0) + 1;
                count[g] = Some(n);
                format!("{key}:{n}")
            };
            ret.events.push(Some(key.as_bytes()), out.as_bytes(), 0);
        }
        for (g, c) in changed.iter().enumerate() {
            if *c {
                ret.updates.push((
                    g as u32,
                    count[g].map(|n| {
                        let mut v = n.to_le_bytes().to_vec();
                        v.extend_from_slice(&[7u8; 120]);
                        v
                    }),
                ));
            }
        }
        Ok(ret)
    }

    #[test]
    fn a_state_past_its_memory_spills_to_disk_and_reads_back_the_same() {
        // 3,000 keys, each seen four times in rounds, every 7th key cleared
        // in the second round: run all in memory, then with room for ~100
        // states, which evicts to disk, reads back, and deletes spilled
        // keys. The outputs and the final states must be the same.
        let keys: Vec<String> = (0..3000).map(|i| format!("k{i}")).collect();
        let mut records: Vec<(&str, &str, i64)> = Vec::new();
        for round in 0..4 {
            for (i, key) in keys.iter().enumerate() {
                let value = if round == 1 && i % 7 == 0 {
                    "clear"
                } else {
                    ""
                };
                records.push((key, value, 0));
            }
        }
        let run = |spec: &KeyedSpec| {
            let mut state = KeyedState::default();
            let mut out = Vec::new();
            let mut most = 0;
            for part in records.chunks(250) {
                let o = state
                    .process(spec, &batch(part), 0, false, 64, &mut counter)
                    .unwrap();
                assert!(o.failed.is_empty(), "{:?}", o.failed);
                out.extend(values(&o.events));
                most = most.max(state.bytes());
            }
            (out, state, most)
        };
        let unbounded = KeyedSpec::default();
        let (want, whole, _) = run(&unbounded);
        // The ground truth of the counter, from the records themselves.
        assert_eq!(want.len(), 12_000);
        assert_eq!(want[3000], "k0:cleared");
        assert_eq!(want[3001], "k1:2");
        assert_eq!(want[9000], "k0:2");
        assert_eq!(want[9001], "k1:4");
        let bound = 100 * (3 + 128 + ENTRY_OVERHEAD) as u64;
        let small = KeyedSpec {
            memory_bytes: bound,
            ..KeyedSpec::default()
        };
        let (got, spilled, most) = run(&small);
        let first = got.iter().zip(&want).position(|(g, w)| g != w);
        assert!(
            got.len() == want.len() && first.is_none(),
            "{} outputs, {} wanted; first difference at {first:?}: {:?}",
            got.len(),
            want.len(),
            first.map(|i| (&got[i], &want[i]))
        );
        assert!(spilled.spilled() > 2000, "{} spilled", spilled.spilled());
        // Within the bound after each batch, but for what one batch adds.
        assert!(
            most as u64 <= bound + 250 * (3 + 128 + ENTRY_OVERHEAD) as u64,
            "{most} bytes in memory"
        );
        assert_eq!(spilled.len(), whole.len());
        assert_eq!(whole.len(), 3000 - 3000 / 7 + 3000 / 7);
        assert_eq!(
            spilled.snapshot(&small, 0).unwrap(),
            whole.snapshot(&unbounded, 0).unwrap()
        );
        // Restored from the snapshot, the state spills again and goes on.
        let mut restored = KeyedState::restore(&spilled.snapshot(&small, 0).unwrap());
        let o = restored
            .process(
                &small,
                &batch(&[("k5", "", 0), ("k7", "clear", 0)]),
                0,
                false,
                64,
                &mut counter,
            )
            .unwrap();
        assert_eq!(values(&o.events), ["k5:5", "k7:cleared"]);
        assert!(restored.bytes() as u64 <= bound);
        assert_eq!(restored.len(), whole.len() - 1);
    }

    /// Event-time timers on 2,000 spilled keys, all due at the end of the
    /// input: each round of timer calls reads its keys' states back, and the
    /// state is brought under the bound again before the next round, so
    /// the end of the input does not load the whole state into memory.
    #[test]
    fn timers_firing_together_keep_the_state_within_its_bound() {
        let keys: Vec<String> = (0..2000).map(|i| format!("k{i}")).collect();
        // All at event time 0: every idle timer (at 100) is due only at the
        // end of the input.
        let records: Vec<(&str, &str, i64)> = keys.iter().map(|k| (k.as_str(), "", 0)).collect();
        let spec = KeyedSpec {
            memory_bytes: 64 << 10,
            ..KeyedSpec::default()
        };
        let mut state = KeyedState::default();
        let mut calls = 0;
        let mut call = gaps(&mut calls);
        let mut fired = 0;
        for part in records.chunks(500) {
            fired += state
                .process(&spec, &batch(part), 0, false, 64, &mut call)
                .unwrap()
                .timers_fired;
        }
        assert!(state.spilled() > 1000, "{} spilled", state.spilled());
        let end = state.finish(&spec, 0, false, &mut call).unwrap();
        assert_eq!((fired, end.timers_fired), (0, 2000));
        assert!(
            state.bytes() as u64 <= spec.memory_bytes,
            "{} bytes in memory after the timers, bound {}",
            state.bytes(),
            spec.memory_bytes
        );
    }

    /// A spill file that fails once it holds states (a full disk: redb then
    /// refuses every read) fails the stage with the reason, whatever the
    /// error policy: going on would hand the plugin empty states.
    #[test]
    fn a_spill_file_that_fails_while_holding_states_fails_the_stage() {
        let keys: Vec<String> = (0..3000).map(|i| format!("k{i}")).collect();
        let records: Vec<(&str, &str, i64)> = keys.iter().map(|k| (k.as_str(), "", 0)).collect();
        let spec = KeyedSpec {
            memory_bytes: 16 << 10,
            ..KeyedSpec::default()
        };
        let mut state = KeyedState::default();
        state
            .process(&spec, &batch(&records[..1000]), 0, false, 64, &mut counter)
            .unwrap();
        assert!(state.spilled() > 0);
        state.spill.as_mut().unwrap().fail_after = Some(0);
        let err = state
            .process(&spec, &batch(&records[1000..]), 0, false, 64, &mut counter)
            .unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("the spill file failed while it held")
                && text.contains("No space left on device")
                && text.contains("the pipeline stops"),
            "{text}"
        );
        // And it stays failed.
        assert!(
            state
                .process(&spec, &batch(&records[..1]), 0, false, 64, &mut counter)
                .is_err()
        );
    }

    /// The first write failing (nothing on disk yet) keeps the state in
    /// memory, and new keys past the bound are refused, as without spill.
    #[test]
    fn a_spill_file_that_fails_before_holding_states_falls_back_to_refusal() {
        let keys: Vec<String> = (0..400).map(|i| format!("k{i}")).collect();
        let records: Vec<(&str, &str, i64)> = keys.iter().map(|k| (k.as_str(), "", 0)).collect();
        let spec = KeyedSpec {
            memory_bytes: 16 << 10,
            ..KeyedSpec::default()
        };
        let mut state = KeyedState {
            spill: Some(Spill::open().unwrap()),
            ..KeyedState::default()
        };
        state.spill.as_mut().unwrap().fail_after = Some(0);
        let out = state
            .process(&spec, &batch(&records[..200]), 0, false, 64, &mut counter)
            .unwrap();
        assert!(out.failed.is_empty());
        assert!(state.spill.is_none() && state.spill_broken);
        let out = state
            .process(&spec, &batch(&records[200..]), 0, false, 64, &mut counter)
            .unwrap();
        assert_eq!(out.failed.len(), 200);
        assert!(
            out.failed[0].1.contains("keyed state full"),
            "{}",
            out.failed[0].1
        );
    }

    #[test]
    fn a_full_state_refuses_records_of_new_keys_only() {
        // Room for two keys of one byte with 8-byte states and their timers.
        let one = 1 + 8 + ENTRY_OVERHEAD + 1 + TIMER_OVERHEAD;
        let spec = KeyedSpec {
            memory_bytes: (2 * one) as u64,
            spill: false,
            ..KeyedSpec::default()
        };
        let mut state = KeyedState::default();
        let mut calls = 0;
        let mut call = gaps(&mut calls);
        let first = state
            .process(
                &spec,
                &batch(&[("a", "", 0), ("b", "", 1)]),
                0,
                false,
                64,
                &mut call,
            )
            .unwrap();
        assert_eq!(values(&first.events), ["a:-", "b:-"]);
        assert_eq!(state.bytes(), 2 * one);
        let out = state
            .process(
                &spec,
                &batch(&[("c", "", 2), ("a", "", 3)]),
                0,
                false,
                64,
                &mut call,
            )
            .unwrap();
        assert_eq!(values(&out.events), ["a:3"]);
        assert_eq!(out.failed.len(), 1);
        assert_eq!(out.failed[0].0, 0);
        assert!(
            out.failed[0].1.contains("keyed state full"),
            "{}",
            out.failed[0].1
        );
        assert_eq!(state.bytes(), 2 * one);
    }

    #[test]
    fn processing_time_timers_fire_when_the_clock_reaches_them() {
        let spec = KeyedSpec::default();
        let mut state = KeyedState::default();
        // One call sets a processing-time timer at 5,000 for `a`.
        let mut set = |call: &mut KeyedCall| -> Result<KeyedReturn, CallError> {
            let mut ret = KeyedReturn::default();
            if call.fired.is_empty() {
                ret.timers.push(TimerChange::Set(CallTimer {
                    group: 0,
                    domain: TimeDomain::ProcessingTime,
                    time: 5_000,
                }));
            } else {
                for t in &call.fired {
                    assert_eq!(t.domain, TimeDomain::ProcessingTime);
                    ret.events
                        .push(None, format!("fired {}", t.time).as_bytes(), t.time);
                }
            }
            Ok(ret)
        };
        state
            .process(&spec, &batch(&[("a", "", 0)]), 1_000, false, 64, &mut set)
            .unwrap();
        assert!(!state.processing_due(4_999));
        assert!(state.processing_due(5_000));
        let out = state
            .process(&spec, &Batch::new(), 5_000, false, 64, &mut set)
            .unwrap();
        assert_eq!(values(&out.events), ["fired 5000"]);
        assert_eq!(out.timers_fired, 1);
        assert_eq!(state.timers(), 0);
    }
}
