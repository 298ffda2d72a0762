//! State derived from the log (idempotent producers, the transaction index) is kept as a
//! snapshot file plus the log past it: a snapshot says up to which offset of each
//! partition it covers, and opening scans every partition from there to its end (or the
//! last `REBUILD_SCAN_WINDOW` offsets when the snapshot does not know the partition).

use std::collections::HashMap;
use std::path::Path;

use broker::batch::BatchHeader;
use broker::{Broker, BrokerError, REBUILD_SCAN_WINDOW};
use common::{Offset, PartitionId};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::Result;

/// The snapshot `dir/file`, or `T::default()` when there is none or it is unreadable (the
/// log scan then rebuilds everything it needs; `what` names it in the warning).
pub(crate) fn load_snapshot<T: DeserializeOwned + Default>(
    dir: &Path,
    file: &str,
    what: &str,
) -> T {
    match std::fs::read(dir.join(file)) {
        Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            tracing::warn!(error = %e, "{what} snapshot unreadable; rebuilding from the log");
            T::default()
        }),
        Err(_) => T::default(),
    }
}

/// Writes `value` as the snapshot `dir/file` atomically (temporary file, fsync, rename).
pub(crate) fn write_snapshot<T: Serialize>(
    dir: &Path,
    file: &str,
    value: &T,
    what: &str,
) -> Result<()> {
    let bytes =
        serde_json::to_vec(value).map_err(|e| BrokerError::Metadata(format!("{what}: {e}")))?;
    let io = |e: std::io::Error| BrokerError::Metadata(format!("{what} snapshot: {e}"));
    let tmp = dir.join(format!("{file}.tmp"));
    std::fs::write(&tmp, &bytes).map_err(io)?;
    std::fs::File::open(&tmp)
        .and_then(|f| f.sync_all())
        .map_err(io)?;
    std::fs::rename(&tmp, dir.join(file)).map_err(io)?;
    Ok(())
}

/// Calls `f` with every batch of `partitions` past what `covered_to` (partition id →
/// offset) says a snapshot holds; returns how many batches it saw.
pub(crate) fn scan_past(
    broker: &Broker,
    partitions: &[PartitionId],
    covered_to: &HashMap<u32, Offset>,
    mut f: impl FnMut(PartitionId, &BatchHeader<'_>),
) -> Result<usize> {
    let mut batches = 0;
    for &p in partitions {
        // Another door may delete a topic while this one opens: nothing left to rebuild.
        let marks = match broker.partition_watermarks(p) {
            Ok(m) => m,
            Err(BrokerError::UnknownTopicOrPartition) => continue,
            Err(e) => return Err(e.into()),
        };
        let end = marks.high_watermark;
        let from = covered_to
            .get(&p.0)
            .copied()
            .unwrap_or(end - REBUILD_SCAN_WINDOW)
            .max(marks.log_start);
        match broker.for_each_batch(p, from, end, |h| f(p, h)) {
            Ok(n) => batches += n,
            Err(BrokerError::UnknownTopicOrPartition) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(batches)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A topic deleted (by another door) while the coordinators open is skipped, not an
    /// error that stops the Kafka door.
    #[test]
    fn a_partition_deleted_meanwhile_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let broker = crate::test_broker(dir.path());
        let p = crate::test_partition(&broker);
        broker.delete_topic("t").unwrap();
        let mut seen = 0;
        let scanned = scan_past(&broker, &[p], &HashMap::new(), |_, _| seen += 1).unwrap();
        assert_eq!((scanned, seen), (0, 0));
    }
}
