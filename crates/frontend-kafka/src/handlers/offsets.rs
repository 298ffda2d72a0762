//! OffsetCommit, OffsetFetch (single group v1-7, batched groups v8+), OffsetDelete.

use broker::CommittedOffset;
use bytes::Buf;
use kafka_coord::OffsetToCommit;
use kafka_coord::group::GroupDescription;
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::{
    ConsumerProtocolSubscription, OffsetCommitRequest, OffsetCommitResponse, OffsetDeleteRequest,
    OffsetDeleteResponse, OffsetFetchRequest, OffsetFetchResponse,
};
use kafka_protocol::protocol::{Decodable, Message};

use crate::context::{Ctx, s, topic_name};
use crate::errors::{NONE, error_code, group_code};

pub fn commit(ctx: &Ctx<'_>, req: OffsetCommitRequest) -> OffsetCommitResponse {
    let mut flat = Vec::new();
    for t in &req.topics {
        for p in &t.partitions {
            flat.push(OffsetToCommit {
                topic: t.name.0.to_string(),
                partition: p.partition_index,
                offset: p.committed_offset,
                leader_epoch: if ctx.version >= 6 {
                    p.committed_leader_epoch
                } else {
                    -1
                },
                metadata: p.committed_metadata.as_ref().map(|m| m.to_string()),
            });
        }
    }
    let result = ctx.coord.commit_offsets(
        &req.group_id.0,
        req.generation_id_or_member_epoch,
        &req.member_id,
        req.group_instance_id.as_deref(),
        flat,
    );
    let mut codes: Box<dyn Iterator<Item = i16>> = match result {
        Ok(per) => Box::new(
            per.into_iter()
                .map(|r| r.map_or_else(|e| error_code(&e), |_| NONE)),
        ),
        Err(e) => {
            let code = group_code(&e);
            Box::new(std::iter::repeat(code))
        }
    };
    let topics = req
        .topics
        .into_iter()
        .map(|t| {
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    OffsetCommitResponsePartition::default()
                        .with_partition_index(p.partition_index)
                        .with_error_code(codes.next().unwrap_or(NONE))
                })
                .collect();
            OffsetCommitResponseTopic::default()
                .with_name(t.name)
                .with_partitions(partitions)
        })
        .collect();
    OffsetCommitResponse::default().with_topics(topics)
}

type Fetched = Vec<(String, Vec<(i32, Option<CommittedOffset>)>)>;

/// Committed offsets of `group` grouped by topic; `topics` None = everything committed.
fn fetch_group(ctx: &Ctx<'_>, group: &str, topics: Option<Vec<(String, Vec<i32>)>>) -> Fetched {
    let wanted: Option<Vec<(String, i32)>> = topics.map(|ts| {
        ts.into_iter()
            .flat_map(|(t, ps)| ps.into_iter().map(move |p| (t.clone(), p)))
            .collect()
    });
    let rows = ctx.coord.fetch_offsets(group, wanted.as_deref());
    let mut out: Fetched = Vec::new();
    for (t, p, o) in rows {
        match out.iter_mut().find(|(name, _)| *name == t) {
            Some((_, ps)) => ps.push((p, o)),
            None => out.push((t, vec![(p, o)])),
        }
    }
    out
}

fn parts_of(o: Option<CommittedOffset>, version: i16) -> (i64, i32, String) {
    match o {
        Some(c) => (
            c.offset,
            if version >= 5 { c.leader_epoch } else { -1 },
            c.metadata.unwrap_or_default(),
        ),
        None => (-1, -1, String::new()),
    }
}

