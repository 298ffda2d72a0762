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
//!
//! A *shared* entry (store format 4) is one batch stored once for several partitions — an
//! AMQP message routed to N queues: `flags = FLAG_SHARED | n << 8`, `partition` = the
//! first of them (whose offset the batch carries), and after the batch a trailer naming the
//! `n` others with the offset the batch has in each (`partition u32 | base_offset i64`,
//! 1 ≤ n ≤ 255), so every partition's offsets can be rebuilt from the log alone. The entry
//! spans `16 + batch_len + 12n` bytes; `header_crc` covers the trailer too. Each partition
//! has its own consume-queue entry pointing at it; a read serves the batch with that
//! partition's offset written into its base offset field (outside the batch CRC). It is
//! live while any of its partitions holds it.

use common::PartitionId;

use crate::batch;

pub const ENTRY_HEADER_BYTES: usize = 16;
pub const ENTRY_MAGIC: u8 = 0x53;
pub const ENTRY_VERSION: u8 = 1;
/// `flags` of a padding entry (an appended batch entry has flags 0).
pub const FLAG_PADDING: u16 = 1;
/// `flags` of a copy entry: a batch rewritten by log compaction (`compaction.rs`).
pub const FLAG_COPY: u16 = 2;
/// `flags` bit of a shared entry (one batch in several partitions); the high byte of
/// `flags` is the number of partitions listed after the batch.
pub const FLAG_SHARED: u16 = 4;
/// Most partitions a shared entry lists after its batch (its first partition aside).
pub const MAX_SHARED: usize = 255;
/// Trailer bytes per other partition of a shared entry: `partition u32 | base_offset i64`.
pub const SHARED_SLOT_BYTES: usize = 12;
/// `partition` field of a padding entry.
pub const PADDING_PARTITION: u32 = u32::MAX;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EntryHeader {
    pub partition: PartitionId,
    pub batch_len: u32,
    /// A copy written by log compaction, not an append.
    pub copy: bool,
    /// A shared entry: how many more partitions hold it (listed after the batch).
    pub shared: u8,
}

impl EntryHeader {
    /// Bytes of the whole entry: header, batch and (shared entries) trailer.
    pub fn span(&self) -> u64 {
        ENTRY_HEADER_BYTES as u64
            + u64::from(self.batch_len)
            + (SHARED_SLOT_BYTES * self.shared as usize) as u64
    }

    /// A shared entry's other partitions, each with the batch's base offset there, from
    /// the entry at the start of `bytes` (checked by [`check_header`]).
    pub fn others(&self, bytes: &[u8]) -> Vec<(PartitionId, i64)> {
        let at = ENTRY_HEADER_BYTES + self.batch_len as usize;
        (0..self.shared as usize)
            .map(|i| {
                let o = at + SHARED_SLOT_BYTES * i;
                let mut p = [0u8; 4];
                p.copy_from_slice(&bytes[o..o + 4]);
                let mut b = [0u8; 8];
                b.copy_from_slice(&bytes[o + 4..o + 12]);
                (PartitionId(u32::from_le_bytes(p)), i64::from_le_bytes(b))
            })
            .collect()
    }

    /// Whether the entry at the start of `bytes` holds partition `p`, and the batch's base
    /// offset there (`stored`: the one in the batch, for the owning partition).
    pub fn offset_in(&self, bytes: &[u8], p: PartitionId, stored: i64) -> Option<i64> {
        if self.partition == p {
            return Some(stored);
        }
        self.others(bytes)
            .into_iter()
            .find(|(q, _)| *q == p)
            .map(|(_, base)| base)
    }
}

/// Encodes the header of an entry holding `batch` (already carrying its assigned offset).
pub fn encode(partition: PartitionId, batch: &[u8]) -> [u8; ENTRY_HEADER_BYTES] {
    encode_flags(partition, batch, 0)
}

/// Encodes the header of a copy entry (log compaction's rewrite of `batch`).
pub fn encode_copy(partition: PartitionId, batch: &[u8]) -> [u8; ENTRY_HEADER_BYTES] {
    encode_flags(partition, batch, FLAG_COPY)
}

/// Encodes a shared entry of `batch` for `first` and `others` (1 to [`MAX_SHARED`], each
/// with the batch's base offset there): its header, and its body — the batch followed by
/// the trailer listing `others`.
pub fn encode_shared(
    first: PartitionId,
    batch: &[u8],
    others: &[(PartitionId, i64)],
) -> ([u8; ENTRY_HEADER_BYTES], Vec<u8>) {
    debug_assert!((1..=MAX_SHARED).contains(&others.len()));
    let mut body = Vec::with_capacity(batch.len() + SHARED_SLOT_BYTES * others.len());
    body.extend_from_slice(batch);
    for (p, base) in others {
        body.extend_from_slice(&p.0.to_le_bytes());
        body.extend_from_slice(&base.to_le_bytes());
    }
    let flags = FLAG_SHARED | ((others.len() as u16) << 8);
    let h = encode_with(first, batch, &body[batch.len()..], flags);
    (h, body)
}

