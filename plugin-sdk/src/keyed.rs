//! Keyed processing with host-owned state and timers: the component's
//! `keyed-processor` world (`wit/0.2.0/plugin.wit`).
//!
//! A [`KeyedProcessor`] sees one event at a time with the state of the
//! event's key, and sets timers per key that call it back
//! ([`on_timer`](KeyedProcessor::on_timer)) when the key's partition
//! watermark (event time) or the host's clock (processing time) reaches
//! them: Flink's `KeyedProcessFunction` with its `TimerService`, Spark's
//! `transformWithState`. The host owns every key's state, as the bytes
//! serde_json makes of [`KeyedProcessor::State`], and checkpoints it with
//! the source position: an instance recycle, a hot swap or a restart loses
//! nothing, and `self` is only for settings (and caches).
//!
//! ```
//! use serde::{Deserialize, Serialize};
//! use sluice_plugin_sdk::{
//!     Config, Event, KeyedContext, KeyedHarness, KeyedProcessor, Output, Timer,
//!     export_keyed_processor,
//! };
//!
//! /// Counts each key's events and adds `"seen": n`; says `{"quiet":…}` once a
//! /// key has had no event for a minute of event time.
//! struct Seen;
//!
//! #[derive(Serialize, Deserialize)]
//! struct Count {
//!     n: u64,
//!     last_ms: i64,
//! }
//!
//! impl KeyedProcessor for Seen {
//!     type State = Count;
//!     fn configure(_config: &Config) -> Result<Self, String> {
//!         Ok(Seen)
//!     }
//!     fn process(
//!         &mut self,
//!         ctx: &mut KeyedContext<'_, Count>,
//!         event: &Event<'_>,
//!         out: &mut Output,
//!     ) -> Result<(), String> {
//!         let t = event.timestamp_ms();
//!         let n = match ctx.state() {
//!             Some(count) => {
//!                 let (n, last) = (count.n, count.last_ms);
//!                 ctx.delete_event_timer(last + 60_000);
//!                 n + 1
//!             }
//!             None => 1,
//!         };
//!         ctx.set_state(Count { n, last_ms: t });
//!         ctx.set_event_timer(t + 60_000);
//!         event.edit().set("seen", n).push_or_reject(out);
//!         Ok(())
//!     }
//!     fn on_timer(
//!         &mut self,
//!         ctx: &mut KeyedContext<'_, Count>,
//!         timer: Timer,
//!         out: &mut Output,
//!     ) -> Result<(), String> {
//!         // No key given: the record gets the timer's key.
//!         out.object().field("quiet", timer.time).push(None, timer.time);
//!         ctx.clear_state();
//!         Ok(())
//!     }
//! }
//!
//! export_keyed_processor!(Seen);
//!
//! // Natively, a harness plays the host's part.
//! let mut h = KeyedHarness::new(Seen);
//! h.push(b"a", br#"{"x":1}"#, 1_000);
//! h.push(b"b", br#"{"x":2}"#, 2_000);
//! h.push(b"a", br#"{"x":3}"#, 90_000); // a's timer moves to 150 000
//! h.run().unwrap(); // the watermark is 90 000: b's timer (62 000) fires
//! let out: Vec<_> = h.output().events.iter().map(|e| (e.key().unwrap(), e.value())).collect();
//! assert_eq!(out, [
//!     (&b"a"[..], &br#"{"x":1,"seen":1}"#[..]),
//!     (b"b", br#"{"x":2,"seen":1}"#),
//!     (b"a", br#"{"x":3,"seen":2}"#),
//!     (b"b", br#"{"quiet":62000}"#),
//! ]);
//! ```
//!
//! ## Calls
//!
//! The host calls the component's `process-keyed` with a part of a
//! micro-batch (the events in arrival order, and the states of the keys they
//! touch), or with timers that fired (in time order, and the states of their
//! keys). The SDK's glue then, for each event in order,
//! calls [`KeyedProcessor::process`], or for each timer
//! [`KeyedProcessor::on_timer`], with the [`KeyedContext`] of its key, and
//! returns:
//!
//! - the events pushed into `out`, in order; one pushed with no key (an
//!   empty one) gets the key being processed;
//! - the events refused with [`Output::reject`] (the host dead-letters
//!   them);
//! - a state update for each key whose state changed: set, changed through
//!   [`state_mut`](KeyedContext::state_mut) or cleared, and not back to the
//!   bytes it came with;
//! - the timers set and deleted, in the order they were.
//!
//! A key's state is decoded (serde_json) the first time the call asks for
//! it, at most once per call however many of its events the call has, and
//! encoded once at the end of the call if it changed. An `Err` from
//! `process` or `on_timer`, or a state that does not decode (the bytes of an
//! incompatible version, say), fails the whole call: the host then applies
//! nothing of it (no output, state or timer change) and bisects the events
//! to find the ones that fail alone.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::batch::{Batch, Event, Output};
use crate::config::Config;

