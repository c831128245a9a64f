//! A chunk of records on its way from a source to a partition worker, in the
//! packed form a plugin receives ([`Batch`]: one buffer of values, one of
//! keys, offsets, event times, headers), so that a source adds a record
//! with two copies into buffers it reuses and no allocation of its own, and
//! a worker moves it into its batch without a per-record allocation either.

use sluice_plugin_sdk::{Batch, Event};

use super::Record;

/// Records in order, packed. An empty key means "no key", as in
/// [`Record::key`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Records {
    events: Batch,
    /// Each record's window task (Kafka sources, see [`Record::task`]);
    /// empty while no record has one.
    tasks: Vec<Option<u32>>,
}

impl Records {
    /// An empty chunk with room for `records` records and `bytes` bytes of
    /// values.
    pub fn with_capacity(records: usize, bytes: usize) -> Self {
        Records {
            events: Batch::with_capacity(records, bytes),
            tasks: Vec::new(),
        }
    }

    /// Appends a record without headers or task: a copy of `key` and
    /// `value` into the chunk's buffers.
    pub fn push(&mut self, key: &[u8], value: &[u8], timestamp_ms: i64) {
        self.events.push(Some(key), value, timestamp_ms);
        if !self.tasks.is_empty() {
            self.tasks.push(None);
        }
    }

    /// [`Records::push`] of a JSON record with the top-level members the
    /// decoder found in `value` (see [`Batch::push_indexed`]).
    pub fn push_indexed(&mut self, key: &[u8], value: &[u8], timestamp_ms: i64, members: &[u16]) {
        self.events
            .push_indexed(Some(key), value, timestamp_ms, members);
        if !self.tasks.is_empty() {
            self.tasks.push(None);
        }
    }

    /// Appends `record` with its headers and task.
    pub fn push_record(&mut self, record: &Record) {
        self.events
            .push(Some(&record.key), &record.value, record.timestamp_ms);
        for (name, value) in &record.headers {
            self.events.push_header(name, value);
        }
        if record.task.is_some() || !self.tasks.is_empty() {
            // The records before the first with a task have none.
            self.tasks.resize(self.events.len() - 1, None);
            self.tasks.push(record.task);
        }
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.events.len()
    }

    /// Bytes of all values.
    pub fn values_len(&self) -> usize {
        self.events.values_len()
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// Whether the chunk is full: [`super::CHUNK_RECORDS`] records or
    /// [`super::CHUNK_BYTES`] bytes of keys and values.
    pub fn is_full(&self) -> bool {
        self.len() >= super::CHUNK_RECORDS || self.events.byte_size() >= super::CHUNK_BYTES
    }

    /// The records' keys, values, event times and headers, packed (what
    /// [`crate::pipeline`]'s batcher copies from in bulk).
    pub fn events(&self) -> &Batch {
        &self.events
    }

    /// Record `index`'s task (`None` also past the end).
    pub fn task(&self, index: usize) -> Option<u32> {
        self.tasks.get(index).copied().flatten()
    }

    /// The end of the run of records from `start` on that share its task
    /// (`len()` at most).
    pub fn task_run_end(&self, start: usize) -> usize {
        if self.tasks.is_empty() {
            return self.len();
        }
        let task = self.task(start);
        (start..self.len())
            .find(|&i| self.task(i) != task)
            .unwrap_or(self.len())
    }

    /// Record `index`: its key, value, event time and headers, and its task.
    pub fn get(&self, index: usize) -> Option<(Event<'_>, Option<u32>)> {
        let event = self.events.get(index)?;
        Some((event, self.tasks.get(index).copied().flatten()))
    }

    /// The records as owned [`Record`]s (copies; for tests and the rare
    /// caller that keeps single records).
    pub fn to_records(&self) -> Vec<Record> {
        (0..self.len())
            .filter_map(|i| self.get(i))
            .map(|(event, task)| Record {
                key: event.key().unwrap_or_default().to_vec(),
                value: event.value().to_vec(),
                timestamp_ms: event.timestamp_ms(),
                headers: event
                    .headers()
                    .map(|(n, v)| (n.to_string(), v.to_vec()))
                    .collect(),
                task,
            })
            .collect()
    }
}

impl From<Vec<Record>> for Records {
    fn from(records: Vec<Record>) -> Self {
        let bytes = records.iter().map(|r| r.value.len()).sum();
        let mut packed = Records::with_capacity(records.len(), bytes);
        for record in &records {
            packed.push_record(record);
        }
        packed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(key: &str, value: &str, task: Option<u32>, headers: &[(&str, &str)]) -> Record {
        Record {
            key: key.into(),
            value: value.into(),
            timestamp_ms: value.len() as i64,
            headers: headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec()))
                .collect(),
            task,
        }
    }

    #[test]
    fn records_come_back_as_they_went_in() {
        let input = vec![
            record("", "keyless", None, &[]),
            record("k", "{\"a\":1}", None, &[("h", "1"), ("g", "")]),
            record("k2", "", Some(3), &[]),
            record("k3", "x", None, &[]),
        ];
        let packed = Records::from(input.clone());
        assert_eq!(packed.len(), 4);
        assert_eq!(packed.to_records(), input);
        assert_eq!(packed.get(2).unwrap().1, Some(3));
        assert_eq!(packed.get(3).unwrap().1, None);
        let mut plain = Records::default();
        plain.push(b"a", b"b", 1);
        assert_eq!(plain.to_records(), vec![record("a", "b", None, &[])]);
        assert!(plain.get(1).is_none());
        let first = vec![record("k", "v", Some(1), &[]), record("k", "w", None, &[])];
        assert_eq!(Records::from(first.clone()).to_records(), first);
    }

    /// A worker's channel is bounded in chunks; a chunk is full at 256 records
    /// or 256 KiB of keys and values, so large records make smaller chunks.
    #[test]
    fn the_outbox_cuts_chunks_at_256_records_or_256_kib() {
        use std::sync::Arc;

        use crate::source::{Chunk, Outbox};
        use crate::stats::Stats;

        let (tx, rx) = flume::unbounded();
        let mut outbox = Outbox::new(vec![tx], Arc::new(Stats::default()));
        let sent = |outbox: &mut Outbox| {
            outbox.flush(0).unwrap();
            rx.drain()
                .map(|chunk| match chunk {
                    Chunk::Records(r) => (r.len(), r.events().byte_size()),
                    other => panic!("not records: {other:?}"),
                })
                .collect::<Vec<_>>()
        };
        // 600 small records (1-byte key, 9-byte value): 256 + 256 + 88.
        for _ in 0..600 {
            outbox.push_parts(0, b"k", b"123456789", 0).unwrap();
        }
        assert_eq!(sent(&mut outbox), [(256, 2560), (256, 2560), (88, 880)]);
        // 100 records of 4 KiB + a 1-byte key: 64 × 4,097 B = 262,208 B is
        // the first count at or over 262,144 B.
        let value = vec![b'x'; 4096];
        for _ in 0..100 {
            outbox.push_parts(0, b"k", &value, 0).unwrap();
        }
        assert_eq!(sent(&mut outbox), [(64, 262_208), (36, 36 * 4097)]);
        // A record over 256 KiB closes the chunk it joins; alone, it is a
        // chunk of its own.
        let big = vec![b'y'; 300 << 10];
        outbox.push_parts(0, b"k", b"1", 0).unwrap();
        outbox.push_parts(0, b"k", &big, 0).unwrap();
        outbox.push_parts(0, b"k", &big, 0).unwrap();
        let one = 1 + (300 << 10);
        assert_eq!(sent(&mut outbox), [(2, 2 + one), (1, one)]);
    }
}
