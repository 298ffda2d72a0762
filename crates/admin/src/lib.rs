//! Sluice admin HTTP server: `GET /metrics` (Prometheus/OpenMetrics text), `GET /health`
//! (JSON) and the JSON management API under `/api/` (queues, exchanges, bindings;
//! docs/http-api.md). Built on axum; it reads the broker's `prometheus-client` registry and
//! adds what the broker does not own: storage numbers (sampled at scrape time through a
//! closure the binary provides, so this crate does not depend on the storage engine's
//! types), uptime and build info. Likewise the AMQP objects come through a trait object the
//! binary builds around the door ([`api::AmqpManagement`]): this crate depends on no door.
//!
//! - [`AdminServer`] — what the endpoints need (broker handle, listen addresses, storage
//!   sampler, the AMQP door's management operations).
//! - [`serve`] — runs the HTTP server until the shutdown signal flips.
//! - [`Sample`] — one storage number, gauge or counter.
//! - [`api`] — the `/api/…` routes, their JSON types and errors.

pub mod api;
mod health;
mod metrics;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::routing::get;
use broker::Broker;
use tokio::net::TcpListener;
use tokio::sync::watch;

pub use health::Health;
pub use metrics::{Sample, SampleKind};

/// Reads storage numbers at scrape time.
pub type StorageSampler = Arc<dyn Fn() -> Vec<Sample> + Send + Sync>;

/// Errors of the admin server.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("admin HTTP server failed: {0}")]
    Serve(#[from] std::io::Error),
}

/// One front door's listener (Kafka, AMQP, …), shown by `/health`.
#[derive(Clone, Debug, serde::Serialize)]
pub struct DoorListener {
    /// The protocol, as in the `protocol` label of request metrics ("kafka").
    pub protocol: &'static str,
    /// The bound address.
    pub address: SocketAddr,
    /// What clients are told to connect to, when the protocol advertises one.
    pub advertised: Option<String>,
}

/// Where the server listens, shown by `/health`.
#[derive(Clone, Debug)]
pub struct Listeners {
    /// Every front door the server runs, in start order.
    pub doors: Vec<DoorListener>,
    pub admin: SocketAddr,
}

/// Everything the endpoints read. Cheap to clone.
#[derive(Clone)]
pub struct AdminServer {
    pub(crate) broker: Arc<Broker>,
    pub(crate) started: Instant,
    pub(crate) data_dir: PathBuf,
    pub(crate) listeners: Listeners,
    pub(crate) storage: Option<StorageSampler>,
    pub(crate) amqp: Option<Arc<dyn api::AmqpManagement>>,
}

impl AdminServer {
    pub fn new(broker: Arc<Broker>, data_dir: PathBuf, listeners: Listeners) -> Self {
        AdminServer {
            broker,
            started: Instant::now(),
            data_dir,
            listeners,
            storage: None,
            amqp: None,
        }
    }

    /// Serves the AMQP door's queues, exchanges and bindings under `/api/`.
    pub fn with_amqp(mut self, amqp: Arc<dyn api::AmqpManagement>) -> Self {
        self.amqp = Some(amqp);
        self
    }

    /// Adds storage metrics sampled by `sampler` on each scrape.
    pub fn with_storage_sampler(mut self, sampler: StorageSampler) -> Self {
        self.storage = Some(sampler);
        self
    }

    /// The HTTP routes (exposed for in-process tests).
    pub fn router(self) -> Router {
        Router::new()
            .route("/metrics", get(metrics::handler))
            .route("/health", get(health::handler))
            .route("/", get(index))
            .merge(api::routes())
            .fallback(api::no_route)
            .method_not_allowed_fallback(api::no_method)
            .with_state(self)
    }
}

async fn index() -> &'static str {
    "sluice admin: GET /metrics (Prometheus), GET /health (JSON), /api/… (JSON management API: queues, exchanges, bindings)\n"
}

/// Serves the admin endpoints on `listener` until `shutdown` becomes true.
pub async fn serve(
    listener: TcpListener,
    server: AdminServer,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), AdminError> {
    let app = server.router();
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            while !*shutdown.borrow_and_update() {
                if shutdown.changed().await.is_err() {
                    return;
                }
            }
        })
        .await?;
    Ok(())
}
