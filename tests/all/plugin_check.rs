//! `sluice plugin check FILE.wasm`: the world, exports and imports of a
//! component, and whether the daemon can run it.

use std::process::Command;

use crate::support::*;

fn check(file: &std::path::Path, args: &[&str]) -> (i32, String) {
    let output = Command::new(sluice_bin())
        .args(["plugin", "check"])
        .arg(file)
        .args(args)
        .output()
        .unwrap();
    (
        output.status.code().unwrap(),
        String::from_utf8(output.stdout).unwrap(),
    )
}

#[test]
fn a_processor_is_described_and_runs() {
    let file = plugins_dir().join("tag_a.wasm");
    let (code, out) = check(&file, &[]);
    assert_eq!(code, 0, "{out}");
    let version = sluice::wasm::plugin::content_version(&std::fs::read(&file).unwrap());
    for want in [
        format!("version {version}"),
        "world:    sluice:plugin/processor@0.3.0".to_string(),
        "  configure: func(config: list<tuple<string, string>>) -> result<_, string>".to_string(),
        "  process: func(batch: record { values: list<u8>, value-ends: list<u32>,".to_string(),
        "  sluice:plugin/types@0.3.0".to_string(),
        "verdict:  runs in this daemon".to_string(),
    ] {
        assert!(out.contains(&want), "missing {want:?} in:\n{out}");
    }
}

#[test]
fn what_cannot_run_says_why_and_exits_1() {
    let scratch = Scratch::new("");
    let tag = std::fs::read(plugins_dir().join("tag_a.wasm")).unwrap();
    scratch.write("junk.wasm", "not wasm");
    std::fs::write(scratch.path("half.wasm"), &tag[..tag.len() / 2]).unwrap();
    let cases = [
        (
            plugins_dir().join("not_a_plugin.wasm"),
            vec![],
            "world:    wasi:cli/command",
        ),
        (
            plugins_dir().join("not_a_plugin.wasm"),
            vec![],
            "is not a sluice:plugin/processor component",
        ),
        (
            scratch.path("junk.wasm"),
            vec![],
            "not a valid WebAssembly component",
        ),
        (
            scratch.path("half.wasm"),
            vec![],
            "not a valid WebAssembly component",
        ),
        (
            plugins_dir().join("misbehave.wasm"),
            vec!["--config", "configure=fail"],
            "cannot run with this config: plugin error: configure failed: configure refused on purpose",
        ),
        (scratch.path("missing.wasm"), vec![], "cannot read"),
    ];
    for (file, args, want) in cases {
        let (code, out) = check(&file, &args);
        assert_eq!(code, 1, "{}: {out}", file.display());
        assert!(out.contains(want), "missing {want:?} in:\n{out}");
    }
    // The same plugin with a config it accepts runs.
    let (code, out) = check(
        &plugins_dir().join("misbehave.wasm"),
        &["--config", "mode=panic", "--config", "trigger=x"],
    );
    assert_eq!(code, 0, "{out}");
}

#[test]
fn plugin_run_fails_on_what_the_daemon_would_not_pass() {
    use std::io::Write as _;
    let mut child = Command::new(sluice_bin())
        .args(["plugin", "run"])
        .arg(plugins_dir().join("identity.wasm"))
        .args(["--timestamp", "/t"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"{\"a\":1,\"t\":1}\n{\"a\":2,\"t\":\"bad\"}\n")
        .unwrap();
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "{\"a\":1,\"t\":1}\n"
    );
    assert!(stderr.contains("skipped: line 2: event time"), "{stderr}");
    assert!(
        stderr.contains("in=2 out=1 rejected=0 failed=0 skipped=1 broken=0"),
        "{stderr}"
    );
}

/// A core module (what a wasm32-unknown-unknown or wasm32-wasip1 build gives)
/// is named as one, with what to do, by `plugin check` and by the daemon.
#[test]
fn a_core_module_is_named_as_one_with_the_fix() {
    const HINT: &str = "this is a core WebAssembly module, not a component: build it for \
                        wasm32-wasip2, or wrap it with `wasm-tools component new`";
    let scratch = Scratch::new(
        r#"
[daemon]
plugins_dir = "plugins"

[sources.in]
type = "stdin"

[sinks.out]
type = "stdout"

[pipelines.p]
source = "in"
processors = [{ plugin = "core.wasm" }]
sinks = ["out"]
"#,
    );
    std::fs::create_dir(scratch.path("plugins")).unwrap();
    // The smallest core module: the magic and version 1.
    std::fs::write(scratch.path("plugins/core.wasm"), b"\0asm\x01\0\0\0").unwrap();
    let (code, out) = check(&scratch.path("plugins/core.wasm"), &[]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!(
            "verdict:  cannot run: not a valid WebAssembly component: {HINT}"
        )),
        "{out}"
    );
    let output = scratch.command("validate").output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!(
            "core.wasm is not a valid WebAssembly component: {HINT}"
        )),
        "{stderr}"
    );
    assert_ne!(output.status.code(), Some(0), "{stderr}");
    // Not said of what is not a core module.
    let (_, junk) = check(&plugins_dir().join("not_a_plugin.wasm"), &[]);
    assert!(!junk.contains("core WebAssembly module"), "{junk}");
}
