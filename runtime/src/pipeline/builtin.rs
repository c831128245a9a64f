//! The built-in stages of a processor chain, configured without a plugin:
//! `join` (a lookup join against a `[tables.NAME]`) and `dedup`
//! (deduplication within a watermark). Their state is the host's: the join
//! reads a shared [`TableSlot`], each partition's dedup keeps its keys in
//! memory, bounded, and hands them to the checkpoints
//! ([`crate::checkpoint::DedupSnapshot`]), so a restart resumes them.
//!
//! Both run in the partition worker's thread between the plugin stages, on
//! the same batches, and keep the records' order, key, event time and headers.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use sluice_plugin_sdk::Batch;

use crate::checkpoint::DedupSnapshot;
use crate::config::{JoinKind, OnError};
use crate::decode::{MAX_POINTERS, Pointer, extract_into};
use crate::table::{TableSlot, key_text};

/// What a built-in stage made of a batch.
#[derive(Debug, Default)]
pub struct BuiltinOutput {
    /// Records passed on, in input order.
    pub events: Batch,
    /// (input index, reason) of records the stage could not handle (not
    /// JSON; a full dedup state): they go to the stage's `on_error` policy.
    pub refused: Vec<(u32, String)>,
    /// Records dropped as duplicates (`dedup`).
    pub duplicates: u64,
    /// Records dropped as older than the watermark (`dedup`).
    pub late: u64,
    /// Records dropped for want of a match (`join` with `kind = "inner"`).
    pub unmatched: u64,
}

/// A configured `join` stage, shared by the partition workers.
#[derive(Debug)]
pub struct JoinSpec {
    /// `INDEX:join:TABLE`: how logs and dead letters name it.
    pub label: String,
    /// The table, swapped when its file changes.
    pub table: Arc<TableSlot>,
    /// Pointer to the record's lookup key.
    pub on: Pointer,
    /// Pointer where the row goes.
    pub target: Pointer,
    /// Left or inner.
    pub kind: JoinKind,
    /// What a record that is not JSON does.
    pub on_error: OnError,
}

/// Runs a `join` over a batch: each record's value at `on` looked up in the
/// table as it is at the start of the batch (a reload swaps it between
/// batches), the row inserted at `as`.
///
/// A record whose `as` is one member of the top level (`/dest_airport`) and
/// absent gets it spliced in before its closing brace, without the record
/// being parsed into a tree and written again; otherwise the record is parsed,
/// changed and written (objects created on the way, a value there replaced).
pub fn join(spec: &JoinSpec, batch: &Batch) -> BuiltinOutput {
    let table = spec.table.current();
    let mut out = BuiltinOutput {
        events: Batch::with_capacity(batch.len(), batch.values_len()),
        ..BuiltinOutput::default()
    };
    let paths = [&spec.on, &spec.target];
    let mut found = [None, None];
    let mut scratch = Vec::new();
    for event in batch {
        if let Err(reason) = extract_into(event.value(), &paths, &mut found) {
            out.refused.push((event.index() as u32, reason));
            continue;
        }
        let row = found[0]
            .as_ref()
            .and_then(key_text)
            .and_then(|k| table.get(&k));
        let Some(row) = row else {
            match spec.kind {
                JoinKind::Left => out.events.push_event(&event),
                JoinKind::Inner => out.unmatched += 1,
            }
            continue;
        };
        scratch.clear();
        if let Err(reason) = insert(
            event.value(),
            &spec.target,
            found[1].is_some(),
            row,
            &mut scratch,
        ) {
            out.refused.push((event.index() as u32, reason));
            continue;
        }
        out.events.push(event.key(), &scratch, event.timestamp_ms());
        for (name, value) in event.headers() {
            out.events.push_header(name, value);
        }
    }
    out
}

