//! One TCP connection to one broker: framing, request headers, correlation ids, and API version
//! negotiation (ApiVersions on connect; every request then uses the highest version both sides
//! and this code understand).

use std::collections::HashMap;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, ApiVersionsRequest, ApiVersionsResponse};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::error::ClientError;
use crate::frame;

/// Largest response frame we accept (a fetch of many partitions can be large, but not this).
const MAX_RESPONSE_BYTES: usize = 256 * 1024 * 1024;

/// The highest version of each API this client's code fills in correctly. Newer versions
/// switch to topic ids or batched groups, which this small client does not use.
fn client_max_version(key: i16) -> i16 {
    match ApiKey::try_from(key) {
        Ok(ApiKey::Produce) => 12,
        Ok(ApiKey::Fetch) => 12,
        Ok(ApiKey::Metadata) => 12,
        Ok(ApiKey::OffsetFetch) => 7,
        Ok(ApiKey::DeleteTopics) => 5,
        Ok(ApiKey::ListOffsets) => 9,
        _ => i16::MAX,
    }
}

pub struct Connection {
    addr: String,
    stream: TcpStream,
    correlation_id: i32,
    /// api key → (min, max) supported by the broker.
    versions: HashMap<i16, (i16, i16)>,
    timeout: Duration,
}

