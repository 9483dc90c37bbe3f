//! KIP-227 fetch sessions: a consumer of thousands of partitions sends them all once, then only what changed.
//!
//! A full fetch with epoch 0 opens a session; the response carries its id. Each later request names the session
//! and the next epoch and lists only partitions added or whose fetch offset moved (plus the ones to forget); the
//! response lists only partitions with records, a new high watermark or log start offset, or an error. The
//! session's partitions are kept in fetch order, and a partition that returned records moves to the end, so a
//! response limit that cannot hold every partition serves each in turn across requests (Kafka's
//! `IncrementalFetchContext`).
//!
//! One [`SessionCache`] per shard, in a thread-local because a shard is one thread and owns its connections: a
//! connection's requests all reach the shard that accepted it, so its session is always there. A request naming
//! a session that another shard (or no one) holds gets FETCH_SESSION_ID_NOT_FOUND, and the client starts over
//! with a full fetch, as it does when a Kafka broker evicted its session. Created when the shard's thread first
//! fetches, dropped with the thread.

use std::cell::RefCell;
use std::collections::hash_map::RandomState;
use std::collections::{BTreeMap, HashMap};
use std::hash::BuildHasher;

use crate::errors::ResponseError;

/// Sessions one shard keeps: Kafka's `max.incremental.fetch.session.cache.slots` default (1,000 per broker).
/// When full, a new session evicts the least recently used one; that client gets FETCH_SESSION_ID_NOT_FOUND on
/// its next request and opens a new session with a full fetch, so eviction costs bytes, never correctness.
pub const SESSION_COUNT_MAX: usize = 1000;

/// The epoch of a full fetch that opens a session (closing the one named, if any).
const EPOCH_INITIAL: i32 = 0;
/// The epoch of a full fetch without a session (closing the one named, if any).
const EPOCH_FINAL: i32 = -1;

thread_local! {
    /// This shard's sessions (see the module comment).
    pub static CACHE: RefCell<SessionCache> = RefCell::new(SessionCache::new(SESSION_COUNT_MAX));
}

/// A partition as the request names it: by topic name (v7–12) or topic id (v13+), the other left empty.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PartitionKey {
    pub topic: String,
    pub topic_id: [u8; 16],
    pub index: i32,
}

/// What a request (or a session on its behalf) asks of one partition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Wanted {
    pub key: PartitionKey,
    pub offset: i64,
    pub size_max: usize,
}

/// What a fetch answered for one partition, as the session remembers it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Served {
    pub high_watermark: i64,
    pub log_start_offset: i64,
    pub has_records: bool,
    pub has_error: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// A full fetch that keeps no state (epoch -1, or a version before sessions).
    Sessionless,
    /// A full fetch that opens a session once answered.
    New,
    /// A request in session `id`: partitions in the session's order, the response lists only changes.
    Incremental { id: i32 },
}

/// The partitions a request fetches, in the order they are read and answered.
#[derive(Debug)]
pub struct Plan {
    pub mode: Mode,
    pub wanted: Vec<Wanted>,
}

struct Cached {
    wanted: Wanted,
    /// What the last response told the client (-1 before any), to leave out partitions with nothing new.
    high_watermark: i64,
    log_start_offset: i64,
}

struct Session {
    /// The epoch the next request must carry.
    epoch_next: i32,
    /// The partitions in fetch order, keyed by a position that only grows: moving one to the end is a new key.
    order: BTreeMap<u64, Cached>,
    positions: HashMap<PartitionKey, u64>,
    position_next: u64,
    used_tick: u64,
}

impl Session {
    fn push(&mut self, cached: Cached) {
        if let Some(position) = self.positions.remove(&cached.wanted.key) {
            self.order.remove(&position);
        }
        self.positions.insert(cached.wanted.key.clone(), self.position_next);
        self.order.insert(self.position_next, cached);
        self.position_next += 1;
        assert_eq!(self.order.len(), self.positions.len(), "session order and index disagree");
    }

    fn upsert(&mut self, wanted: Wanted) {
        match self.positions.get(&wanted.key).and_then(|position| self.order.get_mut(position)) {
            Some(cached) => cached.wanted = wanted,
            None => self.push(Cached { wanted, high_watermark: -1, log_start_offset: -1 }),
        }
    }

    fn forget(&mut self, key: &PartitionKey) {
        if let Some(position) = self.positions.remove(key) {
            self.order.remove(&position);
        }
    }
}

/// One shard's fetch sessions, at most `session_count_max` of them.
pub struct SessionCache {
    sessions: HashMap<i32, Session>,
    session_count_max: usize,
    tick: u64,
    /// Session ids are hashes of a counter under random keys: unpredictable, so a client cannot guess another's.
    id_state: RandomState,
    id_counter: u64,
}

