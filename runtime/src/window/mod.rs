//! Event-time windows: which windows a record at a given event time belongs to.
//!
//! Windows are half-open intervals `[start, end)` of event time in milliseconds
//! since the Unix epoch, aligned to the epoch (as Spark's `window()` and Flink's
//! `TumblingEventTimeWindows` with no offset):
//! - **tumbling** (`size`): one window per record, `start = t - t mod size`;
//! - **sliding** (`size`, `slide`): the `size / slide` windows of length `size`
//!   starting at multiples of `slide` that contain `t` (Flink's
//!   `SlidingEventTimeWindows`, Spark's `window(col, size, slide)`);
//! - **session** (`gap`): each record opens `[t, t + gap)`; windows of one key
//!   that overlap merge (Flink's `EventTimeSessionWindows`, Spark's
//!   `session_window`).

pub mod watermark;

pub mod operator;

use serde::Serialize;

/// The event times windows take: the years 0000 to 9999 (what RFC 3339 can
/// write), in ms since the Unix epoch. A record outside has no window.
pub const TIME_RANGE: std::ops::RangeInclusive<i64> = -62_167_219_200_000..=253_402_300_799_999;

/// A window `[start, end)`, ms since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Window {
    /// First instant in the window.
    pub start: i64,
    /// First instant after it.
    pub end: i64,
}

/// The kind of window, with its lengths in ms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowKind {
    /// Fixed, non-overlapping windows of `size` ms.
    Tumbling {
        /// Length, ms (> 0).
        size: i64,
    },
    /// Windows of `size` ms starting every `slide` ms.
    Sliding {
        /// Length, ms (> 0).
        size: i64,
        /// Distance between starts, ms (0 < slide ≤ size).
        slide: i64,
    },
    /// Per-key windows that close after `gap` ms without a record.
    Session {
        /// Inactivity gap, ms (> 0).
        gap: i64,
    },
}

impl WindowKind {
    /// The windows a record at `t` belongs to, in increasing start order (for a
    /// session: its own `[t, t + gap)`, before merging). None when `t` is out of
    /// [`TIME_RANGE`].
    pub fn assign(&self, t: i64, out: &mut Vec<Window>) {
        out.clear();
        // In range, no bound below overflows: |t| < 2^58 and lengths ≤ a year.
        if !TIME_RANGE.contains(&t) {
            return;
        }
        match *self {
            WindowKind::Tumbling { size } => {
                let start = t - t.rem_euclid(size);
                out.push(Window {
                    start,
                    end: start.saturating_add(size),
                });
            }
            WindowKind::Sliding { size, slide } => {
                // Starts are the multiples of `slide` in (t - size, t].
                let mut start = t.saturating_sub(size).div_euclid(slide) * slide + slide;
                while start <= t {
                    out.push(Window {
                        start,
                        end: start.saturating_add(size),
                    });
                    start += slide;
                }
            }
            WindowKind::Session { gap } => out.push(Window {
                start: t,
                end: t.saturating_add(gap),
            }),
        }
    }

    /// Whether windows of one key merge when they overlap.
    pub fn merges(&self) -> bool {
        matches!(self, WindowKind::Session { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn kind() -> impl Strategy<Value = WindowKind> {
        prop_oneof![
            (1i64..10_000).prop_map(|size| WindowKind::Tumbling { size }),
            (1i64..2_000, 1i64..8).prop_map(|(slide, k)| WindowKind::Sliding {
                size: slide * k,
                slide
            }),
            (1i64..2_000, 1i64..2_000).prop_map(|(slide, extra)| WindowKind::Sliding {
                size: slide + extra,
                slide
            }),
        ]
    }

    proptest! {
        /// A record lands in exactly the windows that contain its time: every
        /// window assigned contains t, is aligned, and no aligned window that
        /// contains t is missing.
        #[test]
        fn every_record_lands_in_exactly_the_windows_containing_it(
            kind in kind(), t in -1_000_000i64..1_000_000,
        ) {
            let mut got = Vec::new();
            kind.assign(t, &mut got);
            let (size, slide) = match kind {
                WindowKind::Tumbling { size } => (size, size),
                WindowKind::Sliding { size, slide } => (size, slide),
                WindowKind::Session { .. } => unreachable!(),
            };
            // Brute force: every aligned start within reach.
            let mut want = Vec::new();
            let mut start = (t - size - slide).div_euclid(slide) * slide;
            while start <= t {
                if start <= t && t < start + size {
                    want.push(Window { start, end: start + size });
                }
                start += slide;
            }
            prop_assert_eq!(got, want);
        }
    }

    #[test]
    fn times_out_of_range_have_no_window() {
        let mut w = Vec::new();
        for kind in [
            WindowKind::Tumbling { size: 3_600_000 },
            WindowKind::Sliding {
                size: 3_600_000,
                slide: 1_800_000,
            },
            WindowKind::Session { gap: 60_000 },
        ] {
            for t in [
                i64::MIN,
                i64::MAX,
                *TIME_RANGE.end() + 1,
                *TIME_RANGE.start() - 1,
            ] {
                kind.assign(t, &mut w);
                assert!(w.is_empty(), "{kind:?} at {t}");
            }
            kind.assign(*TIME_RANGE.end(), &mut w);
            assert!(!w.is_empty());
        }
    }

    #[test]
    fn examples() {
        let mut w = Vec::new();
        WindowKind::Tumbling { size: 10 }.assign(-1, &mut w);
        assert_eq!(w, vec![Window { start: -10, end: 0 }]);
        WindowKind::Sliding { size: 10, slide: 5 }.assign(12, &mut w);
        assert_eq!(
            w,
            vec![Window { start: 5, end: 15 }, Window { start: 10, end: 20 }]
        );
        WindowKind::Session { gap: 7 }.assign(3, &mut w);
        assert_eq!(w, vec![Window { start: 3, end: 10 }]);
    }
}
