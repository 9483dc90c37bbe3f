//! A full disk is a transient error (issue 13, item 4): the real broker (in process, on loopback) runs on a small
//! loop-mounted ext4; produces fill it until they get KAFKA_STORAGE_ERROR; once a filler file is deleted the
//! partition takes produces and DeleteRecords again without a restart, and every acknowledged batch is there,
//! at the offset it was acknowledged with. Needs root and a loop device: without them the test says so and
//! passes (the simulated disk covers the same paths in `storage/tests/transient.rs`).
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed step is the test failing

mod common;
use common::Client;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::delete_records_request::{DeleteRecordsPartition, DeleteRecordsTopic};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use sluice_broker::config::{Config, ConfigOverrides};
use sluice_broker::server;
use sluice_storage::batch::testing::make_batch;

const NONE: i16 = 0;
const KAFKA_STORAGE_ERROR: i16 = 56;
const TOPIC: &str = "full";
/// Small enough to fill in a second, large enough for ext4's journal and the broker's files.
const IMAGE_SIZE_MIB: u64 = 64;
const VALUE_SIZE: usize = 64 * 1024;

/// A loop-mounted ext4, unmounted and deleted on drop (also when the test fails).
struct LoopMount {
    image: PathBuf,
    mount_point: PathBuf,
}

impl LoopMount {
    /// `None` (with the reason on stderr) where this process may not mount.
    fn create(name: &str) -> Option<LoopMount> {
        // SAFETY: geteuid has no preconditions and cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("SKIPPED {name}: mounting a loop file system needs root");
            return None;
        }
        let base = std::env::temp_dir().join(format!("sluice-{name}-{}", std::process::id()));
        let image = base.with_extension("img");
        let mount_point = base.with_extension("mnt");
        let _ = std::fs::remove_file(&image);
        std::fs::create_dir_all(&mount_point).unwrap();
        let size = format!("{IMAGE_SIZE_MIB}M");
        let steps: [(&str, Vec<&std::ffi::OsStr>); 3] = [
            ("truncate", vec!["-s".as_ref(), size.as_ref(), image.as_os_str()]),
            ("mkfs.ext4", vec!["-q".as_ref(), image.as_os_str()]),
            ("mount", vec!["-o".as_ref(), "loop".as_ref(), image.as_os_str(), mount_point.as_os_str()]),
        ];
        for (program, arguments) in steps {
            let status = Command::new(program).args(&arguments).status();
            if !status.as_ref().is_ok_and(|status| status.success()) {
                eprintln!("SKIPPED {name}: `{program}` failed ({status:?}); this machine does not permit it");
                let _ = std::fs::remove_file(&image);
                let _ = std::fs::remove_dir(&mount_point);
                return None;
            }
        }
        Some(LoopMount { image, mount_point })
    }
}

