//! The `sluice` command line.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use sluice::config::Config;
use sluice::daemon::Signals;
use sluice::plugin::{Limits, PluginHost};
use sluice::topology::Topology;
use tracing_subscriber::EnvFilter;

/// sluice: stream processing with WebAssembly plugins.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// Log format on stderr: `plain` (one line per event, journald-friendly;
    /// colours only on a terminal) or `json` (one JSON object per event).
    /// Level from `RUST_LOG`, else the config's `[daemon] log_level`.
    #[arg(long, global = true, default_value = "plain", value_parser = ["plain", "json"])]
    log_format: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the pipelines of a config file until their sources end, or until
    /// SIGINT/SIGTERM (then drain in-flight batches, flush sinks, exit 0).
    Run {
        /// The config file (TOML).
        #[arg(short, long)]
        config: PathBuf,
        /// Reload the config when the file changes (as on SIGHUP).
        #[arg(long)]
        watch_config: bool,
    },
    /// Check a config file: parse it, resolve every name, compile every plugin and
    /// configure one instance of each stage. Starts nothing.
    Validate {
        /// The config file (TOML).
        #[arg(short, long)]
        config: PathBuf,
    },
    /// List the pipelines' checkpoints in the config's state directory
    /// (position, open windows, sink lengths), or forget one with --reset so
    /// the pipeline starts from the beginning of its input. Run it while the
    /// daemon is stopped (the store is locked while it runs).
    Checkpoints {
        /// The config file (TOML).
        #[arg(short, long)]
        config: PathBuf,
        /// Forget this pipeline's checkpoint.
        #[arg(long, value_name = "PIPELINE")]
        reset: Option<String>,
    },
    /// A live view of a running daemon, read from its admin API: each
    /// pipeline's counters and rates (records/s between two samples), each
    /// plugin's version and reloads. Exit 1 if the daemon cannot be reached.
    Top {
        /// The admin API's address (`HOST:PORT`); default: the config's
        /// `[daemon] admin` with `--config`, else 127.0.0.1:9464.
        #[arg(long)]
        admin: Option<String>,
        /// Read the admin address from this config file.
        #[arg(short, long)]
        config: Option<PathBuf>,
        /// Time between samples (the rates are over it), e.g. `2s`.
        #[arg(long, default_value = "1s", value_parser = parse_interval)]
        interval: std::time::Duration,
        /// Print one view (two samples, `--interval` apart) and exit.
        #[arg(long)]
        once: bool,
    },
    /// Work with plugin components.
    Plugin {
        #[command(subcommand)]
        command: PluginCommand,
    },
}

