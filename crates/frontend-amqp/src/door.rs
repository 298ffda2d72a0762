//! What every connection of the door shares: the broker, the topology, the settings, a
//! signal that wakes consumers when messages go back to a queue, what the door knows of each
//! queue's use (consumers, an exclusive consumer, the connection owning an exclusive queue),
//! and the process-wide counters of broker consumer ids and connection ids.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use broker::Broker;
use parking_lot::Mutex;
use tokio::sync::watch;

use crate::config::AmqpConfig;
use crate::errors::{ACCESS_REFUSED, AmqpError, RESOURCE_LOCKED, from_broker};
use crate::topology::Topology;
use crate::vhost::{Access, describe, parse_users, parse_vhosts};

/// Broker consumer ids: one per (connection, channel, consumer tag), never reused while the
/// process runs. Starts high so ids are unlike the small numbers of other doors' tests.
static NEXT_CONSUMER_ID: AtomicU64 = AtomicU64::new(1 << 32);

/// Setting recording the declare's `auto_delete` flag (only when true, so queues declared
/// before it existed keep their settings).
pub(crate) const AUTO_DELETE_SETTING: &str = "amqp.auto_delete";

/// A fresh broker consumer id.
pub fn next_consumer_id() -> u64 {
    NEXT_CONSUMER_ID.fetch_add(1, Ordering::Relaxed)
}

/// How one queue is used through this door. An entry exists while the queue has consumers
/// or an exclusive owner; `generation` tells a queue from a later one of the same name, so
/// a consumer of a deleted queue is cancelled even when the name was declared again.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct QueueUse {
    pub generation: u64,
    pub consumers: u32,
    /// A basic.consume with exclusive=true holds the queue: no other consumer may join.
    pub exclusive_consumer: bool,
    /// The connection that declared it exclusive.
    pub owner: Option<u64>,
    /// The consumers in the order they joined (single active consumer, consumer priorities).
    pub members: Vec<Member>,
}

/// One consumer of a queue, for single active consumer and consumer priorities.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Member {
    /// Its broker consumer id.
    pub id: u64,
    /// `x-priority` of its basic.consume (0 without).
    pub priority: i32,
    /// Its prefetch is not full (as of its last pump).
    pub has_room: bool,
}

impl QueueUse {
    /// Whether consumer `id` may take messages now: with `single_active`, only the first
    /// to join (the others wait, and the next takes over when it goes, as RabbitMQ's single
    /// active consumer); otherwise only while no consumer of a higher priority has room
    /// (RabbitMQ's consumer priorities).
    pub fn may_deliver(&self, id: u64, single_active: bool) -> bool {
        if single_active {
            return self.members.first().is_some_and(|m| m.id == id);
        }
        let Some(me) = self.members.iter().find(|m| m.id == id) else {
            return true;
        };
        !self
            .members
            .iter()
            .any(|m| m.priority > me.priority && m.has_room)
    }
}

impl QueueUse {
    /// A consumer joins; false (and nothing changes) when an exclusive consumer holds the
    /// queue, or `exclusive` is asked while consumers exist.
    fn join(&mut self, exclusive: bool) -> bool {
        if self.exclusive_consumer || (exclusive && self.consumers > 0) {
            return false;
        }
        self.consumers += 1;
        self.exclusive_consumer = exclusive;
        true
    }

    /// A consumer leaves; true when it was the last.
    fn leave(&mut self) -> bool {
        self.consumers = self.consumers.saturating_sub(1);
        // An exclusive consumer is the only one, so whoever leaves frees the queue.
        self.exclusive_consumer = false;
        self.consumers == 0
    }
}

/// State shared by the door's connections.
pub struct Door {
    pub broker: Arc<Broker>,
    pub topology: Topology,
    pub config: AmqpConfig,
    /// The vhosts served and the users who may log in (`amqp.vhosts`, `amqp.users`).
    pub access: Access,
    /// Bumped when messages become available without an append (nack with requeue,
    /// released by a closed channel) or a queue goes: consumers on every connection look
    /// again.
    wake: watch::Sender<u64>,
    /// What is short (disk, memory), if anything: publishers are blocked (`alarm.rs`).
    alarm: watch::Sender<crate::alarm::Alarm>,
    /// The limits the alarm checks (the memory default read once, at start).
    alarm_limits: crate::alarm::Limits,
    queues: Mutex<HashMap<String, QueueUse>>,
    next_name: AtomicU64,
    next_generation: AtomicU64,
    next_connection: AtomicU64,
}

fn in_exclusive_use(queue: &str) -> AmqpError {
    AmqpError::channel(
        ACCESS_REFUSED,
        format!("queue {} in exclusive use", describe(queue)),
    )
}

