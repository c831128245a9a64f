//! Test fixture: an aggregator that sums integers and traps (panics) on the
//! value 13, so the host's handling of a trapping aggregator can be tested: the
//! instance is replaced, the accumulators (host-owned bytes) are kept, the
//! batch is retried event by event and only the 13 is dead-lettered.

use sluice_plugin_sdk::{Aggregator, Config, Event, export_aggregator};

/// Sums integers; panics on 13.
pub struct SumOrTrap;

impl Aggregator for SumOrTrap {
    type State = i64;

    fn configure(_config: &Config) -> Result<Self, String> {
        Ok(SumOrTrap)
    }

    fn create(&self) -> i64 {
        0
    }

    fn add(&self, state: &mut i64, event: &Event<'_>) -> Result<(), String> {
        let text = std::str::from_utf8(event.value()).map_err(|e| e.to_string())?;
        let v: i64 = text
            .trim()
            .parse()
            .map_err(|_| format!("not an integer: {text}"))?;
        assert!(v != 13, "13 is unlucky");
        *state += v;
        Ok(())
    }

    fn merge(&self, state: &mut i64, other: i64) {
        *state += other;
    }

    fn finish(&self, state: &i64) -> Result<String, String> {
        Ok(state.to_string())
    }

    fn encode(&self, state: &i64) -> Vec<u8> {
        state.to_le_bytes().to_vec()
    }

    fn decode(&self, bytes: &[u8]) -> Result<i64, String> {
        Ok(i64::from_le_bytes(
            bytes.try_into().map_err(|_| "not 8 bytes".to_string())?,
        ))
    }
}

export_aggregator!(SumOrTrap);
