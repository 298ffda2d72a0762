//! Durable broker metadata (topics, configs, committed offsets, group generations,
//! producer ids) as KRaft-shaped JSON records: `meta/metadata.log` (one record per line)
//! applied over `meta/snapshot.json`. Compaction writes a new snapshot and empties the log.
//!
//! A torn last line (crash mid-write) is ignored with a warning; any other bad line is an
//! error (the file is not ours, or it is damaged).

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{BrokerError, Result};
use crate::group::CommittedOffset;

/// Format version written in every snapshot.
const SNAPSHOT_VERSION: u32 = 1;

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct TopicRecord {
    pub name: String,
    #[serde(with = "hex_u128")]
    pub topic_id: u128,
    pub partitions: Vec<u32>,
    pub configs: BTreeMap<String, String>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct GroupRecord {
    pub group_id: String,
    pub generation_id: i32,
    pub protocol_type: Option<String>,
    pub offsets: Vec<(String, i32, CommittedOffset)>,
}

/// u128 as a 32-digit hex string (JSON numbers cannot hold it).
mod hex_u128 {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &u128, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{v:032x}"))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u128, D::Error> {
        let s = String::deserialize(d)?;
        u128::from_str_radix(&s, 16).map_err(serde::de::Error::custom)
    }
}

/// One change to the metadata image.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(tag = "type")]
pub enum MetaRecord {
    TopicCreated(TopicRecord),
    TopicDeleted {
        name: String,
    },
    PartitionsAdded {
        name: String,
        partitions: Vec<u32>,
    },
    TopicConfigsSet {
        name: String,
        configs: BTreeMap<String, String>,
    },
    OffsetsCommitted {
        group_id: String,
        offsets: Vec<(String, i32, CommittedOffset)>,
    },
    OffsetsDeleted {
        group_id: String,
        partitions: Vec<(String, i32)>,
    },
    GroupGeneration {
        group_id: String,
        generation_id: i32,
        protocol_type: Option<String>,
    },
    GroupDeleted {
        group_id: String,
    },
    ProducerIdsReserved {
        next_producer_id: i64,
    },
    /// A transactional id's whole state after a transition.
    TxnUpdated(crate::txn::coordinator::TxnRecord),
    /// A transactional id expired.
    TxnRemoved {
        transactional_id: String,
    },
}

/// The whole metadata image.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct MetaImage {
    pub version: u32,
    pub topics: BTreeMap<String, TopicRecord>,
    pub groups: BTreeMap<String, GroupRecord>,
    pub next_partition_id: u32,
    pub next_producer_id: i64,
    /// Transaction coordinator state by transactional id.
    #[serde(default)]
    pub transactions: BTreeMap<String, crate::txn::coordinator::TxnRecord>,
}

impl MetaImage {
    pub fn apply(&mut self, r: MetaRecord) {
        match r {
            MetaRecord::TopicCreated(t) => {
                let max = t
                    .partitions
                    .iter()
                    .copied()
                    .max()
                    .map(|m| m + 1)
                    .unwrap_or(0);
                self.next_partition_id = self.next_partition_id.max(max);
                self.topics.insert(t.name.clone(), t);
            }
            MetaRecord::TopicDeleted { name } => {
                self.topics.remove(&name);
                for g in self.groups.values_mut() {
                    g.offsets.retain(|(t, _, _)| *t != name);
                }
            }
            MetaRecord::PartitionsAdded { name, partitions } => {
                if let Some(max) = partitions.iter().copied().max() {
                    self.next_partition_id = self.next_partition_id.max(max + 1);
                }
                if let Some(t) = self.topics.get_mut(&name) {
                    t.partitions.extend(partitions);
                }
            }
            MetaRecord::TopicConfigsSet { name, configs } => {
                if let Some(t) = self.topics.get_mut(&name) {
                    t.configs = configs;
                }
            }
            MetaRecord::OffsetsCommitted { group_id, offsets } => {
                let g = self.group(&group_id);
                for (t, p, o) in offsets {
                    match g
                        .offsets
                        .iter_mut()
                        .find(|(gt, gp, _)| *gt == t && *gp == p)
                    {
                        Some(slot) => slot.2 = o,
                        None => g.offsets.push((t, p, o)),
                    }
                }
            }
            MetaRecord::OffsetsDeleted {
                group_id,
                partitions,
            } => {
                let g = self.group(&group_id);
                g.offsets
                    .retain(|(t, p, _)| !partitions.iter().any(|(dt, dp)| dt == t && dp == p));
            }
            MetaRecord::GroupGeneration {
                group_id,
                generation_id,
                protocol_type,
            } => {
                let g = self.group(&group_id);
                g.generation_id = generation_id;
                g.protocol_type = protocol_type;
            }
            MetaRecord::GroupDeleted { group_id } => {
                self.groups.remove(&group_id);
            }
            MetaRecord::ProducerIdsReserved { next_producer_id } => {
                self.next_producer_id = self.next_producer_id.max(next_producer_id);
            }
            MetaRecord::TxnUpdated(t) => {
                self.transactions.insert(t.transactional_id.clone(), t);
            }
            MetaRecord::TxnRemoved { transactional_id } => {
                self.transactions.remove(&transactional_id);
            }
        }
    }

