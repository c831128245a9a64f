//! The plugin host: loads WebAssembly components of the `sluice:plugin/processor`
//! world and runs them sandboxed.
//!
//! - One [`PluginHost`] per daemon: one wasmtime `Engine` (epoch interruption on)
//!   and one `Linker` with the `host` interface and a deny-by-default WASI.
//! - One [`Plugin`] per loaded file: the compiled component and its `InstancePre`
//!   (imports resolved once), named by file stem and versioned by content hash.
//! - One [`Instance`] per (partition worker, stage): its own `Store`, memory limit
//!   and per-call deadline. Instances are cheap to make (tens of µs from the
//!   `InstancePre`), so a trapped one is simply dropped and replaced.
//!
//! No ambient capability: the WASI context has no preopened directory, no
//! environment, no arguments, no sockets, and stdin is closed; the clocks are
//! frozen at the Unix epoch and blocking (sleep, poll) traps; stdout and stderr
//! go to the daemon's log (see [`crate::wasm::guest_output`]).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use sha2::{Digest, Sha256};
use sluice_plugin_sdk::{Batch, BatchParts};
use wasmtime::component::{Component, HasSelf, Linker, ResourceTable};
use wasmtime::{Engine, Store, Trap};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::wasm::compile_cache::{CompileCache, Origin, hex};
use crate::wasm::guest_output::{GuestOutput, Stream};

/// The host's bindings of the `processor` world, from `wit/plugin.wit`.
mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "processor",
    });
}

/// The `aggregator` world's, sharing the `types` and `host` interfaces (one
/// linker serves both worlds).
mod aggregator_bindings {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "aggregator",
        with: {
            "sluice:plugin/types": super::bindings::sluice::plugin::types,
            "sluice:plugin/host": super::bindings::sluice::plugin::host,
        },
    });
}

use crate::wasm::indexed::{IndexedBindings, IndexedProcessorPre};
use crate::wasm::keyed::{KeyedBindings, KeyedProcessorPre};
pub use aggregator_bindings::{Aggregator as AggregatorBindings, AggregatorPre};
use bindings::sluice::plugin::{host, types};
pub use bindings::{Processor as ProcessorBindings, ProcessorPre};

/// The WASI poll interface the host links (wasmtime-wasi 48); guests built
/// against any 0.2.x version resolve to it.
const WASI_POLL: &str = "wasi:io/poll@0.2.12";

/// The wasmtime version this daemon embeds (from Cargo.lock, by build.rs).
pub const WASMTIME_VERSION: &str = env!("SLUICE_WASMTIME_VERSION");

/// How often the epoch ticks: the granularity of call deadlines.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// The daemon-wide Wasm engine and linker.
#[derive(Clone)]
pub struct PluginHost {
    engine: Engine,
    linker: Arc<Linker<StoreState>>,
    cache: Option<CompileCache>,
    _ticker: Arc<Ticker>,
}

/// Stops the epoch thread when the last [`PluginHost`] clone is dropped.
struct Ticker(Arc<AtomicBool>);

impl Drop for Ticker {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

impl std::fmt::Debug for PluginHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginHost").finish_non_exhaustive()
    }
}

impl PluginHost {
    /// Builds the engine (Cranelift, component model, epoch interruption), the
    /// linker, and starts the epoch thread (one tick per [`EPOCH_TICK`]).
    ///
    /// # Errors
    /// wasmtime refuses the configuration (should not happen on x86_64/aarch64).
    pub fn new() -> anyhow::Result<Self> {
        Self::build(true)
    }

    /// A host whose compiled code has no epoch checks: **no call deadline at all**
    /// (a looping plugin never returns). Only for measuring what the deadline
    /// costs (`benches/plugins.rs`); the daemon never uses it.
    ///
    /// # Errors
    /// As [`PluginHost::new`].
    #[doc(hidden)]
    pub fn without_deadlines_for_benchmarks() -> anyhow::Result<Self> {
        Self::build(false)
    }

