//! The `file` source over a directory or glob: files added while the daemon
//! runs are read once each, in name order; a daemon killed with SIGKILL and
//! restarted from its checkpoint reads no file (and no line) twice; each CSV
//! file's first line is its header; a sink writing into the directory is
//! refused.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::support::*;

fn config(source: &str, checkpoint: bool) -> String {
    let checkpoint = if checkpoint {
        "checkpoint = { interval = \"50ms\" }"
    } else {
        ""
    };
    format!(
        r#"
[daemon]
plugins_dir = "@PLUGINS@"
admin = "off"

[sources.in]
type = "file"
{source}

[sinks.out]
type = "file"
path = "out.ndjson"

[sinks.dlq]
type = "file"
path = "dlq.ndjson"

[pipelines.p]
source = "in"
partitions = 2
batch = {{ max_records = 100, interval = "10ms" }}
processors = [{{ plugin = "identity.wasm" }}]
sinks = ["out"]
dead_letter = "dlq"
{checkpoint}
"#
    )
}

/// `{"file":F,"n":N}` lines for n in `from..to`.
fn records(file: &str, from: usize, to: usize) -> String {
    (from..to)
        .map(|n| format!("{{\"file\":\"{file}\",\"n\":{n}}}\n"))
        .collect()
}

/// How many times each (file, n) is in `out.ndjson`.
fn tally(scratch: &Scratch) -> BTreeMap<(String, u64), usize> {
    let mut seen = BTreeMap::new();
    for v in scratch.read_json("out.ndjson") {
        let key = (
            v["file"].as_str().unwrap().to_string(),
            v["n"].as_u64().unwrap(),
        );
        *seen.entry(key).or_insert(0) += 1;
    }
    seen
}

/// Each of `want` exactly once, nothing else.
fn assert_each_once(scratch: &Scratch, want: &[(&str, usize)]) {
    let seen = tally(scratch);
    let twice: Vec<_> = seen.iter().filter(|(_, c)| **c > 1).collect();
    assert!(twice.is_empty(), "read more than once: {twice:?}");
    let expected: Vec<(String, u64)> = want
        .iter()
        .flat_map(|(f, count)| (0..*count as u64).map(move |n| (f.to_string(), n)))
        .collect();
    assert_eq!(seen.keys().cloned().collect::<Vec<_>>(), expected);
}

