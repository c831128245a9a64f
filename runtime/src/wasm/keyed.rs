//! The host side of the `keyed-processor` world (package
//! `sluice:plugin@0.2.0`, `wit/0.2.0/plugin.wit`): its bindings, the host
//! imports it adds (`host@0.2.0`, `tables@0.2.0`), and one call,
//! [`Instance::process_keyed`], on host-side types ([`KeyedCall`],
//! [`KeyedReturn`]) that the keyed stage ([`crate::pipeline::keyed`]) builds
//! and applies. The state and the timers themselves are the stage's.

use std::sync::Arc;

use sluice_plugin_sdk::Batch;
use wasmtime::component::{HasSelf, Linker};

use crate::wasm::plugin::{CallError, Instance, StoreState};

/// The host's bindings of the `keyed-processor` world.
pub(crate) mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit/0.2.0",
        world: "keyed-processor",
    });
}

use bindings::sluice::plugin::{host, tables, types};
pub use bindings::{KeyedProcessor as KeyedBindings, KeyedProcessorPre};

/// What the `tables` import reads: the daemon's lookup tables by name
/// (`crate::table::TableSet` implements it; defined here so that this module
/// needs nothing of the tables').
pub trait TableLookup: Send + Sync {
    /// The row of `table` whose key is `key`, as a JSON object's text;
    /// `None` when the table has no such key.
    ///
    /// # Errors
    /// No table of that name; the message names the ones there are.
    fn lookup(&self, table: &str, key: &str) -> Result<Option<String>, String>;
}

/// Adds the imports of package 0.2.0 (`host`, `tables`) to `linker`, beside
/// 0.1.0's: a component built against either resolves.
///
/// # Errors
/// wasmtime refuses a definition (a name defined twice).
pub(crate) fn add_to_linker(linker: &mut Linker<StoreState>) -> anyhow::Result<()> {
    host::add_to_linker::<StoreState, HasSelf<StoreState>>(linker, |s| s)?;
    tables::add_to_linker::<StoreState, HasSelf<StoreState>>(linker, |s| s)?;
    Ok(())
}

crate::wasm::plugin::host_log!();

impl types::Host for StoreState {}

impl tables::Host for StoreState {
    fn lookup(&mut self, table: String, key: String) -> Result<Option<String>, String> {
        match &self.tables {
            Some(tables) => tables.lookup(&table, &key),
            None => Err(format!("no table `{table}` (the daemon's tables: none)")),
        }
    }
}

/// The clock a timer follows (the WIT `time-domain`, Flink's `TimeDomain`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TimeDomain {
    /// Fires when the partition's watermark reaches the timer's time.
    EventTime,
    /// Fires when the wall clock reaches it.
    ProcessingTime,
}

/// A timer of one key of a call: `group` indexes the call's keys; `time` is
/// in ms since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallTimer {
    /// Index of the key in [`KeyedCall::keys`].
    pub group: u32,
    /// Its clock.
    pub domain: TimeDomain,
    /// When it fires (ms since the Unix epoch).
    pub time: i64,
}

/// A timer set or deleted by a call, in the order the guest made them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimerChange {
    /// Registers the timer.
    Set(CallTimer),
    /// Deletes it.
    Delete(CallTimer),
}

/// One `process-keyed` call's input (the WIT `keyed-input`, host side).
#[derive(Debug, Default)]
pub struct KeyedCall {
    /// The keys the call touches, each once.
    pub keys: Vec<Vec<u8>>,
    /// `states[g]`: the state of `keys[g]`, `None` when it has none.
    pub states: Vec<Option<Vec<u8>>>,
    /// The events (empty when `fired` is not).
    pub events: Batch,
    /// Event `i` belongs to `keys[groups[i]]`.
    pub groups: Vec<u32>,
    /// Timers that fired, in time order.
    pub fired: Vec<CallTimer>,
    /// The partition's watermark (ms; `i64::MIN` before any event).
    pub watermark: i64,
    /// The wall clock (ms since the Unix epoch).
    pub now: i64,
}

/// What a successful call returned, checked (the WIT `keyed-output`).
#[derive(Debug, Default)]
pub struct KeyedReturn {
    /// Records passed on.
    pub events: Batch,
    /// (index in the call's events, reason) of refused events; each once.
    pub rejected: Vec<(u32, String)>,
    /// (group, new state; `None` deletes it).
    pub updates: Vec<(u32, Option<Vec<u8>>)>,
    /// Timer changes, in order.
    pub timers: Vec<TimerChange>,
}