    fn build(epochs: bool) -> anyhow::Result<Self> {
        let mut config = wasmtime::Config::new();
        config.wasm_component_model(true);
        config.epoch_interruption(epochs);
        let engine = Engine::new(&config)?;

        let mut linker = Linker::<StoreState>::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
        // A guest may not block: a blocking host call (a sleep, a wait on a
        // pollable) is not interrupted by the epoch deadline, so it would let a
        // plugin hold its partition past its timeout. Those two functions trap.
        linker.allow_shadowing(true);
        let mut poll = linker.instance(WASI_POLL)?;
        for func in ["poll", "[method]pollable.block"] {
            poll.func_new(func, move |_, _, _, _| {
                Err(wasmtime::Error::msg(format!(
                    "plugins may not block or sleep ({WASI_POLL}#{func} is not granted)"
                )))
            })?;
        }
        linker.allow_shadowing(false);
        host::add_to_linker::<StoreState, HasSelf<StoreState>>(&mut linker, |s| s)?;
        crate::wasm::keyed::add_to_linker(&mut linker)?;
        crate::wasm::indexed::add_to_linker(&mut linker)?;

        let stop = Arc::new(AtomicBool::new(false));
        let weak = engine.weak();
        let flag = stop.clone();
        std::thread::Builder::new()
            .name("sluice-epoch".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    match weak.upgrade() {
                        Some(engine) => engine.increment_epoch(),
                        None => break,
                    }
                }
            })?;
        Ok(PluginHost {
            engine,
            linker: Arc::new(linker),
            cache: None,
            _ticker: Arc::new(Ticker(stop)),
        })
    }

    /// Uses a compile cache in `state_dir` from now on, bounded to
    /// `max_bytes` of entries (see [`crate::wasm::compile_cache`]).
    pub fn with_compile_cache(mut self, state_dir: &Path, max_bytes: u64) -> Self {
        self.cache = Some(CompileCache::new(state_dir, &self.engine).with_max_bytes(max_bytes));
        self
    }

    /// Reads, compiles (or takes from the compile cache) and links the component
    /// at `path`.
    ///
    /// # Errors
    /// The file cannot be read, is not a component, or does not have the
    /// `processor` world's exports and only imports the host provides; the message
    /// names the file and the reason.
    pub fn load(&self, path: &Path) -> anyhow::Result<Plugin> {
        let bytes = crate::wasm::compile_cache::read_regular(path)
            .with_context(|| format!("cannot read plugin {}", path.display()))?;
        self.load_bytes(path, &bytes)
    }

    /// As [`PluginHost::load`], for bytes already read from `path`.
    ///
    /// # Errors
    /// As [`PluginHost::load`].
    pub fn load_bytes(&self, path: &Path, bytes: &[u8]) -> anyhow::Result<Plugin> {
        let started = Instant::now();
        let content: [u8; 32] = Sha256::digest(bytes).into();
        let compiled = match &self.cache {
            Some(cache) => cache.get_or_compile(&self.engine, bytes, &content),
            None => Component::new(&self.engine, bytes).map(|c| (c, Origin::Compiled)),
        };
        let (component, origin) = compiled.map_err(anyhow::Error::from).with_context(|| {
            format!(
                "{} is not a valid WebAssembly component{}",
                path.display(),
                core_module_hint(bytes)
            )
        })?;
        self.link(path, &component, content, origin, started)
    }

    /// Links a compiled component and checks it has the `processor` world.
    ///
    /// # Errors
    /// As [`PluginHost::load`], but for compilation.
    pub fn link(
        &self,
        path: &Path,
        component: &Component,
        content: [u8; 32],
        origin: Origin,
        started: Instant,
    ) -> anyhow::Result<Plugin> {
        let pre = self
            .linker
            .instantiate_pre(component)
            .map_err(anyhow::Error::from)
            .with_context(|| {
                format!(
                    "{} cannot be linked: it imports what sluice does not provide",
                    path.display()
                )
            })?;
        let pre = if let Ok(p) = IndexedProcessorPre::new(pre.clone()) {
            Pre::Indexed(p)
        } else {
            match ProcessorPre::new(pre.clone()) {
                Ok(p) => Pre::Processor(p),
                Err(processor_err) => match AggregatorPre::new(pre.clone()) {
                    Ok(a) => Pre::Aggregator(a),
                    Err(_) => match KeyedProcessorPre::new(pre) {
                        Ok(k) => Pre::Keyed(k),
                        Err(_) => {
                            return Err(anyhow::Error::from(processor_err).context(format!(
                                "{} is not a sluice:plugin/processor component (exports `configure` and `process`), nor a sluice:plugin/aggregator one (`configure`, `create`, `accumulate`, `merge`, `finish`), nor a sluice:plugin/keyed-processor@0.2.0 one (`configure`, `process-keyed`)",
                                path.display()
                            )));
                        }
                    },
                },
            }
        };
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "plugin".into());
        Ok(Plugin {
            name,
            version: hex(&content[..VERSION_BYTES]),
            content,
            path: path.to_path_buf(),
            origin,
            load_time: started.elapsed(),
            pre,
            engine: self.engine.clone(),
        })
    }

    /// The engine, e.g. to inspect a component.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }
}