impl SessionCache {
    pub fn new(session_count_max: usize) -> SessionCache {
        assert!(session_count_max > 0, "a session cache needs room for one session");
        SessionCache {
            sessions: HashMap::new(),
            session_count_max,
            tick: 0,
            id_state: RandomState::new(),
            id_counter: 0,
        }
    }

    #[cfg(test)]
    fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// Starts a request: what to fetch, in which order, or the top-level error (FETCH_SESSION_ID_NOT_FOUND,
    /// INVALID_FETCH_SESSION_EPOCH). An incremental request's partitions and forgotten ones update its session
    /// now, and its epoch advances, so a replayed request is refused.
    pub fn begin(
        &mut self,
        version: i16,
        session_id: i32,
        epoch: i32,
        requested: Vec<Wanted>,
        forgotten: &[PartitionKey],
    ) -> Result<Plan, ResponseError> {
        if version < 7 {
            return Ok(Plan { mode: Mode::Sessionless, wanted: requested });
        }
        if epoch == EPOCH_FINAL || epoch == EPOCH_INITIAL {
            self.sessions.remove(&session_id);
            let mode = if epoch == EPOCH_INITIAL { Mode::New } else { Mode::Sessionless };
            return Ok(Plan { mode, wanted: requested });
        }
        self.tick += 1;
        let session = self.sessions.get_mut(&session_id).ok_or(ResponseError::FetchSessionIdNotFound)?;
        if session.epoch_next != epoch {
            return Err(ResponseError::InvalidFetchSessionEpoch);
        }
        session.epoch_next = epoch_after(epoch);
        session.used_tick = self.tick;
        for key in forgotten {
            session.forget(key);
        }
        for wanted in requested {
            session.upsert(wanted);
        }
        let wanted = session.order.values().map(|cached| cached.wanted.clone()).collect();
        Ok(Plan { mode: Mode::Incremental { id: session_id }, wanted })
    }

    /// Opens a session over `wanted` after its full fetch was answered with `served`; returns
    /// its id, evicting the least recently used session when the cache is full.
    pub fn create(&mut self, wanted: &[Wanted], served: &[Served]) -> i32 {
        assert_eq!(wanted.len(), served.len(), "one answer per partition fetched");
        if self.sessions.len() >= self.session_count_max {
            let oldest = self.sessions.iter().min_by_key(|(_, session)| session.used_tick).map(|(id, _)| *id);
            if let Some(oldest) = oldest {
                self.sessions.remove(&oldest);
            }
        }
        self.tick += 1;
        let mut session = Session {
            epoch_next: epoch_after(EPOCH_INITIAL),
            order: BTreeMap::new(),
            positions: HashMap::new(),
            position_next: 0,
            used_tick: self.tick,
        };
        // Partitions that returned records go after the others, as every later response moves them.
        for with_records in [false, true] {
            for (wanted, served) in
                wanted.iter().zip(served).filter(|(_, served)| served.has_records == with_records)
            {
                let (high_watermark, log_start_offset) = (served.high_watermark, served.log_start_offset);
                session.push(Cached { wanted: wanted.clone(), high_watermark, log_start_offset });
            }
        }
        let id = self.id_fresh();
        self.sessions.insert(id, session);
        assert!(self.sessions.len() <= self.session_count_max, "the session cache outgrew its bound");
        id
    }

    /// Records what an incremental request answered; returns, per partition of its plan, whether the response
    /// lists it (records, an error, or a high watermark or log start offset the client has not seen). Partitions
    /// that returned records move to the end of the session's order.
    pub fn finish(&mut self, id: i32, wanted: &[Wanted], served: &[Served]) -> Vec<bool> {
        assert_eq!(wanted.len(), served.len(), "one answer per partition fetched");
        let Some(session) = self.sessions.get_mut(&id) else {
            // Evicted meanwhile: list everything; the client's next request learns the session is gone.
            return vec![true; wanted.len()];
        };
        let mut listed = Vec::with_capacity(wanted.len());
        for (wanted, served) in wanted.iter().zip(served) {
            let Some(position) = session.positions.get(&wanted.key).copied() else {
                listed.push(true); // forgotten by a request that overtook this one
                continue;
            };
            let Some(cached) = session.order.get_mut(&position) else {
                listed.push(true);
                continue;
            };
            let changed = served.high_watermark != cached.high_watermark
                || served.log_start_offset != cached.log_start_offset;
            cached.high_watermark = served.high_watermark;
            cached.log_start_offset = served.log_start_offset;
            listed.push(changed || served.has_records || served.has_error);
            if served.has_records {
                if let Some(cached) = session.order.remove(&position) {
                    session.positions.remove(&wanted.key);
                    session.push(cached);
                }
            }
        }
        listed
    }

