//! The group coordinator: consumer groups (Kafka's classic protocol) and their committed offsets.
//!
//! Placement: a group belongs to partition `abs(java_hash(group)) % N` of the internal topic `__consumer_offsets`
//! (Kafka's formula, N = `offsets.topic.num.partitions`), and so to the shard that owns that partition. Its state
//! lives only there ([`GroupCoordinator`], one per shard); every group API is forwarded to that shard over the mesh
//! as a [`GroupRequest`], so a group never needs a lock.
//!
//! Durability: an OffsetCommit is answered only after its records are in the partition's log and fsynced (acks=all
//! semantics, whatever `log.flush.policy` says for produce); a SyncGroup is answered after the group's metadata
//! record (members and assignments) is. At start every shard replays its `__consumer_offsets` partitions
//! ([`GroupCoordinator::load`]) before it serves group requests (COORDINATOR_LOAD_IN_PROGRESS until then; a heartbeat
//! is answered NONE meanwhile, as Kafka does). The records use Kafka's layout ([`store`]). The topic is created on first use, with no time or size retention:
//! offsets expire by `offsets.retention.minutes` instead, written as tombstones. Kafka compacts this topic; Sluice
//! does not compact yet, so the log grows with every commit and a restart replays all of it.
//!
//! Timers: one task per shard ([`GroupCoordinator::run_timers`]) sleeps until the earliest session, join or delay
//! deadline of its groups (or until woken by a change), then expires members and completes joins.

pub mod state;
pub mod store;

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use sluice_replication::{Acks, ShardId};
use sluice_storage::Offset;

use crate::cluster::{Partition, TopicChange, TopicTable};
use crate::config::Config;
use crate::errors::{ErrorCode, KafkaError, ResponseError};
use crate::sync::Notify;
use state::{CommittedOffset, Group, GroupState, JoinOutcome, JoinParams, JoinReply, SyncOutcome, SyncReply};
use store::{StoredOffset, StoredRecord};

pub use crate::cluster::OFFSETS_TOPIC;

/// What the coordinator needs from the shard it runs on. Implemented by [`crate::shard::Shard`]; the coordinator
/// never names the shard, the mesh or the router (so they can depend on it, and not the other way round).
pub trait GroupHost: 'static {
    type Storage: sluice_storage::Storage;
    fn config(&self) -> &Config;
    fn shard_id(&self) -> ShardId;
    fn topics(&self) -> Arc<TopicTable>;
    fn owner(&self, topic: &str, partition: i32) -> ShardId;
    /// This shard's `__consumer_offsets` partition `index`, if it owns it and it is open.
    fn offsets_partition(&self, index: i32) -> Option<Rc<Partition<Self::Storage>>>;
    fn groups(&self) -> &GroupCoordinator;
    fn is_shutting_down(&self) -> bool;
    fn shutdown(&self) -> &Notify;
    /// The one clock the coordinator reads (the system's in a broker, a manual one under simulation).
    fn clock(&self) -> &dyn sluice_storage::Clock;
    /// Applies topic changes through the topic table's single writer.
    fn admin(self: &Rc<Self>, changes: Vec<TopicChange>)
        -> impl Future<Output = Vec<Result<(), KafkaError>>>;
}
/// Batches read per step when replaying a partition at start.
const LOAD_READ_SIZE: usize = 4 << 20;
/// A new leader of a `__consumer_offsets` partition waits at most this long for its high watermark to reach the
/// log end it had when elected before it replays (the followers' next fetch moves it, normally in milliseconds).
const LEADER_LOAD_WAIT: Duration = Duration::from_secs(5);
/// The timer task wakes at least this often (to notice shutdown and retention checks).
const TIMER_PERIOD_MAX: Duration = Duration::from_secs(1);

/// Java's `String.hashCode` over UTF-16 code units, as Kafka uses to place a group.
pub fn java_hash(text: &str) -> i32 {
    text.encode_utf16().fold(0i32, |hash, unit| hash.wrapping_mul(31).wrapping_add(i32::from(unit)))
}

/// The `__consumer_offsets` partition of `group` (Kafka's `Utils.abs(hashCode) % count`).
pub fn offsets_partition(group: &str, partition_count: i32) -> i32 {
    let hash = java_hash(group);
    let positive = if hash == i32::MIN { 0 } else { hash.abs() };
    positive % partition_count.max(1)
}

/// A group API call, decoded from any version, sent to the group's shard.
#[derive(Debug)]
pub enum GroupRequest {
    Join {
        group: String,
        params: JoinParams,
    },
    Sync {
        group: String,
        member_id: String,
        instance_id: Option<String>,
        generation: i32,
        protocol_type: Option<String>,
        protocol: Option<String>,
        assignments: Vec<(String, Bytes)>,
    },
    Heartbeat {
        group: String,
        member_id: String,
        instance_id: Option<String>,
        generation: i32,
    },
    /// (member id, instance id) per leaving member.
    Leave {
        group: String,
        members: Vec<(String, Option<String>)>,
    },
    Commit {
        group: String,
        member_id: String,
        instance_id: Option<String>,
        generation: i32,
        offsets: Vec<OffsetToCommit>,
    },
    /// `None`: every partition the group has committed.
    FetchOffsets {
        group: String,
        partitions: Option<Vec<(String, i32)>>,
    },
    Describe {
        group: String,
    },
    /// This shard's groups.
    List,
    Delete {
        group: String,
    },
    DeleteOffsets {
        group: String,
        partitions: Vec<(String, i32)>,
    },
}

#[derive(Clone, Debug)]
pub struct OffsetToCommit {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: Option<String>,
}

#[derive(Debug, Clone)]
pub struct DescribedMember {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub metadata: Bytes,
    pub assignment: Bytes,
}

#[derive(Debug, Clone)]
pub struct DescribedGroup {
    pub state: &'static str,
    pub protocol_type: String,
    pub protocol: String,
    pub members: Vec<DescribedMember>,
}

#[derive(Debug, Clone)]
pub struct ListedGroup {
    pub group: String,
    pub protocol_type: String,
    pub state: &'static str,
}

/// A committed offset as OffsetFetch returns it.
#[derive(Debug, Clone)]
pub struct FetchedOffset {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: String,
}

