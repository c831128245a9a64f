//! The `stdout` sink: the daemon's standard output, one record per line. One
//! sink of a config may write it.
//!
//! ```toml
//! [sinks.out]
//! type = "stdout"
//! ```

use std::io::Write;

use sluice_plugin_sdk::Batch;

use super::{Built, Claim, Output, Resume, SinkSpec, lines_of};
use crate::config::{BuildContext, ConfigError};

/// `[sinks.NAME] type = "stdout"`: no fields of its own.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StdoutConfig {}

impl super::SinkConfig for StdoutConfig {
    fn build(&self, cx: &BuildContext<'_>) -> Result<Built, ConfigError> {
        Ok(Built {
            spec: SinkSpec(std::sync::Arc::new(Stdout)),
            claims: vec![(Claim::Stdout, cx.table.span.clone())],
        })
    }
}

/// The stdout sink, built.
#[derive(Debug)]
pub struct Stdout;

impl super::Sink for Stdout {
    fn open(&self, _name: &str, _resume: Option<Resume>) -> anyhow::Result<Box<dyn Output>> {
        Ok(Box::new(StdoutOutput::default()))
    }
}

#[derive(Default)]
struct StdoutOutput {
    buf: Vec<u8>,
}

impl Output for StdoutOutput {
    fn write_batch(&mut self, batch: &Batch) -> anyhow::Result<()> {
        lines_of(batch, &mut self.buf);
        let mut out = std::io::stdout().lock();
        out.write_all(&self.buf)?;
        out.flush()?;
        Ok(())
    }
    fn sync(&mut self) -> anyhow::Result<Option<u64>> {
        std::io::stdout().flush()?;
        Ok(None)
    }
    fn finish(&mut self) -> anyhow::Result<()> {
        std::io::stdout().flush()?;
        Ok(())
    }
}
