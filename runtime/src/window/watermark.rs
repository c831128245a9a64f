//! The event-time watermark of a pipeline: how far event time has surely
//! progressed, so that windows ending before it can be closed.
//!
//! Each partition's watermark is the largest event time it has seen minus the
//! configured delay (Flink's bounded-out-of-orderness strategy, Spark's
//! `withWatermark`). The pipeline's watermark is the minimum over the
//! partitions (Flink's rule for parallel inputs): one slow partition holds it
//! back. A partition that has sent nothing for `idle_timeout` does not hold it
//! back (Flink's `withIdleness`) until it sends again; a partition that has
//! never sent anything holds it back for `idle_timeout` from the start. The
//! pipeline's watermark never goes back.

use std::time::{Duration, Instant};

/// The watermark before any event: nothing is known.
pub const NONE: i64 = i64::MIN;

/// Tracks the per-partition and pipeline watermarks.
#[derive(Debug)]
pub struct Watermarks {
    delay_ms: i64,
    idle_timeout: Duration,
    started: Instant,
    /// Per partition: (largest event time seen, when it last sent).
    partitions: Vec<(Option<i64>, Option<Instant>)>,
    current: i64,
}

impl Watermarks {
    /// Watermarks for `partitions` partitions.
    pub fn new(partitions: usize, delay_ms: i64, idle_timeout: Duration, now: Instant) -> Self {
        Watermarks {
            delay_ms,
            idle_timeout,
            started: now,
            partitions: vec![(None, None); partitions],
            current: NONE,
        }
    }

    /// Partition `p` sent a batch whose largest event time is `max_ts` (`None`:
    /// an empty batch, which still shows it is alive).
    pub fn observe(&mut self, p: usize, max_ts: Option<i64>, now: Instant) {
        if let Some(entry) = self.partitions.get_mut(p) {
            if let Some(t) = max_ts {
                entry.0 = Some(entry.0.map_or(t, |m| m.max(t)));
            }
            entry.1 = Some(now);
        }
    }

    /// The pipeline's watermark now (never less than before).
    pub fn advance(&mut self, now: Instant) -> i64 {
        let mut low: Option<i64> = None;
        let mut any_active = false;
        for (max_ts, last) in &self.partitions {
            let active = match last {
                Some(t) => now.duration_since(*t) < self.idle_timeout,
                None => now.duration_since(self.started) < self.idle_timeout,
            };
            if !active {
                continue;
            }
            any_active = true;
            let wm = max_ts.map_or(NONE, |m| m.saturating_sub(self.delay_ms));
            low = Some(low.map_or(wm, |l| l.min(wm)));
        }
        let candidate = if any_active {
            low.unwrap_or(NONE)
        } else {
            // Every partition idle: the largest known watermark.
            self.partitions
                .iter()
                .filter_map(|(m, _)| m.map(|m| m.saturating_sub(self.delay_ms)))
                .max()
                .unwrap_or(NONE)
        };
        self.current = self.current.max(candidate);
        self.current
    }

    /// The last value [`Watermarks::advance`] returned.
    pub fn current(&self) -> i64 {
        self.current
    }

    /// Per partition the largest event time seen, and the watermark: what a
    /// checkpoint keeps.
    pub fn snapshot(&self) -> (Vec<Option<i64>>, i64) {
        (
            self.partitions.iter().map(|(m, _)| *m).collect(),
            self.current,
        )
    }

    /// Takes up a checkpoint's [`Watermarks::snapshot`]; idleness starts anew.
    /// Partitions beyond the saved ones start unseen.
    pub fn restore(&mut self, max_ts: &[Option<i64>], current: i64) {
        for (entry, m) in self.partitions.iter_mut().zip(max_ts) {
            entry.0 = *m;
        }
        self.current = self.current.max(current);
    }

    /// End of input: every window may close.
    pub fn finish(&mut self) -> i64 {
        self.current = i64::MAX;
        self.current
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn minimum_over_partitions_and_idleness() {
        let t0 = Instant::now();
        let mut w = Watermarks::new(2, 10, Duration::from_secs(5), t0);
        w.observe(0, Some(100), t0);
        assert_eq!(w.advance(t0), NONE, "partition 1 has not spoken yet");
        w.observe(1, Some(50), t0);
        assert_eq!(w.advance(t0), 40);
        w.observe(0, Some(200), t0 + Duration::from_secs(1));
        assert_eq!(w.advance(t0 + Duration::from_secs(1)), 40);
        // Partition 1 falls silent: after 5 s it no longer holds the watermark.
        assert_eq!(w.advance(t0 + Duration::from_secs(6)), 190);
        // It speaks again with an old time: the watermark does not go back.
        w.observe(1, Some(60), t0 + Duration::from_secs(7));
        assert_eq!(w.advance(t0 + Duration::from_secs(7)), 190);
        assert_eq!(w.finish(), i64::MAX);
    }

    proptest! {
        /// Whatever the partitions report and whenever, the watermark never
        /// decreases.
        #[test]
        fn the_watermark_is_monotonic(
            steps in proptest::collection::vec((0usize..3, proptest::option::of(-1000i64..1000), 0u64..3000), 1..60),
        ) {
            let t0 = Instant::now();
            let mut w = Watermarks::new(3, 5, Duration::from_millis(1000), t0);
            let mut now = t0;
            let mut last = NONE;
            for (p, ts, dt) in steps {
                now += Duration::from_millis(dt);
                w.observe(p, ts, now);
                let wm = w.advance(now);
                prop_assert!(wm >= last, "{} after {}", wm, last);
                last = wm;
            }
        }
    }
}
