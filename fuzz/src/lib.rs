//! What the fuzz targets (`fuzz_targets/`) share: the libFuzzer entry point,
//! and topologies built from fixed configs.
//!
//! A fuzzed config is "in" the folder [`files`], which holds a few input
//! files its sources may name (`in.ndjson`, `in.ndjson.gz`, `in.csv`,
//! `logs/a.log`); its plugins are looked up under [`NOWHERE`], a folder that
//! does not exist, so that no plugin is ever loaded.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use sluice::checkpoint::{STORE_FILE, Store};
use sluice::config::{Config, ConfigSource};
use sluice::pipeline::PipelineSpec;
use sluice::topology::Topology;
use sluice::wasm::plugin::PluginHost;
use sluice::window::operator::{WindowMsg, WindowSnapshot, WindowSpec};

/// A folder that does not exist: the fuzzed configs' `plugins_dir`.
pub const NOWHERE: &str = "/nonexistent/sluice-fuzz";

/// Defines a target: `fuzz_target!(|data| body)` runs `body` on each input
/// libFuzzer makes (`data: &[u8]`). A panic that leaves `body` aborts the
/// process (see [`run_input`]), which libFuzzer reports as a crash and saves
/// the input of.
#[macro_export]
macro_rules! fuzz_target {
    (|$data:ident| $body:expr) => {
        /// libFuzzer's entry point.
        ///
        /// # Safety
        /// `data` points to `size` readable bytes (or `size` is 0).
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn LLVMFuzzerTestOneInput(data: *const u8, size: usize) -> i32 {
            let input: &[u8] = if size == 0 {
                &[]
            } else {
                // SAFETY: libFuzzer passes `size` readable bytes at `data`,
                // unchanged during the call.
                unsafe { std::slice::from_raw_parts(data, size) }
            };
            $crate::run_input(input, |$data: &[u8]| {
                $body;
            });
            0
        }
    };
}

thread_local! {
    /// Whether this thread is running an input (see [`run_input`]).
    static IN_INPUT: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    /// The message and backtrace of this thread's last panic.
    static LAST_PANIC: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
}

/// Runs `body` on `input`; a panic out of it is printed (message and
/// backtrace) and aborts the process. A panic that the code under test
/// catches itself (`catch_unwind`, as the checkpoint store does around
/// redb) is no crash and prints nothing; one on another thread aborts at
/// once.
pub fn run_input(input: &[u8], body: impl FnOnce(&[u8])) {
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        std::panic::set_hook(Box::new(|info| {
            let report = format!("{info}\n{}", std::backtrace::Backtrace::force_capture());
            if IN_INPUT.get() {
                LAST_PANIC.set(report);
            } else {
                eprintln!("panic outside the fuzzed call: {report}");
                std::process::abort();
            }
        }));
    });
    IN_INPUT.set(true);
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| body(input)));
    IN_INPUT.set(false);
    if result.is_err() {
        eprintln!("panic: {}", LAST_PANIC.take());
        std::process::abort();
    }
}

/// With `SLUICE_FUZZ_DEBUG` set, prints `what` (why an input was refused,
/// say): for running a target on one input by hand.
pub fn debug(what: impl std::fmt::Display) {
    static ON: OnceLock<bool> = OnceLock::new();
    if *ON.get_or_init(|| std::env::var_os("SLUICE_FUZZ_DEBUG").is_some()) {
        eprintln!("{what}");
    }
}

/// The daemon's plugin host, made once (no plugin is ever loaded: every
/// plugin file is under [`NOWHERE`]).
pub fn plugin_host() -> &'static PluginHost {
    static HOST: OnceLock<PluginHost> = OnceLock::new();
    HOST.get_or_init(|| PluginHost::new().expect("a plugin host"))
}

