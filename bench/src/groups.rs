//! Consumer-group coordinator benchmarks, over the wire like the rest of this crate:
//!
//! - [`rebalance_latency`]: `members` members sit in a stable group, heartbeating every `heartbeat`; then a new
//!   member sends its JoinGroup, and the time until every member (old and new) has its SyncGroup response is one
//!   sample. The new member leaves again (LeaveGroup) and the group settles before the next round. Members run
//!   the classic protocol by hand: JoinGroup v9 (MEMBER_ID_REQUIRED first), SyncGroup v5 with the leader
//!   assigning nothing, Heartbeat v4; a REBALANCE_IN_PROGRESS heartbeat sends a member back to JoinGroup.
//!   The figure therefore includes up to one heartbeat interval for the old members to notice the rebalance.
//! - [`commit_rate`]: `clients` connections each send OffsetCommit v8 requests ("simple" commits: generation -1,
//!   no member) one at a time for `duration`; the result is commits answered per second. The broker answers a
//!   commit after its record is fsynced, so concurrent clients measure group commit.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::{
    GroupId, HeartbeatRequest, JoinGroupRequest, LeaveGroupRequest, OffsetCommitRequest, SyncGroupRequest,
};
use kafka_protocol::protocol::StrBytes;

use crate::client::{topic_name, ClientError, Connection};
use crate::cluster::Metadata;
use sluice_storage::Invariant;

const MEMBER_ID_REQUIRED: i16 = 79;
const REBALANCE_IN_PROGRESS: i16 = 27;
const UNKNOWN_MEMBER_ID: i16 = 25;
const ILLEGAL_GENERATION: i16 = 22;
const JOIN_VERSION: i16 = 9;
const SYNC_VERSION: i16 = 5;
const HEARTBEAT_VERSION: i16 = 4;
const COMMIT_VERSION: i16 = 8;
/// How long the driver waits for the group to reach a state before it gives up.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(60);

fn text(value: &str) -> StrBytes {
    StrBytes::from_string(value.to_owned())
}

/// SyncGroup completions per generation, and which generations each member synced.
#[derive(Default)]
struct Shared {
    synced: HashMap<i32, Vec<Instant>>,
    error: Option<String>,
}

struct Member {
    connection: Connection,
    group: String,
    member_id: String,
    generation: i32,
    heartbeat: Duration,
}

impl Member {
    fn connect(bootstrap: &str, group: &str, heartbeat: Duration) -> Result<Member, ClientError> {
        Ok(Member {
            connection: Connection::connect(bootstrap)?,
            group: group.to_owned(),
            member_id: String::new(),
            generation: -1,
            heartbeat,
        })
    }

    /// JoinGroup until admitted (MEMBER_ID_REQUIRED first), then SyncGroup; returns when synced.
    fn join_and_sync(&mut self) -> Result<(), ClientError> {
        for _attempt in 0..100 {
            let mut protocol = JoinGroupRequestProtocol::default();
            protocol.name = text("bench");
            protocol.metadata = Bytes::from_static(b"\x00\x01");
            let mut join = JoinGroupRequest::default();
            join.group_id = GroupId(text(&self.group));
            join.session_timeout_ms = 30_000;
            join.rebalance_timeout_ms = 60_000;
            join.member_id = text(&self.member_id);
            join.protocol_type = text("bench");
            join.protocols = vec![protocol];
            let joined = self.connection.call(&join, JOIN_VERSION)?;
            if joined.error_code == MEMBER_ID_REQUIRED {
                self.member_id = joined.member_id.to_string();
                continue;
            }
            if joined.error_code == UNKNOWN_MEMBER_ID {
                self.member_id.clear();
                continue;
            }
            if joined.error_code != 0 {
                return Err(ClientError::Broker { what: "JoinGroup".into(), error_code: joined.error_code });
            }
            self.member_id = joined.member_id.to_string();
            self.generation = joined.generation_id;
            let mut sync = SyncGroupRequest::default();
            sync.group_id = GroupId(text(&self.group));
            sync.generation_id = self.generation;
            sync.member_id = text(&self.member_id);
            sync.protocol_type = Some(text("bench"));
            sync.protocol_name = joined.protocol_name.clone();
            if joined.leader == joined.member_id {
                sync.assignments = joined
                    .members
                    .iter()
                    .map(|member| {
                        let mut assignment = SyncGroupRequestAssignment::default();
                        assignment.member_id = member.member_id.clone();
                        assignment
                    })
                    .collect();
            }
            let synced = self.connection.call(&sync, SYNC_VERSION)?;
            match synced.error_code {
                0 => return Ok(()),
                REBALANCE_IN_PROGRESS | ILLEGAL_GENERATION => continue,
                error_code => return Err(ClientError::Broker { what: "SyncGroup".into(), error_code }),
            }
        }
        Err(ClientError::Broker {
            what: "JoinGroup: no stable generation after 100 attempts".into(),
            error_code: -1,
        })
    }

