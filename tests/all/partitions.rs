//! How records are spread over a pipeline's partition workers: by key
//! (Kafka's default partitioner, the default) or `partition_by = "balance"`
//! (round-robin); the summary and `/pipelines` say how evenly
//! (`partition_records`, `skew`), and a skewed run warns.

use crate::support::*;

/// The flights keyed by destination on two partitions: the counts per
/// partition are those of Kafka's partitioner applied to `dest` here, with
/// the skew and a warning; balanced, they are even, and every record still
/// comes out once.
#[test]
fn balance_spreads_a_skewed_key_evenly_and_the_summary_says_how_even() {
    let lines = flights_lines(60_000);
    let mut by_dest = [0u64; 2];
    for line in &lines {
        let r: serde_json::Value = serde_json::from_str(line).unwrap();
        let dest = r["dest"].as_str().unwrap();
        by_dest[(sluice::source::router::murmur2(dest.as_bytes()) & 0x7fff_ffff) as usize % 2] += 1;
    }
    let mean = 30_000.0;
    let want_skew = by_dest[0].max(by_dest[1]) as f64 / mean;
    assert!(want_skew > 1.25, "the data's skew: {want_skew}");
    let config = |extra: &str| {
        Config::new()
            .file_source("f", "in.ndjson")
            .key("/dest")
            .file_sink("out", "out.ndjson")
            .pipeline("p", "f", &["out"])
            .partitions(2)
            .plugin("identity.wasm")
            .set("partition_by", extra)
            .build()
    };
    let mut input_sorted = lines.clone();
    input_sorted.sort_unstable();
    for (mode, counts, skew) in [
        ("\"key\"", by_dest, want_skew),
        ("\"balance\"", [30_000, 30_000], 1.0),
    ] {
        let scratch = Scratch::new(&config(mode));
        scratch.write("in.ndjson", &(lines.join("\n") + "\n"));
        let output = scratch.run();
        assert_exit(&output, 0);
        let summary = &summaries(&output.stderr)["p"];
        assert_eq!(
            summary["partition_records"],
            format!("{}/{}", counts[0], counts[1]),
            "{mode}"
        );
        assert_eq!(summary["skew"], format!("{skew:.2}"), "{mode}");
        let warned = String::from_utf8_lossy(&output.stderr)
            .contains("the partitions got their records unevenly");
        assert_eq!(warned, skew >= 1.25, "{mode}");
        let mut out = scratch.read_lines("out.ndjson");
        out.sort_unstable();
        assert!(out == input_sorted, "{mode}: every record once");
    }
    // A stage that keeps state per key cannot be balanced.
    let text = Config::new()
        .file_source("f", "in.ndjson")
        .key("/carrier")
        .file_sink("out", "out.ndjson")
        .pipeline("p", "f", &["out"])
        .partitions(2)
        .processor(r#"{ dedup = { key = ["/carrier", "/flight"], within = "1h" } }"#)
        .set("partition_by", "\"balance\"")
        .build();
    let scratch = Scratch::new(&text);
    scratch.write("in.ndjson", "");
    let output = scratch.command("validate").output().unwrap();
    assert_exit(&output, 2);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let at = format!("sluice.toml:{}:", line_of(&text, "partition_by"));
    assert!(stderr.contains(&at), "{at} in:\n{stderr}");
    assert!(
        stderr.contains("stage 0:dedup keeps state per key"),
        "{stderr}"
    );
}

/// With parallel decode, `balance` still deals records out evenly when the
/// input is double-spaced (blank lines take no turn), and keyless records
/// spread over every partition whatever the pattern of keyed lines.
#[test]
fn parallel_decode_balances_double_spaced_and_keyless_records() {
    let n = 40_000;
    let double_spaced: String = (0..n)
        .map(|i| format!("{{\"i\":{i},\"k\":\"hot\"}}\n\n"))
        .collect();
    // Every other record keyless: the keyless ones must not all land on the
    // partitions of even (or odd) line numbers.
    let alternating: String = (0..n)
        .map(|i| {
            if i % 2 == 0 {
                format!("{{\"i\":{i},\"k\":\"hot\"}}\n")
            } else {
                format!("{{\"i\":{i}}}\n")
            }
        })
        .collect();
    for (input, balance) in [(&double_spaced, true), (&alternating, false)] {
        let mut config = Config::new()
            .file_source("f", "in.ndjson")
            .key("/k")
            .set("decode_threads", 2)
            .file_sink("out", "out.ndjson")
            .pipeline("p", "f", &["out"])
            .partitions(4)
            .plugin("identity.wasm");
        if balance {
            config = config.set("partition_by", "\"balance\"");
        }
        let scratch = Scratch::new(&config.build());
        scratch.write("in.ndjson", input);
        let output = scratch.run();
        assert_exit(&output, 0);
        let counts: Vec<usize> = summaries(&output.stderr)["p"]["partition_records"]
            .split('/')
            .map(|c| c.parse().unwrap())
            .collect();
        assert_eq!(counts.iter().sum::<usize>(), n);
        if balance {
            assert_eq!(counts, [n / 4; 4]);
        } else {
            // The keyed half all goes to murmur2("hot") % 4; the keyless
            // half spreads: each partition gets at least 80% of an even share.
            let hot = (sluice::source::router::murmur2(b"hot") & 0x7fff_ffff) as usize % 4;
            for (p, &c) in counts.iter().enumerate() {
                let keyless = if p == hot { c - n / 2 } else { c };
                assert!(keyless * 4 * 10 >= n / 2 * 8, "{counts:?}");
            }
        }
    }
}
