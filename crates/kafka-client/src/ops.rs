//! Multi-step client operations shared by several commands: resolving a topic's partitions and
//! leaders, and ListOffsets by leader.

use std::collections::BTreeMap;

use kafka_protocol::messages::{
    BrokerId, ListOffsetsRequest, MetadataResponse,
    list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic},
};

use super::{Client, ClientError, Result, topic_name};

/// ListOffsets timestamp meaning "log start offset".
pub const EARLIEST: i64 = -2;
/// ListOffsets timestamp meaning "log end offset".
pub const LATEST: i64 = -1;

/// One partition of a topic and its leader.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PartitionInfo {
    pub partition: i32,
    pub leader: i32,
}

/// Partitions (sorted) of `topic`, failing with the broker's error when it has none.
pub async fn topic_partitions(client: &mut Client, topic: &str) -> Result<Vec<PartitionInfo>> {
    let md = client.metadata(Some(&[topic.to_string()]), false).await?;
    partitions_in(&md, topic)
}

pub fn partitions_in(md: &MetadataResponse, topic: &str) -> Result<Vec<PartitionInfo>> {
    let Some(t) = md
        .topics
        .iter()
        .find(|t| t.name.as_ref().map(|n| n.0.as_str()) == Some(topic))
    else {
        return Err(ClientError::broker(format!("topic {topic}"), 3, None));
    };
    if t.error_code != 0 {
        return Err(ClientError::broker(
            format!("topic {topic}"),
            t.error_code,
            None,
        ));
    }
    let mut out: Vec<PartitionInfo> = t
        .partitions
        .iter()
        .map(|p| PartitionInfo {
            partition: p.partition_index,
            leader: p.leader_id.0,
        })
        .collect();
    out.sort_by_key(|p| p.partition);
    Ok(out)
}

/// Offsets for `(partition, timestamp)` queries of one topic (timestamp may be [`EARLIEST`] or
/// [`LATEST`]); `None` when no record has a timestamp at or after the one asked.
pub async fn list_offsets(
    client: &mut Client,
    topic: &str,
    partitions: &[PartitionInfo],
    timestamp_for: impl Fn(i32) -> i64,
) -> Result<BTreeMap<i32, Option<(i64, i64)>>> {
    let mut by_leader: BTreeMap<i32, Vec<i32>> = BTreeMap::new();
    for p in partitions {
        by_leader.entry(p.leader).or_default().push(p.partition);
    }
    let mut out = BTreeMap::new();
    for (leader, ps) in by_leader {
        let mut request = ListOffsetsRequest::default();
        request.replica_id = BrokerId(-1);
        let mut t = ListOffsetsTopic::default();
        t.name = topic_name(topic);
        t.partitions = ps
            .iter()
            .map(|&p| {
                let mut lp = ListOffsetsPartition::default();
                lp.partition_index = p;
                lp.current_leader_epoch = -1;
                lp.timestamp = timestamp_for(p);
                lp
            })
            .collect();
        request.topics = vec![t];
        request.timeout_ms = 30_000;
        let (response, _) = client.node(leader).await?.send(&request).await?;
        for t in response.topics {
            for p in t.partitions {
                if p.error_code != 0 {
                    return Err(ClientError::broker(
                        format!("list offsets of {topic}/{}", p.partition_index),
                        p.error_code,
                        None,
                    ));
                }
                let found = (p.offset >= 0).then_some((p.offset, p.timestamp));
                out.insert(p.partition_index, found);
            }
        }
    }
    Ok(out)
}

/// Log start and end offsets of each partition.
pub async fn watermarks(
    client: &mut Client,
    topic: &str,
    partitions: &[PartitionInfo],
) -> Result<BTreeMap<i32, (i64, i64)>> {
    let start = list_offsets(client, topic, partitions, |_| EARLIEST).await?;
    let end = list_offsets(client, topic, partitions, |_| LATEST).await?;
    Ok(partitions
        .iter()
        .map(|p| {
            let s = start.get(&p.partition).copied().flatten().map(|x| x.0);
            let e = end.get(&p.partition).copied().flatten().map(|x| x.0);
            (p.partition, (s.unwrap_or(0), e.unwrap_or(0)))
        })
        .collect())
}

/// One partition's part of a fetch response, records decoded.
pub struct Fetched {
    pub partition: i32,
    pub error_code: i16,
    pub high_watermark: i64,
    pub records: Vec<kafka_protocol::records::Record>,
    /// Bytes the broker returned (non-zero with no whole batch: raise the max bytes).
    pub raw_bytes: usize,
}

/// Fetches `(partition, offset, max_bytes)` of `topic` from broker `leader`.
pub async fn fetch(
    client: &mut Client,
    leader: i32,
    topic: &str,
    wants: &[(i32, i64, i32)],
    max_wait_ms: i32,
) -> Result<Vec<Fetched>> {
    use kafka_protocol::messages::FetchRequest;
    use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};

    let mut t = FetchTopic::default();
    t.topic = topic_name(topic);
    t.partitions = wants
        .iter()
        .map(|&(p, offset, max_bytes)| {
            let mut fp = FetchPartition::default();
            fp.partition = p;
            fp.current_leader_epoch = -1;
            fp.fetch_offset = offset;
            fp.last_fetched_epoch = -1;
            fp.log_start_offset = -1;
            fp.partition_max_bytes = max_bytes;
            fp
        })
        .collect();
    let mut request = FetchRequest::default();
    request.replica_id = BrokerId(-1);
    request.max_wait_ms = max_wait_ms;
    request.min_bytes = 1;
    request.max_bytes = 64 * 1024 * 1024;
    request.isolation_level = 0;
    request.session_id = 0;
    request.session_epoch = -1;
    request.topics = vec![t];
    let (response, _) = client.node(leader).await?.send(&request).await?;
    if response.error_code != 0 {
        return Err(ClientError::broker(
            format!("fetch {topic}"),
            response.error_code,
            None,
        ));
    }
    let mut out = Vec::new();
    for t in response.responses {
        for p in t.partitions {
            let raw = p.records.unwrap_or_default();
            let raw_bytes = raw.len();
            let records = if p.error_code == 0 {
                super::records::decode_records(raw).map_err(|e| ClientError::Protocol {
                    addr: format!("broker {leader}"),
                    reason: format!("{e:#}"),
                })?
            } else {
                Vec::new()
            };
            out.push(Fetched {
                partition: p.partition_index,
                error_code: p.error_code,
                high_watermark: p.high_watermark,
                records,
                raw_bytes,
            });
        }
    }
    Ok(out)
}
