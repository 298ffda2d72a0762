//! Record batch header parsing, CRC check, decompression (gzip, snappy, lz4, zstd: the
//! codec comes from the attributes byte the fuzzer controls) and record decoding.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice_storage::batch::{BatchHeader, validate_batches};
use sluice_storage::records::{for_each_record, records_bytes};

/// The decompressed-size cap the broker uses, scaled down.
const CAP: usize = 1 << 20;

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
        rest = &rest[header.total_len().min(rest.len())..];
    }
});
