//! `sluice validate`: parse, resolve, compile and configure; start nothing.

use std::path::PathBuf;
use std::process::ExitCode;

use sluice::topology::Topology;

use super::{EXIT_CONFIG, load};

/// The options of `sluice validate`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The config file (TOML).
    #[arg(short, long)]
    pub config: PathBuf,
}

/// Checks the config; exit 0 when it would run, 2 with the located error.
pub fn main(args: Args) -> ExitCode {
    let Args { config } = args;
    match load(&config, None) {
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
    }
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
        p.checkpoint.is_some() && p.source.input.replay() != sluice::source::Replay::Committed
    }) {
        p.load_checkpoint(&store)?;
    }
    Ok(())
}
