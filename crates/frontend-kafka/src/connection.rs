//! One client connection: read frames, handle requests one at a time in arrival order
//! (as Kafka does, so pipelined produces keep their order), queue responses to a writer
//! task. A Produce waiting for its fsync does not hold up the next request: its handler
//! returns once the batches are written, and the writer task awaits the acknowledgement in
//! the response queue, so responses still go out in request order while the fsyncs of
//! pipelined requests overlap. Reads pause while too many responses or response bytes are
//! queued for this connection, and before a frame's body is read while the global request
//! byte budget is used up.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use broker::Broker;
use kafka_coord::KafkaCoord;

use crate::fetch_session::FetchSessions;
use crate::server::DoorState;
use crate::telemetry::Telemetry;
use std::io::IoSlice;

use bytes::{Buf, Bytes};
use kafka_protocol::messages::{ApiKey, ResponseKind};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};

use crate::codec::{self, HeaderPrefix};
use crate::config::KafkaConfig;
use crate::context::Ctx;
use crate::framing::{self, FrameError};
use crate::handlers::{self, Reply, api_versions};
use crate::limits::{RequestBudget, Reservation};
use crate::versions;

/// Why a connection was closed by the broker (logged with the peer address).
#[derive(Debug, thiserror::Error)]
pub enum CloseReason {
    #[error("bad frame: {0}")]
    Frame(#[from] FrameError),
    #[error("idle for {0} ms")]
    Idle(u64),
    #[error("frame of {len} bytes not received within {timeout_ms} ms of its length")]
    SlowFrame { len: usize, timeout_ms: u64 },
    #[error("unknown api key {0}")]
    UnknownApi(i16),
    #[error("unsupported version {version} of {api:?}")]
    UnsupportedVersion { api: ApiKey, version: i16 },
    #[error("{0}")]
    Decode(#[from] codec::DecodeError),
    #[error("cannot encode {api:?} v{version} response: {error}")]
    Encode {
        api: ApiKey,
        version: i16,
        error: codec::EncodeError,
    },
    #[error("a produce with acks=0 failed; closing so the client refreshes its metadata")]
    AcksZeroProduceFailed,
    #[error("{api:?} is {reason}")]
    NotImplemented { api: ApiKey, reason: &'static str },
}

/// One queued response and the in-flight byte budget it holds until written.
struct Outgoing {
    response: Response,
    permit: Option<OwnedSemaphorePermit>,
}

enum Response {
    /// Encoded, as segments (inline bytes and uncopied storage chunks).
    Ready(Vec<Bytes>),
    /// Still waiting (a Produce's fsync); encoded by the writer when it resolves.
    Deferred {
        body: handlers::Deferred,
        prefix: HeaderPrefix,
        api: ApiKey,
        started: Instant,
    },
}

/// Queue budget charged for a response whose size is not known yet (a Produce response:
/// a few bytes per partition).
const DEFERRED_RESPONSE_BYTES: usize = 4096;

/// Segments handed to one vectored write.
const MAX_IOVECS: usize = 64;

pub async fn run(
    stream: TcpStream,
    peer: SocketAddr,
    coord: Arc<KafkaCoord>,
    door: Arc<DoorState>,
    config: Arc<KafkaConfig>,
    budget: Arc<RequestBudget>,
    shutdown: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let (mut rd, wr) = stream.into_split();
    let (tx, rx) = mpsc::channel::<Outgoing>(config.max_inflight_responses_per_connection.max(1));
    let broker = coord.broker().clone();
    let mut writer = AbortOnDrop(tokio::spawn(write_loop(wr, rx, peer, broker.clone())));
    let conn = Conn {
        peer,
        broker: &broker,
        coord: &coord,
        sessions: &door.sessions,
        telemetry: &door.telemetry,
        config: &config,
        budget: &budget,
    };
    match read_loop(&mut rd, &conn, shutdown, tx).await {
        Ok(()) => tracing::debug!(%peer, "connection closed"),
        Err(reason) => tracing::warn!(%peer, %reason, "closing Kafka connection"),
    }
    let _ = (&mut writer.0).await;
}

/// Aborts the writer task if the connection task is aborted (shutdown grace exceeded), so
/// a client that never reads cannot keep it alive.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn write_loop(
    mut wr: OwnedWriteHalf,
    mut rx: mpsc::Receiver<Outgoing>,
    peer: SocketAddr,
    broker: Arc<Broker>,
) {
    while let Some(Outgoing { response, permit }) = rx.recv().await {
        let segments = match response {
            Response::Ready(segments) => segments,
            Response::Deferred {
                body,
                prefix,
                api,
                started,
            } => {
                let body = body.await;
                broker.metrics().observe_request(
                    crate::PROTOCOL,
                    api_name(api),
                    started.elapsed().as_secs_f64(),
                );
                log_request(peer, &prefix, api_name(api));
                match codec::encode_response(prefix.correlation_id, prefix.api_version, &body) {
                    Ok(b) => vec![b.freeze()],
                    Err(error) => {
                        let reason = CloseReason::Encode {
                            api,
                            version: prefix.api_version,
                            error,
                        };
                        tracing::warn!(%peer, %reason, "closing Kafka connection");
                        return;
                    }
                }
            }
        };
        if let Err(e) = write_segments(&mut wr, segments).await {
            tracing::debug!(%peer, error = %e, "write failed");
            return;
        }
        drop(permit);
    }
    let _ = wr.shutdown().await;
}

/// Writes every segment with vectored writes (the kernel copies straight from the mmap'd
/// storage chunks).
async fn write_segments(wr: &mut OwnedWriteHalf, mut segments: Vec<Bytes>) -> std::io::Result<()> {
    let mut first = 0;
    while first < segments.len() {
        let slices: Vec<IoSlice<'_>> = segments[first..]
            .iter()
            .take(MAX_IOVECS)
            .map(|s| IoSlice::new(s))
            .collect();
        let mut n = wr.write_vectored(&slices).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        while n > 0 && first < segments.len() {
            let len = segments[first].len();
            if n >= len {
                n -= len;
                first += 1;
            } else {
                segments[first].advance(n);
                n = 0;
            }
        }
        while first < segments.len() && segments[first].is_empty() {
            first += 1;
        }
    }
    Ok(())
}

/// What one connection's read loop works with.
struct Conn<'a> {
    peer: SocketAddr,
    broker: &'a Arc<Broker>,
    coord: &'a Arc<KafkaCoord>,
    sessions: &'a FetchSessions,
    telemetry: &'a Telemetry,
    config: &'a KafkaConfig,
    budget: &'a RequestBudget,
}

/// Reads the next frame: its length (within the idle timeout), a reservation of its size
/// from the global request budget (waiting as long as it takes: this is the backpressure
/// on fast producers), then its body (within `frame_read_timeout_ms`, so a stalled client
/// gives its reservation back). `Ok(None)`: the client closed the connection, or shutdown
/// started.
async fn next_frame(
    rd: &mut tokio::net::tcp::OwnedReadHalf,
    conn: &Conn<'_>,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<Option<(Bytes, Option<Reservation>)>, CloseReason> {
    let config = conn.config;
    let idle = Duration::from_millis(config.idle_timeout_ms);
    let len = tokio::select! {
        r = tokio::time::timeout(idle, framing::read_length(rd, config.max_frame_bytes)) => r,
        _ = shutdown.changed() => return Ok(None),
    };
    let len = match len {
        Err(_) => return Err(CloseReason::Idle(config.idle_timeout_ms)),
        Ok(Ok(None)) => return Ok(None),
        Ok(Ok(Some(len))) => len,
        Ok(Err(FrameError::Io(e))) if is_reset(&e) => return Ok(None),
        Ok(Err(e)) => return Err(e.into()),
    };
    let reservation = match conn.budget.try_reserve(len) {
        Some(r) => Some(r),
        None => {
            tracing::debug!(peer = %conn.peer, len, available = conn.budget.available(), "in-flight request budget used up; waiting before reading the frame");
            tokio::select! {
                r = conn.budget.reserve(len) => r,
                _ = shutdown.changed() => return Ok(None),
            }
        }
    };
    let body_timeout =
        Duration::from_millis(config.frame_read_timeout_ms.min(config.idle_timeout_ms));
    let body = tokio::select! {
        r = tokio::time::timeout(body_timeout, framing::read_body(rd, len)) => r,
        _ = shutdown.changed() => return Ok(None),
    };
    match body {
        Err(_) => Err(CloseReason::SlowFrame {
            len,
            timeout_ms: body_timeout.as_millis() as u64,
        }),
        Ok(Ok(frame)) => Ok(Some((frame, reservation))),
        Ok(Err(FrameError::Io(e))) if is_reset(&e) => Ok(None),
        Ok(Err(e)) => Err(e.into()),
    }
}

async fn read_loop(
    rd: &mut tokio::net::tcp::OwnedReadHalf,
    conn: &Conn<'_>,
    mut shutdown: watch::Receiver<bool>,
    tx: mpsc::Sender<Outgoing>,
) -> Result<(), CloseReason> {
    let (peer, broker, config) = (conn.peer, conn.broker, conn.config);
    let mut outbox = Outbox::new(peer, config, tx);
    loop {
        if *shutdown.borrow() {
            return Ok(());
        }
        let Some((frame, reservation)) = next_frame(rd, conn, &mut shutdown).await? else {
            return Ok(());
        };
        let started = Instant::now();
        let Some(prefix) = codec::peek_prefix(&frame) else {
            return Err(FrameError::BadLength(frame.len() as i32).into());
        };
        let api = ApiKey::try_from(prefix.api_key)
            .map_err(|_| CloseReason::UnknownApi(prefix.api_key))?;
        let version = prefix.api_version;
        let response = if !versions::is_supported(api, version) {
            if api != ApiKey::ApiVersions {
                return Err(CloseReason::UnsupportedVersion { api, version });
            }
            // Kafka answers an unknown ApiVersions version with a v0 body listing what it
            // supports, so the client can retry with a version both know.
            tracing::info!(%peer, version, "ApiVersions version unsupported; answering with v0");
            (
                Reply::Body(ResponseKind::ApiVersions(api_versions::unsupported())),
                0,
            )
        } else {
            let (header, body) = codec::decode_request(frame, api, version)?;
            let client_id = header
                .client_id
                .as_ref()
                .map(|c| c.to_string())
                .unwrap_or_default();
            // The header borrows the frame; dropping it lets a lone produce payload become
            // mutable without a copy.
            drop(header);
            let ctx = Ctx {
                broker,
                coord: conn.coord,
                sessions: conn.sessions,
                telemetry: conn.telemetry,
                config,
                client_id: &client_id,
                peer,
                shutdown: shutdown.clone(),
                version,
            };
            handlers::dispatch(&ctx, body)
                .await
                .map_err(|reason| CloseReason::NotImplemented { api, reason })
                .map(|r| (r, version))?
        };
        let (reply, v) = response;
        let encoded = match reply {
            Reply::Silent => None,
            Reply::SilentThenClose => return Err(CloseReason::AcksZeroProduceFailed),
            Reply::Body(body) => Some(
                codec::encode_response(prefix.correlation_id, v, &body).map(|b| vec![b.freeze()]),
            ),
            Reply::Fetch((body, splices)) => Some(codec::encode_fetch_segments(
                prefix.correlation_id,
                v,
                &body,
                splices,
            )),
            Reply::Deferred(body) => {
                // Its effects are done and its request bytes are in storage.
                drop(reservation);
                let deferred = Response::Deferred {
                    body,
                    prefix,
                    api,
                    started,
                };
                if !outbox.push(deferred, DEFERRED_RESPONSE_BYTES).await {
                    return Ok(());
                }
                continue;
            }
        };
        let api_name = api_name(api);
        broker.metrics().observe_request(
            crate::PROTOCOL,
            api_name,
            started.elapsed().as_secs_f64(),
        );
        if let Some(encoded) = encoded {
            let buf = encoded.map_err(|error| CloseReason::Encode {
                api,
                version: v,
                error,
            })?;
            // The request is handled and its response encoded: from here on the response
            // counts against this connection's budget, not the global one.
            drop(reservation);
            let size = buf.iter().map(Bytes::len).sum();
            if !outbox.push(Response::Ready(buf), size).await {
                return Ok(());
            }
        }
        log_request(peer, &prefix, api_name);
    }
}

/// Responses waiting for the writer task, bounded in count (the channel) and in bytes (the
/// semaphore). While either is full the read loop waits in `push`, so it reads nothing more
/// from a client that does not read its responses.
struct Outbox {
    peer: SocketAddr,
    tx: mpsc::Sender<Outgoing>,
    bytes: Arc<Semaphore>,
    budget: usize,
    warned: bool,
}

impl Outbox {
    fn new(peer: SocketAddr, config: &KafkaConfig, tx: mpsc::Sender<Outgoing>) -> Self {
        let budget = config
            .max_inflight_bytes_per_connection
            .clamp(1, Semaphore::MAX_PERMITS.min(u32::MAX as usize));
        Self {
            peer,
            tx,
            bytes: Arc::new(Semaphore::new(budget)),
            budget,
            warned: false,
        }
    }

