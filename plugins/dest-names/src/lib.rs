//! A keyed processor that reads a lookup table through the host's `tables`
//! import (`wit/0.2.0/plugin.wit`): each flight, keyed by its destination
//! (the source's `key = "/dest"`), becomes
//! `{"dest":KEY,"dest_name":NAME,"before":N}`: the name in the key's row of
//! the daemon's lookup table (config `table`, default `airports`, a
//! `[tables.NAME]` keyed by the airport code; `null` when the table has no
//! row for it) and how many flights to it came before (the key's state).

use serde::Deserialize;
use sluice_plugin_sdk::{
    Config, Event, KeyedContext, KeyedProcessor, Output, export_keyed_processor,
};

/// The processor: which table it reads.
#[derive(Debug)]
pub struct DestNames {
    table: String,
}

/// The part of a table row it reads.
#[derive(Debug, Deserialize)]
struct Airport {
    name: String,
}

impl KeyedProcessor for DestNames {
    /// Flights to this destination so far.
    type State = u64;

    fn configure(config: &Config) -> Result<Self, String> {
        Ok(DestNames {
            table: config.get("table").unwrap_or("airports").to_string(),
        })
    }

    fn process(
        &mut self,
        ctx: &mut KeyedContext<'_, u64>,
        event: &Event<'_>,
        out: &mut Output,
    ) -> Result<(), String> {
        let dest = String::from_utf8_lossy(ctx.key()).into_owned();
        let name = ctx
            .lookup_as::<Airport>(&self.table, &dest)?
            .map(|a| a.name);
        let before = ctx.state().copied().unwrap_or(0);
        ctx.set_state(before + 1);
        out.push_json(
            None,
            &serde_json::json!({ "dest": dest, "dest_name": name, "before": before }),
            event.timestamp_ms(),
        )
    }
}

export_keyed_processor!(DestNames);

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_plugin_sdk::KeyedHarness;

    #[test]
    fn names_from_the_table_and_counts_per_destination() {
        let mut h = KeyedHarness::new(DestNames {
            table: "airports".into(),
        })
        .table(
            "airports",
            [("LAX", r#"{"faa":"LAX","name":"Los Angeles Intl"}"#)],
        );
        h.push(b"LAX", b"{}", 1)
            .push(b"BQN", b"{}", 2)
            .push(b"LAX", b"{}", 3);
        h.run().unwrap();
        let got: Vec<String> = h
            .output()
            .events
            .iter()
            .map(|e| String::from_utf8_lossy(e.value()).into_owned())
            .collect();
        assert_eq!(
            got,
            [
                r#"{"dest":"LAX","dest_name":"Los Angeles Intl","before":0}"#,
                r#"{"dest":"BQN","dest_name":null,"before":0}"#,
                r#"{"dest":"LAX","dest_name":"Los Angeles Intl","before":1}"#,
            ]
        );
    }
}
