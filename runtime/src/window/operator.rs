//! The window operator: keyed, event-time windowed aggregation after the
//! processor chain, with a watermark.
//!
//! ```text
//! worker p: chain → extract group + fields ──► WindowInput ──┐
//!                                                            ├─► operator thread: windows, watermark, emit → sinks
//! worker q: chain → extract group + fields ──► WindowInput ──┘                              late records → dead letter
//! ```
//!
//! The workers parse what the aggregates need from each output event (in
//! parallel); one operator thread per pipeline owns the window state, so a group
//! whose records come from several partitions is aggregated in one place, and
//! the watermark is the minimum over the partitions (see [`crate::window::watermark`]).
//!
//! For each micro-batch a worker sends (its records, and the largest event time
//! of its *input*, so that a partition whose records were all filtered out still
//! moves the watermark), the operator:
//! 1. adds every record to the windows it belongs to that are still open — a
//!    window `[start, end)` is open while `watermark < end + allowed_lateness`.
//!    A record all of whose windows are closed is **late**: dead-lettered (or
//!    dropped, by config) and counted, never silently lost;
//! 2. moves the watermark;
//! 3. emits: in `append` mode each window once, final, when the watermark reaches
//!    `end + allowed_lateness`; in `update` mode the windows this batch changed,
//!    with their values so far, and forgets windows once closed.
//!
//! When the input ends (every worker finished: end of file, shutdown) the
//! watermark jumps to the end of time and every open window is emitted. Windows
//! are emitted in order of end, then group, then start: the output is the same
//! from run to run.
//!
//! **Tasks.** A pipeline reading Kafka keeps each Kafka partition's windows
//! and watermark apart, as a Kafka Streams task does: a partition's records
//! then give the same windows whichever daemon reads it and whatever else it
//! reads, and its state can move to another daemon on a rebalance
//! ([`WindowMsg::Restore`], [`WindowMsg::Forget`]). A file or stdin pipeline is
//! one task, 0, whose watermark is the minimum over the partition workers.
//!
//! An output record is one JSON object:
//! `{"window_start":"…","window_end":"…",<group>,<aggregates>}` with RFC 3339
//! times (UTC, ms), the group as `"key":"…"` or one field per `group_by`
//! pointer, and one field per aggregate; its event time is `window_end - 1`
//! (the last instant in the window, as Flink timestamps window results).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde_json::Value;
use sluice_plugin_sdk::Batch;

use crate::aggregate::{Acc, Op};
pub use crate::checkpoint::WindowSnapshot;
use crate::checkpoint::{Ack, BarrierKind};
use crate::config::{LatePolicy, OutputMode};
use crate::decode::{Pointer, extract_into};
use crate::sink::SinkHandle;
use crate::sink::dead_letter::{DeadLetter, DeadRecord};
use crate::stats::Stats;
pub use crate::time::rfc3339;
pub use crate::wasm::udaf::UdfSpec;
use crate::wasm::udaf::{Failed, Udf, bytes_mut, group_pairs};
use crate::window::watermark::Watermarks;
use crate::window::{Window, WindowKind};

/// How records are grouped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Grouping {
    /// By the event key (output field `key`).
    Key,
    /// By the values at these pointers: (output field name, index in
    /// [`WindowSpec::pointers`]).
    Fields(Vec<(String, usize)>),
}

/// One aggregate of a window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AggSpec {
    /// The function.
    pub op: Op,
    /// Index of its field in [`WindowSpec::pointers`]; `None`: `count(*)`.
    pub field: Option<usize>,
    /// Output field name.
    pub name: String,
    /// `op = "wasm"`: the aggregator plugin.
    pub udf: Option<Arc<UdfSpec>>,
}

/// A pipeline's window operator, built from `window` and `aggregate`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowSpec {
    /// Tumbling, sliding or session, with lengths in ms.
    pub kind: WindowKind,
    /// Watermark delay, ms.
    pub delay_ms: i64,
    /// Allowed lateness, ms.
    pub lateness_ms: i64,
    /// When a silent partition stops holding the watermark.
    pub idle_timeout: Duration,
    /// `append` or `update`.
    pub mode: OutputMode,
    /// How records are grouped.
    pub grouping: Grouping,
    /// What is computed.
    pub aggregates: Vec<AggSpec>,
    /// Every pointer the workers extract (group fields, then aggregate fields;
    /// each once).
    pub pointers: Vec<Pointer>,
    /// Late records.
    pub late: LatePolicy,
}

/// A chain output record the window cannot aggregate, and why.
#[derive(Debug)]
pub struct Unreadable {
    /// Its key.
    pub key: Vec<u8>,
    /// Its event time.
    pub timestamp_ms: i64,
    /// Its bytes.
    pub value: Vec<u8>,
    /// Why.
    pub reason: String,
}

/// What a worker sends the operator.
// One message per micro-batch (and a few barriers): the unboxed batch costs
// ~250 bytes a channel slot, boxing it an allocation per batch.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum WindowMsg {
    /// A micro-batch's output.
    Batch(WindowInput),
    /// A checkpoint barrier: the partition sent everything before it.
    Barrier(crate::checkpoint::Barrier),
    /// The source was assigned a Kafka partition whose state a checkpoint
    /// holds: take it up as task `.0` (sent before any record of it).
    Restore(u32, Box<WindowSnapshot>),
    /// The source lost these tasks' Kafka partitions, after a checkpoint
    /// saved their state: forget them, emitting nothing.
    Forget(Vec<u32>),
}

/// One micro-batch's worth of records for the operator.
#[derive(Debug)]
pub struct WindowInput {
    /// The sending partition.
    pub partition: usize,
    /// The task the records belong to: their Kafka partition's task id
    /// (every record of a Kafka pipeline's batch comes from one Kafka
    /// partition); `None` for other sources (task 0).
    pub task: Option<u32>,
    /// Largest event time of the batch the worker took in (before the chain).
    pub max_input_ts: Option<i64>,
    /// The records (the chain's output that could be read).
    pub events: Batch,
    /// `events.len() × pointers.len()` extracted values, row by row.
    pub values: Vec<Option<Value>>,
}

impl WindowSpec {
    /// Reads what the operator needs from `output` (a worker's chain output):
    /// the records that can be aggregated and their values, and the ones that
    /// cannot, with the reason (not JSON when fields are needed, a non-number
    /// for `sum`/`avg`).
    pub fn prepare(&self, output: Batch) -> (Batch, Vec<Option<Value>>, Vec<Unreadable>) {
        let n = self.pointers.len();
        if n == 0 {
            return (output, Vec::new(), Vec::new());
        }
        let paths: Vec<&Pointer> = self.pointers.iter().collect();
        let mut values = Vec::with_capacity(output.len() * n);
        let mut refused = Vec::new();
        let mut row = vec![None; n];
        for event in &output {
            let result = extract_into(event.value(), &paths, &mut row).and_then(|()| {
                for agg in self.aggregates.iter().filter(|a| a.op.numeric()) {
                    if let Some(i) = agg.field
                        && let Some(v) = &row[i]
                        && !(v.is_null() || v.is_number())
                    {
                        return Err(format!(
                            "{}: field {} is {v}, not a number",
                            agg.name, self.pointers[i]
                        ));
                    }
                }
                Ok(())
            });
            match result {
                Ok(()) => values.extend(row.iter_mut().map(Option::take)),
                Err(reason) => refused.push((event.index(), reason)),
            }
        }
        if refused.is_empty() {
            return (output, values, Vec::new());
        }
        let mut kept = Batch::with_capacity(output.len() - refused.len(), 0);
        let mut unreadable = Vec::with_capacity(refused.len());
        let mut skip = refused.into_iter().peekable();
        for event in &output {
            if skip.peek().is_some_and(|(i, _)| *i == event.index()) {
                let (_, reason) = skip.next().expect("peeked");
                unreadable.push(Unreadable {
                    key: event.key().unwrap_or_default().to_vec(),
                    timestamp_ms: event.timestamp_ms(),
                    value: event.value().to_vec(),
                    reason,
                });
                continue;
            }
            kept.push_event(&event);
        }
        (kept, values, unreadable)
    }

