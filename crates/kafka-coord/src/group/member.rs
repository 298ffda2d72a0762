//! One member of a classic consumer group, as the coordinator tracks it.

use bytes::Bytes;
use common::TimestampMs;

/// A member's offered protocol: (name, opaque metadata). Metadata is client-defined
/// (for consumers: `ConsumerProtocolSubscription`); the coordinator never parses it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProtocolOffer {
    pub name: String,
    pub metadata: Bytes,
}

#[derive(Clone, Debug)]
pub struct Member {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    pub protocols: Vec<ProtocolOffer>,
    /// Assignment handed out by the leader in the last completed SyncGroup.
    pub assignment: Bytes,
    pub last_heartbeat_ms: TimestampMs,
    /// A JoinGroup from this member is parked until the rebalance completes.
    pub awaiting_join: bool,
    /// A SyncGroup from this member is parked until the leader's SyncGroup arrives.
    pub awaiting_sync: bool,
}

impl Member {
    pub fn metadata_for(&self, protocol: &str) -> Bytes {
        self.protocols
            .iter()
            .find(|p| p.name == protocol)
            .map(|p| p.metadata.clone())
            .unwrap_or_default()
    }

    pub fn supports(&self, protocol: &str) -> bool {
        self.protocols.iter().any(|p| p.name == protocol)
    }

    pub fn session_expired(&self, now_ms: TimestampMs) -> bool {
        now_ms - self.last_heartbeat_ms > i64::from(self.session_timeout_ms)
    }
}