#[test]
fn files_added_while_running_are_read_once_each() {
    let scratch = Scratch::new(&config("glob = \"in/*.ndjson\"\nfollow = true", false));
    std::fs::create_dir(scratch.path("in")).unwrap();
    scratch.write("in/a.ndjson", &records("a", 0, 3));
    let daemon = Running::start(scratch.command("run"));
    scratch.wait_for_lines("out.ndjson", 3);
    // Put in complete: written under a hidden name, then renamed.
    scratch.write("in/.b.ndjson.tmp", &records("b", 0, 50));
    std::fs::rename(
        scratch.path("in/.b.ndjson.tmp"),
        scratch.path("in/b.ndjson"),
    )
    .unwrap();
    scratch.write("in/c.txt", &records("c", 0, 5)); // not matched
    scratch.wait_for_lines("out.ndjson", 53);
    // b read means a was finished: a line appended to it now is not read,
    // nor is a new file read twice.
    scratch.append_lines("in/a.ndjson", &[r#"{"file":"a","n":99}"#.to_string()]);
    // Also put in complete (a file written in place may be listed, read to
    // its end and finished while still empty: the documented rule).
    scratch.write("in/.d.ndjson.tmp", &records("d", 0, 7));
    std::fs::rename(
        scratch.path("in/.d.ndjson.tmp"),
        scratch.path("in/d.ndjson"),
    )
    .unwrap();
    scratch.wait_for_lines("out.ndjson", 60);
    daemon.signal("TERM");
    let output = daemon.finish();
    assert_exit(&output, 0);
    assert_each_once(&scratch, &[("a", 3), ("b", 50), ("d", 7)]);
    assert!(scratch.read_lines("dlq.ndjson").is_empty());
}

#[test]
fn kill_9_and_restart_reads_nothing_twice() {
    const PER_FILE: usize = 3000;
    let scratch = Scratch::new(&config("path = \"in/\"", true));
    std::fs::create_dir(scratch.path("in")).unwrap();
    let names: Vec<String> = (0..60).map(|i| format!("f{i:02}.ndjson")).collect();
    for name in &names {
        scratch.write(&format!("in/{name}"), &records(name, 0, PER_FILE));
    }
    let (mut kills, mut resumed_with_files_done) = (0, 0);
    // Kills alternate between two points, so that the test does not depend
    // on how fast the job runs: at an arbitrary point (3,000 records out
    // since the start, wherever the checkpoints are), and just after a
    // checkpoint that records more finished files than the run resumed
    // with (the checkpoint's debug line), so that some restart resumes
    // with files already read.
    while kills < 8 && (kills < 4 || resumed_with_files_done == 0) {
        let mut command = scratch.command("run");
        command.env("RUST_LOG", "info,sluice::checkpoint=debug");
        let mut daemon = Running::start(command);
        daemon.wait_for("pipeline started");
        let resumed = daemon
            .log
            .iter()
            .find(|l| l.contains("resuming from checkpoint"))
            .map_or(0, |l| files_read(l));
        if resumed > 0 {
            resumed_with_files_done += 1;
        }
        if kills % 2 == 0 {
            let base = scratch.read_lines("out.ndjson").len();
            while scratch.read_lines("out.ndjson").len() < base + 3000
                && daemon.child.try_wait().unwrap().is_none()
            {
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
        } else if !daemon
            .wait_until_or_exit(|l| l.contains("checkpoint pipeline=") && files_read(l) > resumed)
        {
            daemon.child.wait().unwrap(); // stderr closed: it ends
        }
        if daemon.child.try_wait().unwrap().is_some() {
            break; // finished before the kill
        }
        daemon.child.kill().unwrap();
        let output = daemon.finish();
        assert_eq!(output.status.code(), None, "killed by a signal");
        kills += 1;
    }
    eprintln!("{kills} kills, {resumed_with_files_done} resumed with files read");
    assert!(
        kills >= 2,
        "the job finished after {kills} kill(s): too fast to test"
    );
    assert!(
        resumed_with_files_done >= 1,
        "no restart resumed with files already read"
    );
    let output = scratch.run();
    assert_exit(&output, 0);
    let want: Vec<(&str, usize)> = names.iter().map(|n| (n.as_str(), PER_FILE)).collect();
    assert_each_once(&scratch, &want);
    // Run again: every file is read, nothing more comes out.
    let output = scratch.run();
    assert_exit(&output, 0);
    assert_eq!(count(&output, "p", "in"), 0);
    assert_each_once(&scratch, &want);
}

/// The `N` of `…: N files read` in a log line (0 when absent).
fn files_read(line: &str) -> usize {
    line.split(" files read")
        .next()
        .filter(|_| line.contains(" files read"))
        .and_then(|head| head.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

#[test]
fn each_csv_file_has_its_own_header() {
    let scratch = Scratch::new(&config(
        "glob = \"in/*.csv\"\nformat = \"csv\"\ncsv = { columns = { n = \"int\" } }",
        false,
    ));
    std::fs::create_dir(scratch.path("in")).unwrap();
    scratch.write("in/1.csv", "n,word\n1,one\n");
    scratch.write("in/2.csv", "word,n\ntwo,2\n");
    let output = scratch.run();
    assert_exit(&output, 0);
    let mut out: Vec<Value> = scratch.read_json("out.ndjson");
    out.sort_by_key(|v| v["n"].as_i64());
    assert_eq!(
        out,
        [
            json!({"n": 1, "word": "one"}),
            json!({"word": "two", "n": 2}),
        ]
    );
}

#[test]
fn directory_config_errors_are_located() {
    for (source, sink, error) in [
        (
            "glob = \"in*/*.ndjson\"",
            "out.ndjson",
            "work in the file name only",
        ),
        ("path = \"missing/\"", "out.ndjson", "is not a directory"),
        (
            "path = \"in/\"\nglob = \"in/*\"",
            "out.ndjson",
            "`path` and `glob` both name what to read",
        ),
        (
            "path = \"in/\"",
            "in/out.ndjson",
            "it would be read as input",
        ),
        (
            "glob = \"in/*.ndjson\"",
            "in/out.ndjson",
            "it would be read as input",
        ),
    ] {
        let scratch = Scratch::new(&config(source, false).replace("out.ndjson", sink));
        std::fs::create_dir(scratch.path("in")).unwrap();
        let output = scratch.command("validate").output().unwrap();
        assert_exit(&output, 2);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.starts_with("error: sluice.toml:"), "{stderr}");
        assert!(stderr.contains(error), "want {error:?} in:\n{stderr}");
    }
    // A sink in the directory that the glob does not match is fine.
    let scratch = Scratch::new(
        &config("glob = \"in/*.ndjson\"", false).replace("\"out.ndjson\"", "\"in/out.log\""),
    );
    std::fs::create_dir(scratch.path("in")).unwrap();
    let output = scratch.command("validate").output().unwrap();
    assert_exit(&output, 0);
}