    fn new_accs(&self) -> Vec<Acc> {
        self.aggregates.iter().map(|a| Acc::new(a.op)).collect()
    }
}

/// A group's identity: the key bytes, or the JSON text of the group values.
type Group = Vec<u8>;

/// The open windows of a pipeline.
#[derive(Debug, Default)]
struct State {
    /// Tumbling and sliding: (end, group, start) → accumulators.
    fixed: BTreeMap<(i64, Group, i64), Vec<Acc>>,
    /// Sessions: group → its sessions, by start.
    sessions: BTreeMap<Group, Vec<(Window, Vec<Acc>)>>,
    /// Every open session as (end, group, start): which close first, without
    /// walking every group.
    session_ends: BTreeSet<(i64, Group, i64)>,
}

impl State {
    /// Removes and returns the sessions `closed` says are closed, in order of
    /// end, then group, then start.
    fn take_closed_sessions(
        &mut self,
        closed: &dyn Fn(&Window) -> bool,
    ) -> Vec<(Window, Group, Vec<Acc>)> {
        let mut out = Vec::new();
        while let Some(first) = self.session_ends.first() {
            let w = Window {
                start: first.2,
                end: first.0,
            };
            if !closed(&w) {
                break;
            }
            let (_, group, _) = self.session_ends.pop_first().expect("first");
            if let Some(sessions) = self.sessions.get_mut(&group) {
                if let Some(pos) = sessions.iter().position(|(s, _)| *s == w) {
                    let (_, accs) = sessions.remove(pos);
                    out.push((w, group.clone(), accs));
                }
                if sessions.is_empty() {
                    self.sessions.remove(&group);
                }
            }
        }
        out
    }
}

/// One task's windows and watermark (see the module docs).
#[derive(Debug)]
pub struct Task {
    state: State,
    watermarks: Watermarks,
    /// Update mode: the windows changed since the last emission, as (end,
    /// group, start).
    changed: BTreeSet<(i64, Group, i64)>,
}

impl Task {
    fn new(spec: &WindowSpec, channels: usize) -> Self {
        Task {
            state: State::default(),
            watermarks: Watermarks::new(channels, spec.delay_ms, spec.idle_timeout, Instant::now()),
            changed: BTreeSet::new(),
        }
    }
}

/// Runs the operator until every sender is gone, then emits what is open —
/// unless the pipeline is `checkpointed` (its open windows are then in the
/// checkpoint; the end barrier emits them at the end of the input). `restore`
/// is the state of the checkpoint resumed from. With `kafka`, each input's
/// [`WindowInput::task`] names its task (and there is none at start);
/// otherwise the pipeline is task 0.
///
/// # Errors
/// A sink or the dead-letter sink stopped.
#[allow(clippy::too_many_arguments)]
pub fn run(
    pipeline: &str,
    spec: &WindowSpec,
    partitions: usize,
    inputs: flume::Receiver<WindowMsg>,
    sinks: &[SinkHandle],
    dead_letter: &DeadLetter,
    stats: &Arc<Stats>,
    restore: Option<WindowSnapshot>,
    checkpointed: bool,
    kafka: bool,
) -> anyhow::Result<()> {
    let mut udfs = Vec::new();
    for (index, agg) in spec.aggregates.iter().enumerate() {
        if let Some(udf) = &agg.udf {
            udfs.push(Udf::start(pipeline, index, agg.field, udf.clone())?);
        }
    }
    let mut op = Operator {
        spec,
        task: Task::new(spec, partitions),
        current: if kafka { u32::MAX } else { 0 },
        parked: BTreeMap::new(),
        sinks,
        stats,
        assigned: Vec::new(),
        empty: Vec::new(),
        udfs,
        pending: Vec::new(),
        dead_letter,
    };
    op.refresh_empty();
    if let Some(snapshot) = restore {
        op.restore(snapshot);
        op.publish_watermark();
    }
    let tick = (spec.idle_timeout / 2).clamp(Duration::from_millis(50), Duration::from_secs(1));
    // Barriers seen, by checkpoint id: acknowledged once every partition's is in.
    let mut barriers: BTreeMap<u64, usize> = BTreeMap::new();
    let mut saved_and_stopped = false;
    loop {
        match inputs.recv_timeout(tick) {
            Ok(WindowMsg::Barrier(barrier)) => {
                let seen = barriers.entry(barrier.id).or_insert(0);
                *seen += 1;
                if *seen < partitions {
                    continue;
                }
                barriers.remove(&barrier.id);
                if barrier.kind == BarrierKind::End {
                    op.finish_all()?;
                }
                let mut snapshots = BTreeMap::new();
                for id in op.task_ids() {
                    op.switch(id, 1);
                    snapshots.insert(id, op.snapshot());
                }
                // The source may have given up waiting (the pipeline failed).
                let _ = barrier.ack.send(Ack::Window(Box::new(snapshots)));
                saved_and_stopped = barrier.kind != BarrierKind::Periodic;
            }
            Ok(WindowMsg::Restore(id, snapshot)) => {
                op.parked.remove(&id);
                if op.current == id {
                    op.task = Task::new(spec, 1);
                }
                op.switch(id, 1);
                op.restore(*snapshot);
                op.publish_watermark();
            }
            Ok(WindowMsg::Forget(ids)) => {
                for id in ids {
                    op.parked.remove(&id);
                    if op.current == id {
                        // An empty task 0 stands in until the next input.
                        op.task = Task::new(spec, 1);
                        op.current = u32::MAX;
                    }
                }
                op.publish_watermark();
            }
            Ok(WindowMsg::Batch(input)) => {
                match input.task {
                    Some(id) => op.switch(id, 1),
                    None => op.switch(0, partitions),
                }
                // Between micro-batches: the moment to take up a new aggregator.
                if !op.udfs.is_empty() {
                    for udf in &mut op.udfs {
                        udf.follow();
                    }
                    op.refresh_empty();
                }
                let (late, failed) = op.add(&input);
                if !late.is_empty() {
                    op.late(pipeline, &input, &late, dead_letter)?;
                }
                if !failed.is_empty() {
                    op.udf_failed(&input, &failed)?;
                }
                let channel = if input.task.is_some() {
                    0
                } else {
                    input.partition
                };
                op.task
                    .watermarks
                    .observe(channel, input.max_input_ts, Instant::now());
                let watermark = op.task.watermarks.advance(Instant::now());
                op.emit(watermark)?;
                op.publish_watermark();
            }
            Err(flume::RecvTimeoutError::Timeout) => {
                // Time passes: an idle partition may stop holding the watermark.
                for id in op.task_ids() {
                    op.switch(id, 1);
                    let before = op.task.watermarks.current();
                    let now = op.task.watermarks.advance(Instant::now());
                    if now != before {
                        op.emit(now)?;
                    }
                }
                op.publish_watermark();
            }
            Err(flume::RecvTimeoutError::Disconnected) => {
                // A checkpointed pipeline emits its open windows at an end
                // barrier only: ended any other way (an error, a refused
                // resume) its windows are in the last checkpoint, and writing
                // them now would write partial values as final.
                if saved_and_stopped || checkpointed {
                    return Ok(());
                }
                return op.finish_all();
            }
        }
    }
}

struct Operator<'a> {
    spec: &'a WindowSpec,
    /// The task being worked on…
    task: Task,
    /// …its id (`u32::MAX`: none, after a [`WindowMsg::Forget`])…
    current: u32,
    /// …and the others.
    parked: BTreeMap<u32, Task>,
    sinks: &'a [SinkHandle],
    stats: &'a Arc<Stats>,
    assigned: Vec<Window>,
    /// A new window's accumulators (the user-defined ones as their plugin's
    /// `create` made them).
    empty: Vec<Acc>,
    /// The user-defined aggregates.
    udfs: Vec<Udf>,
    /// (window, event) pairs of the current input for the user-defined
    /// aggregates of fixed windows, added in one call per input.
    pending: Vec<((i64, Group, i64), usize)>,
    dead_letter: &'a DeadLetter,
}

