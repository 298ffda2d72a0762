//! The commit-log entry header (format in `docs/storage-format.md` §Commit log).
//!
//! 16 bytes, little-endian, in front of every batch:
//! `magic u8 = 0x53 | version u8 = 1 | flags u16 = 0 | partition u32 | batch_len u32 | header_crc u32`
//! where `header_crc = crc32c(header[0..12] ++ batch[0..61])` (the whole v2 batch header).
//! The batch's own CRC covers `batch[21..]`, so header CRC + batch CRC together cover every
//! byte of the entry, and the batch header fields (offsets, timestamps) can be trusted from
//! the header CRC alone even when the body is damaged.
//!
//! A *padding* entry (written by the cleaner, `cleaner.rs`, over a run of dead entries whose
//! blocks it then frees) has `flags = FLAG_PADDING`, `partition = u32::MAX`, `batch_len` =
//! the bytes it covers after its header, and `header_crc = crc32c(header[0..12])`: nothing
//! after the header is checked, because it reads as zeros once the hole is punched. A scan
//! skips it by its length; nothing ever serves it. [`check_header`] and [`check`] accept
//! batch entries only (a padding header fails them as `BadHeader`).
//!
//! A *copy* entry (written by log compaction, `compaction.rs`; store format 3) is a batch
//! entry with `flags = FLAG_COPY`: a batch of a compacted partition rewritten at the head of
//! the log with its original offsets. It is checked exactly like a batch entry; the flag
//! tells scans that it is not an append (recovery never replays it; the cleaner treats it as
//! live only inside its partition's durable copy range).

use common::PartitionId;

use crate::batch;

pub const ENTRY_HEADER_BYTES: usize = 16;
pub const ENTRY_MAGIC: u8 = 0x53;
pub const ENTRY_VERSION: u8 = 1;
/// `flags` of a padding entry (an appended batch entry has flags 0).
pub const FLAG_PADDING: u16 = 1;
/// `flags` of a copy entry: a batch rewritten by log compaction (`compaction.rs`).
pub const FLAG_COPY: u16 = 2;
/// `partition` field of a padding entry.
pub const PADDING_PARTITION: u32 = u32::MAX;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EntryHeader {
    pub partition: PartitionId,
    pub batch_len: u32,
    /// A copy written by log compaction, not an append.
    pub copy: bool,
}

/// Encodes the header of an entry holding `batch` (already carrying its assigned offset).
pub fn encode(partition: PartitionId, batch: &[u8]) -> [u8; ENTRY_HEADER_BYTES] {
    encode_flags(partition, batch, 0)
}

/// Encodes the header of a copy entry (log compaction's rewrite of `batch`).
pub fn encode_copy(partition: PartitionId, batch: &[u8]) -> [u8; ENTRY_HEADER_BYTES] {
    encode_flags(partition, batch, FLAG_COPY)
}

fn encode_flags(partition: PartitionId, batch: &[u8], flags: u16) -> [u8; ENTRY_HEADER_BYTES] {
    let mut h = [0u8; ENTRY_HEADER_BYTES];
    h[0] = ENTRY_MAGIC;
    h[1] = ENTRY_VERSION;
    h[2..4].copy_from_slice(&flags.to_le_bytes());
    h[4..8].copy_from_slice(&partition.0.to_le_bytes());
    h[8..12].copy_from_slice(&(batch.len() as u32).to_le_bytes());
    let crc = header_crc(&h, batch);
    h[12..16].copy_from_slice(&crc.to_le_bytes());
    h
}

fn header_crc(h: &[u8], batch: &[u8]) -> u32 {
    let covered = batch.len().min(batch::HEADER_BYTES);
    let mut buf = [0u8; 12 + batch::HEADER_BYTES];
    buf[..12].copy_from_slice(&h[..12]);
    buf[12..12 + covered].copy_from_slice(&batch[..covered]);
    crc_fast::crc32_iscsi(&buf[..12 + covered])
}

/// The header of a padding entry covering `span` bytes in all (its own 16 included), so a
/// scan at its position continues at position + `span`. `span` must be at least 16.
pub fn encode_padding(span: u32) -> [u8; ENTRY_HEADER_BYTES] {
    debug_assert!(span as usize >= ENTRY_HEADER_BYTES);
    let mut h = [0u8; ENTRY_HEADER_BYTES];
    h[0] = ENTRY_MAGIC;
    h[1] = ENTRY_VERSION;
    h[2..4].copy_from_slice(&FLAG_PADDING.to_le_bytes());
    h[4..8].copy_from_slice(&PADDING_PARTITION.to_le_bytes());
    h[8..12].copy_from_slice(&(span - ENTRY_HEADER_BYTES as u32).to_le_bytes());
    let crc = crc_fast::crc32_iscsi(&h[..12]);
    h[12..16].copy_from_slice(&crc.to_le_bytes());
    h
}

/// If `bytes` starts with a valid padding header whose span fits in `bytes`, that span
/// (header included).
pub fn padding_span(bytes: &[u8]) -> Option<u64> {
    let h = bytes.get(..ENTRY_HEADER_BYTES)?;
    let u32_at = |at: usize| u32::from_le_bytes([h[at], h[at + 1], h[at + 2], h[at + 3]]);
    let ok = h[0] == ENTRY_MAGIC
        && h[1] == ENTRY_VERSION
        && u16::from_le_bytes([h[2], h[3]]) == FLAG_PADDING
        && u32_at(4) == PADDING_PARTITION
        && crc_fast::crc32_iscsi(&h[..12]) == u32_at(12);
    let span = ENTRY_HEADER_BYTES as u64 + u32_at(8) as u64;
    (ok && span <= bytes.len() as u64).then_some(span)
}

