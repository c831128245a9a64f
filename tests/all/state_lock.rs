//! One daemon per state folder (`runtime/src/state_lock.rs`): a second
//! `sluice run` on the same `state_dir` refuses to start and names the first
//! one's pid; the lock goes with the process, even on `kill -9`.

use std::time::{Duration, Instant};

use crate::support::*;

/// Waits (up to 60 s) for `daemon` to exit by itself; kills it and fails
/// the test if it does not.
fn exits_by_itself(mut daemon: Running) -> std::process::Output {
    let start = Instant::now();
    while daemon.child.try_wait().unwrap().is_none() {
        if start.elapsed() > Duration::from_secs(60) {
            let _ = daemon.child.kill();
            let output = daemon.finish();
            panic!(
                "the second daemon kept running; its log:\n{}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    daemon.finish()
}

#[test]
fn a_second_daemon_on_the_same_state_dir_refuses_to_start() {
    let scratch = Scratch::new(&identity_following_with_admin().build());
    let input: Vec<String> = (0..100).map(|i| format!("{{\"n\":{i}}}")).collect();
    scratch.write("in.ndjson", &(input.join("\n") + "\n"));
    let mut first = Running::start(scratch.command("run"));
    first.wait_for("pipeline started");
    scratch.wait_for_lines("out.ndjson", 100);
    let status = std::fs::read(scratch.path("state/status.json")).unwrap();

    let second = exits_by_itself(Running::start(scratch.command("run")));
    assert_exit(&second, 1);
    let stderr = String::from_utf8_lossy(&second.stderr);
    let state = std::fs::canonicalize(scratch.path("state")).unwrap();
    assert!(
        stderr.contains(&format!(
            "error: another sluice (pid {}) runs with the state folder {}",
            first.child.id(),
            state.display()
        )),
        "{stderr}"
    );
    assert!(!stderr.contains("pipeline started"), "{stderr}");
    // Nothing read twice, nothing overwritten.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(scratch.read_lines("out.ndjson"), input);
    assert_eq!(
        std::fs::read(scratch.path("state/status.json")).unwrap(),
        status
    );

    // The first one still works: a line appended now goes through it alone.
    scratch.append_lines("in.ndjson", &["{\"n\":100}".to_string()]);
    scratch.wait_for_lines("out.ndjson", 101);

    // Killed hard, it leaves its pid in the lock file but no lock: the next
    // daemon starts (no checkpoints: it reads the input again).
    first.signal("KILL");
    let killed = first.finish();
    assert_eq!(killed.status.code(), None, "killed by a signal");
    let mut third = Running::start(scratch.command("run"));
    third.wait_for("pipeline started");
    scratch.wait_for_lines("out.ndjson", 101 + 101);
    assert_eq!(
        std::fs::read_to_string(scratch.path("state/sluice.lock")).unwrap(),
        format!("{}\n", third.child.id())
    );
    third.signal("TERM");
    let output = third.finish();
    assert_exit(&output, 0);
    assert_eq!(count(&output, "p", "in"), 101);
}
