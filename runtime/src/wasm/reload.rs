//! Hot reload of plugins: a new `.wasm` in the plugins folder replaces the running
//! version at the next batch boundary of each partition, without a restart and
//! without losing or repeating a record.
//!
//! ```text
//! notify (inotify) ──► debounce per file ──► read, hash ──► compile (cache) ──►
//! link against the processor world ──► configure() once per stage using it ──►
//! PluginSlot::current.store(new)   ──►  each worker, at its next batch: new instance
//! ```
//!
//! - A [`PluginSlot`] holds the running version of one plugin file
//!   ([`ArcSwap`]). Workers read it once per batch (a pointer compare); the batch
//!   in flight finishes on the version it started with.
//! - Every way a file can arrive is seen: written in place, copied over, written
//!   under a temporary name and renamed, deleted (the running version stays, with
//!   a warning), the plugins folder itself replaced or created later (checked
//!   every [`RESCAN`]).
//! - Events are debounced per file ([`DEBOUNCE`] of quiet), then the content hash
//!   decides: the same bytes as the running version, or bytes already refused, do
//!   nothing. That also stops the loop our own reads would start, and makes two
//!   events for one update one reload.
//! - A half-written, truncated, non-component or wrong-world file, or one whose
//!   `configure` refuses a stage's config, is refused: the running version keeps
//!   serving; the error is logged, counted and kept in the status. When the
//!   writer finishes, the next event loads the whole file.

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use notify::event::{AccessKind, AccessMode, EventKind, ModifyKind};
use notify::{RecursiveMode, Watcher as _};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::wasm::compile_cache::Origin;
use crate::wasm::plugin::{Limits, LogTags, Plugin, PluginHost};

/// Quiet time after a file's last event before it is loaded.
pub const DEBOUNCE: Duration = Duration::from_millis(100);

/// How often the watched folders are checked for being replaced, removed or
/// (re)created, which inotify does not report on the folder's new inode.
pub const RESCAN: Duration = Duration::from_secs(1);

/// Reload events kept per plugin in the status.
const HISTORY: usize = 20;

/// A stage that runs a plugin: a new version must accept its config first.
#[derive(Debug, Clone)]
pub struct StageUse {
    /// Pipeline name.
    pub pipeline: String,
    /// Stage label, e.g. `0:flights_delay`.
    pub stage: String,
    /// Pairs passed to `configure`.
    pub config: Vec<(String, String)>,
    /// Limits of its instances.
    pub limits: Limits,
}

/// The running version of one plugin file, swapped atomically on reload.
#[derive(Debug)]
pub struct PluginSlot {
    /// The `.wasm` file.
    pub path: PathBuf,
    current: ArcSwap<Plugin>,
    uses: Mutex<Vec<StageUse>>,
    status: Mutex<PluginStatus>,
}

/// What the status says about one plugin file.
#[derive(Debug, Clone, Serialize)]
pub struct PluginStatus {
    /// Plugin name (file stem).
    pub name: String,
    /// The file.
    pub path: PathBuf,
    /// Running version (content hash).
    pub version: String,
    /// When that version started serving (RFC 3339).
    pub since: String,
    /// Whether the running version was loaded from the compile cache.
    pub from_cache: bool,
    /// Milliseconds to read, compile (or load compiled) and link it.
    pub load_ms: f64,
    /// Successful reloads since start.
    pub reloads: u64,
    /// Refused reloads since start.
    pub reload_failures: u64,
    /// The last refused reload (when, which content, why), while the file
    /// is not a version that runs; cleared when a new version goes in or the
    /// running version's file is put back (`history` keeps it).
    pub last_error: Option<ReloadEvent>,
    /// Whether the file is missing (the running version keeps serving).
    pub file_missing: bool,
    /// The last reload events, oldest first.
    pub history: VecDeque<ReloadEvent>,
    #[serde(skip)]
    refused_content: Option<[u8; 32]>,
}

/// One reload attempt.
#[derive(Debug, Clone, Serialize)]
pub struct ReloadEvent {
    /// When (RFC 3339).
    pub at: String,
    /// Version of the file that was tried.
    pub version: String,
    /// `None` when it went in; the reason it was refused otherwise.
    pub error: Option<String>,
}

