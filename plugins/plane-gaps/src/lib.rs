//! The time between a plane's departures, and the planes that stay idle: a
//! keyed processor (`wit/0.2.0/plugin.wit`, the `keyed-processor` world)
//! with a state and an event-time timer per plane.
//!
//! Input: one flight per event, as in `examples/data/flights-2013.ndjson.gz`,
//! keyed by plane (the source's `key = "/tailnum"`) with its departure as
//! event time (`timestamp = "/event_time"`).
//! Config: `idle_minutes` (a whole number of minutes above 0; default 10080,
//! 7 days).
//!
//! - a flight with `"cancelled": true` is passed on unchanged, touching no
//!   state and no timer; so is a flight with no key (no `tailnum`);
//! - any other flight is passed on with one more top-level field,
//!   `"minutes_since_prev"`: the whole minutes since the plane's previous
//!   departure (`(event time - previous) / 60000`, rounded toward zero), or
//!   `null` for its first; the plane's state becomes `{"last_ms": <its event
//!   time>}` and its idle timer moves from the previous departure + idle to
//!   this one + idle;
//! - when a plane's idle timer fires (the watermark reached its last
//!   departure + idle, with no departure since), it emits
//!   `{"event":"idle","tailnum":"<key>","last_departure_ms":<last_ms>,"idle_at_ms":<timer time>}`
//!   keyed by the plane, at event time `idle_at_ms`, and keeps the state;
//! - a value that is not a JSON object is rejected with the reason.
//!
//! The field is appended with the SDK's `Record`/`Edit` (one pass over the
//! record, the other fields copied byte for byte), not a parse into a map.

use serde::{Deserialize, Serialize};
use sluice_plugin_sdk::{
    Config, Event, KeyedContext, KeyedProcessor, Output, TimeDomain, Timer, export_keyed_processor,
};

/// What the host keeps per plane (serde_json: `{"last_ms":1357035420000}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plane {
    /// Event time of its last departure, ms since the Unix epoch.
    pub last_ms: i64,
}

/// The processor: how long a plane may stay on the ground.
#[derive(Debug)]
pub struct PlaneGaps {
    idle_ms: i64,
}

/// `idle_minutes` when the config has none: 7 days.
const DEFAULT_IDLE_MINUTES: i64 = 7 * 24 * 60;

impl KeyedProcessor for PlaneGaps {
    type State = Plane;

    fn configure(config: &Config) -> Result<Self, String> {
        let minutes = config
            .parse::<i64>("idle_minutes")?
            .unwrap_or(DEFAULT_IDLE_MINUTES);
        if minutes <= 0 || minutes > i64::MAX / 60_000 {
            return Err(format!(
                "config `idle_minutes`: {minutes} is not a number of minutes above 0"
            ));
        }
        Ok(PlaneGaps {
            idle_ms: minutes * 60_000,
        })
    }

    fn process(
        &mut self,
        ctx: &mut KeyedContext<'_, Plane>,
        event: &Event<'_>,
        out: &mut Output,
    ) -> Result<(), String> {
        let record = match event.record(&["cancelled"]) {
            Ok(record) => record,
            Err(reason) => {
                out.reject(event, reason);
                return Ok(());
            }
        };
        let [cancelled] = record.fields();
        if ctx.key().is_empty() || cancelled.and_then(|c| c.as_bool()) == Some(true) {
            out.forward(event);
            return Ok(());
        }
        let t = event.timestamp_ms();
        let prev = ctx.state().map(|plane| plane.last_ms);
        if let Some(prev) = prev {
            ctx.delete_event_timer(prev.saturating_add(self.idle_ms));
        }
        ctx.set_state(Plane { last_ms: t });
        ctx.set_event_timer(t.saturating_add(self.idle_ms));
        let minutes = prev.map(|prev| t.saturating_sub(prev) / 60_000);
        record
            .edit()
            .set("minutes_since_prev", minutes)
            .push_or_reject(out);
        Ok(())
    }

