//! Event-time windows on the real flights, checked against windows computed here
//! straight from the NDJSON (tumbling, sliding, session; append and update
//! modes), and late records on a small hand-made stream.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};

use crate::support::*;

pub(crate) const HOUR: i64 = 3_600_000;

/// A delayed flight: (carrier, origin, event time ms, the record).
pub(crate) type Flight = (String, String, i64, Value);

/// The delayed flights (dep_delay ≥ 15) among the first `n`, as the
/// `flights_delay` plugin keeps them.
pub(crate) fn delayed(n: usize) -> Vec<Flight> {
    flights_lines(n)
        .iter()
        .filter_map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            let delay = v["dep_delay"].as_f64()?;
            if delay < 15.0 {
                return None;
            }
            let t = chrono::DateTime::parse_from_rfc3339(v["event_time"].as_str()?)
                .unwrap()
                .timestamp_millis();
            Some((
                v["carrier"].as_str()?.to_string(),
                v["origin"].as_str()?.to_string(),
                t,
                v,
            ))
        })
        .collect()
}

pub(crate) fn time(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// The nearest-rank quantile `q` of `sorted` (the smallest value with at least
/// ⌈q·n⌉ values at or below it).
pub(crate) fn nearest_rank(sorted: &[i64], q: f64) -> i64 {
    let rank = ((q * sorted.len() as f64).ceil() as usize).max(1);
    sorted[rank - 1]
}

/// Aggregates computed here: count, avg/max of dep_delay, sum of arr_delay
/// (nulls skipped), distinct destinations, first and last flight number, and
/// the 50th/90th/100th percentiles of dep_delay (the `delay_quantiles`
/// aggregator plugin).
fn aggregates(records: &[&Flight]) -> Value {
    let delays: Vec<f64> = records
        .iter()
        .map(|r| r.3["dep_delay"].as_f64().unwrap())
        .collect();
    let arr: Vec<i64> = records
        .iter()
        .filter_map(|r| r.3["arr_delay"].as_i64())
        .collect();
    let dests: BTreeSet<&str> = records
        .iter()
        .map(|r| r.3["dest"].as_str().unwrap())
        .collect();
    // Ties in event time: the smaller (first) or larger (last) value wins.
    let flight = |r: &&&Flight| (r.2, r.3["flight"].as_i64().unwrap());
    let first = records.iter().min_by_key(flight).unwrap();
    let last = records.iter().max_by_key(flight).unwrap();
    let mut sorted: Vec<i64> = records
        .iter()
        .map(|r| r.3["dep_delay"].as_i64().unwrap())
        .collect();
    sorted.sort_unstable();
    json!({
        "delay_quantiles_dep_delay": {
            "p50": nearest_rank(&sorted, 0.5),
            "p90": nearest_rank(&sorted, 0.9),
            "p100": nearest_rank(&sorted, 1.0),
        },
        "count": records.len(),
        "avg_dep_delay": delays.iter().sum::<f64>() / delays.len() as f64,
        "max_dep_delay": delays.iter().cloned().fold(f64::MIN, f64::max),
        "sum_arr_delay": if arr.is_empty() { Value::Null } else { json!(arr.iter().sum::<i64>()) },
        "count_distinct_dest": dests.len(),
        "first_flight": first.3["flight"],
        "last_flight": last.3["flight"],
    })
}

pub(crate) const AGGREGATES: &str = r#"[
  { op = "count" }, { op = "avg", field = "/dep_delay" }, { op = "max", field = "/dep_delay" },
  { op = "sum", field = "/arr_delay" }, { op = "count_distinct", field = "/dest" },
  { op = "first", field = "/flight" }, { op = "last", field = "/flight" },
  { op = "wasm", plugin = "delay_quantiles.wasm", field = "/dep_delay", config = { quantiles = "0.5,0.9,1" } },
]"#;