fn encode_flags(partition: PartitionId, batch: &[u8], flags: u16) -> [u8; ENTRY_HEADER_BYTES] {
    encode_with(partition, batch, &[], flags)
}

fn encode_with(
    partition: PartitionId,
    batch: &[u8],
    trailer: &[u8],
    flags: u16,
) -> [u8; ENTRY_HEADER_BYTES] {
    let mut h = [0u8; ENTRY_HEADER_BYTES];
    h[0] = ENTRY_MAGIC;
    h[1] = ENTRY_VERSION;
    h[2..4].copy_from_slice(&flags.to_le_bytes());
    h[4..8].copy_from_slice(&partition.0.to_le_bytes());
    h[8..12].copy_from_slice(&(batch.len() as u32).to_le_bytes());
    let crc = header_crc(&h, batch, trailer);
    h[12..16].copy_from_slice(&crc.to_le_bytes());
    h
}

/// crc32c of the header's first 12 bytes, the batch header and a shared entry's trailer.
fn header_crc(h: &[u8], batch: &[u8], trailer: &[u8]) -> u32 {
    let covered = batch.len().min(batch::HEADER_BYTES);
    let mut buf = [0u8; 12 + batch::HEADER_BYTES];
    buf[..12].copy_from_slice(&h[..12]);
    buf[12..12 + covered].copy_from_slice(&batch[..covered]);
    if trailer.is_empty() {
        return crc_fast::crc32_iscsi(&buf[..12 + covered]);
    }
    let mut d = crc_fast::Digest::new(crc_fast::CrcAlgorithm::Crc32Iscsi);
    d.update(&buf[..12 + covered]);
    d.update(trailer);
    d.finalize() as u32
}

/// Bytes after the batch of the entry whose header starts `bytes` (a shared entry's
/// trailer; 0 for any other entry, or too few bytes to tell). Not checked: a read checks
/// the whole entry next.
pub fn trailer_len(bytes: &[u8]) -> usize {
    match bytes.get(2..4).map(|f| u16::from_le_bytes([f[0], f[1]])) {
        Some(flags) if flags & 0xff == FLAG_SHARED => SHARED_SLOT_BYTES * (flags >> 8) as usize,
        _ => 0,
    }
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
/// batch CRC). Returns the header; the entry spans [`EntryHeader::span`] bytes.
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
    let flags = u16::from_le_bytes([bytes[2], bytes[3]]);
    let (copy, shared) = match (flags & 0xff, flags >> 8) {
        (0, 0) => (false, 0),
        (FLAG_COPY, 0) => (true, 0),
        (FLAG_SHARED, n) if n > 0 => (false, n as u8),
        // A padding entry (or a flag this build does not know), not a batch.
        _ => return Err(EntryFault::BadHeader),
    };
    let partition = u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
    let batch_len = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
    let stored = u32::from_le_bytes([bytes[12], bytes[13], bytes[14], bytes[15]]);
    let h = EntryHeader {
        partition: PartitionId(partition),
        batch_len,
        copy,
        shared,
    };
    let end = ENTRY_HEADER_BYTES + batch_len as usize;
    if (batch_len as usize) < batch::HEADER_BYTES || h.span() > bytes.len() as u64 {
        return Err(EntryFault::BadHeader);
    }
    let body = &bytes[ENTRY_HEADER_BYTES..end];
    let trailer = &bytes[end..h.span() as usize];
    if header_crc(&bytes[..ENTRY_HEADER_BYTES], body, trailer) != stored {
        return Err(EntryFault::BadHeader);
    }
    Ok(h)
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
    fn shared_entries_list_their_partitions_under_the_header_crc() {
        let batch = testing::simple(2);
        let others = [(PartitionId(4), 70), (PartitionId(11), 0)];
        let (h, body) = encode_shared(PartitionId(3), &batch, &others);
        let mut e = h.to_vec();
        e.extend_from_slice(&body);
        let h = check(&e).unwrap();
        assert_eq!(h.shared, 2);
        assert_eq!(h.span() as usize, e.len());
        assert_eq!(trailer_len(&e), 24);
        assert_eq!(h.others(&e), others.to_vec());
        assert_eq!(h.offset_in(&e, PartitionId(3), 5), Some(5));
        assert_eq!(h.offset_in(&e, PartitionId(4), 5), Some(70));
        assert_eq!(h.offset_in(&e, PartitionId(5), 5), None);
        // Every byte is checked, the trailer's too.
        for i in 0..e.len() {
            let mut bad = e.clone();
            bad[i] ^= 0x10;
            assert!(check(&bad).is_err(), "flip at byte {i} not detected");
        }
        // A cut trailer is no entry.
        assert_eq!(check(&e[..e.len() - 1]), Err(EntryFault::BadHeader));
        // The count is part of the flags under the CRC.
        let mut fewer = e.clone();
        fewer[3] = 1;
        assert_eq!(check_header(&fewer), Err(EntryFault::BadHeader));
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
