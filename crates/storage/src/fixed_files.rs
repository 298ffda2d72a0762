//! A sequence of fixed-size entries split over files of `per_file` entries each, named by the
//! index of their first entry (`{first:020}.{ext}`). Entry `i` lives in file
//! `i / per_file * per_file` at byte `(i % per_file) * entry_size`: lookup is arithmetic.
//! Used by the consume queue and the index. Files are read and written with
//! `pread`/`pwrite` through the [`FileCache`], so pages load on demand.

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::error::{Result, StorageError};
use crate::file_cache::FileCache;

#[derive(Clone, Copy, Debug)]
pub struct FixedFiles {
    pub ext: &'static str,
    pub entry_size: usize,
    pub per_file: u64,
}

impl FixedFiles {
    pub fn path(&self, dir: &Path, index: u64) -> PathBuf {
        let first = index / self.per_file * self.per_file;
        dir.join(format!("{first:020}.{}", self.ext))
    }

    /// Reads entries `[start, start + n)`; returns fewer bytes if files end early
    /// (deleted by retention concurrently, or short after a crash).
    pub fn read(&self, cache: &FileCache, dir: &Path, start: u64, n: u64) -> Result<Vec<u8>> {
        let mut out = vec![0u8; (n as usize) * self.entry_size];
        let mut done = 0usize;
        let mut i = start;
        while i < start + n {
            let in_file = (self.per_file - i % self.per_file).min(start + n - i);
            let path = self.path(dir, i);
            let Some(f) = cache.get(&path, false)? else {
                break;
            };
            let want = in_file as usize * self.entry_size;
            let at = (i % self.per_file) * self.entry_size as u64;
            let got = read_up_to(&f, &mut out[done..done + want], at)
                .map_err(|e| StorageError::io("reading", &path, e))?;
            done += got;
            if got < want {
                break;
            }
            i += in_file;
        }
        out.truncate(done / self.entry_size * self.entry_size);
        Ok(out)
    }

    /// Writes `bytes` (whole entries) as entries starting at index `start`.
    pub fn write(
        &self,
        cache: &FileCache,
        dir: &Path,
        start: u64,
        bytes: &[u8],
    ) -> Result<Vec<PathBuf>> {
        let mut touched = Vec::new();
        let mut i = start;
        let mut off = 0usize;
        while off < bytes.len() {
            let in_file = (self.per_file - i % self.per_file) as usize * self.entry_size;
            let chunk = &bytes[off..(off + in_file).min(bytes.len())];
            let path = self.path(dir, i);
            // The directory is made by `configure_partition`; never recreate it here, or a
            // write-back racing `delete_partition` would resurrect the partition.
            let f = cache.get(&path, true)?;
            let f = f.ok_or(StorageError::Closed)?;
            f.write_all_at(chunk, (i % self.per_file) * self.entry_size as u64)
                .map_err(|e| StorageError::io("writing", &path, e))?;
            touched.push(path);
            off += chunk.len();
            i += (chunk.len() / self.entry_size) as u64;
        }
        Ok(touched)
    }

    /// Deletes files all of whose entries are below `index`.
    pub fn delete_below(&self, cache: &FileCache, dir: &Path, index: u64) -> Result<()> {
        for (first, path) in self.list(dir)? {
            if first + self.per_file <= index {
                cache.forget(&path);
                remove(&path)?;
            }
        }
        Ok(())
    }

    /// `(first index, path)` of every file, ascending.
    pub fn list(&self, dir: &Path) -> Result<Vec<(u64, PathBuf)>> {
        let mut out = Vec::new();
        let rd = match std::fs::read_dir(dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(StorageError::io("listing", dir, e)),
        };
        for ent in rd {
            let ent = ent.map_err(|e| StorageError::io("listing", dir, e))?;
            let name = ent.file_name();
            let Some(name) = name.to_str() else { continue };
            let Some(stem) = name
                .strip_suffix(self.ext)
                .and_then(|s| s.strip_suffix('.'))
            else {
                continue;
            };
            if let Ok(first) = stem.parse::<u64>() {
                out.push((first, ent.path()));
            }
        }
        out.sort();
        Ok(out)
    }
}

fn remove(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(StorageError::io("deleting", path, e)),
    }
}

fn read_up_to(f: &std::fs::File, buf: &mut [u8], at: u64) -> std::io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match f.read_at(&mut buf[done..], at + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}
