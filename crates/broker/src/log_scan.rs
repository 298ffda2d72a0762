//! Walking record-batch headers: over one byte run, and over a partition's log between two
//! offsets. Shared by the state rebuilt from the log at open (idempotent producers, the
//! transaction index) and by produce's look at incoming batches.

use common::{Offset, PartitionId};
use storage::batch::BatchHeader;

use crate::error::Result;

/// When a partition has no snapshot entry, a rebuild scans at most this many offsets back
/// from the log end.
pub const REBUILD_SCAN_WINDOW: Offset = 1_000_000;
/// Bytes read per step of a log scan.
const SCAN_READ_BYTES: usize = 4 << 20;

/// The whole batches at the start of `bytes`, in order; stops at the first that does not
/// parse (a trailing partial batch, or garbage).
pub fn headers(mut bytes: &[u8]) -> impl Iterator<Item = BatchHeader<'_>> {
    std::iter::from_fn(move || {
        let header = BatchHeader::parse(bytes).ok()?;
        bytes = &bytes[header.total_len().min(bytes.len())..];
        Some(header)
    })
}

/// Calls `f` with every batch of partition `p` from the one holding `from` up to `to`;
/// returns how many batches it saw.
pub fn for_each_batch(
    store: &storage::Store,
    p: PartitionId,
    mut from: Offset,
    to: Offset,
    mut f: impl FnMut(&BatchHeader<'_>),
) -> Result<usize> {
    let mut batches = 0;
    while from < to {
        let read = store.read(p, from, SCAN_READ_BYTES)?;
        let before = from;
        for chunk in &read.chunks {
            for header in headers(chunk) {
                f(&header);
                from = from.max(header.last_offset() + 1);
                batches += 1;
            }
        }
        if from == before {
            break;
        }
    }
    Ok(batches)
}
