//! The log's checkpoints: the log start offset (DeleteRecords and truncation below the log start must survive a
//! restart), the recovery point and the clean-shutdown marker (what recovery must scan), and the leader epoch cache
//! (see `crate::epoch`).

use std::path::Path;

use super::{io_error, LogError, LogInner};
use crate::epoch;
use crate::io::{Storage, StorageFile};
use crate::types::Offset;

const LOG_START_CHECKPOINT: &str = "log-start-offset.checkpoint";
/// Every batch below the offset in this file was durable when it was written: recovery after a crash scans only
/// from there. Written when a roll has sealed (synced) the previous segment, at close, and lowered by truncation.
const RECOVERY_POINT_CHECKPOINT: &str = "recovery-point.checkpoint";
/// Written at close after the final sync (holding the log end then), removed durably when the log opens again:
/// while it is there, every byte of the log is durable and recovery scans nothing beyond the index checks.
const CLEAN_SHUTDOWN_MARKER: &str = "clean-shutdown";

pub(super) async fn write_log_start_checkpoint<S: Storage>(inner: &LogInner<S>) -> Result<(), LogError> {
    let offset = inner.state.borrow().log_start_offset;
    write_offset_file(&inner.storage, &inner.directory.join(LOG_START_CHECKPOINT), offset).await
}

pub(super) async fn read_log_start_checkpoint<S: Storage>(storage: &S, directory: &Path) -> Option<Offset> {
    read_offset_file(storage, &directory.join(LOG_START_CHECKPOINT), "using the first segment's base offset")
        .await
}

/// Records that every batch below `offset` is durable; the caller has synced them.
pub(super) async fn write_recovery_point<S: Storage>(
    inner: &LogInner<S>,
    offset: Offset,
) -> Result<(), LogError> {
    write_offset_file(&inner.storage, &inner.directory.join(RECOVERY_POINT_CHECKPOINT), offset).await?;
    inner.state.borrow_mut().recovery_point = Some(offset);
    Ok(())
}

/// Truncation below the recovery point: the offsets from the new end on will hold new, unsynced batches, so the
/// recovery point must come down before any of them is written.
pub(super) async fn lower_recovery_point<S: Storage>(
    inner: &LogInner<S>,
    end: Offset,
) -> Result<(), LogError> {
    let recovery_point = inner.state.borrow().recovery_point;
    match recovery_point {
        Some(offset) if offset > end => write_recovery_point(inner, end).await,
        _ => Ok(()),
    }
}

pub(super) async fn read_recovery_point<S: Storage>(storage: &S, directory: &Path) -> Option<Offset> {
    read_offset_file(storage, &directory.join(RECOVERY_POINT_CHECKPOINT), "recovering from the first segment")
        .await
}

/// The last step of a clean close: everything is synced and the recovery point says so.
pub(super) async fn write_clean_shutdown<S: Storage>(
    inner: &LogInner<S>,
    end: Offset,
) -> Result<(), LogError> {
    write_recovery_point(inner, end).await?;
    write_offset_file(&inner.storage, &inner.directory.join(CLEAN_SHUTDOWN_MARKER), end).await?;
    // The marker's directory entry must be durable too, or a crash right after close would lose it (harmless:
    // the next open would scan from the recovery point, which is the log end).
    inner.storage.sync_directory(&inner.directory).await.map_err(io_error("syncing", &inner.directory))
}

/// The log end recorded by a clean close, if the marker is there and intact.
pub(super) async fn read_clean_shutdown<S: Storage>(storage: &S, directory: &Path) -> Option<Offset> {
    read_offset_file(storage, &directory.join(CLEAN_SHUTDOWN_MARKER), "recovering as after a crash").await
}

/// Removes the clean-shutdown marker for good before the log writes anything: if it survived a crash that
/// followed new writes, the next open would take torn batches for durable ones.
pub(super) async fn remove_clean_shutdown<S: Storage>(storage: &S, directory: &Path) -> Result<(), LogError> {
    let path = directory.join(CLEAN_SHUTDOWN_MARKER);
    if !storage.exists(&path).await {
        return Ok(());
    }
    storage.remove(&path).await.map_err(io_error("removing", &path))?;
    storage.sync_directory(directory).await.map_err(io_error("syncing", directory))
}

/// Writes `offset` to `path`, synced. One sector holds the value and its CRC, so a torn write is detected rather
/// than misread.
async fn write_offset_file<S: Storage>(storage: &S, path: &Path, offset: Offset) -> Result<(), LogError> {
    let file = storage.open(path, true).await.map_err(io_error("opening", path))?;
    let mut buffer = file.alloc_buffer(crate::BLOCK_SIZE);
    buffer.as_mut().fill(0);
    buffer.as_mut()[..8].copy_from_slice(&offset.0.to_be_bytes());
    let crc = crc32c::crc32c(&buffer.as_ref()[..8]);
    buffer.as_mut()[8..12].copy_from_slice(&crc.to_be_bytes());
    file.write_at(buffer, 0).await.map_err(io_error("writing", path))?;
    file.sync().await.map_err(io_error("syncing", path))?;
    file.close().await.map_err(io_error("closing", path))
}

/// Reads a file [`write_offset_file`] wrote; `None` when it is missing or fails its CRC (then `fallback` says what
/// the log does instead).
async fn read_offset_file<S: Storage>(storage: &S, path: &Path, fallback: &str) -> Option<Offset> {
    if !storage.exists(path).await {
        return None;
    }
    let file = storage.open(path, false).await.ok()?;
    let bytes = file.read_at(0, 12).await.ok()?;
    let _ = file.close().await;
    if bytes.len() < 12 || crc32c::crc32c(&bytes[..8]) != u32::from_be_bytes(bytes[8..12].try_into().ok()?) {
        log::warn!("{}: checkpoint unreadable, {fallback}", path.display());
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
