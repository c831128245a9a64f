//! A real Prometheus server (Debian's `prometheus`) scrapes the admin API's
//! `/metrics`; PromQL answers with the figures of a known input.

use serde_json::Value;

use crate::support::*;

/// A free port on 127.0.0.1 (bound, then released for the server to take).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Polls `what` every 100 ms until it gives `Some`, for up to 60 s.
fn poll<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let start = std::time::Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            start.elapsed() < std::time::Duration::from_secs(60),
            "waited 60 s for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// The value of an instant PromQL query with one series, as text.
fn query(prometheus: &str, promql: &str) -> Option<String> {
    let encoded: String = promql
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'_' | b'.' | b'-' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect();
    let (status, body) =
        try_http(prometheus, "GET", &format!("/api/v1/query?query={encoded}")).ok()?;
    if status != 200 {
        return None;
    }
    let answer: Value = serde_json::from_str(&body).ok()?;
    let result = answer["data"]["result"].as_array()?;
    (result.len() == 1).then(|| result[0]["value"][1].as_str().unwrap().to_string())
}

/// Kills the server when the test ends, passed or not.
struct Server(std::process::Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn prometheus_scrapes_the_records_counter() {
    let Some(prometheus_bin) = which("prometheus") else {
        return skip(
            "prometheus_scrapes_the_records_counter",
            "no `prometheus` on PATH (apt-get install prometheus)",
        );
    };
    const LINES: usize = 37;
    let scratch = Scratch::new(&identity_following_with_admin().build());
    let lines: String = (0..LINES).map(|n| format!("{{\"n\":{n}}}\n")).collect();
    scratch.write("in.ndjson", &lines);
    let mut daemon = Running::start(scratch.command("run"));
    let admin = daemon.admin_addr();
    // Every record is through before the first scrape: any scrape sees the
    // final figures.
    scratch.wait_for_lines("out.ndjson", LINES);

    let port = free_port();
    let prometheus = format!("127.0.0.1:{port}");
    scratch.write(
        "prometheus.yml",
        &format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: sluice\n    static_configs:\n      - targets: ['{admin}']\n"
        ),
    );
    let _server = Server(
        std::process::Command::new(prometheus_bin)
            .current_dir(scratch.dir.path())
            .args([
                "--config.file=prometheus.yml".to_string(),
                format!("--web.listen-address={prometheus}"),
                "--storage.tsdb.path=tsdb".to_string(),
                "--log.level=warn".to_string(),
            ])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );

    // The target is up once Prometheus has scraped it successfully.
    let target = poll("the sluice target to be up", || {
        let (status, body) = try_http(&prometheus, "GET", "/api/v1/targets").ok()?;
        if status != 200 {
            return None;
        }
        let targets: Value = serde_json::from_str(&body).ok()?;
        targets["data"]["activeTargets"]
            .as_array()?
            .iter()
            .find(|t| t["health"] == "up")
            .cloned()
    });
    assert_eq!(target["labels"]["instance"], admin.as_str());
    assert_eq!(target["scrapeUrl"], format!("http://{admin}/metrics"));

    let records_in = poll("sluice_records_in_total", || {
        query(&prometheus, "sluice_records_in_total{pipeline=\"p\"}")
    });
    assert_eq!(records_in, LINES.to_string());
    let records_out = poll("sluice_records_out_total", || {
        query(&prometheus, "sluice_records_out_total{pipeline=\"p\"}")
    });
    assert_eq!(records_out, LINES.to_string());
    // The batch size histogram's sum is the records batched.
    let batched = poll("sluice_batch_size_sum", || {
        query(&prometheus, "sluice_batch_size_sum{pipeline=\"p\"}")
    });
    assert_eq!(batched, LINES.to_string());
    // One plugin call per batch.
    let batches = poll("sluice_batches_total", || {
        query(&prometheus, "sluice_batches_total{pipeline=\"p\"}")
    });
    let calls = poll("sluice_plugin_call_duration_seconds_count", || {
        query(
            &prometheus,
            "sum(sluice_plugin_call_duration_seconds_count{pipeline=\"p\",plugin=\"identity\"})",
        )
    });
    assert_eq!(calls, batches);

    daemon.signal("TERM");
    assert_exit(&daemon.finish(), 0);
}
