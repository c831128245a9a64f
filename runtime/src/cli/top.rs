//! `sluice top`: a live view of a running daemon, from its admin API.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use sluice::config::Config;

use super::EXIT_CONFIG;

/// The options of `sluice top`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The admin API's address (`HOST:PORT`); default: the config's
    /// `[daemon] admin` with `--config`, else 127.0.0.1:9464.
    #[arg(long)]
    pub admin: Option<String>,
    /// Read the admin address from this config file.
    #[arg(short, long)]
    pub config: Option<PathBuf>,
    /// Time between samples (the rates are over it), e.g. `2s`.
    #[arg(long, default_value = "1s", value_parser = parse_interval)]
    pub interval: std::time::Duration,
    /// Print one view (two samples, `--interval` apart) and exit.
    #[arg(long)]
    pub once: bool,
}

/// Shows the view until interrupted (or once with `--once`); exit 1 if the
/// daemon cannot be reached.
pub fn main(args: Args) -> ExitCode {
    let Args {
        admin,
        config,
        interval,
        once,
    } = args;
    {
        let (addr, state_dir) = match top_address(admin, config.as_deref()) {
            Ok(a) => a,
            Err(code) => return code,
        };
        let checked = match (&config, &state_dir) {
            (Some(file), Some(dir)) => sluice::obs::top::check_identity(&addr, file, dir),
            _ => Ok(()),
        };
        match checked.and_then(|()| sluice::obs::top::run(&addr, interval, once)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        }
    }
}

/// `sluice top`'s interval: 10ms to an hour.
fn parse_interval(s: &str) -> Result<std::time::Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| format!("invalid duration {s:?}: {e}"))?;
    if d < std::time::Duration::from_millis(10) || d > std::time::Duration::from_secs(3600) {
        return Err(format!("{s} is out of range: between 10ms and 1h"));
    }
    Ok(d)
}

/// The admin API's address for `sluice top`, and with `--config` the state
/// folder of the daemon that should answer there (`--admin` wins: no check).
pub(crate) fn top_address(
    admin: Option<String>,
    config: Option<&Path>,
) -> Result<(String, Option<PathBuf>), ExitCode> {
    if let Some(admin) = admin {
        return Ok((admin, None));
    }
    let Some(path) = config else {
        return Ok((sluice::topology::DEFAULT_ADMIN.to_string(), None));
    };
    let (config, source) = Config::load(path).map_err(|e| {
        eprintln!("error: {e}");
        ExitCode::from(EXIT_CONFIG)
    })?;
    let state_dir = Some(sluice::config::state_dir(&config, &source));
    let addr = match config.daemon.admin.as_ref().map(|a| a.get_ref().as_str()) {
        Some("off") => {
            eprintln!(
                "error: {}: the admin API is off (`[daemon] admin = \"off\"`)",
                path.display()
            );
            return Err(ExitCode::from(EXIT_CONFIG));
        }
        Some(addr) => addr.to_string(),
        None => sluice::topology::DEFAULT_ADMIN.to_string(),
    };
    Ok((addr, state_dir))
}
