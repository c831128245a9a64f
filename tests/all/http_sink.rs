//! The `http` sink against a receiver in the test that fails on purpose: 503
//! for a while, 429 with `Retry-After`, a slow answer past the client's
//! timeout, a dropped connection, 4xx for some bodies; and over TLS with a
//! private CA. What was delivered is judged from what the receiver got, not
//! from sluice's counters.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::*;

/// One request the receiver got.
#[derive(Debug, Clone)]
struct Got {
    key: String,
    content_type: String,
    authorization: String,
    custom: String,
    body: Vec<u8>,
    /// When it came, since the first request.
    at: Duration,
    /// What the receiver did: the status it answered (0: dropped the
    /// connection without an answer).
    status: u16,
    /// Whether the receiver kept the records (answered 2xx, even late).
    kept: bool,
}

/// What the receiver does with a request.
enum Reply {
    /// Answer this status (and headers, and body).
    Status(u16, Vec<(&'static str, String)>, &'static str),
    /// Keep the records, and answer 200 after this long (past the client's
    /// timeout: the client never sees it).
    Late(Duration),
    /// Read the request, close the connection without an answer.
    Drop,
}

type Policy = dyn Fn(usize, Duration, &[u8]) -> Reply + Send + Sync;

/// An HTTP/1.1 receiver on 127.0.0.1 that logs every request and answers as
/// `policy` says, given the request's number, its time since the first
/// request, and its body.
struct Receiver {
    url: String,
    log: Arc<Mutex<Vec<Got>>>,
}

impl Receiver {
    fn start(policy: impl Fn(usize, Duration, &[u8]) -> Reply + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/ingest", listener.local_addr().unwrap());
        let log = Arc::new(Mutex::new(Vec::new()));
        let policy: Arc<Policy> = Arc::new(policy);
        let first: Arc<Mutex<Option<Instant>>> = Arc::default();
        let shared = log.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let (log, policy, first) = (shared.clone(), policy.clone(), first.clone());
                std::thread::spawn(move || serve(stream, &log, &*policy, &first));
            }
        });
        Receiver { url, log }
    }

    fn log(&self) -> Vec<Got> {
        self.log.lock().unwrap().clone()
    }
}

/// Serves the requests of one connection (keep-alive) until it closes.
fn serve(
    stream: TcpStream,
    log: &Mutex<Vec<Got>>,
    policy: &Policy,
    first: &Mutex<Option<Instant>>,
) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    loop {
        let mut headers = HashMap::new();
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        assert!(line.starts_with("POST /ingest HTTP/1.1"), "{line}");
        loop {
            line.clear();
            reader.read_line(&mut line).unwrap();
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            let (name, value) = l.split_once(':').unwrap();
            headers.insert(name.to_ascii_lowercase(), value.trim().to_string());
        }
        let length: usize = headers["content-length"].parse().unwrap();
        let mut body = vec![0; length];
        reader.read_exact(&mut body).unwrap();
        let at = first
            .lock()
            .unwrap()
            .get_or_insert_with(Instant::now)
            .elapsed();
        let header = |name: &str| headers.get(name).cloned().unwrap_or_default();
        let mut got = Got {
            key: header("idempotency-key"),
            content_type: header("content-type"),
            authorization: header("authorization"),
            custom: header("x-test"),
            body,
            at,
            status: 0,
            kept: false,
        };
        let number = log.lock().unwrap().len();
        let reply = policy(number, at, &got.body);
        match reply {
            Reply::Drop => {
                log.lock().unwrap().push(got);
                return;
            }
            Reply::Late(after) => {
                got.status = 200;
                got.kept = true;
                log.lock().unwrap().push(got);
                std::thread::sleep(after);
                let _ = writer.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n");
                return;
            }
            Reply::Status(status, extra, text) => {
                got.status = status;
                got.kept = (200..300).contains(&status);
                log.lock().unwrap().push(got);
                let mut head = format!("HTTP/1.1 {status} X\r\ncontent-length: {}\r\n", text.len());
                for (name, value) in extra {
                    head += &format!("{name}: {value}\r\n");
                }
                head += "\r\n";
                if writer.write_all(head.as_bytes()).is_err()
                    || writer.write_all(text.as_bytes()).is_err()
                {
                    return;
                }
            }
        }
    }
}

/// `n` records `{"n":I,"pad":"…"}`, one a line.
fn records(n: usize) -> String {
    (0..n)
        .map(|i| format!("{{\"n\":{i},\"pad\":\"{}\"}}\n", "x".repeat(40)))
        .collect()
}

