//! KIP-848 consumer groups on the wire: ConsumerGroupHeartbeat and ConsumerGroupDescribe
//! (the protocol itself is `kafka_coord::consumer_group`).

use kafka_coord::consumer_group::{Assignment, CgError, HeartbeatRequest};
use kafka_protocol::ResponseError;
use kafka_protocol::messages::consumer_group_describe_response as describe;
use kafka_protocol::messages::consumer_group_heartbeat_response as hb;
use kafka_protocol::messages::{
    ConsumerGroupDescribeRequest, ConsumerGroupDescribeResponse, ConsumerGroupHeartbeatRequest,
    ConsumerGroupHeartbeatResponse,
};

use crate::context::{Ctx, s, topic_name, uuid};

fn code(e: &CgError) -> (i16, Option<String>) {
    let (err, msg) = match e {
        CgError::InvalidRequest(why) => (ResponseError::InvalidRequest, Some((*why).to_string())),
        CgError::UnknownMemberId => (ResponseError::UnknownMemberId, None),
        CgError::FencedMemberEpoch => (ResponseError::FencedMemberEpoch, None),
        CgError::UnsupportedAssignor => (
            ResponseError::UnsupportedAssignor,
            Some("the assignors are uniform and range".to_string()),
        ),
        CgError::GroupMaxSizeReached => (ResponseError::GroupMaxSizeReached, None),
        CgError::GroupIdNotFound => (
            ResponseError::GroupIdNotFound,
            Some("a classic group with members uses this group id".to_string()),
        ),
        CgError::UnreleasedInstanceId => (ResponseError::UnreleasedInstanceId, None),
    };
    (err.code(), msg)
}

pub fn heartbeat(
    ctx: &Ctx<'_>,
    r: ConsumerGroupHeartbeatRequest,
) -> ConsumerGroupHeartbeatResponse {
    let owned = r.topic_partitions.map(|tps| {
        let mut a = Assignment::new();
        for tp in tps {
            a.entry(tp.topic_id.as_u128())
                .or_default()
                .extend(tp.partitions);
        }
        a
    });
    let req = HeartbeatRequest {
        group_id: r.group_id.to_string(),
        member_id: r.member_id.to_string(),
        member_epoch: r.member_epoch,
        instance_id: r.instance_id.map(|x| x.to_string()),
        rack_id: r.rack_id.map(|x| x.to_string()),
        rebalance_timeout_ms: r.rebalance_timeout_ms,
        subscribed_topics: r
            .subscribed_topic_names
            .map(|ts| ts.iter().map(|t| t.to_string()).collect()),
        server_assignor: r.server_assignor.map(|x| x.to_string()),
        owned,
        client_id: ctx.client_id.to_string(),
        client_host: format!("/{}", ctx.peer.ip()),
    };
    match ctx.coord.consumer_heartbeat(req) {
        Ok(resp) => ConsumerGroupHeartbeatResponse::default()
            .with_member_id(Some(s(resp.member_id)))
            .with_member_epoch(resp.member_epoch)
            .with_heartbeat_interval_ms(resp.heartbeat_interval_ms)
            .with_assignment(resp.assignment.map(|a| {
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
        Err(e) => {
            let (c, msg) = code(&e);
            ConsumerGroupHeartbeatResponse::default()
                .with_error_code(c)
                .with_error_message(msg.map(s))
        }
    }
}

fn described(ctx: &Ctx<'_>, a: &Assignment) -> describe::Assignment {
    describe::Assignment::default().with_topic_partitions(
        a.iter()
            .map(|(t, ps)| {
                describe::TopicPartitions::default()
                    .with_topic_id(uuid(*t))
                    .with_topic_name(topic_name(
                        ctx.broker.topic_name_by_id(*t).unwrap_or_default(),
                    ))
                    .with_partitions(ps.iter().copied().collect())
            })
            .collect(),
    )
}

pub fn describe(ctx: &Ctx<'_>, r: ConsumerGroupDescribeRequest) -> ConsumerGroupDescribeResponse {
    let groups = r
        .group_ids
        .into_iter()
        .map(|id| {
            let base = describe::DescribedGroup::default().with_group_id(id.clone());
            let Some(g) = ctx.coord.describe_consumer_group(&id) else {
                return base
                    .with_error_code(ResponseError::GroupIdNotFound.code())
                    .with_error_message(Some(s(format!("no consumer group {}", &*id))));
            };
            let state = g.state();
            let members = g
                .members
                .values()
                .map(|m| {
                    let target = g.target.get(&m.member_id).cloned().unwrap_or_default();
                    describe::Member::default()
                        .with_member_id(s(m.member_id.clone()))
                        .with_instance_id(m.instance_id.clone().map(s))
                        .with_rack_id(m.rack_id.clone().map(s))
                        .with_member_epoch(m.epoch)
                        .with_client_id(s(m.client_id.clone()))
                        .with_client_host(s(m.client_host.clone()))
                        .with_subscribed_topic_names(
                            m.subscribed.iter().map(|t| topic_name(t.clone())).collect(),
                        )
                        .with_assignment(described(ctx, &m.assigned))
                        .with_target_assignment(described(ctx, &target))
                })
                .collect();
            let assignor = g
                .members
                .values()
                .find_map(|m| m.assignor.clone())
                .unwrap_or_else(|| "uniform".to_string());
            base.with_group_state(s(state))
                .with_group_epoch(g.epoch)
                .with_assignment_epoch(g.target_epoch)
                .with_assignor_name(s(assignor))
                .with_members(members)
        })
        .collect::<Vec<_>>();
    ConsumerGroupDescribeResponse::default().with_groups(groups)
}
