//! Produce: batches are appended as sent (storage checks CRCs and assigns offsets).
//! acks=0 gets no response; acks other than 0, 1, -1 gets INVALID_REQUIRED_ACKS.
//! Partitions of one request are appended concurrently, so with `flush = sync` one group
//! commit covers them all.

use std::sync::Arc;

use broker::{Broker, BrokerError, Produced};
use bytes::{Bytes, BytesMut};
use kafka_protocol::ResponseError;
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse};

use crate::context::{Ctx, s, topic_name};
use crate::errors::{NONE, broker_code, code_name};
use crate::handlers::partition_limit::{self, PartitionLimit};

/// One partition's outcome, before it becomes a wire response.
enum Outcome {
    Code(i16),
    /// Past `max_partitions_per_request`: not appended.
    OverLimit,
    Done(Result<Produced, BrokerError>),
}

struct Append {
    slot: usize,
    topic: String,
    partition: i32,
    records: Bytes,
}

/// What a Produce answers.
pub enum ProduceReply {
    Response(ProduceResponse),
    /// acks=0: no response. `failed`: some partition failed, and (as Kafka does) the
    /// connection is closed so the client notices and refreshes its metadata.
    NoResponse {
        failed: bool,
    },
}

pub async fn handle(ctx: &Ctx<'_>, req: ProduceRequest) -> ProduceReply {
    let acks = req.acks;
    let acks_valid = (-1..=1).contains(&acks);
    // Response skeleton (topic, id, partition indexes) and the appends to run.
    let mut shape: Vec<(String, uuid::Uuid, Vec<i32>)> = Vec::with_capacity(req.topic_data.len());
    let mut outcomes: Vec<Outcome> = Vec::new();
    let mut appends: Vec<Append> = Vec::new();
    let mut limit = PartitionLimit::new(ctx);
    for t in req.topic_data {
        let name = if ctx.version >= 13 {
            ctx.broker.topic_name_by_id(t.topic_id.as_u128())
        } else {
            Some(t.name.0.to_string())
        };
        let mut indexes = Vec::with_capacity(t.partition_data.len());
        for p in t.partition_data {
            indexes.push(p.index);
            let slot = outcomes.len();
            let admitted = limit.admit();
            outcomes.push(match (&name, p.records) {
                _ if !admitted => Outcome::OverLimit,
                _ if !acks_valid => Outcome::Code(ResponseError::InvalidRequiredAcks.code()),
                (None, _) => Outcome::Code(ResponseError::UnknownTopicId.code()),
                (Some(_), None) => Outcome::Code(ResponseError::InvalidRecord.code()),
                (Some(n), Some(records)) => {
                    appends.push(Append {
                        slot,
                        topic: n.clone(),
                        partition: p.index,
                        records,
                    });
                    Outcome::Code(NONE)
                }
            });
        }
        shape.push((t.name.0.to_string(), t.topic_id, indexes));
    }
    limit.log_if_over(ctx, "Produce");
    run_appends(ctx.broker, appends, &mut outcomes).await;
    if acks == 0 {
        let failed = count_errors(ctx, &outcomes);
        return ProduceReply::NoResponse { failed };
    }
    let mut outcomes = outcomes.into_iter();
    let responses = shape
        .into_iter()
        .map(|(wire_name, topic_id, indexes)| {
            let prs = indexes
                .into_iter()
                .map(|index| partition_response(ctx, index, outcomes.next(), &limit))
                .collect();
            TopicProduceResponse::default()
                .with_name(topic_name(if ctx.version >= 13 {
                    String::new()
                } else {
                    wire_name
                }))
                .with_topic_id(topic_id)
                .with_partition_responses(prs)
        })
        .collect();
    ProduceReply::Response(ProduceResponse::default().with_responses(responses))
}

/// Runs the appends, concurrently when there are several.
async fn run_appends(broker: &Arc<Broker>, appends: Vec<Append>, outcomes: &mut [Outcome]) {
    if appends.len() <= 1 {
        for a in appends {
            let r = broker
                .produce(&a.topic, a.partition, BytesMut::from(a.records))
                .await;
            outcomes[a.slot] = Outcome::Done(r);
        }
        return;
    }
    let mut set = tokio::task::JoinSet::new();
    for a in appends {
        let b = broker.clone();
        set.spawn(async move {
            let r = b
                .produce(&a.topic, a.partition, BytesMut::from(a.records))
                .await;
            (a.slot, r)
        });
    }
    while let Some(joined) = set.join_next().await {
        match joined {
            Ok((slot, r)) => outcomes[slot] = Outcome::Done(r),
            // A panicking append is a bug; its slot keeps the storage error below.
            Err(e) => tracing::error!(error = %e, "produce task failed"),
        }
    }
    for o in outcomes.iter_mut() {
        if matches!(o, Outcome::Code(NONE)) {
            *o = Outcome::Code(ResponseError::KafkaStorageError.code());
        }
    }
}

/// Counts failed partitions in metrics; true if any failed.
fn count_errors(ctx: &Ctx<'_>, outcomes: &[Outcome]) -> bool {
    let mut failed = false;
    for o in outcomes {
        let code = match o {
            Outcome::Code(c) => *c,
            Outcome::OverLimit => partition_limit::CODE,
            Outcome::Done(Ok(_)) => NONE,
            Outcome::Done(Err(e)) => broker_code(e),
        };
        if code != NONE {
            failed = true;
            ctx.broker
                .metrics()
                .observe_error("Produce", &code_name(code));
        }
    }
    failed
}

fn partition_response(
    ctx: &Ctx<'_>,
    index: i32,
    outcome: Option<Outcome>,
    limit: &PartitionLimit,
) -> PartitionProduceResponse {
    let r = PartitionProduceResponse::default()
        .with_index(index)
        .with_base_offset(-1)
        .with_log_append_time_ms(-1)
        .with_log_start_offset(-1);
    let (r, code) = match outcome {
        Some(Outcome::Done(Ok(done))) => {
            let r = r.with_base_offset(done.base_offset);
            let r = if ctx.version >= 5 {
                r.with_log_start_offset(done.log_start_offset)
            } else {
                r
            };
            (r, NONE)
        }
        Some(Outcome::Done(Err(e))) => {
            tracing::debug!(peer = %ctx.peer, partition = index, error = %e, "produce rejected");
            let r = if ctx.version >= 8 {
                r.with_error_message(Some(s(e.to_string())))
            } else {
                r
            };
            (r, broker_code(&e))
        }
        Some(Outcome::Code(c)) => (r, c),
        Some(Outcome::OverLimit) => {
            let r = if ctx.version >= 8 {
                r.with_error_message(Some(s(limit.message())))
            } else {
                r
            };
            (r, partition_limit::CODE)
        }
        None => (r, ResponseError::UnknownServerError.code()),
    };
    if code != NONE {
        ctx.broker
            .metrics()
            .observe_error("Produce", &code_name(code));
    }
    r.with_error_code(code)
}
