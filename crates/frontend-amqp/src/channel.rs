//! One channel's state: the message being published (method, header, body frames), its
//! consumers, its delivered-but-unacked messages by delivery tag, its publisher-confirm
//! counters and its open transaction.
//!
//! Invariants: delivery tags grow from 1 per channel and each maps to exactly one
//! (queue, broker consumer, offset) until acked, nacked or the channel closes; every broker
//! consumer id that may hold messages is in `holders`, so closing the channel releases all
//! it holds. In confirm mode `confirm_sent <= confirm_ready <= published`: every sequence
//! number up to `confirm_ready` is stored, those up to `confirm_sent` were confirmed.

use std::collections::{BTreeMap, BTreeSet};

use amq_protocol::protocol::BasicProperties;
use common::Offset;

/// A basic.publish waiting for its content.
pub struct PendingPublish {
    pub exchange: String,
    pub routing_key: String,
    pub mandatory: bool,
    /// From the content header: the body's announced size and the properties.
    pub header: Option<(u64, BasicProperties)>,
    pub body: Vec<u8>,
}

/// One basic.consume.
pub struct Consumer {
    pub queue: String,
    /// The broker-side consumer id (one per connection, channel and consumer tag).
    pub broker_id: u64,
    pub no_ack: bool,
    /// Unacked deliveries allowed (basic.qos, global = false); 0: no limit.
    pub prefetch: u16,
    pub unacked: u32,
    /// The queue's generation when the consumer started (`Door::queue_alive`).
    pub generation: u64,
    /// The queue has `x-single-active-consumer`: only its first consumer takes messages.
    pub single_active: bool,
    /// A quorum queue: redeliveries carry `x-delivery-count`.
    pub counts_deliveries: bool,
    /// A stream queue's consumer (`stream.rs`): the next offset it reads.
    pub stream: Option<Offset>,
}

/// Deliveries taken from the unacked map by an ack, nack or reject, with their tags.
pub type Taken = Vec<(u64, Unacked)>;

/// A delivered message awaiting ack.
#[derive(Clone, Debug)]
pub struct Unacked {
    pub queue: String,
    pub broker_id: u64,
    pub offset: Offset,
    /// `None`: from basic.get.
    pub consumer_tag: Option<String>,
    /// Read from a stream queue: its ack only makes room (`stream.rs`).
    pub stream: bool,
}

/// One open channel.
#[derive(Default)]
pub struct Channel {
    /// Which opening of this channel number it is (confirms waiting for the disk belong
    /// to one opening: `confirm.rs`).
    pub epoch: u64,
    /// The server sent channel.close and waits for close-ok: other frames are dropped.
    pub closing: bool,
    pub publish: Option<PendingPublish>,
    /// confirm.select was sent: every publish is acked with its sequence number.
    pub confirm: bool,
    pub published: u64,
    /// Highest sequence number stored (with all below it) whose ack is not sent yet.
    pub confirm_ready: u64,
    /// Highest sequence number confirmed to the client.
    pub confirm_sent: u64,
    /// tx.select was sent: publishes and acks wait here for tx.commit.
    pub tx: Option<crate::tx::Tx>,
    /// basic.qos prefetch for consumers started after it (global = false).
    pub prefetch_consumer: u16,
    /// basic.qos prefetch shared by the channel's consumers (global = true); 0: none.
    pub prefetch_channel: u16,
    pub consumers: BTreeMap<String, Consumer>,
    pub last_tag: u64,
    pub unacked: BTreeMap<u64, Unacked>,
    /// Broker consumer id for basic.get, made on first use.
    pub get_id: Option<u64>,
    /// (queue, broker consumer id) pairs that may hold messages.
    pub holders: BTreeSet<(String, u64)>,
}

impl Channel {
    /// Deliveries the channel-wide prefetch still allows (`u32::MAX`: no limit).
    pub fn channel_room(&self) -> u32 {
        match self.prefetch_channel {
            0 => u32::MAX,
            n => u32::from(n).saturating_sub(self.unacked.len() as u32),
        }
    }

