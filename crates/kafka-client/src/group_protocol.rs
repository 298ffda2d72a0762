//! The "consumer" embedded protocol of classic consumer groups: subscription and assignment
//! blobs carried opaquely by JoinGroup/SyncGroup, and the range assignor the leader runs.

use std::collections::{BTreeMap, BTreeSet};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{
    ConsumerProtocolAssignment, ConsumerProtocolSubscription, TopicName,
    consumer_protocol_assignment::TopicPartition,
};
use kafka_protocol::protocol::{Decodable, Encodable};

use super::topic_name;

const SUBSCRIPTION_VERSION: i16 = 1;
const ASSIGNMENT_VERSION: i16 = 1;

pub fn encode_subscription(topics: &[String]) -> Bytes {
    let mut s = ConsumerProtocolSubscription::default();
    s.topics = topics.iter().map(|t| super::str_bytes(t)).collect();
    encode_versioned(&s, SUBSCRIPTION_VERSION)
}

pub fn decode_subscription(mut data: Bytes) -> Option<Vec<String>> {
    let version = read_version(&mut data)?;
    let s = ConsumerProtocolSubscription::decode(&mut data, version.min(3)).ok()?;
    Some(s.topics.iter().map(|t| t.to_string()).collect())
}

pub fn encode_assignment(partitions: &BTreeMap<String, Vec<i32>>) -> Bytes {
    let mut a = ConsumerProtocolAssignment::default();
    a.assigned_partitions = partitions
        .iter()
        .map(|(t, ps)| {
            let mut tp = TopicPartition::default();
            tp.topic = topic_name(t);
            tp.partitions = ps.clone();
            tp
        })
        .collect();
    encode_versioned(&a, ASSIGNMENT_VERSION)
}

pub fn decode_assignment(mut data: Bytes) -> Option<BTreeMap<String, Vec<i32>>> {
    if data.is_empty() {
        return Some(BTreeMap::new());
    }
    let version = read_version(&mut data)?;
    let a = ConsumerProtocolAssignment::decode(&mut data, version.min(3)).ok()?;
    Some(
        a.assigned_partitions
            .into_iter()
            .map(|tp| {
                let TopicName(name) = tp.topic;
                (name.to_string(), tp.partitions)
            })
            .collect(),
    )
}

fn encode_versioned<T: Encodable>(msg: &T, version: i16) -> Bytes {
    let mut buf = BytesMut::new();
    buf.put_i16(version);
    // Encoding a plain in-memory message cannot fail at a supported version.
    if msg.encode(&mut buf, version).is_err() {
        buf.truncate(2);
    }
    buf.freeze()
}

fn read_version(data: &mut Bytes) -> Option<i16> {
    (data.len() >= 2).then(|| data.get_i16())
}

/// Kafka's RangeAssignor: per topic, partitions split into contiguous ranges over the sorted
/// subscribed members; the first `n % m` members get one extra.
pub fn range_assign(
    members: &BTreeMap<String, Vec<String>>,
    partition_counts: &BTreeMap<String, i32>,
) -> BTreeMap<String, BTreeMap<String, Vec<i32>>> {
    let mut out: BTreeMap<String, BTreeMap<String, Vec<i32>>> = members
        .keys()
        .map(|m| (m.clone(), BTreeMap::new()))
        .collect();
    let topics: BTreeSet<&String> = members.values().flatten().collect();
    for topic in topics {
        let Some(&count) = partition_counts.get(topic) else {
            continue;
        };
        let subscribed: Vec<&String> = members
            .iter()
            .filter(|(_, ts)| ts.contains(topic))
            .map(|(m, _)| m)
            .collect();
        let m = subscribed.len() as i32;
        let (per, extra) = (count / m, count % m);
        let mut next = 0;
        for (i, member) in subscribed.iter().enumerate() {
            let n = per + i32::from((i as i32) < extra);
            if n > 0 {
                out.entry((*member).clone())
                    .or_default()
                    .insert(topic.clone(), (next..next + n).collect());
            }
            next += n;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blobs_round_trip() {
        let topics = vec!["a".to_string(), "b".to_string()];
        assert_eq!(
            decode_subscription(encode_subscription(&topics)),
            Some(topics)
        );
        let assignment = BTreeMap::from([("a".to_string(), vec![0, 2])]);
        assert_eq!(
            decode_assignment(encode_assignment(&assignment)),
            Some(assignment)
        );
    }

    #[test]
    fn range_matches_kafka() {
        let members = BTreeMap::from([
            ("m1".to_string(), vec!["t".to_string()]),
            ("m2".to_string(), vec!["t".to_string()]),
        ]);
        let counts = BTreeMap::from([("t".to_string(), 3)]);
        let a = range_assign(&members, &counts);
        assert_eq!(a["m1"]["t"], vec![0, 1]);
        assert_eq!(a["m2"]["t"], vec![2]);
    }
}
