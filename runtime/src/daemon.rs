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

use crate::pipeline::Summary;
use crate::plugin::PluginHost;
use crate::reload::Reloader;
use crate::sink::RunningSink;
use crate::topology::Topology;

/// The status file in the state folder: the running version of every plugin,
/// since when, its reload history and last error (see
/// [`crate::reload::Status`]).
pub const STATUS_FILE: &str = "status.json";

/// What a run ended with.
#[derive(Debug)]
pub struct Outcome {
    /// One summary per pipeline.
    pub summaries: Vec<Summary>,
    /// Errors that stopped a pipeline or a sink (empty: a clean run).
    pub errors: Vec<anyhow::Error>,
}

/// Runs `topology` until every source has ended, or until `shutdown` completes
/// (then drains).
///
/// # Errors
/// A sink or pipeline cannot start (a file cannot be opened, a plugin instance
/// cannot be made); nothing is left running then.
pub async fn run(
    topology: Topology,
    host: PluginHost,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<Outcome> {
    // Watch the plugin files from before the first batch, so no change is missed.
    let _reloader = if topology.hot_reload && !topology.plugins.is_empty() {
        Some(Reloader::start(
            host,
            topology.plugins.clone(),
            Some(topology.state_dir.join(STATUS_FILE)),
        )?)
    } else {
        drop(host);
        None
    };
    let mut sinks = BTreeMap::new();
    for (name, spec) in &topology.sinks {
        sinks.insert(name.clone(), RunningSink::start(name, spec)?);
    }
    let handles = sinks
        .iter()
        .map(|(name, sink)| (name.clone(), sink.handle.clone()))
        .collect();
    let cancel = Arc::new(AtomicBool::new(false));
    let mut running = Vec::new();
    let mut errors = Vec::new();
    for spec in &topology.pipelines {
        match spec.start(&handles, cancel.clone()) {
            Ok(p) => running.push(p),
            Err(e) => {
                // Stop the pipelines already running, and drain them below.
                cancel.store(true, Ordering::Relaxed);
                errors.push(e.context(format!("pipeline `{}` cannot start", spec.name)));
                break;
            }
        }
        tracing::info!(
            pipeline = %spec.name,
            partitions = spec.partitions,
            stages = spec.stages.len(),
            "pipeline started"
        );
    }
    drop(handles);

    // Wait for every pipeline; the first that ends with an error stops the others
    // (they drain), as a signal would.
    let mut waiting = tokio::task::JoinSet::new();
    for pipeline in running {
        waiting.spawn_blocking(move || pipeline.wait());
    }
    tokio::pin!(shutdown);
    let mut shutdown_done = false;
    let mut results = Vec::new();
    loop {
        tokio::select! {
            joined = waiting.join_next() => match joined {
                None => break,
                Some(joined) => {
                    let (summary, result) = joined?;
                    if result.is_err() {
                        cancel.store(true, Ordering::Relaxed);
                    }
                    results.push((summary, result));
                }
            },
            () = &mut shutdown, if !shutdown_done => {
                shutdown_done = true;
                cancel.store(true, Ordering::Relaxed);
            }
        }
    }
    results.sort_by(|a, b| a.0.pipeline.cmp(&b.0.pipeline));

    let mut summaries = Vec::new();
    for (summary, result) in results {
        summaries.push(summary);
        if let Err(e) = result {
            errors.push(e);
        }
    }
    for (name, sink) in sinks {
        if let Err(e) = tokio::task::spawn_blocking(move || sink.finish()).await? {
            errors.push(e.context(format!("sink `{name}`")));
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
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
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
