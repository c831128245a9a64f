//! The admin HTTP API: health, readiness, Prometheus metrics with the right
//! figures after a known input, pipelines and plugins as JSON, POST /reload.

use serde_json::Value;

use crate::support::*;

#[test]
fn admin_api_answers_with_the_right_figures() {
    let scratch = Scratch::new(&identity_following_with_admin().build());
    let lines: String = (0..25).map(|n| format!("{{\"n\":{n}}}\n")).collect();
    scratch.write("in.ndjson", &lines);
    let mut daemon = Running::start(scratch.command("run"));
    let addr = daemon.admin_addr();
    daemon.wait_for("pipeline started");
    scratch.wait_for_lines("out.ndjson", 25);

    assert_eq!(http(&addr, "GET", "/health"), (200, "ok\n".into()));
    assert_eq!(http(&addr, "GET", "/ready"), (200, "ready\n".into()));
    let (status, metrics) = http(&addr, "GET", "/metrics");
    assert_eq!(status, 200);
    for line in [
        "# TYPE sluice_records_in_total counter",
        "sluice_records_in_total{pipeline=\"p\"} 25",
        "sluice_records_out_total{pipeline=\"p\"} 25",
        "sluice_records_rejected_total{pipeline=\"p\"} 0",
        "sluice_pipeline_running{pipeline=\"p\"} 1",
        "sluice_plugin_reloads_total{plugin=\"identity\"} 0",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "{line:?} not in:\n{metrics}"
        );
    }
    let version = sluice::wasm::plugin::content_version(
        &std::fs::read(plugins_dir().join("identity.wasm")).unwrap(),
    );
    assert!(metrics.contains(&format!(
        "sluice_plugin_info{{plugin=\"identity\",version=\"{version}\"}} 1"
    )));

    let (_, body) = http(&addr, "GET", "/pipelines");
    let pipelines: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(pipelines[0]["pipeline"], "p");
    assert_eq!(pipelines[0]["records_in"], 25);
    assert_eq!(pipelines[0]["running"], true);
    let (_, body) = http(&addr, "GET", "/plugins");
    let plugins: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(plugins[0]["version"], version);

    assert_eq!(http(&addr, "POST", "/reload").0, 202);
    daemon.wait_for("config reloaded");
    assert_eq!(http(&addr, "GET", "/ready").0, 200);

    daemon.signal("TERM");
    let output = daemon.finish();
    assert_exit(&output, 0);
}

#[test]
fn admin_beyond_loopback_needs_explicit_config() {
    let config = |extra: &str| {
        format!(
            "[daemon]\nadmin = \"0.0.0.0:9464\"\n{extra}\n[sources.s]\ntype = \"stdin\"\n[sinks.o]\ntype = \"stdout\"\n[pipelines.p]\nsource = \"s\"\nsinks = [\"o\"]\n"
        )
    };
    let scratch = Scratch::new(&config(""));
    let output = scratch.command("validate").output().unwrap();
    assert_exit(&output, 2);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("sluice.toml:2:9: field `admin`: 0.0.0.0:9464 is not a loopback address"),
        "{stderr}"
    );
    let scratch = Scratch::new(&config("admin_allow_remote = true"));
    assert_exit(&scratch.command("validate").output().unwrap(), 0);
}

/// The value of the one series of `name` whose labels include all of `labels`
/// (e.g. `pipeline="p"`).
pub(crate) fn series(metrics: &str, name: &str, labels: &[&str]) -> f64 {
    let found: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .filter(|l| labels.iter().all(|label| l.contains(label)))
        .collect();
    assert_eq!(found.len(), 1, "{name} {labels:?} in:\n{metrics}");
    found[0].rsplit(' ').next().unwrap().parse().unwrap()
}