/// Writes `record` (valid JSON) with `row` (a JSON object's text) at `target`
/// into `out`. `present`: the record already has a value at `target`.
///
/// # Errors
/// The record, or a value on the way to `target`, is not an object.
fn insert(
    record: &[u8],
    target: &Pointer,
    present: bool,
    row: &str,
    out: &mut Vec<u8>,
) -> Result<(), String> {
    let tokens = target.tokens();
    let trimmed = record.trim_ascii();
    if tokens.len() == 1
        && !present
        && trimmed.first() == Some(&b'{')
        && trimmed.last() == Some(&b'}')
    {
        let body = &trimmed[..trimmed.len() - 1];
        out.extend_from_slice(body);
        if !body[1..].trim_ascii().is_empty() {
            out.push(b',');
        }
        serde_json::to_writer(&mut *out, &tokens[0]).expect("a string serializes");
        out.push(b':');
        out.extend_from_slice(row.as_bytes());
        out.push(b'}');
        return Ok(());
    }
    let mut value: serde_json::Value =
        serde_json::from_slice(record).map_err(|e| format!("invalid JSON: {e}"))?;
    let mut row =
        Some(serde_json::from_str::<serde_json::Value>(row).expect("table rows are JSON"));
    if tokens.is_empty() {
        value = row.take().expect("the row");
    }
    let mut at = &mut value;
    for (i, token) in tokens.iter().enumerate() {
        let object = at.as_object_mut().ok_or_else(|| {
            let path: String = tokens[..i].iter().map(|t| format!("/{t}")).collect();
            format!("cannot insert the row at `{target}`: the value at `{path}` is not an object")
        })?;
        if i + 1 == tokens.len() {
            object.insert(token.clone(), row.take().expect("the row"));
            break;
        }
        at = object
            .entry(token.clone())
            .or_insert_with(|| serde_json::Value::Object(Default::default()));
    }
    serde_json::to_writer(out, &value).expect("a JSON value serializes");
    Ok(())
}

/// A configured `dedup` stage, shared by the partition workers.
#[derive(Debug)]
pub struct DedupSpec {
    /// `INDEX:dedup`: how logs and dead letters name it.
    pub label: String,
    /// The pointers whose values, together, are a record's identity.
    pub keys: Vec<Pointer>,
    /// The watermark delay and how long a key is remembered, ms.
    pub within_ms: i64,
    /// Most keys one partition keeps.
    pub max_keys: usize,
    /// What a record that is not JSON, or that a full state cannot take, does.
    pub on_error: OnError,
}

impl DedupSpec {
    /// The name its state is saved under in a checkpoint, for `partition`:
    /// the partition and the key pointers (not the stage's place in the
    /// chain, so that adding a stage before it keeps its state).
    pub fn state_name(&self, partition: usize) -> String {
        let keys: Vec<String> = self.keys.iter().map(Pointer::to_string).collect();
        format!("p{partition} dedup [{}]", keys.join(", "))
    }
}

/// One partition's `dedup`: Spark's `dropDuplicatesWithinWatermark`
/// (<https://spark.apache.org/docs/latest/api/python/reference/pyspark.ss/api/pyspark.sql.DataFrame.dropDuplicatesWithinWatermark.html>):
/// "events are deduplicated as long as the time distance of earliest and
/// latest events are smaller than the delay threshold of watermark", and "too
/// late data older than watermark will be dropped".
///
/// Here, per partition and record by record (so the outcome does not depend on
/// how records were cut into batches):
/// - the watermark is the largest event time the stage has seen on this
///   partition before the record, minus `within` (Spark's `withWatermark`
///   delay; `within` is both);
/// - a record older than the watermark is dropped as late (counted);
/// - the first record of a key passes and its event time is kept; a later one
///   with the same key is dropped (counted) while the key's state lives;
/// - a key's state expires when the watermark passes its first event time
///   plus `within` (Spark keeps `event time + delay` and evicts it once the
///   watermark is past it); the next record of that key passes again.
///
/// The state holds at most `max_keys` keys: a record that would add one more,
/// when no expired key can make room, is refused (the stage's `on_error`),
/// never passed undeduplicated.
#[derive(Debug, Default)]
pub struct DedupState {
    /// Key (a JSON array of the key values) → its first event time.
    seen: HashMap<Arc<str>, i64>,
    /// (first event time, key) in the order keys came, for expiring them.
    queue: VecDeque<(i64, Arc<str>)>,
    /// Largest event time seen.
    max_ts: Option<i64>,
}

