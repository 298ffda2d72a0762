//! The accept loop: connection limits (total and per client IP), one task per connection,
//! graceful shutdown.

use std::sync::Arc;
use std::time::Duration;

use broker::Broker;
use kafka_coord::KafkaCoord;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::config::KafkaConfig;
use crate::connection;
use crate::fetch_session::FetchSessions;
use crate::limits::{IpConnections, RequestBudget};
use crate::telemetry::Telemetry;

/// What every connection of one Kafka door shares besides the broker: its incremental
/// fetch sessions (KIP-227) and its client telemetry (KIP-714).
pub struct DoorState {
    pub sessions: FetchSessions,
    pub telemetry: Telemetry,
}

/// Serves the Kafka protocol on `listener` until `shutdown` becomes true (or its sender
/// is dropped). First opens Kafka's coordinators over `broker` (groups, producer ids,
/// transactions: restored and rebuilt from the log). At shutdown it stops accepting, lets
/// each connection finish the request it is handling (long polls return early) and send
/// its responses, closes the connections (waiting at most `shutdown_grace_ms`), shuts the
/// coordinators down (parked group members answered, producer state snapshotted), and
/// returns; the broker itself is the caller's to shut down.
pub async fn serve(
    listener: TcpListener,
    broker: Arc<Broker>,
    config: KafkaConfig,
    shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let coord = KafkaCoord::open(broker, config.coordinator.clone())
        .map_err(|e| std::io::Error::other(format!("cannot open the Kafka coordinators: {e}")))?;
    let served = serve_with(listener, coord.clone(), config, shutdown).await;
    coord.shutdown().await;
    served
}

async fn serve_with(
    listener: TcpListener,
    coord: Arc<KafkaCoord>,
    config: KafkaConfig,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let broker = coord.broker().clone();
    let push_every = i32::try_from(config.telemetry_push_interval_ms).unwrap_or(i32::MAX);
    let door = Arc::new(DoorState {
        sessions: FetchSessions::new(config.max_fetch_sessions),
        telemetry: Telemetry::new(push_every),
    });
    door.sessions
        .register(&mut broker.metrics().registry.lock());
    door.telemetry
        .register(&mut broker.metrics().registry.lock());
    let config = Arc::new(config);
    let mut tasks = JoinSet::new();
    let budget = Arc::new(RequestBudget::new(config.max_inflight_request_bytes));
    let per_ip = IpConnections::new(config.max_connections_per_ip);
    let local = listener.local_addr()?;
    tracing::info!(addr = %local, advertised = %format!("{}:{}", config.advertised_host, config.advertised_port), "Kafka listener ready");
    loop {
        if *shutdown.borrow() {
            break;
        }
        tokio::select! {
            changed = shutdown.changed() => {
                if changed.is_err() {
                    break;
                }
            }
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    if tasks.len() >= config.max_connections {
                        tracing::warn!(%peer, limit = config.max_connections, "connection limit reached; closing new connection");
                        drop(stream);
                        continue;
                    }
                    let Some(slot) = per_ip.try_admit(peer.ip()) else {
                        tracing::warn!(%peer, open = per_ip.open_from(peer.ip()), limit = per_ip.limit(), "per-IP connection limit reached; closing new connection");
                        drop(stream);
                        continue;
                    };
                    let metrics = broker.metrics();
                    metrics.connections.inc();
                    metrics.connections_total.inc();
                    let (k, c, s) = (coord.clone(), config.clone(), shutdown.clone());
                    let (budget, door) = (budget.clone(), door.clone());
                    tasks.spawn(async move {
                        let b = k.broker().clone();
                        connection::run(stream, peer, k, door, c, budget, s).await;
                        b.metrics().connections.dec();
                        drop(slot);
                    });
                }
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
        }
    }
    drop(listener);
    tracing::info!(connections = tasks.len(), "Kafka listener stopping");
    let grace = Duration::from_millis(config.shutdown_grace_ms);
    let drained =
        tokio::time::timeout(grace, async { while tasks.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        tracing::warn!(
            remaining = tasks.len(),
            "connections still open after the grace period; aborting them"
        );
        tasks.abort_all();
        while tasks.join_next().await.is_some() {}
    }
    Ok(())
}
