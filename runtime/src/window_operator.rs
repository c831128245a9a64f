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
//! the watermark is the minimum over the partitions (see [`crate::watermark`]).
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

use serde_json::{Map, Value};
use sluice_plugin_sdk::Batch;

use crate::aggregate::{Acc, Op};
use crate::checkpoint::{Ack, BarrierKind};
use crate::config::{LatePolicy, OutputMode};
use crate::dead_letter::{DeadLetter, DeadRecord};
use crate::decode::{Pointer, extract_into};
use crate::sink::SinkHandle;
use crate::stats::Stats;
pub use crate::udaf::UdfSpec;
use crate::udaf::{Failed, Udf, bytes_mut, group_pairs};
use crate::watermark::Watermarks;
use crate::window::{Window, WindowKind};
pub use crate::window::{WindowSnapshot, rfc3339};

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
    stats: &Stats,
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
    stats: &'a Stats,
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
            let mut obj = Map::new();
            obj.insert("window_start".into(), Value::from(rfc3339(w.start)));
            obj.insert("window_end".into(), Value::from(rfc3339(w.end)));
            match &self.spec.grouping {
                Grouping::Key => {
                    obj.insert(
                        "key".into(),
                        Value::from(String::from_utf8_lossy(group).into_owned()),
                    );
                }
                Grouping::Fields(fields) => {
                    let vals: Vec<Value> = serde_json::from_slice(group).unwrap_or_default();
                    for ((name, _), v) in fields.iter().zip(vals) {
                        obj.insert(name.clone(), v);
                    }
                }
            }
            for (i, (agg, acc)) in self.spec.aggregates.iter().zip(accs).enumerate() {
                let value = match udf_values.iter_mut().find(|(index, _)| *index == i) {
                    Some((_, values)) => values.next().unwrap_or(Value::Null),
                    None => acc.finish(),
                };
                obj.insert(agg.name.clone(), value);
            }
            line.clear();
            serde_json::to_writer(&mut line, &Value::Object(obj))?;
            // Keyed by its group when grouped by key (so a Kafka sink keeps a
            // group's windows in one partition); its time is the window's
            // last instant.
            let key = matches!(self.spec.grouping, Grouping::Key).then_some(group.as_slice());
            batch.push(key, &line, w.end.saturating_sub(1));
        }
        let batch = Arc::new(batch);
        for sink in self.sinks {
            sink.send(batch.clone())?;
        }
        self.stats
            .records_out
            .fetch_add(out.len() as u64, Ordering::Relaxed);
        Ok(())
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
