//! Config reload on SIGHUP and with `--watch-config`: a changed chain is swapped
//! in place, pipelines are added and removed, and a config that is invalid or
//! changes what cannot change in place leaves the running config as it was.

use std::io::Write as _;

use serde_json::Value;

use crate::support::*;

/// Pipeline `p`: a followed file through the `plugins`.
fn config(plugins: &[&str]) -> Config {
    let config = Config::new()
        .file_source("in", "in.ndjson")
        .follow()
        .file_sink("out", "out.ndjson")
        .pipeline("p", "in", &["out"])
        .batch(r#"{ max_records = 100, interval = "20ms" }"#);
    plugins.iter().fold(config, |c, p| c.plugin(p))
}

/// `config` with pipeline `q`: the followed `in2.ndjson` to `out2.ndjson`.
fn with_second(config: Config) -> Config {
    config
        .file_source("in2", "in2.ndjson")
        .follow()
        .file_sink("out2", "out2.ndjson")
        .pipeline("q", "in2", &["out2"])
}

struct Rig {
    scratch: Scratch,
    daemon: Running,
    sent: usize,
}

impl Rig {
    fn start(config: &str, args: &[&str]) -> Self {
        Self::start_with(config, args, &[])
    }

    /// Starts the daemon once `files` (name, contents) are written.
    fn start_with(config: &str, args: &[&str], files: &[(&str, &str)]) -> Self {
        let scratch = Scratch::new(config);
        scratch.write("in.ndjson", "");
        scratch.write("in2.ndjson", "");
        for (name, contents) in files {
            scratch.write(name, contents);
        }
        let mut command = scratch.command("run");
        command.args(args);
        let mut daemon = Running::start(command);
        daemon.wait_for("pipeline started");
        Rig {
            scratch,
            daemon,
            sent: 0,
        }
    }

    /// One record through `p`; the tag the chain gave it.
    fn probe(&mut self) -> String {
        let mut input = std::fs::OpenOptions::new()
            .append(true)
            .open(self.scratch.path("in.ndjson"))
            .unwrap();
        writeln!(input, "{{\"n\":{}}}", self.sent).unwrap();
        self.sent += 1;
        self.scratch.wait_for_lines("out.ndjson", self.sent);
        let line = &self.scratch.read_lines("out.ndjson")[self.sent - 1];
        let v: Value = serde_json::from_str(line).unwrap();
        assert_eq!(v["n"], self.sent - 1);
        v["v"].as_str().unwrap_or("none").to_string()
    }

    fn reload(&mut self, config: &str, outcome: &str, n: usize) {
        self.scratch.write_config(config);
        self.daemon.signal("HUP");
        self.daemon.wait_for_count(outcome, n);
    }

    fn last(&self, what: &str) -> String {
        self.daemon
            .log
            .iter()
            .rev()
            .find(|l| l.contains(what))
            .unwrap()
            .clone()
    }
}

const RELOADED: &str = "config reloaded";
const REFUSED: &str = "config reload refused";

#[test]
fn sighup_swaps_the_chain_adds_and_removes_pipelines() {
    let a = config(&["tag_a.wasm"]).build();
    let mut rig = Rig::start(&a, &[]);
    assert_eq!(rig.probe(), "a");

    // Another plugin, and a stage more: swapped at the next batch.
    let b = config(&["identity.wasm", "tag_b.wasm"]);
    rig.reload(&b.build(), RELOADED, 1);
    assert!(
        rig.last(RELOADED)
            .contains("0 started, 1 changed, 0 removed, 0 unchanged")
    );
    assert_eq!(rig.probe(), "b");

    // Invalid: the error is located, the running config stays.
    let invalid = b
        .clone()
        .batch(r#"{ max_records = 100, interval = "2 fortnights" }"#)
        .build();
    rig.reload(&invalid, REFUSED, 1);
    let line = rig.last(REFUSED);
    let at = format!("sluice.toml:{}:", line_of(&invalid, "2 fortnights"));
    assert!(line.contains(&at), "{line}");
    assert!(line.contains("field `interval`"), "{line}");
    assert_eq!(rig.probe(), "b");

    // What cannot change in place is refused as a whole.
    let shape = with_second(b.clone().table("pipelines.p").partitions(2));
    rig.reload(&shape.build(), REFUSED, 2);
    assert!(
        rig.last(REFUSED)
            .contains("pipeline `p` changed its partitions: that needs a restart")
    );
    assert!(
        !rig.scratch.path("out2.ndjson").exists(),
        "nothing of it applied"
    );
    assert_eq!(rig.probe(), "b");
    // A daemon setting the plugin host was made with: refused too.
    let cache = b.clone().daemon("compile_cache_max", "\"1MiB\"");
    rig.reload(&cache.build(), REFUSED, 3);
    assert!(
        rig.last(REFUSED).contains(
            "[daemon] state_dir, hot_reload and compile_cache_max take effect on a restart only"
        ),
        "{}",
        rig.last(REFUSED)
    );
    assert_eq!(rig.probe(), "b");

    // A pipeline added, then removed.
    rig.reload(&with_second(b.clone()).build(), RELOADED, 2);
    assert!(
        rig.last(RELOADED)
            .contains("1 started, 0 changed, 0 removed, 1 unchanged")
    );
    rig.scratch.write("in2.ndjson", "{\"q\":1}\n{\"q\":2}\n");
    rig.scratch.wait_for_lines("out2.ndjson", 2);
    rig.reload(&b.build(), RELOADED, 3);
    assert!(
        rig.last(RELOADED)
            .contains("0 started, 0 changed, 1 removed, 1 unchanged")
    );
    assert_eq!(rig.probe(), "b");

    rig.daemon.signal("TERM");
    let output = rig.daemon.finish();
    assert_exit(&output, 0);
    assert_eq!(count(&output, "p", "in"), rig.sent as u64);
    assert_eq!(count(&output, "p", "out"), rig.sent as u64);
    assert_eq!(count(&output, "q", "out"), 2);
}

#[test]
fn watch_config_reloads_on_save() {
    let a = config(&["tag_a.wasm"]).build();
    let mut rig = Rig::start(&a, &["--watch-config"]);
    assert_eq!(rig.probe(), "a");
    rig.scratch.write_config(&config(&["tag_b.wasm"]).build());
    rig.daemon.wait_for_count(RELOADED, 1);
    assert_eq!(rig.probe(), "b");
    rig.daemon.signal("TERM");
    let output = rig.daemon.finish();
    assert_exit(&output, 0);
}

#[test]
fn a_reload_never_reads_a_source_again() {
    let a = config(&["tag_a.wasm"])
        .file_source("done", "done.ndjson")
        .file_sink("out_done", "out_done.ndjson")
        .pipeline("finished", "done", &["out_done"])
        .build();
    let mut rig = Rig::start_with(
        &a,
        &[],
        &[("done.ndjson", "{\"d\":1}\n{\"d\":2}\n{\"d\":3}\n")],
    );
    rig.scratch.wait_for_lines("out_done.ndjson", 3);
    assert_eq!(rig.probe(), "a");
    // The same config again: the finished pipeline is not started again.
    rig.reload(&a, RELOADED, 1);
    // Renamed: it would read `in.ndjson` again from its start.
    rig.reload(
        &a.replace("[pipelines.p]", "[pipelines.renamed]"),
        REFUSED,
        1,
    );
    assert!(
        rig.last(REFUSED)
            .contains("new pipeline `renamed` would read in.ndjson from its start, which pipeline `p` has read"),
        "{}",
        rig.last(REFUSED)
    );
    assert_eq!(rig.probe(), "a");
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(rig.scratch.read_lines("out_done.ndjson").len(), 3);
    rig.daemon.signal("TERM");
    let output = rig.daemon.finish();
    assert_exit(&output, 0);
    assert_eq!(count(&output, "finished", "out"), 3);
}

/// `sed -i` (a temporary file renamed over the config) is one save: one
/// reload, not one per file-system event.
#[test]
fn one_sed_in_place_is_one_reload() {
    let a = config(&["tag_a.wasm"]).build();
    let mut rig = Rig::start(&a, &["--watch-config"]);
    assert_eq!(rig.probe(), "a");
    let status = std::process::Command::new("sed")
        .args(["-i", "s/tag_a.wasm/tag_b.wasm/"])
        .arg(rig.scratch.path("sluice.toml"))
        .status()
        .unwrap();
    assert!(status.success());
    rig.daemon.wait_for_count(RELOADED, 1);
    assert_eq!(rig.probe(), "b");
    // Time for a second reload to show up, had the save caused one.
    std::thread::sleep(std::time::Duration::from_secs(1));
    rig.daemon.signal("TERM");
    let output = rig.daemon.finish();
    assert_exit(&output, 0);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.matches(RELOADED).count(), 1, "{stderr}");
}
