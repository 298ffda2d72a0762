//! Transactions: AddPartitionsToTxn (v0-3, the producer's own request), AddOffsetsToTxn,
//! TxnOffsetCommit, EndTxn, and the tooling APIs ListTransactions, DescribeTransactions,
//! DescribeProducers. The coordinator lives in the broker core (`broker::txn`).

use kafka_protocol::messages::add_partitions_to_txn_response::{
    AddPartitionsToTxnPartitionResult, AddPartitionsToTxnTopicResult,
};
use kafka_protocol::messages::describe_producers_response::{
    PartitionResponse, ProducerState, TopicResponse,
};
use kafka_protocol::messages::describe_transactions_response::{
    TopicData, TransactionState as DescribedTxn,
};
use kafka_protocol::messages::list_transactions_response::TransactionState as ListedTxn;
use kafka_protocol::messages::txn_offset_commit_response::{
    TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic,
};
use kafka_protocol::messages::{
    AddOffsetsToTxnRequest, AddOffsetsToTxnResponse, AddPartitionsToTxnRequest,
    AddPartitionsToTxnResponse, DescribeProducersRequest, DescribeProducersResponse,
    DescribeTransactionsRequest, DescribeTransactionsResponse, EndTxnRequest, EndTxnResponse,
    ListTransactionsRequest, ListTransactionsResponse, OffsetFetchRequest, OffsetFetchResponse,
    ProducerId, TxnOffsetCommitRequest, TxnOffsetCommitResponse,
};

use kafka_protocol::ResponseError;

use crate::context::{Ctx, s, topic_name};
use crate::errors::{ErrorCode, NONE, code_name, error_code};

fn code_of(ctx: &Ctx<'_>, api: &'static str, r: Result<(), impl ErrorCode>) -> i16 {
    match r {
        Ok(()) => NONE,
        Err(e) => {
            let code = error_code(&e);
            ctx.broker
                .metrics()
                .observe_error(crate::PROTOCOL, api, &code_name(code));
            code
        }
    }
}

/// v0-3: one transaction per request; every partition gets the request's outcome.
pub fn add_partitions(ctx: &Ctx<'_>, req: AddPartitionsToTxnRequest) -> AddPartitionsToTxnResponse {
    let partitions: Vec<(String, i32)> = req
        .v3_and_below_topics
        .iter()
        .flat_map(|t| t.partitions.iter().map(|p| (t.name.0.to_string(), *p)))
        .collect();
    let code = code_of(
        ctx,
        "AddPartitionsToTxn",
        ctx.coord.add_partitions_to_txn(
            &req.v3_and_below_transactional_id.0,
            req.v3_and_below_producer_id.0,
            req.v3_and_below_producer_epoch,
            &partitions,
        ),
    );
    let results = req
        .v3_and_below_topics
        .into_iter()
        .map(|t| {
            AddPartitionsToTxnTopicResult::default()
                .with_name(t.name)
                .with_results_by_partition(
                    t.partitions
                        .into_iter()
                        .map(|p| {
                            AddPartitionsToTxnPartitionResult::default()
                                .with_partition_index(p)
                                .with_partition_error_code(code)
                        })
                        .collect(),
                )
        })
        .collect();
    AddPartitionsToTxnResponse::default().with_results_by_topic_v3_and_below(results)
}

pub fn add_offsets(ctx: &Ctx<'_>, req: AddOffsetsToTxnRequest) -> AddOffsetsToTxnResponse {
    let code = code_of(
        ctx,
        "AddOffsetsToTxn",
        ctx.coord.add_offsets_to_txn(
            &req.transactional_id.0,
            req.producer_id.0,
            req.producer_epoch,
            &req.group_id.0,
        ),
    );
    AddOffsetsToTxnResponse::default().with_error_code(code)
}

pub fn txn_offset_commit(ctx: &Ctx<'_>, req: TxnOffsetCommitRequest) -> TxnOffsetCommitResponse {
    let offsets: Vec<(String, i32, i64, i32, Option<String>)> = req
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions.iter().map(|p| {
                (
                    t.name.0.to_string(),
                    p.partition_index,
                    p.committed_offset,
                    if ctx.version >= 2 {
                        p.committed_leader_epoch
                    } else {
                        -1
                    },
                    p.committed_metadata.as_ref().map(|m| m.to_string()),
                )
            })
        })
        .collect();
    let code = code_of(
        ctx,
        "TxnOffsetCommit",
        ctx.coord.txn_offset_commit(
            &req.transactional_id.0,
            &req.group_id.0,
            req.producer_id.0,
            req.producer_epoch,
            &kafka_coord::txn::GroupMember {
                // v3+ (KIP-447); earlier versions carry none (-1: not checked).
                generation_id: if ctx.version >= 3 {
                    req.generation_id
                } else {
                    -1
                },
                member_id: &req.member_id,
                group_instance_id: req.group_instance_id.as_deref(),
            },
            offsets,
        ),
    );
    let topics = req
        .topics
        .into_iter()
        .map(|t| {
            TxnOffsetCommitResponseTopic::default()
                .with_name(t.name)
                .with_partitions(
                    t.partitions
                        .into_iter()
                        .map(|p| {
                            TxnOffsetCommitResponsePartition::default()
                                .with_partition_index(p.partition_index)
                                .with_error_code(code)
                        })
                        .collect(),
                )
        })
        .collect();
    TxnOffsetCommitResponse::default().with_topics(topics)
}

