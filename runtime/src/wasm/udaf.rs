//! User-defined aggregates: `sluice:plugin/aggregator` components run by the
//! window operator (`aggregate = [{ op = "wasm", plugin = "…", field = "…" }]`).
//!
//! The host owns the windows and the accumulator bytes ([`Acc::Wasm`]); the
//! plugin turns bytes into bytes (see the `aggregator` world in
//! `wit/plugin.wit`):
//! - once per micro-batch, one `accumulate` call adds every (window, event)
//!   pair of the batch: the states of the windows it touches, the events, and
//!   which state each event goes to;
//! - `merge` joins two sessions; `finish` turns the states of the windows being
//!   emitted into JSON, one call per emission;
//! - a new version of the plugin file is taken up between micro-batches (the
//!   operator follows the plugin's slot, as processor stages do) and receives
//!   the old version's bytes; an instance that traps, times out or runs out of
//!   memory is replaced and the bytes are kept, so no state is lost.
//!
//! A failed `accumulate` is retried event by event on a fresh instance; an
//! event that fails alone goes to the dead-letter sink and is left out of that
//! aggregate (the built-in aggregates of its window still count it). Events
//! whose `field` is null or absent are skipped, as by the built-ins (SQL).

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::Value;
use sluice_plugin_sdk::{Batch, Event};

use crate::aggregate::Acc;
use crate::wasm::plugin::{CallError, Instance, Limits, LogTags, Plugin};
use crate::wasm::reload::PluginSlot;

/// A user-defined aggregate's plugin and settings.
pub struct UdfSpec {
    /// Stage label in logs and the dead-letter sink, e.g. `aggregate:p90`.
    pub label: String,
    /// The plugin file's slot (hot reload).
    pub slot: Arc<PluginSlot>,
    /// `configure` pairs.
    pub config: Vec<(String, String)>,
    /// Memory limit and call deadline.
    pub limits: Limits,
}

impl std::fmt::Debug for UdfSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UdfSpec")
            .field("label", &self.label)
            .field("path", &self.slot.path)
            .field("config", &self.config)
            .field("limits", &self.limits)
            .finish()
    }
}

impl PartialEq for UdfSpec {
    fn eq(&self, other: &Self) -> bool {
        self.label == other.label
            && self.slot.path == other.slot.path
            && self.config == other.config
            && self.limits == other.limits
    }
}

impl Eq for UdfSpec {}

/// An event the plugin could not aggregate, and why.
#[derive(Debug)]
pub struct Failed {
    /// Index of the event in the operator's input.
    pub event: usize,
    /// The reason, naming the aggregate and the plugin version.
    pub reason: String,
    /// Plugin name and version.
    pub plugin: (String, String),
}

/// One user-defined aggregate at run time: its running instance and the empty
/// accumulator of that version.
pub struct Udf {
    /// Position of the aggregate in the window's aggregates.
    pub index: usize,
    /// Index of its field in the extracted values, if it has one.
    pub field: Option<usize>,
    spec: Arc<UdfSpec>,
    pipeline: String,
    plugin: Arc<Plugin>,
    instance: Option<Instance>,
    /// What `create` returned.
    pub initial: Vec<u8>,
    /// A version that failed to start, not retried until the slot changes again.
    refused: Option<String>,
}

impl std::fmt::Debug for Udf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Udf")
            .field("label", &self.spec.label)
            .field("version", &self.plugin.version)
            .finish_non_exhaustive()
    }
}

impl Udf {
    /// Starts the slot's current version.
    ///
    /// # Errors
    /// The instance cannot start, or `create` fails.
    pub fn start(
        pipeline: &str,
        index: usize,
        field: Option<usize>,
        spec: Arc<UdfSpec>,
    ) -> anyhow::Result<Self> {
        let plugin = spec.slot.current();
        let (instance, initial) = start_instance(pipeline, &spec, &plugin)
            .map_err(|e| anyhow::anyhow!("{} ({}): {e}", spec.label, plugin.version))?;
        Ok(Udf {
            index,
            field,
            spec,
            pipeline: pipeline.to_string(),
            plugin,
            instance: Some(instance),
            initial,
            refused: None,
        })
    }

