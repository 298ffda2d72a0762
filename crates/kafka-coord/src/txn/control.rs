//! Transaction markers: the control batches that end a transaction in each partition it
//! wrote to. A marker is a v2 batch with the control and transactional attribute bits, the
//! producer id/epoch of the transaction and one record: key `[version i16 = 0, type i16]`
//! (0 abort, 1 commit), value `[version i16 = 0, coordinator_epoch i32]`.

use broker::batch::BatchBuilder;
use broker::batch::BatchHeader;
use bytes::BytesMut;

const CONTROL_TYPE_ABORT: i16 = 0;
const CONTROL_TYPE_COMMIT: i16 = 1;
/// Bytes of a marker record's key and value.
const KEY_BYTES: usize = 4;
const VALUE_BYTES: usize = 6;

/// Encodes a commit (`commit = true`) or abort marker batch (base offset 0: storage
/// assigns it).
pub fn marker_batch(
    producer_id: i64,
    producer_epoch: i16,
    commit: bool,
    coordinator_epoch: i32,
    timestamp_ms: i64,
) -> BytesMut {
    let kind = if commit {
        CONTROL_TYPE_COMMIT
    } else {
        CONTROL_TYPE_ABORT
    };
    let mut key = [0u8; KEY_BYTES]; // version 0, then the type
    key[2..4].copy_from_slice(&kind.to_be_bytes());
    let mut value = [0u8; VALUE_BYTES]; // version 0, then the coordinator epoch
    value[2..6].copy_from_slice(&coordinator_epoch.to_be_bytes());
    // Markers carry no sequence (-1).
    let mut b = BatchBuilder::new()
        .producer(producer_id, producer_epoch, -1)
        .transactional()
        .control();
    b.record(Some(&key), Some(&value), timestamp_ms, &[]);
    BytesMut::from(&b.build()[..])
}

/// What a control batch says: `Some(true)` commit, `Some(false)` abort, `None` anything
/// else (unknown control type, undecodable).
pub fn marker_kind(header: &BatchHeader<'_>) -> Option<bool> {
    if !header.is_control() {
        return None;
    }
    let data = broker::batch::records_bytes(header, 1 << 20).ok()?;
    let mut kind = None;
    broker::batch::for_each_record(header, &data, |r| {
        if let Some(key) = r.key
            && key.len() >= KEY_BYTES
        {
            match i16::from_be_bytes([key[2], key[3]]) {
                CONTROL_TYPE_COMMIT => kind = Some(true),
                CONTROL_TYPE_ABORT => kind = Some(false),
                _ => {}
            }
        }
    })
    .ok()?;
    kind
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_round_trip_and_pass_batch_validation() {
        for commit in [true, false] {
            let b = marker_batch(42, 3, commit, 0, 1_700_000_000_000);
            let spans = broker::batch::validate_batches(&b).unwrap();
            assert_eq!(spans.len(), 1);
            let h = BatchHeader::parse(&b).unwrap();
            assert!(h.is_control() && h.is_transactional());
            assert_eq!(h.producer_id(), 42);
            assert_eq!(h.producer_epoch(), 3);
            assert_eq!(h.record_count(), 1);
            assert_eq!(marker_kind(&h), Some(commit));
        }
    }
}
