//! The host side of the `processor` world of package `sluice:plugin@0.3.0`
//! (`wit/0.3.0/plugin.wit`): its bindings, the `host@0.3.0` import, and the
//! batch conversions that hand the guest the members the host's JSON decoder
//! found in each event ([`crate::decode::scan::scan_indexed`]), so that the
//! guest's `Event::fields` reads them instead of scanning the event a second
//! time.
//!
//! Trust runs one way: the guest may rely on the members of its input (the
//! host's decoder validated those events), the host never relies on members a
//! guest returns: they are dropped from every output.

use sluice_plugin_sdk::Batch;
use wasmtime::Store;
use wasmtime::component::{HasSelf, Linker};

use crate::wasm::plugin::{CallError, Processed, StoreState};

/// The host's bindings of package 0.3.0's `processor` world.
pub(crate) mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit/0.3.0",
        world: "processor",
    });
}

use bindings::sluice::plugin::{host, types};
pub use bindings::{Processor as IndexedBindings, ProcessorPre as IndexedProcessorPre};

/// Adds the imports of package 0.3.0 (`host`) to `linker`, beside 0.1.0's
/// and 0.2.0's: a component built against any of them resolves.
///
/// # Errors
/// wasmtime refuses a definition (a name defined twice).
pub(crate) fn add_to_linker(linker: &mut Linker<StoreState>) -> anyhow::Result<()> {
    host::add_to_linker::<StoreState, HasSelf<StoreState>>(linker, |s| s)?;
    Ok(())
}

crate::wasm::plugin::host_log!();

impl types::Host for StoreState {}

/// A batch as the 0.3.0 record, by moving its columns, members included.
fn to_wit(batch: Batch) -> types::EventBatch {
    let parts = batch.into_parts();
    types::EventBatch {
        values: parts.values,
        value_ends: parts.value_ends,
        keys: parts.keys,
        key_ends: parts.key_ends,
        timestamps: parts.timestamps,
        headers: parts
            .headers
            .into_iter()
            .map(|(index, name, value)| types::Header { index, name, value })
            .collect(),
        members: parts.members,
        member_ends: parts.member_ends,
    }
}

/// A 0.3.0 record back as a [`Batch`], checking its columns agree;
/// `members` says whether its members are kept (the host's own batch given
/// back) or dropped (a guest's output).
fn from_wit(batch: types::EventBatch, members: bool) -> Result<Batch, String> {
    let (members, member_ends) = if members {
        (batch.members, batch.member_ends)
    } else {
        (Vec::new(), Vec::new())
    };
    Batch::from_parts(sluice_plugin_sdk::BatchParts {
        values: batch.values,
        value_ends: batch.value_ends,
        keys: batch.keys,
        key_ends: batch.key_ends,
        timestamps: batch.timestamps,
        headers: batch
            .headers
            .into_iter()
            .map(|h| (h.index, h.name, h.value))
            .collect(),
        members,
        member_ends,
    })
}

/// Calls `process(batch)` on a 0.3.0 processor: `batch` is lowered with its
/// members and given back to the caller afterwards (moves, no copy); the
/// output is checked as [`crate::wasm::plugin::Instance::process`] checks a
/// 0.1.0 one, its members dropped.
pub(crate) fn process(
    bindings: &IndexedBindings,
    store: &mut Store<StoreState>,
    batch: &mut Batch,
) -> wasmtime::Result<Result<Result<Processed, CallError>, String>> {
    let input = to_wit(std::mem::take(batch));
    let result = bindings.call_process(&mut *store, &input);
    let n = input.value_ends.len() as u32;
    *batch = from_wit(input, true).expect("the host's own batch is well-formed");
    Ok(result?.map(|output| {
        crate::wasm::plugin::checked_output(
            n,
            from_wit(output.events, false),
            output.rejected.into_iter().map(|r| (r.index, r.reason)),
        )
    }))
}