    /// Takes up a new version of the plugin file, if there is one, between
    /// micro-batches. The windows keep their bytes.
    pub fn follow(&mut self) {
        let latest = self.spec.slot.current();
        if latest.version == self.plugin.version
            || self.refused.as_deref() == Some(latest.version.as_str())
        {
            return;
        }
        match start_instance(&self.pipeline, &self.spec, &latest) {
            Ok((instance, initial)) => {
                tracing::info!(
                    pipeline = %self.pipeline,
                    stage = %self.spec.label,
                    from = %self.plugin.version,
                    to = %latest.version,
                    "aggregator switched to the new version; window state kept"
                );
                self.instance = Some(instance);
                self.initial = initial;
                self.plugin = latest;
                self.refused = None;
            }
            Err(e) => {
                tracing::error!(
                    pipeline = %self.pipeline,
                    stage = %self.spec.label,
                    version = %latest.version,
                    "new aggregator version cannot start, version {} keeps serving: {e}",
                    self.plugin.version
                );
                self.refused = Some(latest.version.clone());
            }
        }
    }

    fn instance(&mut self) -> Result<&mut Instance, CallError> {
        if self.instance.is_none() {
            let (instance, _) = start_instance(&self.pipeline, &self.spec, &self.plugin)?;
            self.instance = Some(instance);
        }
        Ok(self.instance.as_mut().expect("instance"))
    }

    /// Runs `call` on the instance; an error that poisons it drops it (the
    /// next call makes a new one).
    fn call<T>(
        &mut self,
        call: impl FnOnce(&mut Instance) -> Result<T, CallError>,
    ) -> Result<T, CallError> {
        let result = call(self.instance()?);
        if let Err(e) = &result
            && e.poisons_instance()
        {
            self.instance = None;
        }
        result
    }

    fn failed(&self, event: usize, e: &CallError) -> Failed {
        Failed {
            event,
            reason: format!(
                "aggregate {} ({} {}) failed on this record: {e}",
                self.spec.label, self.plugin.name, self.plugin.version
            ),
            plugin: (self.plugin.name.clone(), self.plugin.version.clone()),
        }
    }

    /// Event `event` of a group whose accumulator (`bytes` long) is at the
    /// memory limit (see [`OUT_OF_MEMORY_IN_A_ROW`]).
    fn at_limit(&self, event: usize, bytes: usize) -> Failed {
        Failed {
            event,
            reason: format!(
                "aggregate {} ({} {}): not tried: {OUT_OF_MEMORY_IN_A_ROW} records of this group in a row ran out of memory, so its accumulator ({bytes} bytes) is at the plugin's memory limit ({}); raise `memory_limit`, or aggregate a smaller value (`field`)",
                self.spec.label,
                self.plugin.name,
                self.plugin.version,
                bytesize::ByteSize(self.spec.limits.memory_bytes)
            ),
            plugin: (self.plugin.name.clone(), self.plugin.version.clone()),
        }
    }