#[derive(Debug)]
pub enum GroupReply {
    Join(JoinOutcome),
    Sync(SyncOutcome),
    /// Heartbeat, DeleteGroups, or any request refused as a whole (COORDINATOR_LOAD_IN_PROGRESS, ...).
    Error(ErrorCode),
    Leave(Vec<ErrorCode>),
    /// One error per (topic, partition), in request order.
    Commit(Vec<ErrorCode>),
    Offsets(Vec<FetchedOffset>),
    Described(Option<DescribedGroup>),
    Listed(Vec<ListedGroup>),
    /// OffsetDelete: a group-level error, then one per partition.
    OffsetsDeleted(ErrorCode, Vec<ErrorCode>),
}

/// The `__consumer_offsets` partition count in use: the topic's, once it exists.
pub fn offsets_partition_count<H: GroupHost>(shard: &H) -> i32 {
    shard
        .topics()
        .get(OFFSETS_TOPIC)
        .map_or(shard.config().groups.offsets_partition_count, |entry| entry.partition_count)
}

pub fn coordinator_shard<H: GroupHost>(shard: &H, group: &str) -> ShardId {
    shard.owner(OFFSETS_TOPIC, offsets_partition(group, offsets_partition_count(shard)))
}

/// Creates `__consumer_offsets` if it does not exist yet (whatever `auto.create.topics.enable` says).
pub async fn ensure_offsets_topic<H: GroupHost>(shard: &Rc<H>) -> Result<(), KafkaError> {
    if shard.topics().get(OFFSETS_TOPIC).is_some() {
        return Ok(());
    }
    let configs: BTreeMap<String, String> = [
        // Offsets expire by offsets.retention.minutes, never by the log's time or size retention.
        ("retention.ms", "-1"),
        ("retention.bytes", "-1"),
        ("segment.bytes", "104857600"),
        // A commit of many partitions is one batch.
        ("max.message.bytes", "10485760"),
    ]
    .into_iter()
    .map(|(key, value)| (key.to_string(), value.to_string()))
    .collect();
    // In a cluster the offsets are replicated like any topic (Kafka's offsets.topic.replication.factor, here bounded
    // by the live brokers so that a small cluster can still create it); a single node keeps one copy.
    let replication_factor = match shard.topics().cluster.as_ref() {
        Some(view) => {
            let live = view.live_brokers().count().max(1);
            shard.config().groups.offsets_replication_factor.min(i16::try_from(live).unwrap_or(i16::MAX))
        }
        None => -1,
    };
    let change = TopicChange::Create {
        name: OFFSETS_TOPIC.to_string(),
        partition_count: shard.config().groups.offsets_partition_count,
        replication_factor,
        configs,
        assignment: None,
    };
    match shard.admin(vec![change]).await.pop() {
        Some(Ok(())) => Ok(()),
        Some(Err(error)) if error.code == ResponseError::TopicAlreadyExists => Ok(()),
        Some(Err(error)) => Err(error),
        None => Err(KafkaError::new(ResponseError::CoordinatorNotAvailable)),
    }
}

/// Kafka's first check: the group id, before the coordinator's state (loading, shutting down) and before anything
/// else in the request (session timeout, member, generation). The membership APIs need a group id; commits and
/// offset fetches accept the empty one, as Kafka does for backward compatibility.
/// The group a request is about (`None`: List, which spans every group here).
fn request_group(request: &GroupRequest) -> Option<&str> {
    match request {
        GroupRequest::Join { group, .. }
        | GroupRequest::Sync { group, .. }
        | GroupRequest::Heartbeat { group, .. }
        | GroupRequest::Leave { group, .. }
        | GroupRequest::Commit { group, .. }
        | GroupRequest::FetchOffsets { group, .. }
        | GroupRequest::Describe { group }
        | GroupRequest::Delete { group }
        | GroupRequest::DeleteOffsets { group, .. } => Some(group),
        GroupRequest::List => None,
    }
}

fn is_invalid_group_id(request: &GroupRequest) -> bool {
    match request {
        GroupRequest::Join { group, .. }
        | GroupRequest::Sync { group, .. }
        | GroupRequest::Heartbeat { group, .. }
        | GroupRequest::Leave { group, .. } => group.is_empty(),
        _ => false,
    }
}

/// One shard's groups.
pub struct GroupCoordinator {
    groups: RefCell<HashMap<String, Group>>,
    /// Cluster mode: the `__consumer_offsets` partitions of this shard whose replica leads, and whether their
    /// groups are loaded yet. A group is served only here (COORDINATOR_LOAD_IN_PROGRESS while its partition
    /// loads, NOT_COORDINATOR where it does not lead), as Kafka's coordinator follows the partition's leadership.
    led: RefCell<HashMap<i32, bool>>,
    /// True until this shard's `__consumer_offsets` partitions are replayed.
    loading: Cell<bool>,
    /// Wakes the timer task when a deadline may have moved earlier.
    changed: Notify,
    /// Per `__consumer_offsets` partition of this shard: its write barrier and checkpoint position.
    logs: RefCell<HashMap<i32, Rc<OffsetsLog>>>,
}

impl Default for GroupCoordinator {
    fn default() -> Self {
        GroupCoordinator {
            groups: RefCell::new(HashMap::new()),
            loading: Cell::new(true),
            led: RefCell::new(HashMap::new()),
            changed: Notify::default(),
            logs: RefCell::new(HashMap::new()),
        }
    }
}

/// Writers of one `__consumer_offsets` partition take one permit from append until their change is applied in
/// memory; a checkpoint takes them all, so that what it copies from memory includes every record before it.
const WRITER_PERMITS: u64 = 1 << 20;

/// Records per checkpoint batch (well under the topic's `max.message.bytes`).
const CHECKPOINT_BATCH_RECORDS: usize = 2000;

/// One `__consumer_offsets` partition's bookkeeping (Sluice's stand-in for Kafka's log compaction).
struct OffsetsLog {
    writers: glommio::sync::Semaphore,
    /// Offset where the newest checkpoint begins: everything the partition holds is at or after it.
    checkpoint_start: Cell<i64>,
    checkpointing: Cell<bool>,
}

impl OffsetsLog {
    fn new(start: i64) -> OffsetsLog {
        OffsetsLog {
            writers: glommio::sync::Semaphore::new(WRITER_PERMITS),
            checkpoint_start: Cell::new(start),
            checkpointing: Cell::new(false),
        }
    }
}

