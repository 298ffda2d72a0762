//! The state record format: valid records round-trip byte for byte, and no input — random,
//! truncated, or a valid record with bytes changed — panics the decoder or makes it allocate
//! what the input cannot back.

use proptest::prelude::*;
use sluice_queues::{
    DecodeError, DeliveredRun, FORMAT_VERSION, FORMAT_VERSION_1, MAX_RECORD_ENTRIES, MAX_RUN_LEN,
    Offset, PackedEntries, Record, ScheduledEntry, SettleOutcome, Snapshot,
};

/// Ascending, disjoint ranges from `base`, from (gap, len) pairs.
fn ranges_from(base: Offset, shape: &[(i64, i64)]) -> Vec<std::ops::Range<Offset>> {
    let mut at = base;
    shape
        .iter()
        .map(|&(gap, len)| {
            let start = at + gap;
            at = start + len;
            start..at
        })
        .collect()
}

fn runs_from(base: Offset, shape: &[(i64, u32, u32)]) -> Vec<DeliveredRun> {
    let mut at = base;
    shape
        .iter()
        .map(|&(gap, len, delivery_count)| {
            let start = at + gap;
            at = start + i64::from(len);
            DeliveredRun {
                start,
                len,
                delivery_count,
            }
        })
        .collect()
}

fn record() -> impl Strategy<Value = Record> {
    let base = 0i64..1 << 40;
    let range_shape = proptest::collection::vec((0i64..100, 1i64..1000), 0..20);
    let run_shape = proptest::collection::vec((0i64..100, 1u32..=MAX_RUN_LEN, 1u32..50), 0..20);
    let entries = proptest::collection::vec((0i64..1 << 40, any::<i64>()), 0..20).prop_map(|v| {
        v.into_iter()
            .map(|(offset, due_ms)| ScheduledEntry { offset, due_ms })
            .collect::<Vec<_>>()
    });
    prop_oneof![
        entries.clone().prop_map(Record::Scheduled),
        entries.prop_map(|e| Record::SnapshotScheduled(PackedEntries::pack(&e))),
        any::<i64>().prop_map(Record::ReleasedThrough),
        (base.clone(), run_shape.clone()).prop_map(|(b, s)| Record::Delivered(runs_from(b, &s))),
        (base.clone(), range_shape.clone(), 0u8..3).prop_map(|(b, s, o)| Record::Settled {
            outcome: [
                SettleOutcome::Acked,
                SettleOutcome::Dead,
                SettleOutcome::Purged
            ][o as usize],
            ranges: ranges_from(b, &s),
        }),
        base.clone().prop_map(Record::LogStart),
        (
            base,
            0i64..100,
            range_shape,
            run_shape,
            0i64..100,
            prop_oneof![Just(0u64), any::<u64>()]
        )
            .prop_map(|(b, lw, rs, us, tail, scheduled)| {
                let settled = ranges_from(b + lw, &rs);
                let runs_base = settled.last().map_or(b + lw, |r| r.end);
                let delivered = runs_from(runs_base, &us);
                let cursor = delivered.last().map_or(runs_base, DeliveredRun::end) + tail;
                Record::Snapshot(Snapshot {
                    log_start: b,
                    low_water: b + lw,
                    cursor,
                    settled,
                    delivered,
                    scheduled,
                })
            }),
    ]
}

proptest! {
    #[test]
    fn valid_records_round_trip(record in record()) {
        let bytes = record.to_bytes();
        prop_assert_eq!(bytes.len(), record.encoded_len());
        prop_assert_eq!(bytes[0], record.version());
        prop_assert_eq!(Record::decode(&bytes), Ok(record));
    }

    #[test]
    fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        if let Ok(record) = Record::decode(&bytes) {
            prop_assert_eq!(record.to_bytes(), bytes, "a decoded record re-encodes to its input");
        }
    }

    #[test]
    fn damaged_records_never_panic(
        record in record(),
        at in any::<prop::sample::Index>(),
        byte in any::<u8>(),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut bytes = record.to_bytes();
        let i = at.index(bytes.len());
        bytes[i] = byte;
        if let Ok(decoded) = Record::decode(&bytes) {
            prop_assert_eq!(decoded.to_bytes(), bytes.clone());
        }
        let cut = cut.index(bytes.len());
        prop_assert!(Record::decode(&bytes[..cut]).is_err(), "a strict prefix is never a record");
    }
}

#[test]
fn a_huge_claimed_count_is_refused_before_allocating() {
    // Delivered, claiming u32::MAX runs, with no bytes behind the claim.
    let bytes = [FORMAT_VERSION_1, 1, 0xff, 0xff, 0xff, 0xff];
    assert!(matches!(
        Record::decode(&bytes),
        Err(DecodeError::TooManyEntries { .. })
    ));
    // A snapshot has no entry cap, only the bytes: claiming 1000 ranges in 32 bytes fails.
    let mut snap = vec![FORMAT_VERSION_1, 4];
    for mark in [0i64, 0, 10] {
        snap.extend_from_slice(&mark.to_be_bytes());
    }
    snap.extend_from_slice(&1000u32.to_be_bytes());
    snap.extend_from_slice(&[0; 32]);
    assert!(matches!(
        Record::decode(&snap),
        Err(DecodeError::Truncated { .. })
    ));
}

