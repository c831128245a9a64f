//! The `http` source, with a real HTTP/1.1 client over a TCP socket: 200 with
//! the records in the sink, 401, 404, 405, 413 (declared and chunked), 503
//! with nothing taken, and `ack = "sink"`: a daemon killed with SIGKILL while
//! clients post has written every record it acknowledged.

use std::collections::BTreeSet;
use std::io::{Read as _, Write as _};
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use crate::support::*;

/// An HTTP response: status, header lines (lowercase), body.
#[derive(Debug)]
struct Reply {
    status: u16,
    head: String,
    body: String,
}

/// One `POST` to `addr` with `headers` and `body`; chunked when `chunked`.
fn post(
    addr: &str,
    path: &str,
    headers: &[&str],
    body: &[u8],
    chunked: bool,
) -> std::io::Result<Reply> {
    let mut stream = std::net::TcpStream::connect(addr)?;
    let mut head = format!("POST {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for h in headers {
        head.push_str(h);
        head.push_str("\r\n");
    }
    if chunked {
        head.push_str("Transfer-Encoding: chunked\r\n\r\n");
        stream.write_all(head.as_bytes())?;
        for piece in body.chunks(300) {
            // The server may answer (413) and close before the whole body.
            if stream
                .write_all(format!("{:x}\r\n", piece.len()).as_bytes())
                .and_then(|()| stream.write_all(piece))
                .and_then(|()| stream.write_all(b"\r\n"))
                .is_err()
            {
                break;
            }
        }
        let _ = stream.write_all(b"0\r\n\r\n");
    } else {
        head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
        stream.write_all(head.as_bytes())?;
        let _ = stream.write_all(body);
    }
    let mut response = Vec::new();
    // A reset after the answer (the server closed with body bytes unread)
    // still leaves the answer read.
    let _ = stream.read_to_end(&mut response);
    let response = String::from_utf8_lossy(&response).into_owned();
    let status = response
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("not an HTTP response: {response:?}")))?;
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    Ok(Reply {
        status,
        head: head.to_lowercase(),
        body: body.to_string(),
    })
}

/// The address the daemon's http source listens on, from its log.
fn listening(daemon: &mut Running) -> String {
    const LISTENING: &str = "http source listening on ";
    daemon.wait_for(LISTENING);
    daemon
        .log
        .iter()
        .find_map(|l| l.split(LISTENING).nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap()
        .to_string()
}

fn ids(lines: &[String]) -> Vec<String> {
    let mut ids: Vec<String> = lines
        .iter()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    ids.sort();
    ids
}

#[test]
fn http_takes_ndjson_and_arrays_and_refuses_what_it_must() {
    let scratch = Scratch::new(
        &Config::new()
            .source("web", "http")
            .set_str("address", "127.0.0.1:0")
            .set_str("path", "/ingest")
            .set_str("token", "s3cret")
            .set("max_body_bytes", 1024)
            .key("/id")
            .file_sink("out", "out.ndjson")
            .file_sink("dlq", "dlq.ndjson")
            .pipeline("p", "web", &["out"])
            .partitions(2)
            .dead_letter("dlq")
            .build(),
    );
    let mut daemon = Running::start(scratch.command("run"));
    let addr = listening(&mut daemon);
    let auth = "Authorization: Bearer s3cret";
    let send = |headers: &[&str], body: &str| {
        post(&addr, "/ingest", headers, body.as_bytes(), false).unwrap()
    };

    let r = send(
        &[auth],
        "{\"id\":\"a\"}\n{\"id\":\"b\"}\r\n\n{\"id\":\"c\"}",
    );
    assert_eq!(
        (r.status, r.body.as_str()),
        (200, "{\"accepted\":3,\"dead_letter\":0}\n")
    );
    let r = send(
        &["authorization: bearer s3cret"],
        " [{\"id\":\"d\"}, {\"id\" : \"e\"}]",
    );
    assert_eq!(
        (r.status, r.body.as_str()),
        (200, "{\"accepted\":2,\"dead_letter\":0}\n")
    );
    let r = send(&[auth], "{\"id\":\"f\"}\nnot json\n");
    assert_eq!(
        (r.status, r.body.as_str()),
        (200, "{\"accepted\":1,\"dead_letter\":1}\n")
    );
    let r = send(&[auth], "[{\"id\":\"g\"},");
    assert_eq!(r.status, 400, "{r:?}");

    for headers in [
        &[][..],
        &["Authorization: Bearer s3cre"],
        &["Authorization: Basic s3cret"],
    ] {
        let r = send(headers, "{\"id\":\"x\"}");
        assert_eq!(r.status, 401, "{headers:?}: {r:?}");
        assert!(r.head.contains("\r\nwww-authenticate: bearer"), "{r:?}");
    }
    let big: String = (0..100)
        .map(|i| format!("{{\"id\":\"big{i}\"}}\n"))
        .collect();
    assert!(big.len() > 1024);
    assert_eq!(send(&[auth], &big).status, 413);
    let r = post(&addr, "/ingest", &[auth], big.as_bytes(), true).unwrap();
    assert_eq!(r.status, 413, "chunked: {r:?}");
    // Exactly the limit is taken.
    let pad = 1024 - "{\"id\":\"h\",\"pad\":\"\"}".len();
    let exact = format!("{{\"id\":\"h\",\"pad\":\"{}\"}}", "x".repeat(pad));
    assert_eq!(exact.len(), 1024);
    assert_eq!(send(&[auth], &exact).status, 200);
    assert_eq!(
        post(&addr, "/other", &[auth], b"{}", false).unwrap().status,
        404
    );
    let (status, _) = http(&addr, "GET", "/ingest");
    assert_eq!(status, 405);

    daemon.signal("TERM");
    let output = daemon.finish();
    assert_exit(&output, 0);
    assert_eq!(count(&output, "p", "in"), 8);
    assert_eq!(count(&output, "p", "rejected"), 1);
    assert_eq!(
        ids(&scratch.read_lines("out.ndjson")),
        ["a", "b", "c", "d", "e", "f", "h"]
    );
    let dead = scratch.read_json("dlq.ndjson");
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0]["original"], "not json");
    assert_eq!(dead[0]["stage"], "source");
}

