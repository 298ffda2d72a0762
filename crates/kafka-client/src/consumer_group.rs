//! Classic consumer-group membership (JoinGroup → SyncGroup → Heartbeat → LeaveGroup) with the
//! range assignor run by the leader, plus OffsetFetch / OffsetCommit helpers shared with the
//! `group` commands.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use kafka_protocol::messages::{
    HeartbeatRequest, JoinGroupRequest, LeaveGroupRequest, OffsetCommitRequest, OffsetFetchRequest,
    SyncGroupRequest,
    join_group_request::JoinGroupRequestProtocol,
    leave_group_request::MemberIdentity,
    offset_commit_request::{OffsetCommitRequestPartition, OffsetCommitRequestTopic},
    offset_fetch_request::OffsetFetchRequestTopic,
    sync_group_request::SyncGroupRequestAssignment,
};

use super::group_protocol::{
    decode_assignment, decode_subscription, encode_assignment, encode_subscription, range_assign,
};
use super::ops::topic_partitions;
use super::{Client, ClientError, Result, group_id, str_bytes, topic_name};

const SESSION_TIMEOUT_MS: i32 = 10_000;
const REBALANCE_TIMEOUT_MS: i32 = 30_000;
const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(3);
/// How long a JoinGroup may be held: Java/librdkafka members ask for up to 300 s.
const JOIN_WAIT_MAX: Duration = Duration::from_secs(310);

const UNKNOWN_MEMBER_ID: i16 = 25;
const ILLEGAL_GENERATION: i16 = 22;
const REBALANCE_IN_PROGRESS: i16 = 27;
const MEMBER_ID_REQUIRED: i16 = 79;
const NOT_COORDINATOR: i16 = 16;
const COORDINATOR_NOT_AVAILABLE: i16 = 15;
const COORDINATOR_LOAD_IN_PROGRESS: i16 = 14;

/// `(topic, partition)` → offset.
pub type Offsets = BTreeMap<(String, i32), i64>;

pub struct GroupMember {
    pub group: String,
    pub member_id: String,
    pub generation: i32,
    topics: Vec<String>,
    /// topic → partitions assigned to this member.
    pub assignment: BTreeMap<String, Vec<i32>>,
    last_heartbeat: Instant,
}

impl GroupMember {
    /// Joins `group` subscribed to `topics` and waits for an assignment.
    pub async fn join(client: &mut Client, group: &str, topics: Vec<String>) -> Result<Self> {
        let mut member = GroupMember {
            group: group.to_string(),
            member_id: String::new(),
            generation: -1,
            topics,
            assignment: BTreeMap::new(),
            last_heartbeat: Instant::now(),
        };
        member.rejoin(client).await?;
        Ok(member)
    }

