//! The per-shard cache of recent batches. Consumers at the tail of a partition are served from here as `Bytes`
//! slices of the very buffers the producer's request arrived in: no disk read and no copy.
//!
//! One `BatchCache` lives on each shard and is shared (by `Rc`) by every log the shard owns. Its memory bound is
//! global to the shard: inserting past the budget evicts the oldest batches of any log, first in, first out.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::rc::Rc;

use bytes::Bytes;

use crate::types::Offset;

#[derive(Clone)]
pub struct BatchCache {
    inner: Rc<RefCell<CacheInner>>,
}

struct CacheInner {
    size_max: usize,
    size: usize,
    logs: HashMap<u64, BTreeMap<i64, CachedBatch>>,
    /// Insertion order for eviction; entries whose batch was already removed are skipped when popped.
    order: VecDeque<(u64, i64)>,
    hits: u64,
    misses: u64,
    /// Bytes being read ahead from disk into the cache now; at most a quarter of `size_max`.
    read_ahead_size: usize,
}

#[derive(Clone)]
pub(crate) struct CachedBatch {
    pub(crate) last_offset: Offset,
    pub(crate) bytes: Bytes,
}

/// Counters for the metrics endpoint and the benchmarks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    pub size: usize,
    pub size_max: usize,
    pub batch_count: usize,
    pub hits: u64,
    pub misses: u64,
}

impl BatchCache {
    /// A cache that holds at most `size_max` bytes of batches.
    pub fn new(size_max: usize) -> BatchCache {
        BatchCache {
            inner: Rc::new(RefCell::new(CacheInner {
                size_max,
                size: 0,
                logs: HashMap::new(),
                order: VecDeque::new(),
                hits: 0,
                misses: 0,
                read_ahead_size: 0,
            })),
        }
    }

    pub fn stats(&self) -> CacheStats {
        let inner = self.inner.borrow();
        CacheStats {
            size: inner.size,
            size_max: inner.size_max,
            batch_count: inner.logs.values().map(BTreeMap::len).sum(),
            hits: inner.hits,
            misses: inner.misses,
        }
    }

    pub(crate) fn insert(&self, log_id: u64, base_offset: Offset, last_offset: Offset, bytes: Bytes) {
        let mut inner = self.inner.borrow_mut();
        if bytes.len() > inner.size_max {
            return;
        }
        inner.size += bytes.len();
        let previous =
            inner.logs.entry(log_id).or_default().insert(base_offset.0, CachedBatch { last_offset, bytes });
        if let Some(previous) = previous {
            inner.size -= previous.bytes.len();
        }
        inner.order.push_back((log_id, base_offset.0));
        while inner.size > inner.size_max {
            let Some((victim_log, victim_offset)) = inner.order.pop_front() else { break };
            inner.remove(victim_log, victim_offset);
        }
        // Removals by truncation leave stale order entries behind; compact them so the queue stays bounded.
        let batch_count: usize = inner.logs.values().map(BTreeMap::len).sum();
        if inner.order.len() > 2 * batch_count + 1024 {
            let CacheInner { order, logs, .. } = &mut *inner;
            order.retain(|(log, offset)| logs.get(log).is_some_and(|batches| batches.contains_key(offset)));
        }
    }

    /// Consecutive cached batches starting with the one that holds `offset`, while `accept` says yes.
    pub(crate) fn read(
        &self,
        log_id: u64,
        offset: Offset,
        mut accept: impl FnMut(Offset, &Bytes) -> bool,
    ) -> Vec<(Offset, CachedBatch)> {
        let mut inner = self.inner.borrow_mut();
        let mut found = Vec::new();
        if let Some(batches) = inner.logs.get(&log_id) {
            let start = batches.range(..=offset.0).next_back();
            if let Some((&base, _)) = start.filter(|(_, batch)| batch.last_offset >= offset) {
                let mut expected = Offset(base);
                for (&base, batch) in batches.range(base..) {
                    if Offset(base) != expected || !accept(Offset(base), &batch.bytes) {
                        break;
                    }
                    expected = batch.last_offset.next();
                    found.push((Offset(base), batch.clone()));
                }
            }
        }
        if found.is_empty() {
            inner.misses += 1;
        } else {
            inner.hits += 1;
        }
        found
    }