/// The vhosts and users of the config; entries that cannot be used are logged and skipped
/// (the config's key types cannot express them).
fn access_of(config: &AmqpConfig) -> Access {
    let (vhosts, bad_vhosts) = parse_vhosts(&config.vhosts);
    for v in bad_vhosts {
        tracing::warn!(vhost = %v, "amqp.vhosts: skipped (use letters, digits, '_' and '-')");
    }
    let (users, bad_users) = parse_users(&config.users);
    for u in bad_users {
        tracing::warn!(user = %u, "amqp.users: skipped (expected name:password[:vhost|vhost…])");
    }
    Access { vhosts, users }
}

/// 405 RESOURCE_LOCKED for `queue`, in RabbitMQ's words.
pub fn locked(queue: &str) -> AmqpError {
    AmqpError::channel(
        RESOURCE_LOCKED,
        format!(
            "cannot obtain exclusive access to locked queue {}. It could be originally declared on another connection or the exclusive property value does not match that of the original declaration.",
            describe(queue)
        ),
    )
}

impl Door {
    pub fn new(broker: Arc<Broker>, config: AmqpConfig) -> Door {
        let alarm_limits = crate::alarm::Limits {
            disk_free: config.disk_free_limit_bytes,
            memory: match config.memory_high_watermark_bytes {
                0 => crate::alarm::default_memory_limit(),
                n => n,
            },
        };
        let access = access_of(&config);
        let topology = Topology::open(&broker, &access.vhosts);
        // Every queue has its consumer series from the start, at 0 until one subscribes.
        for queue in broker.list_queues() {
            broker.metrics().set_subscribed(&queue, Some(0));
        }
        Door {
            topology,
            broker,
            config,
            access,
            wake: watch::channel(0).0,
            alarm: watch::channel(None).0,
            alarm_limits,
            queues: Mutex::new(HashMap::new()),
            next_name: AtomicU64::new(1),
            next_generation: AtomicU64::new(1),
            next_connection: AtomicU64::new(1),
        }
    }

    pub fn subscribe_wake(&self) -> watch::Receiver<u64> {
        self.wake.subscribe()
    }

    pub fn wake_consumers(&self) {
        self.wake.send_modify(|v| *v = v.wrapping_add(1));
    }

    pub fn subscribe_alarm(&self) -> watch::Receiver<crate::alarm::Alarm> {
        self.alarm.subscribe()
    }

    /// Looks at the free disk space and resident memory (`alarm.rs`).
    pub fn check_resources(&self) {
        let now = crate::alarm::check(&self.broker.config().data_dir, self.alarm_limits);
        crate::alarm::update(&self.alarm, now);
    }

    /// A server-chosen name with `prefix` (server-named queues, consumer tags).
    pub fn unique_name(&self, prefix: &str) -> String {
        let n = self.next_name.fetch_add(1, Ordering::Relaxed);
        format!("{prefix}{:x}-{n}", self.broker.now_ms())
    }

    /// A fresh connection id (owners of exclusive queues).
    pub fn next_connection_id(&self) -> u64 {
        self.next_connection.fetch_add(1, Ordering::Relaxed)
    }