    /// Adds events to accumulators: `pairs` lists (accumulator, event index
    /// in `events`), `states[a]` is accumulator `a`'s bytes, updated in place.
    /// `values` holds the events' extracted fields, `width` per event. Returns
    /// the events that could not be added.
    pub fn accumulate(
        &mut self,
        states: &mut [Vec<u8>],
        pairs: &[(u32, usize)],
        events: &Batch,
        values: &[Option<Value>],
        width: usize,
    ) -> Vec<Failed> {
        let field = self.field;
        let input = |pairs: &[(u32, usize)]| -> (Batch, Vec<u32>) {
            let mut batch = Batch::with_capacity(pairs.len(), 0);
            let mut groups = Vec::with_capacity(pairs.len());
            // One buffer for every field's JSON text, not one string each.
            let mut text = Vec::new();
            for &(group, i) in pairs {
                let Some(event) = events.get(i) else { continue };
                match field {
                    None => push(&mut batch, &event, event.value()),
                    Some(f) => match &values[i * width + f] {
                        None | Some(Value::Null) => continue,
                        Some(v) => {
                            text.clear();
                            if serde_json::to_writer(&mut text, v).is_err() {
                                continue; // a Value always serializes
                            }
                            push(&mut batch, &event, &text);
                        }
                    },
                }
                groups.push(group);
            }
            (batch, groups)
        };
        let (batch, groups) = input(pairs);
        if batch.is_empty() {
            return Vec::new();
        }
        match self.call(|i| i.accumulate(states, batch, &groups)) {
            Ok(new) => {
                for (s, n) in states.iter_mut().zip(new) {
                    *s = n;
                }
                return Vec::new();
            }
            Err(e) => tracing::warn!(
                pipeline = %self.pipeline,
                stage = %self.spec.label,
                version = %self.plugin.version,
                "aggregator failed on a batch of {} pair(s), retrying them one by one: {e}",
                pairs.len()
            ),
        }
        // One by one: only the events that fail alone are left out.
        let mut failed = Vec::new();
        // A group whose records run out of memory one after the other is at
        // the memory limit itself (a record rarely is): after
        // OUT_OF_MEMORY_IN_A_ROW of them, the rest of its records in this
        // batch fail without a call each. Such a call replaces the instance
        // and copies the whole accumulator in, so at a few records a second
        // the batch would otherwise never end.
        let mut in_a_row: BTreeMap<u32, usize> = BTreeMap::new();
        for &(group, i) in pairs {
            let streak = in_a_row.get(&group).copied().unwrap_or(0);
            if streak >= OUT_OF_MEMORY_IN_A_ROW {
                failed.push(self.at_limit(i, states[group as usize].len()));
                continue;
            }
            let (batch, _) = input(&[(group, i)]);
            if batch.is_empty() {
                continue;
            }
            let state = std::slice::from_ref(&states[group as usize]);
            match self.call(|inst| inst.accumulate(state, batch, &[0])) {
                Ok(mut new) => {
                    states[group as usize] = new.remove(0);
                    in_a_row.remove(&group);
                }
                Err(e) => {
                    if matches!(e, CallError::OutOfMemory(_)) {
                        in_a_row.insert(group, streak + 1);
                        if streak + 1 == OUT_OF_MEMORY_IN_A_ROW {
                            tracing::error!(
                                pipeline = %self.pipeline,
                                stage = %self.spec.label,
                                version = %self.plugin.version,
                                accumulator_bytes = state[0].len(),
                                "{OUT_OF_MEMORY_IN_A_ROW} records of one group in a row ran out of memory: its accumulator is at the aggregator's memory limit, and the rest of the batch's records of that group fail without a call ({e})"
                            );
                        }
                    } else {
                        in_a_row.remove(&group);
                    }
                    failed.push(self.failed(i, &e));
                }
            }
        }
        failed
    }

    /// Joins accumulator `b` into `a` (two sessions that a record joins). On
    /// failure `a` is kept and the error logged.
    pub fn merge(&mut self, a: &mut Vec<u8>, b: &[u8]) {
        match self.call(|i| i.merge(a, b)) {
            Ok(merged) => *a = merged,
            Err(e) => tracing::error!(
                pipeline = %self.pipeline,
                stage = %self.spec.label,
                version = %self.plugin.version,
                "aggregator merge failed, one session's accumulator is kept as it was: {e}"
            ),
        }
    }