#[test]
fn metrics_count_plugin_failures_and_fill_the_histograms() {
    // One record per batch, so each record is one call: a poisoned record is
    // one failed call (no bisection), and the breaker (5 failures in a row)
    // never opens as the poisoned records are not consecutive.
    let pipeline = |config: Config, name: &str, settings: &str| {
        let out = format!("{name}_out");
        config
            .file_source(name, &format!("{name}.ndjson"))
            .follow()
            .file_sink(&out, &format!("{name}.out.ndjson"))
            .pipeline(name, name, &[&out])
            .batch(r#"{ max_records = 1, interval = "10ms" }"#)
            .processor(&format!(
                r#"{{ plugin = "misbehave.wasm", timeout = "100ms", memory_limit = "32MiB", {settings} }}"#
            ))
            .on_error("skip")
    };
    let config = Config::new().admin();
    let config = pipeline(
        config,
        "traps",
        r#"config = { mode = "panic", trigger = "poison" }"#,
    );
    let config = pipeline(
        config,
        "timeouts",
        r#"config = { mode = "loop", trigger = "poison" }"#,
    );
    let config = pipeline(
        config,
        "oom",
        r#"config = { mode = "alloc", bytes = "67108864", trigger = "poison" }"#,
    );
    let scratch = Scratch::new(&config.build());
    // 10 records, of which those at 2, 5 and 8 are poisoned: 3 failures, 7 out.
    let input: String = (0..10)
        .map(|n| {
            let tag = if n % 3 == 2 { "poison" } else { "fine" };
            format!("{{\"n\":{n},\"tag\":\"{tag}\"}}\n")
        })
        .collect();
    for name in ["traps", "timeouts", "oom"] {
        scratch.write(&format!("{name}.ndjson"), &input);
    }
    let mut daemon = Running::start(scratch.command("run"));
    let addr = daemon.admin_addr();
    for name in ["traps", "timeouts", "oom"] {
        scratch.wait_for_lines(&format!("{name}.out.ndjson"), 7);
    }
    // The skips are counted after the chain ran, before the output is written:
    // the 7 lines out mean all 10 records went through.
    let (_, metrics) = http(&addr, "GET", "/metrics");
    let version = sluice::wasm::plugin::content_version(
        &std::fs::read(plugins_dir().join("misbehave.wasm")).unwrap(),
    );
    let version = format!("version=\"{version}\"");
    for (pipeline, failed) in [
        ("traps", "sluice_plugin_traps_total"),
        ("timeouts", "sluice_plugin_timeouts_total"),
        ("oom", "sluice_plugin_out_of_memory_total"),
    ] {
        let p = format!("pipeline=\"{pipeline}\"");
        let labels = [
            p.as_str(),
            "stage=\"0:misbehave\"",
            "plugin=\"misbehave\"",
            &version,
        ];
        for kind in [
            "sluice_plugin_traps_total",
            "sluice_plugin_timeouts_total",
            "sluice_plugin_out_of_memory_total",
        ] {
            let expected = if kind == failed { 3.0 } else { 0.0 };
            assert_eq!(
                series(&metrics, kind, &labels),
                expected,
                "{kind} of {pipeline}"
            );
        }
        // One call per record, one batch per record.
        assert_eq!(
            series(
                &metrics,
                "sluice_plugin_call_duration_seconds_count",
                &labels
            ),
            10.0
        );
        assert_eq!(series(&metrics, "sluice_batch_size_count", &[&p]), 10.0);
        assert_eq!(series(&metrics, "sluice_batch_size_sum", &[&p]), 10.0);
        assert_eq!(
            series(&metrics, "sluice_batch_size_bucket", &[&p, "le=\"1\""]),
            10.0
        );
        assert_eq!(
            series(&metrics, "sluice_batch_duration_seconds_count", &[&p]),
            10.0
        );
        assert_eq!(series(&metrics, "sluice_records_skipped_total", &[&p]), 3.0);
        // Memory: some, and never past the limit.
        let high_water = series(&metrics, "sluice_plugin_memory_high_water_bytes", &labels);
        assert!(
            high_water > 0.0 && high_water <= 32.0 * 1024.0 * 1024.0,
            "{high_water}"
        );
    }
    assert_eq!(series_plain(&metrics, "sluice_config_reloads_total"), 0.0);

    daemon.signal("TERM");
    assert_exit(&daemon.finish(), 0);
}

/// The value of the unlabelled series `name`.
fn series_plain(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .unwrap_or_else(|| panic!("no {name} in:\n{metrics}"))
        .parse()
        .unwrap()
}
