//! The router: which partition worker a record goes to.
//!
//! A keyed record goes to `toPositive(murmur2(key)) % partitions`, the rule of
//! Kafka's default partitioner (`org.apache.kafka.clients.producer.internals.
//! BuiltInPartitioner.partitionForKey`), so a key lands on the partition a Kafka
//! producer would pick for a topic with as many partitions. A record without a
//! key goes round-robin. Partitioning happens before batching: all records of a
//! key go to one worker, in order, and per-key state there needs no lock.

/// Kafka's 32-bit murmur2 hash (`org.apache.kafka.common.utils.Utils.murmur2`),
/// seed `0x9747b28c`.
pub fn murmur2(data: &[u8]) -> u32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let mut h = SEED ^ data.len() as u32;
    let mut chunks = data.chunks_exact(4);
    for chunk in &mut chunks {
        let mut k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let tail = chunks.remainder();
    if !tail.is_empty() {
        if tail.len() >= 3 {
            h ^= u32::from(tail[2]) << 16;
        }
        if tail.len() >= 2 {
            h ^= u32::from(tail[1]) << 8;
        }
        h ^= u32::from(tail[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h
}

/// Routes records to `partitions` workers.
#[derive(Debug, Clone)]
pub struct Router {
    partitions: usize,
    next_keyless: usize,
    balance: bool,
}

impl Router {
    /// A router over `partitions` workers (at least 1).
    pub fn new(partitions: usize) -> Self {
        Router {
            partitions: partitions.max(1),
            next_keyless: 0,
            balance: false,
        }
    }

    /// With `balance`, every record goes round-robin, keyed or not (the
    /// pipeline's `partition_by = "balance"`: no per-key order or state is
    /// needed, and a skewed key no longer loads one worker).
    pub fn balanced(mut self, balance: bool) -> Self {
        self.balance = balance;
        self
    }

    /// Number of partitions.
    pub fn partitions(&self) -> usize {
        self.partitions
    }

    /// The partition of a record with this key; `None` (no key) goes round-robin.
    /// An empty key is a key, hashed like any other.
    pub fn route(&mut self, key: Option<&[u8]>) -> usize {
        match key {
            _ if self.balance => {
                let p = self.next_keyless;
                self.next_keyless = (p + 1) % self.partitions;
                p
            }
            None => {
                let p = self.next_keyless;
                self.next_keyless = (p + 1) % self.partitions;
                p
            }
            Some(key) => self.hashed(key),
        }
    }

    /// Kafka's partitioner: `murmur2(key)` without its sign bit, modulo the
    /// partitions.
    fn hashed(&self, key: &[u8]) -> usize {
        ((murmur2(key) & 0x7fff_ffff) as usize) % self.partitions
    }

    /// As [`Router::route`] for decoder threads that each route a part of
    /// the input ([`super::parallel`]), without the router's own counter:
    /// `seq` is the line's place among the input's non-blank lines. Balanced,
    /// every record goes to `seq % partitions` (even, as round-robin, unless
    /// lines are dead-lettered); a keyless record to a hash of `seq` (an
    /// even spread whatever the pattern of keyed and keyless lines, where
    /// `seq % partitions` would send every other line's keyless record to one
    /// partition).
    pub fn route_at(&self, key: Option<&[u8]>, seq: u64) -> usize {
        let n = self.partitions as u64;
        match key {
            _ if self.balance => (seq % n) as usize,
            Some(key) => self.hashed(key),
            None => (mix(seq) % n) as usize,
        }
    }
}

/// SplitMix64's finalizer: a bijection of u64 whose outputs spread evenly.
fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Kafka's own vectors, from `UtilsTest.testMurmur2` in the Java client.
    #[test]
    fn murmur2_matches_kafka() {
        let cases: [(&[u8], i32); 6] = [
            (b"21", -973_932_308),
            (b"foobar", -790_332_482),
            (b"a-little-bit-long-string", -985_981_536),
            (b"a-little-bit-longer-string", -1_486_304_829),
            (
                b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58_897_971,
            ),
            (b"abc", 479_470_107),
        ];
        for (input, want) in cases {
            assert_eq!(
                murmur2(input) as i32,
                want,
                "{:?}",
                std::str::from_utf8(input)
            );
        }
    }

    #[test]
    fn route_at_spreads_keyless_and_balanced_records_whatever_their_pattern() {
        let router = Router::new(4);
        // Every other line keyless: the keyless ones still spread over all 4.
        let mut counts = [0usize; 4];
        for seq in (0..40_000u64).filter(|s| s % 2 == 1) {
            counts[router.route_at(None, seq)] += 1;
        }
        assert!(
            counts.iter().all(|&c| (4_500..5_500).contains(&c)),
            "{counts:?}"
        );
        let balanced = Router::new(4).balanced(true);
        let mut counts = [0usize; 4];
        for seq in 0..40_000u64 {
            counts[balanced.route_at(Some(b"hot"), seq)] += 1;
        }
        assert_eq!(counts, [10_000; 4]);
        assert_eq!(
            router.route_at(Some(b"k"), 7),
            Router::new(4).route(Some(b"k"))
        );
    }

    #[test]
    fn keyless_records_go_round_robin() {
        let mut r = Router::new(3);
        let got: Vec<usize> = (0..7).map(|_| r.route(None)).collect();
        assert_eq!(got, vec![0, 1, 2, 0, 1, 2, 0]);
        let empty = r.route(Some(b""));
        assert!(
            (0..5).all(|_| r.route(Some(b"")) == empty),
            "an empty key is a key"
        );
    }

    #[test]
    fn balance_spreads_one_hot_key_evenly() {
        let mut r = Router::new(2).balanced(true);
        let got: Vec<usize> = (0..6).map(|_| r.route(Some(b"ATL"))).collect();
        assert_eq!(got, vec![0, 1, 0, 1, 0, 1]);
        let mut counts = [0u64; 3];
        let mut r = Router::new(3).balanced(true);
        for i in 0..300u32 {
            let key = if i % 10 == 0 { None } else { Some(&b"hot"[..]) };
            counts[r.route(key)] += 1;
        }
        assert_eq!(counts, [100, 100, 100]);
        assert_eq!(crate::stats::Stats::skew(&counts), Some(1.0));
    }

    #[test]
    fn skew_is_the_busiest_partition_over_the_mean() {
        use crate::stats::Stats;
        // Two thirds of the records on one of two workers (flights by dest).
        assert_eq!(Stats::skew(&[200, 100]), Some(200.0 / 150.0));
        assert_eq!(Stats::skew(&[0, 0, 9]), Some(3.0));
        assert_eq!(Stats::skew(&[5]), None);
        assert_eq!(Stats::skew(&[0, 0]), None);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// Same key, same partition, always within range.
        #[test]
        fn a_key_always_goes_to_one_partition(keys in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..12), 1..50), n in 1usize..16) {
            let mut a = Router::new(n);
            let mut b = Router::new(n);
            for k in keys.iter().chain(keys.iter().rev()) {
                let p = a.route(Some(k));
                prop_assert!(p < n);
                prop_assert_eq!(p, b.route(Some(k)));
            }
        }
    }
}