    /// Heartbeats until told to rejoin (true) or until `stop` (false).
    fn heartbeat_until_rebalance(&mut self, stop: &AtomicBool) -> Result<bool, ClientError> {
        while !stop.load(Ordering::Relaxed) {
            thread::sleep(self.heartbeat);
            let mut heartbeat = HeartbeatRequest::default();
            heartbeat.group_id = GroupId(text(&self.group));
            heartbeat.generation_id = self.generation;
            heartbeat.member_id = text(&self.member_id);
            match self.connection.call(&heartbeat, HEARTBEAT_VERSION)?.error_code {
                0 => {}
                REBALANCE_IN_PROGRESS | ILLEGAL_GENERATION => return Ok(true),
                UNKNOWN_MEMBER_ID => {
                    self.member_id.clear();
                    return Ok(true);
                }
                error_code => return Err(ClientError::Broker { what: "Heartbeat".into(), error_code }),
            }
        }
        Ok(false)
    }

    fn leave(&mut self) -> Result<(), ClientError> {
        let mut leave = LeaveGroupRequest::default();
        leave.group_id = GroupId(text(&self.group));
        let mut identity = kafka_protocol::messages::leave_group_request::MemberIdentity::default();
        identity.member_id = text(&self.member_id);
        leave.members = vec![identity];
        self.connection.call(&leave, 5).map(|_| ())
    }

    /// The member's life: join, sync, heartbeat, rejoin when asked, leave at `stop`.
    fn run(mut self, shared: &Mutex<Shared>, stop: &AtomicBool) {
        let result = (|| -> Result<(), ClientError> {
            loop {
                self.join_and_sync()?;
                let now = Instant::now();
                shared
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .synced
                    .entry(self.generation)
                    .or_default()
                    .push(now);
                if !self.heartbeat_until_rebalance(stop)? {
                    return self.leave();
                }
            }
        })();
        if let Err(error) = result {
            shared
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .error
                .get_or_insert(error.to_string());
        }
    }
}

/// Waits until some generation newer than `after` has `count` syncs no earlier than `since`; returns it and the
/// time of its last sync.
fn wait_stable(
    shared: &Mutex<Shared>,
    count: usize,
    after: i32,
    since: Instant,
) -> Result<(i32, Instant), String> {
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    while Instant::now() < deadline {
        {
            let state = shared.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some(error) = &state.error {
                return Err(error.clone());
            }
            let found = state
                .synced
                .iter()
                .filter(|(generation, times)| {
                    **generation > after && times.len() >= count && times.iter().all(|at| *at >= since)
                })
                .max_by_key(|(generation, _)| **generation);
            if let Some((generation, times)) = found {
                return Ok((
                    *generation,
                    *times.iter().max().invariant("a generation with sync times has at least one"),
                ));
            }
        }
        thread::sleep(Duration::from_millis(1));
    }
    Err(format!("no generation with {count} synced members within {SETTLE_TIMEOUT:?}"))
}

