//! Socket sources: `tcp` (many connections, exactly once, fragments to the
//! dead-letter sink, `max_connections`) and `udp` (datagrams as records,
//! drops counted when the pipeline is full).

use std::io::{BufWriter, Read as _, Write as _};
use std::net::{TcpStream, UdpSocket};
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::support::*;

/// Waits for the daemon's "source `NAME` listening on PROTO ADDR" line; the
/// address.
fn listening(daemon: &mut Running, proto: &str) -> String {
    let marker = format!("listening on {proto} ");
    daemon.wait_for(&marker);
    daemon
        .log
        .iter()
        .find_map(|l| l.split(&marker).nth(1))
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

/// Newlines in the file `name` (0 if it does not exist yet).
fn newlines(scratch: &Scratch, name: &str) -> usize {
    std::fs::read(scratch.path(name))
        .unwrap_or_default()
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
}

/// Waits (up to `secs`) until the file `name` has at least `n` lines.
fn wait_for_newlines(scratch: &Scratch, name: &str, n: usize, secs: u64) {
    let start = Instant::now();
    loop {
        let have = newlines(scratch, name);
        if have >= n {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(secs),
            "waited for {n} lines in {name}, have {have}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn tcp_three_clients_million_lines_each_exactly_once() {
    let scratch = Scratch::new(
        r#"
[daemon]
plugins_dir = "@PLUGINS@"
admin = "off"

[sources.in]
type = "tcp"
address = "127.0.0.1:0"
key = "/n"

[sinks.out]
type = "file"
path = "out.ndjson"

[pipelines.p]
source = "in"
partitions = 2
batch = { max_records = 4096, interval = "50ms" }
sinks = ["out"]
"#,
    );
    let mut daemon = Running::start(scratch.command("run"));
    let address = listening(&mut daemon, "tcp");
    const TOTAL: u64 = 1_000_000;
    // Three disjoint ranges, of unequal lengths.
    let ranges = [(0, 300_000), (300_000, 650_000), (650_000, TOTAL)];
    let clients: Vec<_> = ranges
        .iter()
        .map(|&(from, to)| {
            let address = address.clone();
            std::thread::spawn(move || {
                let mut out = BufWriter::new(TcpStream::connect(&address).unwrap());
                for n in from..to {
                    writeln!(out, "{{\"n\":{n}}}").unwrap();
                }
                out.flush().unwrap();
            })
        })
        .collect();
    for c in clients {
        c.join().unwrap();
    }
    wait_for_newlines(&scratch, "out.ndjson", TOTAL as usize, 300);
    daemon.signal("TERM");
    let output = daemon.finish();
    assert_exit(&output, 0);
    let mut seen: Vec<u64> = scratch
        .read_json("out.ndjson")
        .iter()
        .map(|v| v["n"].as_u64().unwrap())
        .collect();
    assert_eq!(seen.len() as u64, TOTAL, "records in the sink");
    seen.sort_unstable();
    let want: Vec<u64> = (0..TOTAL).collect();
    assert!(seen == want, "each of 0..{TOTAL} exactly once");
    assert_eq!(count(&output, "p", "in"), TOTAL);
    assert_eq!(count(&output, "p", "rejected"), 0);
}

#[test]
fn tcp_fragment_cut_mid_line_goes_to_the_dead_letter_sink() {
    let scratch = Scratch::new(
        r#"
[daemon]
plugins_dir = "@PLUGINS@"
admin = "off"

[sources.in]
type = "tcp"
address = "127.0.0.1:0"

[sinks.out]
type = "file"
path = "out.ndjson"

[sinks.dlq]
type = "file"
path = "dlq.ndjson"

[pipelines.p]
source = "in"
batch = { max_records = 10, interval = "10ms" }
sinks = ["out"]
dead_letter = "dlq"
"#,
    );
    let mut daemon = Running::start(scratch.command("run"));
    let address = listening(&mut daemon, "tcp");
    let mut client = TcpStream::connect(&address).unwrap();
    let local = client.local_addr().unwrap();
    client
        .write_all(b"{\"n\":1}\r\n{\"n\":2}\n{\"n\":3,\"cut")
        .unwrap();
    drop(client);
    scratch.wait_for_lines("out.ndjson", 2);
    scratch.wait_for_lines("dlq.ndjson", 1);
    daemon.signal("TERM");
    let output = daemon.finish();
    assert_exit(&output, 0);
    assert_eq!(scratch.read_lines("out.ndjson"), ["{\"n\":1}", "{\"n\":2}"]);
    let dead = scratch.read_json("dlq.ndjson");
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0]["original"], "{\"n\":3,\"cut");
    assert_eq!(dead[0]["stage"], "source");
    let reason = dead[0]["reason"].as_str().unwrap();
    assert!(
        reason.contains(&format!("tcp connection from {local} closed mid-line"))
            && reason.contains("last 11 bytes"),
        "{reason}"
    );
    assert_eq!(count(&output, "p", "rejected"), 1);
}

#[test]
fn tcp_connections_past_max_connections_wait_their_turn() {
    let scratch = Scratch::new(
        r#"
[daemon]
plugins_dir = "@PLUGINS@"
admin = "off"

[sources.in]
type = "tcp"
address = "127.0.0.1:0"
format = "text"
max_connections = 1

[sinks.out]
type = "file"
path = "out.txt"

[pipelines.p]
source = "in"
batch = { max_records = 1, interval = "10ms" }
sinks = ["out"]
"#,
    );
    let mut daemon = Running::start(scratch.command("run"));
    let address = listening(&mut daemon, "tcp");
    let mut first = TcpStream::connect(&address).unwrap();
    first.write_all(b"a1\n").unwrap();
    scratch.wait_for_lines("out.txt", 1);
    // The second connection is accepted by the kernel (backlog), its line
    // buffered there; the source does not read it while the first is open.
    let mut second = TcpStream::connect(&address).unwrap();
    second.write_all(b"b1\n").unwrap();
    drop(second);
    // Time enough for the source to read `b1` if it were reading the second
    // connection (the order below would then be a1, b1, a2).
    std::thread::sleep(Duration::from_millis(500));
    first.write_all(b"a2\n").unwrap();
    drop(first);
    scratch.wait_for_lines("out.txt", 3);
    daemon.signal("TERM");
    assert_exit(&daemon.finish(), 0);
    assert_eq!(scratch.read_lines("out.txt"), ["a1", "a2", "b1"]);
}

#[test]
fn udp_datagrams_are_records_and_overlong_ones_dead_letters() {
    let scratch = Scratch::new(
        r#"
[daemon]
plugins_dir = "@PLUGINS@"
admin = "off"

[sources.in]
type = "udp"
address = "127.0.0.1:0"
format = "text"
max_line_bytes = 16

[sinks.out]
type = "file"
path = "out.txt"

[sinks.dlq]
type = "file"
path = "dlq.ndjson"

[pipelines.p]
source = "in"
batch = { max_records = 1, interval = "10ms" }
sinks = ["out"]
dead_letter = "dlq"
"#,
    );
    let mut daemon = Running::start(scratch.command("run"));
    let address = listening(&mut daemon, "udp");
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let long = "x".repeat(40);
    for datagram in ["one\n", "two words", "three\r\n", &long, "a\nb"] {
        socket.send_to(datagram.as_bytes(), &address).unwrap();
    }
    scratch.wait_for_lines("dlq.ndjson", 2);
    scratch.wait_for_lines("out.txt", 3);
    daemon.signal("TERM");
    let output = daemon.finish();
    assert_exit(&output, 0);
    assert_eq!(scratch.read_lines("out.txt"), ["one", "two words", "three"]);
    assert_eq!(count(&output, "p", "in"), 5);
    assert_eq!(count(&output, "p", "out"), 3);
    let dead = scratch.read_json("dlq.ndjson");
    assert_eq!(dead.len(), 2);
    // Cut by the receive buffer one byte past the limit.
    assert_eq!(dead[0]["original"], "x".repeat(17));
    assert_eq!(dead[0]["stage"], "source");
    assert!(
        dead[0]["reason"]
            .as_str()
            .unwrap()
            .contains("more than max_line_bytes (16)"),
        "{}",
        dead[0]
    );
    // One datagram, one record: "a\nb" stays whole, and a file sink refuses
    // a record with a line break in it.
    assert_eq!(dead[1]["original"], "a\nb");
    assert_eq!(dead[1]["stage"], "output");
}

/// Datagrams the kernel dropped for the UDP socket bound to `port` on
/// 127.0.0.1 (its receive buffer full), from /proc/net/udp.
fn kernel_drops(port: u16) -> u64 {
    let table = std::fs::read_to_string("/proc/net/udp").unwrap();
    let local = format!("0100007F:{port:04X}");
    table
        .lines()
        .skip(1)
        .find(|l| l.split_whitespace().nth(1) == Some(local.as_str()))
        .map_or(0, |l| l.split_whitespace().last().unwrap().parse().unwrap())
}

/// The counter `name` of pipeline `p` from the admin API's `/pipelines`.
fn pipeline_counter(admin: &str, name: &str) -> u64 {
    pipeline_counter_of(admin, "p", name)
}

/// The counter `name` of `pipeline` from the admin API's `/pipelines`.
fn pipeline_counter_of(admin: &str, pipeline: &str, name: &str) -> u64 {
    let (status, body) = http(admin, "GET", "/pipelines");
    assert_eq!(status, 200, "{body}");
    let list: serde_json::Value = serde_json::from_str(&body).unwrap();
    let p = list
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["pipeline"] == pipeline)
        .unwrap();
    p[name].as_u64().unwrap()
}

