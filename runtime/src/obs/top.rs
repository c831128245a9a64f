//! `sluice top`: a terminal view of a running daemon, read from its admin API —
//! each pipeline's counters and rates, each sink's writes, retries and
//! refusals, each plugin's running version and reloads.
//!
//! Rates are the difference of two samples of the counters over the time
//! between them. The client is a few lines of HTTP/1.1 over
//! `std::net::TcpStream` (the admin API is local and plain HTTP).

use std::fmt::Write as _;
use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::Value;

/// Connect, write and read timeout of one request to the admin API.
const TIMEOUT: Duration = Duration::from_secs(5);

/// `GET path` on the admin API at `addr` (`HOST:PORT`): (status, body).
///
/// # Errors
/// The daemon cannot be reached, or did not answer with HTTP.
pub fn get(addr: &str, path: &str) -> anyhow::Result<(u16, String)> {
    use anyhow::Context as _;
    let socket = std::net::ToSocketAddrs::to_socket_addrs(addr)
        .with_context(|| format!("{addr} is not an address"))?
        .next()
        .with_context(|| format!("{addr} has no address"))?;
    let mut stream = TcpStream::connect_timeout(&socket, TIMEOUT)
        .with_context(|| format!("cannot reach the admin API at {addr}"))?;
    stream.set_read_timeout(Some(TIMEOUT))?;
    stream.set_write_timeout(Some(TIMEOUT))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .with_context(|| format!("{addr} did not answer with HTTP"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("{addr} did not answer with HTTP"))?;
    Ok((status, body.to_string()))
}

/// One reading of the admin API.
#[derive(Debug, Clone)]
pub struct Sample {
    /// When it was read.
    pub at: Instant,
    /// `GET /ready` answered 200.
    pub ready: bool,
    /// `GET /pipelines`.
    pub pipelines: Vec<Value>,
    /// `GET /plugins`.
    pub plugins: Vec<Value>,
    /// `GET /sinks` (empty from a daemon without it).
    pub sinks: Vec<Value>,
}

/// Reads `/ready`, `/pipelines`, `/sinks` and `/plugins`.
///
/// # Errors
/// The daemon cannot be reached, or an answer is not the JSON expected.
pub fn sample(addr: &str) -> anyhow::Result<Sample> {
    let json = |path: &str| -> anyhow::Result<Vec<Value>> {
        let (status, body) = get(addr, path)?;
        anyhow::ensure!(status == 200, "GET {path}: HTTP {status}");
        Ok(serde_json::from_str(&body)?)
    };
    let ready = get(addr, "/ready")?.0 == 200;
    Ok(Sample {
        at: Instant::now(),
        ready,
        pipelines: json("/pipelines")?,
        plugins: json("/plugins")?,
        sinks: json("/sinks").unwrap_or_default(),
    })
}

/// Per second, from `before` to `after` over `elapsed` (0 when no time passed
/// or the counter went back, as after a restart).
pub fn rate(before: u64, after: u64, elapsed: Duration) -> f64 {
    let secs = elapsed.as_secs_f64();
    if secs <= 0.0 || after < before {
        return 0.0;
    }
    (after - before) as f64 / secs
}

fn counter(pipeline: &Value, name: &str) -> u64 {
    pipeline[name].as_u64().unwrap_or(0)
}

/// The view of two samples of the daemon at `addr` (`before` earlier):
/// a header line, a table of pipelines, a table of plugins.
pub fn render(addr: &str, before: &Sample, after: &Sample) -> String {
    let elapsed = after.at.saturating_duration_since(before.at);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "sluice at {addr}: {} — {} pipeline(s), {} plugin(s); rates over {:.1}s",
        if after.ready { "ready" } else { "not ready" },
        after.pipelines.len(),
        after.plugins.len(),
        elapsed.as_secs_f64()
    );
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "{:<20} {:<8} {:>12} {:>12} {:>10} {:>10} {:>10} {:>10} {:>6}  WATERMARK",
        "PIPELINE", "STATE", "IN", "OUT", "REJECTED", "FAILED", "IN/s", "OUT/s", "SKEW"
    );
    for p in &after.pipelines {
        let name = p["pipeline"].as_str().unwrap_or("?");
        let old = before
            .pipelines
            .iter()
            .find(|o| o["pipeline"] == p["pipeline"]);
        let rate_of = |c: &str| old.map_or(0.0, |o| rate(counter(o, c), counter(p, c), elapsed));
        let _ = writeln!(
            out,
            "{name:<20} {:<8} {:>12} {:>12} {:>10} {:>10} {:>10.1} {:>10.1} {:>6}  {}",
            if p["running"] == true {
                "running"
            } else {
                "ended"
            },
            counter(p, "records_in"),
            counter(p, "records_out"),
            counter(p, "records_rejected"),
            counter(p, "records_failed"),
            rate_of("records_in"),
            rate_of("records_out"),
            // The busiest partition's records over the mean (1.00: even);
            // `-` with one partition or before any record.
            p["skew"]
                .as_f64()
                .map_or_else(|| "-".to_string(), |s| format!("{s:.2}")),
            // Windowed pipelines: the event time the windows have reached.
            p["watermark"].as_str().unwrap_or("-"),
        );
    }
    // Pipelines of several partitions: the records each worker took, in
    // partition order (the counts the skew is computed from).
    let split: Vec<(&str, &Vec<Value>)> = after
        .pipelines
        .iter()
        .filter_map(|p| {
            let counts = p["partition_records"].as_array()?;
            (counts.len() > 1).then(|| (p["pipeline"].as_str().unwrap_or("?"), counts))
        })
        .collect();
    if !split.is_empty() {
        let _ = writeln!(out);
        let _ = writeln!(out, "{:<20} RECORDS PER PARTITION (0, 1, …)", "PIPELINE");
    }
    for (pipeline, counts) in split {
        let counts: Vec<String> = counts
            .iter()
            .map(|c| c.as_u64().unwrap_or(0).to_string())
            .collect();
        let _ = writeln!(out, "{pipeline:<20} {}", counts.join(" "));
    }
    if !after.sinks.is_empty() {
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "{:<20} {:<8} {:>12} {:>10} {:>10} {:>10}",
            "SINK", "STATE", "WRITTEN", "WRITTEN/s", "RETRIES", "REFUSED"
        );
    }
    for s in &after.sinks {
        let old = before.sinks.iter().find(|o| o["sink"] == s["sink"]);
        let _ = writeln!(
            out,
            "{:<20} {:<8} {:>12} {:>10.1} {:>10} {:>10}",
            s["sink"].as_str().unwrap_or("?"),
            // Blocked: cannot write now (retrying, or not open yet).
            if s["blocked"] == true {
                "blocked"
            } else {
                "ok"
            },
            counter(s, "records_written"),
            old.map_or(0.0, |o| rate(
                counter(o, "records_written"),
                counter(s, "records_written"),
                elapsed
            )),
            counter(s, "write_retries"),
            counter(s, "records_refused"),
        );
    }
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "{:<20} {:<18} {:<26} {:>8} {:>8}  LAST ERROR",
        "PLUGIN", "VERSION", "SINCE", "RELOADS", "REFUSED"
    );
    for p in &after.plugins {
        let last_error = p["last_error"]["error"].as_str().map_or_else(
            || "-".to_string(),
            |r| r.lines().next().unwrap_or("").to_string(),
        );
        let _ = writeln!(
            out,
            "{:<20} {:<18} {:<26} {:>8} {:>8}  {}",
            p["name"].as_str().unwrap_or("?"),
            p["version"].as_str().unwrap_or("?"),
            p["since"].as_str().unwrap_or("?"),
            p["reloads"].as_u64().unwrap_or(0),
            p["reload_failures"].as_u64().unwrap_or(0),
            last_error
        );
    }
    out
}