/// Requests of `n` records with ids `tag-0`…: one NDJSON body.
fn body_of(tag: &str, n: usize) -> (Vec<String>, String) {
    let ids: Vec<String> = (0..n).map(|i| format!("{tag}-{i}")).collect();
    let body = ids
        .iter()
        .map(|id| format!("{{\"id\":\"{id}\",\"pad\":\"{}\"}}\n", "p".repeat(60)))
        .collect();
    (ids, body)
}

#[test]
fn http_answers_503_when_the_queue_is_full_and_takes_nothing_then() {
    let scratch = Scratch::new(
        &Config::new()
            .source("web", "http")
            .set_str("address", "127.0.0.1:0")
            .sink("out", "stdout")
            .pipeline("p", "web", &["out"])
            .set("queue_records", 1)
            .batch(r#"{ max_records = 100, interval = "5ms" }"#)
            .build(),
    );
    // Nobody reads the daemon's stdout yet: once the pipe is full, the sink,
    // the worker and then the queue stop moving.
    let mut command = scratch.command("run");
    command.stdout(Stdio::piped());
    let mut daemon = Running::start(command);
    let addr = listening(&mut daemon);
    let mut taken: Vec<String> = Vec::new();
    let mut refused = None;
    for request in 0..5000 {
        let (ids, body) = body_of(&format!("r{request}"), 200);
        let r = post(&addr, "/", &[], body.as_bytes(), false).unwrap();
        match r.status {
            200 => taken.extend(ids),
            503 => {
                assert!(r.head.contains("\r\nretry-after: 1"), "{r:?}");
                refused = Some((ids, body));
                break;
            }
            other => panic!("status {other}: {r:?}"),
        }
    }
    let (refused_ids, refused) = refused.expect("a full queue answers 503");
    // Read the output now: the pipeline moves again, and the refused request,
    // sent again, is taken.
    let mut stdout = daemon.child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut out = String::new();
        stdout.read_to_string(&mut out).unwrap();
        out
    });
    let started = std::time::Instant::now();
    loop {
        let r = post(&addr, "/", &[], refused.as_bytes(), false).unwrap();
        if r.status == 200 {
            break;
        }
        assert_eq!(r.status, 503, "{r:?}");
        assert!(
            started.elapsed() < std::time::Duration::from_secs(60),
            "still 503"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    taken.extend(refused_ids);
    daemon.signal("TERM");
    let output = daemon.finish();
    assert_exit(&output, 0);
    let out: Vec<String> = reader.join().unwrap().lines().map(str::to_string).collect();
    taken.sort();
    // Each taken record once; the refused attempts added nothing.
    assert_eq!(ids(&out), taken);
}

#[test]
fn http_ack_sink_never_acknowledges_a_record_a_killed_daemon_had_not_written() {
    let scratch = Scratch::new(
        &Config::new()
            .source("web", "http")
            .set_str("address", "127.0.0.1:0")
            .set_str("ack", "sink")
            .file_sink("out", "out.ndjson")
            .pipeline("p", "web", &["out"])
            .partitions(2)
            .batch(r#"{ max_records = 64, interval = "20ms" }"#)
            .plugin("identity.wasm")
            .build(),
    );
    let mut daemon = Running::start(scratch.command("run"));
    let addr = listening(&mut daemon);
    let acked = Arc::new(Mutex::new(BTreeSet::new()));
    let clients: Vec<_> = (0..4)
        .map(|c| {
            let (addr, acked) = (addr.clone(), acked.clone());
            std::thread::spawn(move || {
                for request in 0.. {
                    let (ids, body) = body_of(&format!("c{c}r{request}"), 25);
                    match post(&addr, "/", &[], body.as_bytes(), false) {
                        Ok(r) if r.status == 200 => acked.lock().unwrap().extend(ids),
                        Ok(r) if r.status == 503 => {}
                        // Killed: no answer, or no connection.
                        _ => return,
                    }
                }
            })
        })
        .collect();
    let started = std::time::Instant::now();
    while acked.lock().unwrap().len() < 5000 {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(120),
            "only {} records acknowledged",
            acked.lock().unwrap().len()
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    daemon.child.kill().unwrap(); // SIGKILL, while the clients post
    daemon.child.wait().unwrap();
    for c in clients {
        c.join().unwrap();
    }
    let acked = acked.lock().unwrap();
    // The last line may be cut short by the kill: only whole lines count.
    let written: BTreeSet<String> = std::fs::read_to_string(scratch.path("out.ndjson"))
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .map(|v| v["id"].as_str().unwrap().to_string())
        .collect();
    let missing: Vec<&String> = acked.difference(&written).collect();
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged records are not in the sink, e.g. {:?}",
        missing.len(),
        acked.len(),
        &missing[..missing.len().min(5)]
    );
}

#[test]
fn http_source_is_loopback_unless_allowed() {
    let config = Config::new()
        .source("web", "http")
        .set_str("address", "0.0.0.0:8080")
        .sink("out", "stdout")
        .pipeline("p", "web", &["out"]);
    let toml = config.build();
    let output = Scratch::new(&toml).command("validate").output().unwrap();
    assert_exit(&output, 2);
    let stderr = String::from_utf8(output.stderr).unwrap();
    let at = format!(
        "error: sluice.toml:{}:11: field `address`: 0.0.0.0:8080 is not a loopback address",
        line_of(&toml, "address =")
    );
    assert!(stderr.starts_with(&at), "{stderr}");
    let allowed = config
        .table("sources.web")
        .set("allow_remote", true)
        .build();
    let output = Scratch::new(&allowed).command("validate").output().unwrap();
    assert_exit(&output, 0);
}

#[test]
fn http_ack_sink_is_refused_with_windows() {
    let toml = Config::new()
        .source("web", "http")
        .set_str("address", "127.0.0.1:0")
        .set_str("ack", "sink")
        .timestamp("/ts")
        .sink("out", "stdout")
        .pipeline("p", "web", &["out"])
        .window(r#"{ kind = "tumbling", size = "1m" }"#)
        .aggregate(r#"[{ op = "count" }]"#)
        .build();
    let output = Scratch::new(&toml).command("validate").output().unwrap();
    assert_exit(&output, 2);
    let stderr = String::from_utf8(output.stderr).unwrap();
    let at = format!("error: sluice.toml:{}:", line_of(&toml, "ack ="));
    assert!(
        stderr.starts_with(&at) && stderr.contains("a pipeline with windows holds them"),
        "{stderr}"
    );
}

#[test]
fn http_csv_bodies_each_start_with_their_header_row() {
    let scratch = Scratch::new(
        &Config::new()
            .source("web", "http")
            .set_str("address", "127.0.0.1:0")
            .set_str("format", "csv")
            .set("max_line_bytes", 100)
            .file_sink("out", "out.ndjson")
            .pipeline("p", "web", &["out"])
            .build(),
    );
    let mut daemon = Running::start(scratch.command("run"));
    let addr = listening(&mut daemon);
    for body in ["id,temp\r\na,1\r\nb,2\r\n", "temp,id\n3,c\n"] {
        let r = post(&addr, "/", &[], body.as_bytes(), false).unwrap();
        assert_eq!(r.status, 200, "{r:?}");
    }
    // A row longer than max_line_bytes goes to the dead-letter sink.
    let long = format!("id,temp\nd,{}\n", "9".repeat(200));
    let r = post(&addr, "/", &[], long.as_bytes(), false).unwrap();
    assert_eq!(
        (r.status, r.body.as_str()),
        (200, "{\"accepted\":0,\"dead_letter\":1}\n")
    );
    daemon.signal("TERM");
    assert_exit(&daemon.finish(), 0);
    let mut got: Vec<(String, String)> = scratch
        .read_json("out.ndjson")
        .iter()
        .map(|v| {
            (
                v["id"].as_str().unwrap().to_string(),
                v["temp"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    got.sort();
    let want = [("a", "1"), ("b", "2"), ("c", "3")].map(|(i, t)| (i.to_string(), t.to_string()));
    assert_eq!(got, want);
}

/// A client that half-closes after its request (HTTP/1.1 allows it) still
/// gets its answer with `ack = "sink"`, and each record is written once; a
/// client that stalls in the middle of its head is cut off.
#[test]
fn http_half_closed_clients_are_answered_and_stalled_heads_cut_off() {
    let toml = Config::new()
        .source("web", "http")
        .set_str("address", "127.0.0.1:0")
        .set_str("ack", "sink")
        .file_sink("out", "out.ndjson")
        .pipeline("p", "web", &["out"])
        .batch(r#"{ max_records = 100, interval = "10ms" }"#)
        .build();
    let scratch = Scratch::new(&toml);
    let mut daemon = Running::start(scratch.command("run"));
    let addr = listening(&mut daemon);
    // A head never finished: the server closes the connection (5 s).
    let mut stalled = std::net::TcpStream::connect(&addr).unwrap();
    stalled
        .write_all(b"POST / HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    for i in 0..20 {
        let body = format!("{{\"hc\":{i}}}\n");
        let mut stream = std::net::TcpStream::connect(&addr).unwrap();
        let request = format!(
            "POST / HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(request.as_bytes()).unwrap();
        stream.shutdown(std::net::Shutdown::Write).unwrap();
        let mut response = String::new();
        let _ = stream.read_to_string(&mut response);
        assert!(
            response.starts_with("HTTP/1.1 200"),
            "request {i} after a half-close: {response:?}"
        );
    }
    let lines = scratch.read_lines("out.ndjson");
    let mut got: Vec<String> = lines.clone();
    got.sort();
    let mut want: Vec<String> = (0..20).map(|i| format!("{{\"hc\":{i}}}")).collect();
    want.sort();
    assert_eq!(got, want, "each acknowledged record once");
    stalled
        .set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    let mut rest = Vec::new();
    // Closed by the server (EOF, or a reset): not left waiting for the
    // read timeout's error.
    let started = std::time::Instant::now();
    let closed = match stalled.read_to_end(&mut rest) {
        Ok(_) => true,
        Err(e) => {
            e.kind() != std::io::ErrorKind::WouldBlock && e.kind() != std::io::ErrorKind::TimedOut
        }
    };
    assert!(
        closed && started.elapsed() < std::time::Duration::from_secs(29),
        "a stalled head kept its connection"
    );
    daemon.signal("TERM");
    assert_exit(&daemon.finish(), 0);
}
