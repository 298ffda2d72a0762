//! KIP-932 share groups on the wire: ShareGroupHeartbeat (membership, `kafka_coord`'s
//! `share_group.rs`), ShareFetch (share sessions; acknowledgements, then records acquired
//! from the broker's queue engine, long-polled) and ShareAcknowledge.

use std::collections::BTreeMap;
use std::time::Duration;

use broker::queue::AckType;
use kafka_coord::share_group::ShareError;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::share_acknowledge_response as ack_resp;
use kafka_protocol::messages::share_fetch_request::AcknowledgementBatch;
use kafka_protocol::messages::share_fetch_response as fetch_resp;
use kafka_protocol::messages::share_group_describe_response as describe_resp;
use kafka_protocol::messages::share_group_heartbeat_response as hb;
use kafka_protocol::messages::{
    BrokerId, ShareAcknowledgeRequest, ShareAcknowledgeResponse, ShareFetchRequest,
    ShareFetchResponse, ShareGroupDescribeRequest, ShareGroupDescribeResponse,
    ShareGroupHeartbeatRequest, ShareGroupHeartbeatResponse,
};

use crate::context::{Ctx, s, uuid};
use crate::errors::error_code;

/// One acknowledgement batch: first offset, last offset, types (one, or one per offset).
type AckBatch = (i64, i64, Vec<i8>);

fn share_code(e: &ShareError) -> i16 {
    match e {
        ShareError::InvalidRequest(_) => ResponseError::InvalidRequest,
        ShareError::UnknownMemberId => ResponseError::UnknownMemberId,
        ShareError::FencedMemberEpoch => ResponseError::FencedMemberEpoch,
        ShareError::GroupMaxSizeReached => ResponseError::GroupMaxSizeReached,
        ShareError::GroupIdNotFound => ResponseError::GroupIdNotFound,
        ShareError::InvalidShareSessionEpoch => ResponseError::InvalidShareSessionEpoch,
        ShareError::ShareSessionNotFound => ResponseError::ShareSessionNotFound,
    }
    .code()
}

pub async fn heartbeat(
    ctx: &Ctx<'_>,
    r: ShareGroupHeartbeatRequest,
) -> ShareGroupHeartbeatResponse {
    let subscribed = r
        .subscribed_topic_names
        .map(|ts| ts.iter().map(|t| t.to_string()).collect());
    match ctx
        .coord
        .share_heartbeat(
            &r.group_id,
            &r.member_id,
            r.member_epoch,
            subscribed,
            ctx.client_id,
        )
        .await
    {
        Ok(h) => ShareGroupHeartbeatResponse::default()
            .with_member_id(Some(s(h.member_id)))
            .with_member_epoch(h.member_epoch)
            .with_heartbeat_interval_ms(h.heartbeat_interval_ms)
            .with_assignment(h.assignment.map(|a| {
                hb::Assignment::default().with_topic_partitions(
                    a.into_iter()
                        .map(|(t, ps)| {
                            hb::TopicPartitions::default()
                                .with_topic_id(uuid(t))
                                .with_partitions(ps.into_iter().collect())
                        })
                        .collect(),
                )
            })),
        Err(e) => ShareGroupHeartbeatResponse::default().with_error_code(share_code(&e)),
    }
}

/// Most offsets one request may acknowledge in one partition (the client's ranges are
/// expanded offset by offset).
const MAX_ACK_OFFSETS: i64 = 100_000;

/// (offset, type) of every acknowledged offset: one type for the whole batch, or one per
/// offset. At most [`MAX_ACK_OFFSETS`] in all, checked before anything is expanded.
fn expand(batches: &[AckBatch]) -> Result<Vec<(i64, AckType)>, ResponseError> {
    let mut total = 0i64;
    for (first, last, _) in batches {
        if last < first || last - first >= MAX_ACK_OFFSETS {
            return Err(ResponseError::InvalidRequest);
        }
        total += last - first + 1;
        if total > MAX_ACK_OFFSETS {
            return Err(ResponseError::InvalidRequest);
        }
    }
    let mut out = Vec::with_capacity(total as usize);
    for (first, last, types) in batches {
        let n = (last - first + 1) as usize;
        for (k, o) in (*first..=*last).enumerate() {
            let code = match types.len() {
                1 => types[0],
                len if len == n => types[k],
                _ => return Err(ResponseError::InvalidRequest),
            };
            out.push((
                o,
                AckType::from_code(code).ok_or(ResponseError::InvalidRequest)?,
            ));
        }
    }
    Ok(out)
}

/// Applies one partition's acknowledgements; the error code to report (0: none).
async fn acknowledge(
    ctx: &Ctx<'_>,
    group: &str,
    member: u64,
    topic: &str,
    partition: i32,
    batches: &[AckBatch],
) -> i16 {
    if batches.is_empty() {
        return 0;
    }
    let acks = match expand(batches) {
        Ok(a) => a,
        Err(e) => return e.code(),
    };
    match ctx
        .broker
        .share_acknowledge(group, topic, partition, member, &acks)
        .await
    {
        Ok(()) => 0,
        Err(e) => error_code(&e),
    }
}

