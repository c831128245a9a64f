//! Helpers for the in-process unit tests (compiled only for `cargo test`): the
//! real example plugins that `build.rs` builds into `target/plugins/`, compiled
//! once per test binary, and file sinks in a temporary folder whose lines a
//! test reads back.
//!
//! Everything that depends on how a sink is made lives here, so the tests of
//! the worker, the window operator and the checkpoints do not.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use sluice_plugin_sdk::Batch;

use crate::sink::{RunningSink, SinkHandle, SinkSpec};
use crate::wasm::plugin::{Plugin, PluginHost};

/// Where `build.rs` puts the example plugins.
pub(crate) fn plugins_dir() -> PathBuf {
    PathBuf::from(env!("SLUICE_PLUGINS_DIR"))
}

/// One engine for the whole test binary (each host starts an epoch thread).
pub(crate) fn host() -> &'static PluginHost {
    static HOST: OnceLock<PluginHost> = OnceLock::new();
    HOST.get_or_init(|| PluginHost::new().expect("a wasmtime engine"))
}

/// The example plugin `NAME.wasm`, compiled once per test binary.
pub(crate) fn plugin(name: &str) -> Plugin {
    static PLUGINS: OnceLock<Mutex<BTreeMap<String, Plugin>>> = OnceLock::new();
    let mut plugins = PLUGINS
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    plugins
        .entry(name.to_string())
        .or_insert_with(|| {
            let path = plugins_dir().join(format!("{name}.wasm"));
            host()
                .load(&path)
                .unwrap_or_else(|e| panic!("{}: {e:#} (built by build.rs?)", path.display()))
        })
        .clone()
}

/// Config pairs from `[("mode", "fail"), …]`.
pub(crate) fn pairs(config: &[(&str, &str)]) -> Vec<(String, String)> {
    config
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A batch of keyless events, event time = position in the slice.
pub(crate) fn batch_of(values: &[&str]) -> Batch {
    let mut batch = Batch::new();
    for (i, v) in values.iter().enumerate() {
        batch.push(None, v.as_bytes(), i as i64);
    }
    batch
}

/// The values of a batch, as text.
pub(crate) fn values_of(batch: &Batch) -> Vec<String> {
    batch
        .iter()
        .map(|e| String::from_utf8_lossy(e.value()).into_owned())
        .collect()
}

/// A file sink writing to a file of its own in a temporary folder.
pub(crate) struct FileSink {
    running: RunningSink,
    path: PathBuf,
    _dir: tempfile::TempDir,
}

impl FileSink {
    /// Starts sink `name` on a new, empty file.
    pub(crate) fn start(name: &str) -> Self {
        let dir = tempfile::tempdir().expect("a temporary folder");
        let path = dir.path().join(format!("{name}.ndjson"));
        let spec = SinkSpec(Arc::new(crate::sink::file::FileSink {
            path: path.clone(),
            truncate: true,
        }));
        let running = RunningSink::start(name, &spec, None).expect("start a file sink");
        FileSink {
            running,
            path,
            _dir: dir,
        }
    }

    /// A handle to feed it.
    pub(crate) fn handle(&self) -> SinkHandle {
        self.running.handle.clone()
    }

    /// The file it writes.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Waits for the sink to write everything it was sent (every other handle
    /// must be dropped), then returns the file's lines.
    pub(crate) fn finish(self) -> Vec<String> {
        let FileSink {
            running,
            path,
            _dir,
        } = self;
        running.finish().expect("the sink finishes");
        read_lines(&path)
    }
}

/// The lines of a file.
pub(crate) fn read_lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .expect("read the sink's file")
        .lines()
        .map(str::to_string)
        .collect()
}

/// A plugin slot running `NAME.wasm`.
pub(crate) fn slot(name: &str) -> Arc<crate::wasm::reload::PluginSlot> {
    crate::wasm::reload::PluginSlot::new(plugin(name))
}

/// A stage running `slot`'s plugin with `config`, generous limits.
pub(crate) fn stage_spec(
    slot: Arc<crate::wasm::reload::PluginSlot>,
    config: &[(&str, &str)],
    on_error: crate::config::OnError,
    breaker: crate::config::BreakerConfig,
) -> Arc<crate::pipeline::processor::StageSpec> {
    Arc::new(crate::pipeline::processor::StageSpec {
        label: format!("0:{}", slot.current().name),
        slot,
        config: pairs(config),
        limits: crate::wasm::plugin::Limits {
            memory_bytes: 64 << 20,
            timeout: std::time::Duration::from_secs(10),
        },
        on_error,
        breaker,
        keyed: None,
        tables: None,
    })
}

/// A sink that keeps the batches it is sent in memory, for what a file's lines
/// do not show: keys and event times.
#[derive(Debug, Clone, Default)]
struct MemorySink {
    batches: Arc<Mutex<Vec<Batch>>>,
}

impl crate::sink::Sink for MemorySink {
    fn open(
        &self,
        _name: &str,
        _resume: Option<crate::sink::Resume>,
    ) -> anyhow::Result<Box<dyn crate::sink::Output>> {
        Ok(Box::new(self.clone()))
    }
}

impl crate::sink::Output for MemorySink {
    fn write_batch(&mut self, batch: &Batch) -> anyhow::Result<()> {
        self.batches
            .lock()
            .map_err(|_| anyhow::anyhow!("poisoned"))?
            .push(batch.clone());
        Ok(())
    }
    fn sync(&mut self) -> anyhow::Result<Option<u64>> {
        Ok(None)
    }
    fn finish(&mut self) -> anyhow::Result<()> {
        Ok(())
    }
}

/// One record a [`MemorySinkRun`] received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Kept {
    /// Key (`None`: none).
    pub key: Option<String>,
    /// Value.
    pub value: String,
    /// Event time, ms.
    pub timestamp_ms: i64,
}

/// A running in-memory sink.
pub(crate) struct MemorySinkRun {
    running: RunningSink,
    kept: Arc<Mutex<Vec<Batch>>>,
}

impl MemorySinkRun {
    /// Starts sink `name`.
    pub(crate) fn start(name: &str) -> Self {
        let sink = MemorySink::default();
        let kept = sink.batches.clone();
        let running =
            RunningSink::start(name, &SinkSpec(Arc::new(sink)), None).expect("start the sink");
        MemorySinkRun { running, kept }
    }

    /// A handle to feed it.
    pub(crate) fn handle(&self) -> SinkHandle {
        self.running.handle.clone()
    }

    /// Waits for the sink to take everything it was sent (every other handle
    /// must be dropped), then returns the records, in order.
    pub(crate) fn finish(self) -> Vec<Kept> {
        self.running.finish().expect("the sink finishes");
        let batches = self.kept.lock().expect("not poisoned");
        batches
            .iter()
            .flat_map(|b| b.iter())
            .map(|e| Kept {
                key: e.key().map(|k| String::from_utf8_lossy(k).into_owned()),
                value: String::from_utf8_lossy(e.value()).into_owned(),
                timestamp_ms: e.timestamp_ms(),
            })
            .collect()
    }
}