/// The `n` of each record of an NDJSON body.
fn numbers(body: &[u8]) -> Vec<u64> {
    body.split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| {
            serde_json::from_slice::<serde_json::Value>(l).unwrap()["n"]
                .as_u64()
                .unwrap()
        })
        .collect()
}

fn http_sink(config: Config, url: &str) -> Config {
    config.sink("api", "http").set_str("url", url)
}

/// The receiver answers 503 for its first 10 s, then drops one connection
/// unanswered and answers one request too late (after the client's 2 s
/// timeout), then recovers: every record is delivered; a record reaches the
/// receiver twice only in bodies sent again under one `Idempotency-Key`, and
/// a body sent again is the same body.
#[test]
fn a_receiver_down_for_10_s_gets_every_record_and_repeats_share_a_key() {
    let recovered = Arc::new(Mutex::new(None::<usize>));
    let seen = recovered.clone();
    let receiver = Receiver::start(move |number, at, _| {
        if at < Duration::from_secs(10) {
            return Reply::Status(503, vec![], "down for maintenance");
        }
        let first = *seen.lock().unwrap().get_or_insert(number);
        match number - first {
            0 => Reply::Drop,
            2 => Reply::Late(Duration::from_secs(4)),
            _ => Reply::Status(200, vec![], ""),
        }
    });
    let n = 4_000;
    let config = http_sink(Config::new().file_source("in", "in.ndjson"), &receiver.url)
        .set_str("timeout", "2s")
        .set_str("max_body_bytes", "4KiB")
        .pipeline("p", "in", &["api"])
        .batch(r#"{ max_records = 300, interval = "5ms" }"#)
        .plugin("identity.wasm")
        .build();
    let scratch = Scratch::new(&config);
    scratch.write("in.ndjson", &records(n));
    let output = scratch.run();
    assert_exit(&output, 0);
    let log = receiver.log();
    // The receiver's record of it: the 10 s of 503s, the drop, the late one.
    assert!(
        log.iter().filter(|g| g.status == 503).count() >= 3,
        "{} requests",
        log.len()
    );
    assert_eq!(log.iter().filter(|g| g.status == 0).count(), 1);
    assert!(log.iter().all(|g| g.content_type == "application/x-ndjson"));
    // Every body sent more than once is the same body.
    let mut bodies: BTreeMap<&str, &[u8]> = BTreeMap::new();
    for g in &log {
        assert!(!g.key.is_empty(), "a request without an Idempotency-Key");
        let first = bodies.entry(&g.key).or_insert(&g.body);
        assert_eq!(
            *first,
            &g.body[..],
            "key {} was sent with two bodies",
            g.key
        );
    }
    // What was kept: every record; once per key, each record exactly once.
    let mut kept_keys: BTreeMap<&str, usize> = BTreeMap::new();
    let mut all_kept: Vec<u64> = Vec::new();
    for g in log.iter().filter(|g| g.kept) {
        *kept_keys.entry(&g.key).or_default() += 1;
        all_kept.extend(numbers(&g.body));
    }
    let mut once: Vec<u64> = kept_keys.keys().flat_map(|k| numbers(bodies[k])).collect();
    once.sort_unstable();
    assert_eq!(once, (0..n as u64).collect::<Vec<_>>());
    // The late answer made the one repeat the receiver kept twice.
    assert_eq!(
        kept_keys.values().filter(|c| **c > 1).count(),
        1,
        "{kept_keys:?}"
    );
    assert!(all_kept.len() > n);
    assert_eq!(count(&output, "p", "out"), n as u64);
}

/// A 429 with `Retry-After: 2` holds the next try back 2 s (the back-off
/// alone would wait 0.05–0.1 s), under the same key; `json_array` bodies, a
/// bearer token from a file and a configured header.
#[test]
fn retry_after_is_honoured_and_json_arrays_carry_the_token() {
    let receiver = Receiver::start(|number, _, _| match number {
        0 => Reply::Status(429, vec![("Retry-After", "2".into())], "slow down"),
        _ => Reply::Status(204, vec![], ""),
    });
    let n = 50;
    let config = http_sink(Config::new().file_source("in", "in.ndjson"), &receiver.url)
        .set_str("encoding", "json_array")
        .set_str("bearer_token_file", "token")
        .set("headers", "{ \"X-Test\" = \"yes\" }")
        .pipeline("p", "in", &["api"])
        .batch(r#"{ max_records = 1000, interval = "50ms" }"#)
        .plugin("identity.wasm")
        .build();
    let scratch = Scratch::new(&config);
    scratch.write("in.ndjson", &records(n));
    scratch.write("token", "s3cret\n");
    let output = scratch.run();
    assert_exit(&output, 0);
    let log = receiver.log();
    assert!(log.len() >= 2, "{log:?}");
    assert_eq!(log[1].key, log[0].key, "the retry carries the first key");
    let gap = log[1].at - log[0].at;
    assert!(gap >= Duration::from_millis(1_900), "retried after {gap:?}");
    let mut got: Vec<u64> = Vec::new();
    for g in log.iter().filter(|g| g.kept) {
        assert_eq!(g.content_type, "application/json");
        assert_eq!(g.authorization, "Bearer s3cret");
        assert_eq!(g.custom, "yes");
        let array: Vec<serde_json::Value> = serde_json::from_slice(&g.body).unwrap();
        got.extend(array.iter().map(|v| v["n"].as_u64().unwrap()));
    }
    got.sort_unstable();
    assert_eq!(got, (0..n as u64).collect::<Vec<_>>());
}

/// A body the receiver refuses with a 4xx (here 422 for any body holding a
/// record with `"bad":true`) goes to the dead-letter sink, each record with
/// the status and the receiver's answer; the other bodies are delivered.
#[test]
fn bodies_refused_with_a_4xx_are_dead_lettered() {
    let receiver = Receiver::start(|_, _, body| {
        if body.windows(10).any(|w| w == b"\"bad\":true") {
            Reply::Status(422, vec![], "record 'bad' is not allowed")
        } else {
            Reply::Status(200, vec![], "")
        }
    });
    let n = 600;
    let input: String = (0..n)
        .map(|i| format!("{{\"n\":{i},\"bad\":{}}}\n", i % 97 == 5))
        .collect();
    let config = http_sink(Config::new().file_source("in", "in.ndjson"), &receiver.url)
        .set("max_body_bytes", 120)
        .file_sink("dlq", "dlq.ndjson")
        .pipeline("p", "in", &["api"])
        .dead_letter("dlq")
        .batch(r#"{ max_records = 100, interval = "5ms" }"#)
        .plugin("identity.wasm")
        .build();
    let scratch = Scratch::new(&config);
    scratch.write("in.ndjson", &input);
    let output = scratch.run();
    assert_exit(&output, 0);
    let log = receiver.log();
    let mut refused: Vec<u64> = log
        .iter()
        .filter(|g| g.status == 422)
        .flat_map(|g| numbers(&g.body))
        .collect();
    let mut delivered: Vec<u64> = log
        .iter()
        .filter(|g| g.kept)
        .flat_map(|g| numbers(&g.body))
        .collect();
    refused.sort_unstable();
    delivered.sort_unstable();
    // Every bad record was in a refused body.
    for i in (0..n as u64).filter(|i| i % 97 == 5) {
        assert!(refused.binary_search(&i).is_ok(), "record {i}");
    }
    let dead = scratch.read_json("dlq.ndjson");
    let mut dead_n: Vec<u64> = dead
        .iter()
        .map(|d| {
            assert_eq!(d["stage"], "sink:api");
            let reason = d["reason"].as_str().unwrap();
            assert!(
                reason.contains("422") && reason.contains("record 'bad' is not allowed"),
                "{reason}"
            );
            serde_json::from_str::<serde_json::Value>(d["original"].as_str().unwrap()).unwrap()["n"]
                .as_u64()
                .unwrap()
        })
        .collect();
    dead_n.sort_unstable();
    assert_eq!(
        dead_n, refused,
        "the dead letters are the refused bodies' records"
    );
    let mut all = delivered.clone();
    all.extend(&refused);
    all.sort_unstable();
    assert_eq!(all, (0..n as u64).collect::<Vec<_>>(), "each record once");
    assert_eq!(count(&output, "p", "out"), delivered.len() as u64);
    assert_eq!(count(&output, "p", "rejected"), refused.len() as u64);
}

/// `https://` with a private CA (`ca_file`): a CA and a server certificate
/// for 127.0.0.1 made here by `openssl`, a receiver in Python's `ssl` and
/// `http.server` modules; the records arrive. Without `ca_file`, the
/// server's certificate is refused (Mozilla's roots do not sign it).
#[test]
fn https_with_a_private_ca() {
    const TEST: &str = "http_sink::https_with_a_private_ca";
    let Some(openssl) = which("openssl") else {
        skip(TEST, "openssl is not installed");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        let out = std::process::Command::new(&openssl)
            .current_dir(dir.path())
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=test CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
    ]);
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
    ]);
    std::fs::write(dir.path().join("ext"), "subjectAltName=IP:127.0.0.1\n").unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "ext",
        "-out",
        "server.pem",
    ]);
    // The receiver: prints each body's size, answers 200.
    let script = r#"
