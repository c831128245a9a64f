//! A plugin's stdout and stderr: every line goes to the daemon's log, tagged with
//! the pipeline, stage and plugin, and the latest stderr lines are kept to explain
//! a trap (a Rust guest prints its panic message there before it aborts).
//!
//! Unlike wasmtime-wasi's `MemoryOutputPipe`, writing never fails, however much a
//! plugin prints: a full pipe would make a Rust guest's `eprintln!` panic.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// Most bytes of one line logged (longer lines are cut), and of recent stderr kept.
const MAX_LINE: usize = 4096;

/// Which stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// stdout: logged at info.
    Stdout,
    /// stderr: logged at warn, and kept for trap messages.
    Stderr,
}

#[derive(Debug, Default)]
struct State {
    partial: Vec<u8>,
    recent: Vec<String>,
    recent_bytes: usize,
}

/// One guest output stream; clones share it.
#[derive(Debug, Clone)]
pub struct GuestOutput {
    stream: Stream,
    tags: Arc<LogTags>,
    state: Arc<Mutex<State>>,
}

impl GuestOutput {
    /// A stream whose lines are logged with `tags`.
    pub fn new(stream: Stream, tags: Arc<LogTags>) -> Self {
        GuestOutput {
            stream,
            tags,
            state: Arc::default(),
        }
    }

    fn push(&self, bytes: &[u8]) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        for &b in bytes {
            if b == b'\n' {
                let line = String::from_utf8_lossy(&state.partial).into_owned();
                state.partial.clear();
                self.emit(&mut state, line);
            } else if state.partial.len() < MAX_LINE {
                state.partial.push(b);
            }
        }
    }

    fn emit(&self, state: &mut State, line: String) {
        let t = &self.tags;
        match self.stream {
            Stream::Stdout => {
                tracing::info!(target: "sluice::plugin::stdout", pipeline = %t.pipeline, stage = %t.stage, plugin = %t.plugin, version = %t.version, partition = t.partition, "{line}")
            }
            Stream::Stderr => {
                tracing::warn!(target: "sluice::plugin::stderr", pipeline = %t.pipeline, stage = %t.stage, plugin = %t.plugin, version = %t.version, partition = t.partition, "{line}")
            }
        }
        if self.stream == Stream::Stderr {
            state.recent_bytes += line.len();
            state.recent.push(line);
            while state.recent_bytes > MAX_LINE && state.recent.len() > 1 {
                let old = state.recent.remove(0);
                state.recent_bytes -= old.len();
            }
        }
    }

    /// Forgets what was kept: called before each call into the guest, so a trap
    /// is explained only by what that call printed.
    pub fn clear(&self) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.recent.clear();
        state.recent_bytes = 0;
    }

    /// The lines printed since the last [`GuestOutput::clear`], including an
    /// unterminated last one.
    pub fn recent(&self) -> Vec<String> {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let mut lines = state.recent.clone();
        if !state.partial.is_empty() {
            lines.push(String::from_utf8_lossy(&state.partial).into_owned());
        }
        lines
    }
}

impl IsTerminal for GuestOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestOutput {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[async_trait::async_trait]
impl OutputStream for GuestOutput {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.push(&bytes);
        Ok(())
    }
    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }
    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(64 * 1024)
    }
}

#[async_trait::async_trait]
impl Pollable for GuestOutput {
    async fn ready(&mut self) {}
}

impl tokio::io::AsyncWrite for GuestOutput {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.push(buf);
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// Where a guest's log lines are attributed.
#[derive(Debug, Clone, Default)]
pub struct LogTags {
    /// Pipeline name.
    pub pipeline: String,
    /// Stage, e.g. `0:flights_delay`.
    pub stage: String,
    /// Plugin name.
    pub plugin: String,
    /// Plugin version.
    pub version: String,
    /// Partition of the worker.
    pub partition: usize,
}
