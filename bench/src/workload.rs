//! The workload a run offers, modelled on the OpenMessaging Benchmark's workload files, and the pieces that turn it
//! into messages: payloads with a chosen share of random bytes, keys, and Kafka's default partitioner.

use std::time::Duration;

use sluice_storage::records::Compression;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum KeyDistribution {
    /// No key: the producer sticks to one partition until its batch is sent, then moves to the next (Kafka's
    /// sticky partitioner, KIP-480).
    None,
    /// Keys taken in turn from a fixed set, partitioned by murmur2 as Kafka's default partitioner does.
    RoundRobin,
    /// Keys drawn at random from the same set.
    Random,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum StartOffset {
    Earliest,
    Latest,
}

/// Everything a producer or consumer thread needs to know about the run.
#[derive(Clone, Debug)]
pub struct Workload {
    /// Bootstrap addresses, `HOST:PORT`, in the order given.
    pub bootstrap: Vec<String>,
    pub topics: Vec<String>,
    pub partition_count: i32,
    /// Replicas per partition of the topics the run creates (1 against a single broker).
    pub replication_factor: i16,
    /// Topic configs sent with CreateTopics (`min.insync.replicas`, …), as Kafka names them.
    pub topic_configs: Vec<(String, String)>,
    pub message_size: usize,
    pub random_ratio: f64,
    pub key_distribution: KeyDistribution,
    pub producers_per_topic: usize,
    /// Producer connections over all topics, driven by `producer_threads` threads (`pool`); 0 = per topic.
    pub producers_total: usize,
    pub producer_threads: usize,
    pub consumers_per_topic: usize,
    /// Messages per second over all producers; 0 = as fast as possible.
    pub rate_per_s: f64,
    pub acks: i16,
    pub compression: Compression,
    pub linger: Duration,
    pub batch_size: usize,
    pub request_size_max: usize,
    pub in_flight_max: usize,
    pub request_timeout_ms: i32,
    pub fetch_size_max: i32,
    pub fetch_partition_size_max: i32,
    pub fetch_wait_ms_max: i32,
    pub fetch_size_min: i32,
    pub start_offset: StartOffset,
    pub verify_crc: bool,
}

/// A small fast generator (SplitMix64): payload bytes and random keys need speed and spread, not secrecy.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, bound: usize) -> usize {
        (((self.next_u64() >> 32) * bound as u64) >> 32) as usize
    }
}

/// Distinct payloads cycled through, so that batches are not one value repeated (which any codec would flatten)
/// while generation costs nothing per message.
const PAYLOAD_COUNT: usize = 64;
/// OMB's key set size for its round-robin and random key distributors.
const KEY_COUNT: usize = 10_000;

pub struct Payloads {
    values: Vec<Vec<u8>>,
    keys: Vec<Vec<u8>>,
}

impl Payloads {
    /// Each payload: the first `random_ratio` of its bytes random, the rest zero — so a codec compresses it to
    /// roughly that ratio.
    pub fn new(message_size: usize, random_ratio: f64, seed: u64) -> Self {
        let mut rng = Rng::new(seed);
        let random_size = ((message_size as f64) * random_ratio.clamp(0.0, 1.0)).round() as usize;
        let values = (0..PAYLOAD_COUNT)
            .map(|_| {
                let mut value = vec![0u8; message_size];
                for chunk in value[..random_size].chunks_mut(8) {
                    let bytes = rng.next_u64().to_le_bytes();
                    chunk.copy_from_slice(&bytes[..chunk.len()]);
                }
                value
            })
            .collect();
        let keys = (0..KEY_COUNT).map(|_| format!("{:08x}", rng.next_u64() as u32).into_bytes()).collect();
        Payloads { values, keys }
    }

    pub fn value(&self, index: u64) -> &[u8] {
        &self.values[index as usize % PAYLOAD_COUNT]
    }

    pub fn key(&self, index: usize) -> &[u8] {
        &self.keys[index % KEY_COUNT]
    }

    pub fn key_count(&self) -> usize {
        KEY_COUNT
    }
}

/// Kafka's murmur2 (`org.apache.kafka.common.utils.Utils.murmur2`), so keyed messages land where a Java or
/// librdkafka (`murmur2_random`) producer would put them.
pub fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let length = data.len();
    let mut h: u32 = SEED ^ length as u32;
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
    if tail.len() >= 3 {
        h ^= (tail[2] as u32) << 16;
    }
    if tail.len() >= 2 {
        h ^= (tail[1] as u32) << 8;
    }
    if !tail.is_empty() {
        h ^= tail[0] as u32;
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// Kafka's default partitioner for a keyed record.
pub fn partition_for_key(key: &[u8], partition_count: i32) -> i32 {
    (murmur2(key) & 0x7fff_ffff) % partition_count
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn murmur2_matches_kafka() {
        // Proves the partitioner agrees with Kafka's UtilsTest.testMurmur2 vectors.
        let cases: [(&[u8], i32); 6] = [
            (b"21", -973_932_308),
            (b"foobar", -790_332_482),
            (b"a-little-bit-long-string", -985_981_536),
            (b"a-little-bit-longer-string", -1_486_304_829),
            (b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58_897_971),
            (b"abc", 479_470_107),
        ];
        for (input, expected) in cases {
            assert_eq!(murmur2(input), expected, "{}", String::from_utf8_lossy(input));
        }
    }

    #[test]
    fn payload_random_share_follows_the_ratio() {
        // Proves a 0.25 ratio leaves the last three quarters of each payload zero and the first quarter mostly not.
        let payloads = Payloads::new(1024, 0.25, 7);
        let value = payloads.value(3);
        assert_eq!(value.len(), 1024);
        assert!(value[256..].iter().all(|&byte| byte == 0));
        assert!(value[..256].iter().filter(|&&byte| byte != 0).count() > 200);
    }

    #[test]
    fn rng_below_stays_in_range() {
        // Proves `below` never returns its bound and reaches both ends.
        let mut rng = Rng::new(1);
        let draws: Vec<usize> = (0..10_000).map(|_| rng.below(10)).collect();
        assert!(draws.iter().all(|&draw| draw < 10));
        assert!(draws.contains(&0) && draws.contains(&9));
    }
}
