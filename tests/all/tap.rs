//! `sluice tap` and `GET /tap` against a real daemon fed slowly: what the
//! taps print is checked against the input (and the plugin's rule, and the
//! window rows the sink wrote), not against sluice's own counters.

use std::collections::BTreeSet;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::*;

/// Starts `sluice tap --admin ADDR ARGS…` with stdout piped.
fn tap(admin: &str, args: &[&str]) -> Child {
    Command::new(sluice_bin())
        .args(["tap", "--admin", admin])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Feeds `lines` to the followed file `in.ndjson`, `chunk` at a time every
/// 50 ms, until every child in `taps` has exited (or 60 s): returns their
/// outputs, in order, as JSON lines.
fn feed_until_done(
    scratch: &Scratch,
    lines: &[String],
    chunk: usize,
    taps: Vec<Child>,
) -> Vec<Vec<Value>> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut fed = 0;
    let mut taps: Vec<Option<Child>> = taps.into_iter().map(Some).collect();
    let mut outputs: Vec<Option<std::process::Output>> = taps.iter().map(|_| None).collect();
    while outputs.iter().any(Option::is_none) {
        assert!(
            Instant::now() < deadline,
            "the taps did not end within 60 s"
        );
        if fed < lines.len() {
            let end = (fed + chunk).min(lines.len());
            scratch.append_lines("in.ndjson", &lines[fed..end]);
            fed = end;
        }
        std::thread::sleep(Duration::from_millis(50));
        for (i, t) in taps.iter_mut().enumerate() {
            if t.as_mut().is_some_and(|c| c.try_wait().unwrap().is_some()) {
                outputs[i] = Some(t.take().unwrap().wait_with_output().unwrap());
            }
        }
    }
    outputs
        .into_iter()
        .map(|o| {
            let o = o.unwrap();
            assert_exit(&o, 0);
            String::from_utf8(o.stdout)
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect()
        })
        .collect()
}

