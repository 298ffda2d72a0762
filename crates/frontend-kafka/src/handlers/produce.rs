//! Produce: batches are appended as sent (storage checks CRCs and assigns offsets).
//! acks=0 gets no response; acks other than 0, 1, -1 gets INVALID_REQUIRED_ACKS.
//!
//! Every partition of a request is written before the handler returns (so a connection's
//! requests are appended in arrival order); waiting for the fsync of `flush = sync`
//! partitions is left to a [`ProduceReply::Pending`] future, which the connection awaits
//! in its response queue while it reads and writes the next requests. One group commit
//! covers all partitions of a request, and the fsyncs of pipelined requests overlap.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use broker::{Broker, BrokerError, PendingProduce, Produced};
use bytes::{Bytes, BytesMut};
use kafka_protocol::ResponseError;
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse};

use crate::context::{Ctx, s, topic_name};
use crate::errors::{NONE, code_name, error_code};
use crate::handlers::partition_limit::{self, PartitionLimit};

/// One partition's outcome, before it becomes a wire response.
enum Outcome {
    Code(i16),
    /// Past `max_partitions_per_request`: not appended.
    OverLimit,
    /// Written; waiting for its acknowledgement.
    Pending(PendingProduce),
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
    /// Everything is written; the response is ready once the fsyncs it waits for are done.
    Pending(Pin<Box<dyn Future<Output = ProduceResponse> + Send>>),
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
    begin_appends(ctx.broker, appends, &mut outcomes).await;
    if acks == 0 {
        // Nobody waits for an acks=0 response, so nothing waits for its fsync either.
        let failed = count_errors(ctx, &outcomes);
        return ProduceReply::NoResponse { failed };
    }
    let answer = Answer {
        broker: ctx.broker.clone(),
        peer: ctx.peer,
        version: ctx.version,
        limit_message: limit.is_over().then(|| limit.message()),
        shape,
    };
    let waits = outcomes
        .iter()
        .any(|o| matches!(o, Outcome::Pending(p) if !p.is_acked()));
    if !waits {
        return ProduceReply::Response(answer.build(acked(outcomes).await));
    }
    ProduceReply::Pending(Box::pin(async move { answer.build(acked(outcomes).await) }))
}

/// Writes every partition's batches, one after another in request order.
async fn begin_appends(broker: &Arc<Broker>, appends: Vec<Append>, outcomes: &mut [Outcome]) {
    for a in appends {
        let r = broker
            .produce_begin(&a.topic, a.partition, BytesMut::from(a.records))
            .await;
        outcomes[a.slot] = match r {
            Ok(p) => Outcome::Pending(p),
            Err(e) => Outcome::Done(Err(e)),
        };
    }
}

/// Waits for every written partition's acknowledgement (they share group commits, so this
/// takes as long as the slowest).
async fn acked(outcomes: Vec<Outcome>) -> Vec<Outcome> {
    let mut done = Vec::with_capacity(outcomes.len());
    for o in outcomes {
        done.push(match o {
            Outcome::Pending(p) => Outcome::Done(p.acked().await),
            other => other,
        });
    }
    done
}

/// What the response is built from once the appends are acknowledged; owns everything, so
/// it can outlive the request's handler.
struct Answer {
    broker: Arc<Broker>,
    peer: SocketAddr,
    version: i16,
    /// The POLICY_VIOLATION message, when the request went over the partition limit.
    limit_message: Option<String>,
    /// (wire topic name, topic id, partition indexes) in request order.
    shape: Vec<(String, uuid::Uuid, Vec<i32>)>,
}

impl Answer {
    fn build(self, outcomes: Vec<Outcome>) -> ProduceResponse {
        let mut outcomes = outcomes.into_iter();
        let responses = self
            .shape
            .iter()
            .map(|(wire_name, topic_id, indexes)| {
                let prs = indexes
                    .iter()
                    .map(|&index| self.partition_response(wire_name, index, outcomes.next()))
                    .collect();
                TopicProduceResponse::default()
                    .with_name(topic_name(if self.version >= 13 {
                        String::new()
                    } else {
                        wire_name.clone()
                    }))
                    .with_topic_id(*topic_id)
                    .with_partition_responses(prs)
            })
            .collect();
        ProduceResponse::default().with_responses(responses)
    }

    fn partition_response(
        &self,
        topic: &str,
        index: i32,
        outcome: Option<Outcome>,
    ) -> PartitionProduceResponse {
        let r = PartitionProduceResponse::default()
            .with_index(index)
            .with_base_offset(-1)
            .with_log_append_time_ms(-1)
            .with_log_start_offset(-1);
        let (r, code) = match outcome {
            Some(Outcome::Done(Ok(done))) => {
                let r = r
                    .with_base_offset(done.base_offset)
                    .with_log_append_time_ms(done.log_append_time_ms.unwrap_or(-1));
                let r = if self.version >= 5 {
                    r.with_log_start_offset(done.log_start_offset)
                } else {
                    r
                };
                (r, NONE)
            }
            Some(Outcome::Done(Err(e))) => {
                if matches!(
                    e,
                    BrokerError::InvalidRecord(_) | BrokerError::CorruptMessage(_)
                ) {
                    log_refused_batch(self.peer, topic, index, &e);
                } else {
                    tracing::debug!(peer = %self.peer, partition = index, error = %e, "produce rejected");
                }
                let r = if self.version >= 8 {
                    r.with_error_message(Some(s(e.to_string())))
                } else {
                    r
                };
                (r, error_code(&e))
            }
            Some(Outcome::Code(c)) => (r, c),
            Some(Outcome::OverLimit) => {
                let r = if self.version >= 8 {
                    r.with_error_message(Some(s(self.limit_message.clone().unwrap_or_default())))
                } else {
                    r
                };
                (r, partition_limit::CODE)
            }
            Some(Outcome::Pending(_)) | None => (r, ResponseError::UnknownServerError.code()),
        };
        if code != NONE {
            self.broker
                .metrics()
                .observe_error(crate::PROTOCOL, "Produce", &code_name(code));
        }
        r.with_error_code(code)
    }
}

/// At most one line a second for refused batches: a client controls how many it sends.
static REFUSED_BATCH_LOG: common::LogLimit = common::LogLimit::new(1000);

/// A batch the broker refused (malformed, inconsistent, or not the client's to write): the
/// operator learns who sends them, rate-limited.
fn log_refused_batch(peer: SocketAddr, topic: &str, partition: i32, e: &BrokerError) {
    use common::Clock;
    if let Some(held_back) = REFUSED_BATCH_LOG.allow(common::SystemClock.now_ms()) {
        tracing::warn!(%peer, topic, partition, error = %e, held_back, "refused a record batch");
    }
}

/// Counts failed partitions in metrics; true if any failed.
fn count_errors(ctx: &Ctx<'_>, outcomes: &[Outcome]) -> bool {
    let mut failed = false;
    for o in outcomes {
        let code = match o {
            Outcome::Code(c) => *c,
            Outcome::OverLimit => partition_limit::CODE,
            Outcome::Pending(_) | Outcome::Done(Ok(_)) => NONE,
            Outcome::Done(Err(e)) => error_code(e),
        };
        if code != NONE {
            failed = true;
            ctx.broker
                .metrics()
                .observe_error(crate::PROTOCOL, "Produce", &code_name(code));
        }
    }
    failed
}
