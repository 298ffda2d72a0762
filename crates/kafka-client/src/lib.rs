//! A small async Kafka client, built on `kafka-protocol`: bootstrap, metadata, connections to
//! partition leaders, the controller and group coordinators, consumer-group membership and
//! record batches. It speaks only the protocol, so the `sluice` CLI (its main user) works
//! against any Kafka-compatible broker; the test kit reuses its framing.
//!
//! Reading order:
//! - [`frame`]: sans-IO request framing (length prefix, request header, body) and response
//!   header decoding. No socket; the raw test client (`sluice-testkit`) uses it too.
//! - [`Connection`] (`connection.rs`): one TCP connection to one broker over [`frame`]:
//!   correlation ids, timeouts, and API version negotiation (ApiVersions on connect, with
//!   the KIP-511 fallback; every request then uses the highest version both sides and this
//!   code fill in correctly).
//! - [`Client`] (this file): bootstrap, the broker map from Metadata, and connections by
//!   role (any broker, a node, the controller, a group's coordinator).
//! - [`ops`] (offsets, partitions, fetch), [`consumer_group`] + [`group_protocol`] (joining
//!   a group, the consumer assignor, committed offsets), [`records`] (batch encode/decode
//!   with every Kafka codec, murmur2 partitioning).
//! - [`error`]: [`ClientError`], phrased so a user knows what to do next.
//!
//! What callers may rely on: a request is sent only at a version both sides support (or it
//! fails with [`ClientError::Protocol`] before anything is written); a response whose
//! correlation id does not match is an error, never silently taken for another request; a
//! response frame over 256 MiB is refused; after an abandoned request (a dropped future)
//! call [`Client::reset_connections`], since the connection may hold an unread response.

mod connection;
pub mod consumer_group;
pub mod error;
pub mod frame;
pub mod group_protocol;
pub mod ops;
pub mod records;

use std::collections::HashMap;
use std::time::Duration;

use kafka_protocol::messages::{
    BrokerId, FindCoordinatorRequest, GroupId, MetadataRequest, MetadataResponse, TopicName,
    metadata_request::MetadataRequestTopic,
};
use kafka_protocol::protocol::StrBytes;

pub use connection::Connection;
pub use error::ClientError;

pub type Result<T> = std::result::Result<T, ClientError>;

