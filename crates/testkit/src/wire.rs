//! The raw Kafka wire client of the tests: exact requests at exact versions, exact responses
//! and error codes, and raw bytes for hostile tests (a bad length, a half-sent frame, a
//! header from the future). Framing is `sluice_kafka_client::frame`, the CLI client's own;
//! only the socket differs: [`Client`] blocks (tests against the real binary), and
//! [`AsyncClient`] runs on tokio (tests serving a broker in the same runtime).
//!
//! Every read is bounded ([`READ_TIMEOUT`] unless changed): a server that never answers
//! fails the test with `TimedOut` instead of hanging it.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use kafka_client::frame::LENGTH_PREFIX_BYTES;
use kafka_protocol::messages::ApiKey;
use kafka_protocol::protocol::{Decodable, Request, StrBytes};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub use kafka_client::frame;
pub use kafka_client::{group_id, str_bytes, topic_name};

/// The client id every request carries.
pub const CLIENT_ID: &str = "sluice-testkit";
/// How long a read waits for the server by default.
pub const READ_TIMEOUT: Duration = Duration::from_secs(60);

/// One request frame (length prefix included) for `request` at `version`.
pub fn request_frame<R: Request>(request: &R, version: i16, correlation_id: i32) -> Bytes {
    frame::encode_request(
        R::KEY,
        version,
        R::header_version(version),
        correlation_id,
        StrBytes::from_static_str(CLIENT_ID),
        request,
    )
    .unwrap_or_else(|e| panic!("encode {:?} v{version}: {e}", ApiKey::try_from(R::KEY)))
}

/// Decodes a response frame (without its length prefix) to `R`'s response at `version`,
/// checking it answers `correlation_id`.
pub fn decode_response<R: Request>(
    mut frame: Bytes,
    version: i16,
    correlation_id: i32,
) -> io::Result<R::Response> {
    let got =
        frame::decode_response_header(&mut frame, R::KEY, version).map_err(io::Error::other)?;
    if got != correlation_id {
        return Err(io::Error::other(format!(
            "response to correlation id {got}, expected {correlation_id}"
        )));
    }
    R::Response::decode(&mut frame, version).map_err(|e| {
        io::Error::other(format!(
            "decode {:?} v{version} response: {e}",
            ApiKey::try_from(R::KEY)
        ))
    })
}

/// Correlation ids, one per request sent.
#[derive(Debug, Default)]
struct Correlation(i32);

impl Correlation {
    fn next(&mut self) -> i32 {
        self.0 = self.0.wrapping_add(1);
        self.0
    }
}

fn timed_out(what: &str, timeout: Duration) -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        format!("{what}: nothing within {timeout:?}"),
    )
}

/// A blocking connection to a Kafka listener.
pub struct Client {
    stream: std::net::TcpStream,
    correlation: Correlation,
}

impl Client {
    /// Connects to `addr` (e.g. [`crate::Server::bootstrap`]).
    pub fn connect(addr: impl std::net::ToSocketAddrs) -> io::Result<Client> {
        Client::from_stream(std::net::TcpStream::connect(addr)?)
    }

    /// Wraps a connected stream (e.g. one bound to another source address).
    pub fn from_stream(stream: std::net::TcpStream) -> io::Result<Client> {
        stream.set_nonblocking(false)?;
        stream.set_read_timeout(Some(READ_TIMEOUT))?;
        let _ = stream.set_nodelay(true);
        Ok(Client {
            stream,
            correlation: Correlation::default(),
        })
    }

    /// The socket, for what the protocol does not cover (timeouts, shutdown).
    pub fn stream(&mut self) -> &mut std::net::TcpStream {
        &mut self.stream
    }

    /// This side's address (the server logs it as the peer).
    pub fn local_addr(&self) -> SocketAddr {
        self.stream.local_addr().expect("local address")
    }

    /// The correlation id of the last request framed.
    pub fn correlation_id(&self) -> i32 {
        self.correlation.0
    }

    /// Frames `request` with the next correlation id without sending it (send it with
    /// [`Client::send_raw`], e.g. many times or split in parts).
    pub fn frame<R: Request>(&mut self, request: &R, version: i16) -> Bytes {
        request_frame(request, version, self.correlation.next())
    }

    /// Sends `request` at `version`; returns its correlation id.
    pub fn send<R: Request>(&mut self, request: &R, version: i16) -> io::Result<i32> {
        let frame = self.frame(request, version);
        self.send_raw(&frame)?;
        Ok(self.correlation_id())
    }

    /// Reads the next response, which must answer `correlation_id` with `R`'s response.
    pub fn recv<R: Request>(
        &mut self,
        correlation_id: i32,
        version: i16,
    ) -> io::Result<R::Response> {
        decode_response::<R>(self.recv_frame()?, version, correlation_id)
    }