fn config(lines: &str, partitions: usize, window: &str) -> String {
    Config::new()
        .file_source("f", lines)
        .key("/carrier")
        .timestamp("/event_time")
        .file_sink("out", "out.ndjson")
        .file_sink("dlq", "dlq.ndjson")
        .pipeline("w", "f", &["out"])
        .partitions(partitions)
        .processor(r#"{ plugin = "flights_delay.wasm", config = { min_delay = 15 } }"#)
        .window(window)
        .aggregate(AGGREGATES)
        .dead_letter("dlq")
        .build()
}

/// Runs the flights (first `n`) through `window`; returns the output rows and
/// the summary's `out`.
fn run(n: usize, partitions: usize, window: &str) -> (Vec<Value>, u64) {
    let scratch = Scratch::new(&config("in.ndjson", partitions, window));
    scratch.write("in.ndjson", &(flights_lines(n).join("\n") + "\n"));
    let output = scratch.run();
    assert_exit(&output, 0);
    assert_eq!(count(&output, "w", "late"), 0);
    assert!(scratch.read_lines("dlq.ndjson").is_empty());
    let rows: Vec<Value> = scratch.read_json("out.ndjson");
    (rows, count(&output, "w", "out"))
}

/// Compares rows with expected ones field by field (floats within 1e-9).
pub(crate) fn assert_rows(got: &[Value], want: &[Value]) {
    assert_eq!(got.len(), want.len(), "number of windows");
    for (g, w) in got.iter().zip(want) {
        let (g, w) = (g.as_object().unwrap(), w.as_object().unwrap());
        assert_eq!(
            g.keys().collect::<BTreeSet<_>>(),
            w.keys().collect::<BTreeSet<_>>(),
            "{g:?} vs {w:?}"
        );
        for (k, wv) in w {
            let gv = &g[k];
            match (gv.as_f64(), wv.as_f64()) {
                (Some(a), Some(b)) if !(gv.is_i64() && wv.is_i64()) => {
                    assert!((a - b).abs() < 1e-9, "{k}: {gv} vs {wv} in {g:?}")
                }
                _ => assert_eq!(gv, wv, "{k} in {g:?}"),
            }
        }
    }
}

/// Expected rows of fixed windows (`size`, `slide`) keyed by carrier, in the
/// operator's order: by window end, then key, then start.
pub(crate) fn expected_fixed(records: &[Flight], size: i64, slide: i64) -> Vec<Value> {
    let mut windows: BTreeMap<(i64, String, i64), Vec<&Flight>> = BTreeMap::new();
    for r in records {
        // Brute force: every aligned start whose window holds t.
        let mut start = (r.2 - size).div_euclid(slide) * slide;
        while start <= r.2 {
            if r.2 < start + size {
                windows
                    .entry((start + size, r.0.clone(), start))
                    .or_default()
                    .push(r);
            }
            start += slide;
        }
    }
    windows
        .iter()
        .map(|((end, key, start), recs)| {
            let mut row =
                json!({"window_start": time(*start), "window_end": time(*end), "key": key});
            row.as_object_mut()
                .unwrap()
                .extend(aggregates(recs).as_object().unwrap().clone());
            row
        })
        .collect()
}

#[test]
fn tumbling_windows_of_all_the_flights_match() {
    let records = delayed(usize::MAX);
    let want = expected_fixed(&records, HOUR, HOUR);
    let (got, out) = run(
        usize::MAX,
        4,
        r#"{ kind = "tumbling", size = "1h", watermark = "10m" }"#,
    );
    assert_eq!(out, want.len() as u64);
    assert_rows(&got, &want);
}

#[test]
fn sliding_windows_match() {
    let records = delayed(40_000);
    let want = expected_fixed(&records, 2 * HOUR, 30 * 60_000);
    let (got, _) = run(
        40_000,
        3,
        r#"{ kind = "sliding", size = "2h", slide = "30m", watermark = "5m" }"#,
    );
    assert_rows(&got, &want);
}

#[test]
fn session_windows_by_origin_match() {
    let gap = 20 * 60_000;
    let records = delayed(40_000);
    // Sessions per origin: sorted times, split where the next record is a gap
    // or more after the previous one.
    let mut by_origin: BTreeMap<String, Vec<&Flight>> = BTreeMap::new();
    for r in &records {
        by_origin.entry(r.1.clone()).or_default().push(r);
    }
    let mut want: Vec<(i64, String, i64, Value)> = Vec::new();
    for (origin, mut recs) in by_origin {
        recs.sort_by_key(|r| r.2);
        let mut session: Vec<&Flight> = Vec::new();
        let mut close = |session: &mut Vec<&Flight>| {
            let (start, end) = (session[0].2, session[session.len() - 1].2 + gap);
            let mut row =
                json!({"window_start": time(start), "window_end": time(end), "origin": origin});
            row.as_object_mut()
                .unwrap()
                .extend(aggregates(session).as_object().unwrap().clone());
            let key = serde_json::to_string(&[&origin]).unwrap();
            want.push((end, key, start, row));
            session.clear();
        };
        for r in recs {
            if session.last().is_some_and(|p| r.2 >= p.2 + gap) {
                close(&mut session);
            }
            session.push(r);
        }
        close(&mut session);
    }
    want.sort_by(|a, b| (a.0, &a.1, a.2).cmp(&(b.0, &b.1, b.2)));
    let want: Vec<Value> = want.into_iter().map(|w| w.3).collect();
    let (got, _) = run(
        40_000,
        2,
        r#"{ kind = "session", gap = "20m", group_by = ["/origin"], watermark = "1m" }"#,
    );
    assert_rows(&got, &want);
}

#[test]
fn update_mode_ends_with_the_same_windows() {
    let records = delayed(30_000);
    let want = expected_fixed(&records, HOUR, HOUR);
    let (got, out) = run(
        30_000,
        3,
        r#"{ kind = "tumbling", size = "1h", output_mode = "update" }"#,
    );
    // Every change is a row; the last row of each window is its final value.
    assert!(out as usize >= want.len());
    let mut last: BTreeMap<(String, String, String), Value> = BTreeMap::new();
    for row in got {
        let id = (
            row["window_end"].as_str().unwrap().to_string(),
            row["key"].as_str().unwrap().to_string(),
            row["window_start"].as_str().unwrap().to_string(),
        );
        last.insert(id, row);
    }
    let finals: Vec<Value> = last.into_values().collect();
    assert_rows(&finals, &want);
}

/// A hand-made stream, one partition, batches of one record: 10:00, 10:30,
/// 11:20 (the watermark, 10 minutes behind, passes 11:00), then 10:45.
fn late_run(extra: &str, dead_letter: bool) -> (std::process::Output, Scratch) {
    let times = ["10:00", "10:30", "11:20", "10:45", "11:30"];
    let input: String = times
        .iter()
        .enumerate()
        .map(|(i, t)| format!("{{\"k\":\"a\",\"i\":{i},\"t\":\"2024-05-01T{t}:00Z\"}}\n"))
        .collect();
    let config = Config::new()
        .file_source("s", "in.ndjson")
        .key("/k")
        .timestamp("/t")
        .file_sink("out", "out.ndjson")
        .file_sink("dlq", "dlq.ndjson")
        .pipeline("p", "s", &["out"])
        .batch("{ max_records = 1 }")
        .window(&format!(
            r#"{{ kind = "tumbling", size = "1h", watermark = "10m" {extra} }}"#
        ))
        .aggregate(r#"[{ op = "count" }, { op = "max", field = "/i" }]"#);
    let config = if dead_letter {
        config.dead_letter("dlq")
    } else {
        config
    };
    let scratch = Scratch::new(&config.build());
    scratch.write("in.ndjson", &input);
    let output = scratch.run();
    assert_exit(&output, 0);
    (output, scratch)
}

#[test]
fn late_records_go_to_the_dead_letter_sink() {
    let (output, scratch) = late_run("", true);
    assert_eq!(count(&output, "p", "late"), 1);
    let dlq = scratch.read_lines("dlq.ndjson");
    assert_eq!(dlq.len(), 1);
    let d: Value = serde_json::from_str(&dlq[0]).unwrap();
    assert_eq!(d["stage"], "window");
    assert!(d["original"].as_str().unwrap().contains("\"i\":3"));
    assert!(d["reason"].as_str().unwrap().starts_with("late: event time 2024-05-01T10:45:00.000Z is behind the watermark 2024-05-01T11:10:00.000Z"), "{d}");
    let out: Vec<Value> = scratch.read_json("out.ndjson");
    assert_eq!(
        out,
        vec![
            json!({"window_start":"2024-05-01T10:00:00.000Z","window_end":"2024-05-01T11:00:00.000Z","key":"a","count":2,"max_i":1}),
            json!({"window_start":"2024-05-01T11:00:00.000Z","window_end":"2024-05-01T12:00:00.000Z","key":"a","count":2,"max_i":4}),
        ]
    );
}

#[test]
fn allowed_lateness_takes_the_record_and_drop_counts_it() {
    // 15 minutes of lateness: [10:00, 11:00) stays open until the watermark
    // reaches 11:15; 10:45 arrives at 11:10 and is counted in.
    let (output, scratch) = late_run(", allowed_lateness = \"15m\"", true);
    assert_eq!(count(&output, "p", "late"), 0);
    let out = scratch.read_lines("out.ndjson");
    let first: Value = serde_json::from_str(&out[0]).unwrap();
    assert_eq!(first["count"], 3);
    assert_eq!(first["max_i"], 3);

    // `drop`: counted, not dead-lettered.
    let (output, scratch) = late_run(", late = \"drop\"", false);
    assert_eq!(count(&output, "p", "late"), 1);
    assert!(scratch.read_lines("dlq.ndjson").is_empty());
}

#[test]
fn window_config_errors_are_located() {
    let base = |window: &str, aggregate: &str| {
        format!(
            "[sources.s]\ntype = \"stdin\"\n[sinks.out]\ntype = \"stdout\"\n[pipelines.p]\nsource = \"s\"\nsinks = [\"out\"]\n{window}\n{aggregate}\n"
        )
    };
    let cases = [
        (
            base("window = { kind = \"tumbling\", size = \"1h\" }", ""),
            "a window needs `aggregate",
        ),
        (
            base("", "aggregate = [{ op = \"count\" }]"),
            "`aggregate` needs a `window",
        ),
        (
            base(
                "window = { kind = \"sliding\", size = \"1h\" }",
                "aggregate = [{ op = \"count\" }]",
            ),
            "a sliding window needs `slide`",
        ),
        (
            base(
                "window = { kind = \"sliding\", size = \"1h\", slide = \"2h\" }",
                "aggregate = [{ op = \"count\" }]",
            ),
            "slide ≤ size",
        ),
        (
            base(
                "window = { kind = \"session\" }",
                "aggregate = [{ op = \"count\" }]",
            ),
            "a session window needs `gap`",
        ),
        (
            base(
                "window = { kind = \"tumbling\", size = \"1h\" }",
                "aggregate = [{ op = \"avg\" }]",
            ),
            "aggregate `avg` needs a `field`",
        ),
        (
            base(
                "window = { kind = \"tumbling\", size = \"1h\" }",
                "aggregate = [{ op = \"count\" }, { op = \"sum\", field = \"/x\", as = \"count\" }]",
            ),
            "two output fields are named `count`",
        ),
        (
            base(
                "window = { kind = \"tumbling\", size = \"1h\", late = \"dead-letter\" }",
                "aggregate = [{ op = \"count\" }]",
            ),
            "needs the pipeline's `dead_letter` sink",
        ),
        (
            base(
                "window = { kind = \"tumbling\", size = \"0s\" }",
                "aggregate = [{ op = \"count\" }]",
            ),
            "field `size`: must be between 1ms and 366days",
        ),
        (
            base(
                "window = { kind = \"weekly\" }",
                "aggregate = [{ op = \"count\" }]",
            ),
            "unknown variant `weekly`",
        ),
        (
            base(
                "window = { kind = \"tumbling\", size = \"1h\" }",
                "aggregate = [{ op = \"median\", field = \"/x\" }]",
            ),
            "unknown variant `median`",
        ),
        (
            // Located at the aggregate's field (line 9), not the window.
            base(
                "window = { kind = \"tumbling\", size = \"1h\" }",
                "aggregate = [{ op = \"avg\", field = \"dep_delay\" }]",
            ),
            "sluice.toml:9:36: field `field`: JSON pointer \"dep_delay\" must start with `/`",
        ),
    ];
    for (config, want) in cases {
        let scratch = Scratch::new(&config);
        let output = scratch.command("validate").output().unwrap();
        assert_exit(&output, 2);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("sluice.toml:"), "not located: {stderr}");
        assert!(stderr.contains(want), "{want:?} not in {stderr}");
    }
}

/// A record whose own session `[t, t + gap)` is behind the watermark, but that
/// falls inside a session still open, joins it (Flink merges before it checks
/// lateness).
#[test]
fn a_record_inside_an_open_session_is_not_late() {
    let scratch = Scratch::new(
        &Config::new()
            .file_source("s", "in.ndjson")
            .key("/k")
            .timestamp("/t")
            .file_sink("out", "out.ndjson")
            .file_sink("dlq", "dlq.ndjson")
            .pipeline("p", "s", &["out"])
            .batch("{ max_records = 3 }")
            .window(r#"{ kind = "session", gap = "5m" }"#)
            .aggregate(r#"[{ op = "count" }]"#)
            .dead_letter("dlq")
            .build(),
    );
    // Batch 1 makes the session [00:01, 00:12) and the watermark 00:07; in
    // batch 2, 00:02's own session [00:02, 00:07) is closed, but it lies in the
    // open one.
    let input: String = ["00:01", "00:05", "00:07", "00:02"]
        .iter()
        .map(|t| format!("{{\"k\":\"AA\",\"t\":\"2024-05-01T{t}:00Z\"}}\n"))
        .collect();
    scratch.write("in.ndjson", &input);
    let output = scratch.run();
    assert_exit(&output, 0);
    assert_eq!(count(&output, "p", "late"), 0);
    assert!(scratch.read_lines("dlq.ndjson").is_empty());
    let rows: Vec<Value> = scratch.read_json("out.ndjson");
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["window_start"], "2024-05-01T00:01:00.000Z");
    assert_eq!(rows[0]["window_end"], "2024-05-01T00:12:00.000Z");
    assert_eq!(rows[0]["count"], 4);
}

/// `missing_timestamp = "dead-letter"`: a record without an event time goes to
/// the dead-letter sink instead of taking the read time (which would drag the
/// watermark to now and make the rest late).
#[test]
fn a_record_without_event_time_can_be_dead_lettered() {
    // A source reading `in.ndjson` with `missing_timestamp = "dead-letter"`,
    // and `timestamp = "/t"` if `timestamp`.
    let config = |timestamp: bool| {
        let source = Config::new()
            .file_source("s", "in.ndjson")
            .key("/k")
            .set_str("missing_timestamp", "dead-letter");
        let source = if timestamp {
            source.timestamp("/t")
        } else {
            source
        };
        source
            .file_sink("out", "out.ndjson")
            .file_sink("dlq", "dlq.ndjson")
            .pipeline("p", "s", &["out"])
            .batch("{ max_records = 1 }")
            .window(r#"{ kind = "tumbling", size = "1h" }"#)
            .aggregate(r#"[{ op = "count" }]"#)
            .dead_letter("dlq")
            .build()
    };
    let scratch = Scratch::new(&config(true));
    scratch.write(
        "in.ndjson",
        "{\"k\":\"a\",\"t\":\"2024-05-01T10:00:00Z\"}\n{\"k\":\"a\"}\n{\"k\":\"a\",\"t\":\"2024-05-01T10:20:00Z\"}\n",
    );
    let output = scratch.run();
    assert_exit(&output, 0);
    assert_eq!(count(&output, "p", "late"), 0);
    let out = scratch.read_lines("out.ndjson");
    assert_eq!(out.len(), 1, "{out:?}");
    let row: Value = serde_json::from_str(&out[0]).unwrap();
    assert_eq!(row["count"], 2);
    let dlq = scratch.read_lines("dlq.ndjson");
    assert_eq!(dlq.len(), 1);
    let dead: Value = serde_json::from_str(&dlq[0]).unwrap();
    assert_eq!(dead["original"], "{\"k\":\"a\"}");
    assert!(dead["reason"].as_str().unwrap().contains("no event time"));

    // It needs `timestamp`.
    let config = config(false);
    let scratch = Scratch::new(&config);
    scratch.write("in.ndjson", "");
    let output = scratch.command("validate").output().unwrap();
    assert_exit(&output, 2);
    let err = String::from_utf8_lossy(&output.stderr);
    let at = format!("sluice.toml:{}", line_of(&config, "missing_timestamp"));
    assert!(
        err.contains(&at) && err.contains("needs `timestamp`"),
        "{err}"
    );
}

/// The main job's aggregates (`examples/flights/sluice.toml`), whose rows
/// [`hourly_windows`] computes.
pub(crate) const HOURLY_AGGREGATES: &str = r#"[{ op = "count", as = "delayed" }, { op = "avg", field = "/dep_delay", as = "avg_dep_delay" },
  { op = "max", field = "/dep_delay", as = "max_dep_delay" },
  { op = "wasm", plugin = "delay_quantiles.wasm", field = "/dep_delay", config = { quantiles = "0.5,0.9,0.99" }, as = "dep_delay_quantiles" }]"#;

/// The windows of the main job (`examples/flights/sluice.toml`) over the
/// first `n` flights, computed here: per carrier and hour, the delayed
/// flights' count, mean and worst delay and p50/p90/p99.
pub(crate) fn hourly_windows(n: usize) -> Vec<Value> {
    let mut windows: BTreeMap<(i64, String), Vec<i64>> = BTreeMap::new();
    for (carrier, _, t, v) in delayed(n) {
        let start = t.div_euclid(HOUR) * HOUR;
        windows
            .entry((start, carrier))
            .or_default()
            .push(v["dep_delay"].as_i64().unwrap());
    }
    windows
        .into_iter()
        .map(|((start, carrier), mut delays)| {
            delays.sort_unstable();
            serde_json::json!({
                "window_start": time(start),
                "window_end": time(start + HOUR),
                "key": carrier,
                "delayed": delays.len(),
                "avg_dep_delay": delays.iter().sum::<i64>() as f64 / delays.len() as f64,
                "max_dep_delay": delays[delays.len() - 1],
                "dep_delay_quantiles": {
                    "p50": nearest_rank(&delays, 0.5),
                    "p90": nearest_rank(&delays, 0.9),
                    "p99": nearest_rank(&delays, 0.99),
                },
            })
        })
        .collect()
}
