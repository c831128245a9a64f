//! The Rust SDK's keyed glue (`export_keyed_processor!`) in a real component:
//! `target/plugins/plane_gaps.wasm` called through wasmtime's own bindings of
//! the `keyed-processor` world (`wit/0.2.0/plugin.wit`), without the daemon.
//! What a `process-keyed` call returns — events, their keys, state updates
//! and timer changes, in order — and how it fails.

use wasmtime::component::{Component, HasSelf, Linker, ResourceTable};
use wasmtime::{Engine, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::support::*;

mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit/0.2.0",
        world: "keyed-processor",
    });
}

use bindings::sluice::plugin::{host, tables, types};

struct State {
    wasi: WasiCtx,
    table: ResourceTable,
}

impl WasiView for State {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl host::Host for State {
    fn log(&mut self, _level: host::Level, _message: String) {}
}

impl tables::Host for State {
    fn lookup(&mut self, table: String, _key: String) -> Result<Option<String>, String> {
        Err(format!("no table {table}"))
    }
}

impl types::Host for State {}

const MIN: i64 = 60_000;
/// 2013-01-01T10:17:00Z.
const T0: i64 = 1_357_035_420_000;

/// plane_gaps, configured with `idle_minutes`.
fn plane_gaps(idle_minutes: &str) -> (Store<State>, bindings::KeyedProcessor, Result<(), String>) {
    let mut config = wasmtime::Config::new();
    config.wasm_component_model(true);
    let engine = Engine::new(&config).unwrap();
    let mut linker = Linker::<State>::new(&engine);
    wasmtime_wasi::p2::add_to_linker_sync(&mut linker).unwrap();
    bindings::KeyedProcessor::add_to_linker::<State, HasSelf<State>>(&mut linker, |s| s).unwrap();
    let component = Component::from_file(&engine, plugins_dir().join("plane_gaps.wasm")).unwrap();
    let mut store = Store::new(
        &engine,
        State {
            wasi: WasiCtx::builder().build(),
            table: ResourceTable::new(),
        },
    );
    let guest = bindings::KeyedProcessor::instantiate(&mut store, &component, &linker).unwrap();
    let configured = guest
        .call_configure(
            &mut store,
            &[("idle_minutes".to_string(), idle_minutes.to_string())],
        )
        .unwrap();
    (store, guest, configured)
}

fn flight(tailnum: &str, t: i64, cancelled: bool) -> String {
    format!(r#"{{"tailnum":"{tailnum}","event_time_ms":{t},"cancelled":{cancelled}}}"#)
}

/// A batch of (key, value, time).
fn batch(events: &[(&str, String, i64)]) -> types::EventBatch {
    let mut b = types::EventBatch {
        values: vec![],
        value_ends: vec![],
        keys: vec![],
        key_ends: vec![],
        timestamps: vec![],
        headers: vec![],
    };
    for (key, value, t) in events {
        b.values.extend_from_slice(value.as_bytes());
        b.value_ends.push(b.values.len() as u32);
        b.keys.extend_from_slice(key.as_bytes());
        b.key_ends.push(b.keys.len() as u32);
        b.timestamps.push(*t);
    }
    b
}

/// The (key, value, time) of each event of `b`.
fn events(b: &types::EventBatch) -> Vec<(String, String, i64)> {
    let (mut v0, mut k0) = (0, 0);
    (0..b.value_ends.len())
        .map(|i| {
            let (v1, k1) = (b.value_ends[i] as usize, b.key_ends[i] as usize);
            let e = (
                String::from_utf8(b.keys[k0..k1].to_vec()).unwrap(),
                String::from_utf8(b.values[v0..v1].to_vec()).unwrap(),
                b.timestamps[i],
            );
            (v0, k0) = (v1, k1);
            e
        })
        .collect()
}

fn timer(group: u32, time: i64) -> types::Timer {
    types::Timer {
        group,
        domain: types::TimeDomain::EventTime,
        time,
    }
}

fn input(
    keys: &[&str],
    states: Vec<Option<String>>,
    evs: &[(&str, String, i64)],
    groups: Vec<u32>,
    fired: Vec<types::Timer>,
) -> types::KeyedInput {
    types::KeyedInput {
        keys: keys.iter().map(|k| k.as_bytes().to_vec()).collect(),
        states: states
            .into_iter()
            .map(|s| s.map(String::into_bytes))
            .collect(),
        events: batch(evs),
        groups,
        fired,
        watermark: T0,
        now: T0,
    }
}

#[test]
fn a_call_returns_events_state_updates_and_timer_changes_in_order() {
    let (mut store, guest, configured) = plane_gaps("60");
    configured.unwrap();
    let prev = T0 - 30 * MIN;
    let evs = [
        ("N1", flight("N1", T0, false), T0),
        ("N2", flight("N2", T0 + 5 * MIN, false), T0 + 5 * MIN),
        ("N2", flight("N2", T0 + 6 * MIN, true), T0 + 6 * MIN),
    ];
    let out = guest
        .call_process_keyed(
            &mut store,
            &input(
                &["N1", "N2"],
                vec![Some(format!(r#"{{"last_ms":{prev}}}"#)), None],
                &evs,
                vec![0, 1, 1],
                vec![],
            ),
        )
        .unwrap()
        .unwrap();
    let with = |e: &(&str, String, i64), m: &str| {
        (
            e.0.to_string(),
            format!("{},\"minutes_since_prev\":{m}}}", &e.1[..e.1.len() - 1]),
            e.2,
        )
    };
    assert_eq!(
        events(&out.events),
        [
            with(&evs[0], "30"),
            with(&evs[1], "null"),
            (evs[2].0.to_string(), evs[2].1.clone(), evs[2].2),
        ]
    );
    assert!(out.rejected.is_empty());
    let updates: Vec<(u32, Option<String>)> = out
        .updates
        .iter()
        .map(|u| {
            (
                u.group,
                u.value.clone().map(|v| String::from_utf8(v).unwrap()),
            )
        })
        .collect();
    assert_eq!(
        updates,
        [
            (0, Some(format!(r#"{{"last_ms":{T0}}}"#))),
            (1, Some(format!(r#"{{"last_ms":{}}}"#, T0 + 5 * MIN))),
        ]
    );
    let timers: Vec<(bool, u32, i64)> = out
        .timers
        .iter()
        .map(|c| match c {
            types::TimerChange::Set(t) => (true, t.group, t.time),
            types::TimerChange::Delete(t) => (false, t.group, t.time),
        })
        .collect();
    assert!(out.timers.iter().all(|c| matches!(
        c,
        types::TimerChange::Set(t) | types::TimerChange::Delete(t)
            if t.domain == types::TimeDomain::EventTime
    )));
    assert_eq!(
        timers,
        [
            (false, 0, prev + 60 * MIN),
            (true, 0, T0 + 60 * MIN),
            (true, 1, T0 + 65 * MIN),
        ]
    );
}

#[test]
fn a_fired_timer_emits_with_its_key_and_keeps_the_state() {
    let (mut store, guest, configured) = plane_gaps("60");
    configured.unwrap();
    let out = guest
        .call_process_keyed(
            &mut store,
            &input(
                &["N2"],
                vec![Some(format!(r#"{{"last_ms":{T0}}}"#))],
                &[],
                vec![],
                vec![timer(0, T0 + 60 * MIN)],
            ),
        )
        .unwrap()
        .unwrap();
    let at = T0 + 60 * MIN;
    assert_eq!(
        events(&out.events),
        [(
            "N2".to_string(),
            format!(
                r#"{{"event":"idle","tailnum":"N2","last_departure_ms":{T0},"idle_at_ms":{at}}}"#
            ),
            at
        )]
    );
    assert!(out.updates.is_empty() && out.timers.is_empty());
}

#[test]
fn failures_are_errors_with_the_reason() {
    let (_, _, configured) = plane_gaps("soon");
    let err = configured.unwrap_err();
    assert!(err.starts_with("config `idle_minutes`: "), "{err}");

    let (mut store, guest, configured) = plane_gaps("60");
    configured.unwrap();
    // A state of another shape (an incompatible version's).
    let err = guest
        .call_process_keyed(
            &mut store,
            &input(
                &["N1"],
                vec![Some(r#"{"last":"yesterday"}"#.to_string())],
                &[("N1", flight("N1", T0, false), T0)],
                vec![0],
                vec![],
            ),
        )
        .unwrap()
        .unwrap_err();
    assert!(
        err.starts_with("the state of key \"N1\" does not decode as this plugin's state"),
        "{err}"
    );
    // A value that is not an object: rejected, nothing else.
    let out = guest
        .call_process_keyed(
            &mut store,
            &input(
                &["N1"],
                vec![None],
                &[("N1", "[1]".to_string(), T0)],
                vec![0],
                vec![],
            ),
        )
        .unwrap()
        .unwrap();
    assert_eq!(out.rejected.len(), 1);
    assert_eq!(out.rejected[0].reason, "not a JSON object");
    assert!(out.updates.is_empty() && out.timers.is_empty() && out.events.value_ends.is_empty());
}
