//! The processor chain: the Wasm stages a batch goes through, in order, and what
//! happens when one fails.
//!
//! Each partition worker owns one [`Stage`] per configured processor, each with
//! its own instance (store, memory, deadline). At every batch boundary a stage
//! checks its [`PluginSlot`]: when a new version was swapped in, the stage makes
//! a fresh instance of it and the batch runs there. The batch in flight always
//! finishes on the version it started with.
//!
//! A failed call (trap, timeout, out-of-memory, error result) is handled by the
//! stage's `on_error` policy:
//! - `dead-letter` and `skip`: the batch is **bisected** — each half is run
//!   again, and a failing half split again — until the records that make it fail
//!   (the poison records) are isolated one by one. Only those are dead-lettered
//!   (or dropped and counted); everything else goes on, in order. One poison
//!   record in a batch of n costs about 2·log₂(n) extra calls.
//! - `stop`: the pipeline stops; the daemon exits 1 once the others drained.
//!
//! A trap, a timeout or an out-of-memory also throws the instance away; the next
//! call gets a fresh one, configured again, from the plugin's `InstancePre`.
//! A **circuit breaker** ([`BreakerConfig`]) stops a plugin that fails call after
//! call from spinning: once open, batches go to the error policy without a call.

use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use sluice_plugin_sdk::Batch;

use crate::config::{BreakerConfig, OnError};
use crate::obs::metrics::PluginMetrics;
use crate::pipeline::builtin::{DedupSpec, DedupState, JoinSpec};
use crate::pipeline::keyed::{KeyedSpec, KeyedState, TaskStates, now_ms};
use crate::table::TableSet;
use crate::wasm::keyed::{KeyedCall, KeyedReturn};
use crate::wasm::plugin::{CallError, Instance, Limits, LogTags, Plugin, Processed};
use crate::wasm::reload::PluginSlot;

/// One step of a configured chain: a Wasm plugin stage, or a built-in stage
/// (see [`crate::pipeline::builtin`]).
#[derive(Debug, Clone)]
pub enum StepSpec {
    /// `{ plugin = "…" }`.
    Plugin(Arc<StageSpec>),
    /// `{ join = { … } }`.
    Join(Arc<JoinSpec>),
    /// `{ dedup = { … } }`.
    Dedup(Arc<DedupSpec>),
}

impl StepSpec {
    /// How logs, taps and dead letters name the step (`0:flights_delay`,
    /// `1:join:airports`, `2:dedup`).
    pub fn label(&self) -> &str {
        match self {
            StepSpec::Plugin(s) => &s.label,
            StepSpec::Join(s) => &s.label,
            StepSpec::Dedup(s) => &s.label,
        }
    }

    /// A text that differs when the step's configuration differs.
    pub fn fingerprint(&self) -> String {
        match self {
            // A keyed plugin's tables by their slots, as a join's below: a
            // reload loads them again and only the new slots are watched.
            // A keyed stage's settings too (watermark, TTL, memory, spill):
            // a reload that changes only them swaps the chain in (the state
            // carries over).
            StepSpec::Plugin(s) => format!(
                "{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}",
                s.slot.path,
                s.config,
                s.limits,
                s.on_error,
                s.breaker,
                s.keyed,
                s.tables
                    .as_ref()
                    .map(|t| t.values().map(Arc::as_ptr).collect::<Vec<_>>())
            ),
            // The table slot itself: a config reload loads the tables again,
            // and the chain then takes the new slots (whose files are watched).
            StepSpec::Join(j) => format!(
                "join {:p}|{}|{}|{:?}|{:?}",
                Arc::as_ptr(&j.table),
                j.on,
                j.target,
                j.kind,
                j.on_error
            ),
            StepSpec::Dedup(d) => format!(
                "dedup {:?}|{}|{}|{:?}",
                d.keys, d.within_ms, d.max_keys, d.on_error
            ),
        }
    }
}

/// One step of one partition worker's chain.
// A handful per worker, in a Vec: their size does not matter, and the plugin
// stage stays unboxed (its path is unchanged).
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Step {
    /// A plugin stage with its instance.
    Plugin(Stage),
    /// A lookup join (stateless here: the table is shared).
    Join(Arc<JoinSpec>),
    /// A deduplication with this partition's state.
    Dedup(Arc<DedupSpec>, DedupState),
}

impl Step {
    /// One step per spec, for partition `partition` of `pipeline`; a `dedup`
    /// takes its state from `restored` (by [`DedupSpec::state_name`]) when
    /// there.
    ///
    /// # Errors
    /// A plugin stage's instance cannot be made or configured; the message
    /// names it.
    pub fn chain(
        pipeline: &str,
        partition: usize,
        specs: &[StepSpec],
        restored: &crate::checkpoint::StageSnapshots,
    ) -> anyhow::Result<Vec<Step>> {
        specs
            .iter()
            .map(|spec| {
                Ok(match spec {
                    StepSpec::Plugin(spec) => {
                        let mut stage = Stage::new(pipeline, partition, spec.clone())
                            .map_err(|e| anyhow::anyhow!("stage {}: {e}", spec.label))?;
                        if let Some(crate::checkpoint::StageSnapshot::Keyed(k)) =
                            restored.get(&stage.state_name())
                        {
                            stage.set_keyed_state(TaskStates::from([(
                                None,
                                KeyedState::restore(k),
                            )]));
                        }
                        Step::Plugin(stage)
                    }
                    StepSpec::Join(spec) => Step::Join(spec.clone()),
                    StepSpec::Dedup(spec) => Step::Dedup(
                        spec.clone(),
                        match restored.get(&spec.state_name(partition)) {
                            Some(crate::checkpoint::StageSnapshot::Dedup(d)) => {
                                DedupState::restore(d)
                            }
                            _ => DedupState::default(),
                        },
                    ),
                })
            })
            .collect()
    }