/// One sample per round: from the new member's first JoinGroup to the last SyncGroup response of the group.
pub fn rebalance_latency(
    bootstrap: &str,
    group: &str,
    members: usize,
    rounds: usize,
    heartbeat: Duration,
) -> Result<Vec<Duration>, String> {
    let shared = Arc::new(Mutex::new(Shared::default()));
    let stop_all = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::new();
    let start = Instant::now();
    for _ in 0..members {
        let member = Member::connect(bootstrap, group, heartbeat).map_err(|e| e.to_string())?;
        let (shared, stop) = (shared.clone(), stop_all.clone());
        threads.push(thread::spawn(move || member.run(&shared, &stop)));
    }
    let result = (|| {
        let (mut generation, _) = wait_stable(&shared, members, 0, start)?;
        let mut samples = Vec::with_capacity(rounds);
        for round in 0..rounds {
            let stop_new = Arc::new(AtomicBool::new(false));
            let member = Member::connect(bootstrap, group, heartbeat).map_err(|e| e.to_string())?;
            let joined_at = Instant::now();
            let newcomer = {
                let (shared, stop) = (shared.clone(), stop_new.clone());
                thread::spawn(move || member.run(&shared, &stop))
            };
            let (joined, last_sync) = wait_stable(&shared, members + 1, generation, joined_at)?;
            samples.push(last_sync - joined_at);
            eprintln!(
                "round {}/{rounds}: {} members synced {:.1} ms after the JoinGroup",
                round + 1,
                members + 1,
                (last_sync - joined_at).as_secs_f64() * 1e3
            );
            let left_at = Instant::now();
            stop_new.store(true, Ordering::Relaxed);
            newcomer.join().map_err(|_| "member thread panicked".to_string())?;
            generation = wait_stable(&shared, members, joined, left_at)?.0;
        }
        Ok(samples)
    })();
    stop_all.store(true, Ordering::Relaxed);
    for thread in threads {
        let _ = thread.join();
    }
    result
}

/// Commits answered per second with `clients` connections committing one at a time for `duration`.
pub fn commit_rate(bootstrap: &str, topic: &str, clients: usize, duration: Duration) -> Result<f64, String> {
    let mut setup = Connection::connect(bootstrap).map_err(|e| e.to_string())?;
    let versions = setup.negotiate_versions().map_err(|e| e.to_string())?;
    Metadata::new(vec![bootstrap.to_owned()], versions, vec![topic.to_owned()])
        .create_topics(1, 1, &[])
        .map_err(|e| e.to_string())?;
    let committed = Arc::new(AtomicU64::new(0));
    let failure: Arc<Mutex<Option<String>>> = Arc::default();
    let deadline = Instant::now() + duration;
    let started = Instant::now();
    let threads: Vec<_> = (0..clients)
        .map(|index| {
            let (bootstrap, topic) = (bootstrap.to_owned(), topic.to_owned());
            let (committed, failure) = (committed.clone(), failure.clone());
            thread::spawn(move || {
                let result = (|| -> Result<(), ClientError> {
                    let mut connection = Connection::connect(&bootstrap)?;
                    let mut offset = 0i64;
                    while Instant::now() < deadline {
                        let mut partition = OffsetCommitRequestPartition::default();
                        partition.partition_index = 0;
                        partition.committed_offset = offset;
                        partition.committed_leader_epoch = -1;
                        let mut commit_topic = OffsetCommitRequestTopic::default();
                        commit_topic.name = topic_name(&topic);
                        commit_topic.partitions = vec![partition];
                        let mut request = OffsetCommitRequest::default();
                        request.group_id = GroupId(text(&format!("commit-bench-{index}")));
                        request.generation_id_or_member_epoch = -1;
                        request.topics = vec![commit_topic];
                        let response = connection.call(&request, COMMIT_VERSION)?;
                        let error_code = response.topics[0].partitions[0].error_code;
                        if error_code != 0 {
                            return Err(ClientError::Broker { what: "OffsetCommit".into(), error_code });
                        }
                        committed.fetch_add(1, Ordering::Relaxed);
                        offset += 1;
                    }
                    Ok(())
                })();
                if let Err(error) = result {
                    failure
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .get_or_insert(error.to_string());
                }
            })
        })
        .collect();
    for thread in threads {
        let _ = thread.join();
    }
    if let Some(error) = failure.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take() {
        return Err(error);
    }
    Ok(committed.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64())
}