    fn use_of<'a>(&self, map: &'a mut HashMap<String, QueueUse>, queue: &str) -> &'a mut QueueUse {
        map.entry(queue.to_string()).or_insert_with(|| QueueUse {
            generation: self.next_generation.fetch_add(1, Ordering::Relaxed),
            ..QueueUse::default()
        })
    }

    /// A queue was created: its consumer series starts at 0.
    pub fn queue_declared(&self, queue: &str) {
        self.broker
            .metrics()
            .set_subscribed(queue, Some(self.consumer_count(queue)));
    }

    pub fn consumer_count(&self, queue: &str) -> u32 {
        self.queues.lock().get(queue).map_or(0, |u| u.consumers)
    }

    /// A consumer joins `queue`; returns the queue's generation for [`Door::queue_alive`].
    /// 403 ACCESS_REFUSED when an exclusive consumer holds the queue, or when `exclusive`
    /// is asked and consumers exist (RabbitMQ's "in exclusive use").
    pub fn consumer_added(
        &self,
        queue: &str,
        exclusive: bool,
        id: u64,
        priority: i32,
    ) -> Result<u64, AmqpError> {
        let mut map = self.queues.lock();
        let u = self.use_of(&mut map, queue);
        if !u.join(exclusive) {
            return Err(in_exclusive_use(queue));
        }
        u.members.push(Member {
            id,
            priority,
            has_room: true,
        });
        self.broker
            .metrics()
            .set_subscribed(queue, Some(u.consumers));
        self.broker.queue_touch(queue);
        Ok(u.generation)
    }

    /// A consumer of `queue` (of `generation`) left. The last one leaving an auto-delete
    /// queue deletes it, as RabbitMQ does.
    pub fn consumer_removed(&self, queue: &str, generation: u64, id: u64) {
        let last = {
            let mut map = self.queues.lock();
            let Some(u) = map.get_mut(queue).filter(|u| u.generation == generation) else {
                return; // the queue was deleted (and maybe declared again) meanwhile
            };
            u.members.retain(|m| m.id != id);
            let last = u.leave();
            self.broker
                .metrics()
                .set_subscribed(queue, Some(u.consumers));
            // x-expires counts from the last consumer's leaving.
            self.broker.queue_touch(queue);
            if last && u.owner.is_none() {
                map.remove(queue);
            }
            last
        };
        let auto_delete = self
            .broker
            .queue_settings(queue)
            .is_some_and(|s| s.get(AUTO_DELETE_SETTING).map(String::as_str) == Some("true"));
        // A single active consumer's successor, or lower-priority consumers, may go on.
        self.wake_consumers();
        if last && auto_delete {
            tracing::debug!(queue, "auto-delete queue lost its last consumer");
            if let Err(e) = self.delete_queue(queue) {
                tracing::warn!(queue, reason = %e.reply_text(), "deleting an auto-delete queue failed");
            }
        }
    }

    /// Whether a consumer started on `queue` at `generation` may go on (the queue was not
    /// deleted since, through this door or another way).
    pub fn queue_alive(&self, queue: &str, generation: u64) -> bool {
        self.broker.queue_exists(queue)
            && self
                .queues
                .lock()
                .get(queue)
                .is_some_and(|u| u.generation == generation)
    }

    /// Whether consumer `id` of `queue` may take messages now ([`QueueUse::may_deliver`]).
    pub fn may_deliver(&self, queue: &str, id: u64, single_active: bool) -> bool {
        self.queues
            .lock()
            .get(queue)
            .is_none_or(|u| u.may_deliver(id, single_active))
    }

    /// Consumer `id` of `queue` has room under its prefetch, or not. A higher-priority
    /// consumer filling up wakes the others (they may take messages now).
    pub fn set_room(&self, queue: &str, id: u64, has_room: bool) {
        let filled = {
            let mut map = self.queues.lock();
            let Some(m) = map
                .get_mut(queue)
                .and_then(|u| u.members.iter_mut().find(|m| m.id == id))
            else {
                return;
            };
            let filled = m.has_room && !has_room;
            m.has_room = has_room;
            filled
        };
        if filled {
            self.wake_consumers();
        }
    }

    /// Records that connection `conn` owns exclusive queue `queue`.
    pub fn set_owner(&self, queue: &str, conn: u64) {
        let mut map = self.queues.lock();
        self.use_of(&mut map, queue).owner = Some(conn);
    }

    /// 405 RESOURCE_LOCKED when `queue` is exclusive to a connection other than `conn`.
    pub fn check_owner(&self, queue: &str, conn: u64) -> Result<(), AmqpError> {
        match self.queues.lock().get(queue).and_then(|u| u.owner) {
            Some(owner) if owner != conn => Err(locked(queue)),
            _ => Ok(()),
        }
    }

    /// The connection owning exclusive queue `queue`, if it is one.
    pub fn owner(&self, queue: &str) -> Option<u64> {
        self.queues.lock().get(queue).and_then(|u| u.owner)
    }

    /// Deletes a queue with its bindings and its messages (the topic goes too: a queue
    /// declared again under the name starts empty, as in RabbitMQ). Its consumers, on any
    /// connection, are cancelled when their connection next pumps (woken here).
    pub fn delete_queue(&self, name: &str) -> Result<(), AmqpError> {
        self.topology.drop_queue(&self.broker, name)?;
        match self.broker.delete_queue(name, true) {
            Ok(()) | Err(broker::BrokerError::UnknownTopicOrPartition) => {}
            Err(e) => return Err(from_broker(&e)),
        }
        self.topology.forget_exclusive(&self.broker, name)?;
        self.queues.lock().remove(name);
        self.broker.metrics().set_subscribed(name, None);
        self.wake_consumers();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_consumer_is_the_single_active_one_and_higher_priorities_go_first() {
        let member = |id, priority, has_room| Member {
            id,
            priority,
            has_room,
        };
        let mut u = QueueUse {
            members: vec![member(1, 0, true), member(2, 0, true)],
            ..QueueUse::default()
        };
        assert!(u.may_deliver(1, true) && !u.may_deliver(2, true));
        u.members.remove(0);
        assert!(u.may_deliver(2, true), "the next one takes over");
        let mut u = QueueUse {
            members: vec![member(1, 0, true), member(2, 10, true)],
            ..QueueUse::default()
        };
        assert!(u.may_deliver(2, false));
        assert!(!u.may_deliver(1, false), "a higher priority has room");
        u.members[1].has_room = false;
        assert!(u.may_deliver(1, false), "the higher one is full");
    }

    #[test]
    fn an_exclusive_consumer_holds_the_queue_alone() {
        let mut u = QueueUse::default();
        assert!(u.join(false) && u.join(false), "shared consumers join");
        assert!(!u.join(true), "exclusive while consumers exist: refused");
        assert_eq!(u.consumers, 2);
        let mut alone = QueueUse::default();
        assert!(alone.join(true));
        assert!(!alone.join(false), "nobody joins an exclusive consumer");
        assert!(!alone.join(true));
        assert_eq!(alone.consumers, 1);
        assert!(alone.leave(), "the last consumer left");
        assert!(alone.join(false), "the queue is free again");
    }
}