    /// How logs, taps and dead letters name the step.
    pub fn label(&self) -> &str {
        match self {
            Step::Plugin(s) => &s.spec().label,
            Step::Join(s) => &s.label,
            Step::Dedup(s, _) => &s.label,
        }
    }
}

/// A configured stage, shared by the partition workers of a pipeline.
#[derive(Debug)]
pub struct StageSpec {
    /// `INDEX:PLUGIN`, e.g. `0:flights_delay`: how logs and dead letters name it.
    pub label: String,
    /// The running version of the plugin, swapped on reload.
    pub slot: Arc<PluginSlot>,
    /// Pairs passed to `configure`.
    pub config: Vec<(String, String)>,
    /// Memory limit and deadline of each instance.
    pub limits: Limits,
    /// What a failed batch does.
    pub on_error: OnError,
    /// When to stop calling a failing plugin.
    pub breaker: BreakerConfig,
    /// A keyed processor's settings (`None` for a plain processor).
    pub keyed: Option<KeyedSpec>,
    /// The tables a keyed processor's `tables` import reads.
    pub tables: Option<Arc<TableSet>>,
}

/// What one stage made of a batch, bisecting it when it failed.
#[derive(Debug, Default)]
pub struct StageOutput {
    /// Events passed on, in input order.
    pub events: Batch,
    /// (input index, reason) of events the plugin refused.
    pub rejected: Vec<(u32, String)>,
    /// (input index, reason) of events isolated as making the plugin fail, or not
    /// tried because the circuit breaker is open.
    pub failed: Vec<(u32, String)>,
}

/// One stage of one partition worker.
#[derive(Debug)]
pub struct Stage {
    spec: Arc<StageSpec>,
    pipeline: String,
    partition: usize,
    /// The version this stage runs.
    plugin: Arc<Plugin>,
    /// A newer version whose instance could not be made here, and when: retried
    /// after [`RETRY_REFUSED`], not on every batch.
    refused: Option<(Arc<Plugin>, Instant)>,
    instance: Option<Instance>,
    breaker: Breaker,
    /// Failed calls the bisection of the current batch may still make.
    bisect_budget: usize,
    /// The instruments of the version this stage runs.
    metrics: Arc<PluginMetrics>,
    /// A keyed processor's states on this partition: one per task (see
    /// [`TaskStates`]).
    keyed: Option<TaskStates>,
    /// When the keyed state's gauges were last reported.
    keyed_reported: Option<Instant>,
}

/// Why a keyed stage runs without a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flush {
    /// A pause in the input: processing-time timers that are due fire.
    Tick,
    /// The end of the input: every event-time timer fires.
    End,
}

/// How long a partition waits before trying again a new version (or chain) it
/// could not start (a transient failure: memory, address space).
pub const RETRY_REFUSED: std::time::Duration = std::time::Duration::from_secs(1);

impl Stage {
    /// A stage for partition `partition` of `pipeline`, with its instance of the
    /// running version made and configured now.
    ///
    /// # Errors
    /// The instance cannot be made or `configure` fails.
    pub fn new(pipeline: &str, partition: usize, spec: Arc<StageSpec>) -> Result<Self, CallError> {
        let plugin = spec.slot.current();
        let metrics =
            crate::obs::metrics::plugin(pipeline, &spec.label, &plugin.name, &plugin.version);
        let mut stage = Stage {
            breaker: Breaker::new(spec.breaker),
            spec,
            pipeline: pipeline.to_string(),
            partition,
            plugin,
            refused: None,
            instance: None,
            bisect_budget: 0,
            metrics,
            keyed: None,
            keyed_reported: None,
        };
        if stage.spec.keyed.is_some() {
            stage.keyed = Some(TaskStates::new());
        }
        stage.instance = Some(stage.instantiate(&stage.plugin.clone())?);
        Ok(stage)
    }

    /// The shared spec.
    pub fn spec(&self) -> &StageSpec {
        &self.spec
    }

    /// The version this stage runs now (the one that ran the last batch).
    pub fn plugin(&self) -> &Arc<Plugin> {
        &self.plugin
    }

    fn instantiate(&self, plugin: &Plugin) -> Result<Instance, CallError> {
        let mut instance = plugin.instantiate(
            &self.spec.config,
            self.spec.limits,
            LogTags {
                pipeline: self.pipeline.clone(),
                stage: self.spec.label.clone(),
                plugin: plugin.name.clone(),
                version: plugin.version.clone(),
                partition: self.partition,
            },
        )?;
        if let Some(tables) = &self.spec.tables {
            instance.set_tables(tables.clone());
        }
        Ok(instance)
    }

    /// Whether this is a keyed processor's stage.
    pub fn is_keyed(&self) -> bool {
        self.keyed.is_some()
    }

    /// The name of this stage's keyed state in a checkpoint, for its partition.
    pub fn state_name(&self) -> String {
        self.spec
            .keyed
            .unwrap_or_default()
            .state_name(self.partition, &self.plugin.name)
    }

    /// A keyed stage's states for a checkpoint (none for a plain stage):
    /// the partition's own under [`Stage::state_name`], each Kafka
    /// partition's under [`KeyedSpec::task_state_name`].
    ///
    /// # Errors
    /// A spill file cannot be read.
    pub fn keyed_snapshot(
        &self,
    ) -> anyhow::Result<Vec<(String, crate::checkpoint::StageSnapshot)>> {
        let (Some(spec), Some(states)) = (self.spec.keyed.as_ref(), self.keyed.as_ref()) else {
            return Ok(Vec::new());
        };
        let now = now_ms();
        states
            .iter()
            .map(|(task, state)| {
                let name = match task {
                    None => self.state_name(),
                    Some(task) => spec.task_state_name(*task, &self.plugin.name),
                };
                Ok((
                    name,
                    crate::checkpoint::StageSnapshot::Keyed(state.snapshot(spec, now)?),
                ))
            })
            .collect()
    }

