//! Logs: the level from `[daemon] log_level`, `RUST_LOG` over it, no colour
//! codes when stderr is not a terminal.

use crate::support::*;

fn config(level: &str) -> String {
    Config::new()
        .daemon("log_level", toml_string(level))
        .file_source("in", "in.ndjson")
        .file_sink("out", "out.ndjson")
        .pipeline("p", "in", &["out"])
        .plugin("identity.wasm")
        .build()
}

/// Lines of a `plain` log at `level` (the fmt layer writes ` LEVEL ` after the
/// timestamp).
fn at_level(stderr: &str, level: &str) -> usize {
    stderr
        .lines()
        .filter(|l| l.contains(&format!(" {level} ")))
        .count()
}

#[test]
fn log_level_from_config_and_rust_log_over_it() {
    let scratch = Scratch::new(&config("warn"));
    scratch.write("in.ndjson", "{\"n\":1}\n{\"n\":2}\n");

    // The config says warn: no INFO line (the run summary is not a log event).
    let mut quiet = scratch.command("run");
    quiet.env_remove("RUST_LOG");
    let output = quiet.output().unwrap();
    assert_exit(&output, 0);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(at_level(&stderr, "INFO"), 0, "{stderr}");
    assert_eq!(count(&output, "p", "in"), 2);
    // stderr is a pipe, not a terminal: no ANSI escape sequences.
    assert!(!stderr.contains('\u{1b}'), "{stderr:?}");

    // RUST_LOG wins over the config.
    let output = scratch
        .command("run")
        .env("RUST_LOG", "info")
        .output()
        .unwrap();
    assert_exit(&output, 0);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr
            .lines()
            .any(|l| l.contains(" INFO ") && l.contains("pipeline started")),
        "{stderr}"
    );
    assert!(!stderr.contains('\u{1b}'), "{stderr:?}");
}

#[test]
fn invalid_log_level_is_a_config_error() {
    let config = config("loud");
    let scratch = Scratch::new(&config);
    scratch.write("in.ndjson", "");
    let output = scratch.command("validate").output().unwrap();
    assert_exit(&output, 2);
    let stderr = String::from_utf8_lossy(&output.stderr);
    // Column 13: after `log_level = `.
    let at = format!("sluice.toml:{}:13: ", line_of(&config, "log_level"));
    assert!(
        stderr.contains(&format!(
            "{at}field `log_level`: \"loud\" is not a log level"
        )),
        "{stderr}"
    );
}

/// A run's counters are printed once, on the `sluice:` summary line; the log
/// says only that the pipeline ended. (A pipeline that ends while the daemon
/// runs on — removed by a reload — has its counters in the log line:
/// checkpoints::a_removed_and_re_added_pipeline_resumes_from_its_checkpoint.)
#[test]
fn the_summary_is_printed_once() {
    let scratch = Scratch::new(&config("info"));
    scratch.write("in.ndjson", "{\"n\":1}\n{\"n\":2}\n{\"n\":3}\n");
    let output = scratch.run();
    assert_exit(&output, 0);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let with_counters: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("in=3 out=3"))
        .collect();
    assert_eq!(with_counters.len(), 1, "{stderr}");
    assert!(
        with_counters[0].starts_with("sluice: pipeline=p in=3 out=3 "),
        "{stderr}"
    );
    let ended: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("pipeline ended"))
        .collect();
    assert_eq!(ended.len(), 1, "{stderr}");
    assert!(ended[0].ends_with("pipeline ended pipeline=p"), "{stderr}");
}
