//! Sequencing: `append` validates batches, assigns offsets and queues them for the flusher; `append_replicated`
//! queues a follower's copy of the leader's batches as they are; `wait_durable` waits for the flusher's fdatasync.

use std::ops::Range;

use bytes::Bytes;

use super::{AppendInfo, Log, LogError, LogState, PendingBatch, TimestampType};
use crate::batch::{self, validate_batch, validate_record_set, BatchHeader};
use crate::io::Storage;
use crate::types::Offset;

/// One batch of a record set, placed in the log: its byte range in the set and the offsets it holds.
struct Placed {
    range: Range<usize>,
    base_offset: Offset,
    last_offset: Offset,
    max_timestamp: i64,
    leader_epoch: i32,
}

impl<S: Storage> Log<S> {
    /// Validates and sequences one or more v2 batches: assigns offsets, stamps baseOffset and the leader epoch in
    /// place, and queues them for the flusher. Returns once the order is fixed; see `wait_durable` for
    /// durability. Invalid input leaves the log unchanged.
    pub async fn append(&self, records: Bytes, leader_epoch: i32) -> Result<AppendInfo, LogError> {
        let summaries = validate_record_set(&records)?;
        let timestamp_type = self.inner.config.borrow().timestamp_type;
        self.append_check_sizes(summaries.iter().map(|summary| summary.size))?;
        self.append_wait_for_space(records.len()).await?;

        let append_time_ms = self.inner.runtime.clock.now_ms();
        let mut bytes = batch::into_mut(records);
        let mut state = self.inner.state.borrow_mut();
        let base_offset = state.next_offset;
        let mut next_offset = base_offset;
        let mut placed = Vec::with_capacity(summaries.len());
        for summary in &summaries {
            let range = summary.position..summary.position + summary.size;
            let batch = &mut bytes[range.clone()];
            batch::stamp_batch(batch, next_offset, leader_epoch);
            let mut max_timestamp = summary.max_timestamp;
            if timestamp_type == TimestampType::LogAppendTime {
                batch::stamp_log_append_time(batch, append_time_ms);
                max_timestamp = append_time_ms;
            }
            let last_offset = Offset(next_offset.0 + summary.offset_count - 1);
            placed.push(Placed { range, base_offset: next_offset, last_offset, max_timestamp, leader_epoch });
            next_offset = last_offset.next();
        }
        let bytes = bytes.freeze();
        let offset_count: i64 = summaries.iter().map(|summary| summary.offset_count).sum();
        assert_eq!(
            next_offset.0 - base_offset.0,
            offset_count,
            "offsets assigned to {} batches",
            summaries.len()
        );
        self.append_enqueue(&mut state, &bytes, &placed);
        let info = AppendInfo {
            base_offset,
            last_offset: Offset(next_offset.0 - 1),
            append_time_ms: if timestamp_type == TimestampType::LogAppendTime { append_time_ms } else { -1 },
            log_start_offset: state.log_start_offset,
        };
        drop(state);
        self.inner.flusher_wakeup.notify_all();
        Ok(info)
    }

    /// A follower's append: queues batches copied from the leader exactly as they are, with the leader's base
    /// offsets, partition leader epochs and timestamps (nothing is restamped). Each batch is validated as `append`
    /// validates (length, magic, CRC, size limit); the first must start at the log end and each next one where the
    /// previous ended, else `LogError::UnexpectedOffset`. Durability is `append`'s: see `wait_durable`. Invalid
    /// input leaves the log unchanged.
    pub async fn append_replicated(&self, records: Bytes) -> Result<AppendInfo, LogError> {
        let placed = append_replicated_validate(&records, self.log_end_offset())?;
        self.append_check_sizes(placed.iter().map(|batch| batch.range.len()))?;
        self.append_wait_for_space(records.len()).await?;
        let mut state = self.inner.state.borrow_mut();
        let base_offset = placed[0].base_offset;
        if base_offset != state.next_offset {
            return Err(LogError::UnexpectedOffset { expected: state.next_offset, base_offset });
        }
        let last_offset = placed[placed.len() - 1].last_offset;
        self.append_enqueue(&mut state, &records, &placed);
        let info = AppendInfo {
            base_offset,
            last_offset,
            append_time_ms: -1,
            log_start_offset: state.log_start_offset,
        };
        drop(state);
        self.inner.flusher_wakeup.notify_all();
        Ok(info)
    }

    fn append_check_sizes(&self, sizes: impl Iterator<Item = usize>) -> Result<(), LogError> {
        let batch_size_max = self.inner.config.borrow().batch_size_max;
        for size in sizes {
            if size > batch_size_max {
                return Err(LogError::BatchTooLarge { size, max: batch_size_max });
            }
        }
        Ok(())
    }

    /// Back-pressure: waits while the write-behind buffer is full (an empty buffer always takes one request).
    async fn append_wait_for_space(&self, size: usize) -> Result<(), LogError> {
        let unflushed_size_max = self.inner.config.borrow().unflushed_size_max;
        // Bounded by the flusher's progress: every round it finishes releases written bytes and notifies.
        loop {
            {
                let state = self.inner.state.borrow();
                state.check_writable()?;
                if state.unflushed_size == 0 || state.unflushed_size + size <= unflushed_size_max {
                    return Ok(());
                }
                if let Some(reason) = &state.stalled {
                    // Full while the flusher cannot write: refuse rather than wait for space that may not come.
                    return Err(LogError::Stalled(reason.clone()));
                }
            }
            self.inner.flusher_wakeup.notify_all();
            self.inner.progress.notified().await;
        }
    }

