//! `truncate_to(position)`: cut the commit log at a global position (replication: a follower
//! dropping a divergent tail), keeping consume queues and indexes consistent.
//!
//! Order matters for crash safety: (1) cut every partition's state in memory, (2) write a
//! checkpoint whose replay position is the cut, (3) zero the log from the cut. A crash
//! between (2) and (3) replays the not-yet-zeroed entries, as if the truncation had not
//! happened (the caller retries it); it never leaves queues pointing at zeros.

use common::PartitionId;

use crate::error::Result;
use crate::partition::Partition;
use crate::store::Inner;

impl Inner {
    pub fn truncate_to(&self, position: u64) -> Result<()> {
        let _admin = self.admin.lock();
        let _ckpt = self.ckpt_lock.lock();
        let mut w = self.log.lock_writer();
        if position >= w.pos {
            return Ok(());
        }
        self.fence_padding_at(position)?;
        {
            let parts = self.parts.read();
            for (id, part) in parts.iter() {
                let mut g = part.lock();
                self.cut_partition(*id, &mut g, position)?;
            }
        }
        let cut = self.cut(position);
        self.log.sync_locked(&mut w)?;
        self.write_back(0)?;
        self.finish_queue_sync()?;
        self.hindex.truncate(position)?;
        self.hindex.sync()?;
        cut.write(&self.cfg.dir)?;
        self.cleaner.forget_walks();
        self.cleaner.record_checkpoint(&cut);
        self.log.truncate(&mut w, position)
    }

    fn cut_partition(&self, p: PartitionId, g: &mut Partition, position: u64) -> Result<()> {
        let k = self.files.find_position_locked(p, g, position)?;
        if k >= g.cq_end {
            return Ok(());
        }
        let Some(first) = self.files.cq_entries_locked(p, g, k, 1)?.first().copied() else {
            return Ok(());
        };
        self.changed();
        let mut dropped = 0u64;
        let mut i = k;
        while i < g.cq_end {
            let page = self.files.cq_entries_locked(p, g, i, 4096)?;
            if page.is_empty() {
                break;
            }
            dropped += page.iter().map(|e| e.batch_len as u64).sum::<u64>();
            i += page.len() as u64;
        }
        let new_end = first.base_offset;
        g.bytes = g.bytes.saturating_sub(dropped);
        g.cq_end = k;
        if k >= g.cq_flushed {
            let keep = (k - g.cq_flushed) as usize;
            g.cq_pending.truncate(keep);
        } else {
            g.cq_pending = Vec::new();
            g.cq_flushed = k;
        }
        g.log_end = new_end;
        g.log_start = g.log_start.min(new_end);
        if g.cq_start >= g.cq_end {
            g.cq_start = g.cq_end;
            g.start_pos = u64::MAX;
        }
        g.head_max_ts = i64::MIN;
        if g.max_ts_offset >= new_end {
            // Recomputed lazily by `max_timestamp`.
            g.max_ts = -1;
            g.max_ts_offset = -1;
        }
        Ok(())
    }
}
