//! The web console (`GET /` in a browser) in a real headless Chromium,
//! driven over WebDriver (Debian's `chromium` and `chromium-driver`), against
//! a daemon running the flights job fed slowly: the page shows the pipeline,
//! its plugin's version and a non-zero rate, its tap panel shows records, its
//! dead-letter panel the reasons. A screenshot is kept in
//! `target/console.png`.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::*;

/// A chromedriver process and one headless session of it.
struct Browser {
    driver: Child,
    base: String,
    session: String,
    agent: ureq::Agent,
}

impl Browser {
    fn start(driver: &std::path::Path, chromium: &std::path::Path) -> Browser {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(driver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(60)))
            .build()
            .into();
        let base = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(20);
        while agent.get(&format!("{base}/status")).call().is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        let mut browser = Browser {
            driver: child,
            base,
            session: String::new(),
            agent,
        };
        // A phone-sized window.
        let session = browser.call(
            "POST",
            "/session",
            json!({"capabilities": {"alwaysMatch": {
                "browserName": "chrome",
                "goog:chromeOptions": {
                    "binary": chromium,
                    "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                             "--disable-dev-shm-usage", "--window-size=390,844"]
                }
            }}}),
        );
        browser.session = session["sessionId"].as_str().unwrap().to_string();
        browser
    }

    /// A WebDriver command; its `value`.
    fn call(&self, method: &str, path: &str, body: Value) -> Value {
        let url = format!("{}{path}", self.base);
        let mut response = match method {
            "POST" => self
                .agent
                .post(&url)
                .header("Content-Type", "application/json")
                .send(body.to_string()),
            "DELETE" => self.agent.delete(&url).call(),
            _ => self.agent.get(&url).call(),
        }
        .unwrap();
        let status = response.status();
        let value: Value =
            serde_json::from_str(&response.body_mut().read_to_string().unwrap()).unwrap();
        assert!(status.is_success(), "{method} {path}: {status} {value}");
        value["value"].clone()
    }

    fn session_call(&self, method: &str, path: &str, body: Value) -> Value {
        self.call(method, &format!("/session/{}{path}", self.session), body)
    }

    /// Runs `script` in the page; its result.
    fn run(&self, script: &str) -> Value {
        self.session_call(
            "POST",
            "/execute/sync",
            json!({"script": script, "args": []}),
        )
    }

    /// Waits (up to 60 s) until `script` returns true; the page's text when
    /// it does not.
    fn wait_until(&self, what: &str, script: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.run(script) != json!(true) {
            assert!(
                Instant::now() < deadline,
                "the console never showed {what}; it shows:\n{}",
                self.run("return document.body.innerText")
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let url = format!("{}/session/{}", self.base, self.session);
            let _ = self.agent.delete(&url).call();
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

#[test]
fn the_console_shows_the_running_flights_job_its_taps_and_dead_letters() {
    const TEST: &str =
        "console::the_console_shows_the_running_flights_job_its_taps_and_dead_letters";
    let (Some(driver), Some(chromium)) = (which("chromedriver"), which("chromium")) else {
        skip(TEST, "chromium and chromium-driver are not installed");
        return;
    };
    let config = Config::new()
        .admin()
        .file_source("in", "in.ndjson")
        .follow()
        .set_str("format", "json")
        .key("/carrier")
        .timestamp("/event_time")
        .file_sink("out", "out.ndjson")
        .file_sink("dlq", "dlq.ndjson")
        .pipeline("p", "in", &["out"])
        .partitions(2)
        .batch(r#"{ max_records = 200, interval = "50ms" }"#)
        .processor(r#"{ plugin = "flights_delay.wasm", config = { min_delay = 15 } }"#)
        .window(r#"{ kind = "tumbling", size = "1h", watermark = "10m" }"#)
        .aggregate(r#"[{ op = "count", as = "delayed" }]"#)
        .dead_letter("dlq")
        .build();
    let scratch = Arc::new(Scratch::new(&config));
    scratch.write("in.ndjson", "");
    let mut daemon = Running::start(scratch.command("run"));
    let admin = daemon.admin_addr();
    daemon.wait_for("pipeline started");

    // The flights, 300 every 100 ms, with a broken line now and then.
    let stop = Arc::new(AtomicBool::new(false));
    let feeder = {
        let (scratch, stop) = (scratch.clone(), stop.clone());
        std::thread::spawn(move || {
            let lines = flights_lines(200_000);
            for (i, chunk) in lines.chunks(300).enumerate() {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                let mut chunk = chunk.to_vec();
                if i % 5 == 0 {
                    chunk.push(format!("{{\"broken\": {i}"));
                }
                scratch.append_lines("in.ndjson", &chunk);
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };

    let browser = Browser::start(&driver, &chromium);
    browser.session_call("POST", "/url", json!({"url": format!("http://{admin}/")}));
    let version = sluice::wasm::plugin::content_version(
        &std::fs::read(plugins_dir().join("flights_delay.wasm")).unwrap(),
    );
    browser.wait_until(
        "the pipeline, its plugin version and a non-zero rate",
        &format!(
            r#"const t = document.body.innerText;
               const rate = document.querySelector('[data-pipeline="p"] [data-figure="in/s"] b');
               return t.includes("pipeline p — running") && t.includes("0:flights_delay")
                 && t.includes("version {version}") && rate !== null && parseFloat(rate.textContent) > 0;"#
        ),
    );
    // The charts of the last minutes and the stage's breaker.
    browser.wait_until(
        "the batch duration and watermark charts, the breaker's state",
        r#"const c = (t) => document.querySelector(`[data-pipeline="p"] [data-chart="${t}"]`);
           const b = c("mean batch duration"), w = c("watermark (event time)");
           return b !== null && /last [0-9]/.test(b.textContent)
             && w !== null && /last 2013-/.test(w.textContent)
             && document.body.innerText.includes("breaker closed");"#,
    );
    // Some minutes' worth of charts before the screenshot: four readings.
    browser.wait_until(
        "four readings in the records/s chart",
        r#"const l = document.querySelector('[data-pipeline="p"] [data-chart^="records/s"] polyline');
           return l !== null && l.getAttribute("points").trim().split(" ").length >= 4;"#,
    );
    // The screenshot, kept for CI.
    let png = browser.session_call("GET", "/screenshot", Value::Null);
    use base64::Engine as _;
    let png = base64::engine::general_purpose::STANDARD
        .decode(png.as_str().unwrap())
        .unwrap();
    assert!(png.starts_with(b"\x89PNG"));
    let shot = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/console.png");
    std::fs::write(&shot, &png).unwrap();

    // The tap panel: a click on the stage taps it; its records are delayed.
    browser.run(
        r#"[...document.querySelectorAll('[data-pipeline="p"] .node')]
             .find((n) => n.textContent.startsWith("0:flights_delay")).click(); return true;"#,
    );
    browser.wait_until(
        "tapped records",
        "return document.querySelectorAll('#tap-lines .tapped').length >= 3;",
    );
    let tapped = browser.run(
        "return [...document.querySelectorAll('#tap-lines .tapped')].map((e) => e.textContent);",
    );
    for line in tapped.as_array().unwrap() {
        let line = line.as_str().unwrap();
        assert!(line.starts_with("[0:flights_delay p"), "{line}");
        let value: Value = serde_json::from_str(&line[line.find("] ").unwrap() + 2..]).unwrap();
        assert!(value["dep_delay"].as_f64().unwrap() >= 15.0, "{line}");
    }
    // The dead letters, with their reasons.
    browser.wait_until(
        "the broken lines' reasons",
        "return document.getElementById('dead-letters').innerText.includes('source: invalid JSON');",
    );
    stop.store(true, Ordering::Relaxed);
    feeder.join().unwrap();
    drop(browser);
    daemon.signal("TERM");
    assert_exit(&daemon.finish(), 0);
}
