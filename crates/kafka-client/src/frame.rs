//! Kafka framing without I/O: a request becomes one frame (4-byte big-endian length, request
//! header, body); a response frame's header is decoded and its correlation id returned.
//! [`crate::Connection`] puts these on a socket with timeouts; the raw test client
//! (`sluice-testkit`) puts them on blocking and async sockets, next to hand-made bytes.

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

/// Bytes of the length prefix in front of every request and response.
pub const LENGTH_PREFIX_BYTES: usize = 4;

/// Encodes `request` as API `key` at `version` (request header version `header_version`)
/// into one frame, length prefix included.
pub fn encode_request<R: Encodable>(
    key: i16,
    version: i16,
    header_version: i16,
    correlation_id: i32,
    client_id: StrBytes,
    request: &R,
) -> anyhow::Result<Bytes> {
    let mut header = RequestHeader::default();
    header.request_api_key = key;
    header.request_api_version = version;
    header.correlation_id = correlation_id;
    header.client_id = Some(client_id);
    let mut buf = BytesMut::with_capacity(64);
    buf.extend_from_slice(&[0; LENGTH_PREFIX_BYTES]);
    header.encode(&mut buf, header_version)?;
    request.encode(&mut buf, version)?;
    let len = (buf.len() - LENGTH_PREFIX_BYTES) as u32;
    buf[..LENGTH_PREFIX_BYTES].copy_from_slice(&len.to_be_bytes());
    Ok(buf.freeze())
}

/// The body length a frame's length prefix announces.
pub fn frame_len(prefix: [u8; LENGTH_PREFIX_BYTES]) -> usize {
    u32::from_be_bytes(prefix) as usize
}

/// The response header version of API `key` at `version`: ApiVersions responses always use
/// v0 (so a client can read a refusal of a version it does not share), others their schema's.
pub fn response_header_version(key: i16, version: i16) -> i16 {
    if key == ApiKey::ApiVersions as i16 {
        return 0;
    }
    ApiKey::try_from(key)
        .map(|k| k.response_header_version(version))
        .unwrap_or(0)
}

/// Decodes the response header at the front of `frame` (a response frame without its
/// length prefix) for API `key` at `version`, leaving `frame` at the response body; returns
/// the header's correlation id.
pub fn decode_response_header(frame: &mut Bytes, key: i16, version: i16) -> anyhow::Result<i32> {
    let header = ResponseHeader::decode(frame, response_header_version(key, version))?;
    Ok(header.correlation_id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::{MetadataRequest, MetadataResponse};
    use kafka_protocol::protocol::{HeaderVersion, decode_request_header_from_buffer};

    #[test]
    fn a_request_frame_reads_back_and_a_response_header_decodes() {
        let req = MetadataRequest::default().with_topics(None);
        let frame = encode_request(
            ApiKey::Metadata as i16,
            12,
            MetadataRequest::header_version(12),
            41,
            StrBytes::from_static_str("t"),
            &req,
        )
        .unwrap();
        let len = frame_len(frame[..4].try_into().unwrap());
        assert_eq!(len, frame.len() - LENGTH_PREFIX_BYTES);
        let mut body = frame.slice(LENGTH_PREFIX_BYTES..);
        let h = decode_request_header_from_buffer(&mut body).unwrap();
        assert_eq!((h.request_api_key, h.request_api_version), (3, 12));
        assert_eq!(h.correlation_id, 41);
        assert_eq!(MetadataRequest::decode(&mut body, 12).unwrap(), req);

        let mut out = BytesMut::new();
        let mut rh = ResponseHeader::default();
        rh.correlation_id = 41;
        rh.encode(&mut out, response_header_version(3, 12)).unwrap();
        MetadataResponse::default().encode(&mut out, 12).unwrap();
        let mut resp = out.freeze();
        assert_eq!(decode_response_header(&mut resp, 3, 12).unwrap(), 41);
        assert_eq!(
            MetadataResponse::decode(&mut resp, 12).unwrap(),
            MetadataResponse::default()
        );
        assert_eq!(response_header_version(ApiKey::ApiVersions as i16, 3), 0);
    }
}
