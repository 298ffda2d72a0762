//! Publisher confirms that wait for the disk without stopping the connection.
//!
//! Each publish in confirm mode is written at once (readable, in order) and leaves a
//! [`PendingConfirm`]: its sequence number, whether every routed queue took it, and the
//! stores' acknowledgements (durable once they resolve, for `flush = sync`). When the
//! connection has handled every frame of one socket read it turns that read's pending
//! confirms into one [`ConfirmWait`] and goes on reading: the next read's publishes are
//! written while the previous read's fsync runs, so one group commit covers as many
//! publishes as arrived meanwhile, not one per message. Waits resolve in the order they
//! were queued (the commit log is one ordered file), and each one's outcomes become acks
//! (one basic.ack with `multiple` per channel) and nacks, in sequence order.
//!
//! Bounds: the connection stops reading while [`MAX_WAITS`] reads wait (TCP backpressure).
//! A channel that closes drops the confirms still waiting for it (a reopened channel of the
//! same number has another epoch); a client's channel.close first waits for its channel's
//! confirms, so a publisher that closes after publishing sees every confirm.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;

use crate::channel::Channel;
use crate::connection::{Connection, Session};

/// Most socket reads whose confirms may wait for the disk at once.
pub const MAX_WAITS: usize = 256;

/// One publish whose confirm waits for its stores.
pub struct PendingConfirm {
    pub ch: u16,
    /// The channel's epoch (`Channel::epoch`) when it was published.
    pub epoch: u64,
    pub seq: u64,
    /// Every routed queue took it (else it is nacked).
    pub stored: bool,
    pub pending: Vec<broker::PendingProduce>,
}

/// A confirm's outcome: (channel, epoch, sequence number, ack).
type Outcome = (u16, u64, u64, bool);

/// The confirms of one socket read, waiting for their stores.
pub type ConfirmWait = Pin<Box<dyn Future<Output = Vec<Outcome>> + Send>>;

/// Waits for the oldest queued read's stores (pending forever when none waits: the
/// connection's `select!` polls this only when `waits` is not empty).
pub async fn next_resolved(waits: &mut VecDeque<ConfirmWait>) -> Vec<Outcome> {
    match waits.front_mut() {
        Some(w) => {
            let out = w.as_mut().await;
            waits.pop_front();
            out
        }
        None => std::future::pending().await,
    }
}

impl Session {
    /// Publish `seq` on `chan` was handled: its confirm goes out once `pending` resolve.
    pub(crate) fn confirm_later(
        &mut self,
        ch: u16,
        chan: &Channel,
        seq: u64,
        stored: bool,
        pending: Vec<broker::PendingProduce>,
    ) {
        self.confirms.push(PendingConfirm {
            ch,
            epoch: chan.epoch,
            seq,
            stored,
            pending,
        });
    }
}

impl Connection {
    /// The frames of one read are handled: queue their confirms behind those already
    /// waiting, or send them now when nothing needs the disk.
    pub(crate) fn queue_confirms(&mut self) {
        let confirms = std::mem::take(&mut self.session.confirms);
        if confirms.is_empty() {
            return;
        }
        let ready = confirms
            .iter()
            .all(|c| c.pending.iter().all(broker::PendingProduce::is_acked));
        if ready && self.waits.is_empty() {
            let outcomes: Vec<Outcome> = confirms
                .into_iter()
                .map(|c| (c.ch, c.epoch, c.seq, c.stored))
                .collect();
            self.apply_confirms(outcomes);
            return;
        }
        self.waits.push_back(Box::pin(async move {
            let mut out = Vec::with_capacity(confirms.len());
            for c in confirms {
                let mut ok = c.stored;
                for p in c.pending {
                    ok &= p.acked().await.is_ok();
                }
                out.push((c.ch, c.epoch, c.seq, ok));
            }
            out
        }));
    }

    /// Sends the acks and nacks of resolved confirms (in sequence order per channel).
    pub(crate) fn apply_confirms(&mut self, outcomes: Vec<Outcome>) {
        let mut touched = Vec::new();
        for (ch, epoch, seq, ok) in outcomes {
            let Some(chan) = self.channels.get_mut(&ch).filter(|c| c.epoch == epoch) else {
                continue; // the channel closed meanwhile
            };
            self.session.confirm(ch, chan, seq, ok);
            if !touched.contains(&ch) {
                touched.push(ch);
            }
        }
        for ch in touched {
            if let Some(chan) = self.channels.get_mut(&ch) {
                self.session.send_confirm(ch, chan);
            }
        }
    }

    /// Waits for every queued confirm and sends them (before a channel.close-ok).
    pub(crate) async fn drain_confirms(&mut self) {
        self.queue_confirms();
        while !self.waits.is_empty() {
            let outcomes = next_resolved(&mut self.waits).await;
            self.apply_confirms(outcomes);
        }
    }
}