/// Bytes of the content hash shown as a plugin's version (12 hex digits).
const VERSION_BYTES: usize = 6;

/// The version of a plugin: the first 12 hex digits of the SHA-256 of its bytes.
pub fn content_version(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes)[..VERSION_BYTES])
}

/// A compiled, linked component, ready to instantiate.
#[derive(Clone)]
pub struct Plugin {
    /// File stem, e.g. `flights_delay`.
    pub name: String,
    /// Content hash, see [`content_version`].
    pub version: String,
    /// The whole SHA-256 of the file's bytes.
    pub content: [u8; 32],
    /// Whether it came from the compile cache.
    pub origin: Origin,
    /// Time to read, compile (or load compiled) and link it.
    pub load_time: Duration,
    /// Where it was loaded from.
    pub path: PathBuf,
    pre: Pre,
    engine: Engine,
}

/// Which world a plugin component implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum World {
    /// `sluice:plugin/processor`: a stage of the processor chain.
    Processor,
    /// `sluice:plugin/aggregator`: a user-defined aggregate of a window.
    Aggregator,
    /// `sluice:plugin/keyed-processor@0.2.0`: a stage of the processor chain
    /// whose per-key state and timers the host owns.
    Keyed,
}

impl std::fmt::Display for World {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            World::Processor => "sluice:plugin/processor",
            World::Aggregator => "sluice:plugin/aggregator",
            World::Keyed => "sluice:plugin/keyed-processor@0.2.0",
        })
    }
}

/// A linked component, by world.
#[derive(Clone)]
enum Pre {
    Processor(ProcessorPre<StoreState>),
    /// A processor of package 0.3.0 (batches with their members).
    Indexed(IndexedProcessorPre<StoreState>),
    Aggregator(AggregatorPre<StoreState>),
    Keyed(KeyedProcessorPre<StoreState>),
}

/// A live instance's exports, by world.
enum Bindings {
    Processor(ProcessorBindings),
    Indexed(IndexedBindings),
    Aggregator(AggregatorBindings),
    Keyed(KeyedBindings),
}

impl Plugin {
    /// The world the component implements.
    pub fn world(&self) -> World {
        match self.pre {
            Pre::Processor(_) | Pre::Indexed(_) => World::Processor,
            Pre::Aggregator(_) => World::Aggregator,
            Pre::Keyed(_) => World::Keyed,
        }
    }
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin")
            .field("name", &self.name)
            .field("version", &self.version)
            .field("path", &self.path)
            .field("origin", &self.origin)
            .finish_non_exhaustive()
    }
}

impl LogTags {
    /// Tags for a plugin run on its own (`sluice plugin check`/`run`), as stage
    /// 0 of pipeline `pipeline`, partition 0.
    pub fn standalone(pipeline: &str, plugin: &Plugin) -> Self {
        LogTags {
            pipeline: pipeline.into(),
            stage: format!("0:{}", plugin.name),
            plugin: plugin.name.clone(),
            version: plugin.version.clone(),
            partition: 0,
        }
    }
}

/// Per-instance limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most bytes of linear memory (all memories together) the instance may use.
    pub memory_bytes: u64,
    /// Longest one call may run.
    pub timeout: Duration,
}

pub use crate::wasm::guest_output::LogTags;

/// The host state of one store.
pub struct StoreState {
    wasi: WasiCtx,
    table: ResourceTable,
    memory: MemoryLimiter,
    tags: LogTags,
    /// What the `tables` import (package 0.2.0) reads; none: no table.
    pub(crate) tables: Option<Arc<dyn crate::wasm::keyed::TableLookup>>,
}

