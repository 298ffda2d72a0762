//! Produce: batches are appended as sent (storage checks CRCs and assigns offsets).
//! acks=0 gets no response; acks other than 0, 1, -1 gets INVALID_REQUIRED_ACKS.

use bytes::{Bytes, BytesMut};
use kafka_protocol::ResponseError;
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse};

use crate::context::{Ctx, s, topic_name};
use crate::errors::{NONE, broker_code, code_name};

struct Part {
    index: i32,
    records: Option<Bytes>,
}

pub async fn handle(ctx: &Ctx<'_>, req: ProduceRequest) -> Option<ProduceResponse> {
    let acks = req.acks;
    let acks_valid = (-1..=1).contains(&acks);
    // Take the records out and drop the request, so a lone records slice can become
    // mutable without a copy.
    let mut topics: Vec<(String, uuid::Uuid, Option<String>, Vec<Part>)> =
        Vec::with_capacity(req.topic_data.len());
    for t in req.topic_data {
        let name = if ctx.version >= 13 {
            ctx.broker.topic_name_by_id(t.topic_id.as_u128())
        } else {
            Some(t.name.0.to_string())
        };
        let parts = t
            .partition_data
            .into_iter()
            .map(|p| Part {
                index: p.index,
                records: p.records,
            })
            .collect();
        topics.push((t.name.0.to_string(), t.topic_id, name, parts));
    }
    let mut responses = Vec::with_capacity(topics.len());
    for (wire_name, topic_id, name, parts) in topics {
        let mut prs = Vec::with_capacity(parts.len());
        for p in parts {
            let mut r = PartitionProduceResponse::default()
                .with_index(p.index)
                .with_base_offset(-1)
                .with_log_append_time_ms(-1)
                .with_log_start_offset(-1);
            let code = if !acks_valid {
                ResponseError::InvalidRequiredAcks.code()
            } else if let Some(name) = &name {
                match p.records {
                    None => ResponseError::InvalidRecord.code(),
                    Some(records) => {
                        let bytes = BytesMut::from(records);
                        match ctx.broker.produce(name, p.index, bytes).await {
                            Ok(done) => {
                                r = r.with_base_offset(done.base_offset);
                                if ctx.version >= 5 {
                                    r = r.with_log_start_offset(done.log_start_offset);
                                }
                                NONE
                            }
                            Err(e) => {
                                tracing::debug!(peer = %ctx.peer, topic = %name, partition = p.index, error = %e, "produce rejected");
                                if ctx.version >= 8 {
                                    r = r.with_error_message(Some(s(e.to_string())));
                                }
                                broker_code(&e)
                            }
                        }
                    }
                }
            } else {
                ResponseError::UnknownTopicId.code()
            };
            if code != NONE {
                ctx.broker
                    .metrics()
                    .observe_error("Produce", &code_name(code));
            }
            prs.push(r.with_error_code(code));
        }
        responses.push(
            TopicProduceResponse::default()
                .with_name(topic_name(if ctx.version >= 13 {
                    String::new()
                } else {
                    wire_name
                }))
                .with_topic_id(topic_id)
                .with_partition_responses(prs),
        );
    }
    if acks == 0 {
        return None;
    }
    Some(ProduceResponse::default().with_responses(responses))
}
