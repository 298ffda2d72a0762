//! `GET /health`: a JSON summary for load balancers and humans. 200 while serving ("ok", or
//! "degraded" once a damaged batch was met: it is never served, and `damaged_batches` says
//! where), 503 once shutdown has started.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::AdminServer;

#[derive(Debug, Serialize)]
pub struct Health {
    /// "ok", "degraded" (damaged data met; see `damaged_batches`) or "shutting_down".
    pub status: &'static str,
    pub version: &'static str,
    pub uptime_seconds: u64,
    pub node_id: i32,
    pub topics: usize,
    pub partitions: u32,
    pub groups: usize,
    pub data_dir: String,
    /// Every front door's listener: protocol, bound address, advertised address.
    pub listeners: Vec<crate::DoorListener>,
    pub admin_listener: String,
    /// Damaged batches met while serving, one line each (partition, offsets, file,
    /// position, reason); at most the first 100.
    pub damaged_batches: Vec<String>,
}

pub(crate) fn health(server: &AdminServer) -> Health {
    let info = server.broker.health();
    Health {
        status: if server.broker.is_shutting_down() {
            "shutting_down"
        } else if !info.damage.is_empty() {
            "degraded"
        } else {
            "ok"
        },
        version: env!("CARGO_PKG_VERSION"),
        uptime_seconds: server.started.elapsed().as_secs(),
        node_id: info.node_id,
        topics: info.topics,
        partitions: info.partitions,
        groups: info.groups,
        data_dir: server.data_dir.display().to_string(),
        listeners: server.listeners.doors.clone(),
        admin_listener: server.listeners.admin.to_string(),
        damaged_batches: info.damage.into_iter().take(100).collect(),
    }
}

pub(crate) async fn handler(State(server): State<AdminServer>) -> Response {
    let h = health(&server);
    let code = if h.status != "shutting_down" {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(h)).into_response()
}