#[test]
fn udp_flood_over_a_tiny_queue_counts_its_drops() {
    let scratch = Scratch::new(
        r#"
[daemon]
plugins_dir = "@PLUGINS@"
admin = "127.0.0.1:0"

[sources.in]
type = "udp"
address = "127.0.0.1:0"

[sinks.out]
type = "stdout"

[pipelines.p]
source = "in"
queue_records = 1
batch = { max_records = 64, interval = "10ms" }
sinks = ["out"]
"#,
    );
    // stdout is not read until every datagram is in: the sink blocks on the
    // full pipe, the worker on the sink, the source finds the queue full.
    let mut command = scratch.command("run");
    command.stdout(Stdio::piped());
    let mut daemon = Running::start(command);
    let admin = daemon.admin_addr();
    let address = listening(&mut daemon, "udp");
    let port: u16 = address.rsplit(':').next().unwrap().parse().unwrap();
    const SENT: u64 = 30_000;
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    for n in 0..SENT {
        socket
            .send_to(format!("{{\"n\":{n}}}").as_bytes(), &address)
            .unwrap();
        if n % 100 == 99 {
            // Bursts, so that most datagrams reach the daemon rather than
            // overflowing the kernel's receive buffer.
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    // Every datagram was read by the daemon or dropped by the kernel.
    let start = Instant::now();
    let (read, by_kernel) = loop {
        let read = pipeline_counter(&admin, "records_in");
        let by_kernel = kernel_drops(port);
        if read + by_kernel >= SENT {
            break (read, by_kernel);
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "read {read} + dropped by the kernel {by_kernel} < {SENT}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(read + by_kernel, SENT);
    let dropped = pipeline_counter(&admin, "records_dropped");
    let (_, metrics) = http(&admin, "GET", "/metrics");
    assert!(
        metrics.contains(&format!(
            "sluice_records_dropped_total{{pipeline=\"p\"}} {dropped}\n"
        )),
        "{metrics}"
    );
    let mut stdout = daemon.child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        stdout.read_to_string(&mut text).unwrap();
        text
    });
    daemon.signal("TERM");
    let output = daemon.finish();
    assert_exit(&output, 0);
    let text = reader.join().unwrap();
    let mut written: Vec<u64> = text
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["n"]
                .as_u64()
                .unwrap()
        })
        .collect();
    written.sort_unstable();
    let before = written.len();
    written.dedup();
    assert_eq!(written.len(), before, "a datagram written twice");
    assert!(written.iter().all(|&n| n < SENT));
    eprintln!(
        "udp flood: sent {SENT}, dropped by the kernel {by_kernel}, read {read}, dropped by sluice {dropped}, written {}",
        written.len()
    );
    assert!(dropped > 0, "a flood over a 1-chunk queue drops");
    assert_eq!(written.len() as u64 + dropped, read);
    assert_eq!(count(&output, "p", "dropped"), dropped);
    assert_eq!(count(&output, "p", "out"), written.len() as u64);
}

