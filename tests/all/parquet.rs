//! The `parquet` sink, read back by an independent reader: pyarrow, from the
//! venv `cargo xtask setup` makes in `target/toolchains/pyarrow` (not the
//! parquet crate sluice writes with). Without it the tests skip — or fail
//! when `SLUICE_REQUIRE_TOOLCHAINS` is set, as under `cargo xtask test`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::*;

/// The venv's Python, once it imports pyarrow; `None` after a skip.
fn pyarrow(test: &str) -> Option<PathBuf> {
    let python =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/toolchains/pyarrow/bin/python");
    let ok = Command::new(&python)
        .args(["-c", "import pyarrow.parquet, pyarrow.dataset"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        skip(
            test,
            &format!(
                "{} cannot import pyarrow (`cargo xtask setup` makes that venv)",
                python.display()
            ),
        );
        return None;
    }
    Some(python)
}

/// Reads every visible `*.parquet` under argv[1] with pyarrow, one file at a
/// time (timestamps as epoch ms), and the whole folder as a Hive-partitioned
/// dataset; prints one JSON object.
const READ: &str = r#"
import json, os, sys
import pyarrow as pa, pyarrow.parquet as pq, pyarrow.dataset as ds
root = sys.argv[1]
out = {"files": [], "rows": [], "hidden": []}
for d, dirs, names in sorted(os.walk(root)):
    dirs[:] = [x for x in dirs if not x.startswith(('.', '_'))]
    for n in sorted(names):
        f = os.path.join(d, n)
        rel = os.path.relpath(f, root)
        if n.startswith(('.', '_')):
            out["hidden"].append(rel)
            continue
        if not n.endswith('.parquet'):
            continue
        t = pq.read_table(f, partitioning=None)
        md = pq.ParquetFile(f).metadata
        cols = {}
        for name in t.column_names:
            c = t.column(name)
            if pa.types.is_timestamp(c.type):
                c = c.cast(pa.int64())
            cols[name] = c.to_pylist()
        out["files"].append({
            "path": rel, "rows": t.num_rows,
            "compression": md.row_group(0).column(0).compression if md.num_row_groups else None,
            "schema": [f"{x.name}:{x.type}" for x in t.schema],
        })
        for i in range(t.num_rows):
            row = {k: v[i] for k, v in cols.items()}
            row["_file"] = rel
            out["rows"].append(row)
dataset = ds.dataset(root, format="parquet", partitioning="hive")
out["dataset_rows"] = dataset.count_rows()
out["dataset_columns"] = dataset.schema.names
print(json.dumps(out))
"#;

/// Polls argv[1] until the file argv[2] exists: each visible `*.parquet`, as
/// soon as it is seen, is opened and read whole (its rows against its
/// footer's count). Prints `{"reads": N, "errors": [...]}`.
const POLL: &str = r#"
import json, os, sys, time
import pyarrow.parquet as pq
root, stop = sys.argv[1], sys.argv[2]
seen, errors = set(), []
while True:
    last = os.path.exists(stop)
    for d, dirs, names in os.walk(root):
        dirs[:] = [x for x in dirs if not x.startswith(('.', '_'))]
        for n in names:
            f = os.path.join(d, n)
            if n.startswith(('.', '_')) or not n.endswith('.parquet') or f in seen:
                continue
            seen.add(f)
            try:
                t = pq.read_table(f, partitioning=None)
                if t.num_rows != pq.read_metadata(f).num_rows:
                    errors.append(f"{f}: {t.num_rows} rows read")
            except Exception as e:
                errors.append(f"{f}: {e}")
    if last:
        break
    time.sleep(0.01)
print(json.dumps({"reads": len(seen), "errors": errors}))
"#;

/// [`READ`] over `dir`.
fn read_back(python: &Path, dir: &Path) -> Value {
    let output = Command::new(python)
        .args(["-c", READ])
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "pyarrow could not read {}: {}",
        dir.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

/// Visible `*.parquet` files under `dir`.
fn visible_files(dir: &Path) -> usize {
    let mut n = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if e.path().is_dir() {
                stack.push(e.path());
            } else if !name.starts_with('.') && name.ends_with(".parquet") {
                n += 1;
            }
        }
    }
    n
}

