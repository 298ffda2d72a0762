//! A rate limit for log lines a client can trigger at will (refused batches, bad frames):
//! one line per window, and the next line says how many were held back, so a hostile or
//! broken client cannot flood the log while the operator still learns it is happening.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

/// Allows one event per `window_ms`; counts the ones it holds back.
#[derive(Debug)]
pub struct LogLimit {
    window_ms: i64,
    /// Time of the last allowed event (ms); `i64::MIN` before the first.
    last_ms: AtomicI64,
    held_back: AtomicU64,
}

impl LogLimit {
    pub const fn new(window_ms: i64) -> LogLimit {
        LogLimit {
            window_ms,
            last_ms: AtomicI64::new(i64::MIN),
            held_back: AtomicU64::new(0),
        }
    }

    /// `Some(n)` when this event may be logged (`n`: events held back since the last one
    /// logged), `None` when it is held back.
    pub fn allow(&self, now_ms: i64) -> Option<u64> {
        let last = self.last_ms.load(Ordering::Relaxed);
        let due = last == i64::MIN || now_ms.saturating_sub(last) >= self.window_ms;
        if due
            && self
                .last_ms
                .compare_exchange(last, now_ms, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        {
            return Some(self.held_back.swap(0, Ordering::AcqRel));
        }
        self.held_back.fetch_add(1, Ordering::Relaxed);
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_event_per_window_and_the_count_of_the_rest() {
        let l = LogLimit::new(1000);
        assert_eq!(l.allow(5_000), Some(0));
        assert_eq!(l.allow(5_001), None);
        assert_eq!(l.allow(5_999), None);
        assert_eq!(l.allow(6_000), Some(2));
        assert_eq!(l.allow(6_500), None);
        assert_eq!(l.allow(9_000), Some(1));
    }
}
