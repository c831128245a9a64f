//! Parallel decode: when one source's thread is the bottleneck, it only cuts
//! its input into lines and gathers them into blocks; decoder threads decode
//! and route the blocks (JSON validation, key, event time, partition) into
//! packed per-partition chunks, and the source thread forwards the chunks to
//! the partition workers **in block order**, so every worker sees its
//! records in input order (per-key order is kept, as with one thread).
//!
//! The source thread waits for every block in flight ([`DecodePool::drain`])
//! before anything that must see all lines read so far: a checkpoint (its
//! position counts them as processed), a line it dead-letters itself (an
//! overlong one), an idle input, the end, and a read error (what was read is
//! forwarded, as one thread would have). With `partition_by = "balance"`
//! records go round-robin by their place among the non-blank lines; keyless
//! records by a hash of it ([`Router::route_at`]): no counter one thread
//! would keep.
//!
//! On by default for `format = "json"` on the kinds that read one big input
//! (file, dir, generator; a pipe or socket gets it when set): as many decoder threads as the machine has
//! cores, at most 4 (the source's `decode_threads` sets it; 0 decodes on the
//! source thread).

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;

use super::router::Router;
use super::{
    CHUNK_BYTES, CHUNK_RECORDS, LineDecoder, Outbox, Records, SourceSpec, WorkerGone, now_ms,
};
use crate::sink::dead_letter::DeadLetter;
use crate::stats::Stats;

/// Lines per block.
pub const BLOCK_LINES: usize = 1024;
/// Bytes of lines after which a block is sent before it has [`BLOCK_LINES`].
pub const BLOCK_BYTES: usize = 512 << 10;
/// Most decoder threads `decode_threads` defaults to.
pub const AUTO_MAX: usize = 4;

/// Decoder threads for a source that does not set `decode_threads`: the
/// machine's cores, at most [`AUTO_MAX`]; 0 on one core.
pub fn auto_threads() -> usize {
    match std::thread::available_parallelism().map_or(1, usize::from) {
        1 => 0,
        n => n.min(AUTO_MAX),
    }
}

/// Lines read, in order, and the place of the first in the input.
#[derive(Debug, Default)]
struct Block {
    data: Vec<u8>,
    ends: Vec<u32>,
    first_seq: u64,
}

impl Block {
    fn line(&self, i: usize) -> &[u8] {
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        &self.data[start..self.ends[i] as usize]
    }
}

/// A block decoded: chunks per partition (full at [`super::CHUNK_RECORDS`]
/// records or [`super::CHUNK_BYTES`] bytes, as the source's own chunks, so that
/// a full partition channel holds as much as ever), the lines that could not be
/// decoded (line index, reason), how many lines were records.
struct Decoded {
    block: Block,
    parts: Vec<Vec<Records>>,
    rejects: Vec<(usize, String)>,
    counted: u64,
}

struct Helper {
    jobs: Option<flume::Sender<Block>>,
    done: Option<flume::Receiver<Decoded>>,
    thread: Option<JoinHandle<()>>,
}

/// Decoder threads and the blocks in flight (see the module docs).
pub struct DecodePool {
    /// The source's format: what a blank line is.
    format: crate::config::Format,
    helpers: Vec<Helper>,
    /// Helper index of each block in flight, oldest first.
    in_flight: VecDeque<usize>,
    next: usize,
    filling: Block,
    seq: u64,
    spare: Vec<Block>,
}

impl DecodePool {
    /// `threads` decoder threads (≥ 1) for `spec`'s lines, routing over
    /// `router`'s partitions.
    ///
    /// # Errors
    /// A thread could not be started.
    pub fn start(spec: &SourceSpec, router: &Router, threads: usize) -> anyhow::Result<Self> {
        let mut helpers = Vec::with_capacity(threads);
        for i in 0..threads.max(1) {
            let (jobs, job_rx) = flume::bounded::<Block>(2);
            let (done_tx, done) = flume::bounded::<Decoded>(2);
            let spec = spec.clone();
            let router = router.clone();
            let thread = std::thread::Builder::new()
                .name(format!("{}-decode{i}", spec.name))
                .spawn(move || {
                    let decoder = LineDecoder::new(&spec);
                    for block in job_rx {
                        let decoded = decode_block(&spec, &decoder, &router, block);
                        if done_tx.send(decoded).is_err() {
                            return;
                        }
                    }
                })?;
            helpers.push(Helper {
                jobs: Some(jobs),
                done: Some(done),
                thread: Some(thread),
            });
        }
        Ok(DecodePool {
            format: spec.format,
            helpers,
            in_flight: VecDeque::new(),
            next: 0,
            filling: Block::default(),
            seq: 0,
            spare: Vec::new(),
        })
    }

