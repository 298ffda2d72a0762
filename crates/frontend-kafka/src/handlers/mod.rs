//! One module per API family; `dispatch` routes a decoded request to its handler.

pub mod api_versions;
mod configs;
mod consumer_groups;
mod coordinator;
mod fetch;
mod groups;
mod list_offsets;
mod metadata;
mod offsets;
mod partition_limit;
mod produce;
mod share_groups;
mod topics;
mod txn;

use std::future::Future;
use std::pin::Pin;

use kafka_protocol::messages::{RequestKind, ResponseKind};

use crate::context::Ctx;

/// What a handler answers.
pub enum Reply {
    /// No response at all (Produce with acks=0).
    Silent,
    /// No response, then close the connection (a failed acks=0 Produce, as Kafka does).
    SilentThenClose,
    Body(ResponseKind),
    /// A Fetch response whose records are spliced in at encode time, uncopied.
    Fetch(fetch::FetchReply),
    /// A response that is ready later (a Produce waiting for its fsync). Its effects are
    /// done; the connection reads the next requests meanwhile and keeps responses in order.
    Deferred(Deferred),
}

/// The rest of a [`Reply::Deferred`] response.
pub type Deferred = Pin<Box<dyn Future<Output = ResponseKind> + Send>>;

/// Handles one request. `Err(reason)`: a request kind this front door does not implement
/// (never advertised).
pub async fn dispatch(ctx: &Ctx<'_>, req: RequestKind) -> Result<Reply, &'static str> {
    use RequestKind as Q;
    use ResponseKind as R;
    Ok(Reply::Body(match req {
        Q::ApiVersions(_) => R::ApiVersions(api_versions::response(0)),
        Q::Metadata(r) => R::Metadata(metadata::handle(ctx, r)),
        Q::Produce(r) => {
            return Ok(match produce::handle(ctx, r).await {
                produce::ProduceReply::Response(p) => Reply::Body(R::Produce(p)),
                produce::ProduceReply::Pending(p) => {
                    Reply::Deferred(Box::pin(async move { R::Produce(p.await) }))
                }
                produce::ProduceReply::NoResponse { failed: false } => Reply::Silent,
                produce::ProduceReply::NoResponse { failed: true } => Reply::SilentThenClose,
            });
        }
        Q::Fetch(r) => return Ok(Reply::Fetch(fetch::handle(ctx, r).await)),
        Q::ListOffsets(r) => R::ListOffsets(list_offsets::handle(ctx, r)),
        Q::CreateTopics(r) => R::CreateTopics(topics::create_topics(ctx, r)),
        Q::DeleteTopics(r) => R::DeleteTopics(topics::delete_topics(ctx, r)),
        Q::CreatePartitions(r) => R::CreatePartitions(topics::create_partitions(ctx, r)),
        Q::DeleteRecords(r) => R::DeleteRecords(topics::delete_records(ctx, r)),
        Q::DescribeConfigs(r) => R::DescribeConfigs(configs::describe(ctx, r)),
        Q::AlterConfigs(r) => R::AlterConfigs(configs::alter(ctx, r)),
        Q::IncrementalAlterConfigs(r) => {
            R::IncrementalAlterConfigs(configs::incremental_alter(ctx, r))
        }
        Q::FindCoordinator(r) => R::FindCoordinator(coordinator::find_coordinator(ctx, r)),
        Q::DescribeCluster(r) => R::DescribeCluster(coordinator::describe_cluster(ctx, r)),
        Q::InitProducerId(r) => R::InitProducerId(coordinator::init_producer_id(ctx, r).await),
        Q::JoinGroup(r) => R::JoinGroup(groups::join(ctx, r).await),
        Q::SyncGroup(r) => R::SyncGroup(groups::sync(ctx, r).await),
        Q::Heartbeat(r) => R::Heartbeat(groups::heartbeat(ctx, r)),
        Q::LeaveGroup(r) => R::LeaveGroup(groups::leave(ctx, r)),
        Q::ListGroups(r) => R::ListGroups(groups::list(ctx, r)),
        Q::DescribeGroups(r) => R::DescribeGroups(groups::describe(ctx, r)),
        Q::DeleteGroups(r) => R::DeleteGroups(groups::delete(ctx, r)),
        Q::OffsetCommit(r) => R::OffsetCommit(offsets::commit(ctx, r)),
        Q::OffsetFetch(r) => R::OffsetFetch(txn::offset_fetch(ctx, r)),
        Q::OffsetDelete(r) => R::OffsetDelete(offsets::delete(ctx, r)),
        Q::AddPartitionsToTxn(r) => R::AddPartitionsToTxn(txn::add_partitions(ctx, r)),
        Q::AddOffsetsToTxn(r) => R::AddOffsetsToTxn(txn::add_offsets(ctx, r)),
        Q::TxnOffsetCommit(r) => R::TxnOffsetCommit(txn::txn_offset_commit(ctx, r)),
        Q::EndTxn(r) => R::EndTxn(txn::end_txn(ctx, r).await),
        Q::ListTransactions(r) => R::ListTransactions(txn::list_transactions(ctx, r)),
        Q::DescribeTransactions(r) => R::DescribeTransactions(txn::describe_transactions(ctx, r)),
        Q::DescribeProducers(r) => R::DescribeProducers(txn::describe_producers(ctx, r)),
        Q::ConsumerGroupHeartbeat(r) => {
            R::ConsumerGroupHeartbeat(consumer_groups::heartbeat(ctx, r))
        }
        Q::ConsumerGroupDescribe(r) => R::ConsumerGroupDescribe(consumer_groups::describe(ctx, r)),
        Q::ShareGroupHeartbeat(r) => R::ShareGroupHeartbeat(share_groups::heartbeat(ctx, r).await),
        Q::ShareGroupDescribe(r) => R::ShareGroupDescribe(share_groups::describe(ctx, r)),
        Q::ShareFetch(r) => R::ShareFetch(share_groups::fetch(ctx, r).await),
        Q::ShareAcknowledge(r) => {
            R::ShareAcknowledge(share_groups::acknowledge_request(ctx, r).await)
        }
        Q::GetTelemetrySubscriptions(r) => {
            R::GetTelemetrySubscriptions(ctx.telemetry.subscriptions(&r, ctx.broker.now_ms()))
        }
        Q::PushTelemetry(r) => {
            R::PushTelemetry(ctx.telemetry.push(&r, ctx.client_id, ctx.broker.now_ms()))
        }
        _ => return Err("not implemented"),
    }))
}
