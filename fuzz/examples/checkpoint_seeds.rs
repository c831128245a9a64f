//! Writes the seeds of the `checkpoint` and `checkpoint_store` targets into
//! the corpus folder given (fuzz/corpus/): for each pipeline of
//! `sluice_fuzz::windowed`, a real checkpoint — the windows the operator
//! holds after two batches, saved at a stop barrier — as its row
//! (`checkpoint/`, after the byte that picks the pipeline) and, for two of
//! them, as the whole store file (`checkpoint_store/`). Run again when the
//! checkpoint's layout changes: `cargo xtask fuzz --checkpoint-seeds`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use sluice::checkpoint::{
    Ack, Barrier, BarrierKind, Checkpoint, FilePosition, Position, STORE_FILE, Store,
};
use sluice::window::operator::{WindowInput, WindowMsg};
use sluice_plugin_sdk::Batch;

fn main() {
    let corpus = PathBuf::from(std::env::args().nth(1).expect("the corpus folder"));
    let (rows, stores) = (corpus.join("checkpoint"), corpus.join("checkpoint_store"));
    for dir in [&rows, &stores] {
        std::fs::create_dir_all(dir).expect("a seed folder");
    }
    for (index, pipeline) in sluice_fuzz::windowed().iter().enumerate() {
        let spec = pipeline.window.as_ref().expect("a windowed pipeline");
        let (ack, acks) = flume::unbounded();
        let mut inputs = Vec::new();
        for partition in 0..2 {
            let mut batch = Batch::new();
            // One key, within one minute: a few windows, one sketch.
            for i in 0..3i64 {
                let value = serde_json::json!({
                    "v": i * 7 - 10 + partition as i64,
                    "s": format!("s{}", i % 2),
                    "g": i % 2,
                    "h": [i == 0],
                });
                batch.push(
                    Some(b"k"),
                    value.to_string().as_bytes(),
                    1_700_000_000_000 + i * 12_000 + partition as i64 * 5_000,
                );
            }
            let max_input_ts = batch.iter().map(|e| e.timestamp_ms()).max();
            let (events, values, _) = spec.prepare(batch);
            inputs.push(WindowMsg::Batch(WindowInput {
                partition,
                task: None,
                max_input_ts,
                events,
                values,
            }));
        }
        for _ in 0..2 {
            inputs.push(WindowMsg::Barrier(Barrier {
                id: 7,
                kind: BarrierKind::Stop,
                ack: ack.clone(),
            }));
        }
        sluice_fuzz::run_window(spec, inputs, None).expect("the operator runs");
        let Ok(Ack::Window(mut snapshots)) = acks.try_recv() else {
            panic!("no window acknowledgement");
        };
        let checkpoint = Checkpoint {
            format: sluice::checkpoint::FORMAT,
            id: 7,
            shape: pipeline.checkpoint_shape(),
            taken_at_ms: 1_700_000_200_000,
            position: Position::File(FilePosition {
                path: sluice_fuzz::files().join(format!("{}.ndjson", pipeline.name)),
                inode: 1234,
                offset: 4096,
                fingerprint: Some(0xcbf2_9ce4_8422_2325),
            }),
            sinks: BTreeMap::from([("out".to_string(), 1000)]),
            exclusive: Default::default(),
            window: snapshots.remove(&0),
            tasks: BTreeMap::new(),
            finished: false,
            stopped: true,
        };
        assert!(checkpoint.window.is_some(), "a window snapshot");
        let row = serde_json::to_vec(&checkpoint).expect("JSON");
        let selector = u8::try_from(index).expect("few pipelines");
        std::fs::write(rows.join(&pipeline.name), [&[selector][..], &row].concat())
            .expect("a seed");
        eprintln!("{}: row {} bytes", pipeline.name, row.len());
        if pipeline.name == "sliding" {
            // Store files are 72 KiB at least: two are enough.
            continue;
        }

        let state = std::env::temp_dir().join(format!("sluice-seeds-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&state);
        let store = Store::open(&state).expect("a store");
        store.save(&pipeline.name, &checkpoint).expect("saved");
        drop(store);
        let file = std::fs::read(state.join(STORE_FILE)).expect("the store file");
        eprintln!("{}: store file {} bytes", pipeline.name, file.len());
        std::fs::write(stores.join(&pipeline.name), file).expect("a seed");
        let _ = std::fs::remove_dir_all(&state);
    }
}