#[test]
fn records_the_format_does_not_allow_are_errors() {
    let ok = Record::Settled {
        outcome: SettleOutcome::Acked,
        ranges: vec![0..5, 7..9],
    }
    .to_bytes();
    let mut future = ok.clone();
    future[0] = 3;
    assert_eq!(Record::decode(&future), Err(DecodeError::UnknownVersion(3)));
    let mut v2 = ok.clone();
    v2[0] = FORMAT_VERSION;
    assert_eq!(
        Record::decode(&v2),
        Err(DecodeError::WrongVersion {
            version: 2,
            kind: 2
        }),
        "one encoding per record: version 1 kinds stay version 1"
    );
    let scheduled = Record::Scheduled(vec![ScheduledEntry {
        offset: 4,
        due_ms: 1_000,
    }])
    .to_bytes();
    assert_eq!(scheduled[0], FORMAT_VERSION);
    let mut old = scheduled.clone();
    old[0] = FORMAT_VERSION_1;
    assert_eq!(Record::decode(&old), Err(DecodeError::UnknownKind(5)));
    let mut negative = scheduled.clone();
    negative[6..14].copy_from_slice(&(-1i64).to_be_bytes());
    assert!(
        Record::decode(&negative).is_err(),
        "offsets are non-negative"
    );
    let mut kind = ok.clone();
    kind[1] = 9;
    assert_eq!(Record::decode(&kind), Err(DecodeError::UnknownKind(9)));
    let mut trailing = ok.clone();
    trailing.push(0);
    assert_eq!(
        Record::decode(&trailing),
        Err(DecodeError::TrailingBytes(1))
    );
    let overlapping = Record::Settled {
        outcome: SettleOutcome::Acked,
        ranges: vec![0..5, 4..9],
    }
    .to_bytes();
    assert_eq!(
        Record::decode(&overlapping),
        Err(DecodeError::InvalidRange { start: 4, end: 9 })
    );
    let empty_run = Record::Delivered(vec![DeliveredRun {
        start: 3,
        len: 0,
        delivery_count: 1,
    }])
    .to_bytes();
    assert!(matches!(
        Record::decode(&empty_run),
        Err(DecodeError::InvalidRun { .. })
    ));
    let marks = Record::Snapshot(Snapshot {
        log_start: 5,
        low_water: 4,
        cursor: 9,
        ..Snapshot::default()
    })
    .to_bytes();
    assert!(matches!(
        Record::decode(&marks),
        Err(DecodeError::InvalidMarks { .. })
    ));
    assert_eq!(Record::LogStart(-1).to_bytes().len(), 10);
    assert!(
        Record::decode(&Record::LogStart(-1).to_bytes()).is_err(),
        "offsets are non-negative"
    );
}

#[test]
fn an_outbox_never_emits_a_record_over_the_entry_limit() {
    use sluice_queues::{Acquire, ConsumerId, QueueConfig, QueueState};
    let mut q = QueueState::new(QueueConfig::default(), 0);
    let n = 3 * MAX_RECORD_ENTRIES as i64;
    q.acquire(&Acquire::new(ConsumerId(1), n as u32, n, 0));
    // Every other message acked: 3 * 4096 / 2 separate ranges.
    let evens: Vec<Offset> = (0..n).step_by(2).collect();
    q.ack(ConsumerId(1), &evens).unwrap();
    let records = q.drain_records();
    let settled: Vec<_> = records
        .iter()
        .filter(|r| matches!(r, Record::Settled { .. }))
        .collect();
    assert_eq!(settled.len(), 2);
    for r in &records {
        assert!(r.entry_count() <= MAX_RECORD_ENTRIES);
        assert_eq!(Record::decode(&r.to_bytes()).as_ref(), Ok(r));
    }
}

#[test]
fn snapshot_parts_are_packed_and_checked_byte_by_byte() {
    // Offsets a few apart, due times within a quarter of an hour: ~5 bytes an entry.
    let entries: Vec<ScheduledEntry> = (0..MAX_RECORD_ENTRIES as i64)
        .map(|i| ScheduledEntry {
            offset: 1_000_000 + 7 * i,
            due_ms: 1_700_000_000_000 + (i * 7919) % 900_000,
        })
        .collect();
    let packed = PackedEntries::pack(&entries);
    assert_eq!(packed.iter().collect::<Vec<_>>(), entries);
    let record = Record::SnapshotScheduled(packed);
    let bytes = record.to_bytes();
    assert!(
        bytes.len() <= 6 * entries.len(),
        "{} bytes for {} entries",
        bytes.len(),
        entries.len()
    );
    assert_eq!(Record::decode(&bytes), Ok(record));

    let one = Record::SnapshotScheduled(PackedEntries::pack(&[ScheduledEntry {
        offset: 3,
        due_ms: 10,
    }]))
    .to_bytes();
    // version, kind, base_due (8), count (4), byte length (4), then the entry.
    assert_eq!(&one[18..], &[6, 0], "offset +3 zigzagged, due +0");
    let mut negative = one.clone();
    negative[18] = 5; // offset -3
    assert!(matches!(
        Record::decode(&negative),
        Err(DecodeError::InvalidPacked { .. })
    ));
    let mut overlong = one[..18].to_vec();
    overlong[17] = 12; // 12 bytes follow: an 11-byte varint and a due
    overlong.extend_from_slice(&[0xff; 10]);
    overlong.extend_from_slice(&[0x01, 0x00]);
    assert!(matches!(
        Record::decode(&overlong),
        Err(DecodeError::InvalidPacked { .. })
    ));
    let mut extra = one.clone();
    extra[17] = 3;
    extra.push(0);
    assert_eq!(Record::decode(&extra), Err(DecodeError::TrailingBytes(1)));
    let mut too_many = one.clone();
    too_many[10..14].copy_from_slice(&(MAX_RECORD_ENTRIES as u32 + 1).to_be_bytes());
    assert!(matches!(
        Record::decode(&too_many),
        Err(DecodeError::TooManyEntries { .. })
    ));
}