/// A keyed processing function with per-key state and timers, the
/// component's `keyed-processor` world (Flink's `KeyedProcessFunction`,
/// Spark's `transformWithState`). See [the module](self).
///
/// The host creates one instance per partition worker and calls
/// [`configure`](Self::configure) once, then `process` for each event and
/// `on_timer` for each timer that fired, never concurrently. An instance
/// may be thrown away and another configured at any time: keep in `self`
/// only what `configure` made; what must last goes in the key's state.
pub trait KeyedProcessor: Sized + Send + 'static {
    /// The state of one key, kept by the host as the bytes serde_json makes
    /// of it, and read back by the next call that touches the key — maybe a
    /// newer version of the plugin after a hot swap or a restart: keep it
    /// readable (`#[serde(default)]` on new fields).
    type State: Serialize + DeserializeOwned;

    /// Builds the processor from the stage's `config` table.
    ///
    /// # Errors
    /// A human-readable reason; the stage then fails to start and the daemon
    /// says why.
    fn configure(config: &Config) -> Result<Self, String>;

    /// Processes one event of the key [`ctx.key()`](KeyedContext::key): read
    /// and change the key's state and timers through `ctx`, pass on events
    /// with `out` ([`Output::forward`], an edit's `push_to`,
    /// [`Output::object`]…; with no key, an event gets this one) and refuse
    /// this event with [`Output::reject`].
    ///
    /// # Errors
    /// Fails the whole call (no output, no state or timer change); the host
    /// retries the events in smaller parts and dead-letters those that fail
    /// alone. To refuse one event, use [`Output::reject`].
    fn process(
        &mut self,
        ctx: &mut KeyedContext<'_, Self::State>,
        event: &Event<'_>,
        out: &mut Output,
    ) -> Result<(), String>;

    /// A timer of the key [`ctx.key()`](KeyedContext::key) fired: an
    /// event-time timer once the watermark reached its time, a
    /// processing-time one once the host's clock did. It is deleted before
    /// this call (set it again to fire again). Default: nothing.
    ///
    /// # Errors
    /// Fails the call, as for [`process`](Self::process).
    #[allow(unused_variables)]
    fn on_timer(
        &mut self,
        ctx: &mut KeyedContext<'_, Self::State>,
        timer: Timer,
        out: &mut Output,
    ) -> Result<(), String> {
        Ok(())
    }
}

/// The clock a [`Timer`] follows (Flink's `TimeDomain`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TimeDomain {
    /// Fires once the key's partition watermark reaches the timer's time
    /// (`time <= watermark`).
    EventTime,
    /// Fires once the host's wall clock (ms since the Unix epoch, UTC)
    /// reaches the timer's time.
    ProcessingTime,
}

/// A timer of a key: when it fires, in ms since the Unix epoch (UTC), and
/// on which clock. A key has at most one timer per (domain, time).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timer {
    /// When it fires, ms since the Unix epoch (UTC).
    pub time: i64,
    /// Which clock it follows.
    pub domain: TimeDomain,
}

/// One key's view of a call: its key, its state and its timers, and the
/// call's watermark and clock. Given to [`KeyedProcessor::process`] and
/// [`KeyedProcessor::on_timer`].
#[derive(Debug)]
pub struct KeyedContext<'a, S> {
    tables: &'a dyn Tables,
    key: &'a [u8],
    group: u32,
    slot: &'a mut Slot<S>,
    timers: &'a mut Vec<TimerChange>,
    failure: &'a mut Option<String>,
    watermark: i64,
    now: i64,
}