impl WasiView for StoreState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl StoreState {
    /// Writes a plugin's log message at `level`, tagged with where it runs.
    pub(crate) fn log_at(&mut self, level: tracing::Level, message: &str) {
        let t = &self.tags;
        match level {
            tracing::Level::TRACE => {
                tracing::trace!(target: "sluice::plugin", pipeline = %t.pipeline, stage = %t.stage, plugin = %t.plugin, version = %t.version, partition = t.partition, "{message}")
            }
            tracing::Level::DEBUG => {
                tracing::debug!(target: "sluice::plugin", pipeline = %t.pipeline, stage = %t.stage, plugin = %t.plugin, version = %t.version, partition = t.partition, "{message}")
            }
            tracing::Level::INFO => {
                tracing::info!(target: "sluice::plugin", pipeline = %t.pipeline, stage = %t.stage, plugin = %t.plugin, version = %t.version, partition = t.partition, "{message}")
            }
            tracing::Level::WARN => {
                tracing::warn!(target: "sluice::plugin", pipeline = %t.pipeline, stage = %t.stage, plugin = %t.plugin, version = %t.version, partition = t.partition, "{message}")
            }
            tracing::Level::ERROR => {
                tracing::error!(target: "sluice::plugin", pipeline = %t.pipeline, stage = %t.stage, plugin = %t.plugin, version = %t.version, partition = t.partition, "{message}")
            }
        }
    }
}

/// `impl host::Host for StoreState` for the `host` module in scope: the
/// same `log` for every WIT package version (each has its own generated
/// `Level`).
macro_rules! host_log {
    () => {
        impl host::Host for StoreState {
            fn log(&mut self, level: host::Level, message: String) {
                let level = match level {
                    host::Level::Trace => tracing::Level::TRACE,
                    host::Level::Debug => tracing::Level::DEBUG,
                    host::Level::Info => tracing::Level::INFO,
                    host::Level::Warn => tracing::Level::WARN,
                    host::Level::Error => tracing::Level::ERROR,
                };
                self.log_at(level, &message);
            }
        }
    };
}
pub(crate) use host_log;

host_log!();

impl types::Host for StoreState {}

/// Why a call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// The plugin returned an error; the instance is still usable.
    #[error("plugin error: {0}")]
    Plugin(String),
    /// The call ran past its deadline and was interrupted.
    #[error("timeout: the call ran past its {0:?} deadline")]
    Timeout(Duration),
    /// The instance tried to grow its memory past the limit.
    #[error("out of memory: the instance hit its {0}-byte memory limit")]
    OutOfMemory(u64),
    /// The instance trapped (a panic, an out-of-bounds access, …).
    #[error("{0}")]
    Trap(String),
    /// The plugin returned a batch whose columns disagree.
    #[error("plugin returned a malformed batch: {0}")]
    Malformed(String),
}

impl CallError {
    /// Whether the instance must be thrown away (anything but a returned error).
    pub fn poisons_instance(&self) -> bool {
        !matches!(self, CallError::Plugin(_) | CallError::Malformed(_))
    }
}

/// What a plugin returned for one batch.
#[derive(Debug, Default)]
pub struct Processed {
    /// Events passed on.
    pub events: Batch,
    /// (input index, reason) of the refused events.
    pub rejected: Vec<(u32, String)>,
}

/// One live, configured instance of a plugin.
pub struct Instance {
    store: Store<StoreState>,
    bindings: Bindings,
    limits: Limits,
    stderr: GuestOutput,
}

impl std::fmt::Debug for Instance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Instance")
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

fn deadline_ticks(timeout: Duration) -> u64 {
    (timeout.as_nanos().div_ceil(EPOCH_TICK.as_nanos()) as u64).max(1) + 1
}