import http.server, ssl, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        sys.stdout.write(body.decode()); sys.stdout.flush()
        self.send_response(200); self.send_header("Content-Length", "0"); self.end_headers()
    def log_message(self, *a): pass
s = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
c = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER); c.load_cert_chain("server.pem", "server.key")
s.socket = c.wrap_socket(s.socket, server_side=True)
print(s.server_address[1], file=sys.stderr, flush=True)
s.serve_forever()
"#;
    let mut server = std::process::Command::new("python3")
        .current_dir(dir.path())
        .args(["-c", script])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut port = String::new();
    BufReader::new(server.stderr.take().unwrap())
        .read_line(&mut port)
        .unwrap();
    let stdout = server.stdout.take().unwrap();
    let _server = Kill(server);
    let url = format!("https://127.0.0.1:{}/ingest", port.trim());
    let received = Arc::new(Mutex::new(Vec::new()));
    let sink = received.clone();
    std::thread::spawn(move || {
        let mut stdout = stdout;
        let mut buf = [0u8; 8192];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 {
                break;
            }
            sink.lock().unwrap().extend_from_slice(&buf[..n]);
        }
    });
    let n = 200;
    let config = |ca: bool| {
        let mut c =
            http_sink(Config::new().file_source("in", "in.ndjson"), &url).set_str("timeout", "2s");
        if ca {
            c = c.set_str("ca_file", dir.path().join("ca.pem").to_str().unwrap());
        }
        c.pipeline("p", "in", &["api"])
            .plugin("identity.wasm")
            .build()
    };
    let scratch = Scratch::new(&config(true));
    scratch.write("in.ndjson", &records(n));
    let output = scratch.run();
    assert_exit(&output, 0);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut got = numbers(&received.lock().unwrap());
        got.sort_unstable();
        if got == (0..n as u64).collect::<Vec<_>>() {
            break;
        }
        assert!(Instant::now() < deadline, "received {} records", got.len());
        std::thread::sleep(Duration::from_millis(20));
    }
    // Without the CA, the certificate is not trusted: the sink retries (and
    // says why) until SIGTERM, and gives up 30 s after it at most.
    let scratch = Scratch::new(&config(false));
    scratch.write("in.ndjson", &records(1));
    let mut daemon = Running::start(scratch.command("run"));
    daemon.wait_for("cannot write");
    assert!(
        daemon
            .log
            .iter()
            .any(|l| l.contains("UnknownIssuer") || l.contains("certificate")),
        "{:?}",
        daemon.log
    );
    daemon.signal("TERM");
    let _ = daemon.finish();
}

