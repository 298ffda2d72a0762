//! The Kafka coordinators over a real broker core and store: producer ids, and state
//! changes whose metadata record cannot be saved.

use std::collections::BTreeMap;
use std::sync::Arc;

use broker::{Broker, BrokerConfig, ConfigOp, NewTopic};
use sluice_kafka_coord::group::{GroupError, JoinRequest, ProtocolOffer};
use sluice_kafka_coord::{CoordConfig, KafkaCoord, OffsetToCommit};

fn open_broker(dir: &std::path::Path) -> Arc<Broker> {
    let store =
        Arc::new(storage::Store::open(storage::StoreConfig::new(dir.join("store"))).unwrap());
    let cfg = BrokerConfig {
        data_dir: dir.to_path_buf(),
        ..BrokerConfig::default()
    };
    Broker::open(store, cfg, Arc::new(common::SystemClock)).unwrap()
}

/// A broker with its Kafka coordinators, as the Kafka door opens them.
fn open(dir: &std::path::Path) -> Arc<KafkaCoord> {
    KafkaCoord::open(open_broker(dir), CoordConfig::default()).unwrap()
}

async fn shutdown(c: Arc<KafkaCoord>) {
    c.shutdown().await;
    c.broker().shutdown().await.unwrap();
}

#[tokio::test]
async fn producer_ids_are_never_reused() {
    let dir = tempfile::tempdir().unwrap();
    let first = {
        let k = open(dir.path());
        let (a, _) = k.init_producer_id().unwrap();
        let (c, _) = k.init_producer_id().unwrap();
        assert_ne!(a, c);
        shutdown(k).await;
        c
    };
    let k = open(dir.path());
    let (n, epoch) = k.init_producer_id().unwrap();
    assert!(n > first);
    assert_eq!(epoch, 0);
    shutdown(k).await;
}

fn join_request(group: &str) -> JoinRequest {
    JoinRequest {
        group_id: group.into(),
        member_id: String::new(),
        group_instance_id: None,
        client_id: "c".into(),
        client_host: "/127.0.0.1".into(),
        session_timeout_ms: 10_000,
        // A member whose join failed is dropped from the next rebalance after this.
        rebalance_timeout_ms: 1_000,
        protocol_type: "consumer".into(),
        protocols: vec![ProtocolOffer {
            name: "range".into(),
            metadata: bytes::Bytes::new(),
        }],
        require_known_member_id: false,
    }
}

/// Issue 12: a change whose metadata record cannot be written is an error the client sees,
/// and the state is what it was before, in memory and after a restart.
#[tokio::test]
async fn a_failed_metadata_write_fails_the_request_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let k = open(dir.path());
    let b = k.broker().clone();
    let topic = |name: &str| NewTopic {
        name: name.into(),
        partitions: Some(1),
        replication_factor: None,
        configs: BTreeMap::new(),
    };
    b.create_topic(topic("t"), false).unwrap();
    let commit = |group: &str, offset| {
        k.commit_offsets(
            group,
            -1,
            "",
            None,
            vec![OffsetToCommit {
                topic: "t".into(),
                partition: 0,
                offset,
                leader_epoch: -1,
                metadata: None,
            }],
        )
    };
    commit("g", 5).unwrap();
    let committed = |k: &KafkaCoord| {
        k.fetch_offsets("g", Some(&[("t".to_string(), 0)]))[0]
            .2
            .as_ref()
            .map(|o| o.offset)
    };
    let (pid, epoch) = k
        .init_transactional_producer("tx", 60_000, None)
        .await
        .unwrap();
    k.add_partitions_to_txn("tx", pid, epoch, &[("t".into(), 0)])
        .unwrap();
    let txn_state = |k: &KafkaCoord| k.list_transactions(&[], &[])[0].2;
    assert_eq!(txn_state(&k), "Ongoing");

    b.inject_metadata_failure(true);
    assert!(
        commit("g", 9).is_err(),
        "OffsetCommit succeeded without its record"
    );
    assert_eq!(committed(&k), Some(5));
    // A commit to a group that did not exist leaves no group behind.
    assert!(commit("new-group", 1).is_err());
    assert!(k.list_groups().iter().all(|g| g.group_id != "new-group"));
    assert!(b.create_topic(topic("u"), false).is_err());
    assert!(b.list_topics().iter().all(|t| t.name != "u"));
    assert!(k.end_txn("tx", pid, epoch, true).await.is_err());
    assert_eq!(txn_state(&k), "Ongoing");
    // AlterConfigs: refused, the old value still in force.
    let set_retention = ConfigOp::Set("retention.ms".into(), "1000".into());
    assert!(
        b.alter_topic_configs("t", &[set_retention], true, false)
            .is_err()
    );
    let retention = b.describe_topic_configs("t", Some(&["retention.ms".to_string()]));
    assert!(!retention.unwrap()[0].is_override);
    // OffsetDelete and DeleteGroup: refused, the offsets and the group still there.
    assert!(k.delete_offsets("g", &[("t".into(), 0)], &[]).is_err());
    assert_eq!(committed(&k), Some(5));
    assert!(k.delete_group("g").is_err());
    assert!(k.list_groups().iter().any(|g| g.group_id == "g"));
    assert_eq!(committed(&k), Some(5));
    // A rebalance whose new generation cannot be saved hands out no generation.
    assert!(matches!(
        k.join_group(join_request("joiners")).await,
        Err(GroupError::CoordinatorNotAvailable)
    ));

    // Once the disk is back the same requests work; nothing half-done is in the way.
    b.inject_metadata_failure(false);
    b.create_topic(topic("u"), false).unwrap();
    k.end_txn("tx", pid, epoch, true).await.unwrap();
    let joined = k.join_group(join_request("joiners")).await.unwrap();
    assert_eq!(txn_state(&k), "CompleteCommit");
    drop(b);
    shutdown(k).await;
    let k = open(dir.path());
    let b = k.broker().clone();
    assert_eq!(committed(&k), Some(5));
    assert!(b.list_topics().iter().any(|t| t.name == "u"));
    // The generation handed out once the disk was back was saved: the next one is newer.
    let again = k.join_group(join_request("joiners")).await.unwrap();
    assert!(again.generation_id > joined.generation_id);
    drop(b);
    shutdown(k).await;
}

