//! The micro-batcher: cuts a partition's record stream into batches.
//!
//! A batch closes on whichever comes first (Spark's trigger interval, Vector's
//! `batch.max_events` / `max_bytes` / `timeout_secs`):
//! - it holds `max_records` records;
//! - it holds `max_bytes` bytes (keys + values) — a record that would push it past
//!   the limit closes it and opens the next; a single record larger than the limit
//!   makes a batch of its own;
//! - `interval` has passed since its first record (the worker waits on
//!   [`Batcher::deadline`] and calls [`Batcher::take`]).
//!
//! The batch is built in its packed WIT form as records arrive, so handing it to
//! a plugin costs no further per-record work.

use std::time::{Duration, Instant};

use sluice_plugin_sdk::Batch;

/// When a batch closes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchLimits {
    /// Most records in a batch (≥ 1).
    pub max_records: usize,
    /// Most key + value bytes in a batch (≥ 1).
    pub max_bytes: usize,
    /// Longest time a batch stays open after its first record.
    pub interval: Duration,
}

/// Builds batches for one partition.
#[derive(Debug)]
pub struct Batcher {
    limits: BatchLimits,
    batch: Batch,
    opened: Option<Instant>,
    /// Records and value bytes of the last batch taken, until the next batch
    /// gets that much room (when its first record comes).
    room: Option<(usize, usize)>,
}

impl Batcher {
    /// An empty batcher. Limits of 0 are taken as 1.
    pub fn new(limits: BatchLimits) -> Self {
        let mut batcher = Batcher {
            limits,
            batch: Batch::new(),
            opened: None,
            room: None,
        };
        batcher.set_limits(limits);
        batcher
    }

    /// New limits (a config reload); they apply from the next record on.
    pub fn set_limits(&mut self, limits: BatchLimits) {
        self.limits = BatchLimits {
            max_records: limits.max_records.max(1),
            max_bytes: limits.max_bytes.max(1),
            ..limits
        };
    }

    /// Adds a record without headers (an empty key: none); calls `emit`
    /// with each batch this closes (zero, one or two: the open batch when this
    /// record does not fit in it, and a batch made full by this record).
    /// The tests' way in; the worker appends chunks with
    /// [`Batcher::push_events`].
    #[cfg(test)]
    pub fn push(
        &mut self,
        key: &[u8],
        value: &[u8],
        timestamp_ms: i64,
        now: Instant,
        mut emit: impl FnMut(Batch),
    ) {
        self.make_room(key.len() + value.len(), now, &mut emit);
        self.batch.push(Some(key), value, timestamp_ms);
        self.close_if_full(emit);
    }

    /// Adds a copy of `event` (key, value, event time and headers), as
    /// [`Batcher::push`] does: the record-by-record model
    /// [`Batcher::push_events`] is tested against (the worker uses that).
    #[cfg(test)]
    pub fn push_event(
        &mut self,
        event: &sluice_plugin_sdk::Event<'_>,
        now: Instant,
        mut emit: impl FnMut(Batch),
    ) {
        let size = event.key().map_or(0, <[u8]>::len) + event.value().len();
        self.make_room(size, now, &mut emit);
        self.batch.push_event(event);
        self.close_if_full(emit);
    }

    /// Adds copies of `events`' records from `range.start` on, as
    /// `push_event` on each would (a batch closes at the same records), but with one copy per column
    /// ([`Batch::extend_from`]) for the run of records that fit the open
    /// batch. Returns the index of the first record not added: it stops at
    /// `range.end`, at a batch made full (closed and given to `emit`), or
    /// before a record that does not fit (the next call closes the batch
    /// first). At least one record is added when `range` is not empty;
    /// `emit` is called at most twice (the open batch that the first
    /// record does not fit in, and a batch made full).
    pub fn push_events(
        &mut self,
        events: &Batch,
        range: std::ops::Range<usize>,
        now: Instant,
        mut emit: impl FnMut(Batch),
    ) -> usize {
        let start = range.start;
        if range.is_empty() {
            return start;
        }
        // The first record: as push_event (it may close the open batch, and
        // it always goes in).
        self.make_room(events.byte_size_of(start..start + 1), now, &mut emit);
        // How many of the next records fit: below max_records, and each
        // within max_bytes (a batch that is not empty never passes it).
        // A reload may have lowered max_records below what the open batch
        // holds: then no room, and the first record alone goes in (and
        // closes it), as with push_event.
        let room = self.limits.max_records.saturating_sub(self.batch.len());
        let mut bytes = self.batch.byte_size() + events.byte_size_of(start..start + 1);
        let mut stop = start + 1;
        while stop < range.end && stop - start < room && bytes < self.limits.max_bytes {
            let size = events.byte_size_of(stop..stop + 1);
            if bytes + size > self.limits.max_bytes {
                break;
            }
            bytes += size;
            stop += 1;
        }
        self.batch.extend_from(events, start..stop);
        // Full: closed at the record push_event would close it at. (When
        // the next record does not fit, the next call's make_room closes it.)
        self.close_if_full(emit);
        stop
    }

    /// Closes the open batch when a record of `size` bytes would push it
    /// past `max_bytes`; opens one if none is.
    fn make_room(&mut self, size: usize, now: Instant, emit: &mut impl FnMut(Batch)) {
        if !self.batch.is_empty() && self.batch.byte_size() + size > self.limits.max_bytes {
            emit(self.take());
        }
        if self.batch.is_empty() {
            self.opened = Some(now);
            if let Some((records, bytes)) = self.room.take() {
                self.batch = Batch::with_capacity(records, bytes);
            }
        }
    }

