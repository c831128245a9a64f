//! [`KeyedHarness`]: the host's part for a [`KeyedProcessor`], in memory, so
//! that a keyed plugin's unit tests run natively (`cargo test`), without a
//! component or a daemon.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::batch::{Batch, Output, Rejection};
use crate::config::Config;
use crate::keyed::{self, KeyedCall, KeyedProcessor, TimeDomain, Timer, TimerChange};

/// Rounds of timers that fire timers that are due at once, before
/// [`KeyedHarness`] gives up.
const MAX_TIMER_ROUNDS: usize = 10_000;

/// Runs a [`KeyedProcessor`] as the daemon does, in memory: it keeps every
/// key's state (as bytes, the way the host does) and timers, feeds queued
/// events in calls, moves the watermark and fires timers, and collects what
/// the processor emits.
///
/// The rules, those of `wit/0.2.0/plugin.wit` (and Flink's
/// `KeyedProcessFunction`):
///
/// - **Watermark**: the largest event time pushed so far minus the
///   [`watermark_delay`](Self::watermark_delay) (0 unless set), or what
///   [`advance_watermark`](Self::advance_watermark) raised it to, whichever
///   is larger; `i64::MIN` before any event. It never goes back.
/// - **Calls**: [`run`](Self::run) hands the queued events to
///   `process-keyed` in arrival order, each key's state once per call. It
///   cuts them into parts where an event moves the watermark to or past a
///   known event-time timer (one set by an earlier call), so that timer
///   fires before the next event. (The daemon is finer: it cuts only before
///   an event of the timer's own key, and when a call sets a timer that an
///   event of the same key later in that call makes due, it runs the call
///   again up to that event. The harness does neither: keep the events you
///   push in one `run` within less event time than your timers' delays, or
///   `run` them one by one, to see the daemon's per-key order.) A call's
///   [`watermark`] is the one before
///   its first event; its [`now`] is the harness's clock
///   ([`set_now`](Self::set_now), 0 unless set).
/// - **Timers**: at most one per (key, domain, time); set and delete apply
///   in the order made, once the call returns. After every call, the
///   event-time timers with `time <= watermark` fire, in time order (then
///   key order), in one call, each deleted before it fires; then those the
///   firing set that are due too, and so on. Processing-time timers fire
///   when [`set_now`](Self::set_now) reaches them.
/// - **Failures**: a call that fails (an `Err`, a state that does not
///   decode) changes nothing, and its error is returned; unlike the daemon,
///   the harness does not retry the events in smaller parts, and drops the
///   queued events not yet processed.
///
/// [`watermark`]: crate::KeyedContext::watermark
/// [`now`]: crate::KeyedContext::now
///
/// ```
/// # use sluice_plugin_sdk::*;
/// # struct Count;
/// # impl KeyedProcessor for Count {
/// #     type State = u64;
/// #     fn configure(_: &Config) -> Result<Self, String> { Ok(Count) }
/// #     fn process(&mut self, ctx: &mut KeyedContext<'_, u64>, event: &Event<'_>, out: &mut Output) -> Result<(), String> {
/// #         let n = ctx.state().copied().unwrap_or(0) + 1;
/// #         ctx.set_state(n);
/// #         out.forward(event);
/// #         Ok(())
/// #     }
/// # }
/// let mut h = KeyedHarness::<Count>::configure([("unused", "1")]).unwrap();
/// h.push(b"k", b"{}", 10).push(b"k", b"{}", 20).push(b"j", b"{}", 5);
/// h.run().unwrap();
/// assert_eq!(h.state(b"k"), Some(2));
/// assert_eq!(h.state_bytes(b"j"), Some(&b"1"[..]));
/// assert_eq!(h.watermark(), 20);
/// assert_eq!(h.output().events.len(), 3);
/// ```
#[derive(Debug)]
pub struct KeyedHarness<P: KeyedProcessor> {
    processor: P,
    states: BTreeMap<Vec<u8>, Vec<u8>>,
    /// (domain, time, key): in firing order.
    timers: BTreeSet<(TimeDomain, i64, Vec<u8>)>,
    delay: i64,
    max_event_time: Option<i64>,
    advanced: i64,
    now: i64,
    queued: Batch,
    /// Events handed to calls so far: the index of the next one.
    fed: u32,
    output: Output,
    tables: HarnessTables,
}

