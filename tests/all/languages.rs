//! Plugins in other languages: `examples/plugins/{python,js,c}/flights_delay`
//! are built with their own toolchains and run through `sluice plugin run` on
//! the first 10,000 flights; their output must equal the Rust plugin's.
//!
//! A missing toolchain skips its test with the reason, written to stderr and to
//! `target/skipped-tests.txt` — unless `SLUICE_REQUIRE_TOOLCHAINS=1` (set by
//! `cargo xtask test`, which installs them all), where it fails.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::support::*;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `None` when every tool is there; else why the test cannot run.
fn missing(tools: &[&str]) -> Option<String> {
    let absent: Vec<&str> = tools
        .iter()
        .copied()
        .filter(|t| which(t).is_none())
        .collect();
    (!absent.is_empty()).then(|| format!("not on PATH: {}", absent.join(", ")))
}

/// `sluice plugin run` of `wasm` over `input` with min_delay = 15; its stdout.
fn plugin_run(wasm: &Path, input: &Path, cache: &Path) -> Vec<u8> {
    let output = Command::new(sluice_bin())
        .args(["plugin", "run"])
        .arg(wasm)
        .args([
            "--config",
            "min_delay=15",
            "--key",
            "/carrier",
            "--timestamp",
            "/event_time",
        ])
        .args(["--memory-limit", "256MiB"])
        .arg("--cache-dir")
        .arg(cache)
        .stdin(std::fs::File::open(input).unwrap())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}: {}",
        wasm.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

/// Builds `examples/plugins/LANG/flights_delay` and compares its output with the
/// Rust plugin's.
fn same_as_rust(lang: &str, tools: &[&str]) {
    let test = format!("languages::{lang}");
    if let Some(reason) = missing(tools) {
        skip(
            &test,
            &format!("{reason} (see examples/plugins/*/README.md)"),
        );
        return;
    }
    let scratch = Scratch::new("");
    let input = scratch.path("flights.ndjson");
    std::fs::write(&input, flights_lines(10_000).join("\n") + "\n").unwrap();
    let out = scratch.path("out");
    let build = Command::new("bash")
        .arg(repo().join(format!("examples/plugins/{lang}/flights_delay/build.sh")))
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        build.status.success(),
        "build of the {lang} plugin failed:\n{}{}",
        String::from_utf8_lossy(&build.stdout),
        String::from_utf8_lossy(&build.stderr)
    );
    // A cache shared by the runs: the Python and JavaScript components take
    // seconds to compile.
    let cache = repo().join("target/plugin-run-cache");
    let theirs = plugin_run(&out.join("flights_delay.wasm"), &input, &cache);
    let rust = plugin_run(&plugins_dir().join("flights_delay.wasm"), &input, &cache);
    let lines = rust
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .count();
    assert!(lines > 1000, "the Rust plugin kept {lines} flights");
    assert!(
        theirs == rust,
        "the {lang} plugin's output differs from the Rust plugin's ({} vs {} bytes)",
        theirs.len(),
        rust.len()
    );
}

#[test]
fn python() {
    same_as_rust("python", &["componentize-py"]);
}

#[test]
fn javascript() {
    same_as_rust("js", &["componentize-js"]);
}

#[test]
fn c() {
    same_as_rust("c", &["clang", "wit-bindgen", "wasm-tools"]);
}

/// `sluice plugin new` in `lang`, built with its build.sh, run with `plugin run
/// --expect` over its own sample events.
/// `sluice plugin new my-NAME --lang LANG --kind KIND`, then its `build.sh`;
/// `None` (after saying why) when a tool is missing.
fn new_and_build(lang: &str, kind: &str, name: &str, tools: &[&str]) -> Option<(Scratch, PathBuf)> {
    let test = format!("languages::template_{lang}_{kind}");
    if let Some(reason) = missing(tools) {
        skip(
            &test,
            &format!("{reason} (see examples/plugins/*/README.md)"),
        );
        return None;
    }
    let scratch = Scratch::new("");
    let dir = scratch.path(name);
    let new = Command::new(sluice_bin())
        .args([
            "plugin", "new", name, "--lang", lang, "--kind", kind, "--dir",
        ])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(
        new.status.success(),
        "{}",
        String::from_utf8_lossy(&new.stderr)
    );
    let mut build = Command::new("bash");
    build.arg(dir.join("build.sh")).current_dir(&dir);
    // The outer cargo's settings must not leak into a plugin's own build; its
    // target folder is kept warm across runs.
    for var in [
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTC_WRAPPER",
        "CARGO_BUILD_TARGET",
        "CARGO_MAKEFLAGS",
        "MAKEFLAGS",
    ] {
        build.env_remove(var);
    }
    build.env("CARGO_TARGET_DIR", repo().join("target/template-build"));
    let built = build.output().unwrap();
    assert!(
        built.status.success(),
        "build of the {lang} {kind} template failed:\n{}{}",
        String::from_utf8_lossy(&built.stdout),
        String::from_utf8_lossy(&built.stderr)
    );
    Some((scratch, dir))
}

fn template_builds_and_runs(lang: &str, tools: &[&str]) {
    let Some((scratch, dir)) = new_and_build(lang, "processor", "my-tagger", tools) else {
        return;
    };
    std::fs::write(
        scratch.path("expected"),
        "{\"a\":1,\"tag\":\"x\"}\n{\"tag\":\"x\"}\n",
    )
    .unwrap();
    let run = Command::new(sluice_bin())
        .args(["plugin", "run"])
        .arg(dir.join("out/my-tagger.wasm"))
        .args(["--config", "tag=x", "--expect"])
        .arg(scratch.path("expected"))
        .arg("--cache-dir")
        .arg(repo().join("target/plugin-run-cache"))
        .stdin(std::fs::File::open(dir.join("events.ndjson")).unwrap())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{lang} template: {stderr}");
    assert!(
        stderr.contains("in=3 out=2 rejected=1 failed=0"),
        "{stderr}"
    );
    assert!(
        stderr.contains("rejected: line 3: not a JSON object"),
        "{stderr}"
    );
}

#[test]
fn template_rust() {
    template_builds_and_runs("rust", &["cargo"]);
}

/// The aggregator template: its top-2 destinations of the sample events,
/// counted by hand (BOS 3, LAX 2, SFO 1; the null skipped).
#[test]
fn template_rust_aggregator() {
    let Some((scratch, dir)) = new_and_build("rust", "aggregator", "my-top", &["cargo"]) else {
        return;
    };
    std::fs::write(
        scratch.path("expected"),
        "[{\"value\":\"BOS\",\"count\":3},{\"value\":\"LAX\",\"count\":2}]\n",
    )
    .unwrap();
    let run = Command::new(sluice_bin())
        .args(["plugin", "run"])
        .arg(dir.join("out/my-top.wasm"))
        .args(["--field", "/dest", "--config", "n=2", "--expect"])
        .arg(scratch.path("expected"))
        .arg("--cache-dir")
        .arg(repo().join("target/plugin-run-cache"))
        .stdin(std::fs::File::open(dir.join("events.ndjson")).unwrap())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "aggregator template: {stderr}");
    assert!(
        stderr.contains("in=7 out=1 rejected=0 failed=0"),
        "{stderr}"
    );
}

#[test]
fn template_python() {
    template_builds_and_runs("python", &["componentize-py"]);
}

#[test]
fn template_javascript() {
    template_builds_and_runs("js", &["componentize-js"]);
}

#[test]
fn template_c() {
    template_builds_and_runs("c", &["clang", "wit-bindgen", "wasm-tools"]);
}