    fn close_if_full(&mut self, mut emit: impl FnMut(Batch)) {
        if self.batch.len() >= self.limits.max_records
            || self.batch.byte_size() >= self.limits.max_bytes
        {
            emit(self.take());
        }
    }

    /// When the open batch must close (its first record's arrival + `interval`),
    /// or `None` when no batch is open.
    pub fn deadline(&self) -> Option<Instant> {
        self.opened
            .and_then(|t| t.checked_add(self.limits.interval))
    }

    /// Whether no record is waiting.
    pub fn is_empty(&self) -> bool {
        self.batch.is_empty()
    }

    /// Closes the open batch (possibly empty) and returns it. The next batch
    /// gets its room (as much as this one held) when its first record comes,
    /// not now: a worker runs the batch taken first, so that one batch's
    /// buffers, not two, are held while it runs.
    pub fn take(&mut self) -> Batch {
        self.opened = None;
        if !self.batch.is_empty() {
            self.room = Some((self.batch.len(), self.batch.values_len()));
        }
        std::mem::take(&mut self.batch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn limits(max_records: usize, max_bytes: usize) -> BatchLimits {
        BatchLimits {
            max_records,
            max_bytes,
            interval: Duration::from_millis(100),
        }
    }

    #[test]
    fn interval_starts_at_the_first_record() {
        let t0 = Instant::now();
        let mut b = Batcher::new(limits(10, 1000));
        assert_eq!(b.deadline(), None);
        b.push(b"k", b"v", 0, t0, |_| panic!("not full"));
        b.push(b"k", b"v", 0, t0 + Duration::from_millis(50), |_| {
            panic!("not full")
        });
        assert_eq!(b.deadline(), Some(t0 + Duration::from_millis(100)));
        assert_eq!(b.take().len(), 2);
        assert_eq!(b.deadline(), None);
    }

    #[test]
    fn oversized_record_makes_its_own_batch() {
        let mut b = Batcher::new(limits(10, 8));
        let mut out = Vec::new();
        let now = Instant::now();
        b.push(b"", b"abc", 0, now, |x| out.push(x));
        b.push(b"", b"0123456789", 1, now, |x| out.push(x));
        let lens: Vec<usize> = out.iter().map(Batch::len).collect();
        assert_eq!(lens, vec![1, 1]);
        assert!(b.is_empty());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]
        /// Nothing lost, nothing duplicated, order kept, limits respected.
        #[test]
        fn batches_partition_the_stream(
            sizes in proptest::collection::vec(0usize..40, 0..300),
            max_records in 1usize..20,
            max_bytes in 1usize..200,
        ) {
            let mut b = Batcher::new(limits(max_records, max_bytes));
            let mut batches = Vec::new();
            let now = Instant::now();
            for (i, size) in sizes.iter().enumerate() {
                let value = vec![b'x'; *size];
                b.push(&(i as u32).to_le_bytes(), &value, i as i64, now, |x| batches.push(x));
            }
            batches.push(b.take());
            let mut seen = Vec::new();
            for batch in &batches {
                prop_assert!(batch.len() <= max_records);
                prop_assert!(batch.byte_size() <= max_bytes || batch.len() == 1);
                for e in batch {
                    seen.push(e.timestamp_ms() as usize);
                    prop_assert_eq!(e.value().len(), sizes[e.timestamp_ms() as usize]);
                }
            }
            prop_assert_eq!(seen, (0..sizes.len()).collect::<Vec<_>>());
        }

        /// `push_events` over chunks cut anywhere closes the same batches,
        /// at the same records, as `push_event` record by record.
        #[test]
        fn push_events_closes_what_push_event_closes(
            sizes in proptest::collection::vec((0usize..5, 0usize..40), 0..300),
            cuts in proptest::collection::vec(1usize..50, 1..10),
            max_records in 1usize..20,
            max_bytes in 1usize..200,
            new_limits in (1usize..20, 1usize..200),
        ) {
            let mut input = Batch::new();
            for (i, (key, value)) in sizes.iter().enumerate() {
                input.push(Some(&vec![b'k'; *key]), &vec![b'v'; *value], i as i64);
                if i % 7 == 3 {
                    input.push_header("h", &[i as u8]);
                }
            }
            let now = Instant::now();
            // Halfway, the limits change (a config reload), possibly below
            // what the open batch holds.
            let half = input.len() / 2;
            let later = limits(new_limits.0, new_limits.1);
            let mut each = Batcher::new(limits(max_records, max_bytes));
            let mut expected = Vec::new();
            for (i, event) in input.iter().enumerate() {
                if i == half {
                    each.set_limits(later);
                }
                each.push_event(&event, now, |x| expected.push(x));
            }
            expected.push(each.take());
            let mut bulk = Batcher::new(limits(max_records, max_bytes));
            let mut got = Vec::new();
            let (mut at, mut cut) = (0, cuts.iter().cycle());
            while at < input.len() {
                if at == half {
                    bulk.set_limits(later);
                }
                let mut end = (at + cut.next().unwrap()).min(input.len());
                if at < half && end > half {
                    end = half;
                }
                let mut i = at;
                while i < end {
                    let next = bulk.push_events(&input, i..end, now, |x| got.push(x));
                    prop_assert!(next > i);
                    i = next;
                }
                at = end;
            }
            got.push(bulk.take());
            prop_assert_eq!(got, expected);
        }
    }
}
