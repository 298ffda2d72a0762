//! The broker core over a real Store in a tempdir: topics, configs, produce/fetch,
//! DeleteRecords, and what survives a restart.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::BytesMut;
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

/// Issue 14: committed offsets follow the data's durability: fsynced before the commit is
/// acknowledged under `flush = sync`, written to the OS under `flush = async`.
#[tokio::test]
async fn committed_offsets_are_fsynced_under_flush_sync() {
    for (flush, fsyncs_per_commit) in [(storage::Flush::Sync, 1), (storage::Flush::Async, 0)] {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(
            storage::Store::open(storage::StoreConfig::new(dir.path().join("s"))).unwrap(),
        );
        let cfg = BrokerConfig {
            data_dir: dir.path().to_path_buf(),
            default_flush: flush,
            ..BrokerConfig::default()
        };
        let b = Broker::open(store, cfg, Arc::new(common::SystemClock)).unwrap();
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
        let before = b.metadata_durable_appends();
        let offset = sluice_broker::CommittedOffset {
            offset: 3,
            leader_epoch: -1,
            metadata: None,
            commit_timestamp_ms: now_ms(),
        };
        b.commit_offsets("g", vec![("t".into(), 0, offset)])
            .unwrap();
        assert_eq!(
            b.metadata_durable_appends() - before,
            fsyncs_per_commit,
            "{flush:?}"
        );
        b.shutdown().await.unwrap();
    }
}