    /// The results of the windows being emitted, one per state: the JSON the
    /// plugin returned, or `null` (logged) for a window whose `finish` fails
    /// alone or returns no JSON. States go in chunks of [`FINISH_CHUNK`] (each
    /// call has the deadline); a chunk that fails is retried window by window,
    /// so one bad accumulator does not null the others.
    pub fn finish(&mut self, states: &[Vec<u8>]) -> Vec<Value> {
        let mut out = Vec::with_capacity(states.len());
        for chunk in states.chunks(FINISH_CHUNK) {
            match self.call(|i| i.finish(chunk)) {
                Ok(texts) => out.extend(texts.iter().map(|t| self.parse(t))),
                Err(e) => {
                    // Window by window; the failures are logged once per
                    // chunk, with the first reason.
                    let (mut failed, mut first) = (0usize, None);
                    for state in chunk {
                        let one = std::slice::from_ref(state);
                        match self.call(|i| i.finish(one)) {
                            Ok(texts) => out.push(self.parse(&texts[0])),
                            Err(e) => {
                                failed += 1;
                                first.get_or_insert_with(|| e.to_string());
                                out.push(Value::Null);
                            }
                        }
                    }
                    if failed > 0 {
                        tracing::error!(
                            pipeline = %self.pipeline,
                            stage = %self.spec.label,
                            version = %self.plugin.version,
                            windows = failed,
                            of = chunk.len(),
                            "aggregator finish failed on {failed} window(s): they get null for this aggregate; first reason: {}",
                            first.unwrap_or_default()
                        );
                    } else {
                        tracing::debug!(
                            pipeline = %self.pipeline,
                            stage = %self.spec.label,
                            "aggregator finish failed on a chunk but on no window alone: {e}"
                        );
                    }
                }
            }
        }
        out
    }

    fn parse(&self, text: &str) -> Value {
        serde_json::from_str(text).unwrap_or_else(|e| {
            tracing::error!(
                pipeline = %self.pipeline,
                stage = %self.spec.label,
                "aggregator finish returned no JSON ({e}): null instead of {text:?}"
            );
            Value::Null
        })
    }
}

/// Windows per `finish` call: bounds one call's work (it has the deadline).
pub const FINISH_CHUNK: usize = 1024;

/// Records of one group in a row, within a batch retried record by record,
/// that may run out of memory before the group's other records in that batch
/// fail without a call ([`Udf::accumulate`]). A circuit breaker per group and
/// batch: the next batch tries the group again.
pub const OUT_OF_MEMORY_IN_A_ROW: usize = 4;

fn push(batch: &mut Batch, event: &Event<'_>, value: &[u8]) {
    batch.push(event.key(), value, event.timestamp_ms());
}

fn start_instance(
    pipeline: &str,
    spec: &UdfSpec,
    plugin: &Plugin,
) -> Result<(Instance, Vec<u8>), CallError> {
    let mut instance = plugin.instantiate(
        &spec.config,
        spec.limits,
        LogTags {
            pipeline: pipeline.to_string(),
            stage: spec.label.clone(),
            plugin: plugin.name.clone(),
            version: plugin.version.clone(),
            partition: 0,
        },
    )?;
    let initial = instance.create()?;
    Ok((instance, initial))
}

/// Groups (window, event) pairs by window for one `accumulate` call: the
/// distinct windows in first-seen order, and (window index, event) pairs.
pub fn group_pairs<K: Ord + Clone>(pairs: &[(K, usize)]) -> (Vec<K>, Vec<(u32, usize)>) {
    let mut index: BTreeMap<&K, u32> = BTreeMap::new();
    let mut keys = Vec::new();
    let mut out = Vec::with_capacity(pairs.len());
    for (k, i) in pairs {
        let g = *index.entry(k).or_insert_with(|| {
            keys.push(k.clone());
            (keys.len() - 1) as u32
        });
        out.push((g, *i));
    }
    (keys, out)
}

/// The accumulator bytes of a UDAF slot.
pub fn bytes_mut(acc: &mut Acc) -> &mut Vec<u8> {
    match acc {
        Acc::Wasm(b) => b,
        _ => unreachable!("a user-defined aggregate's accumulator is Acc::Wasm"),
    }
}
