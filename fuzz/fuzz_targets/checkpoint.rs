//! The checkpoint store's reader, on a corrupted row: the JSON a restarted
//! daemon reads for a pipeline from `STATE_DIR/checkpoints.redb`
//! (`checkpoint::Store::load`, `PipelineSpec::load_checkpoint`'s checks),
//! then the window state it resumes from, restored into the window operator
//! and emitted. (`checkpoint_store` corrupts the file itself.)
//!
//! The input's first byte picks the pipeline (see `sluice_fuzz::windowed`);
//! the rest is its row, stored in a sound store file.

#![no_main]

sluice_fuzz::fuzz_target!(|data| {
    let Some((&selector, row)) = data.split_first() else {
        return;
    };
    let pipelines = sluice_fuzz::windowed();
    let name = &pipelines[usize::from(selector) % pipelines.len()].name;
    let state = sluice_fuzz::state_dir();
    sluice_fuzz::write_store_row(&state, name, row);
    sluice_fuzz::resume_from(&state);
});