impl<'a, S: Serialize + DeserializeOwned> KeyedContext<'a, S> {
    /// The key (the record key's bytes; for a key set from a JSON string
    /// field, its text without quotes).
    pub fn key(&self) -> &'a [u8] {
        self.key
    }

    /// The key's state: `None` when it has none (never set, cleared, or
    /// expired by the stage's `state_ttl`). Decoded on the first call for
    /// the key in this call, then kept.
    ///
    /// A state whose bytes do not decode as `S` (an incompatible version's)
    /// reads as `None` here, and the whole call then fails with the reason,
    /// naming the key, whatever `process` returns.
    pub fn state(&mut self) -> Option<&S> {
        self.load();
        self.slot.state.as_ref().and_then(Option::as_ref)
    }

    /// The key's state to change in place (`None` when it has none: use
    /// [`set_state`](Self::set_state)); the state is written back at the
    /// end of the call.
    pub fn state_mut(&mut self) -> Option<&mut S> {
        self.load();
        let state = self.slot.state.as_mut().and_then(Option::as_mut);
        if state.is_some() {
            self.slot.dirty = true;
        }
        state
    }

    /// Sets the key's state.
    pub fn set_state(&mut self, state: S) {
        self.slot.state = Some(Some(state));
        self.slot.dirty = true;
    }

    /// Deletes the key's state (Flink's `ValueState.clear`); its timers stay.
    pub fn clear_state(&mut self) {
        self.slot.state = Some(None);
        self.slot.dirty = true;
    }

    /// Registers an event-time timer at `time_ms` (ms since the Unix epoch):
    /// [`on_timer`](KeyedProcessor::on_timer) runs once the watermark
    /// reaches it (at once, after this call, if it already has). Setting
    /// one that exists keeps one.
    pub fn set_event_timer(&mut self, time_ms: i64) {
        self.timer(true, time_ms, TimeDomain::EventTime);
    }

    /// Deletes the event-time timer at `time_ms` (nothing when there is
    /// none).
    pub fn delete_event_timer(&mut self, time_ms: i64) {
        self.timer(false, time_ms, TimeDomain::EventTime);
    }

    /// Registers a processing-time timer at `time_ms` (ms since the Unix
    /// epoch, the host's wall clock). Setting one that exists keeps one.
    pub fn set_processing_timer(&mut self, time_ms: i64) {
        self.timer(true, time_ms, TimeDomain::ProcessingTime);
    }

    /// Deletes the processing-time timer at `time_ms` (nothing when there
    /// is none).
    pub fn delete_processing_timer(&mut self, time_ms: i64) {
        self.timer(false, time_ms, TimeDomain::ProcessingTime);
    }

    /// The partition's event-time watermark for this call, ms since the
    /// Unix epoch: the largest event time seen minus the stage's
    /// `watermark` delay (`i64::MIN` before any event). An event whose time
    /// is below it is late.
    pub fn watermark(&self) -> i64 {
        self.watermark
    }

    /// The host's wall clock when the call started, ms since the Unix epoch
    /// (a plugin has no clock of its own).
    pub fn now(&self) -> i64 {
        self.now
    }

    /// The row of the daemon's lookup table `table` (`[tables.NAME]` in its
    /// config) whose key is `key`, as the text of a JSON object; `None`
    /// when the table has no such key. The table is the one the built-in
    /// `join` stage sees, as it is when the call starts (a changed file is
    /// swapped in between batches). A key is matched as text: a number
    /// key column matches its JSON text (`"1"`).
    ///
    /// # Errors
    /// The daemon has no table of that name (in a
    /// [`KeyedHarness`](crate::KeyedHarness): none given with
    /// [`table`](crate::KeyedHarness::table)).
    pub fn lookup(&self, table: &str, key: &str) -> Result<Option<String>, String> {
        self.tables.lookup(table, key)
    }

    /// [`lookup`](Self::lookup), the row deserialized as `T`.
    ///
    /// # Errors
    /// As `lookup`, or the row does not deserialize as `T` (the table and
    /// key are named).
    pub fn lookup_as<T: DeserializeOwned>(
        &self,
        table: &str,
        key: &str,
    ) -> Result<Option<T>, String> {
        self.lookup(table, key)?
            .map(|row| {
                serde_json::from_str(&row)
                    .map_err(|e| format!("row {key:?} of table `{table}`: {e}"))
            })
            .transpose()
    }

    fn timer(&mut self, set: bool, time: i64, domain: TimeDomain) {
        let timer = Timer { time, domain };
        self.timers.push(if set {
            TimerChange::Set(self.group, timer)
        } else {
            TimerChange::Delete(self.group, timer)
        });
    }

    fn load(&mut self) {
        if self.slot.state.is_some() {
            return;
        }
        let decoded = match &self.slot.raw {
            None => None,
            Some(bytes) => match serde_json::from_slice(bytes) {
                Ok(state) => Some(state),
                Err(e) => {
                    self.failure.get_or_insert_with(|| {
                        format!(
                            "the state of key \"{}\" does not decode as this plugin's state \
                             (an incompatible version's?): {e}",
                            self.key.escape_ascii()
                        )
                    });
                    None
                }
            },
        };
        self.slot.state = Some(decoded);
    }
}