/// Config errors name the field: no `url`, a URL that is not http(s), a
/// header the sink sets itself, a CA file that is not PEM.
#[test]
fn http_sink_config_errors_are_located() {
    for (field, raw, want) in [
        ("url", "\"ftp://x/\"", "is not an http:// or https:// URL"),
        (
            "headers",
            "{ \"Idempotency-Key\" = \"x\" }",
            "header Idempotency-Key is the sink's own to set",
        ),
        ("ca_file", "\"notpem.txt\"", "holds no certificate"),
        ("encoding", "\"xml\"", "unknown variant `xml`"),
    ] {
        let mut config = http_sink(
            Config::new().file_source("in", "in.ndjson"),
            "http://127.0.0.1:9/",
        );
        config = config.set(field, raw);
        let config = config.pipeline("p", "in", &["api"]).build();
        let scratch = Scratch::new(&config);
        scratch.write("in.ndjson", "");
        scratch.write("notpem.txt", "hello\n");
        let output = scratch.command("validate").output().unwrap();
        assert_exit(&output, 2);
        let stderr = String::from_utf8_lossy(&output.stderr);
        let line = line_of(&config, &format!("{field} = "));
        assert!(
            stderr.contains(&format!("sluice.toml:{line}:")) && stderr.contains(want),
            "{field}: {stderr}"
        );
    }
}