impl Plugin {
    /// Makes a new instance with its own store and calls `configure(config)` on it,
    /// under the memory limit and the deadline.
    ///
    /// # Errors
    /// Instantiation fails, `configure` returns an error, traps or times out.
    pub fn instantiate(
        &self,
        config: &[(String, String)],
        limits: Limits,
        tags: LogTags,
    ) -> Result<Instance, CallError> {
        let shared_tags = Arc::new(tags.clone());
        let stderr = GuestOutput::new(Stream::Stderr, shared_tags.clone());
        let wasi = WasiCtx::builder()
            .stdout(GuestOutput::new(Stream::Stdout, shared_tags))
            .stderr(stderr.clone())
            .wall_clock(FrozenClock)
            .monotonic_clock(FrozenClock)
            .build();
        let mut store = Store::new(
            &self.engine,
            StoreState {
                wasi,
                table: ResourceTable::new(),
                memory: MemoryLimiter {
                    limit: usize::try_from(limits.memory_bytes).unwrap_or(usize::MAX),
                    hit: false,
                    high_water: 0,
                },
                tags,
                tables: None,
            },
        );
        store.limiter(|s| &mut s.memory);
        // The deadline must be set before instantiating: the default (0) would
        // interrupt the component's start function.
        store.set_epoch_deadline(deadline_ticks(limits.timeout));
        store.epoch_deadline_trap();
        let bindings = match &self.pre {
            Pre::Processor(pre) => pre.instantiate(&mut store).map(Bindings::Processor),
            Pre::Indexed(pre) => pre.instantiate(&mut store).map(Bindings::Indexed),
            Pre::Aggregator(pre) => pre.instantiate(&mut store).map(Bindings::Aggregator),
            Pre::Keyed(pre) => pre.instantiate(&mut store).map(Bindings::Keyed),
        };
        let mut instance = match bindings {
            Ok(bindings) => Instance {
                store,
                bindings,
                limits,
                stderr,
            },
            Err(e) => return Err(classify(e, limits, &store.data().memory, &stderr)),
        };
        instance
            .store
            .set_epoch_deadline(deadline_ticks(limits.timeout));
        let configured = match &instance.bindings {
            Bindings::Processor(b) => b.call_configure(&mut instance.store, config),
            Bindings::Indexed(b) => b.call_configure(&mut instance.store, config),
            Bindings::Aggregator(b) => b.call_configure(&mut instance.store, config),
            Bindings::Keyed(b) => b.call_configure(&mut instance.store, config),
        };
        match configured {
            Ok(Ok(())) => Ok(instance),
            Ok(Err(reason)) => Err(CallError::Plugin(format!("configure failed: {reason}"))),
            Err(e) => Err(classify(
                e,
                limits,
                &instance.store.data().memory,
                &instance.stderr,
            )),
        }
    }
}

impl Instance {
    /// The world of the component this instance runs.
    pub fn world(&self) -> World {
        match self.bindings {
            Bindings::Processor(_) | Bindings::Indexed(_) => World::Processor,
            Bindings::Aggregator(_) => World::Aggregator,
            Bindings::Keyed(_) => World::Keyed,
        }
    }

    /// The store, e.g. to hand the host state what an import needs.
    pub(crate) fn store_mut(&mut self) -> &mut Store<StoreState> {
        &mut self.store
    }

    /// Runs `call` on the keyed-processor exports under the deadline and
    /// memory limit.
    pub(crate) fn keyed_call<T>(
        &mut self,
        call: impl FnOnce(
            &crate::wasm::keyed::KeyedBindings,
            &mut Store<StoreState>,
        ) -> wasmtime::Result<Result<T, String>>,
    ) -> Result<T, CallError> {
        let Bindings::Keyed(bindings) = &self.bindings else {
            return Err(CallError::Malformed(format!(
                "a {} component cannot run as a keyed processor",
                self.world()
            )));
        };
        self.stderr.clear();
        self.store.data_mut().memory.hit = false;
        self.store
            .set_epoch_deadline(deadline_ticks(self.limits.timeout));
        let result = call(bindings, &mut self.store);
        self.settle(result)
    }