fn now_rfc3339() -> String {
    chrono::DateTime::<chrono::Utc>::from(SystemTime::now())
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

impl PluginSlot {
    /// A slot whose running version is `plugin`.
    pub fn new(plugin: Plugin) -> Arc<Self> {
        let status = PluginStatus {
            name: plugin.name.clone(),
            path: plugin.path.clone(),
            version: plugin.version.clone(),
            since: now_rfc3339(),
            from_cache: plugin.origin == Origin::Cached,
            load_ms: plugin.load_time.as_secs_f64() * 1e3,
            reloads: 0,
            reload_failures: 0,
            last_error: None,
            file_missing: false,
            history: VecDeque::new(),
            refused_content: None,
        };
        Arc::new(PluginSlot {
            path: plugin.path.clone(),
            current: ArcSwap::from_pointee(plugin),
            uses: Mutex::new(Vec::new()),
            status: Mutex::new(status),
        })
    }

    /// The running version.
    pub fn current(&self) -> Arc<Plugin> {
        self.current.load_full()
    }

    /// Whether `plugin` is the running version (cheap: a pointer compare).
    pub fn is_current(&self, plugin: &Arc<Plugin>) -> bool {
        Arc::ptr_eq(&self.current.load(), plugin)
    }

    /// Sets the stages that run this plugin, with their config. When they
    /// change, a file refused before (perhaps for a config it now has) is tried
    /// again at the next look.
    pub fn set_uses(&self, uses: Vec<StageUse>) {
        let mut current = self.uses.lock().expect("uses lock");
        let same = current.len() == uses.len()
            && current.iter().zip(&uses).all(|(a, b)| {
                a.pipeline == b.pipeline
                    && a.stage == b.stage
                    && a.config == b.config
                    && a.limits == b.limits
            });
        if !same {
            self.status.lock().expect("status lock").refused_content = None;
        }
        *current = uses;
    }

    /// A copy of the status.
    pub fn status(&self) -> PluginStatus {
        self.status.lock().expect("status lock").clone()
    }

    /// Loads the file again if its content changed, and swaps the new version
    /// in when it compiles, links and accepts every stage's config.
    ///
    /// Returns whether a new version went in.
    pub fn reload(&self, host: &PluginHost) -> bool {
        let bytes = match crate::wasm::compile_cache::read_regular(&self.path) {
            Ok(bytes) => bytes,
            Err(e) => {
                let mut status = self.status.lock().expect("status lock");
                if !status.file_missing {
                    status.file_missing = true;
                    tracing::warn!(
                        plugin = %status.name,
                        version = %status.version,
                        path = %self.path.display(),
                        "plugin file is gone ({e}); the running version keeps serving"
                    );
                }
                return false;
            }
        };
        let content: [u8; 32] = Sha256::digest(&bytes).into();
        {
            let mut status = self.status.lock().expect("status lock");
            status.file_missing = false;
            if content == self.current.load().content {
                // The running version's file is back (a refused file was
                // replaced by it): nothing is wrong any more. The history
                // keeps the refusal.
                if status.last_error.take().is_some() {
                    status.refused_content = None;
                    tracing::info!(
                        plugin = %status.name,
                        version = %status.version,
                        "plugin file is the running version again"
                    );
                }
                return false;
            }
            if status.refused_content == Some(content) {
                return false;
            }
        }
        let old = self.current();
        let version = crate::wasm::compile_cache::hex(&content[..6]);
        tracing::info!(plugin = %old.name, from = %old.version, to = %version, "plugin changed: loading");
        match self.prepare(host, &bytes) {
            Ok(plugin) => {
                let plugin = Arc::new(plugin);
                let mut guard = self.status.lock().expect("status lock");
                let status = &mut *guard;
                status.version = plugin.version.clone();
                status.since = now_rfc3339();
                status.from_cache = plugin.origin == Origin::Cached;
                status.load_ms = plugin.load_time.as_secs_f64() * 1e3;
                status.reloads += 1;
                status.refused_content = None;
                status.last_error = None;
                push_history(
                    &mut status.history,
                    ReloadEvent {
                        at: status.since.clone(),
                        version: plugin.version.clone(),
                        error: None,
                    },
                );
                // In before the line that says so (a reader of the log may
                // send the next record as soon as it sees it).
                self.current.store(plugin.clone());
                tracing::info!(
                    plugin = %plugin.name,
                    from = %old.version,
                    to = %plugin.version,
                    load_ms = format!("{:.1}", status.load_ms),
                    cached = status.from_cache,
                    "plugin reloaded: partitions switch at their next batch"
                );
                true
            }
            Err(reason) => {
                let mut status = self.status.lock().expect("status lock");
                status.reload_failures += 1;
                status.refused_content = Some(content);
                let event = ReloadEvent {
                    at: now_rfc3339(),
                    version: version.clone(),
                    error: Some(reason.clone()),
                };
                status.last_error = Some(event.clone());
                push_history(&mut status.history, event);
                tracing::error!(
                    plugin = %old.name,
                    running = %old.version,
                    refused = %version,
                    "plugin reload refused, version {} keeps serving: {reason}",
                    old.version
                );
                false
            }
        }
    }

    /// Compiles, links and configures a new version once per stage using it.
    fn prepare(&self, host: &PluginHost, bytes: &[u8]) -> Result<Plugin, String> {
        let plugin = host
            .load_bytes(&self.path, bytes)
            .map_err(|e| one_line(&format!("{e:#}")))?;
        let running = self.current().world();
        if plugin.world() != running {
            return Err(format!(
                "{} is a {} component; the running version is a {running}, and the pipelines use it as one",
                self.path.display(),
                plugin.world()
            ));
        }
        let uses = self.uses.lock().expect("uses lock").clone();
        for stage in &uses {
            let tags = LogTags {
                pipeline: stage.pipeline.clone(),
                stage: stage.stage.clone(),
                plugin: plugin.name.clone(),
                version: plugin.version.clone(),
                partition: 0,
            };
            let fails = |e: crate::wasm::plugin::CallError| {
                format!(
                    "pipeline `{}` stage {}: fails to start: {e}",
                    stage.pipeline, stage.stage
                )
            };
            let mut instance = plugin
                .instantiate(&stage.config, stage.limits, tags)
                .map_err(fails)?;
            if plugin.world() == crate::wasm::plugin::World::Aggregator {
                instance.create().map_err(fails)?;
            }
        }
        Ok(plugin)
    }
}

/// `text` with its line breaks and runs of blanks made single spaces, for a
/// log line or a status field (wasmtime's errors can span lines).
pub fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn push_history(history: &mut VecDeque<ReloadEvent>, event: ReloadEvent) {
    if history.len() == HISTORY {
        history.pop_front();
    }
    history.push_back(event);
}

/// The JSON status of every plugin, as written to `STATE_DIR/status.json`.
#[derive(Debug, Serialize)]
pub struct Status {
    /// One entry per plugin file, by path.
    pub plugins: Vec<PluginStatus>,
}

/// Writes the status of `slots` to `path` (temporary file + rename).
///
/// # Errors
/// The file cannot be written.
pub fn write_status(path: &Path, slots: &[Arc<PluginSlot>]) -> std::io::Result<()> {
    let status = Status {
        plugins: slots.iter().map(|s| s.status()).collect(),
    };
    let json = serde_json::to_vec_pretty(&status).map_err(std::io::Error::other)?;
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    std::io::Write::write_all(&mut tmp, &json)?;
    // Readable by a monitoring agent running as another user.
    std::fs::set_permissions(
        tmp.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// Watches the folders of the plugin files and reloads changed ones; stops when
/// dropped.
#[derive(Debug)]
pub struct Reloader {
    stop: Arc<AtomicBool>,
    /// The watcher's event channel: a message on it wakes the thread at
    /// once when it is told to stop (instead of at its next timeout, up to
    /// 200 ms, which every daemon's exit waited for).
    wake: std::sync::mpsc::Sender<notify::Result<notify::Event>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Reloader {
    /// Starts watching. `status` is the file the status is written to after
    /// every reload attempt (and once now).
    ///
    /// # Errors
    /// The watcher thread cannot be spawned (inotify limits are not an error:
    /// they are logged, and the folder is retried every [`RESCAN`]).
    pub fn start(
        host: PluginHost,
        slots: Vec<Arc<PluginSlot>>,
        status: Option<PathBuf>,
    ) -> std::io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        if let Some(path) = &status
            && let Err(e) = write_status(path, &slots)
        {
            tracing::warn!(path = %path.display(), "cannot write the status file: {e}");
        }
        let (wake, events) = std::sync::mpsc::channel();
        let tx = wake.clone();
        let thread = std::thread::Builder::new()
            .name("sluice-reload".into())
            .spawn(move || watch_loop(&host, &slots, status.as_deref(), &flag, (tx, events)))?;
        Ok(Reloader {
            stop,
            wake,
            thread: Some(thread),
        })
    }
}

impl Drop for Reloader {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.wake.send(Ok(notify::Event::default()));
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Whether an event can mean new content (our own reads raise `Access(Open)` and
/// `Access(Close(Read))`, which must not trigger a reload).
fn may_change_content(kind: &EventKind) -> bool {
    matches!(
        kind,
        EventKind::Create(_)
            | EventKind::Remove(_)
            | EventKind::Modify(ModifyKind::Data(_) | ModifyKind::Name(_) | ModifyKind::Any)
            | EventKind::Access(AccessKind::Close(AccessMode::Write))
            | EventKind::Any
    )
}

/// A watched folder: whether inotify watches it now, and which inode.
struct Folder {
    watched: Option<u64>,
    /// The folder as the watcher names it in events (absolute, symlinks
    /// resolved), set when it is watched.
    canonical: Option<PathBuf>,
    slots: Vec<usize>,
}

fn inode(path: &Path) -> Option<u64> {
    use std::os::unix::fs::MetadataExt as _;
    std::fs::metadata(path)
        .ok()
        .filter(|m| m.is_dir())
        .map(|m| m.ino())
}

fn watch_loop(
    host: &PluginHost,
    slots: &[Arc<PluginSlot>],
    status: Option<&Path>,
    stop: &AtomicBool,
    (tx, rx): (
        std::sync::mpsc::Sender<notify::Result<notify::Event>>,
        std::sync::mpsc::Receiver<notify::Result<notify::Event>>,
    ),
) {
    let mut watcher = match notify::recommended_watcher(tx) {
        Ok(w) => w,
        Err(e) => {
            tracing::error!("cannot watch the plugins folder, hot reload is off: {e}");
            return;
        }
    };
    // The folders to watch, and the slots of the files in each.
    let mut folders: BTreeMap<PathBuf, Folder> = BTreeMap::new();
    for (i, slot) in slots.iter().enumerate() {
        let Some(dir) = slot.path.parent() else {
            continue;
        };
        folders
            .entry(dir.to_path_buf())
            .or_insert(Folder {
                watched: None,
                canonical: None,
                slots: Vec::new(),
            })
            .slots
            .push(i);
    }
    let mut pending: BTreeMap<usize, Instant> = BTreeMap::new();
    let mut next_rescan = Instant::now();
    // Where each plugin path leads (symlinks resolved): a symlink retargeted
    // (as Kubernetes swaps a ConfigMap's `..data`) is a change, and the target's
    // folder is watched too, so a target changed in place is seen.
    let mut targets: Vec<Option<PathBuf>> = vec![None; slots.len()];
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        if now >= next_rescan {
            next_rescan = now + RESCAN;
            for (i, slot) in slots.iter().enumerate() {
                let target = std::fs::canonicalize(&slot.path).ok();
                if target != targets[i] {
                    if targets[i].is_some() {
                        pending.insert(i, now);
                    }
                    if let Some(dir) = target.as_deref().and_then(Path::parent) {
                        folders.entry(dir.to_path_buf()).or_insert(Folder {
                            watched: None,
                            canonical: None,
                            slots: Vec::new(),
                        });
                    }
                    targets[i] = target;
                }
            }
            for (dir, folder) in &mut folders {
                let ino = inode(dir);
                if ino == folder.watched {
                    continue;
                }
                // Gone, replaced, or new: watch what is there now, and look at
                // every file in it, since events may have been missed.
                if folder.watched.take().is_some() {
                    let _ = watcher.unwatch(dir);
                }
                if ino.is_some() {
                    match watcher.watch(dir, RecursiveMode::NonRecursive) {
                        Ok(()) => {
                            folder.watched = ino;
                            folder.canonical = std::fs::canonicalize(dir).ok();
                        }
                        Err(e) => tracing::warn!(
                            folder = %dir.display(),
                            "cannot watch the plugins folder (retrying every {RESCAN:?}): {e}"
                        ),
                    }
                }
                for &i in &folder.slots {
                    pending.insert(i, now);
                }
            }
        }
        let wait = pending
            .values()
            .map(|t| (*t + DEBOUNCE).saturating_duration_since(now))
            .min()
            .unwrap_or(RESCAN)
            .min(next_rescan.saturating_duration_since(now))
            .min(Duration::from_millis(200));
        let received = rx.recv_timeout(wait);
        if stop.load(Ordering::Relaxed) {
            return;
        }
        if let Ok(Ok(event)) = &received {
            tracing::trace!(kind = ?event.kind, paths = ?event.paths, "plugin folder event");
        }
        match received {
            Ok(Ok(event)) if may_change_content(&event.kind) => {
                for path in &event.paths {
                    for (i, target) in targets.iter().enumerate() {
                        if target.as_deref() == Some(path.as_path()) {
                            pending.insert(i, Instant::now());
                        }
                    }
                    for (dir, folder) in &folders {
                        let names_folder =
                            |p: &Path| p == dir.as_path() || folder.canonical.as_deref() == Some(p);
                        if names_folder(path) {
                            // The folder itself moved or went: look again now.
                            next_rescan = Instant::now();
                        } else if path.parent().is_some_and(names_folder) {
                            for &i in &folder.slots {
                                if slots[i].path.file_name() == path.file_name() {
                                    pending.insert(i, Instant::now());
                                }
                            }
                        }
                    }
                }
            }
            Ok(Ok(_)) | Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            Ok(Err(e)) => tracing::warn!("plugin folder watcher: {e}"),
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return,
        }
        let now = Instant::now();
        let due: Vec<usize> = pending
            .iter()
            .filter(|(_, t)| now.duration_since(**t) >= DEBOUNCE)
            .map(|(i, _)| *i)
            .collect();
        if due.is_empty() {
            continue;
        }
        for i in due {
            pending.remove(&i);
            slots[i].reload(host);
        }
        if let Some(path) = status
            && let Err(e) = write_status(path, slots)
        {
            tracing::warn!(path = %path.display(), "cannot write the status file: {e}");
        }
    }
}

/// Calls `changed` when the file at `path` may have new content (written,
/// replaced by a rename, created), once per burst of events ([`WATCH_QUIET`]).
/// Watches the file's folder, so an editor that saves by renaming a new file
/// over it is seen too. Stops when the watcher returned is dropped.
///
/// # Errors
/// The folder cannot be watched.
pub fn watch_file(
    path: &Path,
    changed: impl Fn() + Send + 'static,
) -> notify::Result<notify::RecommendedWatcher> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let canonical_dir = std::fs::canonicalize(&dir)?;
    let name = path.file_name().map(|n| n.to_os_string());
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if let Ok(event) = event
            && may_change_content(&event.kind)
            && event.paths.iter().any(|p| {
                p.file_name().map(|n| n.to_os_string()) == name
                    && p.parent() == Some(canonical_dir.as_path())
            })
        {
            let _ = tx.send(());
        }
    })?;
    watcher.watch(&dir, RecursiveMode::NonRecursive)?;
    // One call per burst: a save is often several events (`sed -i` and
    // editors write a temporary file and rename it over: a rename seen as
    // "from", "to" and "both"). Ends when the watcher (and its sender) is
    // dropped.
    std::thread::Builder::new()
        .name("sluice-watch-file".into())
        .spawn(move || {
            while rx.recv().is_ok() {
                loop {
                    match rx.recv_timeout(WATCH_QUIET) {
                        Ok(()) => {}
                        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => break,
                        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return,
                    }
                }
                changed();
            }
        })
        .map_err(notify::Error::io)?;
    Ok(watcher)
}

/// How long [`watch_file`] waits for a burst of events to end before it
/// reports one change.
pub const WATCH_QUIET: Duration = Duration::from_millis(100);