impl Drop for LoopMount {
    fn drop(&mut self) {
        // The broker's last descriptors close asynchronously (io_uring) just after it stops: retry a moment.
        let mut unmounted = false;
        for _ in 0..50 {
            let quiet =
                Command::new("umount").arg(&self.mount_point).stderr(std::process::Stdio::null()).status();
            if quiet.is_ok_and(|status| status.success()) {
                unmounted = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        if !unmounted {
            // Something still holds it (a failed test's broker): detach it lazily rather than leave it.
            eprintln!("{} still busy after 5 s: unmounting lazily", self.mount_point.display());
            let _ = Command::new("umount").arg("-l").arg(&self.mount_point).status();
        }
        let _ = std::fs::remove_dir(&self.mount_point);
        let _ = std::fs::remove_file(&self.image);
    }
}

impl Client {
    fn create_topic(&mut self) {
        let mut creatable = CreatableTopic::default();
        creatable.name = TopicName(StrBytes::from_static_str(TOPIC));
        creatable.num_partitions = 1;
        creatable.replication_factor = 1;
        let mut create = CreateTopicsRequest::default();
        create.topics = vec![creatable];
        create.timeout_ms = 60_000;
        assert_eq!(self.call(&create, 7).topics[0].error_code, NONE);
    }

    /// Produces one batch with acks=all: the error code and the base offset.
    fn produce(&mut self, batch: &Bytes) -> (i16, i64) {
        let mut partition = PartitionProduceData::default();
        partition.index = 0;
        partition.records = Some(batch.clone());
        let mut data = TopicProduceData::default();
        data.name = TopicName(StrBytes::from_static_str(TOPIC));
        data.partition_data = vec![partition];
        let mut produce = ProduceRequest::default();
        produce.acks = -1;
        produce.timeout_ms = 60_000;
        produce.topic_data = vec![data];
        let response = self.call(&produce, 8);
        let answer = &response.responses[0].partition_responses[0];
        (answer.error_code, answer.base_offset)
    }

    /// DeleteRecords below `offset`: the error code and the new low watermark.
    fn delete_records(&mut self, offset: i64) -> (i16, i64) {
        let mut partition = DeleteRecordsPartition::default();
        partition.partition_index = 0;
        partition.offset = offset;
        let mut topic = DeleteRecordsTopic::default();
        topic.name = TopicName(StrBytes::from_static_str(TOPIC));
        topic.partitions = vec![partition];
        let mut request = DeleteRecordsRequest::default();
        request.topics = vec![topic];
        request.timeout_ms = 10_000;
        let response = self.call(&request, 2);
        let answer = &response.topics[0].partitions[0];
        (answer.error_code, answer.low_watermark)
    }

    /// Every batch from `offset` to the high watermark, by base offset.
    fn read_all(&mut self, offset: i64) -> BTreeMap<i64, Bytes> {
        let mut batches = BTreeMap::new();
        let mut next = offset;
        // Bounded: each pass reads at least one batch or stops.
        loop {
            let mut partition = FetchPartition::default();
            partition.partition = 0;
            partition.fetch_offset = next;
            partition.partition_max_bytes = 1 << 20;
            let mut topic = FetchTopic::default();
            topic.topic = TopicName(StrBytes::from_static_str(TOPIC));
            topic.partitions = vec![partition];
            let mut fetch = FetchRequest::default();
            fetch.replica_id = BrokerId(-1);
            fetch.max_bytes = 4 << 20;
            fetch.topics = vec![topic];
            let response = self.call(&fetch, 12);
            let answer = &response.responses[0].partitions[0];
            assert_eq!(answer.error_code, NONE, "fetch at {next}");
            let records = answer.records.clone().unwrap_or_default();
            let before = batches.len();
            for batch in split_batches(&records) {
                let base = i64::from_be_bytes(batch[0..8].try_into().unwrap());
                let delta = i32::from_be_bytes(batch[23..27].try_into().unwrap());
                next = next.max(base + delta as i64 + 1);
                batches.insert(base, batch);
            }
            if batches.len() == before || next >= answer.high_watermark {
                return batches;
            }
        }
    }
}

/// The whole v2 batches in a fetched record set (a partial last one is dropped, as clients do).
fn split_batches(records: &Bytes) -> Vec<Bytes> {
    let mut batches = Vec::new();
    let mut position = 0;
    while position + 12 <= records.len() {
        let size = 12 + i32::from_be_bytes(records[position + 8..position + 12].try_into().unwrap()) as usize;
        if position + size > records.len() {
            break;
        }
        batches.push(records.slice(position..position + size));
        position += size;
    }
    batches
}

/// A batch's bytes without the broker-stamped fields (baseOffset, partitionLeaderEpoch).
fn unstamped(batch: &[u8]) -> Vec<u8> {
    let mut bytes = batch.to_vec();
    bytes[0..8].fill(0);
    bytes[12..16].fill(0);
    bytes
}

/// Writes zeros to `path` until the file system refuses: the disk is full.
fn fill(path: &Path) -> u64 {
    let mut file = std::fs::File::create(path).unwrap();
    let chunk = vec![0u8; 1 << 20];
    let mut written = 0u64;
    // Bounded by the file system's size.
    loop {
        match file.write(&chunk) {
            Ok(0) | Err(_) => break,
            Ok(size) => written += size as u64,
        }
    }
    let _ = file.sync_all();
    written
}

/// A producer of distinct 64 KiB batches that remembers what was acknowledged at which offset.
struct Load {
    client: Client,
    timestamp: i64,
    acknowledged: Vec<(i64, Bytes)>,
}

impl Load {
    /// Produces one new batch; returns the error code (the batch is remembered if it was acknowledged).
    fn produce(&mut self) -> i16 {
        self.timestamp += 1;
        let batch = make_batch(1, VALUE_SIZE, self.timestamp);
        let (code, offset) = self.client.produce(&batch);
        if code == NONE {
            self.acknowledged.push((offset, batch));
        }
        code
    }

    /// Produces until the broker has refused three batches with KAFKA_STORAGE_ERROR.
    fn produce_until_refused(&mut self) {
        let mut refused = 0;
        for _ in 0..200 {
            match self.produce() {
                NONE => {}
                KAFKA_STORAGE_ERROR => refused += 1,
                code => panic!("produce on a full disk answered {code}"),
            }
            if refused >= 3 {
                return;
            }
        }
        panic!("a full disk never refused a produce");
    }

    /// Produces until one is acknowledged again; returns how long that took.
    fn produce_until_accepted(&mut self) -> Duration {
        let started = Instant::now();
        // Bounded by the deadline.
        loop {
            match self.produce() {
                NONE => return started.elapsed(),
                KAFKA_STORAGE_ERROR => {}
                code => panic!("produce after freeing space answered {code}"),
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "produces still refused 20 s after space was freed"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Every acknowledged batch is there once, at its offset, as sent; no offset was handed out twice.
    fn verify(&mut self) {
        let stored = self.client.read_all(0);
        let mut offsets: Vec<i64> = self.acknowledged.iter().map(|(offset, _)| *offset).collect();
        offsets.sort();
        offsets.dedup();
        assert_eq!(offsets.len(), self.acknowledged.len(), "an offset was acknowledged twice");
        for (offset, batch) in &self.acknowledged {
            let found = stored.get(offset).unwrap_or_else(|| panic!("acknowledged batch at {offset} lost"));
            assert_eq!(unstamped(found), unstamped(batch), "batch at {offset} changed");
        }
    }
}

#[test]
fn a_full_disk_heals_without_a_restart_once_space_is_freed() {
    let Some(mount) = LoopMount::create("full-disk") else { return };
    let overrides = ConfigOverrides {
        listen: Some("127.0.0.1:0".into()),
        data_dir: Some(mount.mount_point.join("data")),
        shard_count: Some(1),
        ..Default::default()
    };
    let config = Config::from_toml("\"log.segment.bytes\" = 4194304", &overrides).unwrap();
    let broker = server::start(config).unwrap();
    let mut load = Load {
        client: Client::connect(broker.address, Duration::from_secs(60)),
        timestamp: 1_000,
        acknowledged: Vec::new(),
    };
    load.client.create_topic();
    for _ in 0..8 {
        assert_eq!(load.produce(), NONE);
    }

    // Fill the disk: produces go on until the broker answers KAFKA_STORAGE_ERROR.
    let filler = mount.mount_point.join("filler");
    let filled = fill(&filler);
    load.produce_until_refused();
    eprintln!("disk full after {filled} filler bytes; {} batches acknowledged", load.acknowledged.len());

    // Free the space: within the flusher's backoff the partition writes again, no restart.
    std::fs::remove_file(&filler).unwrap();
    let healed_after = load.produce_until_accepted();
    eprintln!("produces accepted again {healed_after:?} after space was freed");
    for _ in 0..4 {
        assert_eq!(load.produce(), NONE);
    }
    load.verify();

    // DeleteRecords works on the healed partition.
    let cut = load.acknowledged[4].0;
    assert_eq!(load.client.delete_records(cut), (NONE, cut));
    let stored = load.client.read_all(cut);
    assert!(load
        .acknowledged
        .iter()
        .filter(|(offset, _)| *offset >= cut)
        .all(|(offset, _)| stored.contains_key(offset)));

    drop(load);
    broker.stop();
    broker.join();
    drop(mount);
}