fn now_ms() -> i64 {
    use common::Clock;
    common::SystemClock.now_ms()
}

/// One record `value` from producer `pid` (sequence `seq`), transactional or not.
fn batch(pid: i64, epoch: i16, seq: i32, value: &str, txn: bool) -> bytes::BytesMut {
    let mut b = broker::batch::BatchBuilder::new().producer(pid, epoch, seq);
    if txn {
        b = b.transactional();
    }
    b.record(None, Some(value.as_bytes()), now_ms(), &[]);
    bytes::BytesMut::from(&b.build()[..])
}

/// Issue 12: the core's committed-only reader, fed by the Kafka coordinator's hooks, leaves
/// out an aborted transaction's records and the markers, and stops at an open transaction;
/// an idempotent retry is answered with the original offset through the same hooks.
#[tokio::test]
async fn committed_records_one_by_one_skip_aborted_transactions() {
    let dir = tempfile::tempdir().unwrap();
    let k = open(dir.path());
    let b = k.broker().clone();
    b.create_topic(
        NewTopic {
            name: "t".into(),
            partitions: Some(1),
            replication_factor: None,
            configs: BTreeMap::new(),
        },
        false,
    )
    .unwrap();
    let (plain, _) = k.init_producer_id().unwrap();
    let first = b
        .produce("t", 0, batch(plain, 0, 0, "a", false))
        .await
        .unwrap();
    // The same batch again (a retry): not stored twice, same offset.
    let retry = b
        .produce("t", 0, batch(plain, 0, 0, "a", false))
        .await
        .unwrap();
    assert_eq!(retry.base_offset, first.base_offset);
    // Out of order: refused with the coordinator's error, through the core.
    let gap = b.produce("t", 0, batch(plain, 0, 5, "x", false)).await;
    let err = gap.expect_err("a sequence gap was accepted");
    assert!(matches!(
        sluice_kafka_coord::CoordError::from_broker(&err),
        Some(sluice_kafka_coord::CoordError::OutOfOrderSequence(_))
    ));

    let (tp, te) = k
        .init_transactional_producer("tx", 60_000, None)
        .await
        .unwrap();
    k.add_partitions_to_txn("tx", tp, te, &[("t".into(), 0)])
        .unwrap();
    b.produce("t", 0, batch(tp, te, 0, "aborted", true))
        .await
        .unwrap();
    k.end_txn("tx", tp, te, false).await.unwrap();
    b.produce("t", 0, batch(plain, 0, 1, "b", false))
        .await
        .unwrap();
    k.add_partitions_to_txn("tx", tp, te, &[("t".into(), 0)])
        .unwrap();
    b.produce("t", 0, batch(tp, te, 1, "open", true))
        .await
        .unwrap();

    let values = |from| {
        let read = b.read_records("t", 0, from, 100, 1 << 20).unwrap();
        let v: Vec<String> = read
            .records
            .iter()
            .map(|r| String::from_utf8_lossy(r.value.as_deref().unwrap()).into_owned())
            .collect();
        (v, read.next_offset)
    };
    // Offsets: 0 a, 1 aborted, 2 abort marker, 3 b, 4 open (not yet stable).
    assert_eq!(b.last_stable_offset("t", 0).unwrap(), 4);
    assert_eq!(values(0), (vec!["a".to_string(), "b".to_string()], 4));
    assert_eq!(values(1), (vec!["b".to_string()], 4));
    k.end_txn("tx", tp, te, true).await.unwrap();
    assert_eq!(values(4).0, vec!["open".to_string()]);
    drop(b);
    shutdown(k).await;
}