impl GroupCoordinator {
    pub async fn serve<H: GroupHost>(&self, shard: &Rc<H>, request: GroupRequest) -> GroupReply {
        if is_invalid_group_id(&request) {
            return GroupReply::Error(ResponseError::InvalidGroupId.into());
        }
        if self.loading.get() {
            return match request {
                GroupRequest::List => GroupReply::Listed(Vec::new()),
                // Kafka answers a heartbeat blindly while the group loads: the member keeps its place.
                GroupRequest::Heartbeat { .. } => GroupReply::Error(ErrorCode::NONE),
                _ => GroupReply::Error(ResponseError::CoordinatorLoadInProgress.into()),
            };
        }
        if shard.is_shutting_down() {
            return GroupReply::Error(ResponseError::NotCoordinator.into());
        }
        if let Some(refusal) = self.cluster_refusal(shard, &request) {
            return refusal;
        }
        let reply = match request {
            GroupRequest::Join { group, params } => GroupReply::Join(self.join(shard, &group, params).await),
            GroupRequest::Sync {
                group,
                member_id,
                instance_id,
                generation,
                protocol_type,
                protocol,
                assignments,
            } => {
                let sync =
                    SyncCall { member_id, instance_id, generation, protocol_type, protocol, assignments };
                GroupReply::Sync(self.sync(shard, &group, sync).await)
            }
            GroupRequest::Heartbeat { group, member_id, instance_id, generation } => {
                let now = shard.clock().now();
                let mut groups = self.groups.borrow_mut();
                GroupReply::Error(match groups.get_mut(&group) {
                    None => ResponseError::UnknownMemberId.into(),
                    Some(entry) => entry.heartbeat(&member_id, instance_id.as_deref(), generation, now),
                })
            }
            GroupRequest::Leave { group, members } => {
                let now = shard.clock().now();
                let delay = shard.config().groups.initial_rebalance_delay;
                let mut groups = self.groups.borrow_mut();
                GroupReply::Leave(match groups.get_mut(&group) {
                    None => vec![ResponseError::UnknownMemberId.into(); members.len()],
                    Some(entry) => members
                        .iter()
                        .map(|(member_id, instance)| entry.leave(member_id, instance.as_deref(), now, delay))
                        .collect(),
                })
            }
            GroupRequest::Commit { group, member_id, instance_id, generation, offsets } => {
                self.commit(shard, &group, &member_id, instance_id.as_deref(), generation, offsets).await
            }
            GroupRequest::FetchOffsets { group, partitions } => {
                GroupReply::Offsets(self.fetch_offsets(&group, partitions))
            }
            GroupRequest::Describe { group } => GroupReply::Described(self.describe(&group)),
            GroupRequest::List => GroupReply::Listed(self.list()),
            GroupRequest::Delete { group } => GroupReply::Error(self.delete(shard, &group).await),
            GroupRequest::DeleteOffsets { group, partitions } => {
                self.delete_offsets(shard, &group, partitions).await
            }
        };
        self.after_change(shard);
        reply
    }

    /// Wakes the timers and writes the metadata of groups whose membership the log must record (they became
    /// empty).
    fn after_change<H: GroupHost>(&self, shard: &Rc<H>) {
        self.changed.notify_all();
        let dirty: Vec<(String, store::StoredGroup)> = self
            .groups
            .borrow_mut()
            .values_mut()
            .filter(|group| group.metadata_dirty)
            .map(|group| {
                group.metadata_dirty = false;
                (group.id.clone(), group.stored())
            })
            .collect();
        for (group, stored) in dirty {
            let shard = shard.clone();
            glommio::spawn_local(async move {
                let value = Some(store::group_value(&stored));
                match write_records(&shard, &group, vec![(store::group_key(&group), value)]).await {
                    Ok(base) => {
                        if let Some(entry) = shard.groups().groups.borrow_mut().get_mut(&group) {
                            entry.metadata_log_offset = entry.metadata_log_offset.max(base);
                        }
                    }
                    Err(error) => log::warn!("group {group}: writing its metadata failed: {error:?}"),
                }
            })
            .detach();
        }
    }

    async fn join<H: GroupHost>(&self, shard: &Rc<H>, group_id: &str, params: JoinParams) -> JoinOutcome {
        let config = &shard.config().groups;
        assert!(!group_id.is_empty(), "serve refuses an empty group id before it joins");
        if params.session_timeout < config.session_timeout_min
            || params.session_timeout > config.session_timeout_max
        {
            return JoinOutcome::error(ResponseError::InvalidSessionTimeout.into(), &params.member_id);
        }
        if let Err(error) = ensure_offsets_topic(shard).await {
            log::warn!("group {group_id}: cannot create {OFFSETS_TOPIC}: {error:?}");
            return JoinOutcome::error(ResponseError::CoordinatorNotAvailable.into(), &params.member_id);
        }
        let reply = {
            let mut groups = self.groups.borrow_mut();
            let group = groups
                .entry(group_id.to_string())
                .or_insert_with(|| Group::new(group_id, shard.clock().now_ms()));
            let member_id = params.member_id.clone();
            let reply =
                group.join(params, shard.clock().now(), config.size_max, config.initial_rebalance_delay);
            if let JoinReply::Now(outcome) = &reply {
                if outcome.error != ErrorCode::NONE && outcome.error != ResponseError::MemberIdRequired {
                    log::debug!("group {group_id}: join of {member_id:?} refused: {:?}", outcome.error);
                }
            }
            reply
        };
        self.after_change(shard);
        match reply {
            JoinReply::Now(outcome) => outcome,
            JoinReply::Later(receiver) => receiver
                .await
                .unwrap_or_else(|| JoinOutcome::error(ResponseError::CoordinatorNotAvailable.into(), "")),
        }
    }