    /// Whether the batch holding `offset` is cached (no hit or miss counted).
    pub(crate) fn contains(&self, log_id: u64, offset: Offset) -> bool {
        let inner = self.inner.borrow();
        inner.logs.get(&log_id).is_some_and(|batches| {
            batches.range(..=offset.0).next_back().is_some_and(|(_, batch)| batch.last_offset >= offset)
        })
    }

    /// Reserves `size` bytes of the shard's read-ahead memory (a quarter of the cache); false when spent.
    pub(crate) fn reserve_read_ahead(&self, size: usize) -> bool {
        let mut inner = self.inner.borrow_mut();
        if inner.read_ahead_size + size > inner.size_max / 4 {
            return false;
        }
        inner.read_ahead_size += size;
        true
    }

    pub(crate) fn release_read_ahead(&self, size: usize) {
        let mut inner = self.inner.borrow_mut();
        inner.read_ahead_size = inner.read_ahead_size.saturating_sub(size);
    }

    /// Drops every batch of the log that holds an offset at or above `offset` (truncation).
    pub(crate) fn remove_from(&self, log_id: u64, offset: Offset) {
        let mut inner = self.inner.borrow_mut();
        let doomed: Vec<i64> = match inner.logs.get(&log_id) {
            Some(batches) => batches
                .iter()
                .filter(|(_, batch)| batch.last_offset >= offset)
                .map(|(base, _)| *base)
                .collect(),
            None => return,
        };
        for base in doomed {
            inner.remove(log_id, base);
        }
    }

    /// Drops every batch of the log that ends below `offset` (retention, DeleteRecords).
    pub(crate) fn remove_below(&self, log_id: u64, offset: Offset) {
        let mut inner = self.inner.borrow_mut();
        let doomed: Vec<i64> = match inner.logs.get(&log_id) {
            Some(batches) => batches
                .iter()
                .filter(|(_, batch)| batch.last_offset < offset)
                .map(|(base, _)| *base)
                .collect(),
            None => return,
        };
        for base in doomed {
            inner.remove(log_id, base);
        }
    }

    pub(crate) fn remove_log(&self, log_id: u64) {
        let mut inner = self.inner.borrow_mut();
        if let Some(batches) = inner.logs.remove(&log_id) {
            inner.size -= batches.values().map(|batch| batch.bytes.len()).sum::<usize>();
        }
    }
}

impl CacheInner {
    fn remove(&mut self, log_id: u64, base_offset: i64) {
        if let Some(batches) = self.logs.get_mut(&log_id) {
            if let Some(batch) = batches.remove(&base_offset) {
                self.size -= batch.bytes.len();
            }
            if batches.is_empty() {
                self.logs.remove(&log_id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eviction_keeps_the_cache_within_its_budget_oldest_first() {
        let cache = BatchCache::new(250);
        for index in 0..5 {
            cache.insert(1, Offset(index * 10), Offset(index * 10 + 9), Bytes::from(vec![0u8; 100]));
            assert!(cache.stats().size <= 250);
        }
        assert_eq!(cache.stats().batch_count, 2);
        assert!(cache.read(1, Offset(5), |_, _| true).is_empty(), "oldest batch must be gone");
        let run = cache.read(1, Offset(35), |_, _| true);
        assert_eq!(run.iter().map(|(base, _)| base.0).collect::<Vec<_>>(), vec![30, 40]);
    }

    #[test]
    fn removal_by_truncation_and_retention() {
        let cache = BatchCache::new(10_000);
        for index in 0..4 {
            cache.insert(7, Offset(index * 2), Offset(index * 2 + 1), Bytes::from(vec![1u8; 10]));
        }
        cache.remove_from(7, Offset(5));
        assert_eq!(cache.stats().batch_count, 2);
        cache.remove_below(7, Offset(2));
        assert_eq!(cache.stats().batch_count, 1);
        assert_eq!(cache.stats().size, 10);
        assert_eq!(cache.read(7, Offset(3), |_, _| true).len(), 1);
    }
}
