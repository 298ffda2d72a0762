//! The accept loop: one task per connection, at most `max_connections` at once; on shutdown
//! it stops accepting, every connection sends connection.close (320 CONNECTION_FORCED) and
//! releases what it holds, and `serve` returns when they are done or the grace period ends.

use std::sync::Arc;
use std::time::Duration;

use broker::Broker;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

use crate::config::AmqpConfig;
use crate::connection;
use crate::manage::DoorHandle;

/// Serves AMQP clients on `listener` until `shutdown` flips to true.
pub async fn serve(
    listener: TcpListener,
    broker: Arc<Broker>,
    config: AmqpConfig,
    shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    serve_handle(listener, DoorHandle::open(broker, config), shutdown).await
}

/// [`serve`] on a door opened beforehand (whose handle the admin API also holds).
pub async fn serve_handle(
    listener: TcpListener,
    handle: DoorHandle,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let door = handle.0;
    let grace = Duration::from_millis(door.config.shutdown_grace_ms);
    let slots = Arc::new(Semaphore::new(door.config.max_connections));
    let policies = tokio::spawn(door.clone().run_policies(shutdown.clone()));
    let mut tasks = JoinSet::new();
    loop {
        if *shutdown.borrow() {
            break;
        }
        tokio::select! {
            _ = shutdown.changed() => {}
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of file descriptors and the like: pause, keep serving.
                        tracing::warn!(error = %e, "AMQP accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let Ok(permit) = slots.clone().try_acquire_owned() else {
                    tracing::warn!(%peer, "AMQP connection refused: max_connections reached");
                    continue;
                };
                let metrics = door.broker.metrics();
                metrics.connections.inc();
                metrics.connections_total.inc();
                let (door, shutdown) = (door.clone(), shutdown.clone());
                tasks.spawn(async move {
                    let broker = door.broker.clone();
                    connection::run(stream, peer, door, shutdown).await;
                    broker.metrics().connections.dec();
                    drop(permit);
                });
            }
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
        }
    }
    drop(listener);
    let drained = async { while tasks.join_next().await.is_some() {} };
    if tokio::time::timeout(grace, drained).await.is_err() {
        tasks.abort_all();
    }
    policies.abort();
    Ok(())
}
