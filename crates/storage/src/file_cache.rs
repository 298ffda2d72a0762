//! A small LRU of open files, so consume-queue and index files cost no file descriptor while
//! their partition is idle: open files are bounded by `max_open_files`, not partition count.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::error::{Result, StorageError};

pub struct FileCache {
    max: usize,
    inner: Mutex<Inner>,
}

struct Inner {
    tick: u64,
    files: HashMap<PathBuf, (Arc<File>, u64)>,
}

impl FileCache {
    pub fn new(max: usize) -> FileCache {
        FileCache {
            max: max.max(2),
            inner: Mutex::new(Inner {
                tick: 0,
                files: HashMap::new(),
            }),
        }
    }

    /// The open file at `path`; `create` makes it (and its directory) if missing.
    /// Returns `Ok(None)` when it does not exist and `create` is false.
    pub fn get(&self, path: &Path, create: bool) -> Result<Option<Arc<File>>> {
        {
            let mut g = self.inner.lock();
            g.tick += 1;
            let tick = g.tick;
            if let Some((f, t)) = g.files.get_mut(path) {
                *t = tick;
                return Ok(Some(f.clone()));
            }
        }
        let opened = OpenOptions::new()
            .read(true)
            .write(true)
            .create(create)
            .open(path);
        let file = match opened {
            Ok(f) => Arc::new(f),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !create => return Ok(None),
            Err(e) => return Err(StorageError::io("opening", path, e)),
        };
        let mut g = self.inner.lock();
        if g.files.len() >= self.max {
            // Evict the least recently used; O(n) over a bounded n.
            if let Some(victim) = g
                .files
                .iter()
                .min_by_key(|(_, (_, t))| *t)
                .map(|(p, _)| p.clone())
            {
                g.files.remove(&victim);
            }
        }
        g.tick += 1;
        let tick = g.tick;
        g.files.insert(path.to_path_buf(), (file.clone(), tick));
        Ok(Some(file))
    }

    /// Forgets `path` (before deleting or renaming it).
    pub fn forget(&self, path: &Path) {
        self.inner.lock().files.remove(path);
    }

    /// Forgets every file under `dir`.
    pub fn forget_dir(&self, dir: &Path) {
        self.inner.lock().files.retain(|p, _| !p.starts_with(dir));
    }

    pub fn open_count(&self) -> usize {
        self.inner.lock().files.len()
    }
}
