//! The log's checkpoints: the log start offset (DeleteRecords and truncation below the log start must survive a
//! restart) and the leader epoch cache (see `crate::epoch`).

use std::path::Path;

use super::{io_error, LogError, LogInner};
use crate::epoch;
use crate::io::{Storage, StorageFile};
use crate::types::Offset;

const LOG_START_CHECKPOINT: &str = "log-start-offset.checkpoint";

pub(super) async fn write_log_start_checkpoint<S: Storage>(inner: &LogInner<S>) -> Result<(), LogError> {
    let path = inner.directory.join(LOG_START_CHECKPOINT);
    let offset = inner.state.borrow().log_start_offset;
    let file = inner.storage.open(&path, true).await.map_err(io_error("opening", &path))?;
    // One sector holds the value and its CRC, so a torn write is detected rather than misread.
    let mut buffer = file.alloc_buffer(crate::BLOCK_SIZE);
    buffer.as_mut().fill(0);
    buffer.as_mut()[..8].copy_from_slice(&offset.0.to_be_bytes());
    let crc = crc32c::crc32c(&buffer.as_ref()[..8]);
    buffer.as_mut()[8..12].copy_from_slice(&crc.to_be_bytes());
    file.write_at(buffer, 0).await.map_err(io_error("writing", &path))?;
    file.sync().await.map_err(io_error("syncing", &path))?;
    file.close().await.map_err(io_error("closing", &path))
}

pub(super) async fn read_log_start_checkpoint<S: Storage>(storage: &S, directory: &Path) -> Option<Offset> {
    let path = directory.join(LOG_START_CHECKPOINT);
    if !storage.exists(&path).await {
        return None;
    }
    let file = storage.open(&path, false).await.ok()?;
    let bytes = file.read_at(0, 12).await.ok()?;
    let _ = file.close().await;
    if bytes.len() < 12 || crc32c::crc32c(&bytes[..8]) != u32::from_be_bytes(bytes[8..12].try_into().ok()?) {
        log::warn!("{}: checkpoint unreadable, using the first segment's base offset", path.display());
        return None;
    }
    Some(Offset(i64::from_be_bytes(bytes[..8].try_into().ok()?)))
}

/// Writes the leader epoch checkpoint when the cache changed since the last write. The flusher calls it before it
/// writes batches, so a batch that starts an epoch is never durable before the entry that records it; an entry
/// whose batches were lost in a crash is dropped at the next open (`open_leader_epochs`).
pub(super) async fn write_leader_epochs<S: Storage>(inner: &LogInner<S>) -> Result<(), LogError> {
    let (epochs, version) = {
        let state = inner.state.borrow();
        if state.epochs_version == state.epochs_persisted_version {
            return Ok(());
        }
        (state.epochs.clone(), state.epochs_version)
    };
    epoch::write_checkpoint(&inner.storage, &inner.directory, &epochs)
        .await
        .map_err(io_error("writing the leader epoch checkpoint in", &inner.directory))?;
    let mut state = inner.state.borrow_mut();
    state.epochs_persisted_version = state.epochs_persisted_version.max(version);
    Ok(())
}
