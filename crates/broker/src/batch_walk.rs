//! Reads the headers of Kafka v2 record batches in a byte run without decoding records:
//! sizes for `max.message.bytes` and record counts for metrics. CRCs are storage's job.

/// Bytes before the batch length field is counted (base offset + length).
const LOG_OVERHEAD: usize = 12;
const MAGIC_AT: usize = 16;
const RECORD_COUNT_AT: usize = 57;
/// Size of a v2 batch header.
const HEADER_BYTES: usize = 61;

/// One batch's size and record count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchSummary {
    pub total_bytes: usize,
    pub record_count: i32,
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum WalkError {
    #[error("truncated batch at byte {0}")]
    Truncated(usize),
    #[error("unsupported record batch magic {0} (only v2 is accepted)")]
    BadMagic(i8),
    #[error("batch length {0} is invalid")]
    BadLength(i32),
}

/// Summaries of every complete batch in `bytes`. `strict`: a trailing partial batch is an
/// error (produce); otherwise it is ignored (fetch responses may end mid-batch).
pub fn walk(bytes: &[u8], strict: bool) -> Result<Vec<BatchSummary>, WalkError> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < bytes.len() {
        let rest = &bytes[pos..];
        if rest.len() < HEADER_BYTES {
            return if strict {
                Err(WalkError::Truncated(pos))
            } else {
                Ok(out)
            };
        }
        let len = i32::from_be_bytes([rest[8], rest[9], rest[10], rest[11]]);
        if len < (HEADER_BYTES - LOG_OVERHEAD) as i32 {
            return Err(WalkError::BadLength(len));
        }
        let total = LOG_OVERHEAD + len as usize;
        if rest.len() < total {
            return if strict {
                Err(WalkError::Truncated(pos))
            } else {
                Ok(out)
            };
        }
        let magic = rest[MAGIC_AT] as i8;
        if magic != 2 {
            return Err(WalkError::BadMagic(magic));
        }
        let c = &rest[RECORD_COUNT_AT..RECORD_COUNT_AT + 4];
        out.push(BatchSummary {
            total_bytes: total,
            record_count: i32::from_be_bytes([c[0], c[1], c[2], c[3]]),
        });
        pos += total;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(records: i32, payload: usize) -> Vec<u8> {
        let mut b = vec![0u8; HEADER_BYTES + payload];
        let len = (b.len() - LOG_OVERHEAD) as i32;
        b[8..12].copy_from_slice(&len.to_be_bytes());
        b[MAGIC_AT] = 2;
        b[RECORD_COUNT_AT..RECORD_COUNT_AT + 4].copy_from_slice(&records.to_be_bytes());
        b
    }

    #[test]
    fn walks_batches() {
        let mut bytes = batch(3, 10);
        bytes.extend(batch(1, 0));
        let s = walk(&bytes, true).unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].record_count, 3);
        assert_eq!(s[0].total_bytes, HEADER_BYTES + 10);
    }

    #[test]
    fn rejects_truncated_and_bad_magic() {
        let b = batch(1, 10);
        assert!(matches!(
            walk(&b[..b.len() - 1], true),
            Err(WalkError::Truncated(0))
        ));
        assert_eq!(walk(&b[..b.len() - 1], false).unwrap().len(), 0);
        let mut m = batch(1, 0);
        m[MAGIC_AT] = 1;
        assert_eq!(walk(&m, true), Err(WalkError::BadMagic(1)));
        assert!(walk(&[0u8; 5], true).is_err());
    }
}
