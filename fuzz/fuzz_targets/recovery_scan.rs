//! Storage recovery over arbitrary commit-log bytes: a store with some valid entries has the
//! rest of its segment replaced by fuzz bytes (a torn or corrupted tail), then is reopened.
//! Opening must succeed or fail with an error; every read must return only batches that
//! pass their CRC.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use sluice_common::PartitionId;
use sluice_storage::batch::BatchHeader;
use sluice_storage::{PartitionConfig, Store, StoreConfig};

const SEGMENT_BYTES: u64 = 1 << 20;

/// A valid v2 batch of one record.
fn batch(value: &[u8]) -> BytesMut {
    use kafka_protocol::records::{
        Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
    };
    let record = Record {
        transactional: false,
        control: false,
        partition_leader_epoch: 0,
        producer_id: -1,
        producer_epoch: -1,
        timestamp_type: TimestampType::Creation,
        offset: 0,
        sequence: -1,
        timestamp: 1_700_000_000_000,
        key: None,
        value: Some(bytes::Bytes::copy_from_slice(value)),
        headers: Default::default(),
        delete_horizon: false,
    };
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        [&record],
        &RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        },
    )
    .expect("encode");
    buf
}

fuzz_target!(|data: &[u8]| {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = StoreConfig::new(dir.path());
    config.segment_bytes = SEGMENT_BYTES;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let valid_end = {
        let store = Store::open(config.clone()).expect("fresh store");
        for p in 0..2 {
            store
                .configure_partition(PartitionId(p), PartitionConfig::default())
                .expect("configure");
        }
        for i in 0..4u32 {
            rt.block_on(store.append(PartitionId(i % 2), batch(&i.to_be_bytes())))
                .expect("append");
        }
        store.close().expect("close");
        store.stats().write_position
    };
    // Overwrite everything after the valid entries with the fuzz input.
    let segment = std::fs::read_dir(dir.path().join("commitlog"))
        .expect("commitlog dir")
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "log"))
        .expect("a segment");
    {
        use std::io::{Seek, SeekFrom, Write};
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(&segment)
            .expect("open segment");
        let at = valid_end.saturating_sub((data.first().copied().unwrap_or(0) as u64) * 8);
        f.seek(SeekFrom::Start(at)).expect("seek");
        let room = (SEGMENT_BYTES - at) as usize;
        f.write_all(&data[..data.len().min(room)]).expect("write");
    }
    let Ok(store) = Store::open(config) else {
        return;
    };
    for p in store.partitions() {
        let Ok(offsets) = store.offsets(p) else {
            continue;
        };
        let mut offset = offsets.log_start;
        while offset < offsets.log_end {
            let Ok(read) = store.read(p, offset, 1 << 20) else {
                break;
            };
            if read.chunks.is_empty() {
                break;
            }
            for chunk in &read.chunks {
                let mut rest: &[u8] = chunk;
                while !rest.is_empty() {
                    let header = BatchHeader::parse(rest).expect("served bytes are whole batches");
                    header.verify_crc(0).expect("served batches pass their CRC");
                    offset = offset.max(header.last_offset() + 1);
                    rest = &rest[header.total_len()..];
                }
            }
        }
    }
});
