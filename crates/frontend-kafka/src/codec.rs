//! Request header parsing and response framing around `kafka-protocol`'s generated types.

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::FetchResponse;
use kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind, ResponseHeader, ResponseKind};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion};

use crate::segmented::SegmentedBuf;

/// The fixed first 8 bytes of every request header (all header versions).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeaderPrefix {
    pub api_key: i16,
    pub api_version: i16,
    pub correlation_id: i32,
}

/// Reads the fixed prefix; `frame` has at least `framing::MIN_REQUEST_BYTES` bytes.
pub fn peek_prefix(frame: &[u8]) -> Option<HeaderPrefix> {
    let b = frame.get(..8)?;
    Some(HeaderPrefix {
        api_key: i16::from_be_bytes([b[0], b[1]]),
        api_version: i16::from_be_bytes([b[2], b[3]]),
        correlation_id: i32::from_be_bytes([b[4], b[5], b[6], b[7]]),
    })
}

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("malformed request header: {0}")]
    Header(String),
    #[error("malformed {api:?} v{version} body: {reason}")]
    Body {
        api: ApiKey,
        version: i16,
        reason: String,
    },
}

/// Decodes header and body of a supported (api, version). The body's `Bytes` fields
/// (e.g. produce records) are slices of `frame`, not copies.
pub fn decode_request(
    mut frame: Bytes,
    api: ApiKey,
    version: i16,
) -> Result<(RequestHeader, RequestKind), DecodeError> {
    let header_version = api.request_header_version(version);
    let header = RequestHeader::decode(&mut frame, header_version)
        .map_err(|e| DecodeError::Header(e.to_string()))?;
    let body = RequestKind::decode(api, &mut frame, version).map_err(|e| DecodeError::Body {
        api,
        version,
        reason: format!("{e:#}"),
    })?;
    if !frame.is_empty() {
        // Kafka's own parser ignores bytes after the body; some clients send them (e.g.
        // librdkafka 2.16 on Metadata v13). Log and carry on.
        tracing::debug!(?api, version, trailing = frame.len(), bytes = ?&frame[..frame.len().min(16)], "ignoring trailing request bytes");
    }
    Ok((header, body))
}

/// Encodes `4-byte length + response header + body` ready to write.
pub fn encode_response(
    correlation_id: i32,
    version: i16,
    body: &ResponseKind,
) -> Result<BytesMut, EncodeError> {
    let header_version = body.header_version(version);
    let header = ResponseHeader::default().with_correlation_id(correlation_id);
    let size = header.compute_size(header_version).map_err(wrap)? + body_size(body, version)?;
    let mut buf = BytesMut::with_capacity(4 + size);
    buf.put_i32(0);
    header.encode(&mut buf, header_version).map_err(wrap)?;
    body.encode(&mut buf, version).map_err(wrap)?;
    let len = (buf.len() - 4) as i32;
    buf[..4].copy_from_slice(&len.to_be_bytes());
    Ok(buf)
}

fn body_size(body: &ResponseKind, version: i16) -> Result<usize, EncodeError> {
    macro_rules! size {
        ($($v:ident),*) => {
            match body {
                $(ResponseKind::$v(x) => x.compute_size(version).map_err(wrap),)*
                _ => Ok(0),
            }
        };
    }
    size!(
        Produce,
        Fetch,
        ListOffsets,
        Metadata,
        OffsetCommit,
        OffsetFetch,
        FindCoordinator,
        JoinGroup,
        Heartbeat,
        LeaveGroup,
        SyncGroup,
        DescribeGroups,
        ListGroups,
        ApiVersions,
        CreateTopics,
        DeleteTopics,
        DeleteRecords,
        InitProducerId,
        DescribeConfigs,
        AlterConfigs,
        CreatePartitions,
        DeleteGroups,
        IncrementalAlterConfigs,
        OffsetDelete,
        DescribeCluster
    )
}

/// Encodes a Fetch response as segments: inline bytes with the storage chunks spliced in
/// where their placeholders are (no copy of record bytes).
pub fn encode_fetch_segments(
    correlation_id: i32,
    version: i16,
    body: &FetchResponse,
    splices: Vec<Vec<Bytes>>,
) -> Result<Vec<Bytes>, EncodeError> {
    let header_version = <FetchResponse as HeaderVersion>::header_version(version);
    let header = ResponseHeader::default().with_correlation_id(correlation_id);
    let size = header.compute_size(header_version).map_err(wrap)?
        + body.compute_size(version).map_err(wrap)?;
    let mut buf = SegmentedBuf::new(splices);
    buf.put_i32(i32::try_from(size).map_err(wrap)?);
    header.encode(&mut buf, header_version).map_err(wrap)?;
    body.encode(&mut buf, version).map_err(wrap)?;
    if buf.len() != size + 4 {
        return Err(EncodeError(format!(
            "fetch response is {} bytes, expected {}",
            buf.len(),
            size + 4
        )));
    }
    buf.finish().map_err(EncodeError)
}

/// A response failed to encode (a bug: the handler built a field the version lacks).
#[derive(Debug, thiserror::Error)]
#[error("encode: {0}")]
pub struct EncodeError(pub String);

fn wrap<E: std::fmt::Display>(e: E) -> EncodeError {
    EncodeError(e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::versions::SUPPORTED;

    /// xorshift64*: deterministic noise without a dependency.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
    }

    /// Random bodies (biased towards the bytes that make huge lengths and counts) behind a
    /// valid header prefix, for every supported (api, version): decoding returns Ok or Err,
    /// never panics, never allocates what the bytes claim.
    #[test]
    fn random_bodies_never_panic() {
        let mut rng = Rng(0x5eed_1234_abcd_0001);
        let (mut decoded, mut refused) = (0usize, 0usize);
        for (api, min, max) in SUPPORTED {
            for version in *min..=*max {
                for _ in 0..300 {
                    let mut frame = BytesMut::new();
                    frame.put_i16(*api as i16);
                    frame.put_i16(version);
                    frame.put_i32(1);
                    let len = (rng.next() % 64) as usize;
                    for _ in 0..len {
                        let b = match rng.next() % 4 {
                            0 => 0xff,
                            1 => 0x7f,
                            2 => 0,
                            _ => rng.next() as u8,
                        };
                        frame.put_u8(b);
                    }
                    match decode_request(frame.freeze(), *api, version) {
                        // What decodes is the request the header names.
                        Ok((header, _)) => {
                            assert_eq!(header.request_api_key, *api as i16);
                            assert_eq!(header.request_api_version, version);
                            assert_eq!(header.correlation_id, 1);
                            decoded += 1;
                        }
                        Err(_) => refused += 1,
                    }
                }
            }
        }
        // Both paths ran: random bodies are mostly refused, some (short or empty request
        // types) decode.
        assert!(
            decoded > 0 && refused > decoded,
            "{decoded} decoded, {refused} refused"
        );
    }

    #[test]
    fn prefix_needs_eight_bytes() {
        assert!(peek_prefix(&[0; 7]).is_none());
        let p = peek_prefix(&[0, 18, 0, 3, 0, 0, 0, 9]).unwrap();
        assert_eq!((p.api_key, p.api_version, p.correlation_id), (18, 3, 9));
    }
}