/// The folder a fuzzed config is in, with the input files its sources may
/// name (made once; the same path in every process, so that a checkpoint
/// seed's source matches).
pub fn files() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join("sluice-fuzz-files");
        let line = b"{\"k\":\"a\",\"t\":1700000000000,\"v\":1}\n";
        // A gzip member of no data: the magic bytes are what is checked.
        let gzip: &[u8] = &[
            0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        ];
        let contents: [(&str, &[u8]); 7] = [
            ("in.ndjson", line),
            ("in.ndjson.gz", gzip),
            ("in.csv", b"a,b,c\n1,2.5,true\n"),
            ("logs/a.log", b"<13>Oct 11 22:14:15 host app: x\n"),
            ("tumbling.ndjson", line),
            ("sliding.ndjson", line),
            ("session.ndjson", line),
        ];
        for (name, bytes) in contents {
            let path = dir.join(name);
            if !path.is_file() {
                std::fs::create_dir_all(path.parent().expect("a folder")).expect("the files");
                std::fs::write(&path, bytes).expect("an input file");
            }
        }
        dir
    })
}

/// `text` as a config file in [`files`].
pub fn config_source(text: &str) -> ConfigSource {
    ConfigSource {
        file: files().join("sluice.toml"),
        text: text.to_string(),
        written: None,
    }
}

/// Parses `source` and builds its topology as `sluice validate` does, with
/// every plugin path under [`NOWHERE`] (so that none is read).
///
/// # Errors
/// The located error, as `sluice validate` prints it.
pub fn build(source: &ConfigSource) -> Result<Topology, String> {
    let mut config = Config::parse(source).map_err(|e| e.to_string())?;
    // Plugin paths are relative to plugins_dir unless absolute: make them all
    // relative to a folder that does not exist.
    *config.daemon.plugins_dir.get_mut() = Path::new(NOWHERE).join("plugins");
    let relative = |p: &mut String| *p = p.trim_start_matches('/').to_string();
    for pipeline in config.pipelines.values_mut() {
        let pipeline = pipeline.get_mut();
        for processor in &mut pipeline.processors {
            // Built-in stages (`join`, `dedup`) have no plugin.
            if let Some(plugin) = &mut processor.plugin {
                relative(plugin.get_mut());
            }
        }
        if let Some(aggregate) = &mut pipeline.aggregate {
            for a in aggregate.get_mut() {
                if let Some(plugin) = &mut a.plugin {
                    relative(plugin.get_mut());
                }
            }
        }
    }
    Topology::build(&config, source, plugin_host(), &[]).map_err(|e| e.to_string())
}

/// A fixed config's topology, built once per process.
///
/// # Panics
/// The config does not build: a bug of the target.
pub fn fixed(cell: &'static OnceLock<Topology>, text: &str) -> &'static Topology {
    cell.get_or_init(|| build(&config_source(text)).unwrap_or_else(|e| panic!("{e}\n{text}")))
}

/// The pipelines the window targets run, one per window kind and grouping,
/// each reading a file of its own (so that it is checkpointed) and
/// aggregating with every built-in function (`approx_count_distinct`, whose
/// state is large, in the tumbling windows only).
pub fn windowed() -> &'static [PipelineSpec] {
    static TOPOLOGY: OnceLock<Topology> = OnceLock::new();
    const AGGREGATES: &str = r#"[
  { op = "count" },
  { op = "count", field = "/v", as = "values" },
  { op = "sum", field = "/v" },
  { op = "avg", field = "/v" },
  { op = "min", field = "/v" },
  { op = "max", field = "/s" },
  { op = "first", field = "/s" },
  { op = "last", field = "/v" },
  { op = "count_distinct", field = "/s" },
]"#;
    let mut text = String::from(
        "[daemon]\nadmin = \"off\"\n\n[sinks.out]\ntype = \"blackhole\"\n\n[sinks.dead]\ntype = \"blackhole\"\n",
    );
    let approx = AGGREGATES.replace(
        "\n]",
        "\n  { op = \"approx_count_distinct\", field = \"/s\" },\n]",
    );
    for (name, window, group_by, aggregates) in [
        (
            "tumbling",
            r#"kind = "tumbling", size = "1m""#,
            r#""key""#,
            approx.as_str(),
        ),
        (
            "sliding",
            r#"kind = "sliding", size = "1m", slide = "20s""#,
            r#"["/g", "/h/0"]"#,
            AGGREGATES,
        ),
        (
            "session",
            r#"kind = "session", gap = "30s""#,
            r#""key""#,
            AGGREGATES,
        ),
    ] {
        text.push_str(&format!(
            r#"
[sources.{name}]
type = "file"
path = "{name}.ndjson"
key = "/k"
timestamp = "/t"

[pipelines.{name}]
source = "{name}"
partitions = 2
sinks = ["out"]
dead_letter = "dead"
checkpoint = {{ interval = "1s" }}
window = {{ {window}, watermark = "5s", allowed_lateness = "10s", group_by = {group_by} }}
aggregate = {aggregates}
"#
        ));
    }
    &fixed(&TOPOLOGY, &text).pipelines
}

