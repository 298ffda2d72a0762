//! Retention: per-partition time and size limits advance the log start; commit-log segments
//! are deleted when no partition still has a live entry in them.
//!
//! Time retention is also applied at read time (`expire_head`), so an expired entry of a
//! short-retention partition is never served even while its segment must stay for others.
//!
//! An entry expires by time once both its newest record timestamp and the last write into
//! its commit-log segment are older than the retention. The second half is the shared log's
//! version of Kafka's rule that a segment is deleted only after it has rolled: a backfill of
//! old records, or records without a timestamp (-1), is kept at least `retention.ms` after
//! it was appended (and while its segment is still being written), never dropped at once.

use std::sync::Arc;

use common::PartitionId;
use parking_lot::Mutex;

use crate::error::Result;
use crate::partition::Partition;
use crate::store::Inner;

impl Inner {
    /// Drops consume-queue entries `[cq_start, k)` and sets the log start (which must lie in
    /// entry `k`, or equal `log_end` when `k == cq_end`).
    pub fn advance_start_locked(
        &self,
        p: PartitionId,
        g: &mut Partition,
        k: u64,
        log_start: i64,
    ) -> Result<()> {
        self.changed();
        let mut dropped = 0u64;
        let mut i = g.cq_start;
        while i < k {
            let page = self.files.cq_entries_locked(p, g, i, (k - i).min(4096))?;
            if page.is_empty() {
                break;
            }
            dropped += page.iter().map(|e| e.batch_len as u64).sum::<u64>();
            i += page.len() as u64;
        }
        g.bytes = g.bytes.saturating_sub(dropped);
        g.cq_start = k;
        g.log_start = log_start.max(g.log_start).min(g.log_end);
        (g.start_pos, g.head_max_ts) = match self.files.cq_entries_locked(p, g, k, 1)?.first() {
            Some(e) => (e.position, e.max_timestamp),
            None => (u64::MAX, i64::MIN),
        };
        Ok(())
    }

    /// Applies time retention to the head of one partition. Returns true if it moved.
    pub fn expire_head(&self, p: PartitionId, part: &Mutex<Partition>) -> Result<bool> {
        let mut g = part.lock();
        let Some(ms) = g.cfg.retention_ms else {
            return Ok(false);
        };
        if ms < 0 || g.cq_start == g.cq_end {
            return Ok(false);
        }
        let now = self.cfg.clock.now_ms();
        let cutoff = now.saturating_sub(ms);
        if g.head_max_ts >= cutoff {
            return Ok(false);
        }
        let mut k = g.cq_start;
        let mut next_start = None;
        let mut segment: Option<Arc<crate::segment::Segment>> = None;
        'scan: while k < g.cq_end {
            let page = self.files.cq_entries_locked(p, &g, k, 256)?;
            if page.is_empty() {
                break;
            }
            for e in &page {
                // Expired: its newest record's timestamp *and* the last write into its
                // segment are past the retention (the segment's last write is no earlier
                // than the entry's append). Records with old or no timestamps therefore
                // stay at least the retention after they were appended.
                if !segment
                    .as_ref()
                    .is_some_and(|s| (s.base..s.end()).contains(&e.position))
                {
                    segment = self.files.log.segment_at(e.position);
                }
                let written = segment.as_ref().map_or(now, |s| s.last_write_ms(now));
                if e.max_timestamp >= cutoff || written >= cutoff {
                    next_start = Some(e.base_offset);
                    break 'scan;
                }
                k += 1;
            }
        }
        if k == g.cq_start {
            if let Some(e) = self.files.cq_entries_locked(p, &g, k, 1)?.first() {
                g.head_max_ts = e.max_timestamp;
            }
            return Ok(false);
        }
        let start = next_start.unwrap_or(g.log_end);
        self.advance_start_locked(p, &mut g, k, start)?;
        Ok(true)
    }

    /// Applies size retention to one partition (the newest batch is always kept).
    fn trim_size(&self, p: PartitionId, part: &Mutex<Partition>) -> Result<bool> {
        let mut g = part.lock();
        let Some(limit) = g.cfg.retention_bytes else {
            return Ok(false);
        };
        if g.bytes <= limit {
            return Ok(false);
        }
        let mut k = g.cq_start;
        let mut bytes = g.bytes;
        let mut next_start = None;
        'scan: while k + 1 < g.cq_end {
            let page = self.files.cq_entries_locked(p, &g, k, 256)?;
            if page.is_empty() {
                break;
            }
            for e in &page {
                if bytes <= limit || k + 1 >= g.cq_end {
                    next_start = Some(e.base_offset);
                    break 'scan;
                }
                bytes -= e.batch_len as u64;
                k += 1;
            }
        }
        if k == g.cq_start {
            return Ok(false);
        }
        let start = match next_start {
            Some(s) => s,
            None => self
                .files
                .cq_entries_locked(p, &g, k, 1)?
                .first()
                .map(|e| e.base_offset)
                .unwrap_or(g.log_end),
        };
        self.advance_start_locked(p, &mut g, k, start)?;
        Ok(true)
    }

    /// One retention pass over every partition, then deletion of whole segments and queue
    /// files nothing needs any more.
    pub fn enforce_retention(&self) -> Result<()> {
        let _admin = self.admin.lock();
        let parts: Vec<(PartitionId, Arc<Mutex<Partition>>)> = self
            .parts
            .read()
            .iter()
            .map(|(k, v)| (*k, v.clone()))
            .collect();
        let mut moved = false;
        for (id, part) in &parts {
            moved |= self.expire_head(*id, part)?;
            moved |= self.trim_size(*id, part)?;
        }
        let min_pos = parts
            .iter()
            .map(|(_, p)| p.lock().start_pos)
            .min()
            .unwrap_or(u64::MAX);
        let doomed = self.log.segments().iter().any(|s| s.end() <= min_pos);
        let per_file = self.files.cq.per_file;
        let trims = parts.iter().any(|(_, p)| {
            let g = p.lock();
            g.cq_start / per_file > g.cq_trimmed / per_file
        });
        if doomed || trims || moved {
            // The advanced log starts must be durable before the bytes they skip vanish (log
            // segments, queue files), or a crash would leave partitions pointing at deleted
            // data.
            self.checkpoint(false)?;
        }
        if doomed {
            self.log.delete_segments_below(min_pos)?;
        }
        self.hindex.drop_below(self.log.start());
        for (id, part) in &parts {
            let (cq_start, trimmed) = {
                let g = part.lock();
                (g.cq_start, g.cq_trimmed)
            };
            if cq_start / per_file > trimmed / per_file {
                let dir = self.files.dir(*id);
                self.files
                    .cq
                    .delete_below(&self.files.cache, &dir, cq_start)?;
                part.lock().cq_trimmed = cq_start;
            }
        }
        Ok(())
    }
}