    async fn sync<H: GroupHost>(&self, shard: &Rc<H>, group_id: &str, call: SyncCall) -> SyncOutcome {
        let reply = {
            let mut groups = self.groups.borrow_mut();
            let Some(group) = groups.get_mut(group_id) else {
                return SyncOutcome::error(ResponseError::UnknownMemberId.into());
            };
            group.sync(
                &call.member_id,
                call.instance_id.as_deref(),
                call.generation,
                call.protocol_type.as_deref(),
                call.protocol.as_deref(),
                call.assignments,
                shard.clock().now(),
            )
        };
        let receiver = match reply {
            SyncReply::Now(outcome) => return outcome,
            SyncReply::Later(receiver) => receiver,
            SyncReply::Persist { generation, receiver } => {
                let stored = self.groups.borrow().get(group_id).map(Group::stored);
                let written = match stored {
                    Some(stored) => {
                        let value = Some(store::group_value(&stored));
                        write_records(shard, group_id, vec![(store::group_key(group_id), value)]).await
                    }
                    None => Err(KafkaError::new(ResponseError::CoordinatorNotAvailable)),
                };
                let mut groups = self.groups.borrow_mut();
                if let Some(group) = groups.get_mut(group_id) {
                    match written {
                        Ok(base) => {
                            group.metadata_log_offset = group.metadata_log_offset.max(base);
                            group.finish_sync(generation);
                        }
                        Err(error) => {
                            log::warn!("group {group_id}: writing the assignment failed: {error:?}");
                            let delay = shard.config().groups.initial_rebalance_delay;
                            group.fail_sync(
                                generation,
                                ResponseError::CoordinatorNotAvailable.into(),
                                shard.clock().now(),
                                delay,
                            );
                        }
                    }
                }
                receiver
            }
        };
        receiver.await.unwrap_or_else(|| SyncOutcome::error(ResponseError::RebalanceInProgress.into()))
    }

    #[allow(clippy::too_many_lines)] // over 70 lines before the limit; to be split
    async fn commit<H: GroupHost>(
        &self,
        shard: &Rc<H>,
        group_id: &str,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
        offsets: Vec<OffsetToCommit>,
    ) -> GroupReply {
        let check = {
            let groups = self.groups.borrow();
            match groups.get(group_id) {
                None if generation < 0 => ErrorCode::NONE,
                None => ResponseError::IllegalGeneration.into(),
                Some(group) => group.check_commit(member_id, instance_id, generation),
            }
        };
        if check != ErrorCode::NONE {
            return GroupReply::Commit(vec![check; offsets.len()]);
        }
        let table = shard.topics();
        let metadata_max = shard.config().groups.offset_metadata_size_max;
        let now_ms = shard.clock().now_ms();
        let mut errors = Vec::with_capacity(offsets.len());
        let mut records = Vec::new();
        let mut accepted = Vec::new();
        for offset in &offsets {
            let known = table
                .get(&offset.topic)
                .is_some_and(|entry| (0..entry.partition_count).contains(&offset.partition));
            let metadata = offset.metadata.clone().unwrap_or_default();
            let error = if !known {
                ResponseError::UnknownTopicOrPartition.into()
            } else if metadata.len() > metadata_max {
                ResponseError::OffsetMetadataTooLarge.into()
            } else {
                ErrorCode::NONE
            };
            errors.push(error);
            if error == ErrorCode::NONE {
                let value = StoredOffset {
                    offset: offset.offset,
                    leader_epoch: offset.leader_epoch,
                    metadata,
                    commit_timestamp_ms: now_ms,
                };
                records.push((
                    store::offset_key(group_id, &offset.topic, offset.partition),
                    Some(store::offset_value(&value)),
                ));
                accepted.push((offset.topic.clone(), offset.partition, value));
            }
        }
        if records.is_empty() {
            return GroupReply::Commit(errors);
        }
        if let Err(error) = ensure_offsets_topic(shard).await {
            log::warn!("group {group_id}: cannot create {OFFSETS_TOPIC}: {error:?}");
            return GroupReply::Commit(vec![ResponseError::CoordinatorNotAvailable.into(); offsets.len()]);
        }
        match write_records(shard, group_id, records).await {
            Ok(base) => {
                let mut groups = self.groups.borrow_mut();
                let group =
                    groups.entry(group_id.to_string()).or_insert_with(|| Group::new(group_id, now_ms));
                group.touch(member_id, shard.clock().now());
                for (index, (topic, partition, value)) in accepted.into_iter().enumerate() {
                    group.apply_commit(
                        &topic,
                        partition,
                        CommittedOffset::from_stored(value, base + index as i64),
                    );
                }
                GroupReply::Commit(errors)
            }
            Err(error) => {
                log::warn!("group {group_id}: commit not written: {error:?}");
                let failed = if error.code == ResponseError::KafkaStorageError {
                    ResponseError::CoordinatorNotAvailable.into()
                } else {
                    error.code
                };
                GroupReply::Commit(
                    errors
                        .into_iter()
                        .map(|code| if code == ErrorCode::NONE { failed } else { code })
                        .collect(),
                )
            }
        }
    }

    fn fetch_offsets(&self, group_id: &str, partitions: Option<Vec<(String, i32)>>) -> Vec<FetchedOffset> {
        let groups = self.groups.borrow();
        let offsets = groups.get(group_id).map(|group| &group.offsets);
        let fetched = |topic: &str, partition: i32, committed: Option<&CommittedOffset>| FetchedOffset {
            topic: topic.to_string(),
            partition,
            offset: committed.map_or(-1, |c| c.offset),
            leader_epoch: committed.map_or(-1, |c| c.leader_epoch),
            metadata: committed.map(|c| c.metadata.clone()).unwrap_or_default(),
        };
        match partitions {
            Some(partitions) => partitions
                .iter()
                .map(|(topic, partition)| {
                    fetched(topic, *partition, offsets.and_then(|o| o.get(&(topic.clone(), *partition))))
                })
                .collect(),
            None => {
                let mut all: Vec<FetchedOffset> = offsets
                    .into_iter()
                    .flatten()
                    .map(|((topic, partition), committed)| fetched(topic, *partition, Some(committed)))
                    .collect();
                all.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
                all
            }
        }
    }

    fn describe(&self, group_id: &str) -> Option<DescribedGroup> {
        let groups = self.groups.borrow();
        let group = groups.get(group_id)?;
        let stable = group.state == GroupState::Stable;
        let protocol = group.protocol.clone().unwrap_or_default();
        Some(DescribedGroup {
            state: group.state.name(),
            protocol_type: group.protocol_type.clone().unwrap_or_default(),
            protocol: if stable { protocol.clone() } else { String::new() },
            members: group
                .members
                .values()
                .map(|member| DescribedMember {
                    member_id: member.id.clone(),
                    instance_id: member.instance_id.clone(),
                    client_id: member.client_id.clone(),
                    client_host: member.client_host.clone(),
                    metadata: if stable {
                        member
                            .protocols
                            .iter()
                            .find(|(name, _)| *name == protocol)
                            .map(|(_, bytes)| bytes.clone())
                            .unwrap_or_default()
                    } else {
                        Bytes::new()
                    },
                    assignment: if stable { member.assignment.clone() } else { Bytes::new() },
                })
                .collect(),
        })
    }

