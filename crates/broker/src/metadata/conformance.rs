//! The checks every [`MetadataStore`] must pass: the pure state machine
//! ([`MetaImage::apply`]) is the model, and a store must hold exactly the model's image
//! after every successful append, after a failed one, after `compact`, and after being
//! closed and reopened. `crate::metadata` runs them on the local log; the cluster's store
//! calls [`run`] with its own [`Harness`].
//!
//! Each check panics with a message naming the broken rule.

use std::collections::BTreeMap;
use std::path::Path;

use super::image::{MetaImage, MetaRecord, TopicRecord};
use super::store::MetadataStore;
use crate::error::Result;
use crate::offsets::CommittedOffset;

/// How the suite opens an implementation and makes its writes fail.
pub trait Harness {
    type Store: MetadataStore;
    /// Opens (or reopens) the store kept in `dir`, compacting after `snapshot_every`
    /// records if the implementation compacts on its own.
    fn open(&self, dir: &Path, snapshot_every: usize) -> Result<Self::Store>;
    /// While `on`, every append must fail as a full or broken disk would.
    fn fail_appends(&self, store: &mut Self::Store, on: bool);
}

/// Runs every check, each in its own directory under `dir`.
pub fn run<H: Harness>(h: &H, dir: &Path) {
    applies_like_the_model(h, &dir.join("model"));
    reopen_yields_the_same_image(h, &dir.join("reopen"));
    failed_append_changes_nothing(h, &dir.join("failure"));
    compaction_keeps_the_image(h, &dir.join("compact"));
}

/// A script touching every record kind a store is written today: `n` rounds of topic,
/// config, offset, group and extension changes, some undone later in the same round.
pub fn script(n: usize) -> Vec<MetaRecord> {
    let mut out = Vec::new();
    for i in 0..n {
        let topic = format!("t{i}");
        let group = format!("g{}", i % 3);
        let base = u32::try_from(i * 4).unwrap_or(u32::MAX - 4);
        out.push(MetaRecord::TopicCreated(TopicRecord {
            name: topic.clone(),
            topic_id: 0x5eed_0000 + i as u128,
            partitions: vec![base, base + 1],
            configs: BTreeMap::from([("retention.ms".to_string(), format!("{}", 1000 + i))]),
        }));
        out.push(MetaRecord::PartitionsAdded {
            name: topic.clone(),
            partitions: vec![base + 2],
        });
        out.push(MetaRecord::TopicConfigsSet {
            name: topic.clone(),
            configs: BTreeMap::from([("cleanup.policy".to_string(), "compact".to_string())]),
        });
        let committed = |offset: i64| CommittedOffset {
            offset,
            leader_epoch: -1,
            metadata: (offset.rem_euclid(2) == 0).then(|| format!("m{offset}")),
            commit_timestamp_ms: 1_000 + offset,
        };
        out.push(MetaRecord::OffsetsCommitted {
            group_id: group.clone(),
            offsets: vec![
                (topic.clone(), 0, committed(i as i64)),
                (topic.clone(), 1, committed(7)),
            ],
        });
        out.push(MetaRecord::OffsetsDeleted {
            group_id: group.clone(),
            partitions: vec![(topic.clone(), 1)],
        });
        out.push(MetaRecord::QueueDeclared(super::image::QueueRecord {
            name: topic.clone(),
            state_partition: base + 3,
            owns_topic: i % 2 == 0,
            settings: BTreeMap::from([("x-message-ttl".to_string(), "60000".to_string())]),
            over: None,
        }));
        out.push(MetaRecord::Extension {
            namespace: "test.generations".into(),
            key: group.clone(),
            value: Some(serde_json::json!({ "generation": i })),
        });
        out.push(MetaRecord::Extension {
            namespace: "test.ids".into(),
            key: "next".into(),
            value: Some((1_000 * (i as i64 + 1)).into()),
        });
        if i % 4 == 3 {
            out.push(MetaRecord::TopicDeleted {
                name: format!("t{}", i - 1),
            });
            out.push(MetaRecord::GroupDeleted {
                group_id: format!("g{}", (i + 1) % 3),
            });
            out.push(MetaRecord::Extension {
                namespace: "test.generations".into(),
                key: format!("g{}", (i + 2) % 3),
                value: None,
            });
            out.push(MetaRecord::QueueDeleted {
                name: format!("t{}", i - 1),
            });
        }
    }
    out
}