pub fn fetch(ctx: &Ctx<'_>, req: OffsetFetchRequest) -> OffsetFetchResponse {
    if ctx.version >= 8 {
        let groups = req
            .groups
            .into_iter()
            .map(|g| {
                let topics = g.topics.map(|ts| {
                    ts.into_iter()
                        .map(|t| (t.name.0.to_string(), t.partition_indexes))
                        .collect()
                });
                let fetched = fetch_group(ctx, &g.group_id.0, topics);
                let topics = fetched
                    .into_iter()
                    .map(|(t, ps)| {
                        OffsetFetchResponseTopics::default()
                            .with_name(topic_name(t))
                            .with_partitions(
                                ps.into_iter()
                                    .map(|(p, o)| {
                                        let (off, epoch, meta) = parts_of(o, ctx.version);
                                        OffsetFetchResponsePartitions::default()
                                            .with_partition_index(p)
                                            .with_committed_offset(off)
                                            .with_committed_leader_epoch(epoch)
                                            .with_metadata(Some(s(meta)))
                                            .with_error_code(NONE)
                                    })
                                    .collect(),
                            )
                    })
                    .collect();
                OffsetFetchResponseGroup::default()
                    .with_group_id(g.group_id)
                    .with_topics(topics)
                    .with_error_code(NONE)
            })
            .collect();
        return OffsetFetchResponse::default().with_groups(groups);
    }
    let topics = req.topics.map(|ts| {
        ts.into_iter()
            .map(|t| (t.name.0.to_string(), t.partition_indexes))
            .collect()
    });
    let fetched = fetch_group(ctx, &req.group_id.0, topics);
    let topics = fetched
        .into_iter()
        .map(|(t, ps)| {
            OffsetFetchResponseTopic::default()
                .with_name(topic_name(t))
                .with_partitions(
                    ps.into_iter()
                        .map(|(p, o)| {
                            let (off, epoch, meta) = parts_of(o, ctx.version);
                            OffsetFetchResponsePartition::default()
                                .with_partition_index(p)
                                .with_committed_offset(off)
                                .with_committed_leader_epoch(epoch)
                                .with_metadata(Some(s(meta)))
                                .with_error_code(NONE)
                        })
                        .collect(),
                )
        })
        .collect();
    OffsetFetchResponse::default()
        .with_topics(topics)
        .with_error_code(NONE)
}

/// Topics the group's live members subscribe to (decoded from consumer-protocol metadata).
fn subscribed_topics(d: &GroupDescription) -> Vec<String> {
    if d.protocol_type != "consumer" {
        return Vec::new();
    }
    let mut out = Vec::new();
    for m in &d.members {
        let mut buf = m.metadata.clone();
        if buf.remaining() < 2 {
            continue;
        }
        let v = buf.get_i16().clamp(
            ConsumerProtocolSubscription::VERSIONS.min,
            ConsumerProtocolSubscription::VERSIONS.max,
        );
        if let Ok(sub) = ConsumerProtocolSubscription::decode(&mut buf, v) {
            for t in sub.topics {
                if !out.contains(&t.to_string()) {
                    out.push(t.to_string());
                }
            }
        }
    }
    out
}

pub fn delete(ctx: &Ctx<'_>, req: OffsetDeleteRequest) -> OffsetDeleteResponse {
    let group = req.group_id.0.to_string();
    let subscribed = subscribed_topics(&ctx.coord.describe_group(&group));
    let parts: Vec<(String, i32)> = req
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions
                .iter()
                .map(move |p| (t.name.0.to_string(), p.partition_index))
        })
        .collect();
    match ctx.coord.delete_offsets(&group, &parts, &subscribed) {
        Err(e) => OffsetDeleteResponse::default().with_error_code(group_code(&e)),
        Ok(results) => {
            let mut codes = results
                .into_iter()
                .map(|r| r.map_or_else(|e| group_code(&e), |_| NONE));
            let topics = req
                .topics
                .into_iter()
                .map(|t| {
                    let partitions = t
                        .partitions
                        .iter()
                        .map(|p| {
                            OffsetDeleteResponsePartition::default()
                                .with_partition_index(p.partition_index)
                                .with_error_code(codes.next().unwrap_or(NONE))
                        })
                        .collect();
                    OffsetDeleteResponseTopic::default()
                        .with_name(t.name)
                        .with_partitions(partitions)
                })
                .collect();
            OffsetDeleteResponse::default()
                .with_error_code(NONE)
                .with_topics(topics)
        }
    }
}
