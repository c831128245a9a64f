//! Logging into the daemon's log.
//!
//! In a component these go through the host's `log` import, which tags each line
//! with the pipeline, the stage and the plugin; natively (in a plugin's unit tests)
//! they print to stderr.
//!
//! A component of package 0.1.0 (a processor, an aggregator) logs through
//! that package's `host` import, a keyed processor through package 0.2.0's:
//! the export macro's `configure` picks the one of its world, so that a
//! component imports only what its world has.

/// Severity of a log message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// Very detailed diagnostics.
    Trace,
    /// Diagnostics for plugin developers.
    Debug,
    /// Normal operation.
    Info,
    /// Something unexpected that the plugin handled.
    Warn,
    /// Something failed.
    Error,
}

/// The world's `log` import, set by the export macro's `configure`.
#[cfg(target_arch = "wasm32")]
static SINK: std::sync::OnceLock<fn(Level, &str)> = std::sync::OnceLock::new();

/// Sends the log to `sink` (the `host` import of the component's world).
#[cfg(target_arch = "wasm32")]
pub(crate) fn set_sink(sink: fn(Level, &str)) {
    let _ = SINK.set(sink);
}

/// Writes `message` to the daemon's log at `level`.
pub fn log(level: Level, message: &str) {
    #[cfg(target_arch = "wasm32")]
    match SINK.get() {
        Some(sink) => sink(level, message),
        // Before `configure` (nothing of the plugin runs then): stderr.
        None => eprintln!("[{level:?}] {message}"),
    }
    #[cfg(not(target_arch = "wasm32"))]
    eprintln!("[{level:?}] {message}");
}

/// Logs at [`Level::Trace`].
pub fn trace(message: &str) {
    log(Level::Trace, message)
}
/// Logs at [`Level::Debug`].
pub fn debug(message: &str) {
    log(Level::Debug, message)
}
/// Logs at [`Level::Info`].
pub fn info(message: &str) {
    log(Level::Info, message)
}
/// Logs at [`Level::Warn`].
pub fn warn(message: &str) {
    log(Level::Warn, message)
}
/// Logs at [`Level::Error`].
pub fn error(message: &str) {
    log(Level::Error, message)
}
