//! The `sluice` command line: parses the arguments and hands the command to
//! its file under `cli/`.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod cli;

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
    Run(cli::run::Args),
    /// Check a config file: parse it, resolve every name, compile every plugin and
    /// configure one instance of each stage. Starts nothing.
    Validate(cli::validate::Args),
    /// List the pipelines' checkpoints in the config's state directory
    /// (position, open windows, sink lengths), or forget one with --reset so
    /// the pipeline starts from the beginning of its input. Run it while the
    /// daemon is stopped (the store is locked while it runs).
    Checkpoints(cli::checkpoints::Args),
    /// A live view of a running daemon, read from its admin API: each
    /// pipeline's counters and rates (records/s between two samples), each
    /// plugin's version and reloads. Exit 1 if the daemon cannot be reached.
    Top(cli::top::Args),
    /// Print a sample of the records passing a point of a running daemon's
    /// pipeline (the source, a stage's output, the window, a sink, the dead
    /// letters), one JSON line each, from its admin API.
    Tap(cli::tap::Args),
    /// Work with plugin components.
    Plugin {
        #[command(subcommand)]
        command: cli::plugin::PluginCommand,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let log_level = cli::init_logging(cli.log_format == "json");
    match cli.command {
        Command::Run(args) => cli::run::main(args, &log_level),
        Command::Validate(args) => cli::validate::main(args),
        Command::Checkpoints(args) => cli::checkpoints::main(args),
        Command::Top(args) => cli::top::main(args),
        Command::Tap(args) => cli::tap::main(args),
        Command::Plugin { command } => cli::plugin::main(command),
    }
}