    /// A call's result under the instance's limits: a returned error is the
    /// plugin's, a wasmtime error is classified (timeout, out of memory,
    /// trap with what the guest wrote to stderr).
    fn settle<T>(&self, result: wasmtime::Result<Result<T, String>>) -> Result<T, CallError> {
        match result {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(reason)) => Err(CallError::Plugin(reason)),
            Err(e) => Err(classify(
                e,
                self.limits,
                &self.store.data().memory,
                &self.stderr,
            )),
        }
    }

    /// The largest linear memory this instance has had, in bytes.
    pub fn memory_high_water(&self) -> u64 {
        self.store.data().memory.high_water as u64
    }

    /// Calls `process(batch)`.
    ///
    /// The batch is lowered into the guest as its packed columns (five copies,
    /// whatever its length) and the output is lifted the same way, then checked.
    ///
    /// # Errors
    /// See [`CallError`]; after an error with [`CallError::poisons_instance`] the
    /// instance must be dropped.
    pub fn process(&mut self, batch: &mut Batch) -> Result<Processed, CallError> {
        self.stderr.clear();
        self.store.data_mut().memory.hit = false;
        self.store
            .set_epoch_deadline(deadline_ticks(self.limits.timeout));
        let result = match &self.bindings {
            Bindings::Indexed(bindings) => {
                crate::wasm::indexed::process(bindings, &mut self.store, batch)
            }
            Bindings::Processor(bindings) => {
                // Package 0.1.0 has no members: they stay behind.
                let input = to_wit(std::mem::take(batch));
                let result = bindings.call_process(&mut self.store, &input);
                let n = input.value_ends.len() as u32;
                // Give the caller its batch back (moves, no copy), e.g. to dead-letter it.
                *batch = from_wit(input).expect("the host's own batch is well-formed");
                result.map(|r| r.map(|output| check_output(n, output)))
            }
            _ => {
                return Err(CallError::Malformed(format!(
                    "a {} component cannot run as a processor",
                    self.world()
                )));
            }
        };
        match result {
            Ok(Ok(checked)) => checked,
            Ok(Err(reason)) => Err(CallError::Plugin(reason)),
            Err(e) => Err(classify(
                e,
                self.limits,
                &self.store.data().memory,
                &self.stderr,
            )),
        }
    }
}

/// What a processor returned for a batch of `n` events, checked: the
/// columns of its events agree, and every rejection names an input event
/// (one refused twice is kept once, with its first reason).
///
/// # Errors
/// [`CallError::Malformed`], saying what disagrees.
fn check_output(n: u32, output: types::Output) -> Result<Processed, CallError> {
    checked_output(
        n,
        from_wit(output.events),
        output.rejected.into_iter().map(|r| (r.index, r.reason)),
    )
}

/// [`check_output`] on a processor's output of any package version: its
/// events (the lifted batch, or why its columns disagree) and its
/// (index, reason) rejections.
///
/// # Errors
/// [`CallError::Malformed`], saying what disagrees.
pub(crate) fn checked_output(
    n: u32,
    events: Result<Batch, String>,
    rejections: impl ExactSizeIterator<Item = (u32, String)>,
) -> Result<Processed, CallError> {
    let events = events.map_err(CallError::Malformed)?;
    let mut rejected = Vec::with_capacity(rejections.len());
    let mut seen = vec![false; if rejections.len() == 0 { 0 } else { n as usize }];
    for (index, reason) in rejections {
        if index >= n {
            return Err(CallError::Malformed(format!(
                "rejection of event {index} in a batch of {n}"
            )));
        }
        // An event refused twice is dead-lettered once, with the first reason.
        if !std::mem::replace(&mut seen[index as usize], true) {
            rejected.push((index, reason));
        }
    }
    Ok(Processed { events, rejected })
}

/// The checks [`Instance::process`] makes of a processor's output, on
/// columns given directly instead of lifted from a guest: `events` as the
/// guest's `output.events`, `rejected` as its (index, reason) rejections,
/// for an input batch of `n` events. The entry point of the fuzz target
/// `guest_output` (fuzz/).
///
/// # Errors
/// [`CallError::Malformed`], as [`Instance::process`] returns it.
pub fn check_guest_output(
    n: u32,
    events: BatchParts,
    rejected: Vec<(u32, String)>,
) -> Result<Processed, CallError> {
    let output = types::Output {
        events: parts_to_wit(events),
        rejected: rejected
            .into_iter()
            .map(|(index, reason)| types::Rejection { index, reason })
            .collect(),
    };
    check_output(n, output)
}

impl Instance {
    /// Runs `call` on the aggregator exports under the deadline and memory
    /// limit.
    fn aggregator_call<T>(
        &mut self,
        call: impl FnOnce(
            &AggregatorBindings,
            &mut Store<StoreState>,
        ) -> wasmtime::Result<Result<T, String>>,
    ) -> Result<T, CallError> {
        let Bindings::Aggregator(bindings) = &self.bindings else {
            return Err(CallError::Malformed(format!(
                "a {} component cannot run as an aggregator",
                self.world()
            )));
        };
        self.stderr.clear();
        self.store.data_mut().memory.hit = false;
        self.store
            .set_epoch_deadline(deadline_ticks(self.limits.timeout));
        let result = call(bindings, &mut self.store);
        self.settle(result)
    }