    /// Queues one response of `size` bytes, waiting for room. False if the writer is gone.
    async fn push(&mut self, response: Response, size: usize) -> bool {
        // In range: `budget` fits a u32 (see `new`).
        let permits = size.clamp(1, self.budget) as u32;
        let permit = match self.bytes.clone().try_acquire_many_owned(permits) {
            Ok(p) => Some(p),
            Err(_) => {
                self.warn_backed_up();
                self.bytes.clone().acquire_many_owned(permits).await.ok()
            }
        };
        // We are the only sender, so a free slot seen here stays free.
        if self.tx.capacity() == 0 {
            self.warn_backed_up();
        }
        let Ok(slot) = self.tx.reserve().await else {
            return false;
        };
        slot.send(Outgoing { response, permit });
        true
    }

    /// Logs, once per connection, that its responses back up and its reads are paused.
    fn warn_backed_up(&mut self) {
        if !self.warned {
            self.warned = true;
            let queued_bytes = self.budget.saturating_sub(self.bytes.available_permits());
            tracing::warn!(peer = %self.peer, queued_bytes, queued_responses = self.tx.max_capacity() - self.tx.capacity(), "client is not reading its responses; pausing reads from it (backpressure)");
        }
    }
}

fn log_request(peer: SocketAddr, prefix: &HeaderPrefix, api: &str) {
    tracing::trace!(%peer, api, version = prefix.api_version, correlation_id = prefix.correlation_id, "request handled");
}

fn is_reset(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
    )
}

