//! Passes every event through unchanged: the floor of what a Wasm stage costs.

use sluice_plugin_sdk::{Batch, Config, Output, Processor, export_processor};

/// The identity processor.
pub struct Identity;

impl Processor for Identity {
    fn configure(_config: &Config) -> Result<Self, String> {
        Ok(Identity)
    }

    fn process(&mut self, batch: &Batch, out: &mut Output) -> Result<(), String> {
        for event in batch {
            out.forward(&event);
        }
        Ok(())
    }
}

export_processor!(Identity);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwards_everything() {
        let mut batch = Batch::new();
        batch.push(Some(b"k"), b"one", 1);
        batch.push(None, b"two", 2);
        let mut out = Output::new();
        Identity.process(&batch, &mut out).unwrap();
        assert_eq!(out.events, batch);
        assert!(out.rejected.is_empty());
    }
}