/// The flights windows job (`append`: each window once, final) into a
/// `parquet` sink, partitioned by the window's date, files rolled every 200
/// rows, `kill -9` five times during the run and a restart each time, then a
/// run to the end; pyarrow polls the directory all along (see [`POLL`]).
/// Returns the rows pyarrow reads back (as the window operator writes them,
/// sorted), after checking each is in the folder of its date, no hidden file
/// is left, and the poller read every file whole.
fn windows_with_five_kill_9(python: &Path, n: usize, exactly_once: bool) -> Vec<Value> {
    let config = Config::new()
        .file_source("in", "in.ndjson")
        .key("/carrier")
        .timestamp("/event_time")
        .sink("lake", "parquet")
        .set_str("path", "lake")
        .set(
            "schema",
            "{ key = \"string\", window_start = \"timestamp_ms\", window_end = \"timestamp_ms\", \
             delayed = \"int64\", avg_dep_delay = \"double\", max_dep_delay = \"int64\", \
             dep_delay_quantiles = \"json\" }",
        )
        .set(
            "partition_by",
            "{ field = \"/window_start\", date = \"dt\" }",
        )
        .set("roll_rows", 200)
        .set("exactly_once", exactly_once)
        .pipeline("p", "in", &["lake"])
        .partitions(2)
        .batch(r#"{ max_records = 500, interval = "10ms" }"#)
        .processor(r#"{ plugin = "flights_delay.wasm", config = { min_delay = 15 } }"#)
        .window(r#"{ kind = "tumbling", size = "1h", watermark = "10m", output_mode = "append" }"#)
        .aggregate(crate::windows::HOURLY_AGGREGATES)
        .checkpoint("100ms")
        .build();
    let scratch = Scratch::new(&config);
    scratch.write("in.ndjson", &(flights_lines(n).join("\n") + "\n"));
    let lake = scratch.path("lake");
    std::fs::create_dir_all(&lake).unwrap();
    let stop = scratch.path("poll-stop");
    let poller = Command::new(python)
        .args(["-c", POLL])
        .arg(&lake)
        .arg(&stop)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();

    let mut kills = 0;
    // Starts that found hidden files left by a kill, and settled them.
    let mut settled = 0;
    let settles = |output: &std::process::Output| {
        String::from_utf8_lossy(&output.stderr)
            .contains("settled the files an earlier run left hidden")
    };
    for round in 0..5 {
        let before = visible_files(&lake);
        let mut daemon = Running::start(scratch.command("run"));
        daemon.wait_for("pipeline started");
        // Kill once some files have come since the start (or after 3 s).
        let deadline = Instant::now() + Duration::from_millis(3000);
        while visible_files(&lake) <= before + 2 * (round + 1) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        std::thread::sleep(Duration::from_millis(30 * round as u64));
        if daemon.child.try_wait().unwrap().is_none() {
            daemon.signal("KILL");
            kills += 1;
        }
        settled += usize::from(settles(&daemon.finish()));
    }
    assert!(kills >= 3, "only {kills} kills landed mid-run");
    let output = scratch.run();
    assert_exit(&output, 0);
    settled += usize::from(settles(&output));
    assert!(settled >= 1, "no start found files a kill left hidden");

    std::fs::write(&stop, "").unwrap();
    let polled = poller.wait_with_output().unwrap();
    assert!(
        polled.status.success(),
        "{}",
        String::from_utf8_lossy(&polled.stderr)
    );
    let polled: Value = serde_json::from_slice(&polled.stdout).unwrap();
    assert_eq!(polled["errors"], json!([]), "a reader met a bad file");

    let read = read_back(python, &lake);
    let files = read["files"].as_array().unwrap();
    eprintln!(
        "exactly_once = {exactly_once}: {kills} kills, {settled} starts settled hidden files, \
         {} files, the poller read each as it appeared",
        files.len()
    );
    assert_eq!(read["hidden"], json!([]), "hidden files left after the run");
    assert_eq!(
        polled["reads"].as_u64().unwrap(),
        files.len() as u64,
        "files the poller read"
    );
    assert!(files.len() > 10, "{} files", files.len());
    for file in files {
        assert_eq!(file["compression"], "ZSTD", "{file}");
    }
    let rows = read["rows"].as_array().unwrap();
    assert_eq!(read["dataset_rows"].as_u64().unwrap(), rows.len() as u64);
    let mut got: Vec<Value> = Vec::new();
    for r in rows {
        let start = r["window_start"].as_i64().unwrap();
        // Each row in the folder of its window's date.
        let date = chrono::DateTime::from_timestamp_millis(start)
            .unwrap()
            .format("dt=%Y-%m-%d/")
            .to_string();
        assert!(r["_file"].as_str().unwrap().starts_with(&date), "{r}");
        got.push(json!({
            "key": r["key"],
            "window_start": crate::windows::time(start),
            "window_end": crate::windows::time(r["window_end"].as_i64().unwrap()),
            "delayed": r["delayed"],
            "avg_dep_delay": r["avg_dep_delay"],
            "max_dep_delay": r["max_dep_delay"],
            "dep_delay_quantiles": serde_json::from_str::<Value>(r["dep_delay_quantiles"].as_str().unwrap()).unwrap(),
        }));
    }
    got.sort_by(by_window);
    got
}

/// Window rows by (start, key).
fn by_window(a: &Value, b: &Value) -> std::cmp::Ordering {
    (a["window_start"].as_str(), a["key"].as_str())
        .cmp(&(b["window_start"].as_str(), b["key"].as_str()))
}

/// (missing, duplicated) windows of `got` against `want`, by (start, key).
fn missing_and_duplicated(got: &[Value], want: &[Value]) -> (usize, usize) {
    let id = |v: &Value| (v["window_start"].to_string(), v["key"].to_string());
    let mut seen: BTreeMap<(String, String), usize> = BTreeMap::new();
    for g in got {
        *seen.entry(id(g)).or_default() += 1;
    }
    let missing = want.iter().filter(|w| !seen.contains_key(&id(w))).count();
    let duplicated: usize = seen.values().map(|c| c - 1).sum();
    (missing, duplicated)
}

/// With `exactly_once`, after five `kill -9`s the files read by pyarrow hold
/// exactly the windows computed here from the flights: 0 missing, 0
/// duplicated, 0 wrong; and a reader polling the directory never met a file
/// it could not read whole. The same job without `exactly_once` is run too,
/// to show that the kills land where they make duplicates (at-least-once:
/// files published when they roll).
#[test]
fn windows_into_parquet_survive_five_kill_9() {
    const TEST: &str = "parquet::windows_into_parquet_survive_five_kill_9";
    let Some(python) = pyarrow(TEST) else { return };
    let n = 120_000;
    let mut want = crate::windows::hourly_windows(n);
    want.sort_by(by_window);

    let got = windows_with_five_kill_9(&python, n, true);
    let (missing, duplicated) = missing_and_duplicated(&got, &want);
    assert_eq!(
        (missing, duplicated, got.len()),
        (0, 0, want.len()),
        "exactly_once: (missing, duplicated, rows)"
    );
    // Every field of every window equal (floats within 1e-9).
    crate::windows::assert_rows(&got, &want);

    // The control: at-least-once, every window there, some twice. Whether a
    // kill lands after a file rolled and before the checkpoint that covers
    // it is timing: on a loaded machine five kills can all miss, so up to
    // three runs of five.
    let mut duplicated = 0;
    for _ in 0..3 {
        let plain = windows_with_five_kill_9(&python, n, false);
        let (missing, twice) = missing_and_duplicated(&plain, &want);
        assert_eq!(missing, 0, "at-least-once lost windows");
        duplicated = twice;
        if duplicated > 0 {
            break;
        }
    }
    assert!(
        duplicated > 0,
        "15 kills made no duplicate without exactly_once"
    );
}

/// At-least-once (no checkpoint), the schema inferred, `partition_by` a
/// field, snappy, files rolled by rows: pyarrow reads back every input
/// record once, the field from the folder names (`tag=t1/`), not the files.
#[test]
fn a_partitioned_inferred_snappy_run_reads_back_whole() {
    const TEST: &str = "parquet::a_partitioned_inferred_snappy_run_reads_back_whole";
    let Some(python) = pyarrow(TEST) else { return };
    let n = 5_000;
    let config = Config::new()
        .file_source("in", "in.ndjson")
        .sink("lake", "parquet")
        .set_str("path", "lake")
        .set_str("partition_by", "/tag")
        .set_str("compression", "snappy")
        .set("roll_rows", 700)
        .pipeline("p", "in", &["lake"])
        .batch(r#"{ max_records = 300, interval = "10ms" }"#)
        .build();
    let scratch = Scratch::new(&config);
    let input: String = (0..n)
        .map(|i| {
            format!(
                "{{\"n\":{i},\"tag\":\"t/{}\",\"x\":{},\"ok\":{}}}\n",
                i % 3,
                i as f64 / 4.0,
                i % 2 == 0
            )
        })
        .collect();
    scratch.write("in.ndjson", &input);
    let output = scratch.run();
    assert_exit(&output, 0);
    let read = read_back(&python, &scratch.path("lake"));
    assert_eq!(read["hidden"], json!([]));
    let files = read["files"].as_array().unwrap();
    // 3 folders, each more than one file (700 rows a file, ~1,667 rows each).
    assert!(files.len() >= 6, "{files:?}");
    for f in files {
        assert_eq!(f["compression"], "SNAPPY", "{f}");
        assert_eq!(
            f["schema"],
            json!(["n:int64", "x:double", "ok:bool"]),
            "{f}"
        );
        assert!(f["rows"].as_u64().unwrap() <= 700 + 300, "{f}");
    }
    let mut got: Vec<(i64, String, f64, bool)> = read["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let folder = r["_file"].as_str().unwrap().split('/').next().unwrap();
            (
                r["n"].as_i64().unwrap(),
                folder.to_string(),
                r["x"].as_f64().unwrap(),
                r["ok"].as_bool().unwrap(),
            )
        })
        .collect();
    got.sort_by_key(|r| r.0);
    let want: Vec<(i64, String, f64, bool)> = (0..n)
        .map(|i| (i, format!("tag=t%2F{}", i % 3), i as f64 / 4.0, i % 2 == 0))
        .collect();
    assert_eq!(got, want);
    // The Hive-partitioned dataset has the folder key as a column.
    assert_eq!(read["dataset_rows"], n);
    assert!(
        read["dataset_columns"]
            .as_array()
            .unwrap()
            .contains(&json!("tag")),
        "{}",
        read["dataset_columns"]
    );
}

/// Mistakes in a parquet sink's table are config errors at `validate`,
/// located at the field.
#[test]
fn config_errors_are_located() {
    let base = || {
        Config::new()
            .file_source("in", "in.ndjson")
            .sink("lake", "parquet")
            .set_str("path", "lake")
    };
    let with_pipeline = |c: Config| c.pipeline("p", "in", &["lake"]).build();
    let cases: Vec<(String, &str, &str)> = vec![
        (
            with_pipeline(base().set_str("compression", "gzip")),
            "compression = ",
            "unknown variant `gzip`, expected one of `zstd`, `snappy`, `none`",
        ),
        (
            with_pipeline(base().set("schema", "{ n = \"int46\" }")),
            "schema = ",
            "column `n`: \"int46\" is not a type; use one of string, int64, double, boolean, timestamp_ms, json",
        ),
        (
            with_pipeline(base().set_str("path", "in.ndjson/lake")),
            "path = \"in.ndjson/lake\"",
            "is not a directory: a parquet sink writes a directory of files",
        ),
        (
            with_pipeline(base().set_str("partition_by", "dest")),
            "partition_by = ",
            "must start with `/`",
        ),
        (
            with_pipeline(base().set("roll_rows", 0)),
            "roll_rows = ",
            "must be at least 1",
        ),
        (
            with_pipeline(
                base()
                    .set_str("partition_by", "/dest")
                    .set("schema", "{ dest = \"string\", n = \"int64\" }"),
            ),
            "schema = ",
            "column `dest` is a partition folder",
        ),
        (
            base()
                .sink("other", "parquet")
                .set_str("path", "lake/inner")
                .pipeline("p", "in", &["lake", "other"])
                .build(),
            "path = \"lake/inner\"",
            "give each its own directory",
        ),
        (
            Config::new()
                .file_source("in", "lake-in")
                .sink("lake", "parquet")
                .set_str("path", "lake-in/")
                .pipeline("p", "in", &["lake"])
                .build(),
            "path = \"lake-in/\"",
            "they would be read as input",
        ),
        (
            with_pipeline(base().set("exactly_once", true)),
            "[sinks.lake]",
            "pipeline `p` has none (add `checkpoint",
        ),
    ];
    for (config, at, want) in cases {
        let scratch = Scratch::new(&config);
        scratch.write("in.ndjson", "");
        std::fs::create_dir_all(scratch.path("lake-in")).unwrap();
        let output = scratch.command("validate").output().unwrap();
        assert_exit(&output, 2);
        let stderr = String::from_utf8_lossy(&output.stderr);
        let line = line_of(&config, at);
        assert!(
            stderr.contains(&format!("sluice.toml:{line}:")) && stderr.contains(want),
            "want {want:?} at line {line}:\n{stderr}\n{config}"
        );
    }
}

/// A record that does not fit the inferred schema stops the sink with an
/// error naming the field; the files already written stay whole and
/// readable.
#[test]
fn a_record_that_does_not_fit_stops_the_sink_naming_the_field() {
    const TEST: &str = "parquet::a_record_that_does_not_fit_stops_the_sink_naming_the_field";
    let Some(python) = pyarrow(TEST) else { return };
    let config = Config::new()
        .file_source("in", "in.ndjson")
        .sink("lake", "parquet")
        .set_str("path", "lake")
        .set("roll_rows", 1)
        .pipeline("p", "in", &["lake"])
        .batch(r#"{ max_records = 1, interval = "10ms" }"#)
        .build();
    let scratch = Scratch::new(&config);
    scratch.write("in.ndjson", "{\"n\":1}\n{\"n\":2}\n{\"n\":\"three\"}\n");
    let output = scratch.run();
    assert_ne!(output.status.code(), Some(0));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("field `n`: \"three\" does not fit its type int64"),
        "{stderr}"
    );
    let read = read_back(&python, &scratch.path("lake"));
    let mut ns: Vec<i64> = read["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["n"].as_i64().unwrap())
        .collect();
    ns.sort_unstable();
    assert_eq!(ns, [1, 2]);
}
