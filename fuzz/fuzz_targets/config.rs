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
    // where it was, or fails at a place in the text; the build's errors are
    // then placed in the text as written.
    let source = match sluice::config::ConfigSource::interpolated(
        sluice_fuzz::config_source("").file,
        text.to_string(),
        |name| (name.len() % 2 == 0).then(|| std::ffi::OsString::from("v$")),
    ) {
        Ok(source) => {
            assert_eq!(
                source.text.matches('\n').count(),
                text.matches('\n').count()
            );
            source
        }
        Err(e) => {
            assert!(e.line >= 1 && !e.message.is_empty(), "{e}");
            return;
        }
    };
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