impl Connection {
    /// Connects and negotiates API versions.
    pub async fn connect(addr: &str, timeout: Duration) -> Result<Self, ClientError> {
        let stream = match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                return Err(ClientError::Unreachable {
                    addr: addr.to_string(),
                    reason: e.to_string(),
                });
            }
            Err(_) => {
                return Err(ClientError::Unreachable {
                    addr: addr.to_string(),
                    reason: format!("no answer within {} ms", timeout.as_millis()),
                });
            }
        };
        let _ = stream.set_nodelay(true);
        let mut conn = Connection {
            addr: addr.to_string(),
            stream,
            correlation_id: 0,
            versions: HashMap::new(),
            timeout,
        };
        conn.negotiate().await?;
        Ok(conn)
    }

    async fn negotiate(&mut self) -> Result<(), ClientError> {
        let request = ApiVersionsRequest::default()
            .with_client_software_name(StrBytes::from_static_str("sluice-cli"))
            .with_client_software_version(StrBytes::from_static_str(env!("CARGO_PKG_VERSION")));
        let mut version = 3;
        for _ in 0..2 {
            let raw = self
                .round_trip(
                    ApiKey::ApiVersions as i16,
                    version,
                    ApiVersionsRequest::header_version(version),
                    &request,
                )
                .await?;
            // A broker that does not support `version` answers at v0 (KIP-511).
            let response = match ApiVersionsResponse::decode(&mut raw.clone(), version) {
                Ok(r) if r.error_code == 0 => r,
                _ => ApiVersionsResponse::decode(&mut raw.clone(), 0)
                    .map_err(|e| self.protocol(format!("bad ApiVersions response: {e}")))?,
            };
            if response.error_code == 35 {
                let max = response
                    .api_keys
                    .iter()
                    .find(|k| k.api_key == ApiKey::ApiVersions as i16)
                    .map(|k| k.max_version)
                    .unwrap_or(0);
                if max >= version {
                    return Err(self.protocol("broker rejected ApiVersions".to_string()));
                }
                version = max;
                continue;
            }
            if response.error_code != 0 {
                return Err(ClientError::broker(
                    "ApiVersions",
                    response.error_code,
                    None,
                ));
            }
            self.versions = response
                .api_keys
                .iter()
                .map(|k| (k.api_key, (k.min_version, k.max_version)))
                .collect();
            return Ok(());
        }
        Err(self.protocol("could not agree on an ApiVersions version".to_string()))
    }

    fn protocol(&self, reason: String) -> ClientError {
        ClientError::Protocol {
            addr: self.addr.clone(),
            reason,
        }
    }

    /// The version of `R` to use with this broker.
    pub fn version_of<R: Request>(&self) -> Result<i16, ClientError> {
        let ours = (
            R::VERSIONS.min,
            R::VERSIONS.max.min(client_max_version(R::KEY)),
        );
        let name = ApiKey::try_from(R::KEY)
            .map(|k| format!("{k:?}"))
            .unwrap_or_else(|_| R::KEY.to_string());
        let Some(&(min, max)) = self.versions.get(&R::KEY) else {
            return Err(self.protocol(format!("the broker does not support the {name} API")));
        };
        let version = ours.1.min(max);
        if version < ours.0.max(min) {
            return Err(self.protocol(format!(
                "no common version of the {name} API (broker {min}..={max}, client {}..={})",
                ours.0, ours.1
            )));
        }
        Ok(version)
    }

    /// Sends `request` at the negotiated version and returns the response and that version.
    pub async fn send<R: Request>(
        &mut self,
        request: &R,
    ) -> Result<(R::Response, i16), ClientError> {
        let version = self.version_of::<R>()?;
        let response = self.send_at(request, version).await?;
        Ok((response, version))
    }

    /// Like [`send`](Self::send) for requests the broker may hold for long (JoinGroup waits
    /// for every member to rejoin): waits at least `at_least` for the response.
    pub async fn send_patiently<R: Request>(
        &mut self,
        request: &R,
        at_least: Duration,
    ) -> Result<(R::Response, i16), ClientError> {
        let normal = self.timeout;
        self.timeout = normal.max(at_least);
        let result = self.send(request).await;
        self.timeout = normal;
        result
    }

    /// Sends `request` at `version` and decodes the response.
    pub async fn send_at<R: Request>(
        &mut self,
        request: &R,
        version: i16,
    ) -> Result<R::Response, ClientError> {
        let mut raw = self
            .round_trip(R::KEY, version, R::header_version(version), request)
            .await?;
        R::Response::decode(&mut raw, version).map_err(|e| {
            self.protocol(format!(
                "cannot decode {:?} v{version} response: {e}",
                ApiKey::try_from(R::KEY)
            ))
        })
    }

    /// Sends a request that gets no response (produce with acks=0).
    pub async fn send_no_response<R: Request>(&mut self, request: &R) -> Result<(), ClientError> {
        let version = self.version_of::<R>()?;
        let frame = self.encode(R::KEY, version, R::header_version(version), request)?;
        self.write_frame(&frame).await
    }

    fn encode<R: Encodable>(
        &mut self,
        key: i16,
        version: i16,
        header_version: i16,
        request: &R,
    ) -> Result<Bytes, ClientError> {
        self.correlation_id = self.correlation_id.wrapping_add(1);
        frame::encode_request(
            key,
            version,
            header_version,
            self.correlation_id,
            StrBytes::from_static_str("sluice-cli"),
            request,
        )
        .map_err(|e| {
            self.protocol(format!(
                "cannot encode {:?} v{version} request (header v{header_version}): {e}",
                ApiKey::try_from(key)
            ))
        })
    }

    async fn write_frame(&mut self, frame: &[u8]) -> Result<(), ClientError> {
        match tokio::time::timeout(self.timeout, self.stream.write_all(frame)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(self.disconnected(e.to_string())),
            Err(_) => Err(self.disconnected("timed out sending a request".to_string())),
        }
    }

    fn disconnected(&self, reason: String) -> ClientError {
        ClientError::Disconnected {
            addr: self.addr.clone(),
            reason,
        }
    }

    /// Writes one request and reads its response body (after the response header).
    async fn round_trip<R: Encodable>(
        &mut self,
        key: i16,
        version: i16,
        header_version: i16,
        request: &R,
    ) -> Result<Bytes, ClientError> {
        let frame = self.encode(key, version, header_version, request)?;
        let expected = self.correlation_id;
        self.write_frame(&frame).await?;
        let mut body = match tokio::time::timeout(self.timeout, self.read_frame()).await {
            Ok(r) => r?,
            Err(_) => {
                return Err(self.disconnected(format!(
                    "no response within {} ms",
                    self.timeout.as_millis()
                )));
            }
        };
        let correlation_id = frame::decode_response_header(&mut body, key, version)
            .map_err(|e| self.protocol(format!("bad response header: {e}")))?;
        if correlation_id != expected {
            return Err(self.protocol(format!(
                "response correlation id {correlation_id} does not match request {expected}"
            )));
        }
        Ok(body)
    }

    async fn read_frame(&mut self) -> Result<Bytes, ClientError> {
        let mut len = [0u8; 4];
        if let Err(e) = self.stream.read_exact(&mut len).await {
            return Err(self.disconnected(format!("connection closed by the broker ({e})")));
        }
        let len = frame::frame_len(len);
        if len > MAX_RESPONSE_BYTES {
            return Err(self.protocol(format!("response frame of {len} bytes is too large")));
        }
        // Each response gets its own buffer: decoded messages keep slices of it (records).
        let mut body = BytesMut::zeroed(len);
        if let Err(e) = self.stream.read_exact(&mut body[..]).await {
            return Err(self.disconnected(format!("connection closed mid-response ({e})")));
        }
        Ok(body.freeze())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BufMut;
    use kafka_protocol::messages::api_versions_response::ApiVersion;
    use kafka_protocol::messages::{MetadataRequest, RequestHeader, ResponseHeader};
    use kafka_protocol::protocol::decode_request_header_from_buffer;
    use tokio::net::TcpListener;

    fn api(key: ApiKey, min: i16, max: i16) -> ApiVersion {
        let mut v = ApiVersion::default();
        v.api_key = key as i16;
        v.min_version = min;
        v.max_version = max;
        v
    }

    async fn read_request(s: &mut TcpStream) -> RequestHeader {
        let mut len = [0u8; 4];
        s.read_exact(&mut len).await.unwrap();
        let mut body = BytesMut::zeroed(u32::from_be_bytes(len) as usize);
        s.read_exact(&mut body).await.unwrap();
        decode_request_header_from_buffer(&mut body.freeze()).unwrap()
    }

    async fn respond(
        s: &mut TcpStream,
        correlation_id: i32,
        version: i16,
        r: &ApiVersionsResponse,
    ) {
        let mut buf = BytesMut::new();
        let mut h = ResponseHeader::default();
        h.correlation_id = correlation_id;
        h.encode(&mut buf, 0).unwrap();
        r.encode(&mut buf, version).unwrap();
        let mut frame = BytesMut::new();
        frame.put_u32(buf.len() as u32);
        frame.extend_from_slice(&buf);
        s.write_all(&frame).await.unwrap();
    }

    /// An older broker answers ApiVersions v3 with a v0 UNSUPPORTED_VERSION listing what it
    /// has (KIP-511); the client retries at that version and caps every API to the broker's.
    #[tokio::test]
    async fn falls_back_to_the_brokers_api_versions_version() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let broker = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let first = read_request(&mut s).await;
            assert_eq!(first.request_api_version, 3);
            let mut refuse = ApiVersionsResponse::default();
            refuse.error_code = 35;
            refuse.api_keys = vec![api(ApiKey::ApiVersions, 0, 2)];
            respond(&mut s, first.correlation_id, 0, &refuse).await;
            let second = read_request(&mut s).await;
            assert_eq!(second.request_api_version, 2);
            let mut ok = ApiVersionsResponse::default();
            ok.api_keys = vec![api(ApiKey::ApiVersions, 0, 2), api(ApiKey::Metadata, 0, 9)];
            respond(&mut s, second.correlation_id, 2, &ok).await;
        });
        let conn = Connection::connect(&addr, Duration::from_secs(5))
            .await
            .unwrap();
        broker.await.unwrap();
        assert_eq!(conn.version_of::<MetadataRequest>().unwrap(), 9);
        let e = conn
            .version_of::<kafka_protocol::messages::FetchRequest>()
            .unwrap_err();
        assert!(
            e.to_string().contains("does not support the Fetch API"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn refused_connection_is_unreachable() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr = format!("127.0.0.1:{port}");
        match Connection::connect(&addr, Duration::from_secs(5)).await {
            Err(ClientError::Unreachable { addr: a, .. }) => assert_eq!(a, addr),
            Err(other) => panic!("{other}"),
            Ok(_) => panic!("connected to a closed port"),
        }
    }
}