/// Checks that the daemon answering at `addr` is the one of the config file
/// `config` (`sluice top --config`: another daemon may hold the port, the
/// config's own then waiting for it). The same file, or one with the same
/// state folder `state_dir` (one daemon per state folder), is that daemon.
///
/// # Errors
/// The daemon cannot be reached, or it is another one (named by its pid,
/// config file and state folder).
pub fn check_identity(
    addr: &str,
    config: &std::path::Path,
    state_dir: &std::path::Path,
) -> anyhow::Result<()> {
    let (status, body) = get(addr, "/about")?;
    anyhow::ensure!(
        status == 200,
        "the admin API at {addr} does not say which daemon it is (GET /about: {status}): not this sluice's?"
    );
    let about: serde_json::Value = serde_json::from_str(&body)
        .map_err(|e| anyhow::anyhow!("GET http://{addr}/about: not JSON: {e}"))?;
    let path_of = |key: &str| std::path::PathBuf::from(about[key].as_str().unwrap_or_default());
    let same = |a: &std::path::Path, b: &std::path::Path| match (a.canonicalize(), b.canonicalize())
    {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    };
    let absolute = |p: &std::path::Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    let (their_config, their_state) = (path_of("config"), path_of("state_dir"));
    let ours = absolute(state_dir);
    anyhow::ensure!(
        same(&their_config, &absolute(config)) || same(&their_state, &ours),
        "the admin API at {addr} belongs to another daemon (pid {}, state folder {}, config {}), not the one of this config (state folder {}): was the port busy when it started? It tries it again every 2 s",
        about["pid"],
        their_state.display(),
        their_config.display(),
        ours.display()
    );
    Ok(())
}

