//! The `blackhole` sink: accepts and discards everything (benchmarks).
//!
//! ```toml
//! [sinks.none]
//! type = "blackhole"
//! ```

use sluice_plugin_sdk::Batch;

use super::{Built, Output, Resume, SinkSpec};
use crate::config::{BuildContext, ConfigError};

/// `[sinks.NAME] type = "blackhole"`: no fields of its own.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlackholeConfig {}

impl super::SinkConfig for BlackholeConfig {
    fn build(&self, _cx: &BuildContext<'_>) -> Result<Built, ConfigError> {
        Ok(Built {
            spec: SinkSpec(std::sync::Arc::new(BlackholeSink)),
            claims: Vec::new(),
        })
    }
}

/// The blackhole sink, built.
#[derive(Debug)]
pub struct BlackholeSink;

impl super::Sink for BlackholeSink {
    fn open(&self, _name: &str, _resume: Option<Resume>) -> anyhow::Result<Box<dyn Output>> {
        Ok(Box::new(Blackhole))
    }
}

struct Blackhole;

impl Output for Blackhole {
    fn write_batch(&mut self, _batch: &Batch) -> anyhow::Result<()> {
        Ok(())
    }
    fn sync(&mut self) -> anyhow::Result<Option<u64>> {
        Ok(None)
    }
    fn finish(&mut self) -> anyhow::Result<()> {
        Ok(())
    }
}