pub fn str_bytes(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

pub fn topic_name(s: &str) -> TopicName {
    TopicName(str_bytes(s))
}

pub struct Client {
    timeout: Duration,
    /// Connections by address.
    conns: HashMap<String, Connection>,
    /// Known brokers: node id → host:port.
    brokers: HashMap<i32, String>,
    controller: Option<i32>,
    /// The address we bootstrapped through (always usable for cluster-wide requests).
    bootstrap_addr: String,
    coordinators: HashMap<String, String>,
}

impl Client {
    /// Connects to the first reachable bootstrap server and learns the cluster's brokers.
    pub async fn connect(bootstrap: &str, timeout: Duration) -> Result<Self> {
        let mut last_err = None;
        for addr in bootstrap
            .split(',')
            .map(str::trim)
            .filter(|a| !a.is_empty())
        {
            match Connection::connect(addr, timeout).await {
                Ok(conn) => {
                    let mut client = Client {
                        timeout,
                        conns: HashMap::from([(addr.to_string(), conn)]),
                        brokers: HashMap::new(),
                        controller: None,
                        bootstrap_addr: addr.to_string(),
                        coordinators: HashMap::new(),
                    };
                    client.metadata(Some(&[]), false).await?;
                    return Ok(client);
                }
                Err(e) => last_err = Some(e),
            }
        }
        Err(last_err.unwrap_or(ClientError::Unreachable {
            addr: bootstrap.to_string(),
            reason: "no bootstrap server given".to_string(),
        }))
    }

    /// A connection to `addr`, opened on first use.
    pub async fn conn(&mut self, addr: &str) -> Result<&mut Connection> {
        if !self.conns.contains_key(addr) {
            let conn = Connection::connect(addr, self.timeout).await?;
            self.conns.insert(addr.to_string(), conn);
        }
        Ok(self.conns.get_mut(addr).expect("inserted above"))
    }

    /// Closes every connection (after a request was abandoned half-way, e.g. on Ctrl-C, a
    /// connection may hold an unread response). The next request reconnects.
    pub fn reset_connections(&mut self) {
        self.conns.clear();
    }

    /// Forgets the cached coordinator of `group` (after NOT_COORDINATOR).
    pub fn forget_coordinator(&mut self, group: &str) {
        self.coordinators.remove(group);
    }

    /// The bootstrap connection (any broker answers metadata and listing requests).
    pub async fn any(&mut self) -> Result<&mut Connection> {
        let addr = self.bootstrap_addr.clone();
        self.conn(&addr).await
    }

    pub fn brokers(&self) -> &HashMap<i32, String> {
        &self.brokers
    }

    /// A connection to broker `node`.
    pub async fn node(&mut self, node: i32) -> Result<&mut Connection> {
        let addr = match self.brokers.get(&node) {
            Some(a) => a.clone(),
            None => {
                self.metadata(Some(&[]), false).await?;
                self.brokers
                    .get(&node)
                    .cloned()
                    .ok_or_else(|| ClientError::Protocol {
                        addr: self.bootstrap_addr.clone(),
                        reason: format!("metadata names no broker with id {node}"),
                    })?
            }
        };
        self.conn(&addr).await
    }

    /// The controller (for topic administration), falling back to the bootstrap broker.
    pub async fn controller(&mut self) -> Result<&mut Connection> {
        match self.controller {
            Some(id) if self.brokers.contains_key(&id) => self.node(id).await,
            _ => self.any().await,
        }
    }

    /// Metadata for `topics` (`None`: all topics; `Some(&[])`: brokers only).
    pub async fn metadata(
        &mut self,
        topics: Option<&[String]>,
        allow_auto_create: bool,
    ) -> Result<MetadataResponse> {
        let mut request = MetadataRequest::default();
        request.topics = topics.map(|ts| {
            ts.iter()
                .map(|t| {
                    let mut mt = MetadataRequestTopic::default();
                    mt.name = Some(topic_name(t));
                    mt
                })
                .collect()
        });
        request.allow_auto_topic_creation = allow_auto_create;
        let (response, _) = self.any().await?.send(&request).await?;
        self.brokers = response
            .brokers
            .iter()
            .map(|b| (b.node_id.0, format!("{}:{}", b.host.as_str(), b.port)))
            .collect();
        self.controller = Some(response.controller_id.0).filter(|id| *id >= 0);
        Ok(response)
    }

    /// The coordinator of consumer group `group`.
    pub async fn coordinator(&mut self, group: &str) -> Result<&mut Connection> {
        if let Some(addr) = self.coordinators.get(group).cloned() {
            return self.conn(&addr).await;
        }
        let mut attempts = 0;
        let addr = loop {
            attempts += 1;
            let conn = self.any().await?;
            let version = conn.version_of::<FindCoordinatorRequest>()?;
            let mut request = FindCoordinatorRequest::default();
            request.key_type = 0;
            if version >= 4 {
                request.coordinator_keys = vec![str_bytes(group)];
            } else {
                request.key = str_bytes(group);
            }
            let response = conn.send_at(&request, version).await?;
            let (code, message, node, host, port) = if version >= 4 {
                match response.coordinators.first() {
                    Some(c) => (
                        c.error_code,
                        c.error_message.clone(),
                        c.node_id,
                        c.host.clone(),
                        c.port,
                    ),
                    None => {
                        return Err(ClientError::Protocol {
                            addr: self.bootstrap_addr.clone(),
                            reason: "FindCoordinator returned no coordinator".to_string(),
                        });
                    }
                }
            } else {
                (
                    response.error_code,
                    response.error_message.clone(),
                    response.node_id,
                    response.host.clone(),
                    response.port,
                )
            };
            // COORDINATOR_NOT_AVAILABLE / LOAD_IN_PROGRESS: the coordinator is starting.
            if (code == 15 || code == 14) && attempts < 20 {
                tokio::time::sleep(Duration::from_millis(250)).await;
                continue;
            }
            if code != 0 {
                return Err(ClientError::broker(
                    format!("find coordinator of group {group}"),
                    code,
                    message.map(|m| m.to_string()),
                ));
            }
            let _: BrokerId = node;
            break format!("{}:{}", host.as_str(), port);
        };
        self.coordinators.insert(group.to_string(), addr.clone());
        self.conn(&addr).await
    }
}

pub fn group_id(s: &str) -> GroupId {
    GroupId(str_bytes(s))
}