/// The flights job (the `flights_delay` filter, hourly windows) fed slowly:
/// `sluice tap` prints records at the source (each one of the input lines),
/// after `flights_delay` (each delayed 15 minutes or more, from the running
/// version), and at the window (rows the sink then holds).
#[test]
fn sluice_tap_shows_the_source_the_stage_and_the_window_of_the_flights_job() {
    let config = Config::new()
        .admin()
        .file_source("in", "in.ndjson")
        .follow()
        .key("/carrier")
        .timestamp("/event_time")
        .file_sink("out", "out.ndjson")
        .pipeline("p", "in", &["out"])
        .partitions(2)
        .batch(r#"{ max_records = 200, interval = "20ms" }"#)
        .processor(r#"{ plugin = "flights_delay.wasm", config = { min_delay = 15 } }"#)
        .window(r#"{ kind = "tumbling", size = "1h", watermark = "10m" }"#)
        .aggregate(r#"[{ op = "count", as = "delayed" }]"#)
        .build();
    let scratch = Scratch::new(&config);
    scratch.write("in.ndjson", "");
    let mut daemon = Running::start(scratch.command("run"));
    let admin = daemon.admin_addr();
    daemon.wait_for("pipeline started");
    let lines = flights_lines(40_000);
    let taps = vec![
        tap(
            &admin,
            &["--pipeline", "p", "--at", "source", "--limit", "25"],
        ),
        tap(&admin, &["--at", "0:flights_delay", "--limit", "25"]),
        tap(&admin, &["--at", "window", "--limit", "5"]),
    ];
    // Taps connect before records come.
    std::thread::sleep(Duration::from_millis(500));
    let got = feed_until_done(&scratch, &lines, 500, taps);
    let (source, stage, window) = (&got[0], &got[1], &got[2]);

    let input: BTreeSet<String> = lines
        .iter()
        .map(|l| serde_json::from_str::<Value>(l).unwrap().to_string())
        .collect();
    assert_eq!(source.len(), 25);
    for l in source {
        assert_eq!(l["at"], "source");
        assert_eq!(l["pipeline"], "p");
        assert!(input.contains(&l["value"].to_string()), "{l}");
        assert_eq!(l["key"], l["value"]["carrier"]);
        assert!(l["partition"].as_u64().unwrap() < 2);
    }
    let version = sluice::wasm::plugin::content_version(
        &std::fs::read(plugins_dir().join("flights_delay.wasm")).unwrap(),
    );
    assert_eq!(stage.len(), 25);
    for l in stage {
        assert_eq!(l["at"], "0:flights_delay");
        assert_eq!(l["plugin_version"], version.as_str());
        assert!(l["value"]["dep_delay"].as_f64().unwrap() >= 15.0, "{l}");
    }
    assert_eq!(window.len(), 5);
    // A tap that runs out of time ends cleanly (exit 0), not as a broken
    // stream; a point the pipeline does not have is refused with its points.
    let timed = tap(&admin, &["--at", "dead_letter", "--duration", "1s"])
        .wait_with_output()
        .unwrap();
    assert!(timed.status.success(), "{timed:?}");
    let nowhere = tap(&admin, &["--at", "nowhere"])
        .wait_with_output()
        .unwrap();
    assert_eq!(nowhere.status.code(), Some(1));
    let err = String::from_utf8_lossy(&nowhere.stderr);
    assert!(
        err.contains("this pipeline's points: source, 0:flights_delay, window"),
        "{err}"
    );
    daemon.signal("TERM");
    assert_exit(&daemon.finish(), 0);
    let written: BTreeSet<String> = scratch
        .read_json("out.ndjson")
        .iter()
        .map(Value::to_string)
        .collect();
    for l in window {
        assert_eq!(l["at"], "window");
        assert!(written.contains(&l["value"].to_string()), "{l}");
    }
}

/// With the identity plugin and one partition, a `1/7` sample at the source
/// is exactly every 7th line read; a record a plugin rejects shows at the
/// `dead_letter` point with its reason; a point that does not exist is a 400
/// that lists those that do.
#[test]
fn a_sampled_source_tap_is_every_nth_record_and_dead_letters_carry_reasons() {
    let config = Config::new()
        .admin()
        .file_source("in", "in.ndjson")
        .follow()
        .file_sink("out", "out.ndjson")
        .file_sink("dlq", "dlq.ndjson")
        .pipeline("p", "in", &["out"])
        .batch(r#"{ max_records = 50, interval = "10ms" }"#)
        .plugin("identity.wasm")
        .processor(
            r#"{ plugin = "misbehave.wasm", config = { mode = "reject", trigger = "BAD" } }"#,
        )
        .dead_letter("dlq")
        .build();
    let scratch = Scratch::new(&config);
    scratch.write("in.ndjson", "");
    let mut daemon = Running::start(scratch.command("run"));
    let admin = daemon.admin_addr();
    daemon.wait_for("pipeline started");
    let (status, body) = http(&admin, "GET", "/tap?at=window");
    assert_eq!(status, 400);
    assert!(
        body.contains("source, 0:identity, 1:misbehave, sink:out, dead_letter"),
        "{body}"
    );
    let lines: Vec<String> = (0..2_000)
        .map(|i| {
            let tag = if i % 50 == 7 { "BAD" } else { "ok" };
            format!("{{\"n\":{i},\"tag\":\"{tag}\"}}")
        })
        .collect();
    let taps = vec![
        tap(
            &admin,
            &[
                "--at",
                "source",
                "--sample",
                "1/7",
                "--limit",
                "100",
                "--max-records",
                "10000",
            ],
        ),
        tap(&admin, &["--at", "dead_letter", "--limit", "10"]),
    ];
    std::thread::sleep(Duration::from_millis(500));
    let got = feed_until_done(&scratch, &lines, 100, taps);
    let ns: Vec<u64> = got[0]
        .iter()
        .map(|l| l["value"]["n"].as_u64().unwrap())
        .collect();
    assert_eq!(ns, (0..100).map(|i| i * 7).collect::<Vec<u64>>());
    assert_eq!(got[1].len(), 10);
    for (i, l) in got[1].iter().enumerate() {
        assert_eq!(l["at"], "dead_letter");
        let dead = &l["value"];
        assert_eq!(dead["stage"], "1:misbehave");
        assert_eq!(dead["reason"], "misbehave: rejected on purpose", "{dead}");
        let original: Value = serde_json::from_str(dead["original"].as_str().unwrap()).unwrap();
        assert_eq!(original["n"].as_u64().unwrap(), 50 * i as u64 + 7);
    }
    daemon.signal("TERM");
    assert_exit(&daemon.finish(), 0);
}

/// A tap from off the loopback (the admin API on every address, with
/// `admin_allow_remote`): refused without the token of `admin_token_file`
/// (401), served with it; the daemon's own loopback needs none.
#[test]
fn a_tap_from_another_machine_needs_the_token() {
    const TEST: &str = "tap::a_tap_from_another_machine_needs_the_token";
    // This machine's address on its network (no packet is sent).
    let socket = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
    let ip = match socket
        .connect("192.0.2.254:9")
        .and_then(|()| socket.local_addr())
    {
        Ok(a) if !a.ip().is_loopback() && !a.ip().is_unspecified() => a.ip(),
        _ => {
            skip(TEST, "this machine has no network address but loopback");
            return;
        }
    };
    let port = std::net::TcpListener::bind("0.0.0.0:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = Config::new()
        .daemon("admin", format!("\"0.0.0.0:{port}\""))
        .daemon("admin_allow_remote", true)
        .daemon("admin_token_file", "\"token\"")
        .file_source("in", "in.ndjson")
        .follow()
        .file_sink("out", "out.ndjson")
        .pipeline("p", "in", &["out"])
        .batch(r#"{ max_records = 10, interval = "10ms" }"#)
        .plugin("identity.wasm")
        .build();
    let scratch = Scratch::new(&config);
    scratch.write("in.ndjson", "");
    scratch.write("token", "0123456789abcdef-secret\n");
    scratch.write("wrong", "0123456789abcdef-wrong\n");
    let mut daemon = Running::start(scratch.command("run"));
    daemon.wait_for("pipeline started");
    let remote = format!("{ip}:{port}");
    let (status, body) = http(&remote, "GET", "/tap?at=source&limit=1");
    assert_eq!(status, 401, "{body}");
    let args = |file: &str| {
        vec![
            "--at".to_string(),
            "source".into(),
            "--limit".into(),
            "3".into(),
            "--token-file".into(),
            scratch.path(file).to_str().unwrap().to_string(),
        ]
    };
    let wrong = Command::new(sluice_bin())
        .args(["tap", "--admin", &remote])
        .args(args("wrong"))
        .output()
        .unwrap();
    assert_exit(&wrong, 1);
    assert!(String::from_utf8_lossy(&wrong.stderr).contains("401"));
    let right = Command::new(sluice_bin())
        .args(["tap", "--admin", &remote])
        .args(args("token"))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let local = tap(
        &format!("127.0.0.1:{port}"),
        &["--at", "source", "--limit", "3"],
    );
    std::thread::sleep(Duration::from_millis(500));
    let lines: Vec<String> = (0..50).map(|n| format!("{{\"n\":{n}}}")).collect();
    let got = feed_until_done(&scratch, &lines, 10, vec![right, local]);
    for tapped in &got {
        let ns: Vec<u64> = tapped
            .iter()
            .map(|l| l["value"]["n"].as_u64().unwrap())
            .collect();
        assert_eq!(ns, [0, 1, 2]);
    }
    daemon.signal("TERM");
    assert_exit(&daemon.finish(), 0);
}
