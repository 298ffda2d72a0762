//! The broker core over a real Store in a tempdir: topics, configs, produce/fetch,
//! DeleteRecords, and what survives a restart.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::BytesMut;
use sluice_broker::group::GroupError;
use sluice_broker::{Broker, BrokerConfig, BrokerError, ConfigOp, NewTopic};

fn open(dir: &std::path::Path) -> Arc<Broker> {
    let store =
        Arc::new(storage::Store::open(storage::StoreConfig::new(dir.join("store"))).unwrap());
    let cfg = BrokerConfig {
        data_dir: dir.to_path_buf(),
        ..BrokerConfig::default()
    };
    Broker::open(store, cfg, Arc::new(common::SystemClock)).unwrap()
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// A valid v2 batch with `n` one-byte records (uncompressed).
fn batch(n: i32, ts: i64) -> BytesMut {
    let mut b = storage::batch_builder::BatchBuilder::new();
    for i in 0..n {
        b.record(None, Some(&[b'a' + (i % 26) as u8]), ts, &[]);
    }
    BytesMut::from(&b.build()[..])
}

#[expect(clippy::too_many_lines, reason = "one scenario, read top to bottom")]
#[tokio::test]
async fn topics_configs_and_data_survive_restart() {
    let dir = tempfile::tempdir().unwrap();
    let ts = now_ms();
    {
        let b = open(dir.path());
        let mut configs = BTreeMap::new();
        configs.insert("retention.ms".to_string(), "-1".to_string());
        configs.insert("sluice.flush".to_string(), "sync".to_string());
        let info = b
            .create_topic(
                NewTopic {
                    name: "t".into(),
                    partitions: Some(2),
                    replication_factor: Some(1),
                    configs,
                },
                false,
            )
            .unwrap();
        assert_eq!(info.partitions, 2);
        assert!(matches!(
            b.create_topic(
                NewTopic {
                    name: "t".into(),
                    ..Default::default()
                },
                false
            ),
            Err(BrokerError::TopicAlreadyExists(_))
        ));
        assert!(matches!(
            b.create_topic(
                NewTopic {
                    name: "r3".into(),
                    replication_factor: Some(3),
                    ..Default::default()
                },
                false
            ),
            Err(BrokerError::InvalidReplicationFactor(3))
        ));
        // validate_only creates nothing.
        b.create_topic(
            NewTopic {
                name: "dry".into(),
                ..Default::default()
            },
            true,
        )
        .unwrap();
        assert!(b.topic("dry").is_err());

        let p = b.produce("t", 1, batch(3, ts)).await.unwrap();
        assert_eq!(p.base_offset, 0);
        let p = b.produce("t", 1, batch(2, ts + 10)).await.unwrap();
        assert_eq!(p.base_offset, 3);
        assert!(matches!(
            b.produce("t", 9, batch(1, ts)).await,
            Err(BrokerError::UnknownTopicOrPartition)
        ));
        let mut bad = batch(1, ts);
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert!(matches!(
            b.produce("t", 0, bad).await,
            Err(BrokerError::CorruptMessage(_))
        ));

        b.alter_topic_configs(
            "t",
            &[ConfigOp::Set("max.message.bytes".into(), "100".into())],
            true,
            false,
        )
        .unwrap();
        assert!(matches!(
            b.produce("t", 0, batch(20, ts)).await,
            Err(BrokerError::MessageTooLarge { .. })
        ));
        assert!(
            b.alter_topic_configs(
                "t",
                &[ConfigOp::Set("bogus".into(), "1".into())],
                true,
                false
            )
            .is_err()
        );
        b.create_partitions("t", 3, false).unwrap();
        assert!(b.create_partitions("t", 2, false).is_err());
        b.shutdown().await.unwrap();
    }
    let b = open(dir.path());
    let t = b.topic("t").unwrap();
    assert_eq!(t.partitions, 3);
    let cfg = b.describe_topic_configs("t", None).unwrap();
    let get = |k: &str| {
        cfg.iter()
            .find(|e| e.name == k)
            .and_then(|e| e.value.clone())
    };
    assert_eq!(get("max.message.bytes").as_deref(), Some("100"));
    assert_eq!(get("retention.ms").as_deref(), Some("-1"));
    assert_eq!(get("sluice.flush").as_deref(), Some("sync"));
    let w = b.watermarks("t", 1).unwrap();
    assert_eq!((w.log_start, w.high_watermark), (0, 5));
    let f = b.fetch("t", 1, 0, 1 << 20).unwrap();
    assert_eq!(f.records, 5);
    // Offsets by time: the second batch starts at offset 3.
    assert_eq!(
        b.offset_for_timestamp("t", 1, ts + 5)
            .unwrap()
            .map(|(o, _)| o),
        Some(3)
    );
    // DeleteRecords moves the start offset; fetching below it is out of range.
    assert_eq!(b.delete_records("t", 1, 3).unwrap(), 3);
    assert!(matches!(
        b.fetch("t", 1, 0, 1 << 20),
        Err(BrokerError::OffsetOutOfRange { log_start: 3, .. })
    ));
    assert!(b.delete_records("t", 1, 99).is_err());
    b.delete_topic("t").unwrap();
    assert!(b.topic("t").is_err());
    b.shutdown().await.unwrap();
    let b = open(dir.path());
    assert!(b.list_topics().is_empty());
    b.shutdown().await.unwrap();
}

#[tokio::test]
async fn producer_ids_are_never_reused() {
    let dir = tempfile::tempdir().unwrap();
    let first = {
        let b = open(dir.path());
        let (a, _) = b.init_producer_id().unwrap();
        let (c, _) = b.init_producer_id().unwrap();
        assert_ne!(a, c);
        b.shutdown().await.unwrap();
        c
    };
    let b = open(dir.path());
    let (n, epoch) = b.init_producer_id().unwrap();
    assert!(n > first);
    assert_eq!(epoch, 0);
    b.shutdown().await.unwrap();
}

#[tokio::test]
async fn auto_create_respects_config_and_names() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(
        storage::Store::open(storage::StoreConfig::new(dir.path().join("store"))).unwrap(),
    );
    let cfg = BrokerConfig {
        data_dir: dir.path().to_path_buf(),
        auto_create_topics: true,
        default_partitions: 4,
        ..BrokerConfig::default()
    };
    let b = Broker::open(store, cfg, Arc::new(common::SystemClock)).unwrap();
    assert_eq!(b.topic_or_create("auto", true).unwrap().partitions, 4);
    assert!(b.topic_or_create("other", false).is_err());
    assert!(matches!(
        b.topic_or_create("bad name", true),
        Err(BrokerError::InvalidTopic(_))
    ));
    b.shutdown().await.unwrap();
}

