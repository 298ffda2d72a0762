//! CreateTopics, DeleteTopics, CreatePartitions, DeleteRecords.

use std::collections::BTreeMap;

use broker::{BrokerError, NewTopic};
use kafka_protocol::ResponseError;
use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::create_topics_response::{
    CreatableTopicConfigs, CreatableTopicResult,
};
use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{
    CreatePartitionsRequest, CreatePartitionsResponse, CreateTopicsRequest, CreateTopicsResponse,
    DeleteRecordsRequest, DeleteRecordsResponse, DeleteTopicsRequest, DeleteTopicsResponse,
};

use crate::context::{Ctx, s, topic_name, uuid};
use crate::errors::{NONE, code_name, error_code};

/// Kafka's ConfigSource.DEFAULT_CONFIG / TOPIC_CONFIG.
const SOURCE_DEFAULT: i8 = 5;
const SOURCE_TOPIC: i8 = 1;

fn err_msg(e: &BrokerError) -> Option<kafka_protocol::protocol::StrBytes> {
    Some(s(e.to_string()))
}

/// Checks a manual replica assignment against this single-node broker: every partition's
/// replica list (None: partitions not numbered 0, 1, …) must be exactly `[node]`. Returns the
/// number of partitions assigned.
fn check_assignment<'a>(
    node: i32,
    lists: impl Iterator<Item = Option<&'a [kafka_protocol::messages::BrokerId]>>,
) -> Result<u32, String> {
    let mut n = 0u32;
    for (i, list) in lists.enumerate() {
        let list = list.ok_or_else(|| format!("partition {i} is missing or out of order"))?;
        let ids: Vec<i32> = list.iter().map(|b| b.0).collect();
        if ids != [node] {
            return Err(format!(
                "partition {i} is assigned to brokers {ids:?}; this cluster has one broker, {node}"
            ));
        }
        n += 1;
    }
    Ok(n)
}

pub fn create_topics(ctx: &Ctx<'_>, req: CreateTopicsRequest) -> CreateTopicsResponse {
    let b = ctx.broker;
    let mut seen = std::collections::HashSet::new();
    let topics = req
        .topics
        .into_iter()
        .map(|t| {
            let name = t.name.0.to_string();
            let base = CreatableTopicResult::default().with_name(t.name.clone());
            if !seen.insert(name.clone()) {
                return base
                    .with_error_code(ResponseError::InvalidRequest.code())
                    .with_error_message(Some(s("duplicate topic in request")));
            }
            // A manual assignment (Kafka's rules): the counts are then -1, partitions are
            // numbered 0.., and every replica names a live broker (here only this one).
            let assigned = if t.assignments.is_empty() {
                None
            } else if t.num_partitions != -1 || t.replication_factor != -1 {
                return base
                    .with_error_code(ResponseError::InvalidRequest.code())
                    .with_error_message(Some(s(
                        "with a replica assignment, numPartitions and replicationFactor must be -1",
                    )));
            } else {
                let node = b.config().node_id;
                let lists = t.assignments.iter().enumerate().map(|(i, a)| {
                    (a.partition_index == i as i32).then_some(a.broker_ids.as_slice())
                });
                match check_assignment(node, lists) {
                    Ok(n) => Some(n),
                    Err(msg) => {
                        return base
                            .with_error_code(ResponseError::InvalidReplicaAssignment.code())
                            .with_error_message(Some(s(msg)));
                    }
                }
            };
            let mut configs = BTreeMap::new();
            for c in t.configs {
                if let Some(v) = c.value {
                    configs.insert(c.name.to_string(), v.to_string());
                }
            }
            let partitions = match t.num_partitions {
                -1 => assigned,
                n if n > 0 => Some(n as u32),
                n => {
                    return base
                        .with_error_code(ResponseError::InvalidPartitions.code())
                        .with_error_message(Some(s(format!("invalid partition count {n}"))));
                }
            };
            let new = NewTopic {
                name: name.clone(),
                partitions,
                replication_factor: Some(if assigned.is_some() {
                    1
                } else {
                    t.replication_factor
                }),
                configs,
            };
            match b.create_topic(new, req.validate_only) {
                Ok(info) => {
                    let mut r = base.with_error_code(NONE);
                    if ctx.version >= 7 {
                        r = r.with_topic_id(uuid(info.topic_id));
                    }
                    if ctx.version >= 5 {
                        r = r
                            .with_num_partitions(info.partitions as i32)
                            .with_replication_factor(1);
                    }
                    if ctx.version >= 5 && !req.validate_only {
                        r = r.with_configs(b.describe_topic_configs(&name, None).ok().map(
                            |entries| {
                                entries
                                    .into_iter()
                                    .map(|e| {
                                        CreatableTopicConfigs::default()
                                            .with_name(s(e.name))
                                            .with_value(e.value.map(s))
                                            .with_read_only(e.read_only)
                                            .with_config_source(if e.is_override {
                                                SOURCE_TOPIC
                                            } else {
                                                SOURCE_DEFAULT
                                            })
                                            .with_is_sensitive(false)
                                    })
                                    .collect()
                            },
                        ));
                    }
                    r
                }
                Err(e) => {
                    let code = error_code(&e);
                    b.metrics()
                        .observe_error(crate::PROTOCOL, "CreateTopics", &code_name(code));
                    base.with_error_code(code).with_error_message(err_msg(&e))
                }
            }
        })
        .collect();
    CreateTopicsResponse::default().with_topics(topics)
}

