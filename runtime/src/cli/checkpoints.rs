//! `sluice checkpoints`: list the pipelines' checkpoints, or forget one.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use sluice::config::Config;

use super::EXIT_CONFIG;

/// The options of `sluice checkpoints`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The config file (TOML).
    #[arg(short, long)]
    pub config: PathBuf,
    /// Forget this pipeline's checkpoint.
    #[arg(long, value_name = "PIPELINE")]
    pub reset: Option<String>,
}

/// Lists the checkpoints, or resets one with `--reset`.
pub fn main(args: Args) -> ExitCode {
    checkpoints(&args.config, args.reset.as_deref())
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
            // A source that keeps its position elsewhere (Kafka) says so.
            let base = Config::base_dir(&source);
            let note = config
                .pipelines
                .get(name)
                .and_then(|p| {
                    let src = p.get_ref().source.get_ref();
                    let table = config.sources.get(src)?;
                    sluice::source::SourceSpec::build(
                        src,
                        name,
                        table.get_ref(),
                        &source,
                        &base,
                        false,
                    )
                    .ok()
                })
                .and_then(|(spec, _)| spec.input.reset_note());
            if let Some(note) = note {
                store.remove(name)?;
                println!("pipeline `{name}`: {note}");
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
                    sluice::time::rfc3339(c.taken_at_ms),
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
