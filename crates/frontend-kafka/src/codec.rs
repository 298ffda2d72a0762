//! Request header parsing and response framing around `kafka-protocol`'s generated types.

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind, ResponseHeader, ResponseKind};
use kafka_protocol::protocol::{Decodable, Encodable};

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

/// A response failed to encode (a bug: the handler built a field the version lacks).
#[derive(Debug, thiserror::Error)]
#[error("encode: {0}")]
pub struct EncodeError(pub String);

fn wrap<E: std::fmt::Display>(e: E) -> EncodeError {
    EncodeError(e.to_string())
}