    /// Takes up keyed states (restored from a checkpoint, or carried over
    /// from the chain a config reload replaced).
    pub fn set_keyed_state(&mut self, states: TaskStates) {
        if self.keyed.is_some() {
            self.keyed = Some(states);
        }
    }

    /// Hands the keyed states over (for the chain that replaces this one).
    pub fn take_keyed_state(&mut self) -> Option<TaskStates> {
        self.keyed.take()
    }

    /// Takes up the state of Kafka partition task `task` from `states` (the
    /// stage's name, [`KeyedSpec::stage_name`] → its state, as a changelog
    /// record holds them): an empty one when `states` has none for this
    /// stage. Returns the keys restored.
    pub fn restore_task(
        &mut self,
        task: u32,
        states: &std::collections::BTreeMap<String, crate::checkpoint::KeyedSnapshot>,
    ) -> usize {
        let Some(spec) = self.spec.keyed else {
            return 0;
        };
        let name = spec.stage_name(&self.plugin.name);
        let Some(tasks) = self.keyed.as_mut() else {
            return 0;
        };
        let state = states
            .get(&name)
            .map(KeyedState::restore)
            .unwrap_or_default();
        let keys = state.len();
        tasks.insert(Some(task), state);
        keys
    }

    /// Drops the states of Kafka partition tasks `tasks` (their partitions
    /// went to another daemon, which restores them from the changelog).
    pub fn forget_tasks(&mut self, tasks: &[u32]) {
        if let Some(states) = self.keyed.as_mut() {
            for task in tasks {
                states.remove(&Some(*task));
            }
        }
    }

    /// The tasks this keyed stage holds a state for (empty for a plain one).
    pub fn keyed_tasks(&self) -> Vec<Option<u32>> {
        self.keyed
            .as_ref()
            .map(|s| s.keys().copied().collect())
            .unwrap_or_default()
    }

    /// Whether a keyed stage has a processing-time timer due now.
    pub fn processing_due(&self) -> bool {
        let now = now_ms();
        self.keyed
            .as_ref()
            .is_some_and(|s| s.values().any(|k| k.processing_due(now)))
    }

    /// One `process-keyed` call on the instance (made when there is none).
    fn call_keyed(&mut self, call: &mut KeyedCall) -> Result<KeyedReturn, CallError> {
        self.call(|instance| instance.process_keyed(call))
    }

    /// One call on the instance (made when there is none), timed and
    /// counted; an instance the call poisoned is dropped.
    fn call<T>(
        &mut self,
        f: impl FnOnce(&mut Instance) -> Result<T, CallError>,
    ) -> Result<T, CallError> {
        let instance = match &mut self.instance {
            Some(i) => i,
            None => {
                let plugin = self.plugin.clone();
                self.instance.insert(self.instantiate(&plugin)?)
            }
        };
        let started = Instant::now();
        let result = f(instance);
        self.metrics
            .call_duration
            .observe(started.elapsed().as_secs_f64());
        self.metrics.memory(instance.memory_high_water());
        if let Err(e) = &result {
            self.metrics.count_failure(e);
            if e.poisons_instance() {
                self.instance = None;
            }
        }
        result
    }

    /// A keyed stage's batch (or, with `flush`, its timers alone), on the
    /// state of `task` (`None`: the partition's own; `Some`: a Kafka
    /// partition's, made empty when new): see [`KeyedState::process`]. Under
    /// `on_error = "stop"` a failed call is returned.
    ///
    /// # Errors
    /// Only under `on_error = "stop"`: the failed call.
    pub fn process_keyed(
        &mut self,
        batch: &Batch,
        task: Option<u32>,
        flush: Option<Flush>,
    ) -> Result<StageOutput, CallError> {
        self.follow_slot();
        let spec = self.spec.keyed.expect("a keyed stage");
        let mut state = self
            .keyed
            .as_mut()
            .and_then(|s| s.remove(&task))
            .unwrap_or_default();
        let stop = self.spec.on_error == OnError::Stop;
        let budget = self.spec.breaker.bisect_limit;
        let now = now_ms();
        // The circuit breaker, as for a plain stage: while open, the batch
        // goes to the error policy without a call (its timers wait).
        if !stop && let Some(reason) = self.breaker.refuses() {
            self.keyed.get_or_insert_default().insert(task, state);
            return Ok(StageOutput {
                failed: (0..batch.len())
                    .map(|i| (i as u32, reason.clone()))
                    .collect(),
                ..StageOutput::default()
            });
        }
        let trial = self.breaker.half_open;
        let records = batch.len();
        let mut logged = false;
        // Each call: a success closes the count; a call of one record (or one
        // timer) that fails is a poison record toward the breaker, and the
        // first failure of the batch is logged, as a plain stage's.
        let mut call = |c: &mut KeyedCall| {
            // (Counted before: the call takes the events.)
            let inputs = c.events.len() + c.fired.len();
            let result = self.call_keyed(c);
            match &result {
                Ok(_) => self.breaker.success(),
                Err(error) if !stop => {
                    if !logged {
                        logged = true;
                        self.log_failure(records, error);
                        if trial {
                            self.note_failure(error, true);
                        }
                    }
                    if inputs == 1 {
                        self.note_failure(error, false);
                    }
                }
                Err(_) => {}
            }
            result
        };
        let result = state
            .process(&spec, batch, now, stop, budget, &mut call)
            .and_then(|mut out| {
                if flush == Some(Flush::End) {
                    let end = state.finish(&spec, now, stop, &mut call)?;
                    for event in &end.events {
                        out.events.push_event(&event);
                    }
                    out.timers_fired += end.timers_fired;
                    out.timers_failed += end.timers_failed;
                }
                Ok(out)
            });
        self.keyed.get_or_insert_default().insert(task, state);
        self.report_keyed();
        let out = result?;
        if out.timers_failed > 0 {
            tracing::warn!(
                pipeline = %self.pipeline,
                stage = %self.spec.label,
                partition = self.partition,
                timers = out.timers_failed,
                "timers failed and were dropped"
            );
        }
        Ok(StageOutput {
            events: out.events,
            rejected: out.rejected,
            failed: out.failed,
        })
    }

