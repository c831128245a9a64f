//! The daemon: start the sinks and the pipelines of a [`Topology`], run until the
//! sources end or a shutdown is asked for, then drain and report.
//!
//! Shutdown (SIGINT, SIGTERM, or the `shutdown` future in tests) stops the sources
//! from reading; every record already read is still batched, processed and
//! written; the sinks flush (a file sink syncs to disk); then [`run`] returns.
//! Nothing read is dropped, nothing is half-written.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use std::path::PathBuf;
use std::time::Duration;

use arc_swap::ArcSwap;

use crate::checkpoint::Store;
use crate::obs::admin::AdminState;
use crate::obs::systemd::Notifier;
use crate::pipeline::{Chain, PipelineSpec, Resume, Summary};
use crate::sink::{RunningSink, SinkSpec};
use crate::topology::Topology;
use crate::wasm::plugin::PluginHost;
use crate::wasm::reload::{PluginSlot, Reloader};

/// The status file in the state folder: the running version of every plugin,
/// since when, its reload history and last error (see
/// [`crate::wasm::reload::Status`]).
pub const STATUS_FILE: &str = "status.json";

/// Quiet time after a reload request (SIGHUP, a config file event) before the
/// config is read: an editor's save is several events.
pub const CONFIG_DEBOUNCE: Duration = Duration::from_millis(200);

/// What a run ended with.
#[derive(Debug)]
pub struct Outcome {
    /// One summary per pipeline.
    pub summaries: Vec<Summary>,
    /// Errors that stopped a pipeline or a sink (empty: a clean run).
    pub errors: Vec<anyhow::Error>,
}

/// Builds the topology of the config file again, for a reload, reusing the
/// plugin slots that run (see [`Topology::build`]); the error is the message
/// to log.
pub type Rebuild = Arc<dyn Fn(&[Arc<PluginSlot>]) -> Result<Topology, String> + Send + Sync>;

/// Config reload: what asks for it, and how the new topology is built.
pub struct ConfigReload {
    /// One message per request (SIGHUP, `--watch-config`, …).
    pub requests: tokio::sync::mpsc::UnboundedReceiver<&'static str>,
    /// A sender of that channel, for the admin API's `POST /reload`.
    pub sender: tokio::sync::mpsc::UnboundedSender<&'static str>,
    /// Reads and builds the config again.
    pub rebuild: Rebuild,
}

/// A pipeline the daemon runs.
struct Live {
    shape: Vec<(&'static str, String)>,
    chain: Arc<ArcSwap<Chain>>,
    cancel: Arc<AtomicBool>,
    /// What its source reads (its identity).
    input: String,
    /// The sinks it writes to (outputs and dead letter).
    sinks: Vec<String>,
    /// Its counters.
    stats: Arc<crate::stats::Stats>,
    /// Removed by a reload (draining, or ended).
    removed: bool,
    /// Its source ended and its workers drained (kept, so that a reload does
    /// not start it again).
    ended: bool,
}

/// The running state of the daemon.
struct Daemon {
    host: PluginHost,
    sinks: BTreeMap<String, (SinkSpec, RunningSink)>,
    live: BTreeMap<String, Live>,
    slots: Vec<Arc<PluginSlot>>,
    /// What the admin API shows.
    admin: Arc<AdminState>,
    /// The sinks the current config uses.
    config_sinks: Vec<String>,
    reloader: Option<Reloader>,
    /// Watchers of the lookup table files of the current config.
    table_watchers: Vec<crate::table::TableWatch>,
    state_dir: PathBuf,
    hot_reload: bool,
    compile_cache_max: u64,
    /// The checkpoint store, once a checkpointed pipeline needs it.
    store: Option<Arc<Store>>,
    waiting: tokio::task::JoinSet<(Summary, anyhow::Result<()>)>,
}

/// What the checkpointed pipelines of a config resume from.
#[derive(Default)]
struct Resumes {
    /// Per checkpointed pipeline.
    pipelines: BTreeMap<String, Resume>,
    /// Per file sink written by one checkpointed pipeline only, not running yet:
    /// the length to cut it back to.
    sinks: BTreeMap<String, crate::sink::Resume>,
}

impl Daemon {
    /// The checkpoint store, opened on first use.
    fn store(&mut self) -> anyhow::Result<Arc<Store>> {
        if let Some(store) = &self.store {
            return Ok(store.clone());
        }
        let store = Arc::new(Store::open(&self.state_dir)?);
        self.store = Some(store.clone());
        Ok(store)
    }

