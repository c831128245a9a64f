//! The admin API's defences (runtime/src/admin.rs), against a real daemon over
//! raw TCP: mutating requests from other origins or rebound host names are
//! refused, bodies are bounded, idle and slow connections are closed, and the
//! number of connections is capped.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::support::*;

/// A daemon following `in.ndjson` with its admin API on a free port.
fn daemon() -> (Scratch, Running, String) {
    let scratch = Scratch::new(&identity_following_with_admin().build());
    scratch.write("in.ndjson", "");
    let mut daemon = Running::start(scratch.command("run"));
    let addr = daemon.admin_addr();
    daemon.wait_for("pipeline started");
    (scratch, daemon, addr)
}

/// Sends `request` as is; the status of the answer, the answer, and how long
/// until the server closed the connection.
fn raw(addr: &str, request: &str) -> (u16, String, Duration) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let start = Instant::now();
    stream.write_all(request.as_bytes()).unwrap();
    let mut answer = Vec::new();
    stream
        .read_to_end(&mut answer)
        .unwrap_or_else(|e| panic!("{request:?}: no end of the answer: {e}"));
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let status = answer.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, answer, start.elapsed())
}

fn post_reload(addr: &str, extra_headers: &str) -> (u16, String) {
    let (status, answer, _) = raw(
        addr,
        &format!(
            "POST /reload HTTP/1.1\r\n{extra_headers}Content-Type: text/plain\r\nContent-Length: 1\r\nConnection: close\r\n\r\nx"
        ),
    );
    (status, answer)
}

#[test]
fn reload_refuses_other_origins_and_rebound_host_names() {
    let (_scratch, mut daemon, addr) = daemon();
    let port = addr.rsplit_once(':').unwrap().1;
    // A cross-site page's POST (a "simple" text/plain request: no preflight).
    let (status, answer) = post_reload(
        &addr,
        &format!("Host: {addr}\r\nOrigin: http://evil.example\r\n"),
    );
    assert_eq!(status, 403, "{answer}");
    assert!(answer.contains("another origin"), "{answer}");
    // DNS rebinding: the page's own name reaches 127.0.0.1.
    let (status, answer) = post_reload(&addr, &format!("Host: evil.example:{port}\r\n"));
    assert_eq!(status, 403, "{answer}");
    let (status, answer) = post_reload(
        &addr,
        &format!("Host: evil.example:{port}\r\nOrigin: http://evil.example:{port}\r\n"),
    );
    assert_eq!(status, 403, "{answer}");
    let (status, answer) = post_reload(
        &addr,
        &format!("Host: {addr}\r\nSec-Fetch-Site: cross-site\r\n"),
    );
    assert_eq!(status, 403, "{answer}");
    // GETs are not affected (a scraper may use any name).
    let (status, answer, _) = raw(
        &addr,
        "GET /health HTTP/1.1\r\nHost: metrics.example:9464\r\n\r\n",
    );
    assert_eq!((status, answer.ends_with("ok\n")), (200, true), "{answer}");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(daemon.count("config reloaded"), 0, "{:?}", daemon.log);

    // curl, sluice's own tools, a same-origin page: accepted, and reloaded.
    for (n, headers) in [
        format!("Host: {addr}\r\n"),
        format!("Host: localhost:{port}\r\n"),
        format!("Host: {addr}\r\nOrigin: http://{addr}\r\n"),
        format!("Host: [::1]:{port}\r\n"),
    ]
    .iter()
    .enumerate()
    {
        let (status, answer) = post_reload(&addr, headers);
        assert_eq!(status, 202, "{headers:?}: {answer}");
        daemon.wait_for_count("config reloaded", n + 1);
    }
    daemon.signal("TERM");
    assert_exit(&daemon.finish(), 0);
}

#[test]
fn a_declared_body_too_large_gets_413_at_once() {
    let (_scratch, mut daemon, addr) = daemon();
    // 10 GB declared, none sent: answered and closed without waiting for it.
    let (status, answer, took) = raw(
        &addr,
        &format!("POST /reload HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 10000000000\r\n\r\n"),
    );
    assert_eq!(status, 413, "{answer}");
    assert!(took < Duration::from_secs(3), "{took:?}");
    // One byte over the bound, and a chunked body: the same.
    let (status, answer, _) = raw(
        &addr,
        &format!(
            "POST /reload HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 4097\r\n\r\n{}",
            "x".repeat(4097)
        ),
    );
    assert_eq!(status, 413, "{answer}");
    let (status, answer, _) = raw(
        &addr,
        &format!(
            "POST /reload HTTP/1.1\r\nHost: {addr}\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\n\r\n"
        ),
    );
    assert_eq!(status, 413, "{answer}");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(daemon.count("config reloaded"), 0, "{:?}", daemon.log);
    // At the bound: accepted.
    let (status, answer, _) = raw(
        &addr,
        &format!(
            "POST /reload HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 4096\r\n\r\n{}",
            "x".repeat(4096)
        ),
    );
    assert_eq!(status, 202, "{answer}");
    daemon.wait_for("config reloaded");
}

