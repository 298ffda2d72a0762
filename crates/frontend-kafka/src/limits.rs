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
/// Invariant: a reservation never asks for more than `bytes` (the semaphore's size), so a
/// frame larger than the budget waits for the whole budget instead of forever.
pub struct RequestBudget {
    permits: Arc<Semaphore>,
    bytes: usize,
}

/// A reservation from [`RequestBudget`]; dropping it returns the bytes.
pub type Reservation = OwnedSemaphorePermit;

impl RequestBudget {
    pub fn new(bytes: usize) -> Self {
        // acquire_many takes a u32.
        let bytes = bytes.clamp(1, Semaphore::MAX_PERMITS.min(u32::MAX as usize));
        Self {
            permits: Arc::new(Semaphore::new(bytes)),
            bytes,
        }
    }

    /// Permits a frame of `len` bytes takes: its size, capped at the whole budget.
    pub fn permits_for(&self, len: usize) -> u32 {
        // In range: `bytes` fits a u32 (see `new`).
        len.clamp(1, self.bytes) as u32
    }

    /// Reserves room for a frame of `len` bytes without waiting; `None` if the budget is
    /// used up for now.
    pub fn try_reserve(&self, len: usize) -> Option<Reservation> {
        self.permits
            .clone()
            .try_acquire_many_owned(self.permits_for(len))
            .ok()
    }

    /// Reserves room for a frame of `len` bytes, waiting (first come, first served) until
    /// enough earlier requests finish.
    pub async fn reserve(&self, len: usize) -> Option<Reservation> {
        self.permits
            .clone()
            .acquire_many_owned(self.permits_for(len))
            .await
            .ok()
    }

    /// Bytes not reserved right now.
    pub fn available(&self) -> usize {
        self.permits.available_permits()
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

    #[tokio::test]
    async fn a_frame_larger_than_the_budget_takes_the_whole_budget() {
        let budget = RequestBudget::new(1000);
        assert_eq!(budget.permits_for(0), 1);
        assert_eq!(budget.permits_for(10), 10);
        assert_eq!(budget.permits_for(usize::MAX), 1000);
        let whole = budget.reserve(5_000_000).await.expect("open semaphore");
        assert_eq!(budget.available(), 0);
        assert!(budget.try_reserve(1).is_none());
        drop(whole);
        assert_eq!(budget.available(), 1000);
        assert!(budget.try_reserve(1000).is_some());
    }

    #[tokio::test]
    async fn waiters_proceed_as_reservations_are_returned() {
        let budget = Arc::new(RequestBudget::new(100));
        let first = budget.reserve(80).await.expect("open");
        let b = budget.clone();
        let waiter = tokio::spawn(async move { b.reserve(50).await.is_some() });
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
