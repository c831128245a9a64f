//! An aggregator plugin: exact quantiles (nearest rank) of an integer field per
//! window, e.g. the 50th, 90th and 99th percentile of departure delays in
//! minutes.
//!
//! The accumulator is a histogram — each distinct value with its count — so it
//! stays small for values such as delays in minutes (a few hundred distinct
//! values however many flights), merges exactly, and gives exact quantiles.
//!
//! Config: `quantiles = "0.5,0.9,0.99"` (the default); each in (0, 1]. The
//! result is `{"p50": …, "p90": …, "p99": …}`, or `null` for a window without
//! values. A value that is not an integer is refused (the host dead-letters it).
//!
//! Encoding of the accumulator (kept stable across versions, see the SDK's
//! `Aggregator`): a format byte (1), then the number of distinct values, then per
//! value in increasing order the zigzag varint of its difference to the previous
//! one and the varint of its count.

use std::collections::BTreeMap;

use sluice_plugin_sdk::{Aggregator, Config, Event, export_aggregator};

/// Format byte of the accumulator encoding.
const FORMAT: u8 = 1;

/// The aggregator: which quantiles to report.
pub struct DelayQuantiles {
    quantiles: Vec<f64>,
}

/// A window's histogram: value → count.
pub type Histogram = BTreeMap<i64, u64>;

impl Aggregator for DelayQuantiles {
    type State = Histogram;

    fn configure(config: &Config) -> Result<Self, String> {
        let text = config.get("quantiles").unwrap_or("0.5,0.9,0.99");
        let quantiles = text
            .trim_matches(|c| c == '[' || c == ']')
            .split(',')
            .map(|q| {
                let q: f64 = q
                    .trim()
                    .parse()
                    .map_err(|_| format!("quantiles: {q:?} is not a number"))?;
                if q > 0.0 && q <= 1.0 {
                    Ok(q)
                } else {
                    Err(format!("quantiles: {q} is not in (0, 1]"))
                }
            })
            .collect::<Result<Vec<f64>, String>>()?;
        Ok(DelayQuantiles { quantiles })
    }

    fn create(&self) -> Histogram {
        Histogram::new()
    }

    fn add(&self, state: &mut Histogram, event: &Event<'_>) -> Result<(), String> {
        let text = std::str::from_utf8(event.value()).map_err(|e| e.to_string())?;
        let value: i64 = text
            .trim()
            .parse()
            .map_err(|_| format!("delay_quantiles takes integers, not {text}"))?;
        *state.entry(value).or_default() += 1;
        Ok(())
    }

    fn merge(&self, state: &mut Histogram, other: Histogram) {
        for (v, n) in other {
            *state.entry(v).or_default() += n;
        }
    }

    fn finish(&self, state: &Histogram) -> Result<String, String> {
        let total: u64 = state.values().sum();
        if total == 0 {
            return Ok("null".into());
        }
        let mut out = serde_json::Map::new();
        for &q in &self.quantiles {
            // Nearest rank: the smallest value with at least ⌈q·n⌉ values at or
            // below it.
            let rank = ((q * total as f64).ceil() as u64).max(1);
            let mut seen = 0;
            let value = state
                .iter()
                .find(|(_, n)| {
                    seen += **n;
                    seen >= rank
                })
                .map(|(v, _)| *v);
            out.insert(name(q), value.into());
        }
        serde_json::to_string(&out).map_err(|e| e.to_string())
    }

    fn encode(&self, state: &Histogram) -> Vec<u8> {
        let mut out = vec![FORMAT];
        varint(&mut out, state.len() as u64);
        let mut previous = 0i64;
        for (&v, &n) in state {
            let delta = v.wrapping_sub(previous);
            varint(&mut out, ((delta << 1) ^ (delta >> 63)) as u64);
            varint(&mut out, n);
            previous = v;
        }
        out
    }

    fn decode(&self, bytes: &[u8]) -> Result<Histogram, String> {
        let (&format, mut rest) = bytes.split_first().ok_or("empty accumulator")?;
        if format != FORMAT {
            return Err(format!(
                "accumulator format {format}, this version reads {FORMAT}"
            ));
        }
        let len = read_varint(&mut rest)?;
        let mut state = Histogram::new();
        let mut previous = 0i64;
        for _ in 0..len {
            let zz = read_varint(&mut rest)?;
            let delta = ((zz >> 1) as i64) ^ -((zz & 1) as i64);
            previous = previous.wrapping_add(delta);
            state.insert(previous, read_varint(&mut rest)?);
        }
        Ok(state)
    }
}

/// `0.5` → `p50`, `0.999` → `p99.9`.
fn name(q: f64) -> String {
    let pct = (q * 100_000.0).round() / 1000.0;
    format!("p{pct}")
}

fn varint(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

fn read_varint(bytes: &mut &[u8]) -> Result<u64, String> {
    let mut n = 0u64;
    for shift in (0..64).step_by(7) {
        let (&b, rest) = bytes.split_first().ok_or("truncated accumulator")?;
        *bytes = rest;
        n |= u64::from(b & 0x7f) << shift;
        if b < 0x80 {
            return Ok(n);
        }
    }
    Err("varint too long".into())
}

export_aggregator!(DelayQuantiles);

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_plugin_sdk::Batch;

    fn agg(q: &str) -> DelayQuantiles {
        DelayQuantiles::configure(&Config::from_pairs(vec![("quantiles", q)])).unwrap()
    }

    fn add_all(a: &DelayQuantiles, state: &mut Histogram, values: &[&str]) {
        let mut batch = Batch::new();
        for v in values {
            batch.push(None, v.as_bytes(), 0);
        }
        for e in &batch {
            a.add(state, &e).unwrap();
        }
    }

    #[test]
    fn nearest_rank_quantiles() {
        let a = agg("0.5,0.9,1");
        let mut s = a.create();
        let values: Vec<String> = (1..=10).rev().map(|v| v.to_string()).collect();
        add_all(
            &a,
            &mut s,
            &values.iter().map(String::as_str).collect::<Vec<_>>(),
        );
        assert_eq!(a.finish(&s).unwrap(), r#"{"p50":5,"p90":9,"p100":10}"#);
        assert_eq!(a.finish(&a.create()).unwrap(), "null");
    }

    #[test]
    fn encoding_round_trips_and_merge_equals_one_pass() {
        let a = agg("0.5");
        let (mut x, mut y, mut all) = (a.create(), a.create(), a.create());
        add_all(&a, &mut x, &["-5", "300", "17", "17"]);
        add_all(&a, &mut y, &["0", "-43", "1000000"]);
        add_all(
            &a,
            &mut all,
            &["-5", "300", "17", "17", "0", "-43", "1000000"],
        );
        let decoded = a.decode(&a.encode(&x)).unwrap();
        assert_eq!(decoded, x);
        a.merge(&mut x, y);
        assert_eq!(x, all);
        assert!(a.decode(&[2]).is_err());
        assert!(a.decode(&[1, 5]).is_err());
    }

    #[test]
    fn refuses_non_integers_and_bad_config() {
        let a = agg("0.5");
        let mut batch = Batch::new();
        batch.push(None, b"15.5", 0);
        assert!(a.add(&mut a.create(), &batch.get(0).unwrap()).is_err());
        assert!(DelayQuantiles::configure(&Config::from_pairs(vec![("quantiles", "0")])).is_err());
    }
}
