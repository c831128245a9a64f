//! The main job on the real data: all 336,776 flights through the Wasm filter,
//! checked against a ground truth computed here straight from the NDJSON.

use std::collections::HashMap;

use serde_json::Value;

use crate::support::*;

/// FNV-1a 64: an order-independent checksum is the wrapping sum of these.
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// The identity of a flight: carrier (the key), flight number, departure time.
fn identity(v: &Value) -> String {
    format!(
        "{}|{}|{}",
        v["carrier"].as_str().unwrap(),
        v["flight"],
        v["event_time"].as_str().unwrap()
    )
}

#[test]
fn flights_job_matches_ground_truth() {
    const MIN_DELAY: f64 = 15.0;
    // Ground truth, straight from the data with serde_json.
    let lines = flights_lines(usize::MAX);
    assert_eq!(lines.len(), 336_776);
    let mut expected_sum = 0u64;
    let mut expected_by_key: HashMap<String, Vec<String>> = HashMap::new();
    for line in &lines {
        let v: Value = serde_json::from_str(line).unwrap();
        if v["dep_delay"].as_f64().is_some_and(|d| d >= MIN_DELAY) {
            let id = identity(&v);
            expected_sum = expected_sum.wrapping_add(fnv1a(id.as_bytes()));
            expected_by_key
                .entry(v["carrier"].as_str().unwrap().to_string())
                .or_default()
                .push(id);
        }
    }
    let expected_count: usize = expected_by_key.values().map(Vec::len).sum();

    // The example config, pointed at this scratch folder.
    let example = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/flights/delayed.toml"),
    )
    .unwrap();
    let config = example
        .replace(
            "\"${CARGO_TARGET_DIR:-../../target}/plugins\"",
            "\"@PLUGINS@\"",
        )
        .replace(
            "\"../data/flights-2013.ndjson.gz\"",
            &format!("{:?}", flights_gz()),
        )
        .replace(
            "\"../../target/flights-out/delayed.ndjson\"",
            "\"out/delayed.ndjson\"",
        )
        .replace(
            "\"../../target/flights-out/dead-letter.ndjson\"",
            "\"out/dlq.ndjson\"",
        );
    assert!(
        config.contains("@PLUGINS@") && config.contains("out/dlq.ndjson"),
        "example config changed shape"
    );
    let scratch = Scratch::new(&config);
    let output = scratch.run();
    assert_exit(&output, 0);

    assert_eq!(count(&output, "delays", "in"), 336_776);
    assert_eq!(count(&output, "delays", "rejected"), 0);
    assert_eq!(count(&output, "delays", "out"), expected_count as u64);

    let out = scratch.read_lines("out/delayed.ndjson");
    assert_eq!(out.len(), expected_count);
    let mut sum = 0u64;
    let mut by_key: HashMap<String, Vec<String>> = HashMap::new();
    for line in &out {
        let v: Value = serde_json::from_str(line).unwrap();
        assert!(v["dep_delay"].as_f64().unwrap() >= MIN_DELAY, "{line}");
        let id = identity(&v);
        sum = sum.wrapping_add(fnv1a(id.as_bytes()));
        by_key
            .entry(v["carrier"].as_str().unwrap().to_string())
            .or_default()
            .push(id);
    }
    assert_eq!(sum, expected_sum, "checksum of the output keys");
    // Partitioning keeps each key's records in input order.
    assert_eq!(by_key, expected_by_key);
    assert!(scratch.read_lines("out/dlq.ndjson").is_empty());
}

/// The README's main job (`examples/flights/sluice.toml`): the filter, then
/// per carrier 1-hour windows with count, mean and worst delay and the
/// `delay_quantiles` aggregator; every window checked against one computed
/// here from the NDJSON.
#[test]
fn main_job_windows_match_ground_truth() {
    use crate::windows::{assert_rows, hourly_windows};
    let want = hourly_windows(usize::MAX);

    let example = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/flights/sluice.toml"),
    )
    .unwrap();
    let config = example
        .replace(
            "\"${CARGO_TARGET_DIR:-../../target}/plugins\"",
            "\"@PLUGINS@\"",
        )
        .replace("\"../../target/state\"", "\"state\"")
        .replace(
            "\"../data/flights-2013.ndjson.gz\"",
            &format!("{:?}", flights_gz()),
        )
        .replace("\"../../target/flights-out/", "\"out/");
    assert!(
        config.contains("@PLUGINS@") && config.contains("\"out/hourly.ndjson\""),
        "example config changed shape"
    );
    let scratch = Scratch::new(&config);
    let output = scratch.run();
    assert_exit(&output, 0);
    assert_eq!(count(&output, "hourly", "in"), 336_776);
    assert_eq!(count(&output, "hourly", "out"), want.len() as u64);
    let got: Vec<Value> = scratch.read_json("out/hourly.ndjson");
    // Operator order: window end, then key (then start).
    let mut want = want;
    want.sort_by(|a, b| {
        (a["window_end"].as_str(), a["key"].as_str())
            .cmp(&(b["window_end"].as_str(), b["key"].as_str()))
    });
    assert_rows(&got, &want);
    assert!(
        scratch
            .read_lines("out/hourly-dead-letter.ndjson")
            .is_empty()
    );
}