    fn list(&self) -> Vec<ListedGroup> {
        let groups = self.groups.borrow();
        let mut listed: Vec<ListedGroup> = groups
            .values()
            .map(|group| ListedGroup {
                group: group.id.clone(),
                protocol_type: group.protocol_type.clone().unwrap_or_default(),
                state: group.state.name(),
            })
            .collect();
        listed.sort_by(|a, b| a.group.cmp(&b.group));
        listed
    }

    async fn delete<H: GroupHost>(&self, shard: &Rc<H>, group_id: &str) -> ErrorCode {
        let records = {
            let groups = self.groups.borrow();
            let Some(group) = groups.get(group_id) else {
                return ResponseError::GroupIdNotFound.into();
            };
            if group.state != GroupState::Empty {
                return ResponseError::NonEmptyGroup.into();
            }
            let mut records: Vec<(Vec<u8>, Option<Vec<u8>>)> = group
                .offsets
                .keys()
                .map(|(topic, partition)| (store::offset_key(group_id, topic, *partition), None))
                .collect();
            records.push((store::group_key(group_id), None));
            records
        };
        match write_records(shard, group_id, records).await {
            Ok(_) => {
                let mut groups = self.groups.borrow_mut();
                if groups.get(group_id).is_some_and(|group| group.state == GroupState::Empty) {
                    groups.remove(group_id);
                }
                ErrorCode::NONE
            }
            Err(error) => {
                log::warn!("group {group_id}: delete not written: {error:?}");
                ResponseError::CoordinatorNotAvailable.into()
            }
        }
    }

    async fn delete_offsets<H: GroupHost>(
        &self,
        shard: &Rc<H>,
        group_id: &str,
        partitions: Vec<(String, i32)>,
    ) -> GroupReply {
        let (errors, records) = {
            let groups = self.groups.borrow();
            let Some(group) = groups.get(group_id) else {
                return GroupReply::OffsetsDeleted(ResponseError::GroupIdNotFound.into(), Vec::new());
            };
            let subscribed = subscribed_topics(group);
            let mut records = Vec::new();
            let errors: Vec<ErrorCode> = partitions
                .iter()
                .map(|(topic, partition)| {
                    if subscribed.iter().any(|name| name == topic) {
                        ResponseError::GroupSubscribedToTopic.into()
                    } else {
                        if group.offsets.contains_key(&(topic.clone(), *partition)) {
                            records.push((store::offset_key(group_id, topic, *partition), None));
                        }
                        ErrorCode::NONE
                    }
                })
                .collect();
            (errors, records)
        };
        if !records.is_empty() {
            if let Err(error) = write_records(shard, group_id, records).await {
                log::warn!("group {group_id}: offset delete not written: {error:?}");
                return GroupReply::OffsetsDeleted(ResponseError::CoordinatorNotAvailable.into(), Vec::new());
            }
            let mut groups = self.groups.borrow_mut();
            if let Some(group) = groups.get_mut(group_id) {
                for ((topic, partition), error) in partitions.iter().zip(&errors) {
                    if *error == ErrorCode::NONE {
                        group.offsets.remove(&(topic.clone(), *partition));
                    }
                }
            }
        }
        GroupReply::OffsetsDeleted(ErrorCode::NONE, errors)
    }

    fn offsets_log(&self, index: i32, start: i64) -> Rc<OffsetsLog> {
        self.logs.borrow_mut().entry(index).or_insert_with(|| Rc::new(OffsetsLog::new(start))).clone()
    }

    /// Starts a checkpoint of partition `index` when it holds more than `offsets.checkpoint.records` records
    /// since the last one and more than twice the live state.
    fn maybe_checkpoint<H: GroupHost>(&self, shard: &Rc<H>, index: i32) {
        let Some(partition) = shard.offsets_partition(index) else { return };
        let state = self.offsets_log(index, partition.log_start_offset().0);
        let written = partition.log_end_offset().0 - state.checkpoint_start.get();
        if state.checkpointing.get() || written <= shard.config().groups.offsets_checkpoint_records as i64 {
            return;
        }
        let count = offsets_partition_count(shard.as_ref());
        let live: usize = self
            .groups
            .borrow()
            .values()
            .filter(|group| offsets_partition(&group.id, count) == index)
            .map(|group| 1 + group.offsets.len())
            .sum();
        if written <= 2 * live as i64 {
            return;
        }
        state.checkpointing.set(true);
        let shard = shard.clone();
        glommio::spawn_local(async move {
            if let Err(error) = shard.groups().checkpoint(&shard, index, &state).await {
                log::warn!("{OFFSETS_TOPIC}-{index}: checkpoint failed: {error:?}");
            }
            state.checkpointing.set(false);
        })
        .detach();
    }

    /// Rewrites partition `index`'s live state (every group's metadata and committed offsets) at its end, then
    /// deletes everything before it: replay at start then reads only live records, and whole old segments are
    /// removed. Kafka compacts this topic instead; the effect on what a restart replays is the same.
    async fn checkpoint<H: GroupHost>(
        &self,
        shard: &Rc<H>,
        index: i32,
        state: &OffsetsLog,
    ) -> Result<(), KafkaError> {
        let Some(partition) = shard.offsets_partition(index) else { return Ok(()) };
        let Ok(_all_writers) = state.writers.acquire_permit(WRITER_PERMITS).await else {
            return Err(KafkaError::new(ResponseError::NotCoordinator));
        };
        let started = shard.clock().now();
        let count = offsets_partition_count(shard.as_ref());
        let records: Vec<(Vec<u8>, Option<Vec<u8>>)> = {
            let groups = self.groups.borrow();
            let mut records = Vec::new();
            for group in groups.values().filter(|group| offsets_partition(&group.id, count) == index) {
                if group.generation > 0 || !group.members.is_empty() {
                    records.push((store::group_key(&group.id), Some(store::group_value(&group.stored()))));
                }
                for ((topic, partition_index), committed) in &group.offsets {
                    let value = committed.stored();
                    records.push((
                        store::offset_key(&group.id, topic, *partition_index),
                        Some(store::offset_value(&value)),
                    ));
                }
            }
            records
        };
        let before = partition.log_start_offset().0;
        let mut start = partition.log_end_offset().0;
        let mut last = None;
        for (chunk_index, chunk) in records.chunks(CHECKPOINT_BATCH_RECORDS).enumerate() {
            let views: Vec<crate::records::KeyValue<'_>> =
                chunk.iter().map(|(key, value)| (Some(key.as_slice()), value.as_deref())).collect();
            let batch = crate::records::encode_batch(&views, shard.clock().now_ms());
            let produced = partition.produce(batch, Acks::Durable).await?;
            if chunk_index == 0 {
                start = produced.base_offset().0;
            }
            last = Some(produced);
        }
        // Durable and committed up to the last batch means every earlier one too.
        if let Some(produced) = last {
            produced.acknowledged().await?;
        }
        partition.delete_records(Offset(start)).await?;
        state.checkpoint_start.set(start);
        log::info!(
            "{OFFSETS_TOPIC}-{index}: checkpoint of {} live records at offset {start} replaced {} older ones in {:?}",
            records.len(),
            start - before,
            shard.clock().now().duration_since(started)
        );
        Ok(())
    }