    /// Aggregator `create`: an empty window's accumulator.
    ///
    /// # Errors
    /// See [`CallError`].
    pub fn create(&mut self) -> Result<Vec<u8>, CallError> {
        self.aggregator_call(|b, s| b.call_create(s))
    }

    /// Aggregator `accumulate`: event `i` of `batch` goes into
    /// `states[groups[i]]`; returns the new states (checked to be as many).
    ///
    /// # Errors
    /// See [`CallError`]; a wrong number of states is [`CallError::Malformed`].
    pub fn accumulate(
        &mut self,
        states: &[Vec<u8>],
        batch: Batch,
        groups: &[u32],
    ) -> Result<Vec<Vec<u8>>, CallError> {
        let input = to_wit(batch);
        let n = states.len();
        let out = self.aggregator_call(|b, s| b.call_accumulate(s, states, &input, groups))?;
        if out.len() != n {
            return Err(CallError::Malformed(format!(
                "accumulate returned {} state(s) for {n}",
                out.len()
            )));
        }
        Ok(out)
    }

    /// Aggregator `merge`.
    ///
    /// # Errors
    /// See [`CallError`].
    pub fn merge(&mut self, a: &[u8], b: &[u8]) -> Result<Vec<u8>, CallError> {
        self.aggregator_call(|bind, s| bind.call_merge(s, a, b))
    }

    /// Aggregator `finish`: one JSON text per state (checked to be as many).
    ///
    /// # Errors
    /// See [`CallError`].
    pub fn finish(&mut self, states: &[Vec<u8>]) -> Result<Vec<String>, CallError> {
        let n = states.len();
        let out = self.aggregator_call(|b, s| b.call_finish(s, states))?;
        if out.len() != n {
            return Err(CallError::Malformed(format!(
                "finish returned {} result(s) for {n}",
                out.len()
            )));
        }
        Ok(out)
    }
}

/// `to_wit`, `parts_to_wit` and `from_wit` between a [`Batch`] and the
/// `event-batch` record of the generated `types` module in scope: one per
/// WIT package version (the records are alike, their Rust types are not).
macro_rules! batch_conversions {
    () => {
        /// A batch as the WIT record, by moving its columns.
        #[allow(dead_code)]
        fn to_wit(batch: sluice_plugin_sdk::Batch) -> types::EventBatch {
            parts_to_wit(batch.into_parts())
        }

        /// Columns as the WIT record, by moving them.
        fn parts_to_wit(parts: sluice_plugin_sdk::BatchParts) -> types::EventBatch {
            types::EventBatch {
                values: parts.values,
                value_ends: parts.value_ends,
                keys: parts.keys,
                key_ends: parts.key_ends,
                timestamps: parts.timestamps,
                headers: parts
                    .headers
                    .into_iter()
                    .map(|(index, name, value)| types::Header { index, name, value })
                    .collect(),
            }
        }

        /// A WIT batch back as a [`Batch`], by moving its columns, checking
        /// they agree.
        fn from_wit(batch: types::EventBatch) -> Result<sluice_plugin_sdk::Batch, String> {
            sluice_plugin_sdk::Batch::from_parts(sluice_plugin_sdk::BatchParts {
                values: batch.values,
                value_ends: batch.value_ends,
                keys: batch.keys,
                key_ends: batch.key_ends,
                timestamps: batch.timestamps,
                headers: batch
                    .headers
                    .into_iter()
                    .map(|h| (h.index, h.name, h.value))
                    .collect(),
                // Packages 0.1.0 and 0.2.0 carry no members.
                ..Default::default()
            })
        }
    };
}
pub(crate) use batch_conversions;

batch_conversions!();

/// Turns a wasmtime error into a [`CallError`], with what the guest wrote to
/// stderr (a Rust panic message) when it wrote anything.
fn classify(
    error: wasmtime::Error,
    limits: Limits,
    memory: &MemoryLimiter,
    stderr: &GuestOutput,
) -> CallError {
    if error.downcast_ref::<Trap>() == Some(&Trap::Interrupt) {
        return CallError::Timeout(limits.timeout);
    }
    if memory.hit {
        return CallError::OutOfMemory(limits.memory_bytes);
    }
    // The cause first: a host call's own refusal (e.g. "plugins may not
    // block or sleep"), not wasmtime's "error while executing at wasm
    // backtrace" with the frames before it; then where, briefly.
    let (cause, at) = match error.downcast_ref::<Trap>() {
        Some(trap) => (trap.to_string(), String::new()),
        None => (error.root_cause().to_string(), where_in_wasm(&error)),
    };
    let said = stderr.recent();
    let said: Vec<&str> = said
        .iter()
        .map(|l| l.trim())
        .filter(|l| !l.is_empty() && !l.starts_with("note: run with `RUST_BACKTRACE"))
        .collect();
    if said.is_empty() {
        CallError::Trap(format!("{cause}{at}"))
    } else {
        // What the guest said (a panic message) is the cause; the trap is
        // how it ended.
        CallError::Trap(format!("{} ({cause}){at}", said.join(" ")))
    }
}

