//! The config file: its `${NAME}`s interpolated, parsed and built into a topology as `sluice validate`
//! does (no plugin is loaded: see the crate's doc). Any text gets a located
//! error or a topology, never a panic.

#![no_main]

sluice_fuzz::fuzz_target!(|data| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // `${NAME}` interpolation first, as `Config::load` does, against an
    // environment where names of even length are set: it keeps every line
    // where it was, or fails at a place in the text.
    let text = match sluice::config::interpolate(text, |name| {
        (name.len() % 2 == 0).then(|| std::ffi::OsString::from("v$"))
    }) {
        Ok(out) => {
            assert_eq!(out.matches('\n').count(), text.matches('\n').count());
            out
        }
        Err((at, message)) => {
            assert!(at < text.len() && text[at..].starts_with("${") && !message.is_empty());
            return;
        }
    };
    let source = sluice_fuzz::config_source(&text);
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