/// The lookup tables a [`KeyedHarness`] answers
/// [`KeyedContext::lookup`](crate::KeyedContext::lookup) from: table name →
/// key → row (the text of a JSON object).
#[derive(Debug, Default)]
pub(crate) struct HarnessTables(BTreeMap<String, BTreeMap<String, String>>);

impl crate::keyed::Tables for HarnessTables {
    fn lookup(&self, table: &str, key: &str) -> Result<Option<String>, String> {
        let rows = self.0.get(table).ok_or_else(|| {
            format!(
                "no table `{table}` (the harness has: {})",
                self.0.keys().cloned().collect::<Vec<_>>().join(", ")
            )
        })?;
        Ok(rows.get(key).cloned())
    }
}

impl<P: KeyedProcessor> KeyedHarness<P> {
    /// A harness around a configured processor.
    pub fn new(processor: P) -> Self {
        KeyedHarness {
            processor,
            states: BTreeMap::new(),
            timers: BTreeSet::new(),
            delay: 0,
            max_event_time: None,
            advanced: i64::MIN,
            now: 0,
            queued: Batch::new(),
            fed: 0,
            output: Output::new(),
            tables: HarnessTables::default(),
        }
    }

    /// Gives the processor a lookup table `name` (as a `[tables.NAME]` of the
    /// daemon's config would): its rows by key, each row the text of a JSON
    /// object, for [`KeyedContext::lookup`](crate::KeyedContext::lookup).
    pub fn table<K: Into<String>, V: Into<String>>(
        mut self,
        name: &str,
        rows: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        self.tables.0.insert(
            name.to_string(),
            rows.into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        );
        self
    }

    /// A harness around the processor [`KeyedProcessor::configure`] makes of
    /// `pairs` (the stage's `config`, as strings).
    ///
    /// # Errors
    /// `configure`'s.
    pub fn configure<K: Into<String>, V: Into<String>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Result<Self, String> {
        P::configure(&Config::from_pairs(pairs)).map(Self::new)
    }

    /// Sets the stage's `watermark` delay, in ms: the watermark is the
    /// largest event time seen minus it.
    pub fn watermark_delay(mut self, delay_ms: i64) -> Self {
        self.delay = delay_ms;
        self
    }

    /// Queues an event of key `key` (which may be empty) for the next
    /// [`run`](Self::run).
    pub fn push(&mut self, key: &[u8], value: &[u8], timestamp_ms: i64) -> &mut Self {
        self.queued.push(Some(key), value, timestamp_ms);
        self
    }

    /// Processes the queued events as one micro-batch (see the rules
    /// [above](Self)), firing the event-time timers the watermark passes.
    ///
    /// # Errors
    /// The error of the first call that fails; its changes and the events
    /// after it are dropped.
    pub fn run(&mut self) -> Result<(), String> {
        let batch = std::mem::take(&mut self.queued);
        let mut start = 0;
        while start < batch.len() {
            let watermark = self.watermark();
            let mut end = start;
            while end < batch.len() {
                let t = batch.get(end).map_or(i64::MIN, |e| e.timestamp_ms());
                self.max_event_time = Some(self.max_event_time.map_or(t, |m| m.max(t)));
                end += 1;
                if self.next_due(TimeDomain::EventTime).is_some() {
                    break;
                }
            }
            self.call_events(&batch, start..end, watermark)?;
            self.fire(TimeDomain::EventTime)?;
            start = end;
        }
        Ok(())
    }

    /// Raises the watermark to `time_ms` (when it is below), as a source's
    /// idle advance or the end of the input would, and fires the event-time
    /// timers it reaches.
    ///
    /// # Errors
    /// As [`run`](Self::run).
    pub fn advance_watermark(&mut self, time_ms: i64) -> Result<(), String> {
        self.advanced = self.advanced.max(time_ms);
        self.fire(TimeDomain::EventTime)
    }

