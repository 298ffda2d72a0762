//! The local metadata store: [`MetaRecord`]s as JSON lines in `meta/metadata.log`, applied
//! over `meta/snapshot.json`. Compaction writes a new snapshot and empties the log.
//!
//! A torn last line (crash mid-write) is ignored with a warning; any other bad line is an
//! error (the file is not ours, or it is damaged).

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use super::image::{MetaImage, MetaRecord};
use super::store::MetadataStore;
use crate::error::{BrokerError, Result};

/// The open local metadata log. Not internally synchronised: the broker holds its store in
/// a mutex.
#[derive(Debug)]
pub struct LocalMetadataLog {
    dir: PathBuf,
    log: File,
    image: MetaImage,
    records_since_snapshot: usize,
    snapshot_every: usize,
    /// Test hook: every append fails while set (as a full or failing disk would); the
    /// conformance suite drives it.
    pub inject_failure: bool,
    /// Test hook: the next append writes this many bytes, then fails.
    inject_partial_write: Option<usize>,
    /// A failed append could not be cut off: further appends are refused.
    poisoned: bool,
    /// Appends fsynced before they returned.
    durable_appends: u64,
}

fn io_err(op: &str, path: &Path, e: std::io::Error) -> BrokerError {
    BrokerError::Metadata(format!("{op} {}: {e}", path.display()))
}

impl LocalMetadataLog {
    /// Opens `dir` (created if absent), loading snapshot + log into the image.
    pub fn open(dir: &Path, snapshot_every: usize) -> Result<Self> {
        fs::create_dir_all(dir).map_err(|e| io_err("create", dir, e))?;
        let snap_path = dir.join("snapshot.json");
        let mut image = match fs::read(&snap_path) {
            Ok(bytes) => serde_json::from_slice::<MetaImage>(&bytes)
                .map_err(|e| BrokerError::Metadata(format!("{}: {e}", snap_path.display())))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => MetaImage::default(),
            Err(e) => return Err(io_err("read", &snap_path, e)),
        };
        image.upgrade();
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
            durable_appends: 0,
        };
        if count > 0 {
            // Start from a clean log (also drops a torn tail).
            this.compact()?;
        }
        Ok(this)
    }

    /// Writes one record line (the test hook can make it fail after `n` bytes).
    fn write_line(&mut self, line: &[u8]) -> std::io::Result<()> {
        if let Some(n) = self.inject_partial_write.take() {
            self.log.write_all(&line[..n.min(line.len())])?;
            return Err(std::io::Error::other("injected partial write (test hook)"));
        }
        self.log.write_all(line)
    }
}

impl MetadataStore for LocalMetadataLog {
    fn durable_appends(&self) -> u64 {
        self.durable_appends
    }

    fn image(&self) -> &MetaImage {
        &self.image
    }

    /// Appends `r` (fsync'd when `durable`) and applies it to the image.
    fn append(&mut self, r: MetaRecord, durable: bool) -> Result<()> {
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
            self.durable_appends += 1;
        }
        self.image.apply(r);
        self.records_since_snapshot += 1;
        if self.records_since_snapshot >= self.snapshot_every {
            self.compact()?;
        }
        Ok(())
    }

    /// Writes the image as the new snapshot (atomically) and empties the log.
    fn compact(&mut self) -> Result<()> {
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
    use std::collections::BTreeMap;

    use super::*;
    use crate::metadata::TopicRecord;
    use crate::offsets::CommittedOffset;

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
            let mut log = LocalMetadataLog::open(dir.path(), 100).unwrap();
            log.append(topic("a", 0), true).unwrap();
            log.inject_partial_write = Some(9);
            assert!(log.append(topic("lost", 1), true).is_err());
            assert!(!log.image().topics.contains_key("lost"));
            log.append(topic("b", 2), true).unwrap();
        }
        // Without the cut the half line joined the next record and the open failed.
        let log = LocalMetadataLog::open(dir.path(), 100).unwrap();
        let names: Vec<&String> = log.image().topics.keys().collect();
        assert_eq!(names, ["a", "b"]);
    }

    #[test]
    fn survives_reopen_and_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut log = LocalMetadataLog::open(dir.path(), 100).unwrap();
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
        let log = LocalMetadataLog::open(dir.path(), 100).unwrap();
        assert_eq!(log.image().topics["t"].partitions, vec![0, 1]);
        assert_eq!(log.image().next_partition_id, 2);
        assert_eq!(log.image().offsets["g"]["t"][0].1.offset, 5);
        drop(log);
        let log = LocalMetadataLog::open(dir.path(), 100).unwrap();
        assert_eq!(log.image().topics.len(), 1);
    }
}

#[cfg(test)]
mod conformance_tests {
    use super::*;
    use crate::metadata::conformance::{self, Harness};

    struct Local {
        /// A broken variant for the suite's own test: pretends to fail but writes anyway.
        ignore_failures: bool,
    }

    impl Harness for Local {
        type Store = LocalMetadataLog;
        fn open(&self, dir: &Path, snapshot_every: usize) -> Result<LocalMetadataLog> {
            LocalMetadataLog::open(dir, snapshot_every)
        }
        fn fail_appends(&self, store: &mut LocalMetadataLog, on: bool) {
            store.inject_failure = on && !self.ignore_failures;
        }
    }

    #[test]
    fn the_local_log_passes_the_conformance_suite() {
        let dir = tempfile::tempdir().unwrap();
        conformance::run(
            &Local {
                ignore_failures: false,
            },
            dir.path(),
        );
    }

    #[test]
    #[should_panic(expected = "append succeeded while writes fail")]
    fn the_suite_fails_a_store_that_does_not_fail() {
        let dir = tempfile::tempdir().unwrap();
        conformance::run(
            &Local {
                ignore_failures: true,
            },
            dir.path(),
        );
    }
}