    /// Loads the checkpoints of the checkpointed pipelines among `pipelines`
    /// that do not run yet, and the sink lengths to restore.
    fn resumes(&mut self, pipelines: &[PipelineSpec]) -> anyhow::Result<Resumes> {
        let mut out = Resumes::default();
        let mut users: BTreeMap<&str, usize> = BTreeMap::new();
        for p in pipelines {
            for s in p.sinks.iter().chain(&p.dead_letter) {
                *users.entry(s.as_str()).or_default() += 1;
            }
        }
        for p in pipelines {
            // Running ones keep going; a checkpointed one that a reload removed
            // and that has ended resumes from its checkpoint when re-added.
            if p.checkpoint.is_none()
                || self
                    .live
                    .get(&p.name)
                    .is_some_and(|l| !(l.ended && l.removed))
            {
                continue;
            }
            let store = self.store()?;
            // A Kafka pipeline resumes from its group's committed offsets and
            // its partitions' changelog, whichever daemon had them last; its
            // local checkpoint is a record, not a starting point.
            let checkpoint = if p.source.input.replay() == crate::source::Replay::Committed {
                None
            } else {
                p.load_checkpoint(&store)?
            };
            let mut exclusive_sinks = std::collections::BTreeSet::new();
            for s in p.sinks.iter().chain(&p.dead_letter) {
                if users.get(s.as_str()).copied().unwrap_or(0) > 1 {
                    tracing::warn!(pipeline = %p.name, sink = %s, "the sink is shared with another pipeline: after a crash, output since the last checkpoint is written again (at-least-once)");
                    continue;
                }
                exclusive_sinks.insert(s.clone());
                // Cut back only a sink that was this pipeline's alone when the
                // checkpoint was taken too, and only after a crash: after a
                // final checkpoint (a stop, the end of the input) the pipeline
                // wrote nothing more, and whatever follows in the file is
                // someone else's.
                if let Some(c) = &checkpoint
                    && !self.sinks.contains_key(s)
                {
                    let resume = match c.sinks.get(s) {
                        Some(len) if !c.finished && !c.stopped && c.exclusive.contains(s) => {
                            crate::sink::Resume::CutTo(*len)
                        }
                        _ => crate::sink::Resume::Keep(c.sinks.get(s).copied()),
                    };
                    out.sinks.insert(s.clone(), resume);
                }
            }
            out.pipelines.insert(
                p.name.clone(),
                Resume {
                    store,
                    checkpoint,
                    exclusive_sinks,
                },
            );
        }
        Ok(out)
    }

    /// Starts a sink unless one of that name runs.
    fn start_sink(
        &mut self,
        name: &str,
        spec: &SinkSpec,
        resume: Option<crate::sink::Resume>,
    ) -> anyhow::Result<()> {
        if !self.sinks.contains_key(name) {
            let sink = RunningSink::start(name, spec, resume)?;
            self.sinks.insert(name.to_string(), (spec.clone(), sink));
        }
        Ok(())
    }

    fn start_pipeline(
        &mut self,
        spec: &PipelineSpec,
        resume: Option<Resume>,
    ) -> anyhow::Result<()> {
        let handles = self
            .sinks
            .iter()
            .map(|(name, (_, sink))| (name.clone(), sink.handle.clone()))
            .collect();
        let cancel = Arc::new(AtomicBool::new(false));
        let running = spec
            .start(&handles, cancel.clone(), resume)
            .map_err(|e| e.context(format!("pipeline `{}` cannot start", spec.name)))?;
        tracing::info!(
            pipeline = %spec.name,
            partitions = spec.partitions,
            stages = spec.chain.stages.len(),
            "pipeline started"
        );
        self.live.insert(
            spec.name.clone(),
            Live {
                shape: spec.shape(),
                chain: running.chain.clone(),
                cancel,
                input: spec.source.identity(),
                sinks: spec
                    .sinks
                    .iter()
                    .chain(&spec.dead_letter)
                    .cloned()
                    .collect(),
                stats: running.stats.clone(),
                removed: false,
                ended: false,
            },
        );
        self.waiting.spawn_blocking(move || running.wait());
        self.refresh_admin();
        Ok(())
    }

