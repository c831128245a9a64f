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
use crate::sink::RunningSink;
use crate::topology::Topology;

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
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<Outcome> {
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
    for spec in &topology.pipelines {
        match spec.start(&handles, cancel.clone()) {
            Ok(p) => running.push(p),
            Err(e) => {
                cancel.store(true, Ordering::Relaxed);
                return Err(e.context(format!("pipeline `{}` cannot start", spec.name)));
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

    let join = tokio::task::spawn_blocking(move || {
        running.into_iter().map(|p| p.wait()).collect::<Vec<_>>()
    });
    tokio::pin!(join);
    tokio::pin!(shutdown);
    let results = tokio::select! {
        r = &mut join => r,
        () = &mut shutdown => {
            tracing::info!("shutting down: draining in-flight batches");
            cancel.store(true, Ordering::Relaxed);
            join.await
        }
    }?;

    let mut summaries = Vec::new();
    let mut errors = Vec::new();
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

/// Completes on the first SIGINT or SIGTERM.
///
/// # Panics
/// When the signal handlers cannot be installed (not on a Unix system).
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("install the SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("install the SIGINT handler");
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = int.recv() => tracing::info!("SIGINT received"),
    }
}
