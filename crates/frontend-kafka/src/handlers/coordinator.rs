//! FindCoordinator, DescribeCluster and InitProducerId: this node coordinates everything.

use kafka_protocol::ResponseError;
use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::{
    BrokerId, DescribeClusterRequest, DescribeClusterResponse, FindCoordinatorRequest,
    FindCoordinatorResponse, InitProducerIdRequest, InitProducerIdResponse, ProducerId,
};

use crate::context::{Ctx, s};
use crate::errors::{NONE, error_code};

/// FindCoordinator key types.
const KEY_GROUP: i8 = 0;

fn key_error(key_type: i8) -> i16 {
    if key_type == KEY_GROUP || key_type == super::txn::KEY_TRANSACTION {
        NONE
    } else {
        // Share groups are not implemented.
        ResponseError::CoordinatorNotAvailable.code()
    }
}

pub fn find_coordinator(ctx: &Ctx<'_>, req: FindCoordinatorRequest) -> FindCoordinatorResponse {
    let node = BrokerId(ctx.broker.node_id());
    let host = s(ctx.config.advertised_host.clone());
    let port = i32::from(ctx.config.advertised_port);
    if ctx.version >= 4 {
        let coordinators = req
            .coordinator_keys
            .into_iter()
            .map(|key| {
                let code = key_error(req.key_type);
                let c = Coordinator::default().with_key(key).with_error_code(code);
                if code == NONE {
                    c.with_node_id(node).with_host(host.clone()).with_port(port)
                } else {
                    c.with_node_id(BrokerId(-1)).with_port(-1)
                }
            })
            .collect();
        return FindCoordinatorResponse::default().with_coordinators(coordinators);
    }
    let code = key_error(req.key_type);
    let r = FindCoordinatorResponse::default().with_error_code(code);
    if code == NONE {
        r.with_node_id(node).with_host(host).with_port(port)
    } else {
        r.with_node_id(BrokerId(-1)).with_port(-1)
    }
}

pub fn describe_cluster(ctx: &Ctx<'_>, _req: DescribeClusterRequest) -> DescribeClusterResponse {
    let node = BrokerId(ctx.broker.node_id());
    DescribeClusterResponse::default()
        .with_error_code(NONE)
        .with_endpoint_type(1)
        .with_cluster_id(s(ctx.broker.cluster_id()))
        .with_controller_id(node)
        .with_brokers(vec![
            DescribeClusterBroker::default()
                .with_broker_id(node)
                .with_host(s(ctx.config.advertised_host.clone()))
                .with_port(i32::from(ctx.config.advertised_port)),
        ])
        .with_cluster_authorized_operations(i32::MIN)
}

/// Idempotent producers get a fresh id (epoch 0), or their epoch bumped when they send
/// their current id (v3+). v0-v2 carry no id/epoch: treated as -1. A transactional id
/// goes to the transaction coordinator (same id, bumped epoch, older producer fenced).
pub async fn init_producer_id(ctx: &Ctx<'_>, req: InitProducerIdRequest) -> InitProducerIdResponse {
    let base = InitProducerIdResponse::default()
        .with_producer_id(ProducerId(-1))
        .with_producer_epoch(-1);
    let (pid, epoch) = if ctx.version >= 3 {
        (req.producer_id.0, req.producer_epoch)
    } else {
        (-1, -1)
    };
    if let Some(tid) = req.transactional_id.as_ref().filter(|t| !t.0.is_empty()) {
        let expected = (pid >= 0).then_some((pid, epoch));
        return match ctx
            .coord
            .init_transactional_producer(&tid.0, req.transaction_timeout_ms, expected)
            .await
        {
            Ok((id, epoch)) => base
                .with_error_code(NONE)
                .with_producer_id(ProducerId(id))
                .with_producer_epoch(epoch),
            Err(e) => base.with_error_code(error_code(&e)),
        };
    }
    if pid >= 0 && (0..i16::MAX).contains(&epoch) {
        return base
            .with_error_code(NONE)
            .with_producer_id(ProducerId(pid))
            .with_producer_epoch(epoch + 1);
    }
    match ctx.coord.init_producer_id() {
        Ok((id, epoch)) => base
            .with_error_code(NONE)
            .with_producer_id(ProducerId(id))
            .with_producer_epoch(epoch),
        Err(e) => base.with_error_code(error_code(&e)),
    }
}