fn domain_to_wit(d: TimeDomain) -> types::TimeDomain {
    match d {
        TimeDomain::EventTime => types::TimeDomain::EventTime,
        TimeDomain::ProcessingTime => types::TimeDomain::ProcessingTime,
    }
}

fn timer_from_wit(t: types::Timer) -> CallTimer {
    CallTimer {
        group: t.group,
        domain: match t.domain {
            types::TimeDomain::EventTime => TimeDomain::EventTime,
            types::TimeDomain::ProcessingTime => TimeDomain::ProcessingTime,
        },
        time: t.time,
    }
}

crate::wasm::plugin::batch_conversions!();

/// Checks what a keyed processor returned for a call of `events` events and
/// `groups` keys: the output batch's columns agree, every rejection names an
/// input event (one refused twice keeps its first reason), every update and
/// timer names a key of the call.
///
/// # Errors
/// [`CallError::Malformed`], saying what is wrong.
fn check_keyed_output(
    events: u32,
    groups: u32,
    out: types::KeyedOutput,
) -> Result<KeyedReturn, CallError> {
    let batch = from_wit(out.events).map_err(CallError::Malformed)?;
    let mut seen = vec![
        false;
        if out.rejected.is_empty() {
            0
        } else {
            events as usize
        }
    ];
    let mut rejected = Vec::with_capacity(out.rejected.len());
    for r in out.rejected {
        if r.index >= events {
            return Err(CallError::Malformed(format!(
                "rejection of event {} in a call of {events}",
                r.index
            )));
        }
        if !std::mem::replace(&mut seen[r.index as usize], true) {
            rejected.push((r.index, r.reason));
        }
    }
    let group = |g: u32, what: &str| {
        if g < groups {
            Ok(g)
        } else {
            Err(CallError::Malformed(format!(
                "{what} of key {g} in a call of {groups} key(s)"
            )))
        }
    };
    let updates = out
        .updates
        .into_iter()
        .map(|u| Ok((group(u.group, "state update")?, u.value)))
        .collect::<Result<Vec<_>, CallError>>()?;
    let timers = out
        .timers
        .into_iter()
        .map(|c| {
            Ok(match c {
                types::TimerChange::Set(t) => {
                    group(t.group, "timer")?;
                    TimerChange::Set(timer_from_wit(t))
                }
                types::TimerChange::Delete(t) => {
                    group(t.group, "timer")?;
                    TimerChange::Delete(timer_from_wit(t))
                }
            })
        })
        .collect::<Result<Vec<_>, CallError>>()?;
    Ok(KeyedReturn {
        events: batch,
        rejected,
        updates,
        timers,
    })
}

impl Instance {
    /// Calls `process-keyed` with `call`, under the deadline and the memory
    /// limit, and checks what comes back. The call's columns are moved into
    /// the guest's input; its `keys` are given back (the caller applies the
    /// returned changes to them), the rest is left empty.
    ///
    /// # Errors
    /// See [`CallError`]; an instance of another world gives
    /// [`CallError::Malformed`].
    pub fn process_keyed(&mut self, call: &mut KeyedCall) -> Result<KeyedReturn, CallError> {
        let events = call.groups.len() as u32;
        let groups = call.keys.len() as u32;
        let input = types::KeyedInput {
            keys: std::mem::take(&mut call.keys),
            states: std::mem::take(&mut call.states),
            events: to_wit(std::mem::take(&mut call.events)),
            groups: std::mem::take(&mut call.groups),
            fired: call
                .fired
                .iter()
                .map(|t| types::Timer {
                    group: t.group,
                    domain: domain_to_wit(t.domain),
                    time: t.time,
                })
                .collect(),
            watermark: call.watermark,
            now: call.now,
        };
        let out = self.keyed_call(|b, s| b.call_process_keyed(s, &input));
        call.keys = input.keys;
        check_keyed_output(events, groups, out?)
    }

    /// Gives this instance's `tables` import the daemon's tables.
    pub fn set_tables(&mut self, tables: Arc<dyn TableLookup>) {
        self.store_mut().data_mut().tables = Some(tables);
    }
}
