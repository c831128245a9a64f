//! The config file: parsed and built into a topology as `sluice validate`
//! does (no plugin is loaded: see the crate's doc). Any text gets a located
//! error or a topology, never a panic.

#![no_main]

sluice_fuzz::fuzz_target!(|data| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let source = sluice_fuzz::config_source(text);
    match sluice_fuzz::build(&source) {
        Ok(topology) => {
            sluice_fuzz::debug(format_args!("ok: {} pipeline(s)", topology.pipelines.len()));
            for p in &topology.pipelines {
                let _ = p.checkpoint_shape();
                let _ = p.source.identity();
            }
        }
        Err(e) => {
            sluice_fuzz::debug(&e);
            assert!(!e.is_empty());
        }
    }
});