#[test]
fn socket_sources_need_an_address_and_refuse_a_bad_one() {
    for (kind, address, want) in [
        (
            "tcp",
            "",
            "a tcp source needs `address`, the socket to listen on",
        ),
        (
            "udp",
            "address = \"localhost\"",
            "`localhost` is not an IP address and port",
        ),
        (
            "tcp",
            "address = \"127.0.0.1:9\"\nmax_connections = 0",
            "`max_connections` must be at least 1",
        ),
    ] {
        let scratch = Scratch::new(&format!(
            "[sources.in]\ntype = \"{kind}\"\n{address}\n\n[sinks.out]\ntype = \"stdout\"\n\n[pipelines.p]\nsource = \"in\"\nsinks = [\"out\"]\n"
        ));
        let output = scratch.command("validate").output().unwrap();
        assert_exit(&output, 2);
        let stderr = String::from_utf8(output.stderr).unwrap();
        assert!(stderr.contains(want), "{kind} {address}: {stderr}");
    }
}

#[test]
fn two_sources_on_one_port_are_refused() {
    let scratch = Scratch::new(
        r#"
[sources.a]
type = "tcp"
address = "127.0.0.1:9000"

[sources.b]
type = "tcp"
address = "127.0.0.1:9000"

[sinks.out]
type = "stdout"

[pipelines.p]
source = "a"
sinks = ["out"]

[pipelines.q]
source = "b"
sinks = ["out"]
"#,
    );
    let output = scratch.command("validate").output().unwrap();
    assert_exit(&output, 2);
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        stderr.contains("listens on tcp 127.0.0.1:9000, which"),
        "{stderr}"
    );
}