fn leader(ctx: &Ctx<'_>) -> fetch_resp::LeaderIdAndEpoch {
    fetch_resp::LeaderIdAndEpoch::default()
        .with_leader_id(ctx.broker.node_id())
        .with_leader_epoch(0)
}

#[allow(clippy::too_many_lines)]
pub async fn fetch(ctx: &Ctx<'_>, r: ShareFetchRequest) -> ShareFetchResponse {
    let (lock_ms, limit, earliest) = ctx.coord.share_settings();
    let base = ShareFetchResponse::default().with_acquisition_lock_timeout_ms(lock_ms);
    let (Some(group), Some(member_id)) = (r.group_id.clone(), r.member_id.clone()) else {
        return base.with_error_code(ResponseError::InvalidRequest.code());
    };
    let member = kafka_coord::share_member_key(&member_id);
    let mut add = Vec::new();
    let mut acks: BTreeMap<(u128, i32), Vec<AckBatch>> = BTreeMap::new();
    for t in &r.topics {
        for p in &t.partitions {
            let key = (t.topic_id.as_u128(), p.partition_index);
            add.push(key);
            let b: Vec<AckBatch> = p
                .acknowledgement_batches
                .iter()
                .map(|b: &AcknowledgementBatch| {
                    (b.first_offset, b.last_offset, b.acknowledge_types.clone())
                })
                .collect();
            acks.entry(key).or_default().extend(b);
        }
    }
    let forget: Vec<(u128, i32)> = r
        .forgotten_topics_data
        .iter()
        .flat_map(|t| t.partitions.iter().map(move |p| (t.topic_id.as_u128(), *p)))
        .collect();
    let session = match ctx.coord.share_session(
        &group,
        &member_id,
        r.share_session_epoch,
        (&add, &forget),
        ctx.config.max_partitions_per_request,
    ) {
        Ok(s) => s,
        Err(e) => return base.with_error_code(share_code(&e)),
    };
    // Acknowledgements first, then records for every session partition.
    let mut ack_codes: BTreeMap<(u128, i32), i16> = BTreeMap::new();
    for (key, batches) in &acks {
        let Some(topic) = ctx.broker.topic_name_by_id(key.0) else {
            ack_codes.insert(*key, ResponseError::UnknownTopicId.code());
            continue;
        };
        let code = acknowledge(ctx, &group, member, &topic, key.1, batches).await;
        ack_codes.insert(*key, code);
    }
    let closing = r.share_session_epoch == -1;
    let max_records = if r.max_records > 0 {
        r.max_records as u32
    } else {
        500
    };
    let wait_ms = (r.max_wait_ms.max(0) as u64).min(ctx.config.max_fetch_wait_ms);
    let deadline = tokio::time::Instant::now() + Duration::from_millis(wait_ms);
    let mut appends = ctx.broker.subscribe_appends();
    let mut parts: BTreeMap<(u128, i32), fetch_resp::PartitionData> = BTreeMap::new();
    loop {
        appends.borrow_and_update();
        let mut left = max_records;
        let mut got_any = false;
        for key in session.iter().filter(|_| !closing) {
            let entry = parts.entry(*key).or_insert_with(|| {
                fetch_resp::PartitionData::default()
                    .with_partition_index(key.1)
                    .with_current_leader(leader(ctx))
                    .with_acknowledge_error_code(ack_codes.get(key).copied().unwrap_or(0))
            });
            if left == 0 || !entry.acquired_records.is_empty() {
                continue;
            }
            let Some(topic) = ctx.broker.topic_name_by_id(key.0) else {
                entry.error_code = ResponseError::UnknownTopicId.code();
                continue;
            };
            match ctx
                .broker
                .share_acquire(
                    &group,
                    &topic,
                    key.1,
                    member,
                    left,
                    (i64::from(lock_ms), limit, earliest),
                )
                .await
            {
                Ok(a) if !a.acquired.is_empty() => {
                    got_any = true;
                    let n: i64 = a.acquired.iter().map(|(f, l, _)| l - f + 1).sum();
                    left = left.saturating_sub(n as u32);
                    entry.records = Some(a.records);
                    entry.acquired_records = a
                        .acquired
                        .into_iter()
                        .map(|(f, l, c)| {
                            fetch_resp::AcquiredRecords::default()
                                .with_first_offset(f)
                                .with_last_offset(l)
                                .with_delivery_count(c.min(i16::MAX as u32) as i16)
                        })
                        .collect();
                }
                Ok(_) => {}
                Err(e) => entry.error_code = error_code(&e),
            }
        }
        if got_any || closing || tokio::time::Instant::now() >= deadline || *ctx.shutdown.borrow() {
            break;
        }
        tokio::select! {
            _ = appends.changed() => {}
            _ = tokio::time::sleep_until(deadline) => {}
        }
    }
    for (key, code) in &ack_codes {
        parts.entry(*key).or_insert_with(|| {
            fetch_resp::PartitionData::default()
                .with_partition_index(key.1)
                .with_current_leader(leader(ctx))
                .with_acknowledge_error_code(*code)
        });
    }
    let mut by_topic: BTreeMap<u128, Vec<fetch_resp::PartitionData>> = BTreeMap::new();
    for ((t, _), p) in parts {
        by_topic.entry(t).or_default().push(p);
    }
    base.with_responses(
        by_topic
            .into_iter()
            .map(|(t, ps)| {
                fetch_resp::ShareFetchableTopicResponse::default()
                    .with_topic_id(uuid(t))
                    .with_partitions(ps)
            })
            .collect(),
    )
    .with_node_endpoints(vec![
        fetch_resp::NodeEndpoint::default()
            .with_node_id(BrokerId(ctx.broker.node_id()))
            .with_host(s(ctx.config.advertised_host.clone()))
            .with_port(i32::from(ctx.config.advertised_port)),
    ])
}