    fn group(&mut self, group_id: &str) -> &mut GroupRecord {
        self.groups
            .entry(group_id.to_string())
            .or_insert_with(|| GroupRecord {
                group_id: group_id.to_string(),
                generation_id: 0,
                protocol_type: None,
                offsets: Vec::new(),
            })
    }
}

/// The open metadata log. Not internally synchronised: the broker holds it in a mutex.
#[derive(Debug)]
pub struct MetadataLog {
    dir: PathBuf,
    log: File,
    image: MetaImage,
    records_since_snapshot: usize,
    snapshot_every: usize,
    /// Test hook: every append fails while set (as a full or failing disk would).
    pub inject_failure: bool,
    /// Test hook: the next append writes this many bytes, then fails.
    inject_partial_write: Option<usize>,
    /// A failed append could not be cut off: further appends are refused.
    poisoned: bool,
}

fn io_err(op: &str, path: &Path, e: std::io::Error) -> BrokerError {
    BrokerError::Metadata(format!("{op} {}: {e}", path.display()))
}

impl MetadataLog {
    /// Opens `dir` (created if absent), loading snapshot + log into the image.
    pub fn open(dir: &Path, snapshot_every: usize) -> Result<Self> {
        fs::create_dir_all(dir).map_err(|e| io_err("create", dir, e))?;
        let snap_path = dir.join("snapshot.json");
        let mut image = match fs::read(&snap_path) {
            Ok(bytes) => serde_json::from_slice::<MetaImage>(&bytes)
                .map_err(|e| BrokerError::Metadata(format!("{}: {e}", snap_path.display())))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => MetaImage {
                version: SNAPSHOT_VERSION,
                ..MetaImage::default()
            },
            Err(e) => return Err(io_err("read", &snap_path, e)),
        };
        let log_path = dir.join("metadata.log");
        let mut count = 0;
        let bytes = match fs::read(&log_path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(io_err("read", &log_path, e)),
        };
        let mut lines: Vec<&[u8]> = bytes.split(|b| *b == b'\n').collect();
        // The piece after the last newline is a record whose write did not finish.
        if let Some(torn) = lines.pop()
            && !torn.is_empty()
        {
            tracing::warn!(path = %log_path.display(), bytes = torn.len(), "ignoring torn last metadata record");
        }
        for (i, line) in lines.into_iter().enumerate() {
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let r = serde_json::from_slice::<MetaRecord>(line).map_err(|e| {
                BrokerError::Metadata(format!("{} line {}: {e}", log_path.display(), i + 1))
            })?;
            image.apply(r);
            count += 1;
        }
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| io_err("open", &log_path, e))?;
        let mut this = Self {
            dir: dir.to_path_buf(),
            log,
            image,
            records_since_snapshot: count,
            snapshot_every: snapshot_every.max(1),
            inject_failure: false,
            inject_partial_write: None,
            poisoned: false,
        };
        if count > 0 {
            // Start from a clean log (also drops a torn tail).
            this.snapshot()?;
        }
        Ok(this)
    }

    pub fn image(&self) -> &MetaImage {
        &self.image
    }

    /// Appends `r` (fsync'd when `durable`) and applies it to the image.
    pub fn append(&mut self, r: MetaRecord, durable: bool) -> Result<()> {
        if self.inject_failure {
            return Err(BrokerError::Metadata(format!(
                "append to {}: injected failure (test hook)",
                self.dir.join("metadata.log").display()
            )));
        }
        let mut line = serde_json::to_vec(&r).map_err(|e| BrokerError::Metadata(e.to_string()))?;
        line.push(b'\n');
        let path = self.dir.join("metadata.log");
        if self.poisoned {
            return Err(BrokerError::Metadata(format!(
                "append to {}: a failed write could not be undone; restart to recover",
                path.display()
            )));
        }
        let before = self
            .log
            .metadata()
            .map_err(|e| io_err("stat", &path, e))?
            .len();
        if let Err(e) = self.write_line(&line) {
            // A write that failed part-way (a full disk) must not leave half a line for the
            // next record to follow: the next open would stop at it. Cut it off.
            if self.log.set_len(before).is_err() {
                self.poisoned = true;
            }
            return Err(io_err("append", &path, e));
        }
        if durable {
            self.log.sync_data().map_err(|e| io_err("sync", &path, e))?;
        }
        self.image.apply(r);
        self.records_since_snapshot += 1;
        if self.records_since_snapshot >= self.snapshot_every {
            self.snapshot()?;
        }
        Ok(())
    }

    /// Writes one record line (the test hook can make it fail after `n` bytes).
    fn write_line(&mut self, line: &[u8]) -> std::io::Result<()> {
        if let Some(n) = self.inject_partial_write.take() {
            self.log.write_all(&line[..n.min(line.len())])?;
            return Err(std::io::Error::other("injected partial write (test hook)"));
        }
        self.log.write_all(line)
    }

    /// Writes the image as the new snapshot (atomically) and empties the log.
    pub fn snapshot(&mut self) -> Result<()> {
        let snap = self.dir.join("snapshot.json");
        let tmp = self.dir.join("snapshot.json.tmp");
        let bytes =
            serde_json::to_vec(&self.image).map_err(|e| BrokerError::Metadata(e.to_string()))?;
        {
            let mut f = File::create(&tmp).map_err(|e| io_err("create", &tmp, e))?;
            f.write_all(&bytes).map_err(|e| io_err("write", &tmp, e))?;
            f.sync_all().map_err(|e| io_err("sync", &tmp, e))?;
        }
        fs::rename(&tmp, &snap).map_err(|e| io_err("rename", &snap, e))?;
        if let Ok(d) = File::open(&self.dir) {
            let _ = d.sync_all();
        }
        let log_path = self.dir.join("metadata.log");
        self.log
            .set_len(0)
            .map_err(|e| io_err("truncate", &log_path, e))?;
        self.log
            .sync_all()
            .map_err(|e| io_err("sync", &log_path, e))?;
        self.records_since_snapshot = 0;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_that_fails_part_way_leaves_no_half_line() {
        let dir = tempfile::tempdir().unwrap();
        let topic = |name: &str, p: u32| {
            MetaRecord::TopicCreated(TopicRecord {
                name: name.into(),
                topic_id: 1 + u128::from(p),
                partitions: vec![p],
                configs: BTreeMap::new(),
            })
        };
        {
            let mut log = MetadataLog::open(dir.path(), 100).unwrap();
            log.append(topic("a", 0), true).unwrap();
            log.inject_partial_write = Some(9);
            assert!(log.append(topic("lost", 1), true).is_err());
            assert!(!log.image().topics.contains_key("lost"));
            log.append(topic("b", 2), true).unwrap();
        }
        // Without the cut the half line joined the next record and the open failed.
        let log = MetadataLog::open(dir.path(), 100).unwrap();
        let names: Vec<&String> = log.image().topics.keys().collect();
        assert_eq!(names, ["a", "b"]);
    }

    #[test]
    fn survives_reopen_and_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut log = MetadataLog::open(dir.path(), 100).unwrap();
            log.append(
                MetaRecord::TopicCreated(TopicRecord {
                    name: "t".into(),
                    topic_id: 7,
                    partitions: vec![0, 1],
                    configs: BTreeMap::new(),
                }),
                true,
            )
            .unwrap();
            log.append(
                MetaRecord::OffsetsCommitted {
                    group_id: "g".into(),
                    offsets: vec![(
                        "t".into(),
                        1,
                        CommittedOffset {
                            offset: 5,
                            leader_epoch: -1,
                            metadata: None,
                            commit_timestamp_ms: 1,
                        },
                    )],
                },
                false,
            )
            .unwrap();
        }
        let mut f = OpenOptions::new()
            .append(true)
            .open(dir.path().join("metadata.log"))
            .unwrap();
        f.write_all(b"{\"type\":\"TopicDel").unwrap();
        let log = MetadataLog::open(dir.path(), 100).unwrap();
        assert_eq!(log.image().topics["t"].partitions, vec![0, 1]);
        assert_eq!(log.image().next_partition_id, 2);
        assert_eq!(log.image().groups["g"].offsets[0].2.offset, 5);
        drop(log);
        let log = MetadataLog::open(dir.path(), 100).unwrap();
        assert_eq!(log.image().topics.len(), 1);
    }
}
