//! `sluice top --once` against a real daemon: the figures of a known input and
//! the running plugin version, read from the admin API.

use std::process::Command;

use crate::support::*;

#[test]
fn top_once_shows_pipelines_and_plugins() {
    const LINES: usize = 25;
    let scratch = Scratch::new(
        &identity_following_with_admin()
            .partitions(2)
            .set("partition_by", "\"balance\"")
            .build(),
    );
    let lines: String = (0..LINES).map(|n| format!("{{\"n\":{n}}}\n")).collect();
    scratch.write("in.ndjson", &lines);
    let mut daemon = Running::start(scratch.command("run"));
    let admin = daemon.admin_addr();
    scratch.wait_for_lines("out.ndjson", LINES);
    daemon.wait_for("pipeline started");

    let output = Command::new(sluice_bin())
        .args(["top", "--admin", &admin, "--once", "--interval", "100ms"])
        .output()
        .unwrap();
    assert_exit(&output, 0);
    let view = String::from_utf8(output.stdout).unwrap();
    assert!(
        view.starts_with(&format!(
            "sluice at {admin}: ready — 1 pipeline(s), 1 plugin(s)"
        )),
        "{view}"
    );
    // Nothing is fed between the two samples: both rates are 0.
    let row: Vec<&str> = view
        .lines()
        .find(|l| l.starts_with("p "))
        .unwrap_or_else(|| panic!("no pipeline row in:\n{view}"))
        .split_whitespace()
        .collect();
    let lines = LINES.to_string();
    // Balanced, records go round-robin over the 2 partitions: the busiest
    // has ceil(25 / 2) = 13 records, over a mean of 12.5.
    let skew = format!("{:.2}", LINES.div_ceil(2) as f64 / (LINES as f64 / 2.0));
    assert_eq!(
        row,
        [
            "p", "running", &lines, &lines, "0", "0", "0.0", "0.0", &skew, "-"
        ],
        "{view}"
    );
    // The records each partition took: the pipeline's second row.
    let mut parts: Vec<usize> = view
        .lines()
        .filter(|l| l.starts_with("p "))
        .nth(1)
        .unwrap_or_else(|| panic!("no partitions row in:\n{view}"))
        .split_whitespace()
        .skip(1)
        .map(|n| n.parse().unwrap())
        .collect();
    parts.sort_unstable();
    assert_eq!(parts, [LINES / 2, LINES.div_ceil(2)], "{view}");
    let sink: Vec<&str> = view
        .lines()
        .find(|l| l.starts_with("out "))
        .unwrap_or_else(|| panic!("no sink row in:\n{view}"))
        .split_whitespace()
        .collect();
    assert_eq!(sink, ["out", "ok", &lines, "0.0", "0", "0"], "{view}");
    let version = sluice::wasm::plugin::content_version(
        &std::fs::read(plugins_dir().join("identity.wasm")).unwrap(),
    );
    let plugin: Vec<&str> = view
        .lines()
        .find(|l| l.starts_with("identity "))
        .unwrap_or_else(|| panic!("no plugin row in:\n{view}"))
        .split_whitespace()
        .collect();
    assert_eq!(plugin[1], version);
    assert_eq!(&plugin[3..], ["0", "0", "-"]);
    // No colour or screen control when stdout is not a terminal.
    assert!(!view.contains('\u{1b}'));

    daemon.signal("TERM");
    assert_exit(&daemon.finish(), 0);
}

#[test]
fn top_without_a_daemon_exits_1() {
    // A port nothing listens on: bound, then released.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let output = Command::new(sluice_bin())
        .args(["top", "--admin", &format!("127.0.0.1:{port}"), "--once"])
        .output()
        .unwrap();
    assert_exit(&output, 1);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("cannot reach the admin API at 127.0.0.1:"),
        "{stderr}"
    );
}

/// `sluice top --config F` talks only to F's daemon: when another daemon holds
/// the admin port (F's then waits for it), top says whose it is and exits 1
/// instead of showing the other daemon's figures.
#[test]
fn top_refuses_to_show_another_daemons_figures() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = identity_following_with_admin()
        .daemon("admin", format!("\"127.0.0.1:{port}\""))
        .build();
    let (first, second) = (Scratch::new(&config), Scratch::new(&config));
    for s in [&first, &second] {
        s.write("in.ndjson", "{\"n\":1}\n");
    }
    let mut a = Running::start(first.command("run"));
    assert_eq!(a.admin_addr(), format!("127.0.0.1:{port}"));
    let mut b = Running::start(second.command("run"));
    b.wait_for("admin API not listening");

    let top = |scratch: &Scratch| {
        Command::new(sluice_bin())
            .args(["top", "--once", "--interval", "100ms", "--config"])
            .arg(scratch.path("sluice.toml"))
            .output()
            .unwrap()
    };
    let output = top(&second);
    assert_exit(&output, 1);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!(
            "belongs to another daemon (pid {}, state folder {}, config {})",
            a.child.id(),
            first.path("state").canonicalize().unwrap().display(),
            first.path("sluice.toml").canonicalize().unwrap().display()
        )),
        "{stderr}"
    );
    assert!(output.stdout.is_empty());
    // Its own daemon's config: the view.
    let output = top(&first);
    assert_exit(&output, 0);
    assert!(
        String::from_utf8_lossy(&output.stdout).starts_with(&format!("sluice at 127.0.0.1:{port}")),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );
    drop(b);
}