    /// Sets the host's clock (ms since the Unix epoch) that calls see as
    /// [`now`](crate::KeyedContext::now), and fires the processing-time
    /// timers it reaches.
    ///
    /// # Errors
    /// As [`run`](Self::run).
    pub fn set_now(&mut self, now_ms: i64) -> Result<(), String> {
        self.now = now_ms;
        self.fire(TimeDomain::ProcessingTime)
    }

    /// The watermark (see the rules [above](Self)).
    pub fn watermark(&self) -> i64 {
        let seen = self
            .max_event_time
            .map_or(i64::MIN, |t| t.saturating_sub(self.delay));
        seen.max(self.advanced)
    }

    /// The clock that [`set_now`](Self::set_now) set.
    pub fn now(&self) -> i64 {
        self.now
    }

    /// Everything the processor emitted so far, in order. A rejection's
    /// `index` counts the events of the calls that succeeded since the
    /// harness was made (0-based), across runs: with no failure, the events
    /// in the order they were pushed.
    pub fn output(&self) -> &Output {
        &self.output
    }

    /// Takes what the processor emitted so far (see
    /// [`output`](Self::output)), leaving it empty.
    pub fn take_output(&mut self) -> Output {
        std::mem::take(&mut self.output)
    }

    /// The state of `key`, decoded (`None` when it has none).
    ///
    /// # Panics
    /// When its bytes do not decode as [`KeyedProcessor::State`].
    pub fn state(&self, key: &[u8]) -> Option<P::State> {
        self.states.get(key).map(|bytes| {
            serde_json::from_slice(bytes).unwrap_or_else(|e| {
                panic!(
                    "the state of key {:?} does not decode: {e}",
                    key.escape_ascii().to_string()
                )
            })
        })
    }

    /// The state of `key` as the bytes the host keeps (serde_json's).
    pub fn state_bytes(&self, key: &[u8]) -> Option<&[u8]> {
        self.states.get(key).map(Vec::as_slice)
    }

    /// Sets (or, with `None`, deletes) the state bytes of `key`: to test
    /// what a previous version of the plugin left, say.
    pub fn set_state_bytes(&mut self, key: &[u8], bytes: Option<&[u8]>) {
        match bytes {
            Some(bytes) => self.states.insert(key.to_vec(), bytes.to_vec()),
            None => self.states.remove(key),
        };
    }

    /// The timers of `key`, event-time ones first, each in time order.
    pub fn timers(&self, key: &[u8]) -> Vec<Timer> {
        self.timers
            .iter()
            .filter(|(_, _, k)| k == key)
            .map(|&(domain, time, _)| Timer { time, domain })
            .collect()
    }

    /// The processor.
    pub fn processor(&mut self) -> &mut P {
        &mut self.processor
    }

    /// The earliest timer of `domain` that is due.
    fn next_due(&self, domain: TimeDomain) -> Option<i64> {
        let reached = match domain {
            TimeDomain::EventTime => self.watermark(),
            TimeDomain::ProcessingTime => self.now,
        };
        self.timers
            .range((domain, i64::MIN, Vec::new())..)
            .next()
            .filter(|(d, t, _)| *d == domain && *t <= reached)
            .map(|(_, t, _)| *t)
    }

    /// Fires the due timers of `domain`, round after round.
    fn fire(&mut self, domain: TimeDomain) -> Result<(), String> {
        for _ in 0..MAX_TIMER_ROUNDS {
            if self.next_due(domain).is_none() {
                return Ok(());
            }
            let reached = match domain {
                TimeDomain::EventTime => self.watermark(),
                TimeDomain::ProcessingTime => self.now,
            };
            let due: Vec<(TimeDomain, i64, Vec<u8>)> = self
                .timers
                .range((domain, i64::MIN, Vec::new())..)
                .take_while(|(d, t, _)| *d == domain && *t <= reached)
                .cloned()
                .collect();
            for timer in &due {
                self.timers.remove(timer);
            }
            let mut call = KeyedCall {
                watermark: self.watermark(),
                now: self.now,
                ..KeyedCall::default()
            };
            let mut groups = HashMap::new();
            for (domain, time, key) in &due {
                let group = self.group(&mut call, &mut groups, key);
                call.fired.push((
                    group,
                    Timer {
                        time: *time,
                        domain: *domain,
                    },
                ));
            }
            if let Err(e) = self.call(call) {
                // A failed call changes nothing: the timers are still set.
                self.timers.extend(due);
                return Err(e);
            }
        }
        Err(format!(
            "timers still due after {MAX_TIMER_ROUNDS} rounds: does on_timer set a timer at or \
             before the watermark each time?"
        ))
    }