/// One key's state during a call: the bytes it came with, and once asked
/// for, the decoded state.
#[derive(Debug)]
struct Slot<S> {
    raw: Option<Vec<u8>>,
    /// `None`: not decoded yet; `Some(None)`: no state.
    state: Option<Option<S>>,
    dirty: bool,
}

impl<S: Serialize> Slot<S> {
    /// The update to return for this key: `None` when its state is as it
    /// came; `Some(None)` to delete it.
    fn update(self, key: &[u8]) -> Result<Option<Option<Vec<u8>>>, String> {
        if !self.dirty {
            return Ok(None);
        }
        let new = match self.state.flatten() {
            None => None,
            Some(state) => Some(serde_json::to_vec(&state).map_err(|e| {
                format!(
                    "the new state of key \"{}\" cannot be encoded: {e}",
                    key.escape_ascii()
                )
            })?),
        };
        Ok((new != self.raw).then_some(new))
    }
}

/// A change to a key's timers (the key by its index in the call's keys).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TimerChange {
    Set(u32, Timer),
    Delete(u32, Timer),
}

/// What a `process-keyed` call gives, in plain Rust.
#[derive(Debug, Default)]
pub(crate) struct KeyedCall {
    pub keys: Vec<Vec<u8>>,
    pub states: Vec<Option<Vec<u8>>>,
    pub events: Batch,
    pub groups: Vec<u32>,
    pub fired: Vec<(u32, Timer)>,
    pub watermark: i64,
    pub now: i64,
}

/// What a `process-keyed` call returns, in plain Rust.
#[derive(Debug, Default)]
pub(crate) struct KeyedReturn {
    pub out: Output,
    /// (key index, new bytes or `None` to delete).
    pub updates: Vec<(u32, Option<Vec<u8>>)>,
    pub timers: Vec<TimerChange>,
}

/// Where [`KeyedContext::lookup`] reads the daemon's lookup tables: the
/// host's `tables` import in a component (WIT `sluice:plugin/tables@0.2.0`),
/// the tables given to a [`KeyedHarness`](crate::KeyedHarness) natively.
pub(crate) trait Tables: std::fmt::Debug {
    fn lookup(&self, table: &str, key: &str) -> Result<Option<String>, String>;
}

/// Runs one `process-keyed` call through `processor`: the glue of
/// [`export_keyed_processor!`](crate::export_keyed_processor) and of
/// [`KeyedHarness`](crate::KeyedHarness).
pub(crate) fn run<P: KeyedProcessor>(
    processor: &mut P,
    call: KeyedCall,
    tables: &dyn Tables,
) -> Result<KeyedReturn, String> {
    let KeyedCall {
        keys,
        states,
        events,
        groups,
        fired,
        watermark,
        now,
    } = call;
    if states.len() != keys.len() || groups.len() != events.len() {
        return Err(format!(
            "malformed keyed input: {} keys, {} states, {} events, {} groups",
            keys.len(),
            states.len(),
            events.len(),
            groups.len()
        ));
    }
    let mut slots: Vec<Slot<P::State>> = states
        .into_iter()
        .map(|raw| Slot {
            raw,
            state: None,
            dirty: false,
        })
        .collect();
    let mut out = Output::with_capacity(events.len(), events.values_len());
    let mut timers = Vec::new();
    let mut failure = None;
    let group_of = |group: u32| -> Result<usize, String> {
        let g = group as usize;
        (g < keys.len()).then_some(g).ok_or_else(|| {
            format!(
                "malformed keyed input: group {group} of {} keys",
                keys.len()
            )
        })
    };
    // The events in order, then the fired timers: each with its key's
    // context; what a handler emits without a key gets that key.
    enum Work<'b> {
        Event(crate::Event<'b>),
        Timer(Timer),
    }
    let work = events
        .iter()
        .zip(&groups)
        .map(|(event, &group)| (group, Work::Event(event)))
        .chain(
            fired
                .into_iter()
                .map(|(group, timer)| (group, Work::Timer(timer))),
        );
    for (group, item) in work {
        let g = group_of(group)?;
        let key = keys[g].as_slice();
        let start = out.events.len();
        let mut ctx = KeyedContext {
            tables,
            key,
            group,
            slot: &mut slots[g],
            timers: &mut timers,
            failure: &mut failure,
            watermark,
            now,
        };
        let result = match item {
            Work::Event(event) => processor.process(&mut ctx, &event, &mut out),
            Work::Timer(timer) => processor.on_timer(&mut ctx, timer, &mut out),
        };
        if let Some(reason) = failure {
            return Err(reason);
        }
        result?;
        out.events.fill_keys(start, key);
    }
    let mut updates = Vec::new();
    for (g, slot) in slots.into_iter().enumerate() {
        if let Some(value) = slot.update(&keys[g])? {
            updates.push((g as u32, value));
        }
    }
    Ok(KeyedReturn {
        out,
        updates,
        timers,
    })
}

