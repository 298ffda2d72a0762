//! Limits shared by every connection: the global in-flight request byte budget and the
//! per-client-IP connection count. (Per-connection limits live in `connection.rs`.)

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Bytes of requests being read or handled, across all connections. A connection reserves
/// a frame's size after reading its 4-byte length and before allocating its body, and gives
/// it back once the response is encoded. So however many producers push, at most `bytes`
/// of request bodies are in memory, and the rest wait in their sockets (TCP backpressure).
///
/// Frames of at most [`SMALL_REQUEST_BYTES`] (metadata, fetches, heartbeats, a light
/// producer's batches) draw from their own eighth of the budget, so they queue only behind
/// other small requests, never behind a flood of large produces.
///
/// Invariant: a reservation never asks for more than its pool holds, so a frame larger
/// than the budget waits for the whole pool instead of forever.
pub struct RequestBudget {
    small: Pool,
    large: Pool,
}

/// Frames up to this size use the small-request share of the budget.
pub const SMALL_REQUEST_BYTES: usize = 64 * 1024;

struct Pool {
    permits: Arc<Semaphore>,
    bytes: usize,
}

impl Pool {
    fn new(bytes: usize) -> Self {
        let bytes = bytes.max(1);
        Self {
            permits: Arc::new(Semaphore::new(bytes)),
            bytes,
        }
    }

    fn permits_for(&self, len: usize) -> u32 {
        // In range: `bytes` fits a u32 (see `RequestBudget::new`).
        len.clamp(1, self.bytes) as u32
    }
}

/// A reservation from [`RequestBudget`]; dropping it returns the bytes.
pub type Reservation = OwnedSemaphorePermit;

impl RequestBudget {
    pub fn new(bytes: usize) -> Self {
        // acquire_many takes a u32.
        let bytes = bytes.clamp(2, Semaphore::MAX_PERMITS.min(u32::MAX as usize));
        let small = bytes / 8;
        Self {
            small: Pool::new(small),
            large: Pool::new(bytes - small),
        }
    }

    fn pool(&self, len: usize) -> &Pool {
        if len <= SMALL_REQUEST_BYTES {
            &self.small
        } else {
            &self.large
        }
    }

    /// Permits a frame of `len` bytes takes: its size, capped at its pool.
    #[cfg(test)]
    fn permits_for(&self, len: usize) -> u32 {
        self.pool(len).permits_for(len)
    }

    /// Reserves room for a frame of `len` bytes without waiting; `None` if its pool is
    /// used up for now.
    pub fn try_reserve(&self, len: usize) -> Option<Reservation> {
        let pool = self.pool(len);
        pool.permits
            .clone()
            .try_acquire_many_owned(pool.permits_for(len))
            .ok()
    }

    /// Reserves room for a frame of `len` bytes, waiting (first come, first served within
    /// its pool) until enough earlier requests finish.
    pub async fn reserve(&self, len: usize) -> Option<Reservation> {
        let pool = self.pool(len);
        pool.permits
            .clone()
            .acquire_many_owned(pool.permits_for(len))
            .await
            .ok()
    }

    /// Bytes not reserved right now.
    pub fn available(&self) -> usize {
        self.small.permits.available_permits() + self.large.permits.available_permits()
    }
}

/// Open connections per client IP address.
#[derive(Clone)]
pub struct IpConnections {
    counts: Arc<Mutex<HashMap<IpAddr, usize>>>,
    limit: usize,
}

/// One admitted connection; dropping it (the connection task ends, or panics) frees the slot.
pub struct IpSlot {
    owner: IpConnections,
    ip: IpAddr,
}

impl IpConnections {
    pub fn new(limit: usize) -> Self {
        Self {
            counts: Arc::new(Mutex::new(HashMap::new())),
            limit: limit.max(1),
        }
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Admits one more connection from `ip`, or `None` if `ip` already has `limit` open.
    /// IPv4-mapped IPv6 addresses count as their IPv4 address.
    pub fn try_admit(&self, ip: IpAddr) -> Option<IpSlot> {
        let ip = ip.to_canonical();
        let mut counts = self.counts.lock();
        let n = counts.entry(ip).or_insert(0);
        if *n >= self.limit {
            return None;
        }
        *n += 1;
        Some(IpSlot {
            owner: self.clone(),
            ip,
        })
    }

    /// Connections open from `ip` now.
    pub fn open_from(&self, ip: IpAddr) -> usize {
        self.counts
            .lock()
            .get(&ip.to_canonical())
            .copied()
            .unwrap_or(0)
    }
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut counts = self.owner.counts.lock();
        if let Some(n) = counts.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                counts.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BIG: usize = SMALL_REQUEST_BYTES + 1;

    #[tokio::test]
    async fn a_frame_larger_than_the_budget_takes_the_whole_pool() {
        // 8 MiB: 1 MiB for small requests, 7 MiB for large ones.
        let budget = RequestBudget::new(8 << 20);
        assert_eq!(budget.permits_for(0), 1);
        assert_eq!(budget.permits_for(10), 10);
        assert_eq!(budget.permits_for(BIG), BIG as u32);
        assert_eq!(budget.permits_for(usize::MAX), 7 << 20);
        let whole = budget.reserve(usize::MAX).await.expect("open semaphore");
        assert!(budget.try_reserve(BIG).is_none());
        // Small requests are not stuck behind it.
        assert!(budget.try_reserve(100).is_some());
        drop(whole);
        assert_eq!(budget.available(), 8 << 20);
        assert!(budget.try_reserve(7 << 20).is_some());
    }

    #[tokio::test]
    async fn a_tiny_budget_still_serves_every_size() {
        let budget = RequestBudget::new(1);
        assert!(budget.reserve(1).await.is_some());
        assert!(budget.reserve(BIG).await.is_some());
        assert!(budget.reserve(usize::MAX).await.is_some());
    }

    #[tokio::test]
    async fn waiters_proceed_as_reservations_are_returned() {
        let budget = Arc::new(RequestBudget::new(8 * BIG));
        let first = budget.reserve(6 * BIG).await.expect("open");
        let b = budget.clone();
        let waiter = tokio::spawn(async move { b.reserve(2 * BIG).await.is_some() });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        drop(first);
        assert!(waiter.await.expect("join"));
    }

    #[test]
    fn per_ip_slots_are_counted_and_freed() {
        let limits = IpConnections::new(2);
        let a: IpAddr = "10.0.0.1".parse().expect("ip");
        let b: IpAddr = "10.0.0.2".parse().expect("ip");
        let s1 = limits.try_admit(a).expect("first");
        let _s2 = limits.try_admit(a).expect("second");
        assert!(limits.try_admit(a).is_none(), "third from the same IP");
        let _other = limits.try_admit(b).expect("another IP is not affected");
        drop(s1);
        assert_eq!(limits.open_from(a), 1);
        assert!(limits.try_admit(a).is_some());
        let mapped: IpAddr = "::ffff:10.0.0.2".parse().expect("ip");
        assert_eq!(limits.open_from(mapped), 1, "IPv4-mapped counts as IPv4");
    }
}