fn model(records: &[MetaRecord]) -> MetaImage {
    let mut image = MetaImage::default();
    image.version = 0;
    for r in records {
        image.apply(r.clone());
    }
    image
}

/// The image a store holds, with the format version (a storage detail) left out.
fn state(store: &impl MetadataStore) -> MetaImage {
    let mut image = store.image().clone();
    image.version = 0;
    image
}

fn open<H: Harness>(h: &H, dir: &Path, snapshot_every: usize) -> H::Store {
    h.open(dir, snapshot_every)
        .unwrap_or_else(|e| panic!("opening the store in {}: {e}", dir.display()))
}

/// After every append the store's image is the model's.
fn applies_like_the_model<H: Harness>(h: &H, dir: &Path) {
    let records = script(6);
    let mut store = open(h, dir, 1_000);
    for (i, r) in records.iter().enumerate() {
        store
            .append(r.clone(), i % 3 == 0)
            .unwrap_or_else(|e| panic!("append {i} ({r:?}) failed: {e}"));
        assert_eq!(
            state(&store),
            model(&records[..=i]),
            "after append {i} the image differs from the records applied in order"
        );
    }
}

/// Closing and reopening shows the same image, durable appends or not.
fn reopen_yields_the_same_image<H: Harness>(h: &H, dir: &Path) {
    let records = script(5);
    {
        let mut store = open(h, dir, 1_000);
        for (i, r) in records.iter().enumerate() {
            store.append(r.clone(), i % 2 == 0).expect("append");
        }
    }
    let store = open(h, dir, 1_000);
    assert_eq!(
        state(&store),
        model(&records),
        "reopen lost or changed records"
    );
    drop(store);
    let store = open(h, dir, 1_000);
    assert_eq!(
        state(&store),
        model(&records),
        "a second reopen changed the image"
    );
}

/// A failed append leaves the image, and what a reopen shows, as before; appends work
/// again once the failure is gone.
fn failed_append_changes_nothing<H: Harness>(h: &H, dir: &Path) {
    let records = script(3);
    let (before, failed) = records.split_at(records.len() / 2);
    let mut store = open(h, dir, 1_000);
    for r in before {
        store.append(r.clone(), true).expect("append");
    }
    h.fail_appends(&mut store, true);
    for r in failed {
        assert!(
            store.append(r.clone(), true).is_err(),
            "append succeeded while writes fail: {r:?}"
        );
        assert_eq!(
            state(&store),
            model(before),
            "a failed append changed the image"
        );
    }
    h.fail_appends(&mut store, false);
    drop(store);
    let mut store = open(h, dir, 1_000);
    assert_eq!(
        state(&store),
        model(before),
        "a failed append showed up after reopen"
    );
    store
        .append(failed[0].clone(), true)
        .expect("append after the failure cleared");
    let mut expected = before.to_vec();
    expected.push(failed[0].clone());
    assert_eq!(state(&store), model(&expected));
}

/// Compaction, explicit or on the store's own schedule, never changes the image.
fn compaction_keeps_the_image<H: Harness>(h: &H, dir: &Path) {
    let records = script(8);
    {
        let mut store = open(h, dir, 7);
        for (i, r) in records.iter().enumerate() {
            store.append(r.clone(), false).expect("append");
            if i == records.len() / 2 {
                store.compact().expect("compact");
                assert_eq!(
                    state(&store),
                    model(&records[..=i]),
                    "compact changed the image"
                );
            }
        }
    }
    let mut store = open(h, dir, 7);
    assert_eq!(
        state(&store),
        model(&records),
        "reopen after compactions differs"
    );
    store.compact().expect("compact");
    drop(store);
    assert_eq!(state(&open(h, dir, 7)), model(&records));
}
