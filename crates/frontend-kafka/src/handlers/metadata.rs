//! Metadata: one broker (this one, at the advertised address), topics with every
//! partition led by it. Auto-creates requested topics when allowed.

use broker::{BrokerError, TopicInfo};
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, MetadataRequest, MetadataResponse};

use crate::context::{Ctx, s, topic_name, uuid};
use crate::errors::{NONE, broker_code};

/// "Authorized operations not requested" in Kafka's encoding.
const OPS_OMITTED: i32 = i32::MIN;

pub fn handle(ctx: &Ctx<'_>, req: MetadataRequest) -> MetadataResponse {
    let b = ctx.broker;
    let allow_create = ctx.version < 4 || req.allow_auto_topic_creation;
    let requested = match req.topics {
        // v0: an empty list means all topics.
        Some(t) if ctx.version == 0 && t.is_empty() => None,
        other => other,
    };
    let topics: Vec<MetadataResponseTopic> = match requested {
        None => b
            .list_topics()
            .into_iter()
            .map(|t| topic_ok(ctx, &t))
            .collect(),
        Some(list) => list
            .into_iter()
            .map(|t| {
                let name = match (&t.name, t.topic_id.is_nil()) {
                    (Some(n), _) => Some(n.0.to_string()),
                    (None, false) => b.topic_name_by_id(t.topic_id.as_u128()),
                    (None, true) => None,
                };
                let Some(name) = name else {
                    return MetadataResponseTopic::default()
                        .with_topic_id(t.topic_id)
                        .with_error_code(kafka_protocol::ResponseError::UnknownTopicId.code())
                        .with_topic_authorized_operations(OPS_OMITTED);
                };
                match b.topic_or_create(&name, allow_create) {
                    Ok(info) => topic_ok(ctx, &info),
                    Err(e) => topic_err(&name, &e),
                }
            })
            .collect(),
    };
    MetadataResponse::default()
        .with_brokers(vec![
            MetadataResponseBroker::default()
                .with_node_id(BrokerId(b.node_id()))
                .with_host(s(ctx.config.advertised_host.clone()))
                .with_port(i32::from(ctx.config.advertised_port)),
        ])
        .with_cluster_id((ctx.version >= 2).then(|| s(b.cluster_id())))
        .with_controller_id(BrokerId(if ctx.version >= 1 { b.node_id() } else { -1 }))
        .with_topics(topics)
        .with_cluster_authorized_operations(OPS_OMITTED)
}

fn topic_ok(ctx: &Ctx<'_>, t: &TopicInfo) -> MetadataResponseTopic {
    let node = BrokerId(ctx.broker.node_id());
    MetadataResponseTopic::default()
        .with_error_code(NONE)
        .with_name(Some(topic_name(t.name.clone())))
        .with_topic_id(if ctx.version >= 10 {
            uuid(t.topic_id)
        } else {
            uuid::Uuid::nil()
        })
        .with_is_internal(false)
        .with_topic_authorized_operations(OPS_OMITTED)
        .with_partitions(
            (0..t.partitions as i32)
                .map(|p| {
                    MetadataResponsePartition::default()
                        .with_error_code(NONE)
                        .with_partition_index(p)
                        .with_leader_id(node)
                        .with_leader_epoch(if ctx.version >= 7 { 0 } else { -1 })
                        .with_replica_nodes(vec![node])
                        .with_isr_nodes(vec![node])
                })
                .collect(),
        )
}

fn topic_err(name: &str, e: &BrokerError) -> MetadataResponseTopic {
    MetadataResponseTopic::default()
        .with_error_code(broker_code(e))
        .with_name(Some(topic_name(name)))
        .with_topic_authorized_operations(OPS_OMITTED)
}