#[test]
fn socket_wordcount_example_counts_words() {
    let example = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/socket-wordcount/sluice.toml");
    let config = std::fs::read_to_string(example).unwrap();
    // The example as it is, but on a free port, with the admin API (to see
    // when the lines are read) and the test's plugins and state folders.
    let config = [
        (
            "plugins_dir = \"${CARGO_TARGET_DIR:-../../target}/plugins\"",
            "plugins_dir = \"@PLUGINS@\"",
        ),
        (
            "state_dir = \"../../target/state-wordcount\"",
            "state_dir = \"state\"",
        ),
        ("admin = \"off\"", "admin = \"127.0.0.1:0\""),
        ("address = \"127.0.0.1:9000\"", "address = \"127.0.0.1:0\""),
    ]
    .iter()
    .fold(config, |c, (from, to)| {
        assert!(c.contains(from), "the example has {from}");
        c.replace(from, to)
    });
    let scratch = Scratch::new(&config);
    let mut command = scratch.command("run");
    command.stdout(Stdio::piped());
    let mut daemon = Running::start(command);
    let admin = daemon.admin_addr();
    let address = listening(&mut daemon, "tcp");
    for text in [
        "To be, or not to be:\nthat is",
        " the question.\n",
        "TO BE\n",
    ] {
        TcpStream::connect(&address)
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    }
    // Each connection is its own stream: "that is", cut by its connection's
    // close, is a fragment (dead letter, not counted); " the question." a line.
    let start = Instant::now();
    while pipeline_counter_of(&admin, "wordcount", "records_in") < 4 {
        assert!(start.elapsed() < Duration::from_secs(60));
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut stdout = daemon.child.stdout.take().unwrap();
    daemon.signal("TERM");
    let mut text = String::new();
    stdout.read_to_string(&mut text).unwrap();
    assert_exit(&daemon.finish(), 0);
    // Summed over the windows (the lines may straddle a 10 s boundary).
    let mut counts = std::collections::BTreeMap::new();
    for row in text.lines() {
        let row: serde_json::Value = serde_json::from_str(row).unwrap();
        *counts
            .entry(row["key"].as_str().unwrap().to_string())
            .or_insert(0) += row["count"].as_u64().unwrap();
    }
    let want: std::collections::BTreeMap<String, u64> = [
        ("to", 3),
        ("be", 3),
        ("or", 1),
        ("not", 1),
        ("the", 1),
        ("question", 1),
    ]
    .into_iter()
    .map(|(w, n)| (w.to_string(), n))
    .collect();
    assert_eq!(counts, want);
}

/// A sink that fails while a client stays connected and sends nothing more:
/// the pipeline stops and the daemon exits 1 (before, the idle worker never
/// noticed the dead sink and the daemon ran on until a signal).
#[test]
fn a_sink_that_fails_stops_the_daemon_while_a_client_stays_connected() {
    let scratch = Scratch::new(
        r#"
[daemon]
plugins_dir = "@PLUGINS@"
admin = "off"

[sources.in]
type = "tcp"
address = "127.0.0.1:0"
format = "text"

[sinks.out]
type = "file"
path = "/dev/full"

[pipelines.p]
source = "in"
batch = { max_records = 1, interval = "10ms" }
sinks = ["out"]
"#,
    );
    let mut daemon = Running::start(scratch.command("run"));
    let address = listening(&mut daemon, "tcp");
    let mut client = TcpStream::connect(&address).unwrap();
    client.write_all(b"one line\n").unwrap();
    // The client stays connected, sending nothing, until the daemon is gone.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while daemon.child.try_wait().unwrap().is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "the daemon still runs a minute after its only sink failed"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let output = daemon.finish();
    drop(client);
    assert_exit(&output, 1);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("No space left on device"), "{stderr}");
}