/// Runs `sluice top`: with `once`, prints one view (rates over `interval`)
/// and returns; else redraws it every `interval` until interrupted.
///
/// # Errors
/// The daemon cannot be reached or answers unexpectedly.
pub fn run(addr: &str, interval: Duration, once: bool) -> anyhow::Result<()> {
    use std::io::IsTerminal as _;
    let mut before = sample(addr)?;
    let clear = !once && std::io::stdout().is_terminal();
    loop {
        std::thread::sleep(interval);
        let after = sample(addr)?;
        let view = render(addr, &before, &after);
        let mut stdout = std::io::stdout().lock();
        if clear {
            // Home and clear the screen: a full redraw, like top(1).
            write!(stdout, "\x1b[H\x1b[2J")?;
        }
        write!(stdout, "{view}")?;
        if !clear && !once {
            writeln!(stdout)?;
        }
        stdout.flush()?;
        if once {
            return Ok(());
        }
        before = after;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_from_two_samples() {
        assert_eq!(rate(100, 350, Duration::from_millis(500)), 500.0);
        assert_eq!(rate(100, 100, Duration::from_secs(1)), 0.0);
        // A restarted daemon's counters start again from 0.
        assert_eq!(rate(100, 5, Duration::from_secs(1)), 0.0);
        assert_eq!(rate(0, 5, Duration::ZERO), 0.0);
    }

    #[test]
    fn view_of_two_samples() {
        let at = Instant::now();
        let sample = |records_in: u64, at: Instant| Sample {
            at,
            ready: true,
            pipelines: vec![serde_json::json!({
                "pipeline": "p", "running": true, "records_in": records_in,
                "records_out": records_in / 2, "records_rejected": 1, "records_failed": 0,
                "skew": 1.25, "partition_records": [records_in / 4, records_in / 4 * 3]
            })],
            plugins: vec![serde_json::json!({
                "name": "identity", "version": "sha256:0123456789ab", "since": "2026-01-01T00:00:00Z",
                "reloads": 2, "reload_failures": 1,
                "last_error": { "error": "does not compile\nmore" }
            })],
            sinks: vec![serde_json::json!({
                "sink": "db", "records_written": records_in * 3, "write_retries": 4,
                "records_refused": 2, "blocked": true
            })],
        };
        let view = render(
            "127.0.0.1:9464",
            &sample(10, at),
            &sample(30, at + Duration::from_secs(2)),
        );
        let row: Vec<&str> = view
            .lines()
            .find(|l| l.starts_with("p "))
            .unwrap()
            .split_whitespace()
            .collect();
        assert_eq!(
            row,
            [
                "p", "running", "30", "15", "1", "0", "10.0", "5.0", "1.25", "-"
            ]
        );
        // The partitions' rows come after the pipelines': the second "p".
        let parts: Vec<&str> = view
            .lines()
            .filter(|l| l.starts_with("p "))
            .nth(1)
            .unwrap()
            .split_whitespace()
            .collect();
        assert_eq!(parts, ["p", "7", "21"], "{view}");
        let plugin: Vec<&str> = view
            .lines()
            .find(|l| l.starts_with("identity "))
            .unwrap()
            .split_whitespace()
            .collect();
        assert_eq!(
            plugin,
            [
                "identity",
                "sha256:0123456789ab",
                "2026-01-01T00:00:00Z",
                "2",
                "1",
                "does",
                "not",
                "compile"
            ]
        );
        let sink: Vec<&str> = view
            .lines()
            .find(|l| l.starts_with("db "))
            .unwrap()
            .split_whitespace()
            .collect();
        assert_eq!(sink, ["db", "blocked", "90", "30.0", "4", "2"]);
        assert!(view.starts_with("sluice at 127.0.0.1:9464: ready — 1 pipeline(s), 1 plugin(s)"));
    }
}
