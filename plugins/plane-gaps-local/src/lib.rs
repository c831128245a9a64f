//! `plane-gaps`' per-record logic as a plain processor (WIT 0.1.0) that keeps
//! each plane's last departure in its own instance: **a benchmark baseline
//! only**, for what the host-owned state of the keyed processor costs
//! (`runtime/benches/keyed.rs`). It is not correct in a daemon — an instance
//! may be recycled or swapped at any time, and its map with it; that is what
//! keyed processors are for — and it has no idle timers.
//!
//! A cancelled flight, or one without a key, passes unchanged; any other gets
//! `"minutes_since_prev"` appended, as `plane-gaps` does.

use std::collections::HashMap;

use sluice_plugin_sdk::{Batch, Config, Output, Processor, export_processor};

/// The processor: the last departure of each plane it has seen.
#[derive(Debug, Default)]
pub struct PlaneGapsLocal {
    last: HashMap<Vec<u8>, i64>,
}

impl Processor for PlaneGapsLocal {
    fn configure(_config: &Config) -> Result<Self, String> {
        Ok(PlaneGapsLocal::default())
    }

    fn process(&mut self, batch: &Batch, out: &mut Output) -> Result<(), String> {
        for event in batch {
            let record = match event.record(&["cancelled"]) {
                Ok(record) => record,
                Err(reason) => {
                    out.reject(&event, reason);
                    continue;
                }
            };
            let [cancelled] = record.fields();
            let key = event.key().unwrap_or_default();
            if key.is_empty() || cancelled.and_then(|c| c.as_bool()) == Some(true) {
                out.forward(&event);
                continue;
            }
            let t = event.timestamp_ms();
            let prev = match self.last.get_mut(key) {
                Some(last) => Some(std::mem::replace(last, t)),
                None => {
                    self.last.insert(key.to_vec(), t);
                    None
                }
            };
            let minutes = prev.map(|prev| t.saturating_sub(prev) / 60_000);
            record
                .edit()
                .set("minutes_since_prev", minutes)
                .push_or_reject(out);
        }
        Ok(())
    }
}

export_processor!(PlaneGapsLocal);