impl Operator<'_> {
    /// Makes task `id` the current one (a new one with `channels` watermark
    /// channels if it has no state yet).
    fn switch(&mut self, id: u32, channels: usize) {
        if self.current == id {
            return;
        }
        let next = self
            .parked
            .remove(&id)
            .unwrap_or_else(|| Task::new(self.spec, channels));
        let previous = std::mem::replace(&mut self.task, next);
        if self.current != u32::MAX {
            self.parked.insert(self.current, previous);
        }
        self.current = id;
    }

    /// Every task's id.
    fn task_ids(&self) -> Vec<u32> {
        let mut ids: Vec<u32> = self.parked.keys().copied().collect();
        if self.current != u32::MAX {
            ids.push(self.current);
            ids.sort_unstable();
        }
        ids
    }

    /// The end of the input: every task emits every window.
    fn finish_all(&mut self) -> anyhow::Result<()> {
        for id in self.task_ids() {
            self.switch(id, 1);
            let end = self.task.watermarks.finish();
            self.emit(end)?;
        }
        self.publish_watermark();
        Ok(())
    }

    /// Shows the lowest watermark of the tasks (`i64::MIN`: none yet).
    fn publish_watermark(&self) {
        let low = self
            .parked
            .values()
            .chain((self.current != u32::MAX).then_some(&self.task))
            .map(|t| t.watermarks.current())
            .min()
            .unwrap_or(i64::MIN);
        self.stats.watermark_ms.store(low, Ordering::Relaxed);
    }

    /// The open windows and the watermark.
    fn snapshot(&self) -> WindowSnapshot {
        let (partitions, watermark) = self.task.watermarks.snapshot();
        WindowSnapshot {
            fixed: self
                .task
                .state
                .fixed
                .iter()
                .map(|((end, group, start), accs)| (*start, *end, group.clone(), accs.clone()))
                .collect(),
            sessions: self
                .task
                .state
                .sessions
                .iter()
                .flat_map(|(group, ss)| {
                    ss.iter()
                        .map(|(w, accs)| (group.clone(), w.start, w.end, accs.clone()))
                })
                .collect(),
            watermark,
            partitions,
        }
    }

    /// Takes up a checkpoint's windows and watermark.
    fn restore(&mut self, snapshot: WindowSnapshot) {
        self.task
            .watermarks
            .restore(&snapshot.partitions, snapshot.watermark);
        for (start, end, group, accs) in snapshot.fixed {
            self.task.state.fixed.insert((end, group, start), accs);
        }
        for (group, start, end, accs) in snapshot.sessions {
            self.task
                .state
                .session_ends
                .insert((end, group.clone(), start));
            self.task
                .state
                .sessions
                .entry(group)
                .or_default()
                .push((Window { start, end }, accs));
        }
    }

    fn is_open(&self, w: &Window, watermark: i64) -> bool {
        watermark < w.end.saturating_add(self.spec.lateness_ms)
    }

    /// The accumulators of a new window.
    fn refresh_empty(&mut self) {
        let mut empty = self.spec.new_accs();
        for udf in &self.udfs {
            empty[udf.index] = Acc::Wasm(udf.initial.clone());
        }
        self.empty = empty;
    }

    /// Sends the records a user-defined aggregate failed on to the dead-letter
    /// sink, and counts them.
    fn udf_failed(&self, input: &WindowInput, failed: &[Failed]) -> anyhow::Result<()> {
        let records: Vec<DeadRecord<'_>> = failed
            .iter()
            .filter_map(|f| {
                let e = input.events.get(f.event)?;
                Some(DeadRecord {
                    stage: "window",
                    plugin: Some((&f.plugin.0, &f.plugin.1)),
                    partition: Some(input.partition),
                    reason: &f.reason,
                    key: e.key().unwrap_or_default(),
                    timestamp_ms: Some(e.timestamp_ms()),
                    original: e.value(),
                })
            })
            .collect();
        self.dead_letter.send(&records)?;
        self.stats
            .rejected
            .fetch_add(records.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    /// Adds the pending (window, event) pairs to the fixed windows'
    /// user-defined aggregates, one call per aggregate.
    fn flush_pending(&mut self, input: &WindowInput) -> Vec<Failed> {
        if self.pending.is_empty() {
            return Vec::new();
        }
        let pending = std::mem::take(&mut self.pending);
        let (keys, pairs) = group_pairs(&pending);
        let width = self.spec.pointers.len();
        let mut failed = Vec::new();
        for udf in &mut self.udfs {
            let mut states: Vec<Vec<u8>> = keys
                .iter()
                .map(|k| {
                    self.task
                        .state
                        .fixed
                        .get_mut(k)
                        .map(|accs| std::mem::take(bytes_mut(&mut accs[udf.index])))
                        .unwrap_or_default()
                })
                .collect();
            failed.extend(udf.accumulate(&mut states, &pairs, &input.events, &input.values, width));
            for (k, state) in keys.iter().zip(states) {
                if let Some(accs) = self.task.state.fixed.get_mut(k) {
                    *bytes_mut(&mut accs[udf.index]) = state;
                }
            }
        }
        failed
    }

    /// Adds the input's records; returns the indices of those no window took,
    /// each with whether its time was in range (then it is late), and the
    /// records a user-defined aggregate failed on.
    fn add(&mut self, input: &WindowInput) -> (Vec<(usize, bool)>, Vec<Failed>) {
        let mut failed = Vec::new();
        let watermark = self.task.watermarks.current();
        let n = self.spec.pointers.len();
        let mut late = Vec::new();
        for (i, event) in input.events.iter().enumerate() {
            let row = &input.values[i * n..(i + 1) * n];
            let group: Group = match &self.spec.grouping {
                Grouping::Key => event.key().unwrap_or_default().to_vec(),
                Grouping::Fields(fields) => {
                    let vals: Vec<&Value> = fields
                        .iter()
                        .map(|(_, j)| row[*j].as_ref().unwrap_or(&Value::Null))
                        .collect();
                    serde_json::to_vec(&vals).unwrap_or_default()
                }
            };
            let ts = event.timestamp_ms();
            let mut assigned = std::mem::take(&mut self.assigned);
            self.spec.kind.assign(ts, &mut assigned);
            let mut taken = false;
            for w in &assigned {
                // A session that would merge into one still open is not late
                // (Flink merges, then checks lateness): every session in the
                // state is open.
                let joins_open_session = self.spec.kind.merges()
                    && self.task.state.sessions.get(&group).is_some_and(|ss| {
                        ss.iter().any(|(s, _)| s.start < w.end && w.start < s.end)
                    });
                if !self.is_open(w, watermark) && !joins_open_session {
                    continue;
                }
                taken = true;
                if self.spec.kind.merges() {
                    failed.extend(self.add_to_session(&group, *w, row, ts, input, i));
                } else {
                    let empty = &self.empty;
                    let accs = self
                        .task
                        .state
                        .fixed
                        .entry((w.end, group.clone(), w.start))
                        .or_insert_with(|| empty.clone());
                    update(self.spec, accs, row, ts);
                    if !self.udfs.is_empty() {
                        self.pending.push(((w.end, group.clone(), w.start), i));
                    }
                    if self.spec.mode == OutputMode::Update {
                        self.task.changed.insert((w.end, group.clone(), w.start));
                    }
                }
            }
            let in_range = !assigned.is_empty();
            self.assigned = assigned;
            if !taken {
                late.push((i, in_range));
            }
        }
        failed.extend(self.flush_pending(input));
        // A record in several windows (sliding) fails once per window: one
        // dead letter, with the first reason.
        failed.sort_by_key(|f| f.event);
        failed.dedup_by_key(|f| f.event);
        (late, failed)
    }

    /// Merges `w` (the own session of record `i` of `input`) with the group's
    /// sessions it overlaps; returns what a user-defined aggregate failed on.
    fn add_to_session(
        &mut self,
        group: &Group,
        w: Window,
        row: &[Option<Value>],
        ts: i64,
        input: &WindowInput,
        i: usize,
    ) -> Vec<Failed> {
        let mut merged = (w, self.empty.clone());
        update(self.spec, &mut merged.1, row, ts);
        let width = self.spec.pointers.len();
        let mut failed = Vec::new();
        for udf in &mut self.udfs {
            let mut state = [std::mem::take(bytes_mut(&mut merged.1[udf.index]))];
            failed.extend(udf.accumulate(
                &mut state,
                &[(0, i)],
                &input.events,
                &input.values,
                width,
            ));
            let [state] = state;
            *bytes_mut(&mut merged.1[udf.index]) = state;
        }
        let sessions = self.task.state.sessions.entry(group.clone()).or_default();
        let mut kept = Vec::with_capacity(sessions.len() + 1);
        for (s, accs) in sessions.drain(..) {
            if s.start < merged.0.end && merged.0.start < s.end {
                if self.spec.mode == OutputMode::Update {
                    self.task.changed.remove(&(s.end, group.clone(), s.start));
                }
                self.task
                    .state
                    .session_ends
                    .remove(&(s.end, group.clone(), s.start));
                merged.0 = Window {
                    start: merged.0.start.min(s.start),
                    end: merged.0.end.max(s.end),
                };
                let mut accs = accs;
                for (a, b) in accs.iter_mut().zip(&merged.1) {
                    a.merge(b);
                }
                for udf in &mut self.udfs {
                    let b = std::mem::take(bytes_mut(&mut merged.1[udf.index]));
                    udf.merge(bytes_mut(&mut accs[udf.index]), &b);
                }
                merged.1 = accs;
            } else {
                kept.push((s, accs));
            }
        }
        if self.spec.mode == OutputMode::Update {
            self.task
                .changed
                .insert((merged.0.end, group.clone(), merged.0.start));
        }
        self.task
            .state
            .session_ends
            .insert((merged.0.end, group.clone(), merged.0.start));
        kept.push(merged);
        kept.sort_by_key(|(s, _)| s.start);
        *sessions = kept;
        failed
    }

    /// Sends the late records to the dead-letter sink (or drops them), and
    /// counts them.
    fn late(
        &self,
        pipeline: &str,
        input: &WindowInput,
        untaken: &[(usize, bool)],
        dead_letter: &DeadLetter,
    ) -> anyhow::Result<()> {
        tracing::debug!(pipeline, records = untaken.len(), "late records");
        // Out-of-range times always go to the dead-letter sink; late ones as
        // `late` says.
        let late = untaken.iter().filter(|(_, in_range)| *in_range).count();
        self.stats.late.fetch_add(late as u64, Ordering::Relaxed);
        let watermark = self.task.watermarks.current();
        let reasons: Vec<(usize, String)> = untaken
            .iter()
            .filter(|(_, in_range)| !in_range || self.spec.late == LatePolicy::DeadLetter)
            .map(|&(i, in_range)| {
                let ts = input.events.get(i).map_or(0, |e| e.timestamp_ms());
                let reason = if in_range {
                    format!(
                        "late: event time {} is behind the watermark {} by more than the allowed lateness ({} ms) for every window it belongs to",
                        rfc3339(ts),
                        rfc3339(watermark),
                        self.spec.lateness_ms
                    )
                } else {
                    format!(
                        "event time {ts} ms is outside the years 0000-9999 that windows cover"
                    )
                };
                (i, reason)
            })
            .collect();
        let records: Vec<DeadRecord<'_>> = reasons
            .iter()
            .filter_map(|(i, reason)| {
                let e = input.events.get(*i)?;
                Some(DeadRecord {
                    stage: "window",
                    plugin: None,
                    partition: Some(input.partition),
                    reason,
                    key: e.key().unwrap_or_default(),
                    timestamp_ms: Some(e.timestamp_ms()),
                    original: e.value(),
                })
            })
            .collect();
        dead_letter.send(&records)?;
        self.stats
            .rejected
            .fetch_add(records.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    /// Emits what `watermark` allows (see the module doc), and forgets closed
    /// windows.
    fn emit(&mut self, watermark: i64) -> anyhow::Result<()> {
        let mut out: Vec<(Window, Group, Vec<Acc>)> = Vec::new();
        let lateness = self.spec.lateness_ms;
        let closed = |w: &Window| watermark >= w.end.saturating_add(lateness);
        match self.spec.mode {
            OutputMode::Update => {
                for (end, group, start) in std::mem::take(&mut self.task.changed) {
                    let w = Window { start, end };
                    let accs =
                        if self.spec.kind.merges() {
                            self.task.state.sessions.get(&group).and_then(|ss| {
                                ss.iter().find(|(s, _)| *s == w).map(|(_, a)| a.clone())
                            })
                        } else {
                            self.task
                                .state
                                .fixed
                                .get(&(end, group.clone(), start))
                                .cloned()
                        };
                    if let Some(accs) = accs {
                        out.push((w, group, accs));
                    }
                }
                self.drop_closed(&closed);
            }
            OutputMode::Append => {
                // Fixed windows: a prefix of the map (ordered by end).
                while let Some(entry) = self.task.state.fixed.first_entry() {
                    let (end, _, start) = entry.key();
                    let w = Window {
                        start: *start,
                        end: *end,
                    };
                    if !closed(&w) {
                        break;
                    }
                    let ((_, group, _), accs) = entry.remove_entry();
                    out.push((w, group, accs));
                }
                out.extend(self.task.state.take_closed_sessions(&closed));
                out.sort_by(|a, b| (a.0.end, &a.1, a.0.start).cmp(&(b.0.end, &b.1, b.0.start)));
            }
        }
        if out.is_empty() {
            return Ok(());
        }
        // The user-defined aggregates' results: one `finish` call each.
        let mut udf_values: Vec<(usize, std::vec::IntoIter<Value>)> = Vec::new();
        for udf in &mut self.udfs {
            let states: Vec<Vec<u8>> = out
                .iter_mut()
                .map(|(_, _, accs)| std::mem::take(bytes_mut(&mut accs[udf.index])))
                .collect();
            udf_values.push((udf.index, udf.finish(&states).into_iter()));
        }
        let mut batch = Batch::with_capacity(out.len(), out.len() * 160);
        let mut line = Vec::with_capacity(256);
        for (w, group, accs) in &out {
            // Written member by member (a `Map` built and serialised per row
            // cost ~4x as much); the names are distinct (the topology checks),
            // so the text is what serialising the object would give.
            line.clear();
            line.extend_from_slice(b"{\"window_start\":");
            serde_json::to_writer(&mut line, &rfc3339(w.start))?;
            line.extend_from_slice(b",\"window_end\":");
            serde_json::to_writer(&mut line, &rfc3339(w.end))?;
            let member = |line: &mut Vec<u8>, name: &str, value: &Value| {
                line.push(b',');
                serde_json::to_writer(&mut *line, name)?;
                line.push(b':');
                serde_json::to_writer(&mut *line, value)
            };
            match &self.spec.grouping {
                Grouping::Key => {
                    line.extend_from_slice(b",\"key\":");
                    serde_json::to_writer(&mut line, &String::from_utf8_lossy(group))?;
                }
                Grouping::Fields(fields) => {
                    let vals: Vec<Value> = serde_json::from_slice(group).unwrap_or_default();
                    for ((name, _), v) in fields.iter().zip(&vals) {
                        member(&mut line, name, v)?;
                    }
                }
            }
            for (i, (agg, acc)) in self.spec.aggregates.iter().zip(accs).enumerate() {
                let value = match udf_values.iter_mut().find(|(index, _)| *index == i) {
                    Some((_, values)) => values.next().unwrap_or(Value::Null),
                    None => acc.finish(),
                };
                member(&mut line, &agg.name, &value)?;
            }
            line.push(b'}');
            // Keyed by its group when grouped by key (so a Kafka sink keeps a
            // group's windows in one partition); its time is the window's
            // last instant.
            let key = matches!(self.spec.grouping, Grouping::Key).then_some(group.as_slice());
            batch.push(key, &line, w.end.saturating_sub(1));
        }
        let tap = self.dead_letter.tap();
        if tap.watched() {
            let seen = crate::obs::tap::Seen {
                pipeline: self.dead_letter.pipeline(),
                at: "window",
                ..Default::default()
            };
            tap.offer(&crate::obs::tap::Point::Window, seen, &batch);
        }
        crate::sink::deliver(self.sinks, batch, self.stats, self.dead_letter)
    }

    fn drop_closed(&mut self, closed: &dyn Fn(&Window) -> bool) {
        while let Some(entry) = self.task.state.fixed.first_entry() {
            let (end, _, start) = entry.key();
            if !closed(&Window {
                start: *start,
                end: *end,
            }) {
                break;
            }
            entry.remove();
        }
        self.task.state.take_closed_sessions(closed);
    }
}

fn update(spec: &WindowSpec, accs: &mut [Acc], row: &[Option<Value>], ts: i64) {
    for (agg, acc) in spec.aggregates.iter().zip(accs) {
        match agg.field {
            None => acc.update(None, ts),
            Some(i) => acc.update(Some(row[i].as_ref().unwrap_or(&Value::Null)), ts),
        }
    }
}

#[cfg(test)]
mod tests {
    //! The operator run in process over a queue of messages (as the workers
    //! send them), writing to real file sinks. Expected windows are worked out
    //! by hand, or by a naive model ([`model`]) that assigns windows from their
    //! definition and aggregates plain lists of values.

    use proptest::prelude::*;
    use serde_json::json;

    use super::*;
    use crate::checkpoint::Barrier;
    use crate::config::{LatePolicy, OutputMode};
    use crate::testkit::FileSink;

    const S: i64 = 1000;

    /// A window spec grouping by key with `count(*)`, `sum(/v)`, `min(/v)` and
    /// `max(/v)` as `n`, `sum`, `min`, `max`.
    fn spec(kind: WindowKind, delay_ms: i64, lateness_ms: i64) -> WindowSpec {
        let agg = |op, field: Option<usize>, name: &str| AggSpec {
            op,
            field,
            name: name.into(),
            udf: None,
        };
        WindowSpec {
            kind,
            delay_ms,
            lateness_ms,
            idle_timeout: Duration::from_secs(3600),
            mode: OutputMode::Append,
            grouping: Grouping::Key,
            aggregates: vec![
                agg(Op::Count, None, "n"),
                agg(Op::Sum, Some(0), "sum"),
                agg(Op::Min, Some(0), "min"),
                agg(Op::Max, Some(0), "max"),
            ],
            pointers: vec![Pointer::parse("/v").unwrap()],
            late: LatePolicy::DeadLetter,
        }
    }

    /// A worker's micro-batch from `partition`: (key, event time, v) records.
    fn batch(spec: &WindowSpec, partition: usize, records: &[(&str, i64, i64)]) -> WindowMsg {
        let mut events = Batch::new();
        for (key, ts, v) in records {
            events.push(
                Some(key.as_bytes()),
                json!({ "v": v }).to_string().as_bytes(),
                *ts,
            );
        }
        let (events, values, unreadable) = spec.prepare(events);
        assert!(unreadable.is_empty());
        WindowMsg::Batch(WindowInput {
            partition,
            task: None,
            max_input_ts: records.iter().map(|r| r.1).max(),
            events,
            values,
        })
    }

    fn barrier(id: u64, kind: BarrierKind, ack: &flume::Sender<Ack>) -> WindowMsg {
        WindowMsg::Barrier(Barrier {
            id,
            kind,
            ack: ack.clone(),
        })
    }

    /// An emitted window: (start, end, key, n, sum, min, max).
    type Row = (i64, i64, String, u64, i64, i64, i64);

    struct Outcome {
        /// Emitted windows, in the order written.
        rows: Vec<Row>,
        /// Dead-lettered records: (original, reason).
        dead: Vec<(String, String)>,
        stats: Arc<Stats>,
    }

    fn ms(text: &Value) -> i64 {
        chrono::DateTime::parse_from_rfc3339(text.as_str().unwrap())
            .unwrap()
            .timestamp_millis()
    }

    /// Runs the operator over `msgs` until their end.
    fn operate(
        spec: &WindowSpec,
        partitions: usize,
        msgs: Vec<WindowMsg>,
        checkpointed: bool,
    ) -> Outcome {
        operate_tasks(spec, partitions, msgs, checkpointed, false)
    }

    /// [`operate`], for a Kafka pipeline (`kafka`: each input names its task).
    fn operate_tasks(
        spec: &WindowSpec,
        partitions: usize,
        msgs: Vec<WindowMsg>,
        checkpointed: bool,
        kafka: bool,
    ) -> Outcome {
        let out = FileSink::start("out");
        let dlq = FileSink::start("dlq");
        let dead_letter = DeadLetter::new("unit-window", Some(dlq.handle()));
        let stats = Arc::new(Stats::default());
        let (tx, rx) = flume::unbounded();
        for msg in msgs {
            tx.send(msg).unwrap();
        }
        drop(tx);
        run(
            "unit-window",
            spec,
            partitions,
            rx,
            &[out.handle()],
            &dead_letter,
            &stats,
            None,
            checkpointed,
            kafka,
        )
        .unwrap();
        drop(dead_letter);
        let rows = out
            .finish()
            .iter()
            .map(|line| {
                let o: Value = serde_json::from_str(line).unwrap();
                (
                    ms(&o["window_start"]),
                    ms(&o["window_end"]),
                    o["key"].as_str().unwrap().to_string(),
                    o["n"].as_u64().unwrap(),
                    o["sum"].as_i64().unwrap(),
                    o["min"].as_i64().unwrap(),
                    o["max"].as_i64().unwrap(),
                )
            })
            .collect();
        let dead = dlq
            .finish()
            .iter()
            .map(|line| {
                let d: Value = serde_json::from_str(line).unwrap();
                assert_eq!(d["stage"], "window");
                (
                    d["original"].as_str().unwrap().to_string(),
                    d["reason"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        Outcome { rows, dead, stats }
    }

    /// A window's row from its start, end, key and values.
    fn row(start: i64, end: i64, key: &str, vs: &[i64]) -> Row {
        (
            start,
            end,
            key.into(),
            vs.len() as u64,
            vs.iter().sum(),
            *vs.iter().min().unwrap(),
            *vs.iter().max().unwrap(),
        )
    }

    fn late(o: &Outcome) -> u64 {
        o.stats.late.load(Ordering::Relaxed)
    }

    #[test]
    fn tumbling_windows_fire_once_the_watermark_passes_their_end() {
        let spec = spec(WindowKind::Tumbling { size: 10 * S }, 0, 0);
        let msgs = || {
            vec![
                batch(&spec, 0, &[("a", S, 1), ("b", 3 * S, 7), ("a", 5 * S, 2)]),
                // The watermark moves to 12 s: [0, 10 s) is complete.
                batch(&spec, 0, &[("a", 12 * S, 4)]),
                batch(&spec, 0, &[("a", 15 * S, 8), ("b", 19_999, -3)]),
            ]
        };
        let first = vec![row(0, 10 * S, "a", &[1, 2]), row(0, 10 * S, "b", &[7])];
        // Checkpointed: the input's end emits nothing; only the watermark did.
        let o = operate(&spec, 1, msgs(), true);
        assert_eq!(o.rows, first);
        assert_eq!(o.stats.watermark_ms.load(Ordering::Relaxed), 19_999);
        assert_eq!(o.stats.records_out.load(Ordering::Relaxed), 2);
        // Otherwise the end of the input emits the rest.
        let o = operate(&spec, 1, msgs(), false);
        let mut all = first;
        all.push(row(10 * S, 20 * S, "a", &[4, 8]));
        all.push(row(10 * S, 20 * S, "b", &[-3]));
        assert_eq!(o.rows, all);
        assert_eq!(late(&o), 0);
        assert!(o.dead.is_empty());
    }

    #[test]
    fn the_watermark_delay_holds_windows_open() {
        let spec = spec(WindowKind::Tumbling { size: 10 * S }, 5 * S, 0);
        let msgs = vec![
            batch(&spec, 0, &[("a", S, 1)]),
            batch(&spec, 0, &[("a", 14 * S, 2)]), // watermark 9 s: still open
            batch(&spec, 0, &[("a", 9 * S, 3)]),  // so this is in time
            batch(&spec, 0, &[("a", 15 * S, 4)]), // watermark 10 s: fires
        ];
        let o = operate(&spec, 1, msgs, true);
        assert_eq!(o.rows, vec![row(0, 10 * S, "a", &[1, 3])]);
        assert_eq!(late(&o), 0);
    }

    #[test]
    fn late_records_are_counted_and_dead_lettered_unless_the_lateness_allows_them() {
        let msgs = |spec: &WindowSpec| {
            vec![
                batch(spec, 0, &[("a", 15 * S, 1)]),
                batch(spec, 0, &[("a", 5 * S, 2), ("a", 11 * S, 3)]),
            ]
        };
        // No lateness: [0, 10 s) closed at watermark 15 s.
        let strict = spec(WindowKind::Tumbling { size: 10 * S }, 0, 0);
        let o = operate(&strict, 1, msgs(&strict), false);
        assert_eq!(o.rows, vec![row(10 * S, 20 * S, "a", &[1, 3])]);
        assert_eq!(late(&o), 1);
        assert_eq!(o.dead.len(), 1);
        assert_eq!(o.dead[0].0, r#"{"v":2}"#);
        assert!(o.dead[0].1.starts_with("late: "), "{}", o.dead[0].1);
        assert_eq!(o.stats.rejected.load(Ordering::Relaxed), 1);
        // Dropped instead: still counted, not dead-lettered.
        let dropping = WindowSpec {
            late: LatePolicy::Drop,
            ..strict.clone()
        };
        let o = operate(&dropping, 1, msgs(&dropping), false);
        assert_eq!(late(&o), 1);
        assert!(o.dead.is_empty());
        assert_eq!(o.stats.rejected.load(Ordering::Relaxed), 0);
        // 6 s of allowed lateness: [0, 10 s) is open until the watermark is 16 s.
        let lenient = spec(WindowKind::Tumbling { size: 10 * S }, 0, 6 * S);
        let o = operate(&lenient, 1, msgs(&lenient), false);
        assert_eq!(
            o.rows,
            vec![row(0, 10 * S, "a", &[2]), row(10 * S, 20 * S, "a", &[1, 3])]
        );
        assert_eq!(late(&o), 0);
    }

    #[test]
    fn the_slowest_partition_holds_the_watermark() {
        let spec = spec(WindowKind::Tumbling { size: 10 * S }, 0, 0);
        let msgs = vec![
            batch(&spec, 0, &[("a", 25 * S, 1)]),
            batch(&spec, 1, &[("a", 5 * S, 2)]), // watermark min(25, 5) = 5 s
            batch(&spec, 1, &[("a", 8 * S, 3)]), // 8 s: nothing complete
        ];
        let o = operate(&spec, 2, msgs, true);
        assert!(o.rows.is_empty(), "{:?}", o.rows);
        assert_eq!(o.stats.watermark_ms.load(Ordering::Relaxed), 8 * S);
        let msgs = vec![
            batch(&spec, 0, &[("a", 25 * S, 1)]),
            batch(&spec, 1, &[("a", 5 * S, 2)]),
            batch(&spec, 1, &[("a", 21 * S, 3)]), // 21 s: [0, 10 s) and [10 s, 20 s)
        ];
        let o = operate(&spec, 2, msgs, true);
        assert_eq!(o.rows, vec![row(0, 10 * S, "a", &[2])]);
    }

    #[test]
    fn a_silent_partition_holds_the_watermark_until_it_is_idle() {
        let msgs = |spec: &WindowSpec| {
            vec![
                batch(spec, 0, &[("a", S, 1)]),
                batch(spec, 0, &[("a", 30 * S, 2)]),
            ]
        };
        // Partition 1 never sends; within its idle timeout it holds everything.
        let waiting = spec(WindowKind::Tumbling { size: 10 * S }, 0, 0);
        let o = operate(&waiting, 2, msgs(&waiting), true);
        assert!(o.rows.is_empty(), "{:?}", o.rows);
        assert_eq!(o.stats.watermark_ms.load(Ordering::Relaxed), i64::MIN);
        // Idle at once: partition 0 alone moves the watermark.
        let idle = WindowSpec {
            idle_timeout: Duration::ZERO,
            ..waiting.clone()
        };
        let o = operate(&idle, 2, msgs(&idle), true);
        assert_eq!(o.rows, vec![row(0, 10 * S, "a", &[1])]);
        assert_eq!(o.stats.watermark_ms.load(Ordering::Relaxed), 30 * S);
    }

    #[test]
    fn sliding_windows_hold_every_record_in_each_window_containing_it() {
        let spec = spec(
            WindowKind::Sliding {
                size: 10 * S,
                slide: 5 * S,
            },
            0,
            0,
        );
        let msgs = vec![batch(
            &spec,
            0,
            &[("a", 2 * S, 1), ("a", 7 * S, 2), ("a", 12 * S, 4)],
        )];
        let o = operate(&spec, 1, msgs, false);
        assert_eq!(
            o.rows,
            vec![
                row(-5 * S, 5 * S, "a", &[1]),
                row(0, 10 * S, "a", &[1, 2]),
                row(5 * S, 15 * S, "a", &[2, 4]),
                row(10 * S, 20 * S, "a", &[4]),
            ]
        );
    }

    #[test]
    fn sessions_close_after_the_gap_and_merge_when_a_record_bridges_them() {
        let spec = spec(WindowKind::Session { gap: 5 * S }, 100 * S, 0);
        let msgs = vec![
            batch(
                &spec,
                0,
                &[
                    ("a", S, 1),
                    ("b", 2 * S, 5),
                    ("a", 3 * S, 2),
                    ("a", 10 * S, 3),
                ],
            ),
            batch(&spec, 0, &[("c", 20 * S, 1), ("c", 28 * S, 2)]),
            // [24 s, 29 s) overlaps [20 s, 25 s) and [28 s, 33 s): one session.
            batch(&spec, 0, &[("c", 24 * S, 4), ("a", 11 * S, 6)]),
        ];
        let o = operate(&spec, 1, msgs, false);
        assert_eq!(
            o.rows,
            vec![
                row(2 * S, 7 * S, "b", &[5]),
                row(S, 8 * S, "a", &[1, 2]),
                row(10 * S, 16 * S, "a", &[3, 6]),
                row(20 * S, 33 * S, "c", &[1, 2, 4]),
            ]
        );
    }

    #[test]
    fn update_mode_emits_each_change_and_forgets_closed_windows() {
        let spec = WindowSpec {
            mode: OutputMode::Update,
            ..spec(WindowKind::Tumbling { size: 10 * S }, 0, 0)
        };
        let msgs = vec![
            batch(&spec, 0, &[("a", S, 1)]),
            batch(&spec, 0, &[("a", 2 * S, 2)]),
            batch(&spec, 0, &[("a", 15 * S, 4)]),
        ];
        let o = operate(&spec, 1, msgs, false);
        assert_eq!(
            o.rows,
            vec![
                row(0, 10 * S, "a", &[1]),
                row(0, 10 * S, "a", &[1, 2]),
                row(10 * S, 20 * S, "a", &[4]),
            ]
        );
    }

    #[test]
    fn a_barrier_is_acknowledged_once_every_partition_passed_it_with_the_open_windows() {
        let spec = spec(WindowKind::Tumbling { size: 10 * S }, 0, 0);
        let (ack, acks) = flume::unbounded();
        let msgs = vec![
            batch(&spec, 0, &[("a", S, 1)]),
            barrier(1, BarrierKind::Periodic, &ack),
            batch(&spec, 1, &[("b", 2 * S, 2), ("a", 3 * S, 4)]),
            barrier(1, BarrierKind::Periodic, &ack),
            // Only one partition passes checkpoint 2.
            batch(&spec, 0, &[("a", 4 * S, 8)]),
            barrier(2, BarrierKind::Periodic, &ack),
        ];
        drop(ack);
        let o = operate(&spec, 2, msgs, true);
        assert!(o.rows.is_empty());
        let got: Vec<Ack> = acks.drain().collect();
        assert_eq!(got.len(), 1, "{got:?}");
        let Ack::Window(tasks) = &got[0] else {
            panic!("{got:?}")
        };
        let snapshot = &tasks[&0];
        let mut windows: Vec<(i64, i64, String, Value)> = snapshot
            .fixed
            .iter()
            .map(|(start, end, group, accs)| {
                (
                    *start,
                    *end,
                    String::from_utf8(group.clone()).unwrap(),
                    accs[1].finish(),
                )
            })
            .collect();
        windows.sort_by(|a, b| (a.0, a.1, &a.2).cmp(&(b.0, b.1, &b.2)));
        // At checkpoint 1: a's records 1 and 4, b's 2 (not a's 8).
        assert_eq!(
            windows,
            vec![
                (0, 10 * S, "a".into(), json!(5)),
                (0, 10 * S, "b".into(), json!(2)),
            ]
        );
        assert_eq!(
            snapshot.watermark, S,
            "min over the partitions' latest times"
        );
        assert_eq!(snapshot.partitions, vec![Some(S), Some(3 * S)]);
    }

    #[test]
    fn an_end_barrier_emits_every_window_then_saves_none() {
        let spec = spec(WindowKind::Tumbling { size: 10 * S }, 0, 0);
        let (ack, acks) = flume::unbounded();
        let msgs = vec![
            batch(&spec, 0, &[("a", S, 1), ("a", 12 * S, 2)]),
            barrier(1, BarrierKind::End, &ack),
        ];
        drop(ack);
        let o = operate(&spec, 1, msgs, true);
        assert_eq!(
            o.rows,
            vec![row(0, 10 * S, "a", &[1]), row(10 * S, 20 * S, "a", &[2])]
        );
        let Some(Ack::Window(tasks)) = acks.try_recv().ok() else {
            panic!("no ack")
        };
        assert!(tasks[&0].fixed.is_empty() && tasks[&0].sessions.is_empty());
    }

    #[test]
    fn a_stop_barrier_saves_the_open_windows_and_emits_none() {
        let spec = spec(WindowKind::Tumbling { size: 10 * S }, 0, 0);
        let (ack, acks) = flume::unbounded();
        let msgs = vec![
            batch(&spec, 0, &[("a", S, 1), ("a", 2 * S, 2)]),
            barrier(1, BarrierKind::Stop, &ack),
        ];
        drop(ack);
        // Not a checkpointed pipeline, yet the end of the input emits nothing:
        // the windows are in the checkpoint.
        let o = operate(&spec, 1, msgs, false);
        assert!(o.rows.is_empty(), "{:?}", o.rows);
        let Some(Ack::Window(tasks)) = acks.try_recv().ok() else {
            panic!("no ack")
        };
        let fixed = &tasks[&0].fixed;
        assert_eq!(fixed.len(), 1);
        assert_eq!((fixed[0].0, fixed[0].1), (0, 10 * S));
        assert_eq!(fixed[0].3[0].finish(), json!(2));
    }

    #[test]
    fn each_kafka_task_has_its_own_windows_and_watermark() {
        let spec = spec(WindowKind::Tumbling { size: 10 * S }, 0, 0);
        let task = |id: u32, records: &[(&str, i64, i64)]| match batch(&spec, 0, records) {
            WindowMsg::Batch(input) => WindowMsg::Batch(WindowInput {
                task: Some(id),
                ..input
            }),
            _ => unreachable!(),
        };
        let msgs = vec![
            task(1, &[("a", 30 * S, 1)]),
            // Task 2's watermark is its own: 5 s is not late there.
            task(2, &[("a", 5 * S, 2)]),
            task(2, &[("a", 12 * S, 4)]),
            // In task 1 it is.
            task(1, &[("a", 3 * S, 8)]),
            // Task 1 moves away (a rebalance): its windows are not emitted.
            WindowMsg::Forget(vec![1]),
        ];
        let o = operate_tasks(&spec, 1, msgs, false, true);
        assert_eq!(
            o.rows,
            vec![row(0, 10 * S, "a", &[2]), row(10 * S, 20 * S, "a", &[4])]
        );
        assert_eq!(late(&o), 1);
        assert_eq!(o.dead.len(), 1);
        assert_eq!(o.dead[0].0, r#"{"v":8}"#);
    }

    /// Runs the operator over `msgs` into an in-memory sink: the records as
    /// written, with their keys and event times.
    fn operate_kept(spec: &WindowSpec, msgs: Vec<WindowMsg>) -> Vec<crate::testkit::Kept> {
        let out = crate::testkit::MemorySinkRun::start("out");
        let (tx, rx) = flume::unbounded();
        for msg in msgs {
            tx.send(msg).unwrap();
        }
        drop(tx);
        let stats = Arc::new(Stats::default());
        let sinks = [out.handle()];
        run(
            "unit-window",
            spec,
            1,
            rx,
            &sinks,
            &DeadLetter::new("unit-window", None),
            &stats,
            None,
            false,
            false,
        )
        .unwrap();
        drop(sinks);
        out.finish()
    }

    #[test]
    fn a_window_is_keyed_by_its_group_and_timed_at_its_last_instant() {
        let spec = spec(WindowKind::Tumbling { size: 10 * S }, 0, 0);
        let kept = operate_kept(
            &spec,
            vec![batch(
                &spec,
                0,
                &[("a", S, 1), ("b", 2 * S, 2), ("a", 13 * S, 3)],
            )],
        );
        let got: Vec<(Option<&str>, i64)> = kept
            .iter()
            .map(|k| (k.key.as_deref(), k.timestamp_ms))
            .collect();
        assert_eq!(
            got,
            vec![
                (Some("a"), 10 * S - 1),
                (Some("b"), 10 * S - 1),
                (Some("a"), 20 * S - 1)
            ]
        );
        let first: Value = serde_json::from_str(&kept[0].value).unwrap();
        assert_eq!(first["window_start"], "1970-01-01T00:00:00.000Z");
        assert_eq!(first["window_end"], "1970-01-01T00:00:10.000Z");
    }

    #[test]
    fn grouped_by_fields_a_window_has_one_field_per_group_and_no_key() {
        let spec = WindowSpec {
            grouping: Grouping::Fields(vec![("c".into(), 1)]),
            pointers: vec![Pointer::parse("/v").unwrap(), Pointer::parse("/c").unwrap()],
            ..spec(WindowKind::Tumbling { size: 10 * S }, 0, 0)
        };
        let mut events = Batch::new();
        for (key, value, ts) in [
            ("k1", r#"{"c":"x","v":1}"#, S),
            ("k2", r#"{"c":"y","v":2}"#, 2 * S),
            ("k3", r#"{"c":"x","v":4}"#, 3 * S),
        ] {
            events.push(Some(key.as_bytes()), value.as_bytes(), ts);
        }
        let (events, values, _) = spec.prepare(events);
        let kept = operate_kept(
            &spec,
            vec![WindowMsg::Batch(WindowInput {
                partition: 0,
                task: None,
                max_input_ts: Some(3 * S),
                events,
                values,
            })],
        );
        let got: Vec<(Option<String>, Value)> = kept
            .iter()
            .map(|k| (k.key.clone(), serde_json::from_str(&k.value).unwrap()))
            .collect();
        let window = |c: &str, n: u64, sum: i64, min: i64, max: i64| {
            json!({
                "window_start": "1970-01-01T00:00:00.000Z",
                "window_end": "1970-01-01T00:00:10.000Z",
                "c": c, "n": n, "sum": sum, "min": min, "max": max,
            })
        };
        assert_eq!(
            got,
            vec![
                (None, window("x", 2, 5, 1, 4)),
                (None, window("y", 1, 2, 2, 2))
            ]
        );
    }

    /// A naive model of the operator over one partition: windows from their
    /// definition, aggregates as lists of values.
    mod model {
        use super::*;

        /// An open window, (start, end, key), and the values in it.
        type Open = ((i64, i64, String), Vec<i64>);

        /// The windows containing `t`, from the definition: every multiple of
        /// the slide `s` with `s <= t < s + size`.
        fn windows(kind: WindowKind, t: i64) -> Vec<(i64, i64)> {
            let (size, slide) = match kind {
                WindowKind::Tumbling { size } => (size, size),
                WindowKind::Sliding { size, slide } => (size, slide),
                WindowKind::Session { gap } => return vec![(t, t + gap)],
            };
            let mut out = Vec::new();
            let mut s = (t - size).div_euclid(slide) * slide;
            while s <= t {
                if t < s + size {
                    out.push((s, s + size));
                }
                s += slide;
            }
            out
        }

        /// (rows emitted in order, late records as (key, ts, v)).
        pub(super) fn run(
            kind: WindowKind,
            delay: i64,
            lateness: i64,
            batches: &[Vec<(String, i64, i64)>],
        ) -> (Vec<Row>, Vec<(String, i64, i64)>) {
            // Open windows: (start, end, key) → values.
            let mut open: Vec<Open> = Vec::new();
            let mut wm = i64::MIN;
            let mut rows = Vec::new();
            let mut late = Vec::new();
            let is_session = matches!(kind, WindowKind::Session { .. });
            for batch in batches {
                for (key, t, v) in batch {
                    let ws = windows(kind, *t);
                    let mut taken = false;
                    for (s, e) in ws {
                        let overlapping: Vec<usize> = (0..open.len())
                            .filter(|&i| {
                                let ((os, oe, ok), _) = &open[i];
                                is_session && ok == key && *os < e && s < *oe
                            })
                            .collect();
                        if wm >= e + lateness && overlapping.is_empty() {
                            continue;
                        }
                        taken = true;
                        if is_session {
                            let (mut s, mut e, mut vs) = (s, e, vec![*v]);
                            for &i in overlapping.iter().rev() {
                                let ((os, oe, _), ovs) = open.remove(i);
                                s = s.min(os);
                                e = e.max(oe);
                                vs.extend(ovs);
                            }
                            open.push(((s, e, key.clone()), vs));
                        } else {
                            match open.iter_mut().find(|(w, _)| *w == (s, e, key.clone())) {
                                Some((_, vs)) => vs.push(*v),
                                None => open.push(((s, e, key.clone()), vec![*v])),
                            }
                        }
                    }
                    if !taken {
                        late.push((key.clone(), *t, *v));
                    }
                }
                let max = batch.iter().map(|r| r.1).max().unwrap();
                wm = wm.max(max - delay);
                emit(&mut open, &mut rows, |end| wm >= end + lateness);
            }
            emit(&mut open, &mut rows, |_| true);
            (rows, late)
        }

        /// Moves the closed windows to `rows`, by end, key, start.
        fn emit(open: &mut Vec<Open>, rows: &mut Vec<Row>, closed: impl Fn(i64) -> bool) {
            let mut done: Vec<Open> = Vec::new();
            open.retain(|(w, vs)| {
                if closed(w.1) {
                    done.push((w.clone(), vs.clone()));
                    false
                } else {
                    true
                }
            });
            done.sort_by(|a, b| (a.0.1, &a.0.2, a.0.0).cmp(&(b.0.1, &b.0.2, b.0.0)));
            for ((s, e, k), vs) in done {
                rows.push(row(s, e, &k, &vs));
            }
        }
    }

    fn kinds() -> impl Strategy<Value = WindowKind> {
        prop_oneof![
            (1i64..50).prop_map(|size| WindowKind::Tumbling { size: size * 10 }),
            (1i64..20, 1i64..4).prop_map(|(slide, k)| WindowKind::Sliding {
                size: slide * 10 * k,
                slide: slide * 10
            }),
            (1i64..40).prop_map(|gap| WindowKind::Session { gap: gap * 10 }),
        ]
    }

    fn batches() -> impl Strategy<Value = Vec<Vec<(String, i64, i64)>>> {
        let record = (0..3u8, 0i64..1000, -50i64..50).prop_map(|(k, t, v)| (format!("k{k}"), t, v));
        proptest::collection::vec(proptest::collection::vec(record, 1..8), 1..8)
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

        /// Whatever the windows, watermark delay, lateness and input, the
        /// operator emits what the naive model does, in the same order, and
        /// dead-letters the same late records.
        #[test]
        fn the_operator_agrees_with_a_naive_model(
            kind in kinds(),
            delay in 0i64..300,
            lateness in 0i64..200,
            input in batches(),
        ) {
            let spec = spec(kind, delay, lateness);
            let msgs = input
                .iter()
                .map(|b| {
                    let records: Vec<(&str, i64, i64)> =
                        b.iter().map(|(k, t, v)| (k.as_str(), *t, *v)).collect();
                    batch(&spec, 0, &records)
                })
                .collect();
            let o = operate(&spec, 1, msgs, false);
            let (rows, late_records) = model::run(kind, delay, lateness, &input);
            prop_assert_eq!(&o.rows, &rows);
            prop_assert_eq!(late(&o), late_records.len() as u64);
            let dead: Vec<String> = o.dead.iter().map(|d| d.0.clone()).collect();
            let want: Vec<String> = late_records
                .iter()
                .map(|(_, _, v)| json!({ "v": v }).to_string())
                .collect();
            prop_assert_eq!(dead, want);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

        /// Every built-in aggregate of a window equals a naive computation over
        /// the window's records (absent and null values skipped, SQL-style).
        #[test]
        fn every_builtin_aggregate_agrees_with_a_naive_computation(
            // (key, event time, value: None = null, field left out or not)
            records in proptest::collection::vec(
                (0u8..4, 0i64..50, proptest::option::of(-20i64..20), any::<bool>()),
                1..30,
            ),
            per_batch in 1usize..10,
        ) {
            let ops = [
                (Op::Count, None, "n"),
                (Op::Count, Some(0), "nv"),
                (Op::Sum, Some(0), "sum"),
                (Op::Min, Some(0), "min"),
                (Op::Max, Some(0), "max"),
                (Op::Avg, Some(0), "avg"),
                (Op::First, Some(0), "first"),
                (Op::Last, Some(0), "last"),
                (Op::CountDistinct, Some(0), "distinct"),
            ];
            let spec = WindowSpec {
                aggregates: ops
                    .iter()
                    .map(|(op, field, name)| AggSpec {
                        op: *op,
                        field: *field,
                        name: (*name).into(),
                        udf: None,
                    })
                    .collect(),
                ..spec(WindowKind::Tumbling { size: 1_000_000 }, 0, 0)
            };
            let msgs = records
                .chunks(per_batch)
                .map(|chunk| {
                    let mut events = Batch::new();
                    for (k, ts, v, absent) in chunk {
                        let value = match (v, absent) {
                            (_, true) => json!({ "w": 1 }),
                            (None, false) => json!({ "v": null }),
                            (Some(v), false) => json!({ "v": v }),
                        };
                        events.push(Some(format!("k{k}").as_bytes()), value.to_string().as_bytes(), *ts);
                    }
                    let (events, values, _) = spec.prepare(events);
                    WindowMsg::Batch(WindowInput {
                        partition: 0,
                        task: None,
                        max_input_ts: chunk.iter().map(|r| r.1).max(),
                        events,
                        values,
                    })
                })
                .collect();
            let kept = operate_kept(&spec, msgs);
            let got: Vec<Value> = kept.iter().map(|k| serde_json::from_str(&k.value).unwrap()).collect();

            let mut want = Vec::new();
            for k in 0u8..4 {
                let mine: Vec<&(u8, i64, Option<i64>, bool)> =
                    records.iter().filter(|r| r.0 == k).collect();
                if mine.is_empty() {
                    continue;
                }
                // (event time, value) of the non-null values.
                let vals: Vec<(i64, i64)> = mine
                    .iter()
                    .filter(|r| !r.3)
                    .filter_map(|r| r.2.map(|v| (r.1, v)))
                    .collect();
                let or_null = |v: Option<Value>| v.unwrap_or(Value::Null);
                let sum: i64 = vals.iter().map(|p| p.1).sum();
                let distinct: BTreeSet<i64> = vals.iter().map(|p| p.1).collect();
                want.push(json!({
                    "window_start": "1970-01-01T00:00:00.000Z",
                    "window_end": "1970-01-01T00:16:40.000Z",
                    "key": format!("k{k}"),
                    "n": mine.len(),
                    "nv": vals.len(),
                    "sum": or_null((!vals.is_empty()).then(|| json!(sum))),
                    "min": or_null(vals.iter().map(|p| p.1).min().map(|v| json!(v))),
                    "max": or_null(vals.iter().map(|p| p.1).max().map(|v| json!(v))),
                    "avg": or_null((!vals.is_empty()).then(|| json!(sum as f64 / vals.len() as f64))),
                    "first": or_null(vals.iter().min().map(|p| json!(p.1))),
                    "last": or_null(vals.iter().max().map(|p| json!(p.1))),
                    "distinct": distinct.len(),
                }));
            }
            prop_assert_eq!(got, want);
        }
    }
}
