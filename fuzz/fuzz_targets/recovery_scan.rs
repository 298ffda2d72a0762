//! Storage recovery over arbitrary commit-log bytes: a store with some valid entries has the
//! rest of its active segment replaced by fuzz bytes (a torn or corrupted tail), then is
//! reopened. Opening must succeed or fail with an error; every read must return only
//! batches that pass their CRC.
//!
//! The store is built once and copied for each input: two partitions interleaved with a
//! third that is deleted, its entries in the first segment freed by the cleaner (padding
//! entries). Input byte 1 chooses: bit 0, a valid padding entry header (span from bytes
//! 2..4) goes in front of the fuzz bytes; bit 1, the checkpoint is deleted, so recovery
//! replays from the log start across the cleaner's padding entries.
#![no_main]

use std::path::Path;
use std::sync::OnceLock;

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use sluice_common::PartitionId;
use sluice_storage::batch::BatchHeader;
use sluice_storage::{PartitionConfig, Store, StoreConfig};

const SEGMENT_BYTES: u64 = 64 << 10;

fn config(dir: &Path) -> StoreConfig {
    let mut config = StoreConfig::new(dir);
    config.segment_bytes = SEGMENT_BYTES;
    config.background = false;
    // Small files, copied for every input.
    config.hash_index_slots = 1024;
    config.hash_index_entries_per_file = 4096;
    config.cq_entries_per_file = 64;
    config.clean_min_run_bytes = 4096;
    config
}

/// The template store (built once) and the end of its valid entries.
fn template() -> &'static (tempfile::TempDir, u64) {
    static TEMPLATE: OnceLock<(tempfile::TempDir, u64)> = OnceLock::new();
    TEMPLATE.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let store = Store::open(config(dir.path())).expect("fresh store");
        for p in 0..3 {
            store
                .configure_partition(PartitionId(p), PartitionConfig::default())
                .expect("configure");
        }
        // About 1.5 segments: partition 2's 8 KiB batches between the others' small ones.
        for i in 0..12u32 {
            rt.block_on(store.append(PartitionId(i % 2), batch(&i.to_be_bytes())))
                .expect("append");
            rt.block_on(store.append(PartitionId(2), batch(&[i as u8; 8192])))
                .expect("append");
        }
        store.delete_partition(PartitionId(2)).expect("delete");
        store.flush().expect("flush");
        let pass = store.clean().expect("clean");
        assert!(
            pass.paddings_written > 0,
            "the template holds padding entries"
        );
        for i in 0..4u32 {
            rt.block_on(store.append(PartitionId(i % 2), batch(&i.to_le_bytes())))
                .expect("append");
        }
        store.close().expect("close");
        let end = store.stats().write_position;
        (dir, end)
    })
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("read_dir").flatten() {
        let dest = to.join(e.file_name());
        if e.file_type().expect("file type").is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), dest).expect("copy");
        }
    }
}

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
    let (template, valid_end) = template();
    let dir = tempfile::tempdir().expect("tempdir");
    copy_dir(template.path(), dir.path());
    let config = config(dir.path());
    let flags = data.get(1).copied().unwrap_or(0);
    // Overwrite everything after (or a little before) the valid entries with the input.
    let base = valid_end / SEGMENT_BYTES * SEGMENT_BYTES;
    let segment = dir.path().join(format!("commitlog/{base:020}.log"));
    {
        use std::io::{Seek, SeekFrom, Write};
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(&segment)
            .expect("open segment");
        // A padding header goes at the end of the valid entries: over a checkpointed entry
        // it would be damage that debug builds assert against where a read loads an entry
        // (release builds refuse it as corrupt).
        let back = match flags & 1 {
            0 => (data.first().copied().unwrap_or(0) as u64) * 8,
            _ => 0,
        };
        let at = valid_end.saturating_sub(back).max(base) - base;
        f.seek(SeekFrom::Start(at)).expect("seek");
        let mut tail = Vec::new();
        if flags & 1 != 0 {
            let span = u16::from_le_bytes([
                data.get(2).copied().unwrap_or(0),
                data.get(3).copied().unwrap_or(0),
            ]);
            tail.extend_from_slice(&sluice_storage::padding_entry_header(
                u32::from(span).max(16),
            ));
        }
        tail.extend_from_slice(data);
        let room = (SEGMENT_BYTES - at) as usize;
        f.write_all(&tail[..tail.len().min(room)]).expect("write");
    }
    if flags & 2 != 0 {
        std::fs::remove_file(dir.path().join("checkpoint")).expect("remove checkpoint");
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
