//! How a skipped test shows: this binary runs itself on [`skip_probe`], a test
//! that skips when `SLUICE_SKIP_PROBE` is set, with and without
//! `SLUICE_REQUIRE_TOOLCHAINS`.

use std::process::{Command, Output};

use crate::support::*;

/// A helper of the tests below, not a check of its own: it skips when
/// `SLUICE_SKIP_PROBE` is set (only in the child processes below).
#[test]
fn skip_probe() {
    if std::env::var_os("SLUICE_SKIP_PROBE").is_some() {
        skip("skips::skip_probe", "probe reason");
    }
}

/// This test binary, running only [`skip_probe`] (output captured, as by
/// default), with the skip list in `log`.
fn probe(require: Option<&str>, log: &std::path::Path) -> Output {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(["skips::skip_probe", "--exact", "--test-threads=1"])
        .env("SLUICE_SKIP_PROBE", "1")
        .env("SLUICE_SKIPPED_TESTS", log)
        .env_remove("SLUICE_REQUIRE_TOOLCHAINS")
        .env_remove("RUST_TEST_NOCAPTURE");
    if let Some(value) = require {
        cmd.env("SLUICE_REQUIRE_TOOLCHAINS", value);
    }
    cmd.output().unwrap()
}

/// With the toolchains required (as `cargo xtask test` runs), a skip is a
/// failure, never an `ok`.
#[test]
fn a_skip_fails_when_toolchains_are_required() {
    let scratch = Scratch::new("");
    let log = scratch.path("skipped.txt");
    for value in ["1", "yes"] {
        let output = probe(Some(value), &log);
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert_eq!(output.status.code(), Some(101), "{stdout}");
        assert!(
            stdout.contains("test skips::skip_probe ... FAILED"),
            "{stdout}"
        );
        assert!(
            stdout.contains("SKIPPED skips::skip_probe: probe reason"),
            "{stdout}"
        );
        assert!(
            stdout.contains("test result: FAILED. 0 passed; 1 failed"),
            "{stdout}"
        );
        assert!(!log.exists(), "a required skip is not listed as a skip");
    }
}

/// Without, the test passes (the harness has no "skipped"), but its reason is
/// printed although the harness captures a passing test's output, and listed.
#[test]
fn a_skip_prints_its_reason_when_not_required() {
    let scratch = Scratch::new("");
    let log = scratch.path("skipped.txt");
    for require in [None, Some("0"), Some("")] {
        let output = probe(require, &log);
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_exit(&output, 0);
        assert!(stdout.contains("test skips::skip_probe ... ok"), "{stdout}");
        assert!(
            stderr.contains("SKIPPED skips::skip_probe: probe reason (not run; `cargo xtask test` installs what it needs)"),
            "{require:?}: stderr {stderr:?}"
        );
        assert_eq!(
            std::fs::read_to_string(&log).unwrap(),
            "SKIPPED skips::skip_probe: probe reason\n"
        );
    }
}