    /// Sends `request` at `version` and reads its response.
    pub fn call<R: Request>(&mut self, request: &R, version: i16) -> io::Result<R::Response> {
        let correlation_id = self.send(request, version)?;
        self.recv::<R>(correlation_id, version)
    }

    /// Writes `bytes` as they are.
    pub fn send_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// Reads one response frame (without its length prefix).
    pub fn recv_frame(&mut self) -> io::Result<Bytes> {
        let mut len = [0u8; LENGTH_PREFIX_BYTES];
        self.stream.read_exact(&mut len)?;
        let mut body = BytesMut::zeroed(frame::frame_len(len));
        self.stream.read_exact(&mut body)?;
        Ok(body.freeze())
    }

    /// ApiVersions v0 round trip: true if the connection is served.
    pub fn served(&mut self) -> bool {
        self.call(&kafka_protocol::messages::ApiVersionsRequest::default(), 0)
            .is_ok_and(|r| r.error_code == 0)
    }

    /// True once the server has closed the connection (EOF or reset) within `timeout`;
    /// whatever it sends meanwhile is read and dropped.
    pub fn closed_within(&mut self, timeout: Duration) -> bool {
        closed_within(&mut self.stream, timeout)
    }
}

/// True once the peer has closed `stream` (EOF or reset) within `timeout`; whatever it sends
/// meanwhile is read and dropped. Leaves the stream's read timeout changed.
pub fn closed_within(stream: &mut std::net::TcpStream, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    let mut buf = [0u8; 1024];
    while Instant::now() < deadline {
        let left = deadline.saturating_duration_since(Instant::now());
        let _ = stream.set_read_timeout(Some(left.max(Duration::from_millis(1))));
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return false;
            }
            Err(_) => return true,
        }
    }
    false
}

/// A connection to a Kafka listener on tokio.
pub struct AsyncClient {
    stream: tokio::net::TcpStream,
    correlation: Correlation,
    read_timeout: Duration,
}

impl AsyncClient {
    /// Connects to `addr`.
    pub async fn connect(addr: impl tokio::net::ToSocketAddrs) -> io::Result<AsyncClient> {
        let stream = tokio::net::TcpStream::connect(addr).await?;
        let _ = stream.set_nodelay(true);
        Ok(AsyncClient {
            stream,
            correlation: Correlation::default(),
            read_timeout: READ_TIMEOUT,
        })
    }

    /// Changes how long a read waits.
    pub fn set_read_timeout(&mut self, timeout: Duration) {
        self.read_timeout = timeout;
    }

    /// The socket, for what the protocol does not cover.
    pub fn stream(&mut self) -> &mut tokio::net::TcpStream {
        &mut self.stream
    }

    /// The correlation id of the last request framed.
    pub fn correlation_id(&self) -> i32 {
        self.correlation.0
    }

    /// Frames `request` with the next correlation id without sending it.
    pub fn frame<R: Request>(&mut self, request: &R, version: i16) -> Bytes {
        request_frame(request, version, self.correlation.next())
    }

    /// Sends `request` at `version`; returns its correlation id.
    pub async fn send<R: Request>(&mut self, request: &R, version: i16) -> io::Result<i32> {
        let frame = self.frame(request, version);
        self.send_raw(&frame).await?;
        Ok(self.correlation_id())
    }

    /// Reads the next response, which must answer `correlation_id` with `R`'s response.
    pub async fn recv<R: Request>(
        &mut self,
        correlation_id: i32,
        version: i16,
    ) -> io::Result<R::Response> {
        decode_response::<R>(self.recv_frame().await?, version, correlation_id)
    }

    /// Sends `request` at `version` and reads its response.
    pub async fn call<R: Request>(&mut self, request: &R, version: i16) -> io::Result<R::Response> {
        let correlation_id = self.send(request, version).await?;
        self.recv::<R>(correlation_id, version).await
    }

    /// Writes `bytes` as they are.
    pub async fn send_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes).await
    }

    /// Reads one response frame (without its length prefix).
    pub async fn recv_frame(&mut self) -> io::Result<Bytes> {
        let timeout = self.read_timeout;
        let read = async {
            let mut len = [0u8; LENGTH_PREFIX_BYTES];
            self.stream.read_exact(&mut len).await?;
            let mut body = BytesMut::zeroed(frame::frame_len(len));
            self.stream.read_exact(&mut body).await?;
            Ok(body.freeze())
        };
        tokio::time::timeout(timeout, read)
            .await
            .map_err(|_| timed_out("response frame", timeout))?
    }

    /// True once the server has closed the connection (EOF or reset) within `timeout`;
    /// whatever it sends meanwhile is read and dropped.
    pub async fn closed_within(&mut self, timeout: Duration) -> bool {
        let mut buf = [0u8; 1024];
        let drain = async {
            loop {
                match self.stream.read(&mut buf).await {
                    Ok(0) | Err(_) => return true,
                    Ok(_) => {}
                }
            }
        };
        tokio::time::timeout(timeout, drain).await.unwrap_or(false)
    }
}
