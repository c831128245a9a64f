//! Bad configs: file:line:col, the field, and exit code 2 — and every example
//! config validates.

use crate::support::*;

const GOOD_TAIL: &str = r#"
[sources.in]
type = "stdin"

[sinks.out]
type = "stdout"
"#;

/// Runs `sluice validate` on `config`; returns the error text.
fn validate_error(config: &str) -> String {
    let scratch = Scratch::new(config);
    let output = scratch.command("validate").output().unwrap();
    assert_exit(&output, 2);
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stderr.starts_with("error: sluice.toml:"), "{stderr}");
    stderr
}

#[test]
fn unknown_field_is_located() {
    let err = validate_error(&format!(
        "[daemon]\nplugins_dir = \"plugins\"\n{GOOD_TAIL}\n[pipelines.p]\nsource = \"in\"\nsinks = [\"out\"]\npartitons = 2\n"
    ));
    insta::assert_snapshot!(err, @r#"
    error: sluice.toml:13:1: unknown field `partitons`, expected one of `source`, `partitions`, `partition_by`, `batch`, `processors`, `sinks`, `dead_letter`, `on_error`, `queue_records`, `window`, `aggregate`, `checkpoint`
       |
    13 | partitons = 2
       | ^
    "#);
}

#[test]
fn bad_duration_names_the_field() {
    let err = validate_error(&format!(
        "{GOOD_TAIL}\n[pipelines.p]\nsource = \"in\"\nsinks = [\"out\"]\nbatch = {{ max_records = 10, interval = \"2 fortnights\" }}\n"
    ));
    insta::assert_snapshot!(err, @r#"
    error: sluice.toml:11:40: field `interval`: invalid duration "2 fortnights": unknown time unit "fortnights", supported units: ns, us/µs, ms, sec, min, hours, days, weeks, months, years (and few variations)
       |
    11 | batch = { max_records = 10, interval = "2 fortnights" }
       |                                        ^
    "#);
}

#[test]
fn missing_plugin_file_is_located() {
    let err = validate_error(&format!(
        "{GOOD_TAIL}\n[pipelines.p]\nsource = \"in\"\nsinks = [\"out\"]\nprocessors = [\n  {{ plugin = \"nope.wasm\" }},\n]\n"
    ));
    insta::assert_snapshot!(err, @r#"
    error: sluice.toml:12:14: field `plugin`: plugin file not found: plugins/nope.wasm; the folder plugins does not exist (set [daemon] plugins_dir, relative to the config file; a `${NAME}` in it is the environment variable's value)
       |
    12 |   { plugin = "nope.wasm" },
       |              ^
    "#);

    // A folder that exists: the message lists the plugins it holds.
    let err = validate_error(&format!(
        "[daemon]\nplugins_dir = \"@PLUGINS@\"\n{GOOD_TAIL}\n[pipelines.p]\nsource = \"in\"\nsinks = [\"out\"]\nprocessors = [{{ plugin = \"identiy.wasm\" }}]\n"
    ));
    let mut present: Vec<String> = std::fs::read_dir(plugins_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".wasm"))
        .collect();
    present.sort();
    assert!(present.contains(&"identity.wasm".to_string()));
    assert!(
        err.contains(&format!(
            "plugin file not found: {}; {} holds: {}",
            plugins_dir().join("identiy.wasm").display(),
            plugins_dir().display(),
            present.join(", ")
        )),
        "{err}"
    );
}

#[test]
fn unknown_sink_and_bad_plugin_config_are_located() {
    let err = validate_error(&format!(
        "{GOOD_TAIL}\n[pipelines.p]\nsource = \"in\"\nsinks = [\"out\", \"nowhere\"]\n"
    ));
    assert!(
        err.contains("sluice.toml:10:17: no sink named `nowhere` (known: `out`)"),
        "{err}"
    );

    let err = validate_error(&format!(
        "[daemon]\nplugins_dir = \"@PLUGINS@\"\n{GOOD_TAIL}\n[pipelines.p]\nsource = \"in\"\nsinks = [\"out\"]\nprocessors = [{{ plugin = \"flights_delay.wasm\", config = {{ min_delay = \"soon\" }} }}]\n"
    ));
    assert!(
        err.contains("sluice.toml:13:26: field `plugin`: plugin flights_delay ("),
        "{err}"
    );
    assert!(
        err.contains("configure failed: config `min_delay`: cannot parse `soon`"),
        "{err}"
    );
}

#[test]
fn a_file_that_is_not_a_component_is_refused() {
    let scratch = Scratch::new(&format!(
        "{GOOD_TAIL}\n[pipelines.p]\nsource = \"in\"\nsinks = [\"out\"]\nprocessors = [{{ plugin = \"broken.wasm\" }}]\n"
    ));
    std::fs::create_dir(scratch.path("plugins")).unwrap();
    std::fs::write(scratch.path("plugins/broken.wasm"), b"\0asm not really").unwrap();
    let output = scratch.command("validate").output().unwrap();
    assert_exit(&output, 2);
    let err = String::from_utf8(output.stderr).unwrap();
    assert!(err.contains("sluice.toml:11:26: field `plugin`: plugins/broken.wasm is not a valid WebAssembly component"), "{err}");
}

#[test]
fn every_example_config_validates() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let mut checked = 0;
    for dir in std::fs::read_dir(&root).unwrap() {
        let dir = dir.unwrap().path();
        if !dir.is_dir() {
            continue;
        }
        for file in std::fs::read_dir(&dir).unwrap() {
            let config = file.unwrap().path();
            if config.extension().is_none_or(|e| e != "toml") {
                continue;
            }
            // The example configs' plugins_dir is
            // `${CARGO_TARGET_DIR:-../../target}/plugins`: this build's.
            let output = std::process::Command::new(sluice_bin())
                .args(["validate", "--config"])
                .arg(&config)
                .env("CARGO_TARGET_DIR", plugins_dir().parent().unwrap())
                .output()
                .unwrap();
            assert!(
                output.status.code() == Some(0),
                "{}: {}",
                config.display(),
                String::from_utf8_lossy(&output.stderr)
            );
            checked += 1;
        }
    }
    // flights: sluice, delayed, windows; kafka: load, hourly.
    assert!(checked >= 5, "{checked} example configs");
}

/// `${NAME}` in a config: the example configs follow `CARGO_TARGET_DIR`
/// (an empty one has no plugins: the error names the path built from it),
/// and an unset variable without a default is a located error.
#[test]
fn environment_variables_in_a_config() {
    let empty = tempfile::tempdir().unwrap();
    let example =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/flights/sluice.toml");
    let output = std::process::Command::new(sluice_bin())
        .args(["validate", "--config"])
        .arg(&example)
        .env("CARGO_TARGET_DIR", empty.path())
        .output()
        .unwrap();
    assert_exit(&output, 2);
    let err = String::from_utf8(output.stderr).unwrap();
    let wanted = empty.path().join("plugins/flights_delay.wasm");
    assert!(
        err.contains(&format!("plugin file not found: {}", wanted.display())),
        "{err}"
    );

    let err = validate_error(&format!(
        "[daemon]\nplugins_dir = \"${{SLUICE_TEST_UNSET}}/plugins\"\n{GOOD_TAIL}\n[pipelines.p]\nsource = \"in\"\nsinks = [\"out\"]\n"
    ));
    insta::assert_snapshot!(err, @r#"
    error: sluice.toml:2:16: field `plugins_dir`: environment variable `SLUICE_TEST_UNSET` is not set (`${SLUICE_TEST_UNSET:-DEFAULT}` gives a default)
      |
    2 | plugins_dir = "${SLUICE_TEST_UNSET}/plugins"
      |                ^
    "#);
}

#[test]
fn missing_input_file_is_located() {
    let err = validate_error(
        "[sources.in]\ntype = \"file\"\npath = \"nope.ndjson\"\n\n[sinks.out]\ntype = \"stdout\"\n\n[pipelines.p]\nsource = \"in\"\nsinks = [\"out\"]\n",
    );
    assert!(
        err.starts_with("error: sluice.toml:3:8: field `path`: cannot open nope.ndjson: No such file or directory"),
        "{err}"
    );
}

#[test]
fn follow_on_gzip_and_a_sink_listed_twice_are_refused() {
    let err = validate_error(&format!(
        "[sources.in]\ntype = \"file\"\npath = {:?}\nfollow = true\n\n[sinks.out]\ntype = \"stdout\"\n\n[pipelines.p]\nsource = \"in\"\nsinks = [\"out\"]\n",
        flights_gz()
    ));
    assert!(err.contains("sluice.toml:3:8: field `path`: "), "{err}");
    assert!(
        err.contains("is gzip-compressed: `follow` works on plain files only"),
        "{err}"
    );

    let err = validate_error(&format!(
        "{GOOD_TAIL}\n[pipelines.p]\nsource = \"in\"\nsinks = [\"out\", \"out\"]\n"
    ));
    assert!(
        err.contains("sluice.toml:10:17: sink `out` is listed twice"),
        "{err}"
    );
}

#[test]
fn shared_files_and_out_of_range_limits_are_refused() {
    // Two sinks on one file (by two spellings).
    let err = validate_error(
        "[sources.in]\ntype = \"stdin\"\n\n[sinks.a]\ntype = \"file\"\npath = \"o.ndjson\"\n\n[sinks.b]\ntype = \"file\"\npath = \"./o.ndjson\"\n\n[pipelines.p]\nsource = \"in\"\nsinks = [\"a\"]\ndead_letter = \"b\"\n",
    );
    assert!(
        err.contains("sink `b` uses ./o.ndjson, which sink `a` uses too"),
        "{err}"
    );
    // A sink writing the file its pipeline reads.
    let err = validate_error(
        "[sources.in]\ntype = \"file\"\npath = \"sluice.toml\"\n\n[sinks.a]\ntype = \"file\"\npath = \"sluice.toml\"\n\n[pipelines.p]\nsource = \"in\"\nsinks = [\"a\"]\n",
    );
    assert!(err.contains("which source `in` uses too"), "{err}");
    // The dead-letter sink as an output too.
    let err = validate_error(&format!(
        "{GOOD_TAIL}\n[pipelines.p]\nsource = \"in\"\nsinks = [\"out\"]\ndead_letter = \"out\"\n"
    ));
    assert!(
        err.contains("sluice.toml:11:15: field `dead_letter`: sink `out` is both an output"),
        "{err}"
    );
    // Limits name their field.
    for (line, want) in [
        (
            "batch = { max_records = 0 }",
            "field `max_records`: must be at least 1",
        ),
        (
            "batch = { max_bytes = -5 }",
            "field `max_bytes`: invalid size -5",
        ),
        (
            "batch = { max_bytes = \"1GiB\" }",
            "more than a batch (or a line) may hold: at most 64MiB",
        ),
        (
            "batch = { interval = \"0s\" }",
            "field `interval`: must be longer than 0s",
        ),
        (
            "processors = [{ plugin = \"x.wasm\", timeout = \"1ns\" }]",
            "field `timeout`: 1ns is out of range",
        ),
        ("partitions = 5000", "partitions must be between 1 and 1024"),
    ] {
        let err = validate_error(&format!(
            "{GOOD_TAIL}\n[pipelines.p]\nsource = \"in\"\nsinks = [\"out\"]\n{line}\n"
        ));
        assert!(err.contains(want), "{line}: {err}");
    }
    let err = validate_error(&format!(
        "{GOOD_TAIL}\n[pipelines.\"a\\u0000b\"]\nsource = \"in\"\nsinks = [\"out\"]\n"
    ));
    assert!(
        err.contains("must be non-empty, without control characters"),
        "{err}"
    );
}

#[test]
fn one_file_by_a_symlink_or_through_a_missing_folder_is_one_file() {
    let scratch = Scratch::new(
        "[sources.in]\ntype = \"file\"\npath = \"link.ndjson\"\n\n[sinks.a]\ntype = \"file\"\npath = \"x.ndjson\"\n\n[pipelines.p]\nsource = \"in\"\nsinks = [\"a\"]\n",
    );
    scratch.write("x.ndjson", "{}\n");
    std::os::unix::fs::symlink("x.ndjson", scratch.path("link.ndjson")).unwrap();
    let output = scratch.command("validate").output().unwrap();
    assert_exit(&output, 2);
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(
        err.contains("sink `a` uses x.ndjson, which source `in` uses too"),
        "{err}"
    );

    let err = validate_error(
        "[sources.in]\ntype = \"stdin\"\n\n[sinks.a]\ntype = \"file\"\npath = \"new/y.ndjson\"\n\n[sinks.b]\ntype = \"file\"\npath = \"new/../new/y.ndjson\"\n\n[pipelines.p]\nsource = \"in\"\nsinks = [\"a\"]\ndead_letter = \"b\"\n",
    );
    assert!(
        err.contains("sink `b` uses new/../new/y.ndjson, which sink `a` uses too"),
        "{err}"
    );

    let err = validate_error(
        "[sources.in]\ntype = \"stdin\"\n\n[sinks.a]\ntype = \"stdout\"\n\n[sinks.b]\ntype = \"stdout\"\n\n[pipelines.p]\nsource = \"in\"\nsinks = [\"a\"]\ndead_letter = \"b\"\n",
    );
    assert!(
        err.contains("sinks `a` and `b` both write to stdout"),
        "{err}"
    );

    let err = validate_error(
        "[sources.in]\ntype = \"stdin\"\n\n[sinks.a]\ntype = \"file\"\npath = \"sluice.toml/out.ndjson\"\n\n[pipelines.p]\nsource = \"in\"\nsinks = [\"a\"]\n",
    );
    assert!(err.contains("is not a directory"), "{err}");
}

/// The annotated config of the book's configuration reference parses: the
/// documentation shows real fields (tests/all/docs.rs also validates it).
#[test]
fn the_reference_config_parses() {
    let page = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/reference/configuration.md"),
    )
    .unwrap();
    let after = page
        .split("Every field, with its default:")
        .nth(1)
        .expect("the reference's config section");
    let block = after
        .split("```toml\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .expect("a toml block");
    let source = sluice::config::ConfigSource {
        file: "docs/reference/configuration.md".into(),
        text: block.to_string(),
        written: None,
    };
    let config = sluice::config::Config::parse(&source).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.pipelines.len(), 1);
    assert_eq!(config.sources.len(), 1);
    assert_eq!(config.sinks.len(), 2);
}

#[test]
fn the_packaged_default_config_parses() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../dist/sluice.toml");
    let (config, _) = sluice::config::Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.pipelines.len(), 1);
    assert_eq!(
        config.daemon.plugins_dir.get_ref(),
        std::path::Path::new("/etc/sluice/plugins")
    );
}
