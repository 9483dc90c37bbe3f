//! Sluice storage: the partition log.
//!
//! A partition's log is an ordered list of segments, each a `<base offset>.log` file of Kafka v2 record batches
//! stored verbatim, with a sparse `.index` (offset → position) and a `.timeindex` (timestamp → offset). Appends
//! are sequenced in memory, written behind by one flusher task per log with glommio direct I/O, and made durable
//! by group commit: many appends share one write and one fdatasync. See `ARCHITECTURE.md` for the shape.
//!
//! **Architecture invariant:** storage knows nothing of sockets, API keys or Kafka error codes.

pub mod batch;
pub mod cache;
pub mod dma;
pub mod epoch;
pub mod index;
pub mod invariant;
pub mod io;
pub mod log;
mod notify;
pub mod open_files;
pub mod records;
pub mod runtime;
mod segment;
pub mod sim;
pub mod types;

pub use batch::{BatchError, BatchHeader, BATCH_HEADER_SIZE};
pub use cache::{BatchCache, CacheStats};
pub use dma::DmaStorage;
pub use epoch::{EpochEntry, LeaderEpochCache};
pub use invariant::Invariant;
pub use io::{Storage, StorageFile};
pub use log::{
    AppendInfo, CorruptRange, Durability, Log, LogConfig, LogError, ReadBound, RecoveryReport, SegmentSpace,
    TimestampType,
};
pub use notify::{Notified, Notify};
pub use open_files::{OpenFiles, OpenFilesStats};
pub use records::{BatchBuilder, Compression, RecordError};
pub use runtime::{Clock, GlommioSpawner, LogRuntime, ManualClock, Spawner, SystemClock};
pub use sim::SimStorage;
pub use types::{now_ms, FilePosition, Offset, BLOCK_SIZE};
