//! Consume-queue entries: one fixed 40-byte entry per batch of a partition, so
//! offset → commit-log position is a binary search over fixed slots (offsets are dense and
//! increasing, entry `i+1` starts where entry `i` ends).
//!
//! Entry (little-endian): `position u64 | batch_len u32 | offset_span u32 | base_offset i64 |
//! max_timestamp i64 | filter_bits u32 | crc u32` with `crc = crc32c(bytes[0..36])`.

use crate::fixed_files::FixedFiles;

pub const CQ_ENTRY_BYTES: usize = 40;

pub fn files(per_file: u64) -> FixedFiles {
    FixedFiles {
        ext: "cq",
        entry_size: CQ_ENTRY_BYTES,
        per_file,
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CqEntry {
    /// Global commit-log position of the entry header.
    pub position: u64,
    /// Bytes of the batch (the entry is 16 more).
    pub batch_len: u32,
    /// `lastOffsetDelta + 1`: offsets this batch covers.
    pub offset_span: u32,
    pub base_offset: i64,
    pub max_timestamp: i64,
    /// Reserved for tag filters (RocketMQ tags); 0 for now.
    pub filter_bits: u32,
}

impl CqEntry {
    /// One past the last offset of the batch.
    pub fn next_offset(&self) -> i64 {
        self.base_offset + self.offset_span as i64
    }

    pub fn encode(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(&self.position.to_le_bytes());
        out.extend_from_slice(&self.batch_len.to_le_bytes());
        out.extend_from_slice(&self.offset_span.to_le_bytes());
        out.extend_from_slice(&self.base_offset.to_le_bytes());
        out.extend_from_slice(&self.max_timestamp.to_le_bytes());
        out.extend_from_slice(&self.filter_bits.to_le_bytes());
        let crc = crc_fast::crc32_iscsi(&out[start..]);
        out.extend_from_slice(&crc.to_le_bytes());
    }

    /// Decodes one entry; `None` if its CRC fails.
    pub fn decode(b: &[u8]) -> Option<CqEntry> {
        let crc = u32::from_le_bytes(b[36..40].try_into().ok()?);
        if crc_fast::crc32_iscsi(&b[..36]) != crc {
            return None;
        }
        Some(CqEntry {
            position: u64::from_le_bytes(b[0..8].try_into().ok()?),
            batch_len: u32::from_le_bytes(b[8..12].try_into().ok()?),
            offset_span: u32::from_le_bytes(b[12..16].try_into().ok()?),
            base_offset: i64::from_le_bytes(b[16..24].try_into().ok()?),
            max_timestamp: i64::from_le_bytes(b[24..32].try_into().ok()?),
            filter_bits: u32::from_le_bytes(b[32..36].try_into().ok()?),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_crc() {
        let e = CqEntry {
            position: 1 << 40,
            batch_len: 16_000,
            offset_span: 16,
            base_offset: 1_000_000,
            max_timestamp: -1,
            filter_bits: 0xdead,
        };
        let mut b = Vec::new();
        e.encode(&mut b);
        assert_eq!(b.len(), CQ_ENTRY_BYTES);
        assert_eq!(CqEntry::decode(&b), Some(e));
        assert_eq!(e.next_offset(), 1_000_016);
        b[20] ^= 1;
        assert_eq!(CqEntry::decode(&b), None);
    }
}
