//! A deliberately misbehaving plugin, the sandbox's test fixture.
//!
//! `config.mode` picks the misbehaviour, applied to every batch that holds an
//! event whose payload contains `config.trigger` (default: every batch):
//! - `loop`: spins forever (the host's per-call deadline must cut it off);
//! - `alloc`: allocates `config.bytes` (default 1 GiB) and touches it (the memory
//!   limit must stop it);
//! - `panic`: panics (a trap);
//! - `fail`: returns an error for the batch;
//! - `reject`: rejects the matching events (each twice), forwards the others;
//! - `sleep`: sleeps 30 s (blocking in a host call, out of the deadline's reach
//!   unless the host refuses to block);
//! - `sandbox`: tries the file system, the environment and the clocks, and
//!   emits what it found as one JSON event per input event;
//! - `none`: forwards everything (the control).
//!
//! `config.configure = "fail"` makes `configure` itself fail. `config.reject`
//! (in any mode but `reject`) rejects the events whose payload contains it, in
//! the batches that do not misbehave: a plugin that refuses some records and
//! fails on others. With `config.also_forward = "true"`, those rejected events
//! are forwarded too (a plugin that emits a record and dead-letters its input).

use sluice_plugin_sdk::{Batch, Config, Output, Processor, export_processor, log};

/// The misbehaving processor.
pub struct Misbehave {
    mode: String,
    trigger: String,
    reject: String,
    also_forward: bool,
    bytes: usize,
}

impl Processor for Misbehave {
    fn configure(config: &Config) -> Result<Self, String> {
        if config.get("configure") == Some("fail") {
            return Err("configure refused on purpose".into());
        }
        let mode = config.get("mode").unwrap_or("none").to_string();
        if ![
            "loop", "alloc", "panic", "fail", "reject", "sleep", "sandbox", "none",
        ]
        .contains(&mode.as_str())
        {
            return Err(format!("unknown mode `{mode}`"));
        }
        log::info(&format!("misbehave configured: mode={mode}"));
        Ok(Misbehave {
            mode,
            trigger: config.get("trigger").unwrap_or("").to_string(),
            reject: config.get("reject").unwrap_or("").to_string(),
            also_forward: config.get("also_forward") == Some("true"),
            bytes: config.parse("bytes")?.unwrap_or(1 << 30),
        })
    }

    fn process(&mut self, batch: &Batch, out: &mut Output) -> Result<(), String> {
        let hits = |value: &[u8]| {
            self.trigger.is_empty()
                || value
                    .windows(self.trigger.len())
                    .any(|w| w == self.trigger.as_bytes())
        };
        let triggered = batch.iter().any(|e| hits(e.value()));
        if triggered {
            match self.mode.as_str() {
                "loop" => {
                    let mut n: u64 = 0;
                    loop {
                        n = std::hint::black_box(n.wrapping_add(1));
                    }
                }
                "alloc" => {
                    let mut v = vec![0u8; self.bytes];
                    for i in (0..v.len()).step_by(4096) {
                        v[i] = 1;
                    }
                    log::info(&format!(
                        "allocated {} bytes",
                        std::hint::black_box(v).len()
                    ));
                }
                "panic" => panic!("misbehave: panic on purpose"),
                "fail" => return Err("misbehave: batch failed on purpose".into()),
                "sleep" => std::thread::sleep(std::time::Duration::from_secs(30)),
                "sandbox" => {
                    let probe = serde_json::json!({
                        "read_file": std::fs::read_to_string("/etc/hostname").is_ok(),
                        "list_dir": std::fs::read_dir("/").is_ok(),
                        "env_vars": std::env::vars().count(),
                        "args": std::env::args().count(),
                        "wall_clock_ms": std::time::SystemTime::now()
                            .duration_since(std::time::UNIX_EPOCH)
                            .map(|d| d.as_millis() as u64)
                            .unwrap_or(u64::MAX),
                    });
                    for event in batch {
                        out.push_json(event.key(), &probe, event.timestamp_ms())?;
                    }
                    return Ok(());
                }
                _ => {}
            }
        }
        let refused = |value: &[u8]| {
            !self.reject.is_empty()
                && value
                    .windows(self.reject.len())
                    .any(|w| w == self.reject.as_bytes())
        };
        for event in batch {
            if self.mode == "reject" && hits(event.value()) {
                out.reject(&event, "misbehave: rejected on purpose");
                // Twice: the host must dead-letter it once, with the first reason.
                out.reject(&event, "misbehave: rejected again");
            } else if refused(event.value()) {
                out.reject(&event, "misbehave: rejected on purpose");
                if self.also_forward {
                    out.forward(&event);
                }
            } else {
                out.forward(&event);
            }
        }
        Ok(())
    }
}

export_processor!(Misbehave);