pub async fn end_txn(ctx: &Ctx<'_>, req: EndTxnRequest) -> EndTxnResponse {
    let r = ctx
        .coord
        .end_txn(
            &req.transactional_id.0,
            req.producer_id.0,
            req.producer_epoch,
            req.committed,
        )
        .await;
    EndTxnResponse::default()
        .with_error_code(code_of(ctx, "EndTxn", r))
        .with_producer_id(ProducerId(-1))
        .with_producer_epoch(-1)
}

pub fn list_transactions(ctx: &Ctx<'_>, req: ListTransactionsRequest) -> ListTransactionsResponse {
    const STATES: [&str; 7] = [
        "Empty",
        "Ongoing",
        "PrepareCommit",
        "PrepareAbort",
        "CompleteCommit",
        "CompleteAbort",
        "Dead",
    ];
    let states: Vec<String> = req.state_filters.iter().map(|s| s.to_string()).collect();
    let unknown = states
        .iter()
        .filter(|s| !STATES.contains(&s.as_str()))
        .map(|u| s(u.clone()))
        .collect();
    let ids: Vec<i64> = req.producer_id_filters.iter().map(|p| p.0).collect();
    let listed = ctx
        .coord
        .list_transactions(&states, &ids)
        .into_iter()
        .map(|(id, producer_id, state)| {
            ListedTxn::default()
                .with_transactional_id(s(id).into())
                .with_producer_id(ProducerId(producer_id))
                .with_transaction_state(s(state))
        })
        .collect();
    ListTransactionsResponse::default()
        .with_error_code(NONE)
        .with_unknown_state_filters(unknown)
        .with_transaction_states(listed)
}

pub fn describe_transactions(
    ctx: &Ctx<'_>,
    req: DescribeTransactionsRequest,
) -> DescribeTransactionsResponse {
    let states = req
        .transactional_ids
        .into_iter()
        .map(|id| match ctx.coord.describe_transaction(&id.0) {
            Ok(d) => {
                let mut topics: Vec<TopicData> = Vec::new();
                for (t, p) in d.partitions {
                    match topics.iter_mut().find(|x| x.topic.0.as_str() == t) {
                        Some(x) => x.partitions.push(p),
                        None => topics.push(
                            TopicData::default()
                                .with_topic(topic_name(t))
                                .with_partitions(vec![p]),
                        ),
                    }
                }
                DescribedTxn::default()
                    .with_error_code(NONE)
                    .with_transactional_id(id)
                    .with_transaction_state(s(d.state))
                    .with_transaction_timeout_ms(d.timeout_ms)
                    .with_transaction_start_time_ms(d.start_ms)
                    .with_producer_id(ProducerId(d.producer_id))
                    .with_producer_epoch(d.producer_epoch)
                    .with_topics(topics)
            }
            Err(e) => DescribedTxn::default()
                .with_error_code(error_code(&e))
                .with_transactional_id(id)
                .with_producer_id(ProducerId(-1))
                .with_producer_epoch(-1)
                .with_transaction_start_time_ms(-1),
        })
        .collect();
    DescribeTransactionsResponse::default().with_transaction_states(states)
}

pub fn describe_producers(
    ctx: &Ctx<'_>,
    req: DescribeProducersRequest,
) -> DescribeProducersResponse {
    let topics = req
        .topics
        .into_iter()
        .map(|t| {
            let name = t.name.0.to_string();
            let partitions = t
                .partition_indexes
                .into_iter()
                .map(|p| {
                    let base = PartitionResponse::default().with_partition_index(p);
                    match ctx.coord.describe_producers(&name, p) {
                        Ok(list) => base.with_error_code(NONE).with_active_producers(
                            list.into_iter()
                                .map(|l| {
                                    ProducerState::default()
                                        .with_producer_id(ProducerId(l.producer_id))
                                        .with_producer_epoch(i32::from(l.producer_epoch))
                                        .with_last_sequence(l.last_sequence)
                                        .with_last_timestamp(l.last_timestamp_ms)
                                        .with_coordinator_epoch(0)
                                        .with_current_txn_start_offset(l.current_txn_start_offset)
                                })
                                .collect(),
                        ),
                        Err(e) => base
                            .with_error_code(error_code(&e))
                            .with_error_message(Some(s(e.to_string()))),
                    }
                })
                .collect();
            TopicResponse::default()
                .with_name(t.name)
                .with_partitions(partitions)
        })
        .collect();
    DescribeProducersResponse::default().with_topics(topics)
}

/// OffsetFetch with `require_stable` (v7+, sent by read_committed consumers): a partition
/// whose offset an unfinished transaction is about to commit answers
/// UNSTABLE_OFFSET_COMMIT (the client retries), so a consumer taking over a partition does
/// not resume from an offset that is about to move (KIP-447).
pub fn offset_fetch(ctx: &Ctx<'_>, req: OffsetFetchRequest) -> OffsetFetchResponse {
    let require_stable = ctx.version >= 7 && req.require_stable;
    let single_group = req.group_id.0.to_string();
    let mut resp = super::offsets::fetch(ctx, req);
    if !require_stable {
        return resp;
    }
    let unstable = ResponseError::UnstableOffsetCommit.code();
    for t in &mut resp.topics {
        for p in &mut t.partitions {
            if ctx
                .coord
                .has_pending_txn_offset(&single_group, &t.name.0, p.partition_index)
            {
                p.error_code = unstable;
                p.committed_offset = -1;
            }
        }
    }
    for g in &mut resp.groups {
        for t in &mut g.topics {
            for p in &mut t.partitions {
                if ctx
                    .coord
                    .has_pending_txn_offset(&g.group_id.0, &t.name.0, p.partition_index)
                {
                    p.error_code = unstable;
                    p.committed_offset = -1;
                }
            }
        }
    }
    resp
}

/// FindCoordinator key type of transactional ids.
pub const KEY_TRANSACTION: i8 = 1;