    /// Adds a line (not yet decoded) to the block being filled; a full
    /// block goes to a decoder, and the oldest decoded blocks are forwarded
    /// when too many are in flight. A blank line is no record: it is
    /// dropped here, and takes no place in the blocks' numbering (see
    /// [`Router::route_at`]).
    ///
    /// # Errors
    /// A worker is gone (`Ok(Err(WorkerGone))`), or the dead-letter sink
    /// stopped.
    pub fn push_line(
        &mut self,
        line: &[u8],
        outbox: &mut Outbox,
        dead_letter: &DeadLetter,
        stats: &Stats,
    ) -> anyhow::Result<Result<(), WorkerGone>> {
        if super::is_blank_in(self.format, line) {
            return Ok(Ok(()));
        }
        if self.filling.ends.is_empty() && self.filling.data.capacity() == 0 {
            self.filling = self.spare.pop().unwrap_or_default();
        }
        self.filling.data.extend_from_slice(line);
        self.filling
            .ends
            .push(u32::try_from(self.filling.data.len()).expect("a block stays far below 4 GiB"));
        if self.filling.ends.len() >= BLOCK_LINES || self.filling.data.len() >= BLOCK_BYTES {
            return self.send_block(outbox, dead_letter, stats);
        }
        Ok(Ok(()))
    }

    fn send_block(
        &mut self,
        outbox: &mut Outbox,
        dead_letter: &DeadLetter,
        stats: &Stats,
    ) -> anyhow::Result<Result<(), WorkerGone>> {
        if self.filling.ends.is_empty() {
            return Ok(Ok(()));
        }
        if self.in_flight.len() >= 2 * self.helpers.len()
            && let Err(gone) = self.forward_oldest(outbox, dead_letter, stats)?
        {
            return Ok(Err(gone));
        }
        let mut block = std::mem::take(&mut self.filling);
        block.first_seq = self.seq;
        self.seq += block.ends.len() as u64;
        let h = self.next;
        self.next = (h + 1) % self.helpers.len();
        self.helpers[h]
            .jobs
            .as_ref()
            .expect("open until dropped")
            .send(block)
            .map_err(|_| anyhow::anyhow!("a decoder thread of the source stopped"))?;
        self.in_flight.push_back(h);
        Ok(Ok(()))
    }

    /// Sends the partial block and forwards every block in flight: after
    /// this, every line pushed is in the outbox or the dead-letter sink.
    ///
    /// # Errors
    /// As [`DecodePool::push_line`].
    pub fn drain(
        &mut self,
        outbox: &mut Outbox,
        dead_letter: &DeadLetter,
        stats: &Stats,
    ) -> anyhow::Result<Result<(), WorkerGone>> {
        if let Err(gone) = self.send_block(outbox, dead_letter, stats)? {
            return Ok(Err(gone));
        }
        while !self.in_flight.is_empty() {
            if let Err(gone) = self.forward_oldest(outbox, dead_letter, stats)? {
                return Ok(Err(gone));
            }
        }
        Ok(Ok(()))
    }

    /// Whether lines wait to be forwarded.
    pub fn is_pending(&self) -> bool {
        !self.in_flight.is_empty() || !self.filling.ends.is_empty()
    }

    fn forward_oldest(
        &mut self,
        outbox: &mut Outbox,
        dead_letter: &DeadLetter,
        stats: &Stats,
    ) -> anyhow::Result<Result<(), WorkerGone>> {
        let Some(h) = self.in_flight.pop_front() else {
            return Ok(Ok(()));
        };
        let decoded = self.helpers[h]
            .done
            .as_ref()
            .expect("open until dropped")
            .recv()
            .map_err(|_| anyhow::anyhow!("a decoder thread of the source stopped"))?;
        stats
            .records_in
            .fetch_add(decoded.counted, Ordering::Relaxed);
        for (i, reason) in &decoded.rejects {
            super::reject_line(dead_letter, stats, reason, decoded.block.line(*i))?;
        }
        let mut result = Ok(());
        for (p, chunks) in decoded.parts.into_iter().enumerate() {
            for records in chunks {
                if !records.is_empty() && outbox.send_records(p, records).is_err() {
                    result = Err(WorkerGone);
                }
            }
        }
        let mut block = decoded.block;
        block.data.clear();
        block.ends.clear();
        self.spare.push(block);
        Ok(result)
    }
}