/// True if `bytes` starts with a valid entry: a batch entry passing [`check`], or a padding
/// entry. (How recovery tells a segment holding data from an unused one.)
pub fn starts_entry(bytes: &[u8]) -> bool {
    check(bytes).is_ok() || padding_span(bytes).is_some()
}

/// Why an entry at some position is not a valid entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryFault {
    /// Zeros, a bad magic/version or a header CRC mismatch: nothing (valid) was written here.
    BadHeader,
    /// Header is fine but the batch CRC fails (a torn or damaged body).
    BadBody,
}

/// Decodes and fully checks the entry at the start of `bytes` (header CRC, batch framing and
/// batch CRC). Returns the header; the entry spans `16 + batch_len` bytes.
pub fn check(bytes: &[u8]) -> Result<EntryHeader, EntryFault> {
    let h = check_header(bytes)?;
    let body = &bytes[ENTRY_HEADER_BYTES..ENTRY_HEADER_BYTES + h.batch_len as usize];
    match batch::BatchHeader::parse(body) {
        Ok(b) if b.total_len() == body.len() && b.computed_crc() == b.crc() => Ok(h),
        _ => Err(EntryFault::BadBody),
    }
}

/// Checks the header and that the body fits in `bytes`, and the header CRC (which also covers
/// the first 21 bytes of the batch). Does not check the batch CRC.
pub fn check_header(bytes: &[u8]) -> Result<EntryHeader, EntryFault> {
    if bytes.len() < ENTRY_HEADER_BYTES || bytes[0] != ENTRY_MAGIC || bytes[1] != ENTRY_VERSION {
        return Err(EntryFault::BadHeader);
    }
    let copy = match u16::from_le_bytes([bytes[2], bytes[3]]) {
        0 => false,
        FLAG_COPY => true,
        // A padding entry (or a flag this build does not know), not a batch.
        _ => return Err(EntryFault::BadHeader),
    };
    let partition = u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
    let batch_len = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
    let stored = u32::from_le_bytes([bytes[12], bytes[13], bytes[14], bytes[15]]);
    let end = ENTRY_HEADER_BYTES as u64 + batch_len as u64;
    if (batch_len as usize) < batch::HEADER_BYTES || end > bytes.len() as u64 {
        return Err(EntryFault::BadHeader);
    }
    let body = &bytes[ENTRY_HEADER_BYTES..end as usize];
    if header_crc(&bytes[..ENTRY_HEADER_BYTES], body) != stored {
        return Err(EntryFault::BadHeader);
    }
    Ok(EntryHeader {
        partition: PartitionId(partition),
        batch_len,
        copy,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::testing;

    #[test]
    fn every_byte_of_an_entry_is_checked() {
        let batch = testing::simple(2);
        let mut e = encode(PartitionId(7), &batch).to_vec();
        e.extend_from_slice(&batch);
        let h = check(&e).unwrap();
        assert_eq!(
            (h.partition, h.batch_len as usize),
            (PartitionId(7), batch.len())
        );
        for i in 0..e.len() {
            let mut bad = e.clone();
            bad[i] ^= 0x10;
            assert!(check(&bad).is_err(), "flip at byte {i} not detected");
        }
        assert_eq!(check(&e[..e.len() - 1]), Err(EntryFault::BadHeader));
        assert_eq!(check(&[0u8; 100]), Err(EntryFault::BadHeader));
        assert_eq!(padding_span(&e), None);
        assert!(!h.copy);
    }

    #[test]
    fn copy_entries_are_batch_entries_with_their_flag_checked() {
        let batch = testing::simple(3);
        let mut e = encode_copy(PartitionId(9), &batch).to_vec();
        e.extend_from_slice(&batch);
        let h = check(&e).unwrap();
        assert_eq!((h.partition, h.copy), (PartitionId(9), true));
        // The flag is under the header CRC: an append cannot turn into a copy or back.
        let mut flipped = e.clone();
        flipped[2] ^= FLAG_COPY as u8;
        assert_eq!(check_header(&flipped), Err(EntryFault::BadHeader));
        assert_eq!(padding_span(&e), None);
    }

    #[test]
    fn padding_entries_are_recognised_only_whole() {
        let mut e = encode_padding(100).to_vec();
        e.resize(100, 0);
        assert_eq!(padding_span(&e), Some(100));
        assert!(starts_entry(&e));
        // Never taken for a batch entry.
        assert_eq!(check_header(&e), Err(EntryFault::BadHeader));
        // Every header byte is checked; the covered bytes are not (they are a hole).
        for i in 0..ENTRY_HEADER_BYTES {
            let mut bad = e.clone();
            bad[i] ^= 0x10;
            assert_eq!(padding_span(&bad), None, "flip at byte {i} not detected");
        }
        e[50] = 0xff;
        assert_eq!(padding_span(&e), Some(100));
        // Its span must fit in what follows (the segment's rest).
        assert_eq!(padding_span(&e[..99]), None);
        assert_eq!(padding_span(&encode_padding(16)), Some(16));
        assert!(!starts_entry(&[0u8; 64]));
    }
}