    fn id_fresh(&mut self) -> i32 {
        // Bounded: at most session_count_max ids are taken out of 2^31 - 1.
        loop {
            self.id_counter += 1;
            let id = (self.id_state.hash_one(self.id_counter) & 0x7fff_ffff) as i32;
            if id != 0 && !self.sessions.contains_key(&id) {
                return id;
            }
        }
    }
}

/// Kafka's `FetchMetadata.nextEpoch`: epochs count up from 1 and wrap to 1, never back to 0 or -1.
fn epoch_after(epoch: i32) -> i32 {
    if epoch == i32::MAX {
        1
    } else {
        epoch + 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wanted(index: i32, offset: i64) -> Wanted {
        Wanted { key: PartitionKey { topic: "t".into(), topic_id: [0; 16], index }, offset, size_max: 100 }
    }

    fn served(high_watermark: i64, has_records: bool) -> Served {
        Served { high_watermark, log_start_offset: 0, has_records, has_error: false }
    }

    fn order(plan: &Plan) -> Vec<(i32, i64)> {
        plan.wanted.iter().map(|wanted| (wanted.key.index, wanted.offset)).collect()
    }

    /// Full fetch, incremental updates and forgets, changed-only listing, and rotation of partitions with data.
    #[test]
    fn a_session_tracks_changes_and_rotates_partitions_that_returned_records() {
        let mut cache = SessionCache::new(4);
        let full = vec![wanted(0, 0), wanted(1, 0), wanted(2, 0)];
        let plan = cache.begin(12, 0, 0, full.clone(), &[]).unwrap();
        assert_eq!(plan.mode, Mode::New);
        let id = cache.create(&plan.wanted, &[served(5, true), served(0, false), served(3, true)]);
        assert_ne!(id, 0);

        // Epoch 1: partition 0 moved on; 0 and 2 returned records last time, so 1 now comes first.
        let plan = cache.begin(12, id, 1, vec![wanted(0, 5)], &[]).unwrap();
        assert_eq!(plan.mode, Mode::Incremental { id });
        assert_eq!(order(&plan), vec![(1, 0), (0, 5), (2, 0)]);
        let listed = cache.finish(id, &plan.wanted, &[served(0, false), served(5, false), served(4, true)]);
        assert_eq!(listed, vec![false, false, true], "only partition 2 has news");

        // Epoch 2: forget partition 1, add partition 3.
        let plan = cache.begin(12, id, 2, vec![wanted(3, 0)], &[wanted(1, 0).key]).unwrap();
        assert_eq!(order(&plan), vec![(0, 5), (2, 0), (3, 0)]);
    }

    /// Unknown sessions and wrong epochs are refused; epochs 0 and -1 close the named session.
    #[test]
    fn session_errors_and_closing() {
        let mut cache = SessionCache::new(4);
        let plan = cache.begin(12, 0, 0, vec![wanted(0, 0)], &[]).unwrap();
        let id = cache.create(&plan.wanted, &[served(0, false)]);
        assert_eq!(cache.begin(12, id, 2, vec![], &[]).unwrap_err(), ResponseError::InvalidFetchSessionEpoch);
        assert_eq!(
            cache.begin(12, id ^ 1, 1, vec![], &[]).unwrap_err(),
            ResponseError::FetchSessionIdNotFound
        );
        assert!(cache.begin(12, id, 1, vec![], &[]).is_ok());
        assert_eq!(cache.begin(12, id, 1, vec![], &[]).unwrap_err(), ResponseError::InvalidFetchSessionEpoch);
        let plan = cache.begin(12, id, -1, vec![wanted(0, 0)], &[]).unwrap();
        assert_eq!(plan.mode, Mode::Sessionless);
        assert_eq!(cache.session_count(), 0);
        assert_eq!(
            cache.begin(6, 0, 0, vec![], &[]).unwrap().mode,
            Mode::Sessionless,
            "no sessions before v7"
        );
        assert_eq!(epoch_after(i32::MAX), 1);
    }

    /// The cache never holds more than its bound: the least recently used session is evicted.
    #[test]
    fn a_full_cache_evicts_the_least_recently_used_session() {
        let mut cache = SessionCache::new(2);
        let first = cache.create(&[wanted(0, 0)], &[served(0, false)]);
        let second = cache.create(&[wanted(0, 0)], &[served(0, false)]);
        cache.begin(12, first, 1, vec![], &[]).unwrap(); // first is now the more recently used
        let third = cache.create(&[wanted(0, 0)], &[served(0, false)]);
        assert_eq!(cache.session_count(), 2);
        assert!(cache.begin(12, first, 2, vec![], &[]).is_ok());
        assert!(cache.begin(12, third, 1, vec![], &[]).is_ok());
        assert_eq!(
            cache.begin(12, second, 1, vec![], &[]).unwrap_err(),
            ResponseError::FetchSessionIdNotFound
        );
    }
}
