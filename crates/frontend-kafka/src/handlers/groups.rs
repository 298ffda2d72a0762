//! JoinGroup, SyncGroup, Heartbeat, LeaveGroup, ListGroups, DescribeGroups, DeleteGroups.

use kafka_coord::group::{GroupError, JoinRequest, LeavingMember, ProtocolOffer, SyncRequest};
use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::{
    DeleteGroupsRequest, DeleteGroupsResponse, DescribeGroupsRequest, DescribeGroupsResponse,
    GroupId, HeartbeatRequest, HeartbeatResponse, JoinGroupRequest, JoinGroupResponse,
    LeaveGroupRequest, LeaveGroupResponse, ListGroupsRequest, ListGroupsResponse, SyncGroupRequest,
    SyncGroupResponse,
};

use crate::context::{Ctx, s};
use crate::errors::{NONE, code_name, group_code};

/// A parked JoinGroup/SyncGroup gives up when the server shuts down, so connections can
/// close promptly (the client retries against the restarted broker).
async fn until_shutdown<T>(
    ctx: &Ctx<'_>,
    fut: impl std::future::Future<Output = Result<T, GroupError>>,
) -> Result<T, GroupError> {
    let mut shutdown = ctx.shutdown.clone();
    if *shutdown.borrow() {
        return Err(GroupError::CoordinatorNotAvailable);
    }
    tokio::select! {
        r = fut => r,
        _ = shutdown.changed() => Err(GroupError::CoordinatorNotAvailable),
    }
}

fn opt(v: &Option<kafka_protocol::protocol::StrBytes>) -> Option<String> {
    v.as_ref().map(|x| x.to_string())
}

pub async fn join(ctx: &Ctx<'_>, req: JoinGroupRequest) -> JoinGroupResponse {
    let domain = JoinRequest {
        group_id: req.group_id.0.to_string(),
        member_id: req.member_id.to_string(),
        group_instance_id: opt(&req.group_instance_id),
        client_id: ctx.client_id.to_string(),
        client_host: format!("/{}", ctx.peer.ip()),
        session_timeout_ms: req.session_timeout_ms,
        rebalance_timeout_ms: if ctx.version >= 1 {
            req.rebalance_timeout_ms
        } else {
            req.session_timeout_ms
        },
        protocol_type: req.protocol_type.to_string(),
        protocols: req
            .protocols
            .iter()
            .map(|p| ProtocolOffer {
                name: p.name.to_string(),
                metadata: p.metadata.clone(),
            })
            .collect(),
        require_known_member_id: ctx.version >= 4,
    };
    let legacy = ctx.version < 7;
    let base = JoinGroupResponse::default().with_generation_id(-1);
    match until_shutdown(ctx, ctx.coord.join_group(domain)).await {
        Ok(o) => JoinGroupResponse::default()
            .with_error_code(NONE)
            .with_generation_id(o.generation_id)
            .with_protocol_type(if legacy { None } else { o.protocol_type.map(s) })
            .with_protocol_name(match (o.protocol_name, legacy) {
                (Some(n), _) => Some(s(n)),
                (None, true) => Some(s("")),
                (None, false) => None,
            })
            .with_leader(s(o.leader_id))
            .with_member_id(s(o.member_id))
            .with_members(
                o.members
                    .into_iter()
                    .map(|m| {
                        JoinGroupResponseMember::default()
                            .with_member_id(s(m.member_id))
                            .with_group_instance_id(if ctx.version >= 5 {
                                m.group_instance_id.map(s)
                            } else {
                                None
                            })
                            .with_metadata(m.metadata)
                    })
                    .collect(),
            ),
        Err(e) => {
            ctx.broker.metrics().observe_error(
                crate::PROTOCOL,
                "JoinGroup",
                &code_name(group_code(&e)),
            );
            let member_id = match &e {
                GroupError::MemberIdRequired(id) => s(id.clone()),
                _ => req.member_id.clone(),
            };
            base.with_error_code(group_code(&e))
                .with_member_id(member_id)
                .with_protocol_name(if legacy { Some(s("")) } else { None })
        }
    }
}

pub async fn sync(ctx: &Ctx<'_>, req: SyncGroupRequest) -> SyncGroupResponse {
    let domain = SyncRequest {
        group_id: req.group_id.0.to_string(),
        generation_id: req.generation_id,
        member_id: req.member_id.to_string(),
        group_instance_id: opt(&req.group_instance_id),
        protocol_type: opt(&req.protocol_type),
        protocol_name: opt(&req.protocol_name),
        assignments: req
            .assignments
            .iter()
            .map(|a| (a.member_id.to_string(), a.assignment.clone()))
            .collect(),
    };
    match until_shutdown(ctx, ctx.coord.sync_group(domain)).await {
        Ok(o) => {
            let r = SyncGroupResponse::default()
                .with_error_code(NONE)
                .with_assignment(o.assignment);
            if ctx.version >= 5 {
                r.with_protocol_type(o.protocol_type.map(s))
                    .with_protocol_name(o.protocol_name.map(s))
            } else {
                r
            }
        }
        Err(e) => {
            ctx.broker.metrics().observe_error(
                crate::PROTOCOL,
                "SyncGroup",
                &code_name(group_code(&e)),
            );
            SyncGroupResponse::default().with_error_code(group_code(&e))
        }
    }
}