    /// Takes the unacked deliveries an ack/nack/reject names, with their tags: `tag`
    /// alone, or with `multiple` every tag up to it (0: all). `None` when a named tag is
    /// unknown.
    pub fn take_unacked(&mut self, tag: u64, multiple: bool) -> Option<Taken> {
        let taken: Taken = if multiple {
            let upto = if tag == 0 { u64::MAX } else { tag };
            let tags: Vec<u64> = self.unacked.range(..=upto).map(|(t, _)| *t).collect();
            if tags.is_empty() && tag != 0 {
                return None;
            }
            tags.iter()
                .filter_map(|t| self.unacked.remove(t).map(|u| (*t, u)))
                .collect()
        } else {
            vec![(tag, self.unacked.remove(&tag)?)]
        };
        for (_, u) in &taken {
            if let Some(c) = u
                .consumer_tag
                .as_ref()
                .and_then(|t| self.consumers.get_mut(t))
            {
                c.unacked = c.unacked.saturating_sub(1);
            }
        }
        Some(taken)
    }

    /// Puts back deliveries taken by an ack that a tx.rollback undid: unacked again, under
    /// their tags, counted against their consumers' prefetch.
    pub fn restore_unacked(&mut self, taken: Taken) {
        for (tag, u) in taken {
            if let Some(c) = u
                .consumer_tag
                .as_ref()
                .and_then(|t| self.consumers.get_mut(t))
            {
                c.unacked += 1;
            }
            self.unacked.insert(tag, u);
        }
    }

    /// The confirm to send now for publishes stored since the last one, if any:
    /// (delivery tag, multiple). Several become one ack with `multiple` set.
    pub fn take_confirm(&mut self) -> Option<(u64, bool)> {
        if self.confirm_ready <= self.confirm_sent {
            return None;
        }
        let multiple = self.confirm_ready - self.confirm_sent > 1;
        self.confirm_sent = self.confirm_ready;
        Some((self.confirm_ready, multiple))
    }
}

/// Groups deliveries by (queue, broker consumer), each with its offsets.
pub fn by_holder(taken: &[(u64, Unacked)]) -> BTreeMap<(String, u64), Vec<Offset>> {
    let mut out: BTreeMap<(String, u64), Vec<Offset>> = BTreeMap::new();
    for (_, u) in taken.iter().filter(|(_, u)| !u.stream) {
        out.entry((u.queue.clone(), u.broker_id))
            .or_default()
            .push(u.offset);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unacked(queue: &str, consumer_tag: Option<&str>) -> Unacked {
        Unacked {
            queue: queue.into(),
            broker_id: 7,
            offset: 0,
            consumer_tag: consumer_tag.map(str::to_string),
            stream: false,
        }
    }

    #[test]
    fn confirms_coalesce_into_one_multiple_ack() {
        let mut chan = Channel::default();
        assert_eq!(chan.take_confirm(), None);
        chan.confirm_ready = 1;
        assert_eq!(
            chan.take_confirm(),
            Some((1, false)),
            "one publish: a plain ack"
        );
        chan.confirm_ready = 5;
        assert_eq!(
            chan.take_confirm(),
            Some((5, true)),
            "2..=5: one ack, multiple"
        );
        assert_eq!(chan.take_confirm(), None, "nothing new");
    }

    #[test]
    fn a_rolled_back_ack_makes_its_deliveries_unacked_again() {
        let mut chan = Channel::default();
        chan.consumers.insert(
            "c".into(),
            Consumer {
                queue: "q".into(),
                broker_id: 7,
                no_ack: false,
                prefetch: 2,
                unacked: 2,
                generation: 1,
                single_active: false,
                counts_deliveries: false,
                stream: None,
            },
        );
        chan.unacked.insert(1, unacked("q", Some("c")));
        chan.unacked.insert(2, unacked("q", Some("c")));
        chan.unacked.insert(3, unacked("q", None));
        let taken = chan.take_unacked(2, true).unwrap();
        assert_eq!(taken.iter().map(|(t, _)| *t).collect::<Vec<_>>(), [1, 2]);
        assert_eq!(chan.consumers["c"].unacked, 0);
        assert!(chan.take_unacked(9, false).is_none(), "unknown tag");
        chan.restore_unacked(taken);
        assert_eq!(chan.unacked.keys().copied().collect::<Vec<_>>(), [1, 2, 3]);
        assert_eq!(chan.consumers["c"].unacked, 2);
    }
}
