//! systemd's notification protocol (`sd_notify(3)`): the daemon tells the
//! service manager when it is ready, reloading, stopping, and that it is alive.
//!
//! When `NOTIFY_SOCKET` is set (a `Type=notify` unit), each state is one
//! datagram to that socket (a path, or an abstract name written `@name`):
//! - `READY=1` once every pipeline runs, and again after a reload;
//! - `RELOADING=1` with `MONOTONIC_USEC=` (CLOCK_MONOTONIC, µs) when a reload
//!   starts (as `Type=notify-reload` requires);
//! - `STOPPING=1` when a shutdown starts;
//! - `WATCHDOG=1` every half of `WATCHDOG_USEC`, when set for this process
//!   (`WATCHDOG_PID` absent or ours).
//!
//! Without `NOTIFY_SOCKET`, nothing is sent. Send errors are logged once and
//! otherwise ignored: the service manager's absence must not stop the daemon.

use std::os::unix::net::UnixDatagram;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// A connection to the service manager's notification socket.
#[derive(Debug)]
pub struct Notifier {
    target: Option<(UnixDatagram, std::os::unix::net::SocketAddr)>,
    warned: AtomicBool,
}

impl Notifier {
    /// From `NOTIFY_SOCKET`; a no-op notifier when it is unset or unusable.
    pub fn from_env() -> Self {
        let target = std::env::var_os("NOTIFY_SOCKET").and_then(|path| {
            let path = path.to_string_lossy().into_owned();
            let addr = if let Some(name) = path.strip_prefix('@') {
                use std::os::linux::net::SocketAddrExt as _;
                std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).ok()?
            } else {
                std::os::unix::net::SocketAddr::from_pathname(&path).ok()?
            };
            let socket = UnixDatagram::unbound().ok()?;
            Some((socket, addr))
        });
        Notifier {
            target,
            warned: AtomicBool::new(false),
        }
    }

    /// Whether a service manager listens.
    pub fn enabled(&self) -> bool {
        self.target.is_some()
    }

    /// Sends `state` (lines of `KEY=VALUE`).
    pub fn notify(&self, state: &str) {
        let Some((socket, addr)) = &self.target else {
            return;
        };
        if let Err(e) = socket.send_to_addr(state.as_bytes(), addr)
            && !self.warned.swap(true, Ordering::Relaxed)
        {
            tracing::warn!("cannot notify the service manager (NOTIFY_SOCKET): {e}");
        }
    }

    /// `READY=1`, with a status line.
    pub fn ready(&self, status: &str) {
        self.notify(&format!("READY=1\nSTATUS={status}"));
    }

    /// `RELOADING=1` with the monotonic time, as `Type=notify-reload` wants.
    pub fn reloading(&self) {
        let now = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
        let usec = now.tv_sec as u64 * 1_000_000 + now.tv_nsec as u64 / 1_000;
        self.notify(&format!(
            "RELOADING=1\nMONOTONIC_USEC={usec}\nSTATUS=reloading the config"
        ));
    }

    /// `STOPPING=1`.
    pub fn stopping(&self) {
        self.notify("STOPPING=1\nSTATUS=draining");
    }

    /// How often to send `WATCHDOG=1`: half of `WATCHDOG_USEC`, when the
    /// watchdog is on for this process.
    pub fn watchdog_interval() -> Option<Duration> {
        let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
        if let Some(pid) = std::env::var("WATCHDOG_PID").ok()
            && pid.parse::<u32>().ok() != Some(std::process::id())
        {
            return None;
        }
        (usec > 0).then(|| Duration::from_micros(usec / 2))
    }
}