#[cfg(target_arch = "wasm32")]
pub(crate) mod wit {
    //! Between the generated `keyed-processor` types and [`KeyedCall`] /
    //! [`KeyedReturn`].
    use super::{KeyedCall, KeyedReturn, TimeDomain, Timer, TimerChange};
    use crate::__private::keyed_bindings::sluice::plugin::types as w;
    use crate::batch::{Batch, BatchParts};

    /// The host's `tables` import.
    #[derive(Debug)]
    pub(crate) struct HostTables;

    impl super::Tables for HostTables {
        fn lookup(&self, table: &str, key: &str) -> Result<Option<String>, String> {
            crate::__private::keyed_bindings::sluice::plugin::tables::lookup(table, key)
        }
    }

    fn domain(d: w::TimeDomain) -> TimeDomain {
        match d {
            w::TimeDomain::EventTime => TimeDomain::EventTime,
            w::TimeDomain::ProcessingTime => TimeDomain::ProcessingTime,
        }
    }

    fn wit_timer(group: u32, t: Timer) -> w::Timer {
        w::Timer {
            group,
            domain: match t.domain {
                TimeDomain::EventTime => w::TimeDomain::EventTime,
                TimeDomain::ProcessingTime => w::TimeDomain::ProcessingTime,
            },
            time: t.time,
        }
    }

    impl KeyedCall {
        pub(crate) fn from_wit(input: w::KeyedInput) -> Self {
            let e = input.events;
            KeyedCall {
                keys: input.keys,
                states: input.states,
                events: Batch::from_parts_unchecked(BatchParts {
                    values: e.values,
                    value_ends: e.value_ends,
                    keys: e.keys,
                    key_ends: e.key_ends,
                    timestamps: e.timestamps,
                    headers: e
                        .headers
                        .into_iter()
                        .map(|h| (h.index, h.name, h.value))
                        .collect(),
                    ..Default::default()
                }),
                groups: input.groups,
                fired: input
                    .fired
                    .into_iter()
                    .map(|t| {
                        (
                            t.group,
                            Timer {
                                time: t.time,
                                domain: domain(t.domain),
                            },
                        )
                    })
                    .collect(),
                watermark: input.watermark,
                now: input.now,
            }
        }
    }

