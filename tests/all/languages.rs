//! Plugins in other languages: `examples/plugins/{python,js,c}/flights_delay`
//! are built with their own toolchains and run through `sluice plugin run` on
//! every flight of the dataset; their output must equal the Rust plugin's
//! (72,914 flights). The templates of `sluice plugin new`: a new project is
//! built and run; a Python or JavaScript one first passes its own unit tests
//! (pytest, `node --test`) without being built, and its component then runs in
//! the daemon.
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
    std::fs::write(&input, flights_lines(usize::MAX).join("\n") + "\n").unwrap();
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
    // The flights at least 15 minutes late, as BENCHMARKS.md and the flights
    // job count them.
    assert_eq!(lines, 72_914, "the Rust plugin kept {lines} flights");
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
    build_new(lang, kind, &dir);
    Some((scratch, dir))
}

/// Runs the `build.sh` of the new project in `dir`.
fn build_new(lang: &str, kind: &str, dir: &Path) {
    let mut build = Command::new("bash");
    build.arg(dir.join("build.sh")).current_dir(dir);
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
}

fn template_builds_and_runs(lang: &str, tools: &[&str]) {
    let Some((scratch, dir)) = new_and_build(lang, "processor", "my-tagger", tools) else {
        return;
    };
    plugin_run_expect(lang, &scratch, &dir);
}

