//! Record batch header parsing, CRC check, decompression (gzip, snappy, lz4, zstd: the
//! codec comes from the attributes byte the fuzzer controls), record decoding, and the
//! produce-path validator (`check_batch`) against a model of what a valid batch is,
//! written here independently: the validator must accept exactly what the model accepts.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice_storage::batch::{BatchHeader, validate_batches};
use sluice_storage::records::{check_batch, for_each_record, records_bytes};

/// The decompressed-size cap the broker uses, scaled down.
const CAP: usize = 1 << 20;

/// Zigzag varint with at most `max_bytes` bytes, as Kafka encodes them.
fn model_varint(b: &[u8], at: &mut usize, max_bytes: usize) -> Option<i64> {
    let mut raw: u64 = 0;
    for i in 0..max_bytes {
        let byte = *b.get(*at)?;
        *at += 1;
        raw |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            if max_bytes == 10 && i == 9 && byte > 1 {
                return None;
            }
            return Some(((raw >> 1) as i64) ^ -((raw & 1) as i64));
        }
    }
    None
}

fn model_int(b: &[u8], at: &mut usize) -> Option<i64> {
    let v = model_varint(b, at, 10)?;
    (i64::from(i32::MIN)..=i64::from(i32::MAX))
        .contains(&v)
        .then_some(v)
}

/// Skips a length-prefixed field (negative length = null).
fn model_skip_bytes(b: &[u8], at: &mut usize) -> Option<()> {
    let len = model_int(b, at)?;
    if len >= 0 {
        let end = at.checked_add(len as usize)?;
        if end > b.len() {
            return None;
        }
        *at = end;
    }
    Some(())
}

/// The records section holds exactly `count` well-formed records with offset deltas
/// 0..count; returns their largest timestamp (`base` + delta, wrapping as Kafka's i64).
fn model_records(data: &[u8], count: i32, base: i64) -> Option<i64> {
    let mut at = 0usize;
    let mut max_ts = i64::MIN;
    for index in 0..count {
        let len = model_int(data, &mut at)?;
        if len < 0 || at + len as usize > data.len() {
            return None;
        }
        let rec = &data[at..at + len as usize];
        at += len as usize;
        let mut r = 1usize; // attributes
        if rec.is_empty() {
            return None;
        }
        let ts_delta = model_varint(rec, &mut r, 10)?;
        if model_int(rec, &mut r)? != i64::from(index) {
            return None;
        }
        model_skip_bytes(rec, &mut r)?; // key
        model_skip_bytes(rec, &mut r)?; // value
        let headers = model_int(rec, &mut r)?;
        if headers < 0 {
            return None;
        }
        for _ in 0..headers {
            let key_len = model_int(rec, &mut r)?;
            if key_len < 0 {
                return None;
            }
            r = r.checked_add(key_len as usize)?;
            if r > rec.len() {
                return None;
            }
            model_skip_bytes(rec, &mut r)?;
        }
        if r != rec.len() {
            return None;
        }
        max_ts = max_ts.max(base.wrapping_add(ts_delta));
    }
    (at == data.len()).then_some(max_ts)
}

/// Whether `check_batch` should accept the batch `h`.
fn model_valid(h: &BatchHeader<'_>) -> bool {
    let count = h.record_count();
    if count <= 0 || h.last_offset_delta() != count - 1 {
        return false;
    }
    let Ok(data) = records_bytes(h, CAP) else {
        return false;
    };
    let Some(max_ts) = model_records(&data, count, h.base_timestamp()) else {
        return false;
    };
    h.is_log_append_time() || max_ts <= h.max_timestamp()
}

fuzz_target!(|data: &[u8]| {
    let _ = validate_batches(data);
    let mut rest = data;
    while let Ok(header) = BatchHeader::parse(rest) {
        let _ = header.verify_crc(0);
        if let Ok(records) = records_bytes(&header, CAP) {
            assert!(records.len() <= CAP.max(header.records().len()));
            let mut n = 0usize;
            let _ = for_each_record(&header, &records, |_| n += 1);
            assert!(n <= header.record_count().max(0) as usize);
        }
        let mut seen = 0i64;
        let verdict = check_batch(&header, CAP, Some(b"msg-id"), |r, _| {
            assert_eq!(i64::from(r.offset_delta), seen);
            seen += 1;
        });
        assert_eq!(
            verdict.is_ok(),
            model_valid(&header),
            "validator and model disagree: {verdict:?}"
        );
        if verdict.is_ok() {
            assert_eq!(seen, i64::from(header.record_count()));
        }
        rest = &rest[header.total_len().min(rest.len())..];
    }
});
