//! Malformed lines and refused records go to the dead-letter sink with the reason,
//! and in = out + rejected.

use serde_json::Value;

use crate::support::*;

#[test]
fn malformed_lines_go_to_the_dead_letter_sink() {
    let scratch = Scratch::new(
        &Config::new()
            .file_source("in", "in.ndjson")
            .key("/carrier")
            .timestamp("/event_time")
            .file_sink("out", "out.ndjson")
            .file_sink("dlq", "dlq.ndjson")
            .pipeline("p", "in", &["out"])
            .partitions(3)
            .batch(r#"{ max_records = 7, interval = "50ms" }"#)
            .plugin("identity.wasm")
            .dead_letter("dlq")
            .build(),
    );
    // 1,000 real flights with 40 broken lines mixed in: truncated objects, bare
    // words, a bad event time.
    let flights = flights_lines(1000);
    let mut input = String::new();
    let mut broken = Vec::new();
    for (i, line) in flights.iter().enumerate() {
        input.push_str(line);
        input.push('\n');
        if i % 25 == 0 {
            let bad = match (i / 25) % 3 {
                0 => line[..line.len() / 2].to_string(),
                1 => format!("garbage line {i}"),
                _ => line.replace("\"event_time\":\"2013", "\"event_time\":\"yesterday"),
            };
            input.push_str(&bad);
            input.push('\n');
            broken.push(bad);
        }
    }
    scratch.write("in.ndjson", &input);
    let output = scratch.run();
    assert_exit(&output, 0);

    assert_eq!(count(&output, "p", "in"), 1040);
    assert_eq!(count(&output, "p", "rejected"), 40);
    assert_eq!(count(&output, "p", "out"), 1000);

    let mut out = scratch.read_lines("out.ndjson");
    let mut want = flights.clone();
    out.sort();
    want.sort();
    assert_eq!(
        out, want,
        "every good line passes the identity plugin unchanged"
    );

    let dlq: Vec<Value> = scratch.read_json("dlq.ndjson");
    assert_eq!(dlq.len(), 40);
    let originals: Vec<&str> = dlq
        .iter()
        .map(|d| d["original"].as_str().unwrap())
        .collect();
    assert_eq!(
        originals,
        broken.iter().map(String::as_str).collect::<Vec<_>>()
    );
    for d in &dlq {
        assert_eq!(d["stage"], "source");
        assert_eq!(d["pipeline"], "p");
        let reason = d["reason"].as_str().unwrap();
        let original = d["original"].as_str().unwrap();
        if original.contains("yesterday") {
            assert!(reason.contains("not RFC 3339"), "{reason}");
        } else {
            assert!(reason.starts_with("invalid JSON"), "{reason}");
        }
    }
}

#[test]
fn records_a_plugin_rejects_carry_stage_plugin_and_version() {
    let scratch = Scratch::new(
        &Config::new()
            .file_source("in", "in.ndjson")
            .key("/k")
            .file_sink("out", "out.ndjson")
            .file_sink("dlq", "dlq.ndjson")
            .pipeline("p", "in", &["out"])
            .partitions(2)
            .plugin("uppercase.wasm")
            .processor(
                r#"{ plugin = "misbehave.wasm", config = { mode = "reject", trigger = "BAD" } }"#,
            )
            .dead_letter("dlq")
            .build(),
    );
    let input: String = (0..500)
        .map(|i| {
            let tag = if i % 10 == 3 { "bad" } else { "ok" };
            format!("{{\"k\":\"key{}\",\"n\":{i},\"tag\":\"{tag}\"}}\n", i % 7)
        })
        .collect();
    scratch.write("in.ndjson", &input);
    let output = scratch.run();
    assert_exit(&output, 0);
    assert_eq!(count(&output, "p", "in"), 500);
    assert_eq!(count(&output, "p", "rejected"), 50);
    assert_eq!(count(&output, "p", "out"), 450);

    let version = {
        use std::io::Read;
        let mut bytes = Vec::new();
        std::fs::File::open(plugins_dir().join("misbehave.wasm"))
            .unwrap()
            .read_to_end(&mut bytes)
            .unwrap();
        sluice::wasm::plugin::content_version(&bytes)
    };
    let mut numbers = Vec::new();
    for line in scratch.read_lines("dlq.ndjson") {
        let d: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(d["stage"], "1:misbehave");
        assert_eq!(d["plugin"], "misbehave");
        assert_eq!(d["plugin_version"], version.as_str());
        assert_eq!(d["reason"], "misbehave: rejected on purpose");
        // The original is what the stage received: upper-cased by stage 0.
        let original: Value = serde_json::from_str(d["original"].as_str().unwrap()).unwrap();
        assert_eq!(original["TAG"], "BAD");
        numbers.push(original["N"].as_u64().unwrap());
    }
    numbers.sort();
    assert_eq!(
        numbers,
        (0..500).filter(|i| i % 10 == 3).collect::<Vec<u64>>()
    );
}

/// A 3 MiB line among short ones, from a file and from stdin: it goes to the
/// dead-letter sink (with its first KiB) and the lines around it go on.
#[test]
fn overlong_lines_are_dead_lettered_and_skipped() {
    let long = format!("{{\"n\":1,\"pad\":\"{}\"}}", "x".repeat(3 << 20));
    let input = format!("{{\"n\":0}}\n{long}\n{{\"n\":2}}\n{long}");
    let sources = [
        ("file", Config::new().file_source("in", "in.ndjson")),
        ("stdin", Config::new().source("in", "stdin")),
    ];
    for (source, config) in sources {
        let scratch = Scratch::new(
            &config
                .file_sink("out", "out.ndjson")
                .file_sink("dlq", "dlq.ndjson")
                .pipeline("p", "in", &["out"])
                .plugin("identity.wasm")
                .dead_letter("dlq")
                .build(),
        );
        scratch.write("in.ndjson", &input);
        let output = scratch
            .command("run")
            .stdin(std::fs::File::open(scratch.path("in.ndjson")).unwrap())
            .output()
            .unwrap();
        assert_exit(&output, 0);
        assert_eq!(
            scratch.read_lines("out.ndjson"),
            vec!["{\"n\":0}", "{\"n\":2}"],
            "{source}"
        );
        let dlq = scratch.read_lines("dlq.ndjson");
        assert_eq!(dlq.len(), 2, "{source}");
        for line in dlq {
            let d: Value = serde_json::from_str(&line).unwrap();
            assert_eq!(
                d["reason"],
                format!(
                    "line of {} bytes is longer than max_line_bytes (1048576); `original` holds its first 1024 bytes",
                    long.len()
                )
            );
            assert_eq!(d["original"].as_str().unwrap(), &long[..1024]);
        }
        assert_eq!(count(&output, "p", "in"), 4);
        assert_eq!(count(&output, "p", "rejected"), 2);
    }
}

/// A record a plugin both forwards and rejects (it emits a record and
/// dead-letters its input): the output goes on to the sink and the input to
/// the dead-letter sink, each counted once (`out`, `rejected`). This is the
/// defined behaviour (README, "Configuration"; the SDK's `Output::reject`).
#[test]
fn a_record_both_forwarded_and_rejected_goes_to_both_sinks() {
    let scratch = Scratch::new(
        &Config::new()
            .file_source("in", "in.ndjson")
            .file_sink("out", "out.ndjson")
            .file_sink("dlq", "dlq.ndjson")
            .pipeline("p", "in", &["out"])
            .processor(
                r#"{ plugin = "misbehave.wasm", config = { reject = "bad", also_forward = "true" } }"#,
            )
            .dead_letter("dlq")
            .build(),
    );
    let lines: Vec<String> = (0..100)
        .map(|i| {
            let tag = if i % 10 == 3 { "bad" } else { "ok" };
            format!("{{\"n\":{i},\"tag\":\"{tag}\"}}")
        })
        .collect();
    scratch.write("in.ndjson", &(lines.join("\n") + "\n"));
    let output = scratch.run();
    assert_exit(&output, 0);
    assert_eq!(scratch.read_lines("out.ndjson"), lines);
    let bad: Vec<&String> = lines.iter().filter(|l| l.contains("bad")).collect();
    let dead: Vec<String> = scratch
        .read_lines("dlq.ndjson")
        .iter()
        .map(|l| {
            let d: Value = serde_json::from_str(l).unwrap();
            d["original"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(dead.iter().collect::<Vec<_>>(), bad);
    assert_eq!(count(&output, "p", "out"), 100);
    assert_eq!(count(&output, "p", "rejected"), 10);
}
