//! Sequencing: `append` validates batches, assigns offsets and queues them for the flusher; `wait_durable` waits
//! for the flusher's fdatasync.

use bytes::Bytes;

use super::{AppendInfo, Log, LogError, PendingBatch, TimestampType};
use crate::batch::{self, validate_record_set};
use crate::io::Storage;
use crate::types::{now_ms, Offset};

impl<S: Storage> Log<S> {
    /// Validates and sequences one or more v2 batches: assigns offsets, stamps baseOffset and the leader epoch in
    /// place, and queues them for the flusher. Returns once the order is fixed; see `wait_durable` for
    /// durability. Invalid input leaves the log unchanged.
    pub async fn append(&self, records: Bytes, leader_epoch: i32) -> Result<AppendInfo, LogError> {
        let summaries = validate_record_set(&records)?;
        let (batch_size_max, unflushed_size_max, timestamp_type) = {
            let config = self.inner.config.borrow();
            (config.batch_size_max, config.unflushed_size_max, config.timestamp_type)
        };
        if let Some(large) = summaries.iter().find(|summary| summary.size > batch_size_max) {
            return Err(LogError::BatchTooLarge { size: large.size, max: batch_size_max });
        }
        // Back-pressure: wait while the write-behind buffer is full (an empty buffer always takes one request).
        loop {
            {
                let state = self.inner.state.borrow();
                state.check_writable()?;
                if state.unflushed_size == 0 || state.unflushed_size + records.len() <= unflushed_size_max {
                    break;
                }
            }
            self.inner.flusher_wakeup.notify_all();
            self.inner.progress.notified().await;
        }

        let append_time_ms = now_ms();
        let mut bytes = batch::into_mut(records);
        let mut state = self.inner.state.borrow_mut();
        let base_offset = state.next_offset;
        let mut next_offset = base_offset;
        let mut placed = Vec::with_capacity(summaries.len());
        for summary in &summaries {
            let range = summary.position..summary.position + summary.size;
            batch::stamp_batch(&mut bytes[range.clone()], next_offset, leader_epoch);
            let mut max_timestamp = summary.max_timestamp;
            if timestamp_type == TimestampType::LogAppendTime {
                batch::stamp_log_append_time(&mut bytes[range.clone()], append_time_ms);
                max_timestamp = append_time_ms;
            }
            let last_offset = Offset(next_offset.0 + summary.offset_count - 1);
            placed.push((range, next_offset, last_offset, max_timestamp));
            next_offset = last_offset.next();
        }
        let bytes = bytes.freeze();
        for (range, base, last, max_timestamp) in placed {
            state.unflushed.push_back(PendingBatch {
                base_offset: base,
                last_offset: last,
                max_timestamp,
                bytes: bytes.slice(range),
            });
        }
        state.unflushed_size += bytes.len();
        state.next_offset = next_offset;
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

    /// Waits until every offset below `offset_end` is written and fdatasync'd (forcing a sync under the interval
    /// policy).
    pub async fn wait_durable(&self, offset_end: Offset) -> Result<(), LogError> {
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
                if let Some(reason) = &state.poisoned {
                    return Err(LogError::Poisoned(reason.clone()));
                }
                if state.closed {
                    return Err(LogError::Closed);
                }
                state.sync_requested = true;
            }
            self.inner.flusher_wakeup.notify_all();
            self.inner.progress.notified().await;
        }
    }
}
