//! Hot reload: a new `.wasm` dropped into the plugins folder of a running daemon
//! is swapped in at a batch boundary, however the file arrives; a broken one
//! leaves the running version serving; and under load, no record is lost or
//! processed twice by a swap.
//!
//! The fixtures `tag_a.wasm` and `tag_b.wasm` are two versions of one plugin
//! that add `"v":"a"` or `"v":"b"` to each record, so the output says which
//! version processed each record.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::Value;

use crate::support::*;

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(plugins_dir().join(name)).unwrap()
}

/// A followed file → `tag.wasm` (from the daemon's own `plugins/` folder) → a
/// file. The stage's config is ignored by the tag plugins, and refused by
/// `misbehave.wasm` (`configure = "fail"`): a version whose start-up fails.
fn config(partitions: usize) -> String {
    Config::new()
        .daemon("plugins_dir", toml_string("plugins"))
        .file_source("in", "in.ndjson")
        .follow()
        .key("/k")
        .file_sink("out", "out.ndjson")
        .file_sink("dlq", "dlq.ndjson")
        .pipeline("p", "in", &["out"])
        .partitions(partitions)
        .batch(r#"{ max_records = 1024, interval = "20ms" }"#)
        .processor(r#"{ plugin = "tag.wasm", config = { configure = "fail" } }"#)
        .dead_letter("dlq")
        .build()
}

/// A daemon running [`config`], started with `tag_a.wasm` as `plugins/tag.wasm`.
struct Rig {
    scratch: Scratch,
    daemon: Running,
    input: std::fs::File,
    sent: usize,
}

impl Rig {
    fn start(partitions: usize) -> Self {
        let scratch = Scratch::new(&config(partitions));
        std::fs::create_dir(scratch.path("plugins")).unwrap();
        std::fs::write(scratch.path("plugins/tag.wasm"), fixture("tag_a.wasm")).unwrap();
        scratch.write("in.ndjson", "");
        let input = std::fs::OpenOptions::new()
            .append(true)
            .open(scratch.path("in.ndjson"))
            .unwrap();
        let mut daemon = Running::start(scratch.command("run"));
        daemon.wait_for("pipeline started");
        Rig {
            scratch,
            daemon,
            input,
            sent: 0,
        }
    }

    fn plugin(&self) -> PathBuf {
        self.scratch.path("plugins/tag.wasm")
    }

    /// Sends one record through; returns the tag of the version that ran it.
    fn probe(&mut self) -> String {
        writeln!(self.input, "{{\"k\":\"probe\",\"n\":{}}}", self.sent).unwrap();
        self.sent += 1;
        self.scratch.wait_for_lines("out.ndjson", self.sent);
        let lines = self.scratch.read_lines("out.ndjson");
        let last: Value = serde_json::from_str(&lines[self.sent - 1]).unwrap();
        assert_eq!(last["n"], self.sent - 1, "{last}");
        last["v"].as_str().unwrap().to_string()
    }

    /// Waits until the daemon has logged `what` `n` times.
    fn wait(&mut self, what: &str, n: usize) {
        self.daemon.wait_for_count(what, n);
    }

    fn status(&self) -> Value {
        let text = std::fs::read_to_string(self.scratch.path("state/status.json")).unwrap();
        let status: Value = serde_json::from_str(&text).unwrap();
        status["plugins"][0].clone()
    }

    /// Stops the daemon; checks every record sent came out once.
    fn finish(self) -> std::process::Output {
        self.daemon.signal("TERM");
        let output = self.daemon.finish();
        assert_exit(&output, 0);
        assert_eq!(count(&output, "p", "in"), self.sent as u64);
        assert_eq!(count(&output, "p", "out"), self.sent as u64);
        output
    }
}

/// Writes `bytes` to a temporary name in the same folder, then renames it over
/// `path` (how deployment tools install a file atomically).
fn rename_into(path: &Path, bytes: &[u8]) {
    let tmp = path.with_file_name(".tag.wasm.partial");
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

const RELOADED: &str = "plugin reloaded";
const REFUSED: &str = "plugin reload refused";

#[test]
fn every_way_a_file_can_arrive_is_picked_up() {
    let mut rig = Rig::start(1);
    let (a, b) = (fixture("tag_a.wasm"), fixture("tag_b.wasm"));
    assert_eq!(rig.probe(), "a");

    // Written in place (truncate + write).
    std::fs::write(rig.plugin(), &b).unwrap();
    rig.wait(RELOADED, 1);
    assert_eq!(rig.probe(), "b");

    // Copied over.
    let elsewhere = rig.scratch.path("tag_a_copy.wasm");
    std::fs::write(&elsewhere, &a).unwrap();
    std::fs::copy(&elsewhere, rig.plugin()).unwrap();
    rig.wait(RELOADED, 2);
    assert_eq!(rig.probe(), "a");

    // Written under a temporary name and renamed.
    rename_into(&rig.plugin(), &b);
    rig.wait(RELOADED, 3);
    assert_eq!(rig.probe(), "b");

    // Deleted: the running version keeps serving.
    std::fs::remove_file(rig.plugin()).unwrap();
    rig.wait("plugin file is gone", 1);
    assert_eq!(rig.probe(), "b");
    assert_eq!(rig.status()["file_missing"], true);

    // Back again.
    rename_into(&rig.plugin(), &a);
    rig.wait(RELOADED, 4);
    assert_eq!(rig.probe(), "a");

    // The same bytes again: no reload.
    std::fs::write(rig.plugin(), &a).unwrap();
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(rig.daemon.count(RELOADED), 4);

    // The whole folder replaced (a new inode, which inotify does not follow).
    std::fs::rename(rig.scratch.path("plugins"), rig.scratch.path("plugins.old")).unwrap();
    std::fs::create_dir(rig.scratch.path("plugins")).unwrap();
    std::fs::write(rig.plugin(), &b).unwrap();
    rig.wait(RELOADED, 5);
    assert_eq!(rig.probe(), "b");

    let status = rig.status();
    assert_eq!(status["version"], sluice::wasm::plugin::content_version(&b));
    assert_eq!(status["reloads"], 5);
    assert_eq!(status["reload_failures"], 0);
    assert_eq!(status["file_missing"], false);
    assert_eq!(status["history"].as_array().unwrap().len(), 5);
    rig.finish();
}

#[test]
fn a_broken_plugin_leaves_the_running_version_serving() {
    let mut rig = Rig::start(1);
    let b = fixture("tag_b.wasm");
    assert_eq!(rig.probe(), "a");
    let broken: [(&str, Vec<u8>, &str); 4] = [
        (
            "truncated",
            b[..b.len() / 2].to_vec(),
            "is not a valid WebAssembly component",
        ),
        (
            "not a component",
            b"this is not wasm\n".to_vec(),
            "is not a valid WebAssembly component",
        ),
        (
            "wrong world",
            fixture("not_a_plugin.wasm"),
            "is not a sluice:plugin/processor component",
        ),
        (
            "configure fails",
            fixture("misbehave.wasm"),
            "configure failed",
        ),
    ];
    for (i, (what, bytes, reason)) in broken.iter().enumerate() {
        rename_into(&rig.plugin(), bytes);
        rig.wait(REFUSED, i + 1);
        let line = rig
            .daemon
            .log
            .iter()
            .rev()
            .find(|l| l.contains(REFUSED))
            .unwrap();
        assert!(line.contains(reason), "{what}: {line}");
        assert_eq!(rig.probe(), "a", "{what}: the old version keeps serving");
    }
    let status = rig.status();
    assert_eq!(
        status["version"],
        sluice::wasm::plugin::content_version(&fixture("tag_a.wasm"))
    );
    assert_eq!(status["reload_failures"], 4);
    let last = status["last_error"]["error"].as_str().unwrap();
    assert!(last.contains("configure failed"), "{last}");

    // A writer that pauses half-way: the half is refused, the whole goes in.
    let mut file = std::fs::File::create(rig.plugin()).unwrap();
    file.write_all(&b[..b.len() / 2]).unwrap();
    rig.wait(REFUSED, 5);
    assert_eq!(rig.probe(), "a");
    file.write_all(&b[b.len() / 2..]).unwrap();
    drop(file);
    rig.wait(RELOADED, 1);
    assert_eq!(rig.probe(), "b");
    assert_eq!(rig.status()["reloads"], 1);
    rig.finish();
}

/// One output record: its number, key and tag.
fn parse(line: &str) -> (u64, String, String) {
    let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
    (
        v["n"].as_u64().unwrap(),
        v["k"].as_str().unwrap().to_string(),
        v["v"].as_str().unwrap().to_string(),
    )
}

#[test]
fn swapping_under_load_loses_and_repeats_nothing() {
    const RECORDS: u64 = 300_000;
    const CHUNK: u64 = 1_000;
    const KEYS: u64 = 64;
    let mut rig = Rig::start(4);
    let versions = [fixture("tag_a.wasm"), fixture("tag_b.wasm")];

    // The stream: 1,000 records every 10 ms or so, paced so that the swaps
    // (at least SWAPS of them) spread over all of it, however slow the machine.
    const SWAPS: usize = 20;
    let done_swaps = Arc::new(AtomicUsize::new(0));
    let mut input = rig.input.try_clone().unwrap();
    let pace = done_swaps.clone();
    let writer = std::thread::spawn(move || {
        let chunks = (RECORDS / CHUNK) as usize;
        for (c, start) in (0..RECORDS).step_by(CHUNK as usize).enumerate() {
            let waited = std::time::Instant::now();
            while pace.load(Ordering::Relaxed) < c * SWAPS / chunks
                && waited.elapsed() < Duration::from_secs(60)
            {
                std::thread::sleep(Duration::from_millis(5));
            }
            let chunk: String = (start..start + CHUNK)
                .map(|n| format!("{{\"k\":\"key{}\",\"n\":{n}}}\n", n % KEYS))
                .collect();
            input.write_all(chunk.as_bytes()).unwrap();
            std::thread::sleep(Duration::from_millis(10));
        }
    });

    // Swap a → b → a … while it flows, each way a file can arrive in turn.
    let mut swaps = 0;
    while !writer.is_finished() {
        let bytes = &versions[(swaps + 1) % 2];
        match swaps % 3 {
            0 => std::fs::write(rig.plugin(), bytes).unwrap(),
            1 => rename_into(&rig.plugin(), bytes),
            _ => {
                let tmp = rig.scratch.path("elsewhere.wasm");
                std::fs::write(&tmp, bytes).unwrap();
                std::fs::copy(&tmp, rig.plugin()).unwrap();
            }
        }
        swaps += 1;
        rig.wait(RELOADED, swaps);
        done_swaps.store(swaps, Ordering::Relaxed);
    }
    writer.join().unwrap();
    rig.sent = RECORDS as usize;
    rig.scratch.wait_for_lines("out.ndjson", RECORDS as usize);
    assert!(
        swaps >= SWAPS,
        "only {swaps} swaps happened during the stream"
    );

    let lines = rig.scratch.read_lines("out.ndjson");
    let mut seen = vec![false; RECORDS as usize];
    let mut last: BTreeMap<String, (u64, String)> = BTreeMap::new();
    let mut changes: BTreeMap<String, usize> = BTreeMap::new();
    let mut tags: BTreeMap<String, usize> = BTreeMap::new();
    for line in &lines {
        let (n, key, tag) = parse(line);
        assert!(!std::mem::replace(&mut seen[n as usize], true), "{n} twice");
        assert_eq!(key, format!("key{}", n % KEYS));
        *tags.entry(tag.clone()).or_default() += 1;
        if let Some((prev, prev_tag)) = last.get(&key) {
            assert!(*prev < n, "key {key}: {n} after {prev}");
            if *prev_tag != tag {
                *changes.entry(key.clone()).or_default() += 1;
            }
        }
        last.insert(key, (n, tag));
    }
    assert_eq!(lines.len() as u64, RECORDS);
    assert!(seen.iter().all(|s| *s), "every record came out");
    assert_eq!(tags.keys().cloned().collect::<Vec<_>>(), ["a", "b"]);
    // A key changes version only at a swap, and never goes back by itself.
    let most = changes.values().max().copied().unwrap_or(0);
    assert!(
        most <= swaps,
        "a key changed version {most} times in {swaps} swaps"
    );
    assert!(rig.scratch.read_lines("dlq.ndjson").is_empty());
    eprintln!("{swaps} swaps under load; tags {tags:?}; at most {most} version changes per key");
    rig.finish();
}

#[test]
fn symlinked_plugins_follow_their_targets() {
    use std::os::unix::fs::symlink;
    let mut rig = Rig::start(1);
    let root = rig.scratch.dir.path().to_path_buf();
    let dir = |p: &str| root.join(p);
    // The Kubernetes ConfigMap layout: plugins/tag.wasm → ..data/tag.wasm,
    // ..data → ..v1 (a folder), swapped by renaming a new ..data link over it.
    std::fs::create_dir(dir("plugins/..v1")).unwrap();
    std::fs::write(dir("plugins/..v1/tag.wasm"), fixture("tag_b.wasm")).unwrap();
    symlink("..v1", dir("plugins/..data")).unwrap();
    let tmp = dir("plugins/tag.wasm.link");
    symlink("..data/tag.wasm", &tmp).unwrap();
    std::fs::rename(&tmp, rig.plugin()).unwrap();
    rig.wait(RELOADED, 1);
    assert_eq!(rig.probe(), "b");

    std::fs::create_dir(dir("plugins/..v2")).unwrap();
    std::fs::write(dir("plugins/..v2/tag.wasm"), fixture("tag_a.wasm")).unwrap();
    symlink("..v2", dir("plugins/..data.new")).unwrap();
    std::fs::rename(dir("plugins/..data.new"), dir("plugins/..data")).unwrap();
    rig.wait(RELOADED, 2);
    assert_eq!(rig.probe(), "a");

    // The target rewritten in place, in its own folder.
    std::fs::write(dir("plugins/..v2/tag.wasm"), fixture("tag_b.wasm")).unwrap();
    rig.wait(RELOADED, 3);
    assert_eq!(rig.probe(), "b");
    rig.finish();
}

/// The status's `last_error` describes the file on disk: it goes when the
/// running version's file is put back over a refused one, or when a new
/// version goes in; the history keeps the refusals.
#[test]
fn last_error_clears_when_a_good_file_is_back() {
    let mut rig = Rig::start(1);
    let (a, b) = (fixture("tag_a.wasm"), fixture("tag_b.wasm"));
    assert_eq!(rig.probe(), "a");
    let broken = b"this is not wasm\n";
    // Waits (up to 10 s) until status.json's last_error is null or not.
    let last_error_is_null = |rig: &Rig, null: bool| {
        let start = std::time::Instant::now();
        while rig.status()["last_error"].is_null() != null {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "last_error {} after 10 s: {}",
                if null { "still set" } else { "still null" },
                rig.status()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    };

    rename_into(&rig.plugin(), broken);
    rig.wait(REFUSED, 1);
    last_error_is_null(&rig, false);
    // The running version's file back: nothing wrong any more.
    rename_into(&rig.plugin(), &a);
    last_error_is_null(&rig, true);
    assert_eq!(rig.probe(), "a");
    let status = rig.status();
    assert_eq!(
        (status["reloads"].clone(), status["reload_failures"].clone()),
        (0.into(), 1.into())
    );
    let history = status["history"].as_array().unwrap();
    assert_eq!(history.len(), 1, "{status}");
    assert!(
        history[0]["error"]
            .as_str()
            .unwrap()
            .contains("not a valid WebAssembly component")
    );

    // The same broken file again is refused (and reported) again.
    rename_into(&rig.plugin(), broken);
    rig.wait(REFUSED, 2);
    last_error_is_null(&rig, false);
    // A new good version: in, and the error is gone.
    rename_into(&rig.plugin(), &b);
    rig.wait(RELOADED, 1);
    last_error_is_null(&rig, true);
    assert_eq!(rig.probe(), "b");
    assert_eq!(rig.status()["reload_failures"], 2);
    rig.finish();
}

/// `compile_cache_max` below one entry: validating a config of two plugins
/// compiles them and keeps only the last entry stored (the others are
/// removed, each with a log line), run after run.
#[test]
fn the_compile_cache_keeps_to_compile_cache_max() {
    let scratch = Scratch::new(
        &Config::new()
            .daemon("compile_cache_max", "\"1KiB\"")
            .source("in", "stdin")
            .sink("out", "stdout")
            .pipeline("p", "in", &["out"])
            .processor(r#"{ plugin = "identity.wasm" }"#)
            .processor(r#"{ plugin = "uppercase.wasm" }"#)
            .build(),
    );
    let entries = || -> Vec<String> {
        std::fs::read_dir(scratch.path("state/compiled"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.ends_with(".cwasm"))
            .collect()
    };
    for _ in 0..2 {
        let output = scratch.command("validate").output().unwrap();
        assert_exit(&output, 0);
        let log = String::from_utf8_lossy(&output.stderr);
        assert!(
            log.contains("compile cache past compile_cache_max"),
            "{log}"
        );
        assert_eq!(entries().len(), 1, "{:?}", entries());
    }
}