    /// Queues placed batches (slices of `bytes`) for the flusher and moves the log end past them. The batches must
    /// continue the log: contiguous offsets from the current log end, each header saying what was placed.
    fn append_enqueue(&self, state: &mut LogState<S>, bytes: &Bytes, placed: &[Placed]) {
        let log_end_before = state.next_offset;
        // The queue's newest batch (or, with the queue empty, the written end) meets the log end.
        let queued_end =
            state.unflushed.back().map_or(state.flushed_offset, |batch| batch.last_offset.next());
        assert_eq!(queued_end, log_end_before, "unflushed queue out of step with the log end");
        let mut next_offset = log_end_before;
        for batch in placed {
            assert_eq!(batch.base_offset, next_offset, "batches not contiguous at the log end");
            assert!(
                batch.last_offset >= batch.base_offset,
                "batch ends at {} before it starts",
                batch.last_offset
            );
            // Paired with the flusher's check before the write: the header says what the log placed.
            let header = BatchHeader::parse(&bytes[batch.range.clone()]);
            assert!(header.is_ok_and(|header| header.base_offset() == batch.base_offset
                && header.last_offset() == batch.last_offset
                && header.partition_leader_epoch.get() == batch.leader_epoch));
            if state.epochs.latest_epoch().is_none_or(|latest| batch.leader_epoch > latest) {
                state.update_epochs(|epochs| epochs.assign(batch.leader_epoch, batch.base_offset));
            }
            state.unflushed.push_back(PendingBatch {
                base_offset: batch.base_offset,
                last_offset: batch.last_offset,
                max_timestamp: batch.max_timestamp,
                bytes: bytes.slice(batch.range.clone()),
            });
            state.unflushed_size += batch.range.len();
            next_offset = batch.last_offset.next();
        }
        state.next_offset = next_offset;
        // A stalled flusher retries at once for a new append, so the append's own wait sees a fresh attempt.
        state.retry_requested = state.stalled.is_some();
        assert!(state.next_offset > log_end_before, "an append moves the log end");
        state.assert_offsets();
    }

    /// Waits until every offset below `offset_end` is written and fdatasync'd (forcing a sync under the interval
    /// policy).
    pub async fn wait_durable(&self, offset_end: Offset) -> Result<(), LogError> {
        self.wait_durable_with(offset_end, false).await
    }

    /// [`Log::wait_durable`] that outlasts failed flushes: it waits through a stall or a poisoning and its repair,
    /// and fails only when the offsets leave the log or the log closes. For those who publish what became
    /// durable (the high watermark) rather than answer a client.
    pub async fn wait_durable_through_failures(&self, offset_end: Offset) -> Result<(), LogError> {
        self.wait_durable_with(offset_end, true).await
    }

    async fn wait_durable_with(&self, offset_end: Offset, through_failures: bool) -> Result<(), LogError> {
        let failure_count_start = self.inner.state.borrow().failure_count;
        loop {
            {
                let mut state = self.inner.state.borrow_mut();
                if offset_end > state.next_offset {
                    // Never appended, or removed by a truncation while waiting.
                    return Err(LogError::OffsetOutOfRange {
                        offset: offset_end,
                        log_start: state.log_start_offset,
                        log_end: state.next_offset,
                    });
                }
                if state.durable_offset >= offset_end {
                    return Ok(());
                }
                if state.closed {
                    return Err(LogError::Closed);
                }
                if !through_failures {
                    if let Some(reason) = &state.poisoned {
                        return Err(LogError::Poisoned(reason.clone()));
                    }
                    if state.failure_count != failure_count_start {
                        // A flush failed while this waited: its caller hears of it now, and may retry.
                        // (A poisoning may already be repaired: the batches are queued again either way.)
                        let reason = state.stalled.clone().unwrap_or_else(|| {
                            "a write or sync failed; the log repaired itself and writes the batches again"
                                .into()
                        });
                        return Err(LogError::Stalled(reason));
                    }
                }
                state.sync_requested = true;
            }
            self.inner.flusher_wakeup.notify_all();
            self.inner.progress.notified().await;
        }
    }
}

/// Validates a follower's record set batch by batch and checks that the batches continue `log_end` and each other
/// (checking each base offset before its last offset is computed, so no header can overflow the arithmetic). The
/// caller checks the log end again when it queues them. Unlike a producer's, a replicated batch may have offset gaps
/// inside it (compaction), so only `validate_batch`'s record count rule applies.
fn append_replicated_validate(records: &Bytes, log_end: Offset) -> Result<Vec<Placed>, LogError> {
    let mut placed: Vec<Placed> = Vec::new();
    let mut position = 0;
    // Bounded: each pass consumes one batch of at least a header's size.
    while position < records.len() {
        let (header, size) = validate_batch(&records[position..])?;
        let base_offset = header.base_offset();
        let expected = placed.last().map_or(log_end, |previous| previous.last_offset.next());
        if base_offset != expected {
            return Err(LogError::UnexpectedOffset { expected, base_offset });
        }
        placed.push(Placed {
            range: position..position + size,
            base_offset,
            last_offset: header.last_offset(),
            max_timestamp: header.max_timestamp.get(),
            leader_epoch: header.partition_leader_epoch.get(),
        });
        position += size;
    }
    if placed.is_empty() {
        return Err(LogError::InvalidBatch(batch::BatchError::Empty));
    }
    Ok(placed)
}
