//! `sluice plugin check | new | run`: work with plugin components without a daemon.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use sluice::wasm::plugin::{Limits, PluginHost};

use super::EXIT_CONFIG;

/// The `sluice plugin` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum PluginCommand {
    /// Print a component's world, exports and imports, and whether this daemon
    /// can run it (compile, link, processor world, `configure`). Exit 0 if it
    /// can, 1 if not.
    Check {
        /// The component (`.wasm`); `stock/NAME.wasm` is looked up in the
        /// stock plugins' folder when there is no such file here.
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
        /// aggregator for windows: rust, python, js) | keyed (a keyed
        /// processor with a state per key, counting each key's events: rust,
        /// python, js).
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
        /// The component (`.wasm`); `stock/NAME.wasm` is looked up in the
        /// stock plugins' folder when there is no such file here.
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
        /// Keyed processors: a lookup table for the `tables` import, as
        /// NAME=PATH,key=KEY (a `[tables.NAME]`: a CSV file with a header
        /// row, KEY a column; any other file NDJSON, KEY a JSON pointer);
        /// repeatable.
        #[arg(long = "table", value_name = "NAME=PATH,key=KEY", value_parser = parse_table)]
        tables: Vec<(String, PathBuf, String)>,
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

/// Runs one `sluice plugin` subcommand.
pub fn main(command: PluginCommand) -> ExitCode {
    match command {
        PluginCommand::Check { file, mut config } => {
            let file = sluice::wasm::stock::locate(file.clone(), &file);
            let host = match PluginHost::new() {
                Ok(h) => h,
                Err(e) => {
                    eprintln!("error: cannot start the WebAssembly engine: {e:#}");
                    return ExitCode::FAILURE;
                }
            };
            config.sort();
            let report = sluice::wasm::inspect::check(&host, &file, &config);
            print!("{}", report.text);
            if report.runnable {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        PluginCommand::Run {
            file,
            mut config,
            key,
            timestamp,
            batch,
            field,
            tables,
            expect,
            timeout,
            memory_limit,
            cache_dir,
        } => plugin_run(
            &sluice::wasm::stock::locate(file.clone(), &file),
            {
                config.sort();
                config
            },
            (key, timestamp, field),
            batch,
            &tables,
            expect,
            Limits {
                memory_bytes: memory_limit,
                timeout,
            },
            cache_dir.or_else(user_cache_dir),
        ),
        PluginCommand::New {
            name,
            lang,
            kind,
            dir,
            sdk,
        } => new(name, lang, kind, dir, sdk),
    }
}

/// `sluice plugin new`.
fn new(
    name: String,
    lang: String,
    kind: String,
    dir: Option<PathBuf>,
    sdk: Option<String>,
) -> ExitCode {
    let dir = dir.unwrap_or_else(|| PathBuf::from(&name));
    let sdk = sdk.unwrap_or_else(default_sdk);
    let template = match kind.as_str() {
        "processor" => lang.clone(),
        "aggregator" if ["rust", "python", "js"].contains(&lang.as_str()) => {
            format!("{lang}-aggregator")
        }
        "aggregator" => {
            eprintln!("error: aggregator templates exist for rust, python and js");
            return ExitCode::from(EXIT_CONFIG);
        }
        "keyed" if ["rust", "python", "js"].contains(&lang.as_str()) => format!("{lang}-keyed"),
        "keyed" => {
            eprintln!(
                "error: --kind keyed: keyed templates exist for rust, python and js (not {lang})"
            );
            return ExitCode::from(EXIT_CONFIG);
        }
        other => {
            eprintln!("error: --kind {other}: use processor, aggregator or keyed");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let next = match kind.as_str() {
        "aggregator" => {
            "./build.sh && sluice plugin run out/{name}.wasm --field /dest --config n=2 < events.ndjson"
        }
        "keyed" if lang == "rust" => "cargo test && ./build.sh",
        "keyed" if lang == "python" => {
            "python -m pytest && ./build.sh && sluice plugin run out/{name}.wasm --key /user < events.ndjson"
        }
        "keyed" => {
            "node --test && ./build.sh && sluice plugin run out/{name}.wasm --key /user < events.ndjson"
        }
        _ => "./build.sh && sluice plugin run out/{name}.wasm --config tag=x < events.ndjson",
    };
    match sluice::wasm::plugin_new::create(&name, &template, &dir, &sdk) {
        Ok(files) => {
            for f in &files {
                println!("wrote {}", f.display());
            }
            println!(
                "next: cd {} && {}",
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

/// `NAME=PATH,key=KEY` (see `--table`).
fn parse_table(s: &str) -> Result<(String, PathBuf, String), String> {
    let bad = || format!("expected NAME=PATH,key=KEY, got `{s}`");
    let (name, rest) = s
        .split_once('=')
        .filter(|(n, _)| !n.is_empty())
        .ok_or_else(bad)?;
    let (path, key) = rest
        .rsplit_once(",key=")
        .filter(|(p, k)| !p.is_empty() && !k.is_empty())
        .ok_or_else(bad)?;
    Ok((name.to_string(), PathBuf::from(path), key.to_string()))
}

fn parse_setting(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .filter(|(k, _)| !k.is_empty())
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("expected NAME=VALUE with a non-empty NAME, got `{s}`"))
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

/// `sluice plugin run`.
#[allow(clippy::too_many_arguments)]
fn plugin_run(
    file: &Path,
    config: Vec<(String, String)>,
    (key, timestamp, field): (Option<String>, Option<String>, Option<String>),
    batch: usize,
    tables: &[(String, PathBuf, String)],
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
        host = host.with_compile_cache(&dir, sluice::wasm::compile_cache::DEFAULT_MAX_BYTES);
    }
    let tables = match load_tables(tables) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: --table {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let options = sluice::wasm::plugin_run::RunOptions {
        config,
        decoder,
        batch: batch.max(1),
        field,
        limits,
        tables,
    };
    let stdin = std::io::stdin().lock();
    let mut stdout = std::io::BufWriter::new(std::io::stdout().lock());
    let mut stderr = std::io::stderr().lock();
    // A keyed processor runs on the pipeline's keyed state; the others as
    // the wasm module runs them.
    let ran = host.load(file).and_then(|plugin| {
        if options.tables.is_some() && plugin.world() != sluice::wasm::plugin::World::Keyed {
            anyhow::bail!(
                "--table is for keyed processors (the `tables` import of the keyed-processor world); {} is a {}",
                plugin.name,
                plugin.world()
            );
        }
        if plugin.world() == sluice::wasm::plugin::World::Keyed {
            sluice::pipeline::keyed::run_plugin(
                &plugin,
                &options,
                stdin,
                &mut stdout,
                &mut stderr,
                expected.is_some(),
            )
        } else {
            sluice::wasm::plugin_run::run_loaded(
                &plugin,
                &options,
                stdin,
                &mut stdout,
                &mut stderr,
                expected.is_some(),
            )
        }
    });
    let report = match ran {
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
        match sluice::wasm::plugin_run::compare(&report.output, expected) {
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

/// The `--table` files loaded as the daemon loads `[tables.NAME]` (format
/// by extension: `.csv` is CSV, any other NDJSON); `None` without any.
fn load_tables(
    tables: &[(String, PathBuf, String)],
) -> Result<Option<std::sync::Arc<dyn sluice::wasm::keyed::TableLookup>>, String> {
    use sluice::table::{TableFormat, TableSlot, TableSpec};
    if tables.is_empty() {
        return Ok(None);
    }
    let mut set = sluice::table::TableSet::new();
    for (name, path, key) in tables {
        let format = TableFormat::of_path(path);
        if format == TableFormat::Json {
            sluice::decode::Pointer::parse(key).map_err(|e| format!("{name}: key: {e}"))?;
        }
        let spec = TableSpec {
            name: name.clone(),
            path: path.clone(),
            kafka: None,
            format,
            key: key.clone(),
            csv: Default::default(),
        };
        let table = spec
            .load()
            .map_err(|e| format!("{name}: {}: {e}", path.display()))?;
        if set
            .insert(name.clone(), TableSlot::new(spec, table))
            .is_some()
        {
            return Err(format!("{name}: given twice"));
        }
    }
    Ok(Some(std::sync::Arc::new(set)))
}