/// `" (at f ← g ← …)"`: the innermost wasm frames of `error`'s backtrace,
/// by name when the module has names; empty without a backtrace.
fn where_in_wasm(error: &wasmtime::Error) -> String {
    let Some(backtrace) = error.downcast_ref::<wasmtime::WasmBacktrace>() else {
        return String::new();
    };
    let frames: Vec<String> = backtrace
        .frames()
        .iter()
        .take(4)
        .map(|f| {
            f.func_name().map_or_else(
                || format!("wasm function {}", f.func_index()),
                str::to_string,
            )
        })
        .collect();
    if frames.is_empty() {
        String::new()
    } else {
        format!(" (at {})", frames.join(" ← "))
    }
}

/// The only clock a plugin sees: always at the Unix epoch (0 ns). A plugin's
/// output must not depend on when it runs; event time comes with the events.
struct FrozenClock;

impl wasmtime_wasi::HostWallClock for FrozenClock {
    fn resolution(&self) -> Duration {
        Duration::from_secs(1)
    }
    fn now(&self) -> Duration {
        Duration::ZERO
    }
}

impl wasmtime_wasi::HostMonotonicClock for FrozenClock {
    fn resolution(&self) -> u64 {
        1_000_000_000
    }
    fn now(&self) -> u64 {
        0
    }
}

/// Caps the linear memory of one instance, and remembers when a growth was
/// refused, so an out-of-memory is reported as such and not as the trap the guest
/// turns it into (a Rust guest aborts with `unreachable`).
#[derive(Debug)]
struct MemoryLimiter {
    /// Most bytes of linear memory.
    limit: usize,
    /// Set when a growth past `limit` was refused.
    hit: bool,
    /// The largest linear memory granted, in bytes.
    high_water: usize,
}

impl wasmtime::ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.limit {
            self.hit = true;
            return Ok(false);
        }
        self.high_water = self.high_water.max(desired);
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // Tables hold function references; a million entries is far beyond any
        // real plugin and bounds a runaway one.
        Ok(desired <= 1 << 20)
    }
}

/// `": this is a core WebAssembly module, …"` with what to do, when `bytes`
/// are a core module (what `wasm32-unknown-unknown` or `wasm32-wasip1`
/// builds) rather than a component; else empty.
pub fn core_module_hint(bytes: &[u8]) -> &'static str {
    if bytes.starts_with(b"\0asm\x01\0\0\0") {
        ": this is a core WebAssembly module, not a component: build it for \
         wasm32-wasip2, or wrap it with `wasm-tools component new`"
    } else {
        ""
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(values: &[&str]) -> BatchParts {
        let mut batch = Batch::new();
        for v in values {
            batch.push(None, v.as_bytes(), 0);
        }
        batch.into_parts()
    }

    #[test]
    fn a_guest_output_is_checked_before_it_goes_on() {
        let out = check_guest_output(
            3,
            parts(&["a", "bc"]),
            vec![(2, "x".into()), (0, "y".into()), (2, "again".into())],
        )
        .unwrap();
        assert_eq!(out.events, Batch::from_lines("a\nbc"));
        assert_eq!(out.rejected, [(2, "x".into()), (0, "y".into())]);

        assert_eq!(
            check_guest_output(3, parts(&["a"]), vec![(3, "past".into())]).unwrap_err(),
            CallError::Malformed("rejection of event 3 in a batch of 3".into())
        );
        let mut bad = parts(&["a", "bc"]);
        bad.value_ends[1] = 9;
        assert_eq!(
            check_guest_output(3, bad, Vec::new()).unwrap_err(),
            CallError::Malformed(
                "malformed batch: value offsets end at 9 but the buffer holds 3 bytes".into()
            )
        );
    }
}