    /// (Re)joins the group until an assignment arrives.
    pub async fn rejoin(&mut self, client: &mut Client) -> Result<()> {
        for _ in 0..50 {
            match self.try_join(client).await {
                Ok(()) => {
                    self.last_heartbeat = Instant::now();
                    return Ok(());
                }
                Err(e) => match e.code() {
                    Some(MEMBER_ID_REQUIRED | REBALANCE_IN_PROGRESS) => continue,
                    Some(UNKNOWN_MEMBER_ID | ILLEGAL_GENERATION) => {
                        self.member_id.clear();
                        self.generation = -1;
                    }
                    Some(
                        NOT_COORDINATOR | COORDINATOR_NOT_AVAILABLE | COORDINATOR_LOAD_IN_PROGRESS,
                    ) => {
                        client.forget_coordinator(&self.group);
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                    _ => return Err(e),
                },
            }
        }
        Err(ClientError::Protocol {
            addr: "group coordinator".to_string(),
            reason: format!("could not join group {} after 50 attempts", self.group),
        })
    }

    async fn try_join(&mut self, client: &mut Client) -> Result<()> {
        let mut protocol = JoinGroupRequestProtocol::default();
        protocol.name = str_bytes("range");
        protocol.metadata = encode_subscription(&self.topics);
        let mut request = JoinGroupRequest::default();
        request.group_id = group_id(&self.group);
        request.session_timeout_ms = SESSION_TIMEOUT_MS;
        request.rebalance_timeout_ms = REBALANCE_TIMEOUT_MS;
        request.member_id = str_bytes(&self.member_id);
        request.protocol_type = str_bytes("consumer");
        request.protocols = vec![protocol];
        let (response, _) = client
            .coordinator(&self.group)
            .await?
            .send(&request)
            .await?;
        if response.error_code == MEMBER_ID_REQUIRED {
            self.member_id = response.member_id.to_string();
        }
        if response.error_code != 0 {
            return Err(ClientError::broker(
                format!("join group {}", self.group),
                response.error_code,
                None,
            ));
        }
        self.member_id = response.member_id.to_string();
        self.generation = response.generation_id;
        let assignments = if response.leader == response.member_id {
            self.assign(client, &response.members).await?
        } else {
            Vec::new()
        };
        let mut sync = SyncGroupRequest::default();
        sync.group_id = group_id(&self.group);
        sync.generation_id = self.generation;
        sync.member_id = str_bytes(&self.member_id);
        sync.protocol_type = Some(str_bytes("consumer"));
        sync.protocol_name = response.protocol_name.clone().or(Some(str_bytes("range")));
        sync.assignments = assignments;
        let (sync_response, _) = client
            .coordinator(&self.group)
            .await?
            .send_patiently(&sync, JOIN_WAIT_MAX)
            .await?;
        if sync_response.error_code != 0 {
            return Err(ClientError::broker(
                format!("sync group {}", self.group),
                sync_response.error_code,
                None,
            ));
        }
        self.assignment =
            decode_assignment(sync_response.assignment).ok_or_else(|| ClientError::Protocol {
                addr: "group coordinator".to_string(),
                reason: "undecodable partition assignment".to_string(),
            })?;
        Ok(())
    }

    /// The leader's job: range-assign every member's subscribed topics.
    async fn assign(
        &self,
        client: &mut Client,
        members: &[kafka_protocol::messages::join_group_response::JoinGroupResponseMember],
    ) -> Result<Vec<SyncGroupRequestAssignment>> {
        let subscriptions: BTreeMap<String, Vec<String>> = members
            .iter()
            .map(|m| {
                let topics = decode_subscription(m.metadata.clone()).unwrap_or_default();
                (m.member_id.to_string(), topics)
            })
            .collect();
        let mut counts = BTreeMap::new();
        for topic in subscriptions.values().flatten() {
            if !counts.contains_key(topic)
                && let Ok(ps) = topic_partitions(client, topic).await
            {
                counts.insert(topic.clone(), ps.len() as i32);
            }
        }
        Ok(range_assign(&subscriptions, &counts)
            .into_iter()
            .map(|(member, parts)| {
                let mut a = SyncGroupRequestAssignment::default();
                a.member_id = str_bytes(&member);
                a.assignment = encode_assignment(&parts);
                a
            })
            .collect())
    }

    /// Sends a heartbeat when one is due. Returns true when the group is rebalancing and the
    /// caller must commit and [`rejoin`](Self::rejoin).
    pub async fn heartbeat_if_due(&mut self, client: &mut Client) -> Result<bool> {
        if self.last_heartbeat.elapsed() < HEARTBEAT_INTERVAL {
            return Ok(false);
        }
        self.last_heartbeat = Instant::now();
        let mut request = HeartbeatRequest::default();
        request.group_id = group_id(&self.group);
        request.generation_id = self.generation;
        request.member_id = str_bytes(&self.member_id);
        let (response, _) = client
            .coordinator(&self.group)
            .await?
            .send(&request)
            .await?;
        match response.error_code {
            0 => Ok(false),
            REBALANCE_IN_PROGRESS | UNKNOWN_MEMBER_ID | ILLEGAL_GENERATION => Ok(true),
            code => Err(ClientError::broker(
                format!("heartbeat to group {}", self.group),
                code,
                None,
            )),
        }
    }

    pub async fn commit(&self, client: &mut Client, offsets: &Offsets) -> Result<()> {
        commit_offsets(
            client,
            &self.group,
            self.generation,
            &self.member_id,
            offsets,
        )
        .await
    }

    /// Leaves the group so its partitions move to other members at once.
    pub async fn leave(&self, client: &mut Client) -> Result<()> {
        let conn = client.coordinator(&self.group).await?;
        let version = conn.version_of::<LeaveGroupRequest>()?;
        let mut request = LeaveGroupRequest::default();
        request.group_id = group_id(&self.group);
        if version >= 3 {
            let mut m = MemberIdentity::default();
            m.member_id = str_bytes(&self.member_id);
            request.members = vec![m];
        } else {
            request.member_id = str_bytes(&self.member_id);
        }
        conn.send_at(&request, version).await?;
        Ok(())
    }
}

/// Committed offsets of `group` (all topics when `topics` is `None`). Partitions without a
/// committed offset are left out.
pub async fn fetch_offsets(
    client: &mut Client,
    group: &str,
    topics: Option<&BTreeMap<String, Vec<i32>>>,
) -> Result<Offsets> {
    let mut request = OffsetFetchRequest::default();
    request.group_id = group_id(group);
    request.topics = topics.map(|ts| {
        ts.iter()
            .map(|(t, ps)| {
                let mut rt = OffsetFetchRequestTopic::default();
                rt.name = topic_name(t);
                rt.partition_indexes = ps.clone();
                rt
            })
            .collect()
    });
    let (response, _) = client.coordinator(group).await?.send(&request).await?;
    if response.error_code != 0 {
        return Err(ClientError::broker(
            format!("fetch offsets of group {group}"),
            response.error_code,
            None,
        ));
    }
    let mut out = Offsets::new();
    for t in response.topics {
        for p in t.partitions {
            if p.error_code == 0 && p.committed_offset >= 0 {
                out.insert(
                    (t.name.0.to_string(), p.partition_index),
                    p.committed_offset,
                );
            }
        }
    }
    Ok(out)
}

/// Commits `offsets` for `group`. `generation` -1 and an empty member id commit as an admin
/// (allowed only while the group has no members).
pub async fn commit_offsets(
    client: &mut Client,
    group: &str,
    generation: i32,
    member_id: &str,
    offsets: &Offsets,
) -> Result<()> {
    if offsets.is_empty() {
        return Ok(());
    }
    let mut by_topic: BTreeMap<&str, Vec<OffsetCommitRequestPartition>> = BTreeMap::new();
    for ((t, p), o) in offsets {
        let mut cp = OffsetCommitRequestPartition::default();
        cp.partition_index = *p;
        cp.committed_offset = *o;
        cp.committed_leader_epoch = -1;
        cp.committed_metadata = Some(str_bytes(""));
        by_topic.entry(t.as_str()).or_default().push(cp);
    }
    let mut request = OffsetCommitRequest::default();
    request.group_id = group_id(group);
    request.generation_id_or_member_epoch = generation;
    request.member_id = str_bytes(member_id);
    request.retention_time_ms = -1;
    request.topics = by_topic
        .into_iter()
        .map(|(t, ps)| {
            let mut rt = OffsetCommitRequestTopic::default();
            rt.name = topic_name(t);
            rt.partitions = ps;
            rt
        })
        .collect();
    let (response, _) = client.coordinator(group).await?.send(&request).await?;
    for t in response.topics {
        for p in t.partitions {
            if p.error_code != 0 {
                return Err(ClientError::broker(
                    format!(
                        "commit offset of group {group} for {}/{}",
                        t.name.0, p.partition_index
                    ),
                    p.error_code,
                    None,
                ));
            }
        }
    }
    Ok(())
}