    impl KeyedReturn {
        pub(crate) fn into_wit(self) -> w::KeyedOutput {
            let parts = self.out.events.into_parts();
            w::KeyedOutput {
                events: w::EventBatch {
                    values: parts.values,
                    value_ends: parts.value_ends,
                    keys: parts.keys,
                    key_ends: parts.key_ends,
                    timestamps: parts.timestamps,
                    headers: parts
                        .headers
                        .into_iter()
                        .map(|(index, name, value)| w::Header { index, name, value })
                        .collect(),
                },
                rejected: self
                    .out
                    .rejected
                    .into_iter()
                    .map(|r| w::Rejection {
                        index: r.index,
                        reason: r.reason,
                    })
                    .collect(),
                updates: self
                    .updates
                    .into_iter()
                    .map(|(group, value)| w::StateUpdate { group, value })
                    .collect(),
                timers: self
                    .timers
                    .into_iter()
                    .map(|c| match c {
                        TimerChange::Set(g, t) => w::TimerChange::Set(wit_timer(g, t)),
                        TimerChange::Delete(g, t) => w::TimerChange::Delete(wit_timer(g, t)),
                    })
                    .collect(),
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::cell::Cell;

    thread_local! {
        /// How many states [`Num`] decoded on this thread.
        static DECODED: Cell<usize> = const { Cell::new(0) };
    }

    /// A state that counts its decodings.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
    #[serde(transparent)]
    pub struct Num(pub i64);

    impl<'de> serde::Deserialize<'de> for Num {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            DECODED.with(|c| c.set(c.get() + 1));
            i64::deserialize(d).map(Num)
        }
    }

    /// Does what each event's value says, `;`-separated: `read` (emits
    /// `state=N` or `state=none`), `add:N` (state += N through state_mut,
    /// or set to N), `set:N`, `clear`, `timer:T`, `del:T`, `ptimer:T`,
    /// `pdel:T`, `emit` (a record with no key), `emitkey:K`, `forward`,
    /// `reject`, `fail`, `watermark`, `now`. On a timer: emits
    /// `fired:e|p:T:state`, and follows `on_timer` of the config (`clear`,
    /// `again`: sets a timer one ms after).
    #[derive(Debug, Default)]
    pub struct Script {
        pub on_timer: String,
    }

    impl KeyedProcessor for Script {
        type State = Num;
        fn configure(config: &Config) -> Result<Self, String> {
            Ok(Script {
                on_timer: config.get("on_timer").unwrap_or("").to_string(),
            })
        }
        fn process(
            &mut self,
            ctx: &mut KeyedContext<'_, Num>,
            event: &Event<'_>,
            out: &mut Output,
        ) -> Result<(), String> {
            let text = std::str::from_utf8(event.value()).map_err(|e| e.to_string())?;
            let t = event.timestamp_ms();
            for cmd in text.split(';') {
                let (op, arg) = cmd.split_once(':').unwrap_or((cmd, ""));
                let n = || arg.parse::<i64>().map_err(|e| format!("{cmd}: {e}"));
                match op {
                    "read" => {
                        let s = ctx.state().map_or("none".to_string(), |s| s.0.to_string());
                        out.push(None, format!("state={s}").as_bytes(), t);
                    }
                    "add" => {
                        let n = n()?;
                        match ctx.state_mut() {
                            Some(s) => s.0 += n,
                            None => ctx.set_state(Num(n)),
                        }
                    }
                    "set" => ctx.set_state(Num(n()?)),
                    "clear" => ctx.clear_state(),
                    "timer" => ctx.set_event_timer(n()?),
                    "del" => ctx.delete_event_timer(n()?),
                    "ptimer" => ctx.set_processing_timer(n()?),
                    "pdel" => ctx.delete_processing_timer(n()?),
                    "emit" => out.push(None, b"emitted", t),
                    "emitkey" => out.push(Some(arg.as_bytes()), b"emitted", t),
                    "forward" => out.forward(event),
                    "reject" => out.reject(event, "refused"),
                    "fail" => return Err("failed on purpose".into()),
                    "watermark" => out.push(None, ctx.watermark().to_string().as_bytes(), t),
                    "now" => out.push(None, ctx.now().to_string().as_bytes(), t),
                    other => return Err(format!("unknown command {other}")),
                }
            }
            Ok(())
        }
        fn on_timer(
            &mut self,
            ctx: &mut KeyedContext<'_, Num>,
            timer: Timer,
            out: &mut Output,
        ) -> Result<(), String> {
            let d = match timer.domain {
                TimeDomain::EventTime => "e",
                TimeDomain::ProcessingTime => "p",
            };
            let s = ctx.state().map_or("none".to_string(), |s| s.0.to_string());
            out.push(
                None,
                format!("fired:{d}:{}:{s}", timer.time).as_bytes(),
                timer.time,
            );
            match self.on_timer.as_str() {
                "clear" => ctx.clear_state(),
                "again" => ctx.set_event_timer(timer.time + 1),
                "fail" => return Err("timer failed".into()),
                _ => {}
            }
            Ok(())
        }
    }

    /// A call of `events` (key, script) with the states given.
    fn call(states: &[(&str, Option<&str>)], events: &[(&str, &str)]) -> KeyedCall {
        let mut call = KeyedCall {
            watermark: 500,
            now: 1_000,
            ..KeyedCall::default()
        };
        for (key, state) in states {
            call.keys.push(key.as_bytes().to_vec());
            call.states.push(state.map(|s| s.as_bytes().to_vec()));
        }
        for (i, (key, script)) in events.iter().enumerate() {
            let g = states.iter().position(|(k, _)| k == key).unwrap();
            call.events
                .push(Some(key.as_bytes()), script.as_bytes(), 100 + i as i64);
            call.groups.push(g as u32);
        }
        call
    }

    fn values(out: &Output) -> Vec<(String, String)> {
        out.events
            .iter()
            .map(|e| {
                (
                    String::from_utf8_lossy(e.key().unwrap_or_default()).into_owned(),
                    String::from_utf8_lossy(e.value()).into_owned(),
                )
            })
            .collect()
    }

    fn owned(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn each_state_is_decoded_once_per_call_and_only_when_asked() {
        DECODED.with(|c| c.set(0));
        let c = call(
            &[
                ("a", Some("5")),
                ("b", Some("7")),
                ("c", None),
                ("d", Some("1")),
            ],
            &[
                ("a", "read"),
                ("b", "read;add:1;read"),
                ("a", "add:2;read"),
                ("c", "read"),
                ("a", "read"),
                ("d", "set:3;read"),
            ],
        );
        let r = run(
            &mut Script::default(),
            c,
            &crate::harness::HarnessTables::default(),
        )
        .unwrap();
        // a and b: once each; c has no state; d was set before any read.
        assert_eq!(DECODED.with(Cell::get), 2);
        assert_eq!(
            values(&r.out),
            owned(&[
                ("a", "state=5"),
                ("b", "state=7"),
                ("b", "state=8"),
                ("a", "state=7"),
                ("c", "state=none"),
                ("a", "state=7"),
                ("d", "state=3"),
            ])
        );
        assert_eq!(
            r.updates,
            vec![
                (0, Some(b"7".to_vec())),
                (1, Some(b"8".to_vec())),
                (3, Some(b"3".to_vec()))
            ]
        );
    }

    #[test]
    fn only_changed_states_are_returned() {
        let c = call(
            &[
                ("read", Some("1")),
                ("same", Some("2")),
                ("mut0", Some("3")),
                ("gone", Some("4")),
                ("never", None),
                ("new", None),
                ("cleared-then-set", Some("6")),
                ("set-then-cleared", None),
            ],
            &[
                ("read", "read"),
                ("same", "set:2"),
                ("mut0", "add:0"),
                ("gone", "clear"),
                ("never", "clear"),
                ("new", "add:9"),
                ("cleared-then-set", "clear;set:7"),
                ("set-then-cleared", "set:1;clear"),
            ],
        );
        let r = run(
            &mut Script::default(),
            c,
            &crate::harness::HarnessTables::default(),
        )
        .unwrap();
        // Only `gone` (deleted), `new` and `cleared-then-set` changed bytes.
        assert_eq!(
            r.updates,
            vec![
                (3, None),
                (5, Some(b"9".to_vec())),
                (6, Some(b"7".to_vec()))
            ]
        );
    }

    #[test]
    fn timer_changes_come_back_in_order_with_their_key() {
        let c = call(
            &[("a", None), ("b", None)],
            &[
                ("a", "timer:10;ptimer:20"),
                ("b", "timer:10;del:3"),
                ("a", "pdel:20;timer:10"),
            ],
        );
        let r = run(
            &mut Script::default(),
            c,
            &crate::harness::HarnessTables::default(),
        )
        .unwrap();
        let e = |time| Timer {
            time,
            domain: TimeDomain::EventTime,
        };
        let p = |time| Timer {
            time,
            domain: TimeDomain::ProcessingTime,
        };
        assert_eq!(
            r.timers,
            vec![
                TimerChange::Set(0, e(10)),
                TimerChange::Set(0, p(20)),
                TimerChange::Set(1, e(10)),
                TimerChange::Delete(1, e(3)),
                TimerChange::Delete(0, p(20)),
                TimerChange::Set(0, e(10)),
            ]
        );
        assert!(r.updates.is_empty() && r.out.events.is_empty());
    }

    #[test]
    fn keyless_records_get_their_group_key_and_others_keep_theirs() {
        let c = call(
            &[("k1", None), ("k2", None)],
            &[("k1", "emit;emitkey:x;emit"), ("k2", "forward;emit")],
        );
        let r = run(
            &mut Script::default(),
            c,
            &crate::harness::HarnessTables::default(),
        )
        .unwrap();
        assert_eq!(
            values(&r.out),
            owned(&[
                ("k1", "emitted"),
                ("x", "emitted"),
                ("k1", "emitted"),
                ("k2", "forward;emit"),
                ("k2", "emitted"),
            ])
        );
        // Event times as pushed: 100 + the event's index.
        let times: Vec<i64> = r.out.events.iter().map(|e| e.timestamp_ms()).collect();
        assert_eq!(times, [100, 100, 100, 101, 101]);
    }

    #[test]
    fn fired_timers_run_on_timer_with_their_key_state_and_clock() {
        let mut c = call(&[("a", Some("4")), ("b", None)], &[]);
        c.fired = vec![
            (
                1,
                Timer {
                    time: 30,
                    domain: TimeDomain::EventTime,
                },
            ),
            (
                0,
                Timer {
                    time: 40,
                    domain: TimeDomain::ProcessingTime,
                },
            ),
        ];
        let mut script = Script {
            on_timer: "clear".into(),
        };
        let r = run(&mut script, c, &crate::harness::HarnessTables::default()).unwrap();
        assert_eq!(
            values(&r.out),
            owned(&[("b", "fired:e:30:none"), ("a", "fired:p:40:4")])
        );
        // a's state deleted; b had none.
        assert_eq!(r.updates, vec![(0, None)]);
        let c = call(&[("a", None)], &[("a", "watermark;now")]);
        let r = run(
            &mut Script::default(),
            c,
            &crate::harness::HarnessTables::default(),
        )
        .unwrap();
        assert_eq!(values(&r.out), owned(&[("a", "500"), ("a", "1000")]));
    }

    #[test]
    fn rejections_name_the_events_and_an_error_fails_the_call() {
        let c = call(
            &[("a", None), ("b", None)],
            &[("a", "forward"), ("b", "reject"), ("a", "reject;forward")],
        );
        let r = run(
            &mut Script::default(),
            c,
            &crate::harness::HarnessTables::default(),
        )
        .unwrap();
        let rejected: Vec<(u32, &str)> = r
            .out
            .rejected
            .iter()
            .map(|r| (r.index, r.reason.as_str()))
            .collect();
        assert_eq!(rejected, [(1, "refused"), (2, "refused")]);
        assert_eq!(r.out.events.len(), 2);

        let c = call(&[("a", None)], &[("a", "set:1;emit"), ("a", "fail")]);
        assert_eq!(
            run(
                &mut Script::default(),
                c,
                &crate::harness::HarnessTables::default()
            )
            .unwrap_err(),
            "failed on purpose"
        );
    }

    #[test]
    fn a_state_that_does_not_decode_fails_the_call_naming_the_key() {
        // `process` goes on with no state and returns Ok: the call fails all
        // the same, with the decoding error, not a later one.
        let c = call(
            &[("ok", Some("1")), ("N14228", Some("{\"last_ms\":5}"))],
            &[("ok", "read"), ("N14228", "read;set:2;emit")],
        );
        let err = run(
            &mut Script::default(),
            c,
            &crate::harness::HarnessTables::default(),
        )
        .unwrap_err();
        assert!(
            err.starts_with("the state of key \"N14228\" does not decode as this plugin's state"),
            "{err}"
        );
        assert!(err.contains("invalid type: map, expected i64"), "{err}");
        // A key that is not text is escaped.
        let mut c = call(&[("x", Some("true"))], &[("x", "fail;read")]);
        c.keys[0] = vec![0xff, b'a'];
        // `fail` comes before the read: the plugin's own error.
        assert_eq!(
            run(
                &mut Script::default(),
                c,
                &crate::harness::HarnessTables::default()
            )
            .unwrap_err(),
            "failed on purpose"
        );
        let mut c = call(&[("x", Some("true"))], &[("x", "read;fail")]);
        c.keys[0] = vec![0xff, b'a'];
        let err = run(
            &mut Script::default(),
            c,
            &crate::harness::HarnessTables::default(),
        )
        .unwrap_err();
        assert!(err.starts_with("the state of key \"\\xffa\""), "{err}");
    }

    #[test]
    fn malformed_input_is_an_error_not_a_panic() {
        let mut c = call(&[("a", None)], &[("a", "emit")]);
        c.groups[0] = 3;
        assert!(
            run(
                &mut Script::default(),
                c,
                &crate::harness::HarnessTables::default()
            )
            .unwrap_err()
            .contains("group 3 of 1 keys")
        );
        let mut c = call(&[("a", None)], &[]);
        c.states.clear();
        assert!(
            run(
                &mut Script::default(),
                c,
                &crate::harness::HarnessTables::default()
            )
            .is_err()
        );
    }
}