/// Runs the window operator of `spec` (2 partitions, no sink) on `inputs`,
/// from `restore`, to the end of its input: every window is emitted.
///
/// # Errors
/// What the operator returns, as text.
pub fn run_window(
    spec: &WindowSpec,
    inputs: Vec<WindowMsg>,
    restore: Option<WindowSnapshot>,
) -> Result<(), String> {
    let (tx, rx) = flume::unbounded();
    for input in inputs {
        tx.send(input).expect("the receiver is here");
    }
    drop(tx);
    let dead_letter = sluice::sink::dead_letter::DeadLetter::new("fuzz", None);
    let stats = std::sync::Arc::new(sluice::stats::Stats::default());
    sluice::window::operator::run(
        "fuzz",
        spec,
        2,
        rx,
        &[],
        &dead_letter,
        &stats,
        restore,
        false,
        false,
    )
    .map_err(|e| format!("{e:#}"))
}

/// A folder of this process's own for files a target writes:
/// `SLUICE_FUZZ_SCRATCH` (`cargo xtask fuzz` sets one in /dev/shm), else
/// one in the temporary folder.
pub fn scratch() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let base = std::env::var_os("SLUICE_FUZZ_SCRATCH")
            .map(PathBuf::from)
            .unwrap_or_else(std::env::temp_dir);
        let dir = base.join(format!("sluice-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a scratch folder");
        dir
    })
}

/// The state folder the checkpoint targets read (in [`scratch`]).
pub fn state_dir() -> PathBuf {
    let state = scratch().join("state");
    std::fs::create_dir_all(&state).expect("the state folder");
    state
}

/// The checkpoint store's table, as `checkpoint::Store` names it: pipeline
/// name → the JSON of its checkpoint.
const TABLE: redb::TableDefinition<'_, &str, &[u8]> = redb::TableDefinition::new("checkpoints");

/// Makes `STATE/checkpoints.redb` a sound store whose one row is `row`, for
/// pipeline `name`.
pub fn write_store_row(state: &Path, name: &str, row: &[u8]) {
    let file = state.join(STORE_FILE);
    let _ = std::fs::remove_file(&file);
    let db = redb::Database::create(&file).expect("a new store");
    let tx = db.begin_write().expect("a write transaction");
    {
        let mut table = tx.open_table(TABLE).expect("the table");
        table.insert(name, row).expect("the row");
    }
    tx.commit().expect("the commit");
}

/// Does what a daemon restarted on `state` does with its checkpoint store,
/// for the pipelines of [`windowed`]: opens it, lists it, loads each
/// pipeline's checkpoint and checks it fits, and restores its window state
/// into the window operator, which runs to the end (emitting every window).
/// Errors are fine; a panic is not.
pub fn resume_from(state: &Path) {
    let store = match Store::open(state) {
        Ok(store) => store,
        Err(e) => return debug(format_args!("{e:#}")),
    };
    match store.list() {
        Ok(rows) => {
            for (name, checkpoint) in rows {
                if let Err(e) = checkpoint {
                    debug(format_args!("{name}: {e:#}"));
                }
            }
        }
        Err(e) => debug(format_args!("{e:#}")),
    }
    for pipeline in windowed() {
        let checkpoint = match pipeline.load_checkpoint(&store) {
            Ok(Some(checkpoint)) => checkpoint,
            Ok(None) => continue,
            Err(e) => {
                debug(format_args!("{e:#}"));
                continue;
            }
        };
        let spec = pipeline.window.as_ref().expect("a windowed pipeline");
        for snapshot in checkpoint
            .window
            .into_iter()
            .chain(checkpoint.tasks.into_values())
        {
            run_window(spec, Vec::new(), Some(snapshot)).expect("no sink to fail");
        }
        debug(format_args!("{}: restored", pipeline.name));
    }
}