    fn on_timer(
        &mut self,
        ctx: &mut KeyedContext<'_, Plane>,
        timer: Timer,
        out: &mut Output,
    ) -> Result<(), String> {
        if timer.domain != TimeDomain::EventTime {
            return Ok(());
        }
        let tailnum = String::from_utf8_lossy(ctx.key()).into_owned();
        // No state: expired by the stage's `state_ttl` in the meantime.
        let last = ctx.state().map(|plane| plane.last_ms);
        out.object()
            .field("event", "idle")
            .field("tailnum", tailnum.as_str())
            .field("last_departure_ms", last)
            .field("idle_at_ms", timer.time)
            // No key given: the record gets the plane's.
            .push(None, timer.time);
        Ok(())
    }
}

export_keyed_processor!(PlaneGaps);

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_plugin_sdk::KeyedHarness;

    const MIN: i64 = 60_000;
    const DAY: i64 = 24 * 60 * MIN;
    /// 2013-01-01T10:17:00Z.
    const T0: i64 = 1_357_035_420_000;

    fn flight(tailnum: &str, t: i64, cancelled: bool) -> String {
        format!(
            r#"{{"carrier":"UA","flight":1545,"tailnum":"{tailnum}","event_time_ms":{t},"cancelled":{cancelled}}}"#
        )
    }

    fn harness() -> KeyedHarness<PlaneGaps> {
        KeyedHarness::configure(Vec::<(String, String)>::new()).unwrap()
    }

    fn push(h: &mut KeyedHarness<PlaneGaps>, tailnum: &str, t: i64, cancelled: bool) {
        h.push(
            tailnum.as_bytes(),
            flight(tailnum, t, cancelled).as_bytes(),
            t,
        );
    }

    /// (key, event time, value) of everything emitted.
    fn emitted(h: &mut KeyedHarness<PlaneGaps>) -> Vec<(String, i64, String)> {
        h.take_output()
            .events
            .iter()
            .map(|e| {
                (
                    String::from_utf8(e.key().unwrap().to_vec()).unwrap(),
                    e.timestamp_ms(),
                    String::from_utf8(e.value().to_vec()).unwrap(),
                )
            })
            .collect()
    }

    fn with_minutes(tailnum: &str, t: i64, minutes: &str) -> (String, i64, String) {
        let f = flight(tailnum, t, false);
        let value = format!("{},\"minutes_since_prev\":{minutes}}}", &f[..f.len() - 1]);
        (tailnum.to_string(), t, value)
    }

    fn idle(tailnum: &str, last: i64, at: i64) -> (String, i64, String) {
        (
            tailnum.to_string(),
            at,
            format!(
                r#"{{"event":"idle","tailnum":"{tailnum}","last_departure_ms":{last},"idle_at_ms":{at}}}"#
            ),
        )
    }

    #[test]
    fn gaps_per_plane_first_flight_null_and_cancelled_untouched() {
        let mut h = harness();
        // A: 10:17, then 95 min later, then a cancelled flight, then 3 days
        // after the second. B: 10:33 then 1 min 59 s later (1 whole minute).
        let (a1, a2, a3) = (T0, T0 + 95 * MIN, T0 + 95 * MIN + 3 * DAY);
        let (b1, b2) = (T0 + 16 * MIN, T0 + 17 * MIN + 59_000);
        push(&mut h, "N1", a1, false);
        push(&mut h, "N2", b1, false);
        push(&mut h, "N2", b2, false);
        push(&mut h, "N1", a2, false);
        push(&mut h, "N1", a2 + 10 * MIN, true);
        push(&mut h, "N1", a3, false);
        h.run().unwrap();
        assert_eq!(
            emitted(&mut h),
            [
                with_minutes("N1", a1, "null"),
                with_minutes("N2", b1, "null"),
                with_minutes("N2", b2, "1"),
                with_minutes("N1", a2, "95"),
                (
                    "N1".to_string(),
                    a2 + 10 * MIN,
                    flight("N1", a2 + 10 * MIN, true)
                ),
                with_minutes("N1", a3, &(3 * 24 * 60).to_string()),
            ]
        );
        assert_eq!(h.state(b"N1"), Some(Plane { last_ms: a3 }));
        assert_eq!(
            h.state_bytes(b"N2"),
            Some(format!("{{\"last_ms\":{b2}}}").as_bytes())
        );
        // One idle timer per plane, at its last departure + 7 days.
        let timers: Vec<i64> = h.timers(b"N1").iter().map(|t| t.time).collect();
        assert_eq!(timers, [a3 + 7 * DAY]);
        let timers: Vec<i64> = h.timers(b"N2").iter().map(|t| t.time).collect();
        assert_eq!(timers, [b2 + 7 * DAY]);
    }

    #[test]
    fn a_plane_on_the_ground_over_7_days_is_reported_once() {
        let mut h = harness();
        let b1 = T0 - 10 * MIN;
        let a1 = T0;
        push(&mut h, "N2", b1, false);
        push(&mut h, "N1", a1, false);
        h.run().unwrap();
        emitted(&mut h);
        // 6 days 23 h 59 min later N2 flies (before N1's 7 days are up):
        // under 7 days, no idle event.
        let b2 = b1 + 7 * DAY - MIN;
        push(&mut h, "N2", b2, false);
        // Another plane 7 days after N1 to the ms: N1's timer is due (its
        // time <= the watermark) and fires before the next event.
        push(&mut h, "N3", a1 + 7 * DAY, false);
        // N1 comes back 8 days after it left: 11520 minutes.
        push(&mut h, "N1", a1 + 8 * DAY, false);
        h.run().unwrap();
        assert_eq!(
            emitted(&mut h),
            [
                with_minutes("N2", b2, &(7 * 24 * 60 - 1).to_string()),
                with_minutes("N3", a1 + 7 * DAY, "null"),
                idle("N1", a1, a1 + 7 * DAY),
                with_minutes("N1", a1 + 8 * DAY, &(8 * 24 * 60).to_string()),
            ]
        );
        // The state is kept by the timer: the gap is measured all the same.
        assert_eq!(
            h.state(b"N1"),
            Some(Plane {
                last_ms: a1 + 8 * DAY
            })
        );
        // The end of the input: every plane still waiting goes idle.
        h.advance_watermark(i64::MAX).unwrap();
        assert_eq!(
            emitted(&mut h),
            [
                idle("N2", b2, b2 + 7 * DAY),
                idle("N3", a1 + 7 * DAY, a1 + 14 * DAY),
                idle("N1", a1 + 8 * DAY, a1 + 15 * DAY),
            ]
        );
    }

    #[test]
    fn a_cancelled_flight_moves_no_timer() {
        let mut h = harness();
        push(&mut h, "N1", T0, false);
        push(&mut h, "N1", T0 + DAY, true);
        h.run().unwrap();
        assert_eq!(h.state(b"N1"), Some(Plane { last_ms: T0 }));
        let timers: Vec<i64> = h.timers(b"N1").iter().map(|t| t.time).collect();
        assert_eq!(timers, [T0 + 7 * DAY]);
    }

    #[test]
    fn idle_minutes_is_configurable_and_checked() {
        let mut h = KeyedHarness::<PlaneGaps>::configure([("idle_minutes", "30")]).unwrap();
        push(&mut h, "N1", T0, false);
        push(&mut h, "N2", T0 + 31 * MIN, false);
        h.run().unwrap();
        assert_eq!(emitted(&mut h)[2], idle("N1", T0, T0 + 30 * MIN));
        for bad in ["0", "-5", "soon", "1.5"] {
            let err =
                PlaneGaps::configure(&Config::from_pairs([("idle_minutes", bad)])).unwrap_err();
            assert!(err.starts_with("config `idle_minutes`: "), "{bad}: {err}");
        }
    }

    #[test]
    fn not_an_object_is_rejected_and_no_key_passes_through() {
        let mut h = harness();
        h.push(b"N1", b"[1]", T0);
        h.push(b"", br#"{"tailnum":null,"cancelled":false}"#, T0);
        h.run().unwrap();
        let out = h.take_output();
        assert_eq!(out.rejected.len(), 1);
        assert_eq!(
            (out.rejected[0].index, out.rejected[0].reason.as_str()),
            (0, "not a JSON object")
        );
        assert_eq!(
            out.events.get(0).unwrap().value(),
            br#"{"tailnum":null,"cancelled":false}"#
        );
        assert_eq!(h.state(b"N1"), None);
        assert_eq!(h.state(b""), None);
    }

    /// Every flight of the dataset, keyed by `tailnum`, in micro-batches of
    /// 1,000: each gap against a plain serde_json pass, and the idle events
    /// against the rule from the data (the dataset is in event-time order):
    /// a departure goes idle when the flight just before the plane's next
    /// departure (or the last flight, for its last) left at least 7 days
    /// after it.
    #[test]
    fn every_flight_of_the_dataset() {
        use std::collections::{BTreeSet, HashMap};
        use std::io::BufRead;
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../examples/data/flights-2013.ndjson.gz"
        );
        let file = std::fs::File::open(path).unwrap();
        let lines: Vec<Vec<u8>> = std::io::BufReader::new(flate2::read::MultiGzDecoder::new(file))
            .split(b'\n')
            .map(Result::unwrap)
            .filter(|l| !l.is_empty())
            .collect();
        assert_eq!(lines.len(), 336_776);
        let flights: Vec<serde_json::Map<String, serde_json::Value>> = lines
            .iter()
            .map(|l| serde_json::from_slice(l).unwrap())
            .collect();
        let key = |f: &serde_json::Map<String, serde_json::Value>| {
            f["tailnum"].as_str().unwrap_or("").to_string()
        };
        let time =
            |f: &serde_json::Map<String, serde_json::Value>| f["event_time_ms"].as_i64().unwrap();

        let mut h = harness();
        for (i, (line, f)) in lines.iter().zip(&flights).enumerate() {
            h.push(key(f).as_bytes(), line, time(f));
            if i % 1_000 == 999 {
                h.run().unwrap();
            }
        }
        h.run().unwrap();
        let out = h.take_output();
        assert!(out.rejected.is_empty());

        // The reference: the gaps.
        let mut last: HashMap<String, i64> = HashMap::new();
        let mut expected_gaps = Vec::new();
        for f in &flights {
            let k = key(f);
            if k.is_empty() || f["cancelled"] == serde_json::Value::Bool(true) {
                expected_gaps.push(None);
                continue;
            }
            let t = time(f);
            expected_gaps.push(Some(last.insert(k, t).map(|prev| (t - prev) / 60_000)));
        }
        // The idle departures, from each departure's successor.
        let max_t = flights.iter().map(time).max().unwrap();
        let mut departures: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, f) in flights.iter().enumerate() {
            if !key(f).is_empty() && f["cancelled"] != serde_json::Value::Bool(true) {
                departures.entry(key(f)).or_default().push(i);
            }
        }
        let mut expected_idle = BTreeSet::new();
        for (k, ds) in &departures {
            for (n, &i) in ds.iter().enumerate() {
                let due = time(&flights[i]) + 7 * DAY;
                let before_next = match ds.get(n + 1) {
                    Some(&next) => time(&flights[next - 1]),
                    None => max_t,
                };
                if before_next >= due {
                    expected_idle.insert((k.clone(), time(&flights[i]), due));
                }
            }
        }

        let mut gaps = Vec::new();
        let mut idle = BTreeSet::new();
        for e in &out.events {
            let v: serde_json::Map<String, serde_json::Value> =
                serde_json::from_slice(e.value()).unwrap();
            if v.get("event").and_then(|x| x.as_str()) == Some("idle") {
                let k = v["tailnum"].as_str().unwrap().to_string();
                assert_eq!(e.key(), Some(k.as_bytes()));
                assert_eq!(e.timestamp_ms(), v["idle_at_ms"].as_i64().unwrap());
                idle.insert((
                    k,
                    v["last_departure_ms"].as_i64().unwrap(),
                    v["idle_at_ms"].as_i64().unwrap(),
                ));
                continue;
            }
            gaps.push(v.get("minutes_since_prev").map(|m| m.as_i64()));
        }
        assert_eq!(gaps.len(), flights.len());
        assert_eq!(gaps, expected_gaps);
        assert_eq!(idle, expected_idle);
        assert!(idle.len() > 1_000, "{} idle planes", idle.len());
    }
}