    /// Replays this shard's `__consumer_offsets` partitions, then starts serving group requests.
    pub async fn load<H: GroupHost>(&self, shard: &Rc<H>) {
        let started = shard.clock().now();
        let mut record_count: u64 = 0;
        // In a cluster the groups of a partition load when its replica here becomes leader (`follow_leadership`).
        let cluster = shard.topics().cluster.is_some() || shard.config().is_cluster();
        if let Some(entry) = shard.topics().get(OFFSETS_TOPIC).cloned().filter(|_| !cluster) {
            for index in 0..entry.partition_count {
                if shard.owner(OFFSETS_TOPIC, index) != shard.shard_id() {
                    continue;
                }
                let Some(partition) = shard.offsets_partition(index) else {
                    continue;
                };
                record_count += self.load_partition(&partition).await;
                self.offsets_log(index, partition.log_start_offset().0);
            }
        }
        // Groups with neither members nor offsets (all deleted) are not kept.
        self.groups.borrow_mut().retain(|_, group| {
            !(group.state == GroupState::Empty && group.offsets.is_empty() && group.generation == 0)
        });
        let group_count = self.groups.borrow().len();
        if record_count > 0 {
            log::info!(
                "shard {}: {group_count} consumer groups loaded from {record_count} records of {OFFSETS_TOPIC} in {:?}",
                shard.shard_id(),
                shard.clock().now().duration_since(started)
            );
        }
        self.loading.set(false);
        let indexes: Vec<i32> = self.logs.borrow().keys().copied().collect();
        for index in indexes {
            self.maybe_checkpoint(shard, index);
        }
    }

    /// Cluster mode: a group whose partition does not lead here is NOT_COORDINATOR, one still loading
    /// COORDINATOR_LOAD_IN_PROGRESS (a heartbeat is answered blindly meanwhile, as at start-up).
    fn cluster_refusal<H: GroupHost>(&self, shard: &Rc<H>, request: &GroupRequest) -> Option<GroupReply> {
        shard.topics().cluster.as_ref()?;
        let group = request_group(request)?;
        let index = offsets_partition(group, offsets_partition_count(shard.as_ref()));
        match self.led.borrow().get(&index) {
            None => Some(GroupReply::Error(ResponseError::NotCoordinator.into())),
            Some(false) if matches!(request, GroupRequest::Heartbeat { .. }) => {
                Some(GroupReply::Error(ErrorCode::NONE))
            }
            Some(false) => Some(GroupReply::Error(ResponseError::CoordinatorLoadInProgress.into())),
            Some(true) => None,
        }
    }

    /// Cluster mode, after each metadata install: loads the groups of every `__consumer_offsets` partition whose
    /// replica here became leader (once its high watermark reaches the log end it had when elected, bounded, so
    /// that commits the previous leader acknowledged are replayed), and drops those of partitions it no longer
    /// leads (their waiters get NOT_COORDINATOR).
    pub fn follow_leadership<H: GroupHost>(&self, shard: &Rc<H>) {
        let Some(entry) = shard.topics().get(OFFSETS_TOPIC).cloned() else { return };
        let count = entry.partition_count;
        for index in 0..count {
            if shard.owner(OFFSETS_TOPIC, index) != shard.shard_id() {
                continue;
            }
            let leads =
                shard.offsets_partition(index).is_some_and(|partition| partition.is_replicated_leader());
            let known = self.led.borrow().contains_key(&index);
            if leads && !known {
                self.led.borrow_mut().insert(index, false);
                let shard = shard.clone();
                glommio::spawn_local(async move { shard.groups().load_led(&shard, index).await }).detach();
            } else if !leads && known {
                self.led.borrow_mut().remove(&index);
                self.unload(index, count);
            }
        }
    }

    async fn load_led<H: GroupHost>(&self, shard: &Rc<H>, index: i32) {
        let Some(partition) = shard.offsets_partition(index) else { return };
        let end = partition.log_end_offset();
        let deadline = shard.clock().now() + LEADER_LOAD_WAIT;
        while partition.high_watermark() < end
            && shard.clock().now() < deadline
            && partition.is_replicated_leader()
        {
            let arrived = partition.data_arrived().notified();
            futures_lite::future::or(arrived, glommio::timer::sleep(Duration::from_millis(50))).await;
        }
        let count = offsets_partition_count(shard.as_ref());
        self.unload(index, count);
        let records = self.load_partition(&partition).await;
        self.logs.borrow_mut().remove(&index);
        self.offsets_log(index, partition.log_start_offset().0);
        self.groups.borrow_mut().retain(|_, group| {
            !(group.state == GroupState::Empty && group.offsets.is_empty() && group.generation == 0)
        });
        if let Some(loaded) = self.led.borrow_mut().get_mut(&index) {
            *loaded = true;
        }
        log::info!(
            "{OFFSETS_TOPIC}-{index}: coordinator here (leader); {records} records replayed up to {}",
            partition.high_watermark()
        );
    }