    /// Copies the pipelines and plugins into the admin API's view.
    fn refresh_admin(&self) {
        *self.admin.pipelines.lock().expect("admin lock") = self
            .live
            .iter()
            .map(|(name, l)| (name.clone(), l.stats.clone(), !l.ended))
            .collect();
        *self.admin.plugins.lock().expect("admin lock") = self.slots.clone();
        *self.admin.sinks.lock().expect("admin lock") = self
            .sinks
            .iter()
            .map(|(name, (_, sink))| (name.clone(), sink.stats.clone()))
            .collect();
    }

    /// The sinks neither the current config nor a running pipeline uses.
    fn take_unused_sinks(&mut self) -> Vec<(String, RunningSink)> {
        let unused: Vec<String> = self
            .sinks
            .keys()
            .filter(|name| {
                !self.config_sinks.contains(name)
                    && !self
                        .live
                        .values()
                        .any(|l| !l.ended && l.sinks.contains(name))
            })
            .cloned()
            .collect();
        unused
            .into_iter()
            .filter_map(|name| {
                let (_, sink) = self.sinks.remove(&name)?;
                tracing::info!(sink = %name, "sink no longer used: closed");
                Some((name, sink))
            })
            .collect()
    }

    fn cancel_all(&self) {
        // A Kafka sink waiting for unreachable brokers stops waiting after a
        // while instead of holding the shutdown for ever.
        crate::sink::daemon_stopping();
        for live in self.live.values() {
            live.cancel.store(true, Ordering::Relaxed);
        }
    }

    /// (Re)starts the plugin watcher on the current slots.
    fn watch_plugins(&mut self) -> anyhow::Result<()> {
        self.reloader = None; // stops the old watcher first
        if self.hot_reload && !self.slots.is_empty() {
            self.reloader = Some(Reloader::start(
                self.host.clone(),
                self.slots.clone(),
                Some(self.state_dir.join(STATUS_FILE)),
            )?);
        }
        Ok(())
    }

    /// (Re)starts what keeps the lookup tables up to date: the watchers of
    /// their files (with hot reload), and the followers of Kafka tables
    /// (always; a Kafka table is read to its end here, before the pipelines
    /// that use it run). The old ones are dropped only when every new one
    /// started.
    fn watch_tables(&mut self, tables: &[Arc<crate::table::TableSlot>]) -> anyhow::Result<()> {
        let mut watchers = Vec::new();
        for table in tables {
            if self.hot_reload || table.is_kafka() {
                watchers.push(table.watch()?);
            }
        }
        self.table_watchers = watchers;
        Ok(())
    }