/// Stable metric label of an API.
pub fn api_name(api: ApiKey) -> &'static str {
    match api {
        ApiKey::Produce => "Produce",
        ApiKey::Fetch => "Fetch",
        ApiKey::ListOffsets => "ListOffsets",
        ApiKey::Metadata => "Metadata",
        ApiKey::OffsetCommit => "OffsetCommit",
        ApiKey::OffsetFetch => "OffsetFetch",
        ApiKey::FindCoordinator => "FindCoordinator",
        ApiKey::JoinGroup => "JoinGroup",
        ApiKey::Heartbeat => "Heartbeat",
        ApiKey::LeaveGroup => "LeaveGroup",
        ApiKey::SyncGroup => "SyncGroup",
        ApiKey::DescribeGroups => "DescribeGroups",
        ApiKey::ListGroups => "ListGroups",
        ApiKey::ApiVersions => "ApiVersions",
        ApiKey::CreateTopics => "CreateTopics",
        ApiKey::DeleteTopics => "DeleteTopics",
        ApiKey::DeleteRecords => "DeleteRecords",
        ApiKey::InitProducerId => "InitProducerId",
        ApiKey::DescribeConfigs => "DescribeConfigs",
        ApiKey::AlterConfigs => "AlterConfigs",
        ApiKey::CreatePartitions => "CreatePartitions",
        ApiKey::DeleteGroups => "DeleteGroups",
        ApiKey::IncrementalAlterConfigs => "IncrementalAlterConfigs",
        ApiKey::OffsetDelete => "OffsetDelete",
        ApiKey::DescribeCluster => "DescribeCluster",
        ApiKey::AddPartitionsToTxn => "AddPartitionsToTxn",
        ApiKey::AddOffsetsToTxn => "AddOffsetsToTxn",
        ApiKey::EndTxn => "EndTxn",
        ApiKey::TxnOffsetCommit => "TxnOffsetCommit",
        ApiKey::DescribeProducers => "DescribeProducers",
        ApiKey::DescribeTransactions => "DescribeTransactions",
        ApiKey::ListTransactions => "ListTransactions",
        ApiKey::ConsumerGroupHeartbeat => "ConsumerGroupHeartbeat",
        ApiKey::ConsumerGroupDescribe => "ConsumerGroupDescribe",
        ApiKey::ShareGroupHeartbeat => "ShareGroupHeartbeat",
        ApiKey::ShareGroupDescribe => "ShareGroupDescribe",
        ApiKey::ShareFetch => "ShareFetch",
        ApiKey::ShareAcknowledge => "ShareAcknowledge",
        ApiKey::GetTelemetrySubscriptions => "GetTelemetrySubscriptions",
        ApiKey::PushTelemetry => "PushTelemetry",
        _ => "Other",
    }
}