    /// Reports the keyed state's gauges (every task of the partition
    /// together), at most once a second: counting the keys walks the states
    /// held in memory.
    fn report_keyed(&mut self) {
        if self
            .keyed_reported
            .is_some_and(|at| at.elapsed() < std::time::Duration::from_secs(1))
        {
            return;
        }
        self.keyed_reported = Some(Instant::now());
        let Some(states) = &self.keyed else {
            return;
        };
        let mut g = crate::obs::metrics::KeyedStateGauges::default();
        for state in states.values() {
            g.keys += state.len() as u64;
            g.spilled_keys += state.spilled() as u64;
            g.memory_bytes += state.bytes() as u64;
            g.timers += state.timers() as u64;
            g.spill_failed |= u64::from(state.spill_failed());
        }
        crate::obs::metrics::keyed_state(&self.pipeline, &self.spec.label, self.partition, g);
    }

    /// At a batch boundary: moves to the version in the slot if it changed.
    fn follow_slot(&mut self) {
        if self.spec.slot.is_current(&self.plugin) {
            return;
        }
        let latest = self.spec.slot.current();
        if self
            .refused
            .as_ref()
            .is_some_and(|(r, at)| Arc::ptr_eq(r, &latest) && at.elapsed() < RETRY_REFUSED)
        {
            return;
        }
        match self.instantiate(&latest) {
            Ok(instance) => {
                tracing::debug!(
                    pipeline = %self.pipeline,
                    stage = %self.spec.label,
                    partition = self.partition,
                    from = %self.plugin.version,
                    to = %latest.version,
                    "partition switched plugin version"
                );
                self.instance = Some(instance);
                self.metrics = crate::obs::metrics::plugin(
                    &self.pipeline,
                    &self.spec.label,
                    &latest.name,
                    &latest.version,
                );
                self.plugin = latest;
                self.refused = None;
                self.breaker.reset();
            }
            Err(e) => {
                tracing::error!(
                    pipeline = %self.pipeline,
                    stage = %self.spec.label,
                    partition = self.partition,
                    running = %self.plugin.version,
                    refused = %latest.version,
                    "new plugin version cannot start on this partition, the running one keeps serving: {e}"
                );
                self.refused = Some((latest, Instant::now()));
            }
        }
    }

    /// Runs `batch` through the plugin once. `batch` is left as it was, so a
    /// failed batch can still be dead-lettered.
    ///
    /// # Errors
    /// The call failed; see [`CallError`].
    pub fn run(&mut self, batch: &mut Batch) -> Result<Processed, CallError> {
        self.call(|instance| instance.process(batch))
    }

    /// Runs a batch at a batch boundary: picks up a swapped-in version, then runs
    /// the batch under the stage's policy. With `stop`, a failure is returned as
    /// is; otherwise a failed batch is bisected and the poison records come back
    /// in [`StageOutput::failed`].
    ///
    /// # Errors
    /// Only under `on_error = "stop"`: the failed call.
    pub fn process(&mut self, batch: &mut Batch) -> Result<StageOutput, CallError> {
        if self.keyed.is_some() {
            return self.process_keyed(batch, None, None);
        }
        self.follow_slot();
        if self.spec.on_error == OnError::Stop {
            let processed = self.run(batch)?;
            return Ok(StageOutput {
                events: processed.events,
                rejected: processed.rejected,
                failed: Vec::new(),
            });
        }
        let mut out = StageOutput::default();
        let all = 0..batch.len();
        if let Some(reason) = self.breaker.refuses() {
            out.failed.extend(all.map(|i| (i as u32, reason.clone())));
            return Ok(out);
        }
        let trial = self.breaker.half_open;
        match self.run(batch) {
            Ok(processed) => {
                self.breaker.success();
                return Ok(StageOutput {
                    events: processed.events,
                    rejected: processed.rejected,
                    failed: Vec::new(),
                });
            }
            Err(error) if trial => {
                // The one trial batch of a half-open breaker failed: open again,
                // without bisecting it.
                self.note_failure(&error, true);
                let reason = format!("{error} (circuit breaker trial batch; opened again)");
                out.failed.extend(all.map(|i| (i as u32, reason.clone())));
            }
            Err(error) => {
                self.log_failure(all.len(), &error);
                self.bisect_budget = self.spec.breaker.bisect_limit;
                self.isolate(batch, all, error, &mut out);
            }
        }
        Ok(out)
    }