#[derive(Debug, Subcommand)]
enum PluginCommand {
    /// Print a component's world, exports and imports, and whether this daemon
    /// can run it (compile, link, processor world, `configure`). Exit 0 if it
    /// can, 1 if not.
    Check {
        /// The component (`.wasm`).
        file: PathBuf,
        /// A setting passed to `configure`, as NAME=VALUE; repeatable.
        #[arg(long = "config", value_name = "NAME=VALUE", value_parser = parse_setting)]
        config: Vec<(String, String)>,
    },
    /// Write a ready-to-build plugin project (the "tag" processor) from a
    /// template: source, build.sh, README, sample events, wit/plugin.wit.
    New {
        /// The plugin name (lower-case letters, digits, `_`, `-`).
        name: String,
        /// rust | python | js | c.
        #[arg(long, default_value = "rust")]
        lang: String,
        /// processor (the "tag" processor) | aggregator (a top-n values
        /// aggregator for windows; Rust only).
        #[arg(long, default_value = "processor")]
        kind: String,
        /// Where to write it; default `./NAME`.
        #[arg(long)]
        dir: Option<PathBuf>,
        /// (Rust) the `sluice-plugin-sdk` dependency as a TOML value; default: a
        /// path to this source tree's `plugin-sdk/` when it exists.
        #[arg(long)]
        sdk: Option<String>,
    },
    /// Run a plugin over events read from stdin (one per line), without a
    /// daemon: output values to stdout, rejections and failures to stderr.
    /// Exit 0 when every batch ran (and, with --expect, the output matched).
    Run {
        /// The component (`.wasm`).
        file: PathBuf,
        /// A setting passed to `configure`, as NAME=VALUE; repeatable.
        #[arg(long = "config", value_name = "NAME=VALUE", value_parser = parse_setting)]
        config: Vec<(String, String)>,
        /// JSON pointer to each event's key (as a source's `key`).
        #[arg(long)]
        key: Option<String>,
        /// JSON pointer to each event's time (as a source's `timestamp`);
        /// without it, event time is 0.
        #[arg(long)]
        timestamp: Option<String>,
        /// Events per `process` (or `accumulate`) call.
        #[arg(long, default_value_t = 1024)]
        batch: usize,
        /// Aggregators: JSON pointer to the field each event's value is taken
        /// from (as an aggregate's `field`).
        #[arg(long)]
        field: Option<String>,
        /// Compare the output with this file (one value per line) instead of
        /// printing it; exit 1 on the first difference.
        #[arg(long, value_name = "FILE")]
        expect: Option<PathBuf>,
        /// Per-call deadline, e.g. `1s`.
        #[arg(long, default_value = "1s", value_parser = parse_timeout)]
        timeout: std::time::Duration,
        /// Memory limit of the instance, e.g. `64MiB`.
        #[arg(long, default_value = "64MiB", value_parser = parse_size)]
        memory_limit: u64,
        /// Where compiled plugins are cached; default `$XDG_CACHE_HOME/sluice`
        /// (`~/.cache/sluice`).
        #[arg(long)]
        cache_dir: Option<PathBuf>,
    },
}

fn parse_size(s: &str) -> Result<u64, String> {
    s.parse::<bytesize::ByteSize>()
        .map(|b| b.as_u64())
        .map_err(|e| format!("invalid size {s:?}: {e}"))
}

/// The SDK dependency of a new Rust plugin: this source tree's `plugin-sdk/`
/// when the binary runs where it was built, else the repository.
fn default_sdk() -> String {
    let local = Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugin-sdk");
    match local.canonicalize() {
        Ok(path) => format!("{{ path = {:?} }}", path.display().to_string()),
        Err(_) => format!("{{ git = {:?} }}", env!("CARGO_PKG_REPOSITORY")),
    }
}

/// The user's cache folder for `sluice plugin run`.
fn user_cache_dir() -> Option<PathBuf> {
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .map(|d| d.join("sluice"))
}

fn parse_setting(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .filter(|(k, _)| !k.is_empty())
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("expected NAME=VALUE with a non-empty NAME, got `{s}`"))
}

/// `sluice top`'s interval: 10ms to an hour.
fn parse_interval(s: &str) -> Result<std::time::Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| format!("invalid duration {s:?}: {e}"))?;
    if d < std::time::Duration::from_millis(10) || d > std::time::Duration::from_secs(3600) {
        return Err(format!("{s} is out of range: between 10ms and 1h"));
    }
    Ok(d)
}

/// The admin API's address for `sluice top`.
fn top_address(admin: Option<String>, config: Option<&Path>) -> Result<String, ExitCode> {
    if let Some(admin) = admin {
        return Ok(admin);
    }
    let Some(path) = config else {
        return Ok(sluice::topology::DEFAULT_ADMIN.to_string());
    };
    let (config, _) = Config::load(path).map_err(|e| {
        eprintln!("error: {e}");
        ExitCode::from(EXIT_CONFIG)
    })?;
    match config.daemon.admin.as_ref().map(|a| a.get_ref().as_str()) {
        Some("off") => {
            eprintln!(
                "error: {}: the admin API is off (`[daemon] admin = \"off\"`)",
                path.display()
            );
            Err(ExitCode::from(EXIT_CONFIG))
        }
        Some(addr) => Ok(addr.to_string()),
        None => Ok(sluice::topology::DEFAULT_ADMIN.to_string()),
    }
}