impl Drop for DecodePool {
    /// Stops the decoder threads: a closed job channel ends a thread's loop,
    /// a closed result channel a thread waiting to hand over a block (what
    /// was not drained is not forwarded).
    fn drop(&mut self) {
        for helper in &mut self.helpers {
            drop(helper.jobs.take());
            drop(helper.done.take());
        }
        for helper in &mut self.helpers {
            if let Some(thread) = helper.thread.take() {
                let _ = thread.join();
            }
        }
    }
}

/// Decodes and routes a block's lines as [`super::route_line`] does one line.
fn decode_block(
    spec: &SourceSpec,
    decoder: &LineDecoder,
    router: &Router,
    block: Block,
) -> Decoded {
    let partitions = router.partitions();
    let per_chunk = (block.ends.len() / partitions + 1).min(CHUNK_RECORDS);
    let bytes = (block.data.len() / block.ends.len().max(1) * per_chunk).min(CHUNK_BYTES);
    let mut parts: Vec<Vec<Records>> = (0..partitions)
        .map(|_| vec![Records::with_capacity(per_chunk, bytes)])
        .collect();
    let mut rejects = Vec::new();
    // Every line of a block is a record (blank ones were left out).
    let counted = block.ends.len() as u64;
    // The members the decoder found in a line (see `Batch::push_indexed`).
    let mut members = Vec::new();
    for i in 0..block.ends.len() {
        let line = block.line(i);
        match decoder.decode_indexed(spec, line, Some(&mut members)) {
            Ok(event) => {
                let p = router.route_at(event.key.as_deref(), block.first_seq + i as u64);
                let chunks = &mut parts[p];
                if chunks.last().is_some_and(Records::is_full) {
                    chunks.push(Records::with_capacity(per_chunk, bytes));
                }
                let chunk = chunks.last_mut().expect("one at least");
                let key = event.key.as_deref().unwrap_or_default();
                let ts = event.timestamp_ms.unwrap_or_else(now_ms);
                match &event.value {
                    Some(value) => chunk.push(key, value, ts),
                    None if members.is_empty() => chunk.push(key, line, ts),
                    None => chunk.push_indexed(key, line, ts, &members),
                }
            }
            Err(reason) => rejects.push((i, reason)),
        }
    }
    Decoded {
        block,
        parts,
        rejects,
        counted,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::config::{Format, MissingTimestamp};
    use crate::decode::{Decoder, Pointer};
    use crate::source::router::murmur2;
    use crate::source::{Chunk, Record, Replay, Source, SourceContext};
    use crate::testkit::FileSink;

    #[derive(Debug)]
    struct Lines;

    impl Source for Lines {
        fn describe(&self) -> String {
            "lines".into()
        }
        fn replay(&self) -> Replay {
            Replay::No("a test".into())
        }
        fn run(&self, _: SourceContext<'_>) -> anyhow::Result<()> {
            unreachable!()
        }
    }

    fn spec(threads: usize) -> SourceSpec {
        SourceSpec {
            name: "unit".into(),
            input: Arc::new(Lines),
            format: Format::Json,
            decoder: Decoder::new(
                Some(Pointer::parse("/k").unwrap()),
                Some(Pointer::parse("/t").unwrap()),
            ),
            max_line_bytes: 1 << 20,
            missing_timestamp: MissingTimestamp::Now,
            csv: None,
            decode_threads: threads,
        }
    }

    /// Lines of many keys, keyless ones, blank ones, bad JSON, escaped keys;
    /// with each line's expected fate computed here: (partition, key, line)
    /// or a rejection.
    /// (lines, keyed records per partition, keyless records, rejected lines).
    type Input = (Vec<String>, Vec<Vec<Record>>, Vec<Record>, Vec<String>);

    fn input(partitions: usize) -> Input {
        let mut lines = Vec::new();
        let mut expected = vec![Vec::new(); partitions];
        let mut keyless = Vec::new();
        let mut rejected = Vec::new();
        for i in 0..5_000u64 {
            let (line, key) = match i % 11 {
                0 => (format!(r#"{{"t":{i},"v":"no key"}}"#), None),
                1 => (String::new(), None),
                2 => (format!(r#"{{"k":"x{i}","t":{i},"v":}}"#), None),
                3 => (
                    format!(r#"{{"k":"e\"{}","t":{i}}}"#, i % 5),
                    Some(format!("e\"{}", i % 5)),
                ),
                _ => (
                    format!(
                        r#"{{"k":"k{}","t":{i},"pad":"{}"}}"#,
                        i % 13,
                        "x".repeat((i % 200) as usize)
                    ),
                    Some(format!("k{}", i % 13)),
                ),
            };
            match i % 11 {
                1 => {}
                2 => rejected.push(line.clone()),
                _ => {
                    let record = Record {
                        key: key.clone().unwrap_or_default().into_bytes(),
                        value: line.clone().into_bytes(),
                        timestamp_ms: i as i64,
                        headers: Vec::new(),
                        task: None,
                    };
                    match &key {
                        Some(k) => expected
                            [(murmur2(k.as_bytes()) & 0x7fff_ffff) as usize % partitions]
                            .push(record),
                        None => keyless.push(record),
                    }
                }
            }
            lines.push(line);
        }
        (lines, expected, keyless, rejected)
    }

    #[test]
    fn each_partition_gets_its_records_in_input_order() {
        for threads in [1, 2, 3] {
            let partitions = 3;
            let (lines, expected, expected_keyless, rejected) = input(partitions);
            let spec = spec(threads);
            let stats = Arc::new(Stats::default());
            let (senders, receivers): (Vec<_>, Vec<_>) =
                (0..partitions).map(|_| flume::unbounded()).unzip();
            let mut outbox = Outbox::new(senders, stats.clone());
            let dlq = FileSink::start("dlq");
            let dead_letter = DeadLetter::new("unit", Some(dlq.handle()));
            let mut pool = DecodePool::start(&spec, &Router::new(partitions), threads).unwrap();
            for (i, line) in lines.iter().enumerate() {
                pool.push_line(line.as_bytes(), &mut outbox, &dead_letter, &stats)
                    .unwrap()
                    .unwrap();
                // A drain now and then, as a checkpoint or an idle input makes.
                if i % 1_777 == 0 {
                    pool.drain(&mut outbox, &dead_letter, &stats)
                        .unwrap()
                        .unwrap();
                    assert!(!pool.is_pending());
                }
            }
            pool.drain(&mut outbox, &dead_letter, &stats)
                .unwrap()
                .unwrap();
            drop(pool);
            drop(outbox);
            // Keyed records: exactly their partition's sequence. Keyless
            // ones (spread by a hash of their place): each once, and in input
            // order within whichever partition took it.
            let mut keyless = Vec::new();
            for (p, rx) in receivers.into_iter().enumerate() {
                let got: Vec<Record> = rx
                    .drain()
                    .flat_map(|chunk| match chunk {
                        Chunk::Records(r) => r.to_records(),
                        other => panic!("{other:?}"),
                    })
                    .collect();
                let (keyed, unkeyed): (Vec<Record>, Vec<Record>) =
                    got.into_iter().partition(|r| !r.key.is_empty());
                assert_eq!(keyed, expected[p], "partition {p}, {threads} thread(s)");
                assert!(
                    unkeyed.is_sorted_by_key(|r| r.timestamp_ms),
                    "partition {p}"
                );
                keyless.extend(unkeyed);
            }
            keyless.sort_by_key(|r| r.timestamp_ms);
            assert_eq!(keyless, expected_keyless);
            let records: usize =
                expected.iter().map(Vec::len).sum::<usize>() + expected_keyless.len();
            assert_eq!(
                stats.records_in.load(Ordering::Relaxed) as usize,
                records + rejected.len()
            );
            drop(dead_letter);
            let dead: Vec<String> = dlq
                .finish()
                .iter()
                .map(|l| {
                    let v: serde_json::Value = serde_json::from_str(l).unwrap();
                    v["original"].as_str().unwrap().to_string()
                })
                .collect();
            assert_eq!(dead, rejected);
        }
    }
}
