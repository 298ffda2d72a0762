//! The one error type of the storage crate. Front doors map these to protocol error codes
//! (Kafka: `CORRUPT_MESSAGE`, `INVALID_RECORD`, `OFFSET_OUT_OF_RANGE`,
//! `UNKNOWN_TOPIC_OR_PARTITION`, `KAFKA_STORAGE_ERROR`).

use std::io;
use std::path::PathBuf;

use common::{Offset, PartitionId};

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// A produced batch failed its CRC32C check; nothing of the call was written.
    #[error(
        "batch {batch_index} of the request failed its CRC: stored {stored:#010x}, computed {computed:#010x}"
    )]
    CorruptBatch {
        batch_index: usize,
        stored: u32,
        computed: u32,
    },
    /// A produced batch is malformed (bad magic, length, record encoding, too large...).
    #[error("invalid record batch: {0}")]
    InvalidBatch(String),
    /// Bytes on disk failed their checksum; they are never served.
    #[error(
        "corrupt data on disk for {partition} at offset {offset} (commit-log position {position}): {reason}"
    )]
    CorruptData {
        partition: PartitionId,
        offset: Offset,
        position: u64,
        reason: &'static str,
    },
    #[error("offset {offset} of {partition} is out of range [{log_start}, {log_end}]")]
    OffsetOutOfRange {
        partition: PartitionId,
        offset: Offset,
        log_start: Offset,
        log_end: Offset,
    },
    #[error("unknown partition {0}")]
    UnknownPartition(PartitionId),
    /// ENOSPC (or EDQUOT). Distinct from [`StorageError::Io`] so callers can report
    /// `KAFKA_STORAGE_ERROR` and retry once space is freed; the store stays consistent.
    #[error("disk full while {op} {path:?}")]
    DiskFull { op: &'static str, path: PathBuf },
    #[error("I/O error while {op} {path:?}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A file written by this crate does not match its documented format.
    #[error("bad file format in {path:?}: {reason}")]
    Format { path: PathBuf, reason: String },
    /// The store's files are damaged in a way a crash cannot explain; the message names the
    /// files and the way out (`sluice storage check` / `repair`).
    #[error("{0}")]
    Damaged(String),
    /// The store was closed (or a previous fatal I/O error poisoned the writer).
    #[error("store is closed")]
    Closed,
}

impl StorageError {
    /// Wraps an `io::Error`, sorting ENOSPC/EDQUOT into [`StorageError::DiskFull`].
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        let path = path.into();
        match source.raw_os_error() {
            Some(e)
                if e == rustix::io::Errno::NOSPC.raw_os_error()
                    || e == rustix::io::Errno::DQUOT.raw_os_error() =>
            {
                StorageError::DiskFull { op, path }
            }
            _ => StorageError::Io { op, path, source },
        }
    }

    /// True for errors that mean "the disk could not take it" (Kafka: `KAFKA_STORAGE_ERROR`).
    pub fn is_storage_error(&self) -> bool {
        matches!(
            self,
            StorageError::DiskFull { .. }
                | StorageError::Io { .. }
                | StorageError::Format { .. }
                | StorageError::CorruptData { .. }
                | StorageError::Damaged(_)
        )
    }
}

pub type Result<T, E = StorageError> = std::result::Result<T, E>;
