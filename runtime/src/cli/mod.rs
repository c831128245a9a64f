//! The `sluice` command line: one file per command; `main.rs` only parses
//! and dispatches.

use std::path::Path;
use std::process::ExitCode;

use sluice::config::Config;
use sluice::topology::Topology;
use sluice::wasm::plugin::PluginHost;
use tracing_subscriber::EnvFilter;

pub mod checkpoints;
pub mod plugin;
pub mod run;
pub mod tap;
pub mod top;
pub mod validate;

/// Exit code of a config error (as sysexits' EX_USAGE is 64, but `2` is what
/// clap and most daemons use for bad usage).
pub const EXIT_CONFIG: u8 = 2;

/// What `sluice run` sets up from the config before the topology is built.
pub struct Startup<'a> {
    /// The config's `[daemon] log_level` applies from here on (before the
    /// plugins compile).
    log_level: &'a LogLevel,
    /// The OTLP exporters, when `[daemon.telemetry] otlp_endpoint` is set.
    telemetry: &'a mut Option<sluice::obs::telemetry::Telemetry>,
}

/// Parses and builds the config; on error prints it and gives the exit code.
pub fn load(path: &Path, startup: Option<Startup<'_>>) -> Result<(Topology, PluginHost), ExitCode> {
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
            && sluice::obs::telemetry::check_endpoint(endpoint.get_ref()).is_ok()
        {
            match sluice::obs::telemetry::init(
                endpoint.get_ref(),
                telemetry.export_interval,
                telemetry
                    .ca_file
                    .as_ref()
                    .map(|f| sluice::config::resolve(&Config::base_dir(&source), f.get_ref()))
                    .as_deref(),
            ) {
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
        .with_compile_cache(
            &sluice::config::state_dir(&config, &source),
            config.daemon.compile_cache_max,
        );
    let topology = Topology::build(&config, &source, &host, &[]).map_err(|e| {
        eprintln!("error: {e}");
        ExitCode::from(EXIT_CONFIG)
    })?;
    Ok((topology, host))
}

/// Replaces the log filter once the config is read.
pub type LogLevel = tracing_subscriber::reload::Handle<EnvFilter, tracing_subscriber::Registry>;

/// Logs to stderr, one line per event (journald-friendly), no colours unless
/// stderr is a terminal, or one JSON object per event. The level is `RUST_LOG`
/// when set, else `info` until the config's `[daemon] log_level` is read (see
/// [`set_log_level`]).
pub fn init_logging(json: bool) -> LogLevel {
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
