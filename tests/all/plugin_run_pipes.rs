//! `sluice plugin run` whose stderr reader goes away (`sluice plugin run …
//! 2>&1 >/dev/null | head -1`): it ends with exit 1, not a panic (101).

use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};

use crate::support::*;

#[test]
fn a_closed_stderr_ends_plugin_run_without_a_panic() {
    let scratch = Scratch::new("");
    // One rejection line on stderr per input line ("not a JSON object"):
    // far more than a pipe holds, so the run is still writing when the
    // reader leaves.
    let input: String = (0..20_000).map(|i| format!("{i}\n")).collect();
    scratch.write("events.ndjson", &input);
    let mut child = Command::new(sluice_bin())
        .args(["plugin", "run"])
        .arg(plugins_dir().join("tag_a.wasm"))
        .stdin(std::fs::File::open(scratch.path("events.ndjson")).unwrap())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stderr.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    // The reader (and with it the pipe's read end) is gone here.
    assert_eq!(first, "rejected: line 1: not a JSON object\n");
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(1), "{status}");
}