    /// Drops the groups of partition `index` (leadership moved, or a reload): their waiters get NOT_COORDINATOR.
    fn unload(&self, index: i32, count: i32) {
        let mut groups = self.groups.borrow_mut();
        let gone: Vec<String> =
            groups.keys().filter(|group| offsets_partition(group, count) == index).cloned().collect();
        for name in gone {
            if let Some(mut group) = groups.remove(&name) {
                group.abandon_waiters(ResponseError::NotCoordinator.into());
            }
        }
    }

    async fn load_partition<S: sluice_storage::Storage>(&self, partition: &Partition<S>) -> u64 {
        let mut offset = partition.log_start_offset();
        // What a consumer could read: replay never applies a record a leader change could still truncate.
        let end = partition.high_watermark();
        let (now, now_ms) = (partition.clock().now(), partition.clock().now_ms());
        let mut count = 0u64;
        let mut reported = partition.clock().now();
        while offset < end {
            let batches = match partition.read_committed(offset, LOAD_READ_SIZE, true).await {
                Ok(batches) if !batches.is_empty() => batches,
                Ok(_) => break,
                Err(error) => {
                    // A corrupt range costs only the commits inside it; the ones after it are still replayed.
                    if let Some(next) = partition.past_corrupt_range(offset) {
                        offset = next;
                        continue;
                    }
                    log::error!(
                        "{OFFSETS_TOPIC}-{}: replay stopped at offset {}: {error:?}",
                        partition.topic_partition().partition,
                        offset.0
                    );
                    break;
                }
            };
            {
                let mut groups = self.groups.borrow_mut();
                for batch in &batches {
                    let Ok(header) = sluice_storage::BatchHeader::parse(batch) else { continue };
                    offset = header.last_offset().next();
                    let result = crate::records::for_each_record(batch, |record| {
                        count += 1;
                        let Some(key) = record.key else { return true };
                        match store::decode(key, record.value) {
                            Ok(Some(decoded)) => replay(&mut groups, decoded, record.offset, now, now_ms),
                            Ok(None) => {}
                            Err(error) => log::warn!(
                                "{OFFSETS_TOPIC}-{}: record at offset {} skipped: {error}",
                                partition.topic_partition().partition,
                                record.offset
                            ),
                        }
                        true
                    });
                    if let Err(error) = result {
                        log::warn!(
                            "{OFFSETS_TOPIC}-{}: batch skipped: {error}",
                            partition.topic_partition().partition
                        );
                    }
                }
            }
            if partition.clock().now().duration_since(reported) > Duration::from_secs(5) {
                reported = partition.clock().now();
                log::info!(
                    "{OFFSETS_TOPIC}-{}: replaying, at offset {} of {}",
                    partition.topic_partition().partition,
                    offset.0,
                    end.0
                );
            }
            glommio::yield_if_needed().await;
        }
        count
    }

    /// The timer task: expires sessions, completes joins and delays, expires old offsets. Ends at shutdown,
    /// answering every parked JoinGroup/SyncGroup with NOT_COORDINATOR so that clients look again.
    pub async fn run_timers<H: GroupHost>(&self, shard: Rc<H>) {
        let mut next_retention_check =
            shard.clock().now() + shard.config().groups.offsets_retention_check_interval;
        while !shard.is_shutting_down() {
            let now = shard.clock().now();
            let next = self
                .groups
                .borrow()
                .values()
                .filter_map(Group::next_deadline)
                .min()
                .unwrap_or(now + TIMER_PERIOD_MAX)
                .min(now + TIMER_PERIOD_MAX)
                .max(now + Duration::from_millis(1));
            let changed = self.changed.notified();
            let shutdown = shard.shutdown().notified();
            futures_lite::future::or(futures_lite::future::or(changed, shutdown), async {
                glommio::timer::sleep(next - now).await;
            })
            .await;
            let now = shard.clock().now();
            let delay = shard.config().groups.initial_rebalance_delay;
            let mut any = false;
            for group in self.groups.borrow_mut().values_mut() {
                any |= group.tick(now, delay);
            }
            if now >= next_retention_check {
                next_retention_check = now + shard.config().groups.offsets_retention_check_interval;
                self.expire_offsets(&shard).await;
            }
            if any {
                self.after_change(&shard);
            }
        }
        for group in self.groups.borrow_mut().values_mut() {
            group.abandon_waiters(ResponseError::NotCoordinator.into());
        }
    }

    /// Offsets of groups without members expire `offsets.retention.minutes` after their commit (Kafka's rule
    /// since KIP-211); an empty group left with no offsets is deleted.
    async fn expire_offsets<H: GroupHost>(&self, shard: &Rc<H>) {
        let retention_ms = shard.config().groups.offsets_retention.as_millis() as i64;
        let now_ms = shard.clock().now_ms();
        let expired: Vec<(String, Vec<(String, i32)>)> = self
            .groups
            .borrow()
            .values()
            .filter(|group| group.state == GroupState::Empty)
            .map(|group| {
                let old: Vec<(String, i32)> = group
                    .offsets
                    .iter()
                    .filter(|(_, committed)| committed.commit_timestamp_ms + retention_ms <= now_ms)
                    .map(|(key, _)| key.clone())
                    .collect();
                (group.id.clone(), old)
            })
            .filter(|(_, old)| !old.is_empty())
            .collect();
        // Empty groups without offsets (members left, nothing committed) are forgotten at the same check, as
        // in Kafka: a tombstone for the group.
        let forgotten: Vec<String> = self
            .groups
            .borrow()
            .values()
            .filter(|group| group.state == GroupState::Empty && group.offsets.is_empty())
            .map(|group| group.id.clone())
            .collect();
        for group_id in forgotten {
            if write_records(shard, &group_id, vec![(store::group_key(&group_id), None)]).await.is_ok() {
                let mut groups = self.groups.borrow_mut();
                if groups.get(&group_id).is_some_and(|g| g.state == GroupState::Empty && g.offsets.is_empty())
                {
                    groups.remove(&group_id);
                }
            }
        }
        for (group_id, partitions) in expired {
            let mut records: Vec<(Vec<u8>, Option<Vec<u8>>)> = partitions
                .iter()
                .map(|(topic, partition)| (store::offset_key(&group_id, topic, *partition), None))
                .collect();
            let empties = self
                .groups
                .borrow()
                .get(&group_id)
                .is_some_and(|group| group.offsets.len() == partitions.len());
            if empties {
                records.push((store::group_key(&group_id), None));
            }
            if let Err(error) = write_records(shard, &group_id, records).await {
                log::warn!("group {group_id}: offset expiry not written: {error:?}");
                continue;
            }
            log::info!("group {group_id}: {} committed offsets expired", partitions.len());
            let mut groups = self.groups.borrow_mut();
            if let Some(group) = groups.get_mut(&group_id) {
                for key in &partitions {
                    group.offsets.remove(key);
                }
                if group.state == GroupState::Empty && group.offsets.is_empty() {
                    groups.remove(&group_id);
                }
            }
        }
    }
}

