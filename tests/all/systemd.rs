//! systemd's notification protocol, against a fake `NOTIFY_SOCKET`: READY=1
//! once the pipelines run, WATCHDOG=1 at half of WATCHDOG_USEC, RELOADING=1
//! (with MONOTONIC_USEC) then READY=1 around a SIGHUP reload, STOPPING=1 on
//! SIGTERM.

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use crate::support::*;

/// The next datagram whose text contains `what`; the ones before it are
/// returned too, in order.
fn until(socket: &UnixDatagram, what: &str) -> Vec<String> {
    let mut seen = Vec::new();
    let start = Instant::now();
    let mut buf = [0u8; 4096];
    while start.elapsed() < Duration::from_secs(30) {
        if let Ok(n) = socket.recv(&mut buf) {
            let text = String::from_utf8_lossy(&buf[..n]).into_owned();
            let found = text.contains(what);
            seen.push(text);
            if found {
                return seen;
            }
        }
    }
    panic!("no {what} from the daemon; got {seen:?}");
}

#[test]
fn the_service_manager_hears_ready_watchdog_reloading_and_stopping() {
    let scratch = Scratch::new(
        &Config::new()
            .file_source("in", "in.ndjson")
            .follow()
            .file_sink("out", "out.ndjson")
            .pipeline("p", "in", &["out"])
            .build(),
    );
    scratch.write("in.ndjson", "");
    let path = scratch.path("notify.sock");
    let socket = UnixDatagram::bind(&path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut command = scratch.command("run");
    command
        .env("NOTIFY_SOCKET", &path)
        .env("WATCHDOG_USEC", "200000")
        .env_remove("WATCHDOG_PID");
    let mut daemon = Running::start(command);
    daemon.wait_for("pipeline started");

    let first = until(&socket, "READY=1");
    assert_eq!(first.len(), 1, "READY=1 comes first: {first:?}");
    // Half of 200 ms: several watchdog pings in half a second.
    std::thread::sleep(Duration::from_millis(500));
    let pings = until(&socket, "WATCHDOG=1");
    assert!(pings.iter().all(|m| m == "WATCHDOG=1"), "{pings:?}");

    daemon.signal("HUP");
    let reload = until(&socket, "RELOADING=1");
    let msg = reload.last().unwrap();
    let usec = msg
        .lines()
        .find_map(|l| l.strip_prefix("MONOTONIC_USEC="))
        .unwrap_or_else(|| panic!("no MONOTONIC_USEC in {msg:?}"));
    assert!(usec.parse::<u64>().unwrap() > 0);
    until(&socket, "READY=1");
    daemon.wait_for("config reloaded");

    daemon.signal("TERM");
    until(&socket, "STOPPING=1");
    let output = daemon.finish();
    assert_exit(&output, 0);
}

/// `systemd-analyze verify` accepts the unit (with `ExecStart` pointed at the
/// binary under test; the tool checks that it exists and is executable) and
/// the book's drop-in (docs/operations/service.md).
#[test]
fn the_unit_file_verifies() {
    let unit = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../dist/systemd/sluice.service"),
    )
    .unwrap();
    assert!(unit.contains("ExecStart=/usr/bin/sluice run"));
    // `cargo xtask test` installs it (Debian package `systemd`); a bare machine may not have it.
    let Some(tool) = which("systemd-analyze") else {
        skip(
            "systemd::the_unit_file_verifies",
            "systemd-analyze not on PATH",
        );
        return;
    };
    let scratch = Scratch::new("");
    let path = scratch.path("sluice.service");
    std::fs::write(&path, unit.replace("/usr/bin/sluice", sluice_bin())).unwrap();
    // With the book's drop-in (docs/operations/service.md), which the tool
    // reads from sluice.service.d/ beside the unit.
    let page = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/operations/service.md"),
    )
    .unwrap();
    let drop_in = page
        .split("Grant access with a drop-in")
        .nth(1)
        .and_then(|rest| rest.split("```ini\n").nth(1))
        .and_then(|rest| rest.split("```").next())
        .expect("the book's drop-in");
    assert!(drop_in.contains("ReadWritePaths="), "{drop_in}");
    std::fs::create_dir(scratch.path("sluice.service.d")).unwrap();
    std::fs::write(scratch.path("sluice.service.d/override.conf"), drop_in).unwrap();
    let output = std::process::Command::new(tool)
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        output.status.success() && output.stderr.is_empty(),
        "systemd-analyze verify: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}
