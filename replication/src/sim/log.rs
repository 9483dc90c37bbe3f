//! A simulated replica log with a *written* image and a *durable* one, so that a simulated crash loses exactly the
//! unsynced suffix (the fault FoundationDB and redb test for). It is the simulator's side of the `ReplicaLog` seam and
//! the reference model the broker's implementation can be compared with.

use std::fmt;

use crate::seams::ReplicaLog;
use crate::types::LeaderEpoch;
use sluice_storage::Offset;

/// A record batch reduced to what replication looks at: where it sits, how many offsets it covers, which leader
/// wrote it, and a payload tag so that tests can tell two batches at one offset apart (divergence).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SimBatch {
    pub base_offset: Offset,
    pub record_count: u32,
    pub leader_epoch: LeaderEpoch,
    pub payload: u64,
}

impl SimBatch {
    /// One past the last offset of the batch.
    pub fn end_offset(&self) -> Offset {
        Offset(self.base_offset.0 + i64::from(self.record_count))
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SimLogError {
    /// A batch does not start where the log (or the previous batch) ends.
    Gap {
        expected: Offset,
        found: Offset,
    },
    EmptyBatch {
        base_offset: Offset,
    },
    TruncateBeyondEnd {
        offset: Offset,
        log_end_offset: Offset,
    },
}

impl fmt::Display for SimLogError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SimLogError::Gap { expected, found } => {
                write!(formatter, "batch at offset {found} does not continue the log at {expected}")
            }
            SimLogError::EmptyBatch { base_offset } => {
                write!(formatter, "batch at offset {base_offset} has no records")
            }
            SimLogError::TruncateBeyondEnd { offset, log_end_offset } => {
                write!(formatter, "cannot truncate to {offset}, beyond the log end offset {log_end_offset}")
            }
        }
    }
}

#[derive(Clone, Debug, Default)]
pub struct SimLog {
    batches: Vec<SimBatch>,
    /// Batches below this index are durable. Truncation may lower it; only `sync` raises it.
    durable_batch_count: usize,
}

impl SimLog {
    pub fn new() -> SimLog {
        SimLog::default()
    }

    pub fn batches(&self) -> &[SimBatch] {
        &self.batches
    }

    /// A simulated fdatasync completing: everything written so far is durable.
    pub fn sync(&mut self) {
        self.durable_batch_count = self.batches.len();
    }

    /// A simulated power cut: the written image reverts to the durable one.
    pub fn crash(&mut self) {
        self.batches.truncate(self.durable_batch_count);
    }

    fn check(&self) {
        assert!(self.durable_batch_count <= self.batches.len());
        assert!(self.durable_end_offset() <= self.log_end_offset());
    }
}

impl ReplicaLog for SimLog {
    type Batches = Vec<SimBatch>;
    type Error = SimLogError;

    fn log_end_offset(&self) -> Offset {
        self.batches.last().map_or(Offset(0), SimBatch::end_offset)
    }

    fn durable_end_offset(&self) -> Offset {
        match self.durable_batch_count {
            0 => Offset(0),
            count => self.batches[count - 1].end_offset(),
        }
    }

    fn append_replicated(
        &mut self,
        base_offset: Offset,
        batches: Vec<SimBatch>,
    ) -> Result<Offset, SimLogError> {
        // Validate the whole request before changing anything, so that an error leaves the log as it was.
        let mut expected = self.log_end_offset();
        if base_offset != expected {
            return Err(SimLogError::Gap { expected, found: base_offset });
        }
        for batch in &batches {
            if batch.base_offset != expected {
                return Err(SimLogError::Gap { expected, found: batch.base_offset });
            }
            if batch.record_count == 0 {
                return Err(SimLogError::EmptyBatch { base_offset: batch.base_offset });
            }
            expected = batch.end_offset();
        }
        self.batches.extend(batches);
        assert_eq!(self.log_end_offset(), expected);
        self.check();
        Ok(expected)
    }

    /// Truncates at batch granularity, as Kafka does: `offset` must fall on a batch boundary in practice, because
    /// followers truncate to epoch boundaries, which are batch boundaries. A batch straddling `offset` is removed whole.
    fn truncate_to(&mut self, offset: Offset) -> Result<(), SimLogError> {
        let log_end_offset = self.log_end_offset();
        if offset > log_end_offset {
            return Err(SimLogError::TruncateBeyondEnd { offset, log_end_offset });
        }
        let keep_count = self.batches.partition_point(|batch| batch.end_offset() <= offset);
        self.batches.truncate(keep_count);
        self.durable_batch_count = self.durable_batch_count.min(keep_count);
        assert!(self.log_end_offset() <= offset);
        self.check();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(base_offset: i64, record_count: u32, payload: u64) -> SimBatch {
        SimBatch { base_offset: Offset(base_offset), record_count, leader_epoch: LeaderEpoch(0), payload }
    }

    // Appends continue the log or fail without changing it; a crash loses exactly the unsynced suffix.
    #[test]
    fn append_sync_crash() {
        let mut log = SimLog::new();
        assert_eq!(log.append_replicated(Offset(0), vec![batch(0, 3, 1), batch(3, 2, 2)]), Ok(Offset(5)));
        log.sync();
        assert_eq!(log.append_replicated(Offset(5), vec![batch(5, 4, 3)]), Ok(Offset(9)));
        assert_eq!((log.log_end_offset(), log.durable_end_offset()), (Offset(9), Offset(5)));
        let gap = log.append_replicated(Offset(9), vec![batch(9, 1, 4), batch(11, 1, 5)]);
        assert_eq!(gap, Err(SimLogError::Gap { expected: Offset(10), found: Offset(11) }));
        assert_eq!(gap.unwrap_err().to_string(), "batch at offset 11 does not continue the log at 10");
        assert_eq!(log.log_end_offset(), Offset(9), "a refused append changes nothing");
        assert!(log.append_replicated(Offset(8), vec![batch(8, 1, 6)]).is_err());
        log.crash();
        assert_eq!((log.log_end_offset(), log.durable_end_offset()), (Offset(5), Offset(5)));
    }

    // Truncation removes whole batches at and above the offset, lowers the durable end with it, and refuses to
    // reach beyond the log end.
    #[test]
    fn truncate() {
        let mut log = SimLog::new();
        log.append_replicated(Offset(0), vec![batch(0, 3, 1), batch(3, 2, 2), batch(5, 5, 3)]).unwrap();
        log.sync();
        assert_eq!(
            log.truncate_to(Offset(11)),
            Err(SimLogError::TruncateBeyondEnd { offset: Offset(11), log_end_offset: Offset(10) })
        );
        log.truncate_to(Offset(5)).unwrap();
        assert_eq!((log.log_end_offset(), log.durable_end_offset()), (Offset(5), Offset(5)));
        log.truncate_to(Offset(4)).unwrap();
        assert_eq!((log.log_end_offset(), log.durable_end_offset()), (Offset(3), Offset(3)));
        assert_eq!(log.batches(), &[batch(0, 3, 1)]);
    }
}
