//! The `stdin` source: the daemon's standard input, read to its end. One
//! pipeline may read it; it cannot be checkpointed (a pipe cannot be read
//! again).
//!
//! ```toml
//! [sources.in]
//! type = "stdin"
//! ```

use super::stream::{StreamLines, Unterminated};

/// `[sources.NAME] type = "stdin"`: no fields of its own.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StdinConfig {}

impl super::SourceConfig for StdinConfig {
    fn build(
        &self,
        cx: &super::BuildContext<'_>,
    ) -> Result<super::Built, crate::config::ConfigError> {
        Ok(super::Built {
            source: std::sync::Arc::new(Stdin),
            claims: vec![(super::Claim::Stdin, cx.table.span.clone())],
        })
    }
}

/// The stdin source, built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stdin;

impl super::Source for Stdin {
    fn parallel_decode(&self) -> Option<bool> {
        Some(false)
    }

    fn describe(&self) -> String {
        "stdin".into()
    }

    fn replay(&self) -> super::Replay {
        super::Replay::No(
            "checkpoints need a source that can be read again from a position (a file); stdin cannot".into(),
        )
    }

    fn run(&self, cx: super::SourceContext<'_>) -> anyhow::Result<()> {
        // Polled before each read (waiting never blocks shutdown); every
        // complete line taken from the pipe is processed before stopping.
        let lines = StreamLines::new(std::io::stdin(), cx.spec.max_line_bytes, Unterminated::Line);
        super::run_lines(cx, Box::new(lines))
    }
}