struct SyncCall {
    member_id: String,
    instance_id: Option<String>,
    generation: i32,
    protocol_type: Option<String>,
    protocol: Option<String>,
    assignments: Vec<(String, Bytes)>,
}

/// Applies one replayed record.
/// `now`/`now_ms`: the replay's one reading of the clock (monotonic and wall).
fn replay(
    groups: &mut HashMap<String, Group>,
    record: StoredRecord,
    log_offset: i64,
    now: Instant,
    now_ms: i64,
) {
    match record {
        StoredRecord::Offset { group, topic, partition, value } => {
            let entry = groups.entry(group.clone()).or_insert_with(|| Group::new(&group, now_ms));
            match value {
                Some(value) => {
                    entry.apply_commit(&topic, partition, CommittedOffset::from_stored(value, log_offset))
                }
                None => {
                    entry.offsets.remove(&(topic, partition));
                }
            }
        }
        StoredRecord::Group { group, value: Some(value) } => {
            let entry = groups.entry(group.clone()).or_insert_with(|| Group::new(&group, now_ms));
            entry.restore(value, log_offset, now);
        }
        StoredRecord::Group { group, value: None } => {
            if groups.get(&group).is_some_and(|entry| entry.offsets.is_empty()) {
                groups.remove(&group);
            } else if let Some(entry) = groups.get_mut(&group) {
                entry.restore(store::StoredGroup::default(), log_offset, now);
                entry.generation = 0;
            }
        }
    }
}

/// The topics a group's members subscribe to (consumer protocol), for OffsetDelete's check.
fn subscribed_topics(group: &Group) -> Vec<String> {
    if group.protocol_type.as_deref() != Some("consumer") || group.state == GroupState::Empty {
        return Vec::new();
    }
    let mut topics = Vec::new();
    for member in group.members.values() {
        for (_, metadata) in &member.protocols {
            topics.extend(consumer_subscription(metadata));
        }
    }
    topics.sort();
    topics.dedup();
    topics
}

/// The topic names of a ConsumerProtocolSubscription (version: i16, then an i32-counted array of i16-length
/// strings, in every version); malformed metadata yields what was read before the fault.
fn consumer_subscription(metadata: &[u8]) -> Vec<String> {
    let mut topics = Vec::new();
    if metadata.len() < 6 {
        return topics;
    }
    let count = i32::from_be_bytes([metadata[2], metadata[3], metadata[4], metadata[5]]);
    let mut position = 6;
    for _ in 0..count.max(0) {
        let Some(length) = metadata.get(position..position + 2).map(|b| i16::from_be_bytes([b[0], b[1]]))
        else {
            break;
        };
        position += 2;
        let Some(name) = metadata.get(position..position + length.max(0) as usize) else { break };
        topics.push(String::from_utf8_lossy(name).into_owned());
        position += length.max(0) as usize;
    }
    topics
}

/// Appends records to the group's `__consumer_offsets` partition and waits until they are durable. Returns the
/// offset of the first record.
async fn write_records<H: GroupHost>(
    shard: &Rc<H>,
    group: &str,
    records: Vec<(Vec<u8>, Option<Vec<u8>>)>,
) -> Result<i64, KafkaError> {
    let index = offsets_partition(group, offsets_partition_count(shard.as_ref()));
    let Some(partition) = shard.offsets_partition(index) else {
        return Err(KafkaError::with_message(
            ResponseError::NotCoordinator,
            format!("{OFFSETS_TOPIC}-{index} is not on shard {}", shard.shard_id()),
        ));
    };
    let state = shard.groups().offsets_log(index, partition.log_start_offset().0);
    // Held until this function returns; the caller applies the change in memory before it next yields, so a
    // checkpoint (which waits for every permit) always sees it.
    let Ok(_permit) = state.writers.acquire_permit(1).await else {
        return Err(KafkaError::new(ResponseError::NotCoordinator));
    };
    let views: Vec<crate::records::KeyValue<'_>> =
        records.iter().map(|(key, value)| (Some(key.as_slice()), value.as_deref())).collect();
    let batch = crate::records::encode_batch(&views, shard.clock().now_ms());
    let produced = partition.produce(batch, Acks::Durable).await?;
    let base = produced.base_offset().0;
    produced.acknowledged().await?;
    if partition.log_end_offset().0 - state.checkpoint_start.get()
        > shard.config().groups.offsets_checkpoint_records as i64
    {
        // After the caller's update: a spawned task runs only once this one yields.
        shard.groups().maybe_checkpoint(shard, index);
    }
    Ok(base)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placement_matches_kafkas_formula() {
        // Values of Java's "...".hashCode().
        assert_eq!(java_hash(""), 0);
        assert_eq!(java_hash("a"), 97);
        assert_eq!(java_hash("group"), 98_629_247);
        assert_eq!(java_hash("polygenelubricants"), i32::MIN);
        assert_eq!(offsets_partition("polygenelubricants", 50), 0);
        assert_eq!(offsets_partition("group", 50), 98_629_247 % 50);
        for group in ["x", "consumer-group-1", "日本"] {
            assert!((0..50).contains(&offsets_partition(group, 50)));
        }
    }

    #[test]
    fn subscriptions_are_read_from_consumer_metadata() {
        let mut metadata = vec![0, 1, 0, 0, 0, 2];
        for topic in ["orders", "payments"] {
            metadata.extend_from_slice(&(topic.len() as i16).to_be_bytes());
            metadata.extend_from_slice(topic.as_bytes());
        }
        metadata.extend_from_slice(&[0, 0, 0, 0]); // user data
        assert_eq!(consumer_subscription(&metadata), vec!["orders".to_string(), "payments".to_string()]);
        assert!(consumer_subscription(&metadata[..9]).is_empty());
        assert!(consumer_subscription(&[0, 1, 0x7f, 0xff, 0xff, 0xff]).is_empty());
    }
}