fn join_request(group: &str) -> sluice_broker::group::JoinRequest {
    sluice_broker::group::JoinRequest {
        group_id: group.into(),
        member_id: String::new(),
        group_instance_id: None,
        client_id: "c".into(),
        client_host: "/127.0.0.1".into(),
        session_timeout_ms: 10_000,
        // A member whose join failed is dropped from the next rebalance after this.
        rebalance_timeout_ms: 1_000,
        protocol_type: "consumer".into(),
        protocols: vec![sluice_broker::group::ProtocolOffer {
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
    use sluice_broker::OffsetToCommit;
    let dir = tempfile::tempdir().unwrap();
    let b = open(dir.path());
    let topic = |name: &str| NewTopic {
        name: name.into(),
        partitions: Some(1),
        replication_factor: None,
        configs: BTreeMap::new(),
    };
    b.create_topic(topic("t"), false).unwrap();
    let commit = |group: &str, offset| {
        b.commit_offsets(
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
    let committed = |b: &Broker| {
        b.fetch_offsets("g", Some(&[("t".to_string(), 0)]))[0]
            .2
            .as_ref()
            .map(|o| o.offset)
    };
    let (pid, epoch) = b
        .init_transactional_producer("tx", 60_000, None)
        .await
        .unwrap();
    b.add_partitions_to_txn("tx", pid, epoch, &[("t".into(), 0)])
        .unwrap();
    let txn_state = |b: &Broker| b.list_transactions(&[], &[])[0].2;
    assert_eq!(txn_state(&b), "Ongoing");

    b.inject_metadata_failure(true);
    assert!(
        commit("g", 9).is_err(),
        "OffsetCommit succeeded without its record"
    );
    assert_eq!(committed(&b), Some(5));
    // A commit to a group that did not exist leaves no group behind.
    assert!(commit("new-group", 1).is_err());
    assert!(b.list_groups().iter().all(|g| g.group_id != "new-group"));
    assert!(b.create_topic(topic("u"), false).is_err());
    assert!(b.list_topics().iter().all(|t| t.name != "u"));
    assert!(b.end_txn("tx", pid, epoch, true).await.is_err());
    assert_eq!(txn_state(&b), "Ongoing");
    // AlterConfigs: refused, the old value still in force.
    let set_retention = ConfigOp::Set("retention.ms".into(), "1000".into());
    assert!(
        b.alter_topic_configs("t", &[set_retention], true, false)
            .is_err()
    );
    let retention = b.describe_topic_configs("t", Some(&["retention.ms".to_string()]));
    assert!(!retention.unwrap()[0].is_override);
    // OffsetDelete and DeleteGroup: refused, the offsets and the group still there.
    assert!(b.delete_offsets("g", &[("t".into(), 0)], &[]).is_err());
    assert_eq!(committed(&b), Some(5));
    assert!(b.delete_group("g").is_err());
    assert!(b.list_groups().iter().any(|g| g.group_id == "g"));
    assert_eq!(committed(&b), Some(5));
    // A rebalance whose new generation cannot be saved hands out no generation.
    assert!(matches!(
        b.join_group(join_request("joiners")).await,
        Err(GroupError::CoordinatorNotAvailable)
    ));

    // Once the disk is back the same requests work; nothing half-done is in the way.
    b.inject_metadata_failure(false);
    b.create_topic(topic("u"), false).unwrap();
    b.end_txn("tx", pid, epoch, true).await.unwrap();
    let joined = b.join_group(join_request("joiners")).await.unwrap();
    assert_eq!(txn_state(&b), "CompleteCommit");
    b.shutdown().await.unwrap();
    drop(b);
    let b = open(dir.path());
    assert_eq!(committed(&b), Some(5));
    assert!(b.list_topics().iter().any(|t| t.name == "u"));
    // The generation handed out once the disk was back was saved: the next one is newer.
    let again = b.join_group(join_request("joiners")).await.unwrap();
    assert!(again.generation_id > joined.generation_id);
    b.shutdown().await.unwrap();
}