    /// Applies a reloaded topology: starts the new pipelines, swaps the chain of
    /// the changed ones in place, drains the removed ones. Refused as a whole
    /// (nothing changes) when it changes what cannot change in place.
    fn apply(&mut self, new: Topology) -> Result<String, String> {
        if new.state_dir != self.state_dir
            || new.hot_reload != self.hot_reload
            || new.compile_cache_max != self.compile_cache_max
        {
            return Err(
                "[daemon] state_dir, hot_reload and compile_cache_max take effect on a restart only"
                    .into(),
            );
        }
        for (name, spec) in &new.sinks {
            if let Some((running, _)) = self.sinks.get(name)
                && running != spec
            {
                return Err(format!(
                    "sink `{name}` changed: a running sink changes on a restart only (or give it a new name)"
                ));
            }
        }
        for spec in &new.pipelines {
            if !self.live.contains_key(&spec.name)
                && let Some((other, _)) = self
                    .live
                    .iter()
                    .find(|(_, l)| l.input == spec.source.identity())
            {
                return Err(format!(
                    "new pipeline `{}` would read {} from its start, which pipeline `{other}` has read (renaming or re-adding a pipeline needs a restart: sources keep no position yet)",
                    spec.name,
                    spec.source.input.describe()
                ));
            }
            if let Some(live) = self.live.get(&spec.name) {
                if live.ended {
                    continue;
                }
                if live.removed {
                    return Err(format!(
                        "pipeline `{}` is still draining from the last reload; try again",
                        spec.name
                    ));
                }
                let changed: Vec<&str> = live
                    .shape
                    .iter()
                    .zip(spec.shape())
                    .filter(|(a, b)| a.1 != b.1)
                    .map(|(a, _)| a.0)
                    .collect();
                if !changed.is_empty() {
                    return Err(format!(
                        "pipeline `{}` changed its {}: that needs a restart (a reload changes `batch` and `processors` in place, and adds and removes pipelines)",
                        spec.name,
                        changed.join(", ")
                    ));
                }
            }
        }

        // The new tables first: a Kafka table is read to its end before a
        // chain that uses it runs; when one cannot be, nothing changes.
        if let Err(e) = self.watch_tables(&new.tables) {
            return Err(format!("{e:#}"));
        }
        new.commit_uses();
        let (mut started, mut changed, mut removed, mut same) = (0, 0, 0, 0);
        let names: Vec<&str> = new.pipelines.iter().map(|p| p.name.as_str()).collect();
        for (name, live) in &mut self.live {
            if !names.contains(&name.as_str()) && !live.removed {
                live.removed = true;
                live.cancel.store(true, Ordering::Relaxed);
                tracing::info!(pipeline = %name, "pipeline removed from the config: draining");
                removed += 1;
            }
        }
        let mut errors = Vec::new();
        let mut resumes = self.resumes(&new.pipelines).unwrap_or_else(|e| {
            errors.push(format!("{e:#}"));
            Resumes::default()
        });
        for (name, spec) in &new.sinks {
            if let Err(e) = self.start_sink(name, spec, resumes.sinks.get(name).copied()) {
                errors.push(format!("{e:#}"));
            }
        }
        for spec in &new.pipelines {
            match self.live.get(&spec.name) {
                Some(live)
                    if live.ended
                        && live.removed
                        && resumes
                            .pipelines
                            .get(&spec.name)
                            .is_some_and(|r| r.checkpoint.is_some()) =>
                {
                    match self.start_pipeline(spec, resumes.pipelines.remove(&spec.name)) {
                        Ok(()) => started += 1,
                        Err(e) => errors.push(format!("{e:#}")),
                    }
                }
                Some(live) if live.ended => {
                    if live.removed {
                        tracing::warn!(
                            pipeline = %spec.name,
                            "pipeline ended after an earlier reload removed it; not started again (without a checkpoint it would read its input twice; with `checkpoint` it resumes)"
                        );
                    }
                    same += 1;
                }
                Some(live) => {
                    if live.chain.load().fingerprint() == spec.chain.fingerprint() {
                        same += 1;
                    } else {
                        live.chain.store(spec.chain.clone());
                        tracing::info!(
                            pipeline = %spec.name,
                            stages = spec.chain.stages.len(),
                            "pipeline chain reloaded: partitions switch at their next batch"
                        );
                        changed += 1;
                    }
                }
                None if spec.checkpoint.is_some()
                    && !resumes.pipelines.contains_key(&spec.name) =>
                {
                    errors.push(format!(
                        "pipeline `{}` not started: its checkpoint could not be loaded",
                        spec.name
                    ));
                }
                None => match self.start_pipeline(spec, resumes.pipelines.remove(&spec.name)) {
                    Ok(()) => started += 1,
                    Err(e) => errors.push(format!("{e:#}")),
                },
            }
        }
        self.slots = new.plugins;
        self.config_sinks = new.sinks.keys().cloned().collect();
        self.refresh_admin();
        if let Err(e) = self.watch_plugins() {
            errors.push(format!("plugin watcher: {e:#}"));
        }
        let summary =
            format!("{started} started, {changed} changed, {removed} removed, {same} unchanged");
        if errors.is_empty() {
            Ok(summary)
        } else {
            Err(format!("{summary}; but: {}", errors.join("; ")))
        }
    }
}

/// Builds the config again off the daemon's thread (reading it and compiling
/// new plugins may take seconds), after [`CONFIG_DEBOUNCE`] of quiet.
fn spawn_build(
    rebuild: Rebuild,
    slots: Vec<Arc<PluginSlot>>,
    why: &'static str,
) -> tokio::task::JoinHandle<Result<Topology, String>> {
    tokio::task::spawn_blocking(move || {
        std::thread::sleep(CONFIG_DEBOUNCE);
        tracing::info!("{why}: reloading the config");
        rebuild(&slots)
    })
}

/// Runs `topology` until every pipeline has ended (its source ended, or it was
/// removed by a reload), or until `shutdown` completes (then drains). Reload
/// requests from `reload` rebuild the config and apply it.
///
/// # Errors
/// A sink or pipeline cannot start at start-up (a file cannot be opened, a
/// plugin instance cannot be made); nothing is left running then.
pub async fn run(
    topology: Topology,
    host: PluginHost,
    shutdown: impl Future<Output = ()>,
    reload: Option<ConfigReload>,
) -> anyhow::Result<Outcome> {
    // One daemon per state folder, held until this returns.
    let _state_lock = crate::state_lock::StateLock::acquire(&topology.state_dir)?;
    // Keyed states past their `state_memory` spill to files here (unnamed,
    // gone with the process).
    crate::pipeline::spill::set_dir(topology.state_dir.join("spill"));
    let Started {
        mut daemon,
        admin,
        mut errors,
        finished,
    } = start(&topology, host, reload.as_ref().map(|r| r.sender.clone())).await?;

    // Wait for every pipeline; the first that ends with an error stops the others
    // (they drain), as a signal would.
    // systemd: ready now (every pipeline started), and alive every half
    // watchdog period.
    let notifier = Arc::new(Notifier::from_env());
    notifier.ready(&format!("{} pipeline(s) running", daemon.live.len()));
    admin.ready.store(errors.is_empty(), Ordering::Relaxed);
    let watchdog = Notifier::watchdog_interval().map(|every| {
        let notifier = notifier.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                notifier.notify("WATCHDOG=1");
            }
        })
    });
    tokio::pin!(shutdown);
    let (mut requests, rebuild) = match reload {
        Some(r) => (Some(r.requests), Some(r.rebuild)),
        None => (None, None),
    };
    let mut shutdown_done = false;
    let mut results = Vec::new();
    // A config being read and built off this thread, and a request that came
    // in meanwhile.
    let mut building: Option<tokio::task::JoinHandle<Result<Topology, String>>> = None;
    let mut again: Option<&'static str> = None;
    // Sinks being closed (written out, synced) on blocking threads.
    let mut closing: tokio::task::JoinSet<(String, anyhow::Result<()>)> =
        tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            joined = daemon.waiting.join_next() => match joined {
                None => break,
                Some(joined) => {
                    let (summary, result) = joined?;
                    // Its counters: in the log while the daemon runs on (a
                    // reload removed it, other pipelines go on); else the
                    // `sluice:` summary line at exit says them, once.
                    let runs_on = !shutdown_done
                        && result.is_ok()
                        && (daemon.live.iter()).any(|(n, l)| *n != summary.pipeline && !l.ended);
                    if runs_on {
                        tracing::info!("pipeline ended: {summary}");
                    } else {
                        tracing::info!(pipeline = %summary.pipeline, "pipeline ended");
                    }
                    if summary.records_in == 0 && finished.contains(&summary.pipeline) {
                        tracing::warn!(pipeline = %summary.pipeline, "read nothing: an earlier run read this input to its end (its checkpoint); `sluice checkpoints --config FILE --reset {}` starts it over", summary.pipeline);
                    }
                    if result.is_err() {
                        daemon.cancel_all();
                    }
                    if let Some(live) = daemon.live.get_mut(&summary.pipeline) {
                        live.ended = true;
                    }
                    daemon.refresh_admin();
                    // A sink that a reload left without users is closed now,
                    // off this loop (it may wait for space or a reader).
                    for (name, sink) in daemon.take_unused_sinks() {
                        closing.spawn_blocking(move || (name, sink.finish()));
                    }
                    results.push((summary, result));
                }
            },
            () = &mut shutdown, if !shutdown_done => {
                shutdown_done = true;
                notifier.stopping();
                admin.ready.store(false, Ordering::Relaxed);
                daemon.cancel_all();
            }
            request = async { requests.as_mut()?.recv().await }, if requests.is_some() && !shutdown_done => {
                let Some(why) = request else {
                    requests = None;
                    continue;
                };
                if building.is_some() {
                    // One more build after the running one: it may have read the
                    // file before this change.
                    again = Some(why);
                    continue;
                }
                if let Some(rebuild) = rebuild.clone() {
                    notifier.reloading();
                    admin.ready.store(false, Ordering::Relaxed);
                    building = Some(spawn_build(rebuild, daemon.slots.clone(), why));
                }
            }
            built = async { building.as_mut()?.await.ok() }, if building.is_some() => {
                building = None;
                let outcome = built
                    .unwrap_or_else(|| Err("the reload panicked".into()))
                    .and_then(|t| if shutdown_done { Err("shutting down".into()) } else { daemon.apply(t) });
                if !shutdown_done {
                    notifier.ready(&format!("{} pipeline(s) running", daemon.live.values().filter(|l| !l.ended).count()));
                    admin.ready.store(true, Ordering::Relaxed);
                }
                let counter = match &outcome {
                    Ok(_) => &crate::obs::metrics::registry().config_reloads,
                    Err(_) => &crate::obs::metrics::registry().config_reload_failures,
                };
                counter.fetch_add(1, Ordering::Relaxed);
                match outcome {
                    Ok(summary) => tracing::info!("config reloaded: {summary}"),
                    Err(reason) => tracing::error!("config reload refused, the running config stays: {reason}"),
                }
                for (name, sink) in daemon.take_unused_sinks() {
                    closing.spawn_blocking(move || (name, sink.finish()));
                }
                if let (Some(why), Some(rebuild)) = (again.take(), rebuild.clone()) {
                    notifier.reloading();
                    building = Some(spawn_build(rebuild, daemon.slots.clone(), why));
                }
            }
        }
    }
    if !shutdown_done {
        // The inputs ended: the daemon stops by itself.
        notifier.stopping();
    }
    // The pipelines ended; the sinks write out what they hold. A signal now
    // still counts: a sink that cannot write (a full disk, no reader, a
    // database away) then gives up (see `sink::daemon_stopping`) instead of
    // holding the daemon until it can.
    for (name, (_, sink)) in std::mem::take(&mut daemon.sinks) {
        closing.spawn_blocking(move || (name, sink.finish()));
    }
    loop {
        tokio::select! {
            done = closing.join_next() => match done {
                None => break,
                Some(done) => {
                    let (name, result) = done?;
                    if let Err(e) = result {
                        errors.push(e.context(format!("sink `{name}`")));
                    }
                }
            },
            () = &mut shutdown, if !shutdown_done => {
                shutdown_done = true;
                tracing::info!("stopping: sinks that cannot write give up");
                crate::sink::daemon_stopping();
            }
        }
    }
    if let Some(w) = watchdog {
        w.abort();
    }
    finish(daemon, results, errors).await
}