pub fn heartbeat(ctx: &Ctx<'_>, req: HeartbeatRequest) -> HeartbeatResponse {
    let r = ctx.coord.heartbeat(
        &req.group_id.0,
        &req.member_id,
        req.group_instance_id.as_deref(),
        req.generation_id,
    );
    HeartbeatResponse::default().with_error_code(match r {
        Ok(()) => NONE,
        Err(e) => group_code(&e),
    })
}

pub fn leave(ctx: &Ctx<'_>, req: LeaveGroupRequest) -> LeaveGroupResponse {
    let members: Vec<LeavingMember> = if ctx.version >= 3 {
        req.members
            .iter()
            .map(|m| LeavingMember {
                member_id: m.member_id.to_string(),
                group_instance_id: opt(&m.group_instance_id),
            })
            .collect()
    } else {
        vec![LeavingMember {
            member_id: req.member_id.to_string(),
            group_instance_id: None,
        }]
    };
    let results = ctx.coord.leave_group(&req.group_id.0, &members);
    if ctx.version < 3 {
        let code = results
            .first()
            .map_or(NONE, |r| r.as_ref().map_or_else(group_code, |_| NONE));
        return LeaveGroupResponse::default().with_error_code(code);
    }
    let responses = members
        .into_iter()
        .zip(results)
        .map(|(m, r)| {
            MemberResponse::default()
                .with_member_id(s(m.member_id))
                .with_group_instance_id(m.group_instance_id.map(s))
                .with_error_code(r.map_or_else(|e| group_code(&e), |_| NONE))
        })
        .collect();
    LeaveGroupResponse::default()
        .with_error_code(NONE)
        .with_members(responses)
}

pub fn list(ctx: &Ctx<'_>, req: ListGroupsRequest) -> ListGroupsResponse {
    let states: Vec<String> = req.states_filter.iter().map(|x| x.to_lowercase()).collect();
    let types: Vec<String> = req.types_filter.iter().map(|x| x.to_lowercase()).collect();
    let groups = ctx
        .coord
        .list_groups()
        .into_iter()
        .filter(|g| states.is_empty() || states.contains(&g.state.as_str().to_lowercase()))
        .filter(|_| types.is_empty() || types.iter().any(|t| t == "classic"))
        .map(|g| {
            ListedGroup::default()
                .with_group_id(GroupId(s(g.group_id)))
                .with_protocol_type(s(g.protocol_type))
                .with_group_state(if ctx.version >= 4 {
                    s(g.state.as_str())
                } else {
                    s("")
                })
                .with_group_type(if ctx.version >= 5 {
                    s("classic")
                } else {
                    s("")
                })
        })
        .collect();
    ListGroupsResponse::default()
        .with_error_code(NONE)
        .with_groups(groups)
}

pub fn describe(ctx: &Ctx<'_>, req: DescribeGroupsRequest) -> DescribeGroupsResponse {
    let groups = req
        .groups
        .into_iter()
        .map(|g| {
            let d = ctx.coord.describe_group(&g.0);
            DescribedGroup::default()
                .with_error_code(NONE)
                .with_group_id(g)
                .with_group_state(s(d.state.as_str()))
                .with_protocol_type(s(d.protocol_type))
                .with_protocol_data(s(d.protocol_name))
                .with_authorized_operations(i32::MIN)
                .with_members(
                    d.members
                        .into_iter()
                        .map(|m| {
                            DescribedGroupMember::default()
                                .with_member_id(s(m.member_id))
                                .with_group_instance_id(if ctx.version >= 4 {
                                    m.group_instance_id.map(s)
                                } else {
                                    None
                                })
                                .with_client_id(s(m.client_id))
                                .with_client_host(s(m.client_host))
                                .with_member_metadata(m.metadata)
                                .with_member_assignment(m.assignment)
                        })
                        .collect(),
                )
        })
        .collect();
    DescribeGroupsResponse::default().with_groups(groups)
}

pub fn delete(ctx: &Ctx<'_>, req: DeleteGroupsRequest) -> DeleteGroupsResponse {
    let results = req
        .groups_names
        .into_iter()
        .map(|g| {
            let code = ctx
                .coord
                .delete_group(&g.0)
                .map_or_else(|e| group_code(&e), |_| NONE);
            DeletableGroupResult::default()
                .with_group_id(g)
                .with_error_code(code)
        })
        .collect();
    DeleteGroupsResponse::default().with_results(results)
}