/// `sluice plugin run --expect` of the built `my-tagger` template over its
/// own sample events.
fn plugin_run_expect(lang: &str, scratch: &Scratch, dir: &Path) {
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

/// The keyed template (`--kind keyed`, Rust): the WIT of package 0.2.0 in
/// `wit/0.2.0/`, its own unit tests (through the SDK's `KeyedHarness`) pass
/// before any build, and `build.sh` makes a component of the
/// `keyed-processor` world (what `sluice plugin check` lists of it: its
/// exports and the 0.2.0 imports).
#[test]
fn template_rust_keyed() {
    let test = "languages::template_rust_keyed";
    if let Some(reason) = missing(&["cargo"]) {
        skip(
            test,
            &format!("{reason} (see templates/rust-keyed/README.md)"),
        );
        return;
    }
    let scratch = Scratch::new("");
    let dir = scratch.path("my-counter");
    let new = Command::new(sluice_bin())
        .args(["plugin", "new", "my-counter", "--kind", "keyed", "--dir"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(
        new.status.success(),
        "{}",
        String::from_utf8_lossy(&new.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("wit/0.2.0/plugin.wit")).unwrap(),
        std::fs::read_to_string(repo().join("wit/0.2.0/plugin.wit")).unwrap()
    );
    assert!(!dir.join("wit/plugin.wit").exists());

    // `cargo test` in the project, natively, with the target folder kept
    // warm as for build.sh.
    let mut test_cmd = Command::new("cargo");
    test_cmd.arg("test").current_dir(&dir);
    for var in [
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTC_WRAPPER",
        "CARGO_BUILD_TARGET",
        "CARGO_MAKEFLAGS",
        "MAKEFLAGS",
    ] {
        test_cmd.env_remove(var);
    }
    test_cmd.env("CARGO_TARGET_DIR", repo().join("target/template-build"));
    let unit = test_cmd.output().unwrap();
    let report =
        String::from_utf8_lossy(&unit.stdout).into_owned() + &String::from_utf8_lossy(&unit.stderr);
    assert!(
        unit.status.success(),
        "keyed template's unit tests:\n{report}"
    );
    assert!(
        report.contains("test result: ok. 2 passed; 0 failed; 0 ignored"),
        "{report}"
    );
    assert!(!dir.join("out").exists(), "the unit tests built something");

    build_new("rust", "keyed", &dir);
    let check = Command::new(sluice_bin())
        .args(["plugin", "check"])
        .arg(dir.join("out/my-counter.wasm"))
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&check.stdout);
    for want in [
        "  configure: func(config: list<tuple<string, string>>) -> result<_, string>",
        "  process-keyed: func(input: record { keys: list<list<u8>>, states: list<option<list<u8>>>,",
        "  sluice:plugin/types@0.2.0",
    ] {
        assert!(out.contains(want), "missing {want:?} in:\n{out}");
    }
    assert!(!out.contains("  process: func"), "{out}");
}

/// `--kind keyed` in a language with no keyed template says which have one.
#[test]
fn keyed_templates_are_rust_python_and_js() {
    let scratch = Scratch::new("");
    let new = Command::new(sluice_bin())
        .args([
            "plugin", "new", "k", "--lang", "c", "--kind", "keyed", "--dir",
        ])
        .arg(scratch.path("k"))
        .output()
        .unwrap();
    assert!(!new.status.success());
    let stderr = String::from_utf8_lossy(&new.stderr);
    assert!(
        stderr.contains("--kind keyed: keyed templates exist for rust, python and js (not c)"),
        "{stderr}"
    );
    assert!(!scratch.path("k").exists());
}

/// The unit tests of a new project in `dir` (`test`, run there), before any
/// build: their summary must count `passed`, none failed or skipped.
fn unit_tests_pass(lang: &str, dir: &Path, test: &[&str], passed: &str) {
    let unit = Command::new(test[0])
        .args(&test[1..])
        .current_dir(dir)
        .output()
        .unwrap();
    let report =
        String::from_utf8_lossy(&unit.stdout).into_owned() + &String::from_utf8_lossy(&unit.stderr);
    assert!(
        unit.status.success(),
        "{lang} template's unit tests:\n{report}"
    );
    assert!(
        report.contains(passed),
        "{lang}: `{passed}` not in\n{report}"
    );
    if test[0] == "node" {
        for want in ["# fail 0", "# skipped 0", "# todo 0", "# cancelled 0"] {
            assert!(report.contains(want), "{lang}: `{want}` not in\n{report}");
        }
    } else {
        for bad in [" failed", " skipped", "xfail", "deselected", " error"] {
            assert!(!report.contains(bad), "{lang}: `{bad}` in\n{report}");
        }
    }
    assert!(!dir.join("out").exists(), "the unit tests built something");
}

/// `sluice plugin new --lang LANG` on the SDK: the project's own unit tests
/// pass before anything is built (`test` in the project folder, whose
/// summary must count `tests` passed and none failed or skipped); then its
/// `build.sh`, `sluice plugin run --expect`, and a real daemon running the
/// component between a file source and file sinks.
fn template_on_sdk(lang: &str, tools: &[&str], test: &[&str], passed: &str) {
    let name = format!("languages::template_{lang}_processor");
    if let Some(reason) = missing(tools) {
        skip(&name, &format!("{reason} (see templates/{lang}/README.md)"));
        return;
    }
    let scratch = Scratch::new("");
    let dir = scratch.path("my-tagger");
    let new = Command::new(sluice_bin())
        .args(["plugin", "new", "my-tagger", "--lang", lang, "--dir"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(
        new.status.success(),
        "{}",
        String::from_utf8_lossy(&new.stderr)
    );

    unit_tests_pass(lang, &dir, test, passed);

    build_new(lang, "processor", &dir);
    plugin_run_expect(lang, &scratch, &dir);

    // The daemon: plugins from the project's out/, the compile cache shared
    // with `plugin run` (the component was compiled there just now).
    let state = scratch.path("state");
    std::fs::create_dir_all(&state).unwrap();
    let cache = repo().join("target/plugin-run-cache/compiled");
    std::fs::create_dir_all(&cache).unwrap();
    std::os::unix::fs::symlink(&cache, state.join("compiled")).unwrap();
    let config = Config::new()
        .set_str("plugins_dir", dir.join("out").to_str().unwrap())
        .set_str("state_dir", state.to_str().unwrap())
        .file_source("in", dir.join("events.ndjson").to_str().unwrap())
        .file_sink("out", "out.ndjson")
        .file_sink("dlq", "dlq.ndjson")
        .pipeline("tag", "in", &["out"])
        .processor(
            r#"{ plugin = "my-tagger.wasm", config = { tag = "x" }, memory_limit = "256MiB" }"#,
        )
        .dead_letter("dlq")
        .build();
    scratch.write_config(&config);
    let output = scratch.run();
    assert_exit(&output, 0);
    assert_eq!(count(&output, "tag", "in"), 3);
    assert_eq!(count(&output, "tag", "out"), 2);
    assert_eq!(count(&output, "tag", "rejected"), 1);
    assert_eq!(
        scratch.read_lines("out.ndjson"),
        [r#"{"a":1,"tag":"x"}"#, r#"{"tag":"x"}"#]
    );
    let dead = scratch.read_lines("dlq.ndjson");
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert!(
        dead[0].contains("not a JSON object") && dead[0].contains("[1]"),
        "{dead:?}"
    );
}

/// The aggregator template on an SDK: its unit tests pass before any build,
/// and its component computes the top-2 destinations of the sample events,
/// counted by hand (BOS 3, LAX 2, SFO 1; the null skipped).
fn aggregator_on_sdk(lang: &str, tools: &[&str], test: &[&str], passed: &str) {
    let name = format!("languages::template_{lang}_aggregator");
    if let Some(reason) = missing(tools) {
        skip(
            &name,
            &format!("{reason} (see templates/{lang}-aggregator/README.md)"),
        );
        return;
    }
    let scratch = Scratch::new("");
    let dir = scratch.path("my-top");
    let new = Command::new(sluice_bin())
        .args([
            "plugin",
            "new",
            "my-top",
            "--lang",
            lang,
            "--kind",
            "aggregator",
            "--dir",
        ])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(
        new.status.success(),
        "{}",
        String::from_utf8_lossy(&new.stderr)
    );
    unit_tests_pass(lang, &dir, test, passed);
    build_new(lang, "aggregator", &dir);
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
    assert!(run.status.success(), "{lang} aggregator template: {stderr}");
    assert!(
        stderr.contains("in=7 out=1 rejected=0 failed=0"),
        "{stderr}"
    );
}

#[test]
fn template_python_aggregator() {
    aggregator_on_sdk(
        "python",
        &["componentize-py", "pytest"],
        &["pytest", "-p", "no:cacheprovider"],
        "3 passed",
    );
}

#[test]
fn template_javascript_aggregator() {
    aggregator_on_sdk(
        "js",
        &["componentize-js", "node"],
        &["node", "--test"],
        "# pass 3",
    );
}

#[test]
fn template_python() {
    template_on_sdk(
        "python",
        &["componentize-py", "pytest"],
        &["pytest", "-p", "no:cacheprovider"],
        // test_app.py: two tests, and one over three tags.
        "5 passed",
    );
}

#[test]
fn template_javascript() {
    template_on_sdk(
        "js",
        &["componentize-js", "node"],
        &["node", "--test"],
        // processor.test.js: two tests, and one per tag of three.
        "# pass 5",
    );
}

#[test]
fn template_c() {
    template_builds_and_runs("c", &["clang", "wit-bindgen", "wasm-tools"]);
}

/// `sluice plugin run --key /user` of the built keyed template `dir` over
/// `input`, with `args`; its output must be `expected` (lines). Returns whether
/// it exited 0, and its stderr.
fn keyed_run(
    dir: &Path,
    scratch: &Scratch,
    input: &Path,
    args: &[&str],
    expected: &[&str],
) -> (bool, String) {
    std::fs::write(scratch.path("expected"), expected.join("\n") + "\n").unwrap();
    let run = Command::new(sluice_bin())
        .args(["plugin", "run"])
        .arg(dir.join("out/my-counter.wasm"))
        .args(["--key", "/user", "--memory-limit", "256MiB"])
        .args(args)
        .arg("--expect")
        .arg(scratch.path("expected"))
        .arg("--cache-dir")
        .arg(repo().join("target/plugin-run-cache"))
        .stdin(std::fs::File::open(input).unwrap())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr).into_owned();
    assert!(
        stderr.contains("output matches"),
        "{}: {stderr}",
        dir.display()
    );
    (run.status.success(), stderr)
}

/// The keyed template on an SDK (`--kind keyed`): the WIT of package 0.2.0
/// in `wit/0.2.0/`, its unit tests (through the SDK's harness) pass before
/// any build, and the component `build.sh` makes runs in `sluice plugin run`
/// with the records keyed by `/user`. The counts, worked out by hand: the
/// sample events give ada 1, bob 1, ada 2, ada 3, and `[1]` has no key (the
/// daemon refuses it before the plugin); with event times and
/// `forget_minutes = 1`, ada's timer (01:00) fires after bob's event at
/// 01:10, so ada starts again from 1 at 01:20; at the end of the input the
/// last timers clear both keys. The output is the same whatever the batch
/// size.
fn keyed_on_sdk(lang: &str, tools: &[&str], test: &[&str], passed: &str) {
    let name = format!("languages::template_{lang}_keyed");
    if let Some(reason) = missing(tools) {
        skip(
            &name,
            &format!("{reason} (see templates/{lang}-keyed/README.md)"),
        );
        return;
    }
    let scratch = Scratch::new("");
    let dir = scratch.path("my-counter");
    let new = Command::new(sluice_bin())
        .args([
            "plugin",
            "new",
            "my-counter",
            "--lang",
            lang,
            "--kind",
            "keyed",
            "--dir",
        ])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(
        new.status.success(),
        "{}",
        String::from_utf8_lossy(&new.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("wit/0.2.0/plugin.wit")).unwrap(),
        std::fs::read_to_string(repo().join("wit/0.2.0/plugin.wit")).unwrap()
    );
    assert!(!dir.join("wit/plugin.wit").exists());
    unit_tests_pass(lang, &dir, test, passed);
    build_new(lang, "keyed", &dir);

    // `[1]` has no key: refused before the plugin, as the daemon does.
    let (ok, stderr) = keyed_run(
        &dir,
        &scratch,
        &dir.join("events.ndjson"),
        &[],
        &[
            r#"{"user":"ada","page":"/","seen":1}"#,
            r#"{"user":"bob","page":"/","seen":1}"#,
            r#"{"user":"ada","page":"/docs","seen":2}"#,
            r#"{"user":"ada","page":"/blog","seen":3}"#,
        ],
    );
    assert!(ok, "{stderr}");
    for want in [
        "in=5 out=4 rejected=1 failed=0",
        "rejected: line 4: no record key",
        "state: ada = {\"n\":3,\"last_ms\":0}",
        "state: bob = {\"n\":1,\"last_ms\":0}",
        "state: 2 key(s), 0 timer(s) left",
    ] {
        assert!(stderr.contains(want), "{lang}: `{want}` not in\n{stderr}");
    }

    let timed = [
        r#"{"user":"ada","t":"2024-01-01T00:00:00Z"}"#,
        r#"{"user":"bob","t":"2024-01-01T00:00:30Z"}"#,
        r#"{"user":"bob","t":"2024-01-01T00:01:10Z"}"#,
        r#"{"user":"ada","t":"2024-01-01T00:01:20Z"}"#,
        r#"{"user":"bob","t":"2024-01-01T00:01:20Z"}"#,
    ];
    let input = scratch.path("timed.ndjson");
    std::fs::write(&input, timed.join("\n") + "\n").unwrap();
    let seen = [1, 1, 2, 1, 3];
    let expected: Vec<String> = timed
        .iter()
        .zip(seen)
        .map(|(line, n)| format!("{},\"seen\":{n}}}", &line[..line.len() - 1]))
        .collect();
    let expected: Vec<&str> = expected.iter().map(String::as_str).collect();
    for batch in ["1", "2", "1000"] {
        let (ok, stderr) = keyed_run(
            &dir,
            &scratch,
            &input,
            &[
                "--timestamp",
                "/t",
                "--config",
                "forget_minutes=1",
                "--batch",
                batch,
            ],
            &expected,
        );
        assert!(ok, "{lang}, batch {batch}: {stderr}");
        for want in [
            "in=5 out=5 rejected=0 failed=0",
            "state: 0 key(s), 0 timer(s) left",
        ] {
            assert!(
                stderr.contains(want),
                "{lang}, batch {batch}: `{want}` not in\n{stderr}"
            );
        }
    }
}

#[test]
fn template_python_keyed() {
    keyed_on_sdk(
        "python",
        &["componentize-py", "pytest"],
        &["pytest", "-p", "no:cacheprovider"],
        // test_app.py: three tests.
        "3 passed",
    );
}

#[test]
fn template_javascript_keyed() {
    keyed_on_sdk(
        "js",
        &["componentize-js", "node"],
        &["node", "--test"],
        // processor.test.js: three tests.
        "# pass 3",
    );
}
