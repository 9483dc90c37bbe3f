//! The seams between replication's state machines and the world: time, the network and the replica's log.
//!
//! Replication is sans-I/O. Its state machines never read a clock, open a socket or wait for a disk; they are handed
//! the time and incoming messages, and they hand back outgoing messages and log operations. The traits below are
//! what a *driver* implements around them: the broker's shard runtime over glommio in production, and the
//! simulator in `crate::sim` under test. Nothing in this crate implements the broker side.
//!
//! **Contract for every method here:** it returns without waiting. A driver that needs I/O to answer starts the
//! I/O, answers from memory, and reports completion later as an input to the state machine (a message, a tick, or
//! a newer `durable_end_offset`). That is what lets one thread run a whole cluster deterministically.

use std::fmt;
use std::time::Duration;

use crate::types::NodeId;
use sluice_storage::Offset;

/// A source of time for a driver. State machines receive `now` as an argument instead of holding a clock, so that
/// one input always produces the same output.
pub trait Clock {
    /// Time since this clock started. Never goes backwards; use it for every timeout, lease and lag measurement.
    fn monotonic(&self) -> Duration;

    /// Milliseconds since the Unix epoch, as Kafka stamps records and reports `lastCaughtUpTimeMs`. It may jump in
    /// either direction (NTP), so it is only ever reported, never subtracted to measure an interval.
    fn wall_ms(&self) -> i64;
}

/// A message in transit: who sent it, to whom, and the payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Envelope<M> {
    pub from: NodeId,
    pub to: NodeId,
    pub message: M,
}

/// Why a bus refused a message at once. Delivery is never promised: a message accepted with `Ok` may still be
/// lost, delayed, duplicated or reordered, and every protocol here tolerates that.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SendError {
    /// The destination is not a member of the cluster this bus knows.
    UnknownNode { node: NodeId, node_count: usize },
    /// The bus's bounded queue is full: back-pressure. The message was dropped; the protocol's retry resends it.
    QueueFull { queue_length_max: usize },
}

impl fmt::Display for SendError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendError::UnknownNode { node, node_count } => {
                write!(formatter, "{node} is not one of the {node_count} nodes of this cluster")
            }
            SendError::QueueFull { queue_length_max } => {
                write!(formatter, "message queue is full at its limit of {queue_length_max} messages")
            }
        }
    }
}

impl std::error::Error for SendError {}

/// The network as a driver sees it: a bounded, unreliable, asynchronous mailbox between nodes, generic over the
/// message type so that the Raft quorum and the ISR data path each bring their own.
pub trait MessageBus<M> {
    /// Queues `message` from `from` to `to`. `Ok` means accepted, not delivered.
    fn send(&mut self, from: NodeId, to: NodeId, message: M) -> Result<(), SendError>;

    /// Moves every message that has arrived for `node` into `inbox`, in arrival order. The driver calls this and
    /// feeds each envelope to the node's state machine.
    fn drain_inbox(&mut self, node: NodeId, inbox: &mut Vec<Envelope<M>>);
}

/// The replica's partition log, as the replication core needs it: where it ends, how much of it is durable, and the
/// two ways a follower changes it (append what the leader sent; cut off a divergent suffix).
///
/// Two end offsets are tracked apart on purpose. Under Sluice's fsync policy a follower may report progress, and a
/// leader may count itself towards the high watermark, only up to `durable_end_offset` (an acks=all answer means
/// "fdatasync'd on every ISR member counted"). Kafka itself reports the written end and loses that promise.
///
/// Mutations change the *written* image at once and return; durability follows asynchronously (group commit), and
/// the driver tells the core when `durable_end_offset` moves. Implementations keep, and should assert,
/// `durable_end_offset() <= log_end_offset()` at all times.
pub trait ReplicaLog {
    /// One or more record batches exactly as the leader sent them: base offsets and leader epochs already stamped.
    /// The broker uses its zero-copy byte buffers; the simulator uses plain structs.
    type Batches;
    /// The log's operating errors: a poisoned log after a failed fsync, a full disk, a gap in offsets.
    type Error: fmt::Display;

    /// The offset the next appended record will get (Kafka's LEO): one past the last written record.
    fn log_end_offset(&self) -> Offset;

    /// One past the last record known to be on stable storage. Never above `log_end_offset`.
    fn durable_end_offset(&self) -> Offset;

    /// Appends batches replicated from the leader. `base_offset` must equal `log_end_offset()`: a follower appends
    /// only what continues its log, and an implementation returns an error (never a gap) otherwise. Returns the new
    /// log end offset.
    fn append_replicated(
        &mut self,
        base_offset: Offset,
        batches: Self::Batches,
    ) -> Result<Offset, Self::Error>;

    /// Removes every record at or above `offset` (a divergent suffix found through leader epochs, KIP-101/279).
    /// `offset` must not exceed `log_end_offset()`. Afterwards both end offsets are at most `offset`.
    fn truncate_to(&mut self, offset: Offset) -> Result<(), Self::Error>;
}

/// A replication state machine: the Raft metadata quorum's node, a partition replica. It is driven entirely by its
/// two inputs and answers only through `out`; it reads no clock and touches no socket or file itself. The same
/// implementation runs under the broker's shard runtime and under `crate::sim::Simulation`.
pub trait Node {
    /// The protocol this node speaks; every node of one cluster speaks the same one.
    type Message;

    /// A message from `from` arrived at `now`. It may be late, duplicated, or reordered with others.
    fn on_message(
        &mut self,
        now: Duration,
        from: NodeId,
        message: Self::Message,
        out: &mut Outbox<Self::Message>,
    );

    /// Time passed: the periodic tick that drives timeouts, heartbeats and retries.
    fn on_tick(&mut self, now: Duration, out: &mut Outbox<Self::Message>);
}

/// The messages one call of a `Node` wants sent. The driver empties it after every call, so it only ever holds one
/// call's output, and that is bounded: a node that emits more than `length_max` messages for one input is broken
/// (a broadcast storm), and the assert says so instead of letting a queue grow.
#[derive(Debug)]
pub struct Outbox<M> {
    messages: Vec<(NodeId, M)>,
    length_max: usize,
}

impl<M> Outbox<M> {
    pub fn new(length_max: usize) -> Outbox<M> {
        assert!(length_max > 0, "an outbox must hold at least one message");
        Outbox { messages: Vec::new(), length_max }
    }

    /// Queues `message` for `to`. Delivery is not promised (see `MessageBus`).
    pub fn send(&mut self, to: NodeId, message: M) {
        assert!(
            self.messages.len() < self.length_max,
            "a node sent more than {} messages in one step; the limit is outbox_length_max",
            self.length_max
        );
        self.messages.push((to, message));
    }

    pub fn len(&self) -> usize {
        self.messages.len()
    }

    pub fn is_empty(&self) -> bool {
        self.messages.is_empty()
    }

    /// Takes the queued messages out in the order they were sent, leaving the outbox empty for the next call.
    pub fn drain(&mut self) -> impl Iterator<Item = (NodeId, M)> + '_ {
        self.messages.drain(..)
    }
}
