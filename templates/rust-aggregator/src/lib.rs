//! {{name}}: a sluice aggregator plugin (a user-defined aggregate of event-time
//! windows). As generated, it finds the `n` most frequent values of a field in
//! each window — the top destinations, the busiest carriers — as
//! `[{"value": …, "count": …}, …]`, most frequent first (ties: smaller value
//! first, so the result does not depend on the order events arrive in).
//!
//! The host keeps each window's accumulator as the bytes `encode` makes and hands
//! them back to `decode`: keep the encoding readable by your next versions (the
//! first byte is a format number for that).

use std::collections::BTreeMap;

use sluice_plugin_sdk::{Aggregator, Config, Event, export_aggregator};

/// Format number of the accumulator encoding (first byte).
const FORMAT: u8 = 1;

/// The aggregator: how many values to report.
pub struct TopValues {
    n: usize,
}

/// One window's accumulator: each value's JSON text and how often it came.
pub type Counts = BTreeMap<String, u64>;

impl Aggregator for TopValues {
    type State = Counts;

    fn configure(config: &Config) -> Result<Self, String> {
        let n = config.parse::<usize>("n")?.unwrap_or(3);
        if n == 0 {
            return Err("n must be at least 1".into());
        }
        Ok(TopValues { n })
    }

    fn create(&self) -> Counts {
        Counts::new()
    }

    fn add(&self, state: &mut Counts, event: &Event<'_>) -> Result<(), String> {
        // The value is JSON text: a string arrives quoted ("BOS").
        let text = std::str::from_utf8(event.value()).map_err(|e| e.to_string())?;
        *state.entry(text.to_string()).or_default() += 1;
        Ok(())
    }

    fn merge(&self, state: &mut Counts, other: Counts) {
        for (value, count) in other {
            *state.entry(value).or_default() += count;
        }
    }

    fn finish(&self, state: &Counts) -> Result<String, String> {
        let mut top: Vec<(&String, &u64)> = state.iter().collect();
        // Most frequent first; ties by value (the map's order), whatever the
        // order events came in.
        top.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        let rows: Vec<serde_json::Value> = top
            .into_iter()
            .take(self.n)
            .map(|(value, count)| {
                let value: serde_json::Value =
                    serde_json::from_str(value).unwrap_or(serde_json::Value::Null);
                serde_json::json!({ "value": value, "count": count })
            })
            .collect();
        serde_json::to_string(&rows).map_err(|e| e.to_string())
    }

    fn encode(&self, state: &Counts) -> Vec<u8> {
        let mut out = vec![FORMAT];
        out.extend(serde_json::to_vec(state).unwrap_or_default());
        out
    }

    fn decode(&self, bytes: &[u8]) -> Result<Counts, String> {
        match bytes.split_first() {
            Some((&FORMAT, rest)) => serde_json::from_slice(rest).map_err(|e| e.to_string()),
            Some((format, _)) => Err(format!("accumulator format {format}, this version reads {FORMAT}")),
            None => Err("empty accumulator".into()),
        }
    }
}

export_aggregator!(TopValues);

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_plugin_sdk::Batch;

    fn top(n: &str, values: &[&str]) -> String {
        let agg = TopValues::configure(&Config::from_pairs([("n", n)])).unwrap();
        let mut batch = Batch::new();
        for v in values {
            batch.push(None, v.as_bytes(), 0);
        }
        // Two halves merged, as two sessions joining would be.
        let (mut a, mut b) = (agg.create(), agg.create());
        for (i, event) in batch.iter().enumerate() {
            agg.add(if i % 2 == 0 { &mut a } else { &mut b }, &event).unwrap();
        }
        agg.merge(&mut a, agg.decode(&agg.encode(&b)).unwrap());
        agg.finish(&a).unwrap()
    }

    #[test]
    fn most_frequent_first_ties_by_value() {
        assert_eq!(
            top("2", &["\"LAX\"", "\"BOS\"", "\"SFO\"", "\"BOS\"", "\"LAX\"", "\"BOS\""]),
            r#"[{"value":"BOS","count":3},{"value":"LAX","count":2}]"#
        );
        assert_eq!(top("1", &["2", "1"]), r#"[{"value":1,"count":1}]"#);
    }
}
