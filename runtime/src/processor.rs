//! The processor chain: the Wasm stages a batch goes through, in order, and what
//! happens when one fails.
//!
//! Each partition worker owns one [`Stage`] per configured processor, each with
//! its own instance (store, memory, deadline). A failure is handled by the
//! stage's `on_error` policy:
//! - `dead-letter`: every record of the batch goes to the dead-letter sink with
//!   the reason; the pipeline goes on;
//! - `skip`: the batch is dropped, logged and counted;
//! - `stop`: the pipeline stops; the daemon exits 1 once the others drained.
//!
//! A trap, a timeout or an out-of-memory also throws the instance away; the next
//! batch gets a fresh one, configured again, from the plugin's `InstancePre`.

use std::sync::Arc;

use sluice_plugin_sdk::Batch;

use crate::config::OnError;
use crate::plugin::{CallError, Instance, Limits, LogTags, Plugin, Processed};

/// A configured stage, shared by the partition workers of a pipeline.
#[derive(Debug)]
pub struct StageSpec {
    /// `INDEX:PLUGIN`, e.g. `0:flights_delay`: how logs and dead letters name it.
    pub label: String,
    /// The compiled plugin.
    pub plugin: Plugin,
    /// Pairs passed to `configure`.
    pub config: Vec<(String, String)>,
    /// Memory limit and deadline of each instance.
    pub limits: Limits,
    /// What a failed batch does.
    pub on_error: OnError,
}

/// One stage of one partition worker.
#[derive(Debug)]
pub struct Stage {
    spec: Arc<StageSpec>,
    tags: LogTags,
    instance: Option<Instance>,
}

impl Stage {
    /// A stage for partition `partition` of `pipeline`, with its instance made and
    /// configured now.
    ///
    /// # Errors
    /// The instance cannot be made or `configure` fails.
    pub fn new(pipeline: &str, partition: usize, spec: Arc<StageSpec>) -> Result<Self, CallError> {
        let tags = LogTags {
            pipeline: pipeline.to_string(),
            stage: spec.label.clone(),
            plugin: spec.plugin.name.clone(),
            version: spec.plugin.version.clone(),
            partition,
        };
        let instance = spec
            .plugin
            .instantiate(&spec.config, spec.limits, tags.clone())?;
        Ok(Stage {
            spec,
            tags,
            instance: Some(instance),
        })
    }

    /// The shared spec.
    pub fn spec(&self) -> &StageSpec {
        &self.spec
    }

    /// Runs `batch` through the plugin. `batch` is left as it was, so a failed
    /// batch can still be dead-lettered.
    ///
    /// # Errors
    /// The call failed; see [`CallError`].
    pub fn run(&mut self, batch: &mut Batch) -> Result<Processed, CallError> {
        let instance = match &mut self.instance {
            Some(i) => i,
            None => self.instance.insert(self.spec.plugin.instantiate(
                &self.spec.config,
                self.spec.limits,
                self.tags.clone(),
            )?),
        };
        let result = instance.process(batch);
        if let Err(e) = &result
            && e.poisons_instance()
        {
            self.instance = None;
        }
        result
    }
}