    /// One call with events `range` of `batch`.
    fn call_events(
        &mut self,
        batch: &Batch,
        range: std::ops::Range<usize>,
        watermark: i64,
    ) -> Result<(), String> {
        let mut call = KeyedCall {
            watermark,
            now: self.now,
            ..KeyedCall::default()
        };
        let mut groups = HashMap::new();
        for i in range {
            let Some(event) = batch.get(i) else { break };
            let key = event.key().unwrap_or_default();
            let group = self.group(&mut call, &mut groups, key);
            call.groups.push(group);
            call.events.push_event(&event);
        }
        self.call(call)
    }

    /// The index of `key` in the call's keys (`groups` maps them), added
    /// with its state.
    fn group<'k>(
        &self,
        call: &mut KeyedCall,
        groups: &mut HashMap<&'k [u8], u32>,
        key: &'k [u8],
    ) -> u32 {
        *groups.entry(key).or_insert_with(|| {
            call.keys.push(key.to_vec());
            call.states.push(self.states.get(key).cloned());
            (call.keys.len() - 1) as u32
        })
    }

    /// Runs `call` and applies what it returns.
    fn call(&mut self, call: KeyedCall) -> Result<(), String> {
        let n = call.events.len() as u32;
        let keys = call.keys.clone();
        let returned = keyed::run(&mut self.processor, call, &self.tables)?;
        for event in &returned.out.events {
            self.output.events.push_event(&event);
        }
        self.output
            .rejected
            .extend(returned.out.rejected.into_iter().map(|r| Rejection {
                index: self.fed + r.index,
                reason: r.reason,
            }));
        self.fed += n;
        for (group, value) in returned.updates {
            let key = keys[group as usize].clone();
            match value {
                Some(bytes) => self.states.insert(key, bytes),
                None => self.states.remove(&key),
            };
        }
        for change in returned.timers {
            match change {
                TimerChange::Set(g, t) => {
                    self.timers
                        .insert((t.domain, t.time, keys[g as usize].clone()));
                }
                TimerChange::Delete(g, t) => {
                    self.timers
                        .remove(&(t.domain, t.time, keys[g as usize].clone()));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keyed::tests::Script;

    fn values(out: &Output) -> Vec<String> {
        out.events
            .iter()
            .map(|e| {
                format!(
                    "{}@{}:{}",
                    String::from_utf8_lossy(e.key().unwrap_or_default()),
                    e.timestamp_ms(),
                    String::from_utf8_lossy(e.value())
                )
            })
            .collect()
    }

    /// Emits the name in its key's row of table `planes`, or `-`.
    struct Lookup;

    impl KeyedProcessor for Lookup {
        type State = u8;
        fn configure(_: &Config) -> Result<Self, String> {
            Ok(Lookup)
        }
        fn process(
            &mut self,
            ctx: &mut crate::KeyedContext<'_, u8>,
            event: &crate::Event<'_>,
            out: &mut Output,
        ) -> Result<(), String> {
            #[derive(serde::Deserialize)]
            struct Row {
                name: String,
            }
            let key = String::from_utf8_lossy(ctx.key()).into_owned();
            let row: Option<Row> = ctx.lookup_as("planes", &key)?;
            let name = row.map_or("-".to_string(), |r| r.name);
            out.push(None, name.as_bytes(), event.timestamp_ms());
            Ok(())
        }
    }

    #[test]
    fn lookup_reads_the_tables_given_to_the_harness() {
        let mut h = KeyedHarness::new(Lookup).table("planes", [("N1", r#"{"name":"Boeing"}"#)]);
        h.push(b"N1", b"{}", 1).push(b"N2", b"{}", 2);
        h.run().unwrap();
        assert_eq!(values(h.output()), ["N1@1:Boeing", "N2@2:-"]);
        let mut bad = KeyedHarness::new(Lookup).table("planes", [("N1", "[1]")]);
        bad.push(b"N1", b"{}", 1);
        assert!(
            bad.run()
                .unwrap_err()
                .contains(r#"row "N1" of table `planes`"#)
        );
        let mut none = KeyedHarness::new(Lookup);
        none.push(b"N1", b"{}", 1);
        assert!(none.run().unwrap_err().contains("no table `planes`"));
    }

    fn harness(on_timer: &str) -> KeyedHarness<Script> {
        KeyedHarness::configure([("on_timer", on_timer)]).unwrap()
    }

    #[test]
    fn the_watermark_is_the_largest_event_time_minus_the_delay() {
        let mut h = harness("").watermark_delay(10);
        assert_eq!(h.watermark(), i64::MIN);
        // Each call sees the watermark before its first event.
        h.push(b"a", b"watermark", 100).run().unwrap();
        assert_eq!(h.watermark(), 90);
        h.push(b"a", b"watermark", 50).run().unwrap(); // late: it does not go back
        assert_eq!(h.watermark(), 90);
        h.push(b"a", b"watermark", 130).run().unwrap();
        assert_eq!(h.watermark(), 120);
        h.advance_watermark(100).unwrap(); // below: nothing
        assert_eq!(h.watermark(), 120);
        h.advance_watermark(1_000).unwrap();
        assert_eq!(h.watermark(), 1_000);
        assert_eq!(
            values(h.output()),
            [
                format!("a@100:{}", i64::MIN),
                "a@50:90".to_string(),
                "a@130:90".to_string()
            ]
        );
    }

    #[test]
    fn an_event_timer_fires_when_the_watermark_reaches_its_time() {
        let mut h = harness("");
        h.push(b"k", b"set:1;timer:150;timer:151", 100)
            .run()
            .unwrap();
        h.push(b"j", b"emit", 149).run().unwrap();
        assert_eq!(h.timers(b"k").len(), 2);
        // 150 <= 150: fires; 151 does not yet.
        h.push(b"j", b"emit", 150).run().unwrap();
        assert_eq!(
            h.timers(b"k"),
            [Timer {
                time: 151,
                domain: TimeDomain::EventTime
            }]
        );
        h.advance_watermark(151).unwrap();
        assert!(h.timers(b"k").is_empty());
        assert_eq!(
            values(h.output()),
            [
                "j@149:emitted",
                "j@150:emitted",
                "k@150:fired:e:150:1",
                "k@151:fired:e:151:1"
            ]
        );
    }

    #[test]
    fn a_known_timer_fires_before_the_event_after_the_one_that_passed_it() {
        let mut h = harness("clear");
        h.push(b"k", b"set:7;timer:150", 100).run().unwrap();
        // One micro-batch: j@160 moves the watermark past 150; the timer
        // fires (and clears k's state) before k@170 is processed.
        h.push(b"j", b"emit", 120)
            .push(b"j", b"emit", 160)
            .push(b"k", b"read", 170)
            .run()
            .unwrap();
        assert_eq!(
            values(h.output()),
            [
                "j@120:emitted",
                "j@160:emitted",
                "k@150:fired:e:150:7",
                "k@170:state=none"
            ]
        );
        assert_eq!(h.state(b"k"), None);
    }

    #[test]
    fn a_timer_set_during_a_call_is_known_once_it_returns() {
        let mut h = harness("");
        // The timer at 150 is set by the first event; the second one, in the
        // same call, has moved the watermark past it already.
        h.push(b"k", b"set:1;timer:150", 100)
            .push(b"k", b"add:1", 200)
            .push(b"k", b"read", 300)
            .run()
            .unwrap();
        assert_eq!(values(h.output()), ["k@300:state=2", "k@150:fired:e:150:2"]);
        // A timer set at or before the watermark fires right after its call.
        h.push(b"k", b"timer:250", 310).run().unwrap();
        assert_eq!(
            values(&h.take_output()).last().unwrap(),
            "k@250:fired:e:250:2"
        );
    }

    #[test]
    fn one_timer_per_key_domain_and_time_fired_in_time_order() {
        let mut h = harness("");
        h.push(b"b", b"timer:20;timer:20;ptimer:20", 0)
            .push(b"a", b"timer:30;timer:10;del:30;timer:20", 0)
            .run()
            .unwrap();
        assert_eq!(h.timers(b"a").len(), 2);
        assert_eq!(
            h.timers(b"b"),
            [
                Timer {
                    time: 20,
                    domain: TimeDomain::EventTime
                },
                Timer {
                    time: 20,
                    domain: TimeDomain::ProcessingTime
                }
            ]
        );
        h.advance_watermark(100).unwrap();
        // Time order, then key order; the deleted 30 never fires; the
        // processing-time timer waits for the clock.
        assert_eq!(
            values(&h.take_output()),
            [
                "a@10:fired:e:10:none",
                "a@20:fired:e:20:none",
                "b@20:fired:e:20:none"
            ]
        );
        h.set_now(19).unwrap();
        assert!(h.output().events.is_empty());
        h.set_now(20).unwrap();
        assert_eq!(values(&h.take_output()), ["b@20:fired:p:20:none"]);
        assert!(h.timers(b"b").is_empty());
    }

    #[test]
    fn timers_that_set_due_timers_fire_in_rounds_and_a_loop_is_stopped() {
        let mut h = harness("again");
        h.push(b"k", b"timer:10", 0).run().unwrap();
        h.advance_watermark(12).unwrap();
        assert_eq!(
            values(&h.take_output()),
            [
                "k@10:fired:e:10:none",
                "k@11:fired:e:11:none",
                "k@12:fired:e:12:none"
            ]
        );
        assert_eq!(h.timers(b"k")[0].time, 13);
        let err = h.advance_watermark(i64::MAX).unwrap_err();
        assert!(err.contains("timers still due"), "{err}");
    }

    #[test]
    fn a_failed_call_changes_nothing() {
        let mut h = harness("fail");
        h.push(b"k", b"set:1;timer:50", 0).run().unwrap();
        h.push(b"k", b"set:2;timer:60;emit;fail", 10)
            .push(b"k", b"set:3", 20)
            .run()
            .unwrap_err();
        assert_eq!(h.state(b"k"), Some(crate::keyed::tests::Num(1)));
        assert_eq!(h.timers(b"k").len(), 1);
        assert!(h.output().events.is_empty());
        // A failing timer stays set.
        assert_eq!(h.advance_watermark(50).unwrap_err(), "timer failed");
        assert_eq!(h.timers(b"k")[0].time, 50);
    }

    #[test]
    fn rejections_count_the_events_across_runs() {
        let mut h = harness("");
        h.push(b"a", b"forward", 0)
            .push(b"b", b"reject", 0)
            .run()
            .unwrap();
        h.push(b"a", b"reject", 0).run().unwrap();
        let rejected: Vec<u32> = h.output().rejected.iter().map(|r| r.index).collect();
        assert_eq!(rejected, [1, 2]);
    }

    #[test]
    fn old_state_bytes_that_do_not_decode_fail_the_call() {
        let mut h = harness("");
        h.set_state_bytes(b"N1", Some(br#"{"v":1}"#));
        let err = h.push(b"N1", b"read", 0).run().unwrap_err();
        assert!(err.contains("key \"N1\""), "{err}");
        assert_eq!(h.state_bytes(b"N1"), Some(&br#"{"v":1}"#[..]));
        h.set_state_bytes(b"N1", None);
        h.push(b"N1", b"add:4", 0).run().unwrap();
        assert_eq!(h.state_bytes(b"N1"), Some(&b"4"[..]));
    }

    #[test]
    fn the_clock_is_what_set_now_said() {
        let mut h = harness("");
        h.set_now(1_700_000_000_000).unwrap();
        h.push(b"a", b"now", 0).run().unwrap();
        assert_eq!(values(h.output()), ["a@0:1700000000000"]);
    }
}