pub fn delete_topics(ctx: &Ctx<'_>, req: DeleteTopicsRequest) -> DeleteTopicsResponse {
    let b = ctx.broker;
    // v0-5 send names; v6 sends (name | topic id) states.
    let mut targets: Vec<(Option<String>, uuid::Uuid)> = req
        .topic_names
        .into_iter()
        .map(|n| (Some(n.0.to_string()), uuid::Uuid::nil()))
        .collect();
    targets.extend(
        req.topics
            .into_iter()
            .map(|t| (t.name.map(|n| n.0.to_string()), t.topic_id)),
    );
    let responses = targets
        .into_iter()
        .map(|(name, id)| {
            let resolved = name.clone().or_else(|| b.topic_name_by_id(id.as_u128()));
            let mut r = DeletableTopicResult::default()
                .with_name(name.clone().map(topic_name))
                .with_topic_id(id);
            let Some(n) = resolved else {
                return r.with_error_code(ResponseError::UnknownTopicId.code());
            };
            if ctx.version >= 6
                && let Ok(info) = b.topic(&n)
            {
                r = r.with_topic_id(uuid(info.topic_id));
            }
            match b.delete_topic(&n) {
                Ok(()) => r.with_name(Some(topic_name(n))).with_error_code(NONE),
                Err(e) if ctx.version >= 5 => r
                    .with_error_code(error_code(&e))
                    .with_error_message(err_msg(&e)),
                Err(e) => r.with_error_code(error_code(&e)),
            }
        })
        .collect();
    DeleteTopicsResponse::default().with_responses(responses)
}

pub fn create_partitions(ctx: &Ctx<'_>, req: CreatePartitionsRequest) -> CreatePartitionsResponse {
    let b = ctx.broker;
    let results = req
        .topics
        .into_iter()
        .map(|t| {
            let r = CreatePartitionsTopicResult::default().with_name(t.name.clone());
            let total = match u32::try_from(t.count) {
                Ok(n) => n,
                Err(_) => return r.with_error_code(ResponseError::InvalidPartitions.code()),
            };
            if let Some(assignments) = &t.assignments {
                // One list per new partition, each naming live brokers (only this one).
                let current = b.topic(&t.name.0).map_or(0, |i| i.partitions);
                let lists = assignments.iter().map(|a| Some(a.broker_ids.as_slice()));
                let fits = check_assignment(b.config().node_id, lists).and_then(|n| {
                    (n == total.saturating_sub(current))
                        .then_some(n)
                        .ok_or_else(|| {
                            format!(
                                "{n} assignments for {} new partitions",
                                total.saturating_sub(current)
                            )
                        })
                });
                if let Err(msg) = fits {
                    return r
                        .with_error_code(ResponseError::InvalidReplicaAssignment.code())
                        .with_error_message(Some(s(msg)));
                }
            }
            match b.create_partitions(&t.name.0, total, req.validate_only) {
                Ok(()) => r.with_error_code(NONE),
                Err(e) => r
                    .with_error_code(error_code(&e))
                    .with_error_message(err_msg(&e)),
            }
        })
        .collect();
    CreatePartitionsResponse::default().with_results(results)
}

pub fn delete_records(ctx: &Ctx<'_>, req: DeleteRecordsRequest) -> DeleteRecordsResponse {
    let b = ctx.broker;
    let topics = req
        .topics
        .into_iter()
        .map(|t| {
            let partitions = t
                .partitions
                .into_iter()
                .map(|p| {
                    let r = DeleteRecordsPartitionResult::default()
                        .with_partition_index(p.partition_index);
                    match b.delete_records(&t.name.0, p.partition_index, p.offset) {
                        Ok(low) => r.with_low_watermark(low).with_error_code(NONE),
                        Err(e) => r.with_low_watermark(-1).with_error_code(error_code(&e)),
                    }
                })
                .collect();
            DeleteRecordsTopicResult::default()
                .with_name(t.name)
                .with_partitions(partitions)
        })
        .collect();
    DeleteRecordsResponse::default().with_topics(topics)
}