impl DedupState {
    /// The state saved in `snapshot`.
    pub fn restore(snapshot: &DedupSnapshot) -> Self {
        let mut state = DedupState {
            max_ts: snapshot.max_ts,
            ..DedupState::default()
        };
        for (key, first) in &snapshot.keys {
            let key: Arc<str> = key.as_str().into();
            state.seen.insert(key.clone(), *first);
            state.queue.push_back((*first, key));
        }
        state
    }

    /// The live keys, in the order they came, for a checkpoint.
    pub fn snapshot(&self) -> DedupSnapshot {
        DedupSnapshot {
            max_ts: self.max_ts,
            keys: self
                .queue
                .iter()
                .filter(|(first, key)| self.seen.get(key) == Some(first))
                .map(|(first, key)| (key.to_string(), *first))
                .collect(),
        }
    }

    /// Keys held.
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }

    fn watermark(&self, within: i64) -> i64 {
        self.max_ts.map_or(i64::MIN, |m| m.saturating_sub(within))
    }

    /// Drops the keys in the queue's front whose state expired.
    fn expire(&mut self, within: i64) {
        let watermark = self.watermark(within);
        while let Some((first, _)) = self.queue.front() {
            if first.saturating_add(within) >= watermark {
                break;
            }
            let (first, key) = self.queue.pop_front().expect("a front");
            if self.seen.get(&key) == Some(&first) {
                self.seen.remove(&key);
            }
        }
    }

    /// Drops every expired key, wherever it is in the queue (when the state
    /// is full: keys that came out of event-time order may hold the queue's
    /// front).
    fn expire_all(&mut self, within: i64, watermark: i64) {
        self.seen
            .retain(|_, first| first.saturating_add(within) >= watermark);
        let seen = &self.seen;
        self.queue
            .retain(|(first, key)| seen.get(key) == Some(first));
    }

    /// Runs a batch through the state (see [`DedupState`]).
    pub fn process(&mut self, spec: &DedupSpec, batch: &Batch) -> BuiltinOutput {
        let within = spec.within_ms;
        let mut out = BuiltinOutput {
            events: Batch::with_capacity(batch.len(), batch.values_len()),
            ..BuiltinOutput::default()
        };
        let paths: Vec<&Pointer> = spec.keys.iter().collect();
        let mut found = vec![None; paths.len().min(MAX_POINTERS)];
        let mut key = String::new();
        for event in batch {
            let ts = event.timestamp_ms();
            let watermark = self.watermark(within);
            if ts < watermark {
                out.late += 1;
                continue;
            }
            // Every record the stage takes moves the watermark of the next.
            self.max_ts = Some(self.max_ts.map_or(ts, |m| m.max(ts)));
            if let Err(reason) = extract_into(event.value(), &paths, &mut found) {
                out.refused.push((event.index() as u32, reason));
                continue;
            }
            key.clear();
            key.push('[');
            for (i, value) in found.iter().enumerate() {
                if i > 0 {
                    key.push(',');
                }
                match value {
                    Some(v) => key.push_str(&v.to_string()),
                    None => key.push_str("null"),
                }
            }
            key.push(']');
            match self.seen.get(key.as_str()).copied() {
                Some(first) if first.saturating_add(within) >= watermark => {
                    out.duplicates += 1;
                }
                known => {
                    if known.is_none() && self.seen.len() >= spec.max_keys {
                        self.expire_all(within, watermark);
                    }
                    if known.is_none() && self.seen.len() >= spec.max_keys {
                        out.refused.push((
                            event.index() as u32,
                            format!(
                                "dedup state full: this partition holds max_keys = {} keys younger than the watermark (raise `max_keys` or shorten `within`)",
                                spec.max_keys
                            ),
                        ));
                        continue;
                    }
                    let key: Arc<str> = key.as_str().into();
                    self.seen.insert(key.clone(), ts);
                    self.queue.push_back((ts, key));
                    out.events.push_event(&event);
                }
            }
        }
        self.expire(within);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::{TableFormat, TableSpec};

    fn batch(records: &[(&str, i64)]) -> Batch {
        let mut b = Batch::new();
        for (i, (v, ts)) in records.iter().enumerate() {
            b.push(Some(format!("k{i}").as_bytes()), v.as_bytes(), *ts);
            b.push_header("h", format!("{i}").as_bytes());
        }
        b
    }

    fn values(b: &Batch) -> Vec<String> {
        crate::testkit::values_of(b)
    }

    fn airports(dir: &std::path::Path) -> Arc<TableSlot> {
        let file = dir.join("airports.csv");
        std::fs::write(&file, "faa,name\nJFK,Kennedy\nLGA,La Guardia\n7,Seven\n").unwrap();
        let spec = TableSpec {
            name: "airports".into(),
            path: file,
            kafka: None,
            format: TableFormat::Csv,
            key: "faa".into(),
            csv: Default::default(),
        };
        let table = spec.load().unwrap();
        TableSlot::new(spec, table)
    }

    fn join_spec(table: Arc<TableSlot>, target: &str, kind: JoinKind) -> JoinSpec {
        JoinSpec {
            label: "0:join:airports".into(),
            table,
            on: Pointer::parse("/dest").unwrap(),
            target: Pointer::parse(target).unwrap(),
            kind,
            on_error: OnError::Skip,
        }
    }

    #[test]
    fn a_left_join_inserts_the_row_and_keeps_the_unmatched() {
        let dir = tempfile::tempdir().unwrap();
        let spec = join_spec(airports(dir.path()), "/airport", JoinKind::Left);
        let input = batch(&[
            (r#"{"dest":"JFK","n":1}"#, 5),
            (r#"{"dest":"BQN"}"#, 6),
            (r#" { } "#, 7),
            (r#"{"dest":7}"#, 8),
            ("not json", 9),
            (r#"{"dest":"LGA","airport":{"old":1}}"#, 10),
        ]);
        let out = join(&spec, &input);
        assert_eq!(
            values(&out.events),
            [
                r#"{"dest":"JFK","n":1,"airport":{"faa":"JFK","name":"Kennedy"}}"#,
                r#"{"dest":"BQN"}"#,
                r#" { } "#,
                r#"{"dest":7,"airport":{"faa":"7","name":"Seven"}}"#,
                r#"{"dest":"LGA","airport":{"faa":"LGA","name":"La Guardia"}}"#,
            ]
        );
        assert_eq!(out.refused.len(), 1);
        assert_eq!(out.refused[0].0, 4);
        assert_eq!(out.unmatched, 0);
        // Key, event time and headers go with the record.
        let first = out.events.get(0).unwrap();
        assert_eq!(first.key(), Some(&b"k0"[..]));
        assert_eq!(first.timestamp_ms(), 5);
        assert_eq!(first.headers().collect::<Vec<_>>(), [("h", &b"0"[..])]);
        for line in values(&out.events) {
            serde_json::from_str::<serde_json::Value>(&line).unwrap();
        }
    }

    #[test]
    fn an_inner_join_drops_and_counts_the_unmatched_and_nests_the_row() {
        let dir = tempfile::tempdir().unwrap();
        let spec = join_spec(airports(dir.path()), "/x/y", JoinKind::Inner);
        let input = batch(&[
            (r#"{"dest":"JFK"}"#, 1),
            (r#"{"dest":null}"#, 2),
            (r#"{}"#, 3),
        ]);
        let out = join(&spec, &input);
        assert_eq!(
            values(&out.events),
            [r#"{"dest":"JFK","x":{"y":{"faa":"JFK","name":"Kennedy"}}}"#]
        );
        assert_eq!(out.unmatched, 2);
        let input = batch(&[(r#"{"dest":"JFK","x":3}"#, 1)]);
        let out = join(&spec, &input);
        assert!(out.events.is_empty());
        assert!(
            out.refused[0].1.contains("is not an object"),
            "{:?}",
            out.refused
        );
    }

    fn dedup_spec(within_ms: i64, max_keys: usize) -> DedupSpec {
        DedupSpec {
            label: "0:dedup".into(),
            keys: vec![Pointer::parse("/a").unwrap(), Pointer::parse("/b").unwrap()],
            within_ms,
            max_keys,
            on_error: OnError::Skip,
        }
    }

    #[test]
    fn dedup_passes_the_first_of_a_key_until_the_watermark_passes_it() {
        let spec = dedup_spec(10, 100);
        let mut state = DedupState::default();
        let out = state.process(
            &spec,
            &batch(&[
                (r#"{"a":1,"b":"x","n":0}"#, 100),
                (r#"{"a":1,"b":"x","n":1}"#, 105), // duplicate
                (r#"{"a":1,"b":"y"}"#, 106),       // another key
                (r#"{"b":"x","a":1,"n":2}"#, 120), // watermark 96 before it: duplicate
                (r#"{"a":1}"#, 121),               // b missing: null
                (r#"{"a":1,"b":null}"#, 122),      // the same key
                (r#"{"a":1,"b":"x","n":3}"#, 119), // watermark 110 > 100 + 10: expired, passes
                (r#"{"a":2}"#, 109),               // older than the watermark 112: late
                ("nope", 130),
            ]),
        );
        assert_eq!(
            values(&out.events),
            [
                r#"{"a":1,"b":"x","n":0}"#,
                r#"{"a":1,"b":"y"}"#,
                r#"{"a":1}"#,
                r#"{"a":1,"b":"x","n":3}"#,
            ]
        );
        assert_eq!((out.duplicates, out.late), (3, 1));
        assert_eq!(out.refused.len(), 1);
        // The last record (refused) moved the watermark to 120: [1,"y"]
        // (106) has expired, [1,null] (121) and [1,"x"] (119) live.
        let snapshot = state.snapshot();
        assert_eq!(snapshot.max_ts, Some(130));
        assert_eq!(
            snapshot.keys,
            vec![
                ("[1,null]".to_string(), 121),
                ("[1,\"x\"]".to_string(), 119)
            ]
        );
    }

    #[test]
    fn batching_does_not_change_what_dedup_passes_and_a_restored_state_goes_on() {
        let spec = dedup_spec(80, 1000);
        let records: Vec<(String, i64)> = (0..400)
            .map(|i| {
                (
                    format!(r#"{{"a":{},"b":0}}"#, i % 37),
                    1000 + i * 3 - (i % 5) * 7,
                )
            })
            .collect();
        let refs: Vec<(&str, i64)> = records.iter().map(|(v, t)| (v.as_str(), *t)).collect();
        let mut whole = DedupState::default();
        let expected = values(&whole.process(&spec, &batch(&refs)).events);
        for cut in [1, 7, 64] {
            let mut state = DedupState::default();
            let mut got = Vec::new();
            for chunk in refs.chunks(cut) {
                // A checkpoint and a restart between every batch.
                state = DedupState::restore(&state.snapshot());
                got.extend(values(&state.process(&spec, &batch(chunk)).events));
            }
            assert_eq!(got, expected, "batches of {cut}");
        }
        assert!(
            expected.len() > 37 && expected.len() < 400,
            "{}",
            expected.len()
        );
    }

    #[test]
    fn a_full_state_refuses_new_keys_after_expiring_what_it_can() {
        let spec = dedup_spec(10, 2);
        let mut state = DedupState::default();
        let out = state.process(
            &spec,
            &batch(&[
                (r#"{"a":1}"#, 100),
                (r#"{"a":2}"#, 101),
                (r#"{"a":3}"#, 102), // full
                (r#"{"a":1}"#, 103), // a duplicate still drops
                (r#"{"a":4}"#, 130), // watermark 93: still full
                (r#"{"a":5}"#, 131), // watermark 120: 1 and 2 expired
            ]),
        );
        assert_eq!(
            values(&out.events),
            [r#"{"a":1}"#, r#"{"a":2}"#, r#"{"a":5}"#]
        );
        let refused: Vec<u32> = out.refused.iter().map(|r| r.0).collect();
        assert_eq!(refused, [2, 4]);
        assert!(
            out.refused[0].1.contains("max_keys = 2"),
            "{}",
            out.refused[0].1
        );
        assert_eq!(out.duplicates, 1);
        assert_eq!(state.len(), 1);
    }
}
