//! `EpochHistory`: a replica's leader-epoch cache (Kafka's `LeaderEpochFileCache`, KIP-101): the start offset of
//! every leader epoch whose batches (or whose leadership, for the current leader) the log holds. It answers the one
//! question truncation needs: "where does epoch E end in this log?" (`end_offset_for`).
//!
//! Entries are strictly increasing in epoch and non-decreasing in start offset. The broker keeps the same map in
//! storage's `LeaderEpochCache`; the simulator rebuilds it from the durable log after a crash, as Kafka's recovery
//! does, because the checkpoint is flushed asynchronously.

use crate::types::LeaderEpoch;
use sluice_storage::Offset;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EpochHistory {
    entries: Vec<(LeaderEpoch, Offset)>,
}

impl EpochHistory {
    pub fn new() -> EpochHistory {
        EpochHistory::default()
    }

    pub fn entries(&self) -> &[(LeaderEpoch, Offset)] {
        &self.entries
    }

    /// The newest epoch the log knows of, or `LeaderEpoch::NONE` for an empty history.
    pub fn latest(&self) -> LeaderEpoch {
        self.entries.last().map_or(LeaderEpoch::NONE, |&(epoch, _)| epoch)
    }

    /// Epoch `epoch` starts at `start` (a batch of that epoch was appended there, or this replica became its leader
    /// with its log ending there). Like Kafka's `assign`, an entry that starts at or after `start` is replaced: an
    /// epoch that never wrote a batch ends where the next one starts.
    pub fn assign(&mut self, epoch: LeaderEpoch, start: Offset) {
        if let Some(&(latest, _)) = self.entries.last() {
            if latest == epoch {
                return;
            }
            assert!(epoch > latest, "epoch {epoch} assigned after {latest}: epochs never go back");
        }
        self.entries.retain(|&(_, entry_start)| entry_start < start);
        self.entries.push((epoch, start));
        self.check();
    }

    /// The log was cut at `end`: epochs that started at or after it are gone.
    pub fn truncate_to(&mut self, end: Offset) {
        self.entries.retain(|&(_, start)| start < end);
        self.check();
    }

    /// Kafka's `endOffsetFor`: the largest epoch at or below `epoch` this log holds, and the offset where it ends
    /// (the start of the next epoch, or `log_end` for the newest). `(NONE, first start)` when the log holds no such
    /// epoch: nothing before its first epoch is shared with it.
    pub fn end_offset_for(&self, epoch: LeaderEpoch, log_end: Offset) -> (LeaderEpoch, Offset) {
        let floor = self.entries.partition_point(|&(entry_epoch, _)| entry_epoch <= epoch);
        if floor == 0 {
            let first_start = self.entries.first().map_or(log_end, |&(_, start)| start);
            return (LeaderEpoch::NONE, first_start.min(log_end));
        }
        let (floor_epoch, _) = self.entries[floor - 1];
        let end = self.entries.get(floor).map_or(log_end, |&(_, next_start)| next_start);
        (floor_epoch, end.min(log_end))
    }

    fn check(&self) {
        for pair in self.entries.windows(2) {
            assert!(pair[0].0 < pair[1].0, "epoch history {:?} is not increasing", self.entries);
            assert!(pair[0].1 <= pair[1].1, "epoch history {:?} goes back in offsets", self.entries);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn history(entries: &[(i32, i64)]) -> EpochHistory {
        let mut history = EpochHistory::new();
        for &(epoch, start) in entries {
            history.assign(LeaderEpoch(epoch), Offset(start));
        }
        history
    }

    // Kafka's endOffsetFor, case by case: the newest epoch ends at the log end, an older one where the next starts,
    // a missing one answers with the largest epoch below it, and one below them all with NONE.
    #[test]
    fn end_offsets() {
        let history = history(&[(1, 0), (3, 10), (4, 15)]);
        let check = |epoch: i32, expected: (i32, i64)| {
            let (found_epoch, end) = history.end_offset_for(LeaderEpoch(epoch), Offset(20));
            assert_eq!((found_epoch.0, end.0), expected, "epoch {epoch}");
        };
        check(4, (4, 20));
        check(9, (4, 20));
        check(3, (3, 15));
        check(2, (1, 10));
        check(1, (1, 10));
        check(0, (-1, 0));
        assert_eq!(history.latest(), LeaderEpoch(4));
    }

    // An epoch that wrote nothing is replaced by the next one starting at the same offset; truncation drops the
    // epochs that started at or after the cut.
    #[test]
    fn assign_and_truncate() {
        let mut history = history(&[(0, 0), (2, 5), (3, 5)]);
        assert_eq!(history.entries(), &[(LeaderEpoch(0), Offset(0)), (LeaderEpoch(3), Offset(5))]);
        history.assign(LeaderEpoch(3), Offset(9));
        assert_eq!(history.latest(), LeaderEpoch(3), "re-assigning the newest epoch is a no-op");
        history.truncate_to(Offset(5));
        assert_eq!(history.entries(), &[(LeaderEpoch(0), Offset(0))]);
        assert_eq!(history.end_offset_for(LeaderEpoch(3), Offset(5)), (LeaderEpoch(0), Offset(5)));
    }

    #[test]
    #[should_panic(expected = "epochs never go back")]
    fn older_epoch_is_a_broken_invariant() {
        history(&[(2, 0), (1, 4)]);
    }
}