/// Starts the admin API, the sinks and the pipelines of `topology`; the
/// errors of pipelines that could not start (the others are then cancelled).
async fn start(
    topology: &Topology,
    host: PluginHost,
    reload: Option<tokio::sync::mpsc::UnboundedSender<&'static str>>,
) -> anyhow::Result<Started> {
    topology.commit_uses();
    let admin = Arc::new(AdminState {
        pipelines: std::sync::Mutex::new(Vec::new()),
        plugins: std::sync::Mutex::new(topology.plugins.clone()),
        sinks: std::sync::Mutex::new(Vec::new()),
        state_dir: std::path::absolute(&topology.state_dir)
            .unwrap_or_else(|_| topology.state_dir.clone()),
        config_file: topology.config_file.clone(),
        ready: AtomicBool::new(false),
        reload,
        tap_token: topology.tap_token.clone(),
    });
    if crate::obs::telemetry::enabled() {
        crate::obs::telemetry::observe(admin.clone());
    }
    if let Some(addr) = topology.admin {
        crate::obs::admin::start(addr, admin.clone()).await;
    }
    let mut daemon = Daemon {
        admin: admin.clone(),
        host,
        sinks: BTreeMap::new(),
        live: BTreeMap::new(),
        slots: topology.plugins.clone(),
        config_sinks: topology.sinks.keys().cloned().collect(),
        reloader: None,
        table_watchers: Vec::new(),
        state_dir: topology.state_dir.clone(),
        hot_reload: topology.hot_reload,
        compile_cache_max: topology.compile_cache_max,
        store: None,
        waiting: tokio::task::JoinSet::new(),
    };
    // Watch the plugin files from before the first batch, so no change is missed.
    daemon.watch_plugins()?;
    daemon.watch_tables(&topology.tables)?;
    let mut resumes = daemon.resumes(&topology.pipelines)?;
    // Checkpointed pipelines an earlier run read to the end of their input.
    let finished = (resumes.pipelines.iter())
        .filter(|(_, r)| r.checkpoint.as_ref().is_some_and(|c| c.finished))
        .map(|(name, _)| name.clone())
        .collect();
    for (name, spec) in &topology.sinks {
        daemon.start_sink(name, spec, resumes.sinks.get(name).copied())?;
    }
    let mut errors = Vec::new();
    for spec in &topology.pipelines {
        if let Err(e) = daemon.start_pipeline(spec, resumes.pipelines.remove(&spec.name)) {
            // Stop the pipelines already running, and drain them below.
            daemon.cancel_all();
            errors.push(e);
            break;
        }
    }
    Ok(Started {
        daemon,
        admin,
        errors,
        finished,
    })
}