pub async fn acknowledge_request(
    ctx: &Ctx<'_>,
    r: ShareAcknowledgeRequest,
) -> ShareAcknowledgeResponse {
    let (Some(group), Some(member_id)) = (r.group_id.clone(), r.member_id.clone()) else {
        return ShareAcknowledgeResponse::default()
            .with_error_code(ResponseError::InvalidRequest.code());
    };
    let member = kafka_coord::share_member_key(&member_id);
    if let Err(e) = ctx.coord.share_session(
        &group,
        &member_id,
        r.share_session_epoch,
        (&[], &[]),
        ctx.config.max_partitions_per_request,
    ) {
        return ShareAcknowledgeResponse::default().with_error_code(share_code(&e));
    }
    let mut topics = Vec::new();
    for t in &r.topics {
        let mut parts = Vec::new();
        for p in &t.partitions {
            let batches: Vec<AckBatch> = p
                .acknowledgement_batches
                .iter()
                .map(|b| (b.first_offset, b.last_offset, b.acknowledge_types.clone()))
                .collect();
            let code = match ctx.broker.topic_name_by_id(t.topic_id.as_u128()) {
                Some(topic) => {
                    acknowledge(ctx, &group, member, &topic, p.partition_index, &batches).await
                }
                None => ResponseError::UnknownTopicId.code(),
            };
            parts.push(
                ack_resp::PartitionData::default()
                    .with_partition_index(p.partition_index)
                    .with_error_code(code)
                    .with_current_leader(
                        ack_resp::LeaderIdAndEpoch::default()
                            .with_leader_id(ctx.broker.node_id())
                            .with_leader_epoch(0),
                    ),
            );
        }
        topics.push(
            ack_resp::ShareAcknowledgeTopicResponse::default()
                .with_topic_id(t.topic_id)
                .with_partitions(parts),
        );
    }
    ShareAcknowledgeResponse::default().with_responses(topics)
}

/// ShareGroupDescribe: each group's epoch and members with their assignments (every
/// partition of the topics they subscribe to).
pub fn describe(ctx: &Ctx<'_>, r: ShareGroupDescribeRequest) -> ShareGroupDescribeResponse {
    let topics: BTreeMap<String, (u128, u32)> = ctx
        .broker
        .list_topics()
        .into_iter()
        .map(|t| (t.name, (t.topic_id, t.partitions)))
        .collect();
    let groups = r
        .group_ids
        .into_iter()
        .map(|id| {
            let base = describe_resp::DescribedGroup::default().with_group_id(id.clone());
            let Some((epoch, members)) = ctx.coord.describe_share_group(&id) else {
                return base
                    .with_error_code(ResponseError::GroupIdNotFound.code())
                    .with_error_message(Some(s(format!("no share group {}", &*id))));
            };
            let state = if members.is_empty() {
                "Empty"
            } else {
                "Stable"
            };
            let members = members
                .into_iter()
                .map(|m| {
                    let assigned = m
                        .subscribed
                        .iter()
                        .filter_map(|t| topics.get(t).map(|(tid, n)| (t, *tid, *n)))
                        .map(|(t, tid, n)| {
                            describe_resp::TopicPartitions::default()
                                .with_topic_id(uuid(tid))
                                .with_topic_name(crate::context::topic_name(t.clone()))
                                .with_partitions((0..n as i32).collect())
                        })
                        .collect();
                    describe_resp::Member::default()
                        .with_member_id(s(m.member_id))
                        .with_member_epoch(m.member_epoch)
                        .with_client_id(s(m.client_id))
                        .with_subscribed_topic_names(
                            m.subscribed
                                .into_iter()
                                .map(crate::context::topic_name)
                                .collect(),
                        )
                        .with_assignment(
                            describe_resp::Assignment::default().with_topic_partitions(assigned),
                        )
                })
                .collect();
            base.with_group_state(s(state))
                .with_group_epoch(epoch)
                .with_assignment_epoch(epoch)
                .with_assignor_name(s("simple"))
                .with_members(members)
        })
        .collect();
    ShareGroupDescribeResponse::default().with_groups(groups)
}