/// A plugin call deadline, within the daemon's bounds (10ms–1h).
fn parse_timeout(s: &str) -> Result<std::time::Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| format!("invalid duration {s:?}: {e}"))?;
    if d < std::time::Duration::from_millis(10) || d > std::time::Duration::from_secs(3600) {
        return Err(format!(
            "{s} is out of range: a plugin timeout is between 10ms and 1h"
        ));
    }
    Ok(d)
}

/// Exit code of a config error (as sysexits' EX_USAGE is 64, but `2` is what
/// clap and most daemons use for bad usage).
const EXIT_CONFIG: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let log_level = init_logging(cli.log_format == "json");
    match cli.command {
        Command::Plugin {
            command: PluginCommand::Check { file, mut config },
        } => {
            let host = match PluginHost::new() {
                Ok(h) => h,
                Err(e) => {
                    eprintln!("error: cannot start the WebAssembly engine: {e:#}");
                    return ExitCode::FAILURE;
                }
            };
            config.sort();
            let report = sluice::inspect::check(&host, &file, &config);
            print!("{}", report.text);
            if report.runnable {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Command::Plugin {
            command:
                PluginCommand::Run {
                    file,
                    mut config,
                    key,
                    timestamp,
                    batch,
                    field,
                    expect,
                    timeout,
                    memory_limit,
                    cache_dir,
                },
        } => plugin_run(
            &file,
            {
                config.sort();
                config
            },
            (key, timestamp, field),
            batch,
            expect,
            Limits {
                memory_bytes: memory_limit,
                timeout,
            },
            cache_dir.or_else(user_cache_dir),
        ),
        Command::Plugin {
            command:
                PluginCommand::New {
                    name,
                    lang,
                    kind,
                    dir,
                    sdk,
                },
        } => {
            let dir = dir.unwrap_or_else(|| PathBuf::from(&name));
            let sdk = sdk.unwrap_or_else(default_sdk);
            let template = match kind.as_str() {
                "processor" => lang.clone(),
                "aggregator" if lang == "rust" => "rust-aggregator".to_string(),
                "aggregator" => {
                    eprintln!("error: aggregator templates exist for Rust only (--lang rust)");
                    return ExitCode::from(EXIT_CONFIG);
                }
                other => {
                    eprintln!("error: --kind {other}: use processor or aggregator");
                    return ExitCode::from(EXIT_CONFIG);
                }
            };
            let next = if kind == "aggregator" {
                "sluice plugin run out/{name}.wasm --field /dest --config n=2 < events.ndjson"
            } else {
                "sluice plugin run out/{name}.wasm --config tag=x < events.ndjson"
            };
            match sluice::plugin_new::create(&name, &template, &dir, &sdk) {
                Ok(files) => {
                    for f in &files {
                        println!("wrote {}", f.display());
                    }
                    println!(
                        "next: cd {} && ./build.sh && {}",
                        dir.display(),
                        next.replace("{name}", &name)
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::from(EXIT_CONFIG)
                }
            }
        }
        Command::Top {
            admin,
            config,
            interval,
            once,
        } => {
            let addr = match top_address(admin, config.as_deref()) {
                Ok(a) => a,
                Err(code) => return code,
            };
            match sluice::top::run(&addr, interval, once) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Validate { config } => match load(&config, None) {
            Ok((topology, _)) => {
                if let Err(e) = check_checkpoints(&topology) {
                    eprintln!("error: {e:#}");
                    return ExitCode::from(EXIT_CONFIG);
                }
                eprintln!(
                    "{}: ok ({} pipeline(s), {} sink(s))",
                    config.display(),
                    topology.pipelines.len(),
                    topology.sinks.len()
                );
                ExitCode::SUCCESS
            }
            Err(code) => code,
        },
        Command::Checkpoints { config, reset } => checkpoints(&config, reset.as_deref()),
        Command::Run {
            config,
            watch_config,
        } => {
            // Signals are caught from here on, before the config is loaded and
            // the plugins compiled (seconds with a cold cache): a SIGHUP during
            // start-up must not kill the daemon (its default action).
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("error: cannot start the async runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let installed = runtime.block_on(async {
                Ok::<_, std::io::Error>((Signals::install()?, Signals::hangups()?))
            });
            let (signals, mut hangups) = match installed {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("error: cannot install the signal handlers: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let mut telemetry = None;
            let startup = Startup {
                log_level: &log_level,
                telemetry: &mut telemetry,
            };
            let (topology, host) = match load(&config, Some(startup)) {
                Ok(t) => t,
                Err(code) => return code,
            };
            let (tx, requests) = tokio::sync::mpsc::unbounded_channel();
            let hup = tx.clone();
            let reload_sender = tx.clone();
            runtime.spawn(async move {
                while hangups.recv().await.is_some() {
                    if hup.send("SIGHUP received").is_err() {
                        break;
                    }
                }
            });
            let _config_watcher = if watch_config {
                match sluice::reload::watch_file(&config, move || {
                    let _ = tx.send("config file changed");
                }) {
                    Ok(w) => Some(w),
                    Err(e) => {
                        eprintln!("error: cannot watch {}: {e}", config.display());
                        return ExitCode::FAILURE;
                    }
                }
            } else {
                None
            };
            let reload_host = host.clone();
            let path = config.clone();
            let reload = sluice::daemon::ConfigReload {
                requests,
                sender: reload_sender,
                rebuild: std::sync::Arc::new(move |running| {
                    let (config, source) = Config::load(&path).map_err(|e| e.to_string())?;
                    Topology::build(&config, &source, &reload_host, running)
                        .map_err(|e| e.to_string())
                }),
            };
            let outcome = runtime.block_on(sluice::daemon::run(
                topology,
                host,
                signals.shutdown(),
                Some(reload),
            ));
            // The last spans and a last collection of the metrics.
            if let Some(telemetry) = telemetry {
                telemetry.shutdown();
            }
            match outcome {
                Ok(outcome) => {
                    for summary in &outcome.summaries {
                        eprintln!("sluice: {summary}");
                    }
                    for e in &outcome.errors {
                        eprintln!("error: {e:#}");
                    }
                    if outcome.errors.is_empty() {
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::FAILURE
                    }
                }
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// `sluice plugin run`.
#[allow(clippy::too_many_arguments)]
fn plugin_run(
    file: &Path,
    config: Vec<(String, String)>,
    (key, timestamp, field): (Option<String>, Option<String>, Option<String>),
    batch: usize,
    expect: Option<PathBuf>,
    limits: Limits,
    cache_dir: Option<PathBuf>,
) -> ExitCode {
    use sluice::decode::{Decoder, Pointer};
    let pointer = |p: Option<String>| p.map(|p| Pointer::parse(&p)).transpose();
    let decoder = match (pointer(key), pointer(timestamp)) {
        (Ok(None), Ok(None)) => None,
        (Ok(k), Ok(t)) => Some(Decoder::new(k, t)),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let field = match pointer(field) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("error: --field: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let expected = match &expect {
        Some(path) => match std::fs::read(path) {
            Ok(b) => Some(b),
            Err(e) => {
                eprintln!("error: cannot read {}: {e}", path.display());
                return ExitCode::from(EXIT_CONFIG);
            }
        },
        None => None,
    };
    let mut host = match PluginHost::new() {
        Ok(h) => h,
        Err(e) => {
            eprintln!("error: cannot start the WebAssembly engine: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(dir) = cache_dir {
        host = host.with_compile_cache(&dir);
    }
    let options = sluice::plugin_run::RunOptions {
        config,
        decoder,
        batch: batch.max(1),
        field,
        limits,
    };
    let stdin = std::io::stdin().lock();
    let mut stdout = std::io::BufWriter::new(std::io::stdout().lock());
    let mut stderr = std::io::stderr().lock();
    let report = match sluice::plugin_run::run(
        &host,
        file,
        &options,
        stdin,
        &mut stdout,
        &mut stderr,
        expected.is_some(),
    ) {
        Ok(r) => r,
        Err(e) => {
            sluice::eprintln_or_drop!("error: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    sluice::eprintln_or_drop!(
        "sluice plugin run: in={} out={} rejected={} failed={} skipped={} broken={}",
        report.records_in,
        report.records_out,
        report.rejected,
        report.failed,
        report.skipped,
        report.broken
    );
    // What the daemon would not pass on (failed batches, undecodable lines,
    // outputs with line breaks) fails the run.
    let mut ok = report.failed == 0 && report.skipped == 0 && report.broken == 0;
    if let (Some(expected), Some(path)) = (&expected, &expect) {
        match sluice::plugin_run::compare(&report.output, expected) {
            None => sluice::eprintln_or_drop!(
                "output matches {} ({} lines)",
                path.display(),
                report.output.len()
            ),
            Some(diff) => {
                sluice::eprintln_or_drop!("output differs from {}: {diff}", path.display());
                ok = false;
            }
        }
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// What `sluice run` sets up from the config before the topology is built.
struct Startup<'a> {
    /// The config's `[daemon] log_level` applies from here on (before the
    /// plugins compile).
    log_level: &'a LogLevel,
    /// The OTLP exporters, when `[daemon.telemetry] otlp_endpoint` is set.
    telemetry: &'a mut Option<sluice::telemetry::Telemetry>,
}

/// `validate`: the checkpoints of the checkpointed pipelines still fit them.
/// Skipped (with a note) while a daemon holds the store.
fn check_checkpoints(topology: &Topology) -> anyhow::Result<()> {
    if topology.pipelines.iter().all(|p| p.checkpoint.is_none()) {
        return Ok(());
    }
    let store = match sluice::checkpoint::Store::open(&topology.state_dir) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("note: checkpoints not checked: {e:#}");
            return Ok(());
        }
    };
    // A Kafka pipeline resumes from its group's offsets and changelog, not
    // from its local checkpoint (see `daemon.rs`).
    for p in topology.pipelines.iter().filter(|p| {
        p.checkpoint.is_some() && !matches!(p.source.input, sluice::source::Input::Kafka(_))
    }) {
        p.load_checkpoint(&store)?;
    }
    Ok(())
}

/// `sluice checkpoints`: list, or reset one.
fn checkpoints(path: &Path, reset: Option<&str>) -> ExitCode {
    let (config, source) = match Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let dir = sluice::config::state_dir(&config, &source);
    let result = (|| -> anyhow::Result<()> {
        let store = sluice::checkpoint::Store::open(&dir)?;
        if let Some(name) = reset {
            let kafka_group = config
                .pipelines
                .get(name)
                .and_then(|p| config.sources.get(p.get_ref().source.get_ref()))
                .filter(|s| s.get_ref().kind == sluice::config::SourceKind::Kafka)
                .map(|s| {
                    s.get_ref()
                        .group_id
                        .as_ref()
                        .map(|g| g.get_ref().clone())
                        .unwrap_or_default()
                });
            if let Some(group) = kafka_group {
                store.remove(name)?;
                println!(
                    "pipeline `{name}` reads Kafka: it resumes from group `{group}`'s committed offsets and its changelog topic, not from a local checkpoint (any was removed). To start it over, give it a new `group_id` and `changelog_topic`."
                );
                return Ok(());
            }
            if store.remove(name)? {
                println!(
                    "pipeline `{name}`: checkpoint removed; it starts from the beginning of its input"
                );
                println!(
                    "note: its file sinks keep what was written; one with `truncate = false` gets the output again after it"
                );
                return Ok(());
            }
            let names: Vec<String> = store.list()?.into_iter().map(|(n, _)| n).collect();
            anyhow::bail!(
                "pipeline `{name}` has no checkpoint in {} (pipelines with one: {})",
                store.path().display(),
                if names.is_empty() {
                    "none".to_string()
                } else {
                    names.join(", ")
                }
            );
        }
        let all = store.list()?;
        if all.is_empty() {
            println!("no checkpoints in {}", store.path().display());
        }
        for (name, checkpoint) in all {
            match checkpoint {
                Ok(c) => println!(
                    "{name}: checkpoint {} at {} — {}{}, {} open window(s), sinks {:?}",
                    c.id,
                    sluice::window_operator::rfc3339(c.taken_at_ms),
                    c.position,
                    if c.finished { " (input finished)" } else { "" },
                    c.window
                        .iter()
                        .chain(c.tasks.values())
                        .map(|w| w.fixed.len() + w.sessions.len())
                        .sum::<usize>(),
                    c.sinks
                ),
                Err(e) => println!("{name}: unreadable checkpoint: {e:#}"),
            }
        }
        Ok(())
    })();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Parses and builds the config; on error prints it and gives the exit code.
fn load(path: &Path, startup: Option<Startup<'_>>) -> Result<(Topology, PluginHost), ExitCode> {
    let (config, source) = Config::load(path).map_err(|e| {
        eprintln!("error: {e}");
        ExitCode::from(EXIT_CONFIG)
    })?;
    if let Some(startup) = startup {
        set_log_level(
            startup.log_level,
            config
                .daemon
                .log_level
                .as_ref()
                .map(|l| l.get_ref().as_str()),
        );
        let telemetry = &config.daemon.telemetry;
        if let Some(endpoint) = &telemetry.otlp_endpoint
            && sluice::telemetry::check_endpoint(endpoint.get_ref()).is_ok()
        {
            match sluice::telemetry::init(endpoint.get_ref(), telemetry.export_interval) {
                Ok(t) => *startup.telemetry = Some(t),
                Err(e) => {
                    eprintln!("error: cannot start the OTLP export: {e:#}");
                    return Err(ExitCode::FAILURE);
                }
            }
        }
    }
    let host = PluginHost::new()
        .map_err(|e| {
            eprintln!("error: cannot start the WebAssembly engine: {e:#}");
            ExitCode::FAILURE
        })?
        .with_compile_cache(&sluice::config::state_dir(&config, &source));
    let topology = Topology::build(&config, &source, &host, &[]).map_err(|e| {
        eprintln!("error: {e}");
        ExitCode::from(EXIT_CONFIG)
    })?;
    Ok((topology, host))
}

/// Replaces the log filter once the config is read.
type LogLevel = tracing_subscriber::reload::Handle<EnvFilter, tracing_subscriber::Registry>;

/// Logs to stderr, one line per event (journald-friendly), no colours unless
/// stderr is a terminal, or one JSON object per event. The level is `RUST_LOG`
/// when set, else `info` until the config's `[daemon] log_level` is read (see
/// [`set_log_level`]).
fn init_logging(json: bool) -> LogLevel {
    use std::io::IsTerminal;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let (filter, handle) = tracing_subscriber::reload::Layer::new(filter);
    let format = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let registry = tracing_subscriber::registry().with(filter);
    if json {
        registry.with(format.json()).init();
    } else {
        registry
            .with(format.with_ansi(std::io::stderr().is_terminal()))
            .init();
    }
    handle
}

/// Applies `[daemon] log_level` unless `RUST_LOG` is set: the environment
/// wins. Invalid directives are left to the topology, which refuses them.
fn set_log_level(handle: &LogLevel, level: Option<&str>) {
    let Some(level) = level else { return };
    if std::env::var_os("RUST_LOG").is_some_and(|v| !v.is_empty()) {
        return;
    }
    if let Ok(filter) = EnvFilter::builder().parse(level) {
        let _ = handle.reload(filter);
    }
}