/// What [`start`] started.
struct Started {
    daemon: Daemon,
    admin: Arc<AdminState>,
    /// Pipelines that could not start.
    errors: Vec<anyhow::Error>,
    /// Checkpointed pipelines an earlier run read to the end of their input.
    finished: std::collections::BTreeSet<String>,
}

/// After the last pipeline ended: closes the sinks and gathers the
/// summaries (by pipeline name) and the errors.
async fn finish(
    mut daemon: Daemon,
    mut results: Vec<(crate::pipeline::Summary, anyhow::Result<()>)>,
    mut errors: Vec<anyhow::Error>,
) -> anyhow::Result<Outcome> {
    daemon.reloader = None;
    results.sort_by(|a, b| a.0.pipeline.cmp(&b.0.pipeline));

    for (name, (_, sink)) in std::mem::take(&mut daemon.sinks) {
        if let Err(e) = tokio::task::spawn_blocking(move || sink.finish()).await? {
            errors.push(e.context(format!("sink `{name}`")));
        }
    }
    // The sinks have written all they will: what they wrote is final now.
    let mut summaries = Vec::new();
    for (mut summary, result) in results {
        if let Some(live) = daemon.live.get(&summary.pipeline) {
            summary.settle(&live.stats);
        }
        summaries.push(summary);
        if let Err(e) = result {
            errors.push(e);
        }
    }
    Ok(Outcome { summaries, errors })
}

/// SIGINT and SIGTERM, caught from the moment [`Signals::install`] is called —
/// before anything starts reading, so that no signal kills the daemon mid-start.
#[derive(Debug)]
pub struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    /// Installs the handlers. Call it inside the tokio runtime's context.
    ///
    /// # Errors
    /// The handlers cannot be installed.
    pub fn install() -> std::io::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        crate::kafka::watch_stop_signals()?;
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    /// Completes on each SIGHUP (the reload signal of most daemons, and of
    /// systemd's `ExecReload=kill -HUP $MAINPID`).
    ///
    /// # Errors
    /// The handler cannot be installed.
    pub fn hangups() -> std::io::Result<tokio::signal::unix::Signal> {
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
    }

    /// Waits for the next signal; returns its name.
    pub async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
        }
    }

    /// Completes on the first signal (the daemon then drains); a second signal
    /// during the drain ends the process at once with exit code 130.
    pub async fn shutdown(mut self) {
        let first = self.recv().await;
        tracing::info!("{first} received: draining (send another signal to exit at once)");
        tokio::spawn(async move {
            let second = self.recv().await;
            tracing::warn!("{second} received while draining: exiting without draining");
            std::process::exit(130);
        });
    }
}