    /// `range` of `batch` failed with `error`: splits it and runs each half,
    /// until single failing records are left.
    fn isolate(
        &mut self,
        batch: &Batch,
        range: Range<usize>,
        error: CallError,
        out: &mut StageOutput,
    ) {
        if range.len() == 1 {
            // A record that fails alone: a poison record. Only these count
            // toward the breaker — a batch of one poison record among n fails
            // about log₂(n) times in a row while it is being bisected.
            self.note_failure(&error, false);
            out.failed.push((range.start as u32, error.to_string()));
            return;
        }
        if self.bisect_budget == 0 {
            let reason = format!(
                "{error} (not isolated: bisection of this batch stopped after {} failed calls)",
                self.spec.breaker.bisect_limit
            );
            out.failed.extend(range.map(|i| (i as u32, reason.clone())));
            return;
        }
        self.bisect_budget -= 1;
        let mid = range.start + range.len() / 2;
        for half in [range.start..mid, mid..range.end] {
            if let Some(reason) = self.breaker.refuses() {
                out.failed.extend(half.map(|i| (i as u32, reason.clone())));
                continue;
            }
            let mut part = slice(batch, half.clone());
            match self.run(&mut part) {
                Ok(processed) => {
                    self.breaker.success();
                    for event in &processed.events {
                        out.events.push_event(&event);
                    }
                    let base = half.start as u32;
                    out.rejected.extend(
                        processed
                            .rejected
                            .into_iter()
                            .map(|(i, reason)| (base + i, reason)),
                    );
                }
                Err(e) => self.isolate(batch, half, e, out),
            }
        }
    }

    fn note_failure(&mut self, error: &CallError, reopen: bool) {
        if self.breaker.failure(error, reopen, &self.metrics) {
            tracing::warn!(
                pipeline = %self.pipeline,
                stage = %self.spec.label,
                plugin = %self.plugin.name,
                version = %self.plugin.version,
                partition = self.partition,
                failures = self.spec.breaker.failures,
                cooldown = ?self.spec.breaker.cooldown,
                "circuit breaker opened: batches go to the error policy without calling the plugin until the cooldown ends"
            );
        }
    }

    fn log_failure(&self, records: usize, error: &CallError) {
        tracing::error!(
            pipeline = %self.pipeline,
            stage = %self.spec.label,
            plugin = %self.plugin.name,
            version = %self.plugin.version,
            partition = self.partition,
            records,
            on_error = ?self.spec.on_error,
            "batch failed, isolating the records that cause it: {error}"
        );
    }
}

/// A copy of `range` of `batch`.
fn slice(batch: &Batch, range: Range<usize>) -> Batch {
    let mut part = Batch::with_capacity(range.len(), 0);
    for i in range {
        if let Some(event) = batch.get(i) {
            part.push_event(&event);
        }
    }
    part
}

/// A circuit breaker over the calls of one stage instance (see
/// [`BreakerConfig`]): closed → open after `failures` poison records in a row
/// (records whose call fails alone, with no successful call between) →
/// half-open after `cooldown` → closed on a success, open again on a failure.
#[derive(Debug)]
struct Breaker {
    config: BreakerConfig,
    failures_in_a_row: usize,
    open_until: Option<Instant>,
    /// The cooldown ended: the next batch is the one trial.
    half_open: bool,
    last_error: String,
    /// While open or half-open: the instruments whose `breakers_open` gauge
    /// this breaker raised (lowered again when it closes, resets or drops).
    reported: Option<Arc<PluginMetrics>>,
}

impl Breaker {
    fn new(config: BreakerConfig) -> Self {
        Breaker {
            config,
            failures_in_a_row: 0,
            open_until: None,
            half_open: false,
            last_error: String::new(),
            reported: None,
        }
    }

