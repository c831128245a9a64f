//! The checkpoint store's reader, on a corrupted file: the input is the whole
//! of `STATE_DIR/checkpoints.redb` (redb's pages), read as a restarted
//! daemon reads it (`checkpoint::Store`: open, list, load, and
//! `PipelineSpec::load_checkpoint`'s checks), then the window state of each
//! checkpoint found, restored into the window operator and emitted.

#![no_main]

sluice_fuzz::fuzz_target!(|data| {
    let state = sluice_fuzz::state_dir();
    std::fs::write(state.join(sluice::checkpoint::STORE_FILE), data).expect("the store file");
    sluice_fuzz::resume_from(&state);
});
