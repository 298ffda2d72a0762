//! What every connection of the door shares: the broker, the topology, the settings, a
//! signal that wakes consumers when messages go back to a queue, consumer counts per queue,
//! and the process-wide counter of broker consumer ids.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use broker::Broker;
use parking_lot::Mutex;
use tokio::sync::watch;

use crate::config::AmqpConfig;
use crate::topology::Topology;

/// Broker consumer ids: one per (connection, channel, consumer tag), never reused while the
/// process runs. Starts high so ids are unlike the small numbers of other doors' tests.
static NEXT_CONSUMER_ID: AtomicU64 = AtomicU64::new(1 << 32);

/// A fresh broker consumer id.
pub fn next_consumer_id() -> u64 {
    NEXT_CONSUMER_ID.fetch_add(1, Ordering::Relaxed)
}

/// State shared by the door's connections.
pub struct Door {
    pub broker: Arc<Broker>,
    pub topology: Topology,
    pub config: AmqpConfig,
    /// Bumped when messages become available without an append (nack with requeue,
    /// released by a closed channel): consumers on every connection look again.
    wake: watch::Sender<u64>,
    consumers: Mutex<HashMap<String, u32>>,
    next_name: AtomicU64,
}

impl Door {
    pub fn new(broker: Arc<Broker>, config: AmqpConfig) -> Door {
        Door {
            topology: Topology::open(&broker),
            broker,
            config,
            wake: watch::channel(0).0,
            consumers: Mutex::new(HashMap::new()),
            next_name: AtomicU64::new(1),
        }
    }

    pub fn subscribe_wake(&self) -> watch::Receiver<u64> {
        self.wake.subscribe()
    }

    pub fn wake_consumers(&self) {
        self.wake.send_modify(|v| *v = v.wrapping_add(1));
    }

    /// A server-chosen name with `prefix` (server-named queues, consumer tags).
    pub fn unique_name(&self, prefix: &str) -> String {
        let n = self.next_name.fetch_add(1, Ordering::Relaxed);
        format!("{prefix}{:x}-{n}", self.broker.now_ms())
    }

    pub fn consumer_count(&self, queue: &str) -> u32 {
        self.consumers.lock().get(queue).copied().unwrap_or(0)
    }

    pub fn consumer_added(&self, queue: &str) {
        *self.consumers.lock().entry(queue.to_string()).or_default() += 1;
    }

    pub fn consumer_removed(&self, queue: &str) {
        let mut counts = self.consumers.lock();
        if let Some(n) = counts.get_mut(queue) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                counts.remove(queue);
            }
        }
    }
}
