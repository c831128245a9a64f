//! The Python and JavaScript plugin SDKs (`sdk/python`, `sdk/js`) and the
//! flights_delay examples written on them: their own unit tests (pytest,
//! `node --test`) and `mypy --strict` on the Python SDK. Each run's summary
//! must count as many passed tests as the test files define, none failed or
//! skipped. (The templates' tests: `languages.rs`.)

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::*;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Runs `cmd`; its stdout and stderr together, after checking it exited 0.
fn output_of(cmd: &mut Command, what: &str) -> String {
    let out = cmd.output().unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{what}:\n{text}");
    text
}

/// How many tests the files in `dir` (and below) named `*suffix` define, by
/// counting lines that start with `start`.
fn tests_defined(dir: &Path, suffix: &str, start: &str) -> usize {
    let mut n = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            n += tests_defined(&path, suffix, start);
        } else if path.to_str().unwrap().ends_with(suffix) {
            let text = std::fs::read_to_string(&path).unwrap();
            n += text.lines().filter(|l| l.starts_with(start)).count();
        }
    }
    n
}

/// pytest in `dir`: all the `def test_` functions of its test files pass.
fn pytest_in(dir: &Path, files: &str) {
    let defined = tests_defined(dir, files, "def test_");
    assert!(defined >= 4, "{}: {defined} tests", dir.display());
    let text = output_of(
        Command::new("pytest")
            .args(["-p", "no:cacheprovider"])
            .current_dir(dir)
            .env("PYTHONDONTWRITEBYTECODE", "1"),
        &format!("pytest in {}", dir.display()),
    );
    let summary = text.lines().last().unwrap_or_default();
    assert!(
        summary.contains(&format!("{defined} passed")) && !summary.contains("skipped"),
        "{}: {defined} tests defined; pytest says {summary:?}",
        dir.display()
    );
}

#[test]
fn python_sdk_and_example_unit_tests() {
    if which("pytest").is_none() {
        skip(
            "sdk::python_sdk_and_example_unit_tests",
            "not on PATH: pytest",
        );
        return;
    }
    pytest_in(&repo().join("sdk/python"), ".py");
    pytest_in(
        &repo().join("examples/plugins/python/flights_delay"),
        "test_app.py",
    );
}

#[test]
fn python_sdk_is_mypy_strict_clean() {
    if which("mypy").is_none() {
        skip("sdk::python_sdk_is_mypy_strict_clean", "not on PATH: mypy");
        return;
    }
    let text = output_of(
        Command::new("mypy")
            .args(["--strict", "--cache-dir"])
            .arg(repo().join("target/mypy-cache"))
            .arg("sdk/python")
            .current_dir(repo()),
        "mypy --strict sdk/python",
    );
    assert!(text.contains("Success: no issues found"), "{text}");
}

#[test]
fn js_sdk_and_example_unit_tests() {
    if which("node").is_none() {
        skip("sdk::js_sdk_and_example_unit_tests", "not on PATH: node");
        return;
    }
    let dirs = ["sdk/js/test", "examples/plugins/js/flights_delay"];
    let defined: usize = dirs
        .iter()
        .map(|d| tests_defined(&repo().join(d), ".test.js", "test("))
        .sum();
    assert!(defined >= 14, "{defined} tests");
    let text = output_of(
        Command::new("node")
            .arg("--test")
            .args(dirs)
            .current_dir(repo()),
        "node --test",
    );
    for want in [
        format!("# tests {defined}"),
        format!("# pass {defined}"),
        "# fail 0".into(),
        "# skipped 0".into(),
        "# todo 0".into(),
    ] {
        assert!(text.contains(&want), "`{want}` not in\n{text}");
    }
}
