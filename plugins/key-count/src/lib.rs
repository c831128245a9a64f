//! A count per key with a padded state: the keyed plugin of the state-size
//! benchmark (`bench/state_spill.py`), which holds a million keys of about
//! 1 KiB of state each.
//!
//! Input: any record with a key (the source's `key`). Config: `pad_bytes`
//! (a whole number from 0 to 1,048,576; default 1000), the length of the
//! filler string kept in every key's state.
//!
//! Each record gives `{"n":<how many records of this key so far, this one
//! included>}` (keyed by the record's key, at its event time); the key's
//! state becomes `{"n":<that count>,"pad":"xxx…"}` (serde_json, the
//! filler `pad_bytes` long).

use serde::{Deserialize, Serialize};
use sluice_plugin_sdk::{
    Config, Event, KeyedContext, KeyedProcessor, Output, Timer, export_keyed_processor,
};

/// What the host keeps per key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Count {
    /// Records of the key so far.
    pub n: u64,
    /// The filler.
    pub pad: String,
}

/// The processor: the filler every state carries.
#[derive(Debug)]
pub struct KeyCount {
    pad: String,
}

impl KeyedProcessor for KeyCount {
    type State = Count;

    fn configure(config: &Config) -> Result<Self, String> {
        let bytes = config.parse::<usize>("pad_bytes")?.unwrap_or(1000);
        if bytes > 1 << 20 {
            return Err(format!("config `pad_bytes`: {bytes} is above 1048576"));
        }
        Ok(KeyCount {
            pad: "x".repeat(bytes),
        })
    }

    fn process(
        &mut self,
        ctx: &mut KeyedContext<'_, Count>,
        event: &Event<'_>,
        out: &mut Output,
    ) -> Result<(), String> {
        let n = ctx.state().map_or(0, |c| c.n) + 1;
        ctx.set_state(Count {
            n,
            pad: self.pad.clone(),
        });
        out.object().field("n", n).push(None, event.timestamp_ms());
        Ok(())
    }

    fn on_timer(
        &mut self,
        _ctx: &mut KeyedContext<'_, Count>,
        _timer: Timer,
        _out: &mut Output,
    ) -> Result<(), String> {
        Ok(())
    }
}

export_keyed_processor!(KeyCount);