/// A data directory written before the coordinators moved out of the core (metadata
/// version 1: group generations, producer-id blocks and transactions in fields and records
/// of their own) opens with its state: generations continue, producer ids are not reused,
/// committed offsets are there.
#[tokio::test]
async fn version_1_metadata_is_upgraded_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let meta = dir.path().join("meta");
    std::fs::create_dir_all(&meta).unwrap();
    let snapshot = serde_json::json!({
        "version": 1,
        "topics": {},
        "next_partition_id": 0,
        "next_producer_id": 5000,
        "groups": {
            "g": {
                "group_id": "g",
                "generation_id": 7,
                "protocol_type": "consumer",
                "offsets": [["gone", 0, {
                    "offset": 42, "leader_epoch": -1, "metadata": null,
                    "commit_timestamp_ms": now_ms()
                }]]
            }
        },
        "transactions": {}
    });
    std::fs::write(meta.join("snapshot.json"), snapshot.to_string()).unwrap();
    let log = [
        r#"{"type":"GroupGeneration","group_id":"h","generation_id":3,"protocol_type":"consumer"}"#,
        r#"{"type":"ProducerIdsReserved","next_producer_id":6000}"#,
    ];
    std::fs::write(meta.join("metadata.log"), log.join("\n") + "\n").unwrap();

    let k = open(dir.path());
    let (id, _) = k.init_producer_id().unwrap();
    assert!(
        id >= 6000,
        "producer id {id} may repeat one handed out before the upgrade"
    );
    let committed = k.fetch_offsets("g", None);
    assert_eq!(committed.len(), 1);
    assert_eq!(committed[0].2.as_ref().map(|o| o.offset), Some(42));
    let joined = k.join_group(join_request("g")).await.unwrap();
    assert_eq!(joined.generation_id, 8, "the generation started over");
    let joined = k.join_group(join_request("h")).await.unwrap();
    assert_eq!(joined.generation_id, 4);
    shutdown(k).await;
    // Written back in the new shape, and read again the same.
    let again = open(dir.path());
    assert_eq!(again.fetch_offsets("g", None).len(), 1);
    assert!(again.init_producer_id().unwrap().0 > id);
    shutdown(again).await;
}

/// KIP-447: a transactional producer that names its consumer's group membership in
/// TxnOffsetCommit must name the current generation and a member of it, so a zombie that
/// lost its partitions in a rebalance cannot commit offsets for them.
#[tokio::test]
async fn txn_offset_commit_checks_the_group_generation() {
    use sluice_kafka_coord::CoordError;
    use sluice_kafka_coord::txn::GroupMember;
    let dir = tempfile::tempdir().unwrap();
    let k = open(dir.path());
    k.broker()
        .create_topic(
            NewTopic {
                name: "in".into(),
                partitions: Some(1),
                replication_factor: None,
                configs: BTreeMap::new(),
            },
            false,
        )
        .unwrap();
    let joined = k.join_group(join_request("eos")).await.unwrap();
    let (pid, epoch) = k
        .init_transactional_producer("app", 60_000, None)
        .await
        .unwrap();
    k.add_offsets_to_txn("app", pid, epoch, "eos").unwrap();
    let offsets = || vec![("in".to_string(), 0, 5, -1, None)];
    let commit = |generation_id, member_id: &str| {
        let member = GroupMember {
            generation_id,
            member_id,
            group_instance_id: None,
        };
        k.txn_offset_commit("app", "eos", pid, epoch, &member, offsets())
    };
    let stale = commit(joined.generation_id + 1, &joined.member_id);
    assert!(matches!(
        stale,
        Err(CoordError::Group(GroupError::IllegalGeneration))
    ));
    let zombie = commit(joined.generation_id, "zombie");
    assert!(matches!(
        zombie,
        Err(CoordError::Group(GroupError::UnknownMemberId))
    ));
    commit(joined.generation_id, &joined.member_id).expect("the current member commits");
    commit(-1, "").expect("a client before KIP-447 is not checked");
    shutdown(k).await;
}