    /// Lowers the `breakers_open` gauge this breaker raised, if it did.
    fn release(&mut self) {
        if let Some(metrics) = self.reported.take() {
            metrics.breakers_open.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// `Some(reason)` while open: the call must not be made.
    fn refuses(&mut self) -> Option<String> {
        let until = self.open_until?;
        if Instant::now() >= until {
            // Half-open: let one batch through; its outcome decides.
            self.open_until = None;
            self.half_open = true;
            return None;
        }
        Some(format!(
            "circuit breaker open: the plugin failed {} calls in a row (last: {}); not called until the cooldown ends",
            self.config.failures, self.last_error
        ))
    }

    fn success(&mut self) {
        self.failures_in_a_row = 0;
        self.half_open = false;
        self.release();
    }

    /// Counts a poison record (or, with `reopen`, a failed trial batch);
    /// returns whether the breaker opened now (counted in `metrics`).
    fn failure(&mut self, error: &CallError, reopen: bool, metrics: &Arc<PluginMetrics>) -> bool {
        self.failures_in_a_row += 1;
        self.half_open = false;
        if !reopen && self.failures_in_a_row < self.config.failures {
            return false;
        }
        self.last_error = error.to_string();
        self.open_until = Some(Instant::now() + self.config.cooldown);
        metrics.breaker_opened.fetch_add(1, Ordering::Relaxed);
        if self.reported.is_none() {
            metrics.breakers_open.fetch_add(1, Ordering::Relaxed);
            self.reported = Some(metrics.clone());
        }
        true
    }

    fn reset(&mut self) {
        self.failures_in_a_row = 0;
        self.open_until = None;
        self.half_open = false;
        self.release();
    }
}

impl Drop for Breaker {
    fn drop(&mut self) {
        self.release();
    }
}

#[cfg(test)]
mod tests {
    //! Bisection, `on_error` and the circuit breaker, on real Wasm instances of
    //! the `misbehave` test plugin: with `mode = "fail"` (or `"panic"`) and
    //! `trigger = "POISON"`, a call fails exactly when its batch holds a record
    //! containing `POISON`, so which records are poison is known from the input.

    use std::time::Duration;

    use proptest::prelude::*;

    use super::*;
    use crate::testkit::{batch_of, plugin, slot, stage_spec, values_of};

    const FAILED_ON_PURPOSE: &str = "plugin error: misbehave: batch failed on purpose";
    const OPEN: &str = "circuit breaker open";

    fn breaker(failures: usize) -> BreakerConfig {
        BreakerConfig {
            failures,
            cooldown: Duration::from_secs(3600),
            bisect_limit: 1000,
        }
    }

    fn stage_with(
        slot: Arc<PluginSlot>,
        config: &[(&str, &str)],
        on_error: OnError,
        breaker: BreakerConfig,
    ) -> Stage {
        let spec = stage_spec(slot, config, on_error, breaker);
        Stage::new("unit-processor", 0, spec).expect("the stage starts")
    }

    /// A `misbehave` stage whose calls fail on batches holding `POISON`.
    fn failing_stage(on_error: OnError, breaker: BreakerConfig) -> Stage {
        stage_with(
            slot("misbehave"),
            &[("mode", "fail"), ("trigger", "POISON")],
            on_error,
            breaker,
        )
    }

    /// Records `r0`, `r1`, …; those at `poison` carry `POISON`.
    fn records(n: usize, poison: &[usize]) -> Vec<String> {
        (0..n)
            .map(|i| {
                if poison.contains(&i) {
                    format!("r{i} POISON")
                } else {
                    format!("r{i}")
                }
            })
            .collect()
    }

    fn run(stage: &mut Stage, values: &[String]) -> StageOutput {
        let refs: Vec<&str> = values.iter().map(String::as_str).collect();
        stage
            .process(&mut batch_of(&refs))
            .expect("no error under dead-letter or skip")
    }

    fn failed_indices(out: &StageOutput) -> Vec<u32> {
        out.failed.iter().map(|(i, _)| *i).collect()
    }

    /// The breaker's cooldown is over (as if an hour had passed).
    fn end_cooldown(stage: &mut Stage) {
        assert!(
            stage.breaker.open_until.is_some(),
            "the breaker is not open"
        );
        stage.breaker.open_until = Some(Instant::now());
    }

    #[test]
    fn bisection_isolates_exactly_the_poison_records() {
        let mut stage = failing_stage(OnError::DeadLetter, breaker(1000));
        let input = records(16, &[3, 4, 11]);
        let out = run(&mut stage, &input);
        assert_eq!(failed_indices(&out), vec![3, 4, 11]);
        for (_, reason) in &out.failed {
            assert_eq!(reason, FAILED_ON_PURPOSE);
        }
        let passed: Vec<String> = [0, 1, 2, 5, 6, 7, 8, 9, 10, 12, 13, 14, 15]
            .iter()
            .map(|i| format!("r{i}"))
            .collect();
        assert_eq!(values_of(&out.events), passed, "the others, in order");
        assert!(out.rejected.is_empty());
    }

    #[test]
    fn a_batch_without_poison_is_one_call_and_passes_whole() {
        let mut stage = failing_stage(OnError::DeadLetter, breaker(1));
        let input = records(5, &[]);
        let out = run(&mut stage, &input);
        assert_eq!(values_of(&out.events), input);
        assert!(out.failed.is_empty() && out.rejected.is_empty());
    }

    #[test]
    fn a_trap_throws_the_instance_away_and_bisection_goes_on() {
        let mut stage = stage_with(
            slot("misbehave"),
            &[("mode", "panic"), ("trigger", "POISON")],
            OnError::Skip,
            breaker(1000),
        );
        let input = records(6, &[1, 4]);
        let out = run(&mut stage, &input);
        assert_eq!(failed_indices(&out), vec![1, 4]);
        for (_, reason) in &out.failed {
            assert!(reason.contains("misbehave: panic on purpose"), "{reason}");
        }
        assert_eq!(values_of(&out.events), ["r0", "r2", "r3", "r5"]);
        // The next batch runs on a fresh instance.
        let out = run(&mut stage, &records(2, &[]));
        assert_eq!(values_of(&out.events), ["r0", "r1"]);
    }

    #[test]
    fn rejections_in_a_bisected_batch_keep_their_index_in_the_batch() {
        // Rejects records containing REJ, fails batches containing POISON.
        let mut stage = stage_with(
            slot("misbehave"),
            &[("mode", "fail"), ("trigger", "POISON"), ("reject", "REJ")],
            OnError::DeadLetter,
            breaker(1000),
        );
        let input: Vec<String> = ["a", "REJ1", "POISON2", "b", "REJ4", "c", "POISON6", "d"]
            .map(String::from)
            .to_vec();
        let out = run(&mut stage, &input);
        assert_eq!(values_of(&out.events), ["a", "b", "c", "d"]);
        let rejected: Vec<u32> = out.rejected.iter().map(|(i, _)| *i).collect();
        assert_eq!(rejected, vec![1, 4]);
        assert_eq!(failed_indices(&out), vec![2, 6]);
    }

    #[test]
    fn every_kind_of_failed_call_is_isolated_and_counted_by_kind() {
        use std::sync::atomic::Ordering::Relaxed;
        /// Reads the counter of one kind of failure.
        type Counter = fn(&PluginMetrics) -> u64;
        // (mode, what the reason says, the counter of its kind). The deadline
        // is 250 ms: long enough for a good call on a loaded machine, short
        // enough for three timeouts.
        let kinds: [(&str, &str, Counter); 3] = [
            ("panic", "misbehave: panic on purpose", |m| {
                m.traps.load(Relaxed)
            }),
            (
                "alloc",
                "out of memory: the instance hit its 33554432-byte memory limit",
                |m| m.out_of_memory.load(Relaxed),
            ),
            (
                "loop",
                "timeout: the call ran past its 250ms deadline",
                |m| m.timeouts.load(Relaxed),
            ),
        ];
        for (mode, reason, counter) in kinds {
            let spec = StageSpec {
                label: "0:misbehave".into(),
                slot: slot("misbehave"),
                config: vec![
                    ("mode".into(), mode.into()),
                    ("trigger".into(), "POISON".into()),
                    ("bytes".into(), (256 << 20).to_string()),
                ],
                limits: Limits {
                    memory_bytes: 32 << 20,
                    timeout: Duration::from_millis(250),
                },
                on_error: OnError::DeadLetter,
                breaker: breaker(1000),
                keyed: None,
                tables: None,
            };
            // A pipeline of its own: its own counters.
            let pipeline = format!("unit-processor-{mode}");
            let mut stage = Stage::new(&pipeline, 0, Arc::new(spec)).unwrap();
            let out = run(&mut stage, &records(4, &[1]));
            assert_eq!(failed_indices(&out), vec![1], "{mode}");
            assert!(
                out.failed[0].1.contains(reason),
                "{mode}: {}",
                out.failed[0].1
            );
            assert_eq!(values_of(&out.events), ["r0", "r2", "r3"], "{mode}");
            // Failed calls: the batch, the half holding record 1, record 1.
            assert_eq!(counter(&stage.metrics), 3, "{mode}");
        }
    }

    #[test]
    fn one_poison_record_in_16_takes_log2_16_failed_calls_to_isolate() {
        let input = records(16, &[9]);
        let limited = |bisect_limit| {
            let mut stage = failing_stage(
                OnError::DeadLetter,
                BreakerConfig {
                    bisect_limit,
                    ..breaker(1000)
                },
            );
            run(&mut stage, &input)
        };
        // 4 = log2(16) failed calls: isolated.
        let out = limited(4);
        assert_eq!(failed_indices(&out), vec![9]);
        assert_eq!(out.failed[0].1, FAILED_ON_PURPOSE);
        assert_eq!(out.events.len(), 15);
        // One fewer: a range holding it is given up on, together.
        let out = limited(3);
        let failed = failed_indices(&out);
        assert!(failed.contains(&9) && failed.len() == 2, "{failed:?}");
        for (_, reason) in &out.failed {
            assert!(
                reason
                    .contains("not isolated: bisection of this batch stopped after 3 failed calls"),
                "{reason}"
            );
        }
        let passed = values_of(&out.events);
        assert_eq!(passed.len(), 14);
        for (i, value) in input.iter().enumerate() {
            assert_ne!(
                failed.contains(&(i as u32)),
                passed.contains(value),
                "record {i} is either failed or passed"
            );
        }
    }

    #[test]
    fn stop_returns_the_error_and_leaves_the_batch_as_it_was() {
        let mut stage = failing_stage(OnError::Stop, breaker(1));
        let input = records(3, &[1]);
        let refs: Vec<&str> = input.iter().map(String::as_str).collect();
        let mut batch = batch_of(&refs);
        match stage.process(&mut batch) {
            Err(CallError::Plugin(message)) => {
                assert_eq!(message, "misbehave: batch failed on purpose");
            }
            other => panic!("expected the plugin's error, got {other:?}"),
        }
        assert_eq!(values_of(&batch), input);
        // No breaker under `stop`: a good batch still runs.
        let out = stage.process(&mut batch_of(&["fine"])).unwrap();
        assert_eq!(values_of(&out.events), ["fine"]);
    }

    #[test]
    fn the_breaker_opens_after_n_poison_records_in_a_row() {
        let mut stage = failing_stage(OnError::DeadLetter, breaker(3));
        let out = run(&mut stage, &records(8, &[0, 1, 2, 3, 4, 5, 6, 7]));
        assert_eq!(failed_indices(&out), (0..8).collect::<Vec<_>>());
        let tried: Vec<u32> = out
            .failed
            .iter()
            .filter(|(_, reason)| reason == FAILED_ON_PURPOSE)
            .map(|(i, _)| *i)
            .collect();
        assert_eq!(
            tried,
            vec![0, 1, 2],
            "three isolated, then the breaker opened"
        );
        for (i, reason) in &out.failed[3..] {
            assert!(reason.starts_with(OPEN), "{i}: {reason}");
        }
        // Open: records that would pass are not even tried.
        let out = run(&mut stage, &records(2, &[]));
        assert!(out.events.is_empty());
        assert_eq!(failed_indices(&out), vec![0, 1]);
        assert!(out.failed.iter().all(|(_, r)| r.starts_with(OPEN)));
    }

    #[test]
    fn a_success_between_poison_records_keeps_the_breaker_closed() {
        let mut stage = failing_stage(OnError::DeadLetter, breaker(2));
        // Poison, success, poison: never two in a row.
        let out = run(&mut stage, &records(2, &[0]));
        assert_eq!(failed_indices(&out), vec![0]);
        let out = run(&mut stage, &records(2, &[1]));
        assert_eq!(failed_indices(&out), vec![1]);
        assert_eq!(out.failed[0].1, FAILED_ON_PURPOSE);
        let out = run(&mut stage, &records(1, &[]));
        assert_eq!(out.events.len(), 1, "still closed");
        // Two in a row: open.
        let out = run(&mut stage, &records(2, &[0, 1]));
        assert_eq!(failed_indices(&out), vec![0, 1]);
        assert!(out.failed.iter().all(|(_, r)| r == FAILED_ON_PURPOSE));
        let out = run(&mut stage, &records(1, &[]));
        assert!(out.events.is_empty());
        assert!(out.failed[0].1.starts_with(OPEN));
    }

    #[test]
    fn after_the_cooldown_a_good_trial_batch_closes_the_breaker() {
        let mut stage = failing_stage(OnError::DeadLetter, breaker(2));
        run(&mut stage, &records(2, &[0, 1]));
        let out = run(&mut stage, &records(1, &[]));
        assert!(out.failed[0].1.starts_with(OPEN));
        end_cooldown(&mut stage);
        // Half-open: the trial batch passes.
        let out = run(&mut stage, &records(2, &[]));
        assert_eq!(values_of(&out.events), ["r0", "r1"]);
        // Closed: a failed batch is bisected again, not refused.
        let out = run(&mut stage, &records(3, &[1]));
        assert_eq!(failed_indices(&out), vec![1]);
        assert_eq!(out.failed[0].1, FAILED_ON_PURPOSE);
        assert_eq!(values_of(&out.events), ["r0", "r2"]);
    }

    #[test]
    fn after_the_cooldown_a_failed_trial_batch_opens_it_again_without_bisecting() {
        let mut stage = failing_stage(OnError::DeadLetter, breaker(1));
        run(&mut stage, &records(1, &[0]));
        end_cooldown(&mut stage);
        let out = run(&mut stage, &records(3, &[1]));
        assert!(
            out.events.is_empty(),
            "the good records of the trial are not retried"
        );
        assert_eq!(failed_indices(&out), vec![0, 1, 2]);
        for (_, reason) in &out.failed {
            assert_eq!(
                reason,
                &format!("{FAILED_ON_PURPOSE} (circuit breaker trial batch; opened again)")
            );
        }
        let out = run(&mut stage, &records(1, &[]));
        assert!(out.failed[0].1.starts_with(OPEN), "open again");
    }

    #[test]
    fn the_breakers_open_gauge_follows_the_breaker() {
        // A pipeline name of its own: the instruments are global.
        let spec = stage_spec(
            slot("misbehave"),
            &[("mode", "fail"), ("trigger", "POISON")],
            OnError::DeadLetter,
            breaker(1),
        );
        let mut stage = Stage::new("unit-breaker-gauge", 0, spec).expect("the stage starts");
        let metrics = stage.metrics.clone();
        let open = || metrics.breakers_open.load(Ordering::Relaxed);
        let opened = || metrics.breaker_opened.load(Ordering::Relaxed);
        assert_eq!((open(), opened()), (0, 0));
        run(&mut stage, &records(1, &[0]));
        assert_eq!((open(), opened()), (1, 1), "opened");
        run(&mut stage, &records(1, &[]));
        assert_eq!((open(), opened()), (1, 1), "still open, not counted again");
        end_cooldown(&mut stage);
        run(&mut stage, &records(1, &[]));
        assert_eq!((open(), opened()), (0, 1), "a good trial batch closed it");
        run(&mut stage, &records(1, &[0]));
        assert_eq!((open(), opened()), (1, 2), "opened again");
        drop(stage);
        assert_eq!(open(), 0, "a stage that goes away lowers its gauge");
    }

    #[test]
    fn a_new_plugin_version_closes_the_breaker() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("misbehave.wasm");
        let bytes = std::fs::read(crate::testkit::plugins_dir().join("misbehave.wasm")).unwrap();
        std::fs::write(&file, &bytes).unwrap();
        let mut running = plugin("misbehave");
        running.path = file.clone();
        let slot = PluginSlot::new(running);
        let mut stage = stage_with(
            slot.clone(),
            &[("mode", "fail"), ("trigger", "POISON")],
            OnError::DeadLetter,
            breaker(2),
        );
        run(&mut stage, &records(2, &[0, 1]));
        assert!(
            run(&mut stage, &records(1, &[])).failed[0]
                .1
                .starts_with(OPEN)
        );
        let old = stage.plugin().version.clone();

        // The same code with a custom section appended: another version.
        let mut new = bytes.clone();
        let name = b"unit-test";
        let payload = b"v2";
        new.extend_from_slice(&[0, (1 + name.len() + payload.len()) as u8, name.len() as u8]);
        new.extend_from_slice(name);
        new.extend_from_slice(payload);
        std::fs::write(&file, &new).unwrap();
        assert!(
            slot.reload(crate::testkit::host()),
            "the new version went in"
        );

        // Closed: the batch is called and bisected, the poison record isolated.
        let out = run(&mut stage, &records(3, &[1]));
        assert_ne!(stage.plugin().version, old);
        assert_eq!(
            stage.plugin().version,
            crate::wasm::plugin::content_version(&new)
        );
        assert_eq!(failed_indices(&out), vec![1]);
        assert_eq!(out.failed[0].1, FAILED_ON_PURPOSE);
        assert_eq!(values_of(&out.events), ["r0", "r2"]);
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

        /// Whatever the batch and wherever its poison records, exactly those
        /// fail and every other record passes, in order.
        #[test]
        fn bisection_finds_any_set_of_poison_records(
            poison in proptest::collection::vec(any::<bool>(), 1..40),
        ) {
            let mut stage = failing_stage(OnError::DeadLetter, breaker(1000));
            let bad: Vec<usize> = (0..poison.len()).filter(|&i| poison[i]).collect();
            let input = records(poison.len(), &bad);
            let out = run(&mut stage, &input);
            let want_failed: Vec<u32> = bad.iter().map(|&i| i as u32).collect();
            prop_assert_eq!(failed_indices(&out), want_failed);
            let want_passed: Vec<String> = (0..poison.len())
                .filter(|&i| !poison[i])
                .map(|i| format!("r{i}"))
                .collect();
            prop_assert_eq!(values_of(&out.events), want_passed);
        }
    }
}
