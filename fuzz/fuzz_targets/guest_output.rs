//! What a processor plugin returns for a batch: its events' columns (value
//! and key offsets, event times, headers) and its rejections, checked as the
//! host checks them (`wasm::plugin::check_guest_output`); what passes goes
//! on, as a worker sends it, to a window operator (`prepare`, then the
//! operator to the end of its input), with the event times the plugin set.
//!
//! The input is read as structured choices (`arbitrary::Unstructured`):
//! the batch's size, events whose columns agree, then perhaps one change that
//! makes them disagree, then rejections.

#![no_main]

use arbitrary::{Result, Unstructured};
use sluice::wasm::plugin::{CallError, check_guest_output};
use sluice::window::TIME_RANGE;
use sluice::window::operator::{WindowInput, WindowMsg};
use sluice_plugin_sdk::BatchParts;

sluice_fuzz::fuzz_target!(|data| {
    let _ = run(&mut Unstructured::new(data));
});

/// The most events of a batch here.
const MAX_EVENTS: u32 = 64;

fn run(u: &mut Unstructured<'_>) -> Result<()> {
    let n: u32 = u.int_in_range(0..=MAX_EVENTS)?;
    let events: u32 = u.int_in_range(0..=MAX_EVENTS)?;
    let mut parts = BatchParts::default();
    let mut expected: Vec<(Vec<u8>, Vec<u8>, i64)> = Vec::new();
    for index in 0..events {
        let value = value(u)?;
        let key: Vec<u8> = if u.ratio(1, 3)? {
            Vec::new()
        } else {
            u.arbitrary::<&[u8]>()?.iter().take(16).copied().collect()
        };
        let timestamp = timestamp(u)?;
        parts.values.extend_from_slice(&value);
        parts.value_ends.push(parts.values.len() as u32);
        parts.keys.extend_from_slice(&key);
        parts.key_ends.push(parts.keys.len() as u32);
        parts.timestamps.push(timestamp);
        for _ in 0..u.int_in_range(0..=2)? {
            parts
                .headers
                .push((index, u.arbitrary()?, u.arbitrary::<&[u8]>()?.to_vec()));
        }
        expected.push((value, key, timestamp));
    }
    let changed = disagree(u, &mut parts)?;
    let mut rejected = Vec::new();
    for _ in 0..u.int_in_range(0..=8)? {
        rejected.push((u.int_in_range(0..=n + 1)?, String::from("refused")));
    }
    let rejected_ok = rejected.iter().all(|(i, _)| *i < n);

    match check_guest_output(n, parts, rejected) {
        Ok(processed) => {
            assert!(rejected_ok, "a rejection past the batch passed");
            let mut seen = std::collections::BTreeSet::new();
            for (i, _) in &processed.rejected {
                assert!(*i < n && seen.insert(*i), "rejection {i} of {n}");
            }
            if !changed {
                assert_eq!(processed.events.len(), expected.len());
                for (event, (value, key, timestamp)) in processed.events.iter().zip(&expected) {
                    assert_eq!(event.value(), value.as_slice());
                    assert_eq!(event.key().unwrap_or_default(), key.as_slice());
                    assert_eq!(event.timestamp_ms(), *timestamp);
                }
            }
            for event in &processed.events {
                let _ = (event.key(), event.value(), event.headers().count());
            }
            let pipelines = sluice_fuzz::windowed();
            let pipeline = &pipelines[u.choose_index(pipelines.len())?];
            let spec = pipeline.window.as_ref().expect("a windowed pipeline");
            let max_input_ts = processed
                .events
                .iter()
                .map(|e| e.timestamp_ms())
                .filter(|t| TIME_RANGE.contains(t))
                .max();
            let (events, values, unreadable) = spec.prepare(processed.events);
            for u in &unreadable {
                assert!(!u.reason.is_empty());
            }
            let input = WindowInput {
                partition: usize::from(u.arbitrary::<bool>()?),
                task: None,
                max_input_ts,
                events,
                values,
            };
            sluice_fuzz::run_window(spec, vec![WindowMsg::Batch(input)], None)
                .expect("no sink to fail");
        }
        Err(CallError::Malformed(why)) => {
            assert!(
                changed || !rejected_ok,
                "a well-formed output refused: {why}"
            );
        }
        Err(other) => panic!("not a Malformed error: {other:?}"),
    }
    Ok(())
}

/// An event's value: JSON with the fields the window pipelines read
/// (`/v`, `/s`, `/g`, `/h/0`), or any bytes.
fn value(u: &mut Unstructured<'_>) -> Result<Vec<u8>> {
    if u.ratio(1, 4)? {
        return Ok(u.arbitrary::<&[u8]>()?.to_vec());
    }
    let number = match u.int_in_range(0..=4)? {
        0 => serde_json::json!(u.arbitrary::<i64>()?),
        1 => serde_json::json!(u.arbitrary::<u64>()?),
        2 => serde_json::json!(u.arbitrary::<f64>()?),
        3 => serde_json::json!(u.int_in_range(-3..=3)?),
        _ => serde_json::Value::Null,
    };
    let s: String = u.arbitrary()?;
    let value = serde_json::json!({
        "v": number,
        "s": if u.arbitrary()? { serde_json::json!(s) } else { number.clone() },
        "g": u.int_in_range(0..=3)?,
        "h": [u.arbitrary::<bool>()?],
    });
    Ok(serde_json::to_vec(&value).expect("JSON"))
}

/// An event time: near a fixed one (so that windows meet), or any.
fn timestamp(u: &mut Unstructured<'_>) -> Result<i64> {
    Ok(match u.int_in_range(0..=3)? {
        0 => u.arbitrary()?,
        1 => *u.choose(&[
            i64::MIN,
            i64::MAX,
            *TIME_RANGE.start(),
            *TIME_RANGE.end(),
            *TIME_RANGE.start() - 1,
            *TIME_RANGE.end() + 1,
        ])?,
        _ => 1_700_000_000_000 + i64::from(u.int_in_range(-200_000..=200_000)?),
    })
}

/// Perhaps one change that makes the columns disagree (offsets that go
/// back or past their buffer, a missing column entry, a header out of
/// range or order); returns whether one was made.
fn disagree(u: &mut Unstructured<'_>, parts: &mut BatchParts) -> Result<bool> {
    let n = parts.value_ends.len();
    Ok(match u.int_in_range(0..=11)? {
        0 if n > 0 => {
            let i = u.choose_index(n)?;
            parts.value_ends[i] = u.arbitrary()?;
            true
        }
        1 if n > 0 => {
            let i = u.choose_index(n)?;
            parts.key_ends[i] = u.arbitrary()?;
            true
        }
        2 if n > 0 => {
            parts.timestamps.pop();
            true
        }
        3 if n > 0 => {
            parts.key_ends.pop();
            true
        }
        4 => {
            parts.values.push(0);
            true
        }
        5 => {
            parts.value_ends.push(u.arbitrary()?);
            true
        }
        6 => {
            let name: String = u.arbitrary()?;
            parts.headers.push((u.arbitrary()?, name, Vec::new()));
            true
        }
        7 if parts.headers.len() > 1 => {
            parts.headers.reverse();
            true
        }
        _ => false,
    })
}