/// Open sockets of process `pid`.
fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter(|fd| {
            std::fs::read_link(fd.as_ref().unwrap().path())
                .is_ok_and(|target| target.to_string_lossy().starts_with("socket:"))
        })
        .count()
}

#[test]
fn idle_and_slow_connections_are_closed_and_their_number_is_capped() {
    let (scratch, daemon, addr) = daemon();
    let pid = daemon.child.id();
    let before = fds(pid);

    // Nothing sent, and a head never finished: closed after the 5 s head timeout.
    let (_, answer, took) = raw(&addr, "");
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
        "{answer}"
    );
    assert!(
        took >= Duration::from_millis(4500) && took < Duration::from_secs(10),
        "{took:?}"
    );
    let (_, _, took) = raw(&addr, "GET /health HTTP/1.1\r\nHost: x\r\n");
    assert!(
        took >= Duration::from_millis(4500) && took < Duration::from_secs(10),
        "{took:?}"
    );

    // 300 idle connections: the daemon holds at most 64 of them.
    let held: Vec<TcpStream> = (0..300)
        .map(|_| {
            let s = TcpStream::connect(&addr).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
            s
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let during = fds(pid);
    assert!(
        during <= before + 64,
        "{before} sockets before, {during} with 300 held"
    );
    // Every one of them is closed by the daemon within the head timeout and
    // a margin, after which the API answers again.
    let start = Instant::now();
    for mut s in held {
        let mut buf = [0u8; 64];
        let n = s.read(&mut buf).unwrap_or(0);
        let answer = String::from_utf8_lossy(&buf[..n]);
        assert!(n == 0 || answer.starts_with("HTTP/1.1 408"), "{answer}");
    }
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(http(&addr, "GET", "/health"), (200, "ok\n".to_string()));
    assert!(
        fds(pid) <= before + 1,
        "{before} sockets before, {} after",
        fds(pid)
    );
    // And the pipeline ran on meanwhile.
    scratch.append_lines("in.ndjson", &["{\"n\":1}".to_string()]);
    scratch.wait_for_lines("out.ndjson", 1);
}

/// `GET /` lists the routes, and so does a 404: every route it names answers.
#[test]
fn the_root_and_a_404_list_the_routes() {
    let (_scratch, _daemon, addr) = daemon();
    let (status, root) = http(&addr, "GET", "/");
    assert_eq!(status, 200, "{root}");
    let (status, missing) = http(&addr, "GET", "/nope");
    assert_eq!(status, 404, "{missing}");
    assert_eq!(missing, format!("no such route\n\n{root}"));
    let routes: Vec<(&str, &str)> = root
        .lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            let method = words.next()?;
            let path = words.next()?;
            ["GET", "POST"].contains(&method).then_some((method, path))
        })
        .collect();
    let paths: Vec<&str> = routes.iter().map(|(_, p)| *p).collect();
    assert_eq!(
        paths,
        [
            "/health",
            "/about",
            "/ready",
            "/metrics",
            "/pipelines",
            "/plugins",
            "/sinks",
            "/stages",
            "/tap",
            "/reload"
        ]
    );
    for (method, path) in routes {
        // A tap streams until its time is up.
        let path = if path == "/tap" {
            "/tap?seconds=1"
        } else {
            path
        };
        let (status, body) = http(&addr, method, path);
        assert!(
            status == 200 || status == 202,
            "{method} {path}: {status} {body}"
        );
    }
}

/// An admin address busy at start (another daemon there) is tried again until
/// it is free; the daemon runs meanwhile.
#[test]
fn a_busy_admin_port_is_tried_again_until_it_is_free() {
    let blocker = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = blocker.local_addr().unwrap().to_string();
    let scratch = Scratch::new(
        &identity_following_with_admin()
            .build()
            .replace("127.0.0.1:0", &addr),
    );
    scratch.write("in.ndjson", "");
    let mut daemon = Running::start(scratch.command("run"));
    daemon.wait_for("pipeline started");
    daemon.wait_for(&format!("admin API not listening: cannot listen on {addr}"));
    scratch.append_lines("in.ndjson", &["{\"n\":1}".to_string()]);
    scratch.wait_for_lines("out.ndjson", 1);
    drop(blocker);
    let freed = Instant::now();
    daemon.wait_for(&format!("admin API listening on {addr} (it was busy)"));
    assert!(
        freed.elapsed() < Duration::from_secs(5),
        "{:?}",
        freed.elapsed()
    );
    assert_eq!(http(&addr, "GET", "/health"), (200, "ok\n".to_string()));
    daemon.signal("TERM");
    assert_exit(&daemon.finish(), 0);
}
