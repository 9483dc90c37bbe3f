//! The broker's path to the record codec, which lives in `sluice_storage::records` (shared with the load
//! generator). It stays only for `partition.rs` and `group/`, which name `crate::records`; new code imports
//! `sluice_storage::records` directly, and this module goes once those two move.

pub use sluice_storage::records::{
    encode_batch, find_max_timestamp_record, find_record_at_or_after, for_each_record, KeyValue, RecordError,
};
