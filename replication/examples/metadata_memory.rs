//! Metadata memory per partition (issue 15's figure): the heap the quorum's `MetadataImage` holds per partition,
//! measured with a counting allocator, and the snapshot's bytes per partition. (A broker also holds one
//! `TopicTable` derived from the image, shared by its shards as one `Arc`; it holds the same lists.)
//!
//!   cargo run --release -p sluice-replication --example metadata_memory [partitions] [replication factor]

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicIsize, Ordering};

use sluice_replication::metadata::{
    plan, AdminRequest, BrokerEpoch, BrokerRegistration, Listener, MetadataImage, MetadataRecord, TopicId,
};
use sluice_replication::NodeId;

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: forwards to the system allocator unchanged; only counts the bytes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: the caller's contract is passed on.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, pointer: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: the caller's contract is passed on.
        unsafe { System.dealloc(pointer, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn live() -> isize {
    LIVE.load(Ordering::Relaxed)
}

fn main() -> Result<(), String> {
    let mut arguments = std::env::args().skip(1);
    let partitions: i32 = arguments.next().and_then(|value| value.parse().ok()).unwrap_or(100_000);
    let replication_factor: i16 = arguments.next().and_then(|value| value.parse().ok()).unwrap_or(3);
    let mut image = MetadataImage::empty();
    let mut index = 0;
    let mut apply = |image: &MetadataImage, records: Vec<MetadataRecord>| -> Result<MetadataImage, String> {
        index += 1;
        image.apply_batch(index, &records).map_err(|error| error.to_string())
    };
    for broker in 0..replication_factor.max(3) {
        let registration = BrokerRegistration {
            broker: NodeId(i32::from(broker)),
            incarnation: broker as u128 + 1,
            listeners: vec![Listener { name: "PLAINTEXT".into(), host: "127.0.0.1".into(), port: 9092 }],
            rack: None,
        };
        let records =
            plan(&image, &AdminRequest::RegisterBroker(registration)).map_err(|error| error.to_string())?;
        image = apply(&image, records)?;
        let epoch = BrokerEpoch(image.applied_index());
        image =
            apply(&image, vec![MetadataRecord::UnfenceBroker { broker: NodeId(i32::from(broker)), epoch }])?;
    }
    let before = live();
    let per_topic = 1_000.min(partitions);
    for topic in 0..partitions / per_topic {
        let request = AdminRequest::CreateTopic {
            name: format!("topic-{topic:05}"),
            id: TopicId(topic as u128 + 1),
            partition_count: per_topic,
            replication_factor,
            configs: BTreeMap::new(),
            assignment: None,
        };
        let records = plan(&image, &request).map_err(|error| error.to_string())?;
        image = apply(&image, records)?;
    }
    let image_bytes = live() - before;
    let encoded = image.encode().len();
    let count = f64::from(partitions);
    println!(
        "{partitions} partitions, replication factor {replication_factor}: image {:.0} B/partition on the heap, snapshot {:.0} B/partition",
        image_bytes as f64 / count,
        encoded as f64 / count
    );
    assert_eq!(image.topics().count() as i32, partitions / per_topic);
    Ok(())
}
