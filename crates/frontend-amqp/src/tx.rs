//! Transactions (tx.select / tx.commit / tx.rollback), as RabbitMQ runs them: on a
//! transactional channel a publish is checked (the exchange exists and takes publishes) and
//! kept; an ack, nack or reject is checked (the tags are known) and kept, its deliveries no
//! longer unacked. tx.commit routes and stores the publishes (mandatory returns then) and
//! applies the acks, in order; tx.rollback drops the publishes and makes the acked
//! deliveries unacked again. A channel closed with an open transaction loses it: its
//! deliveries go back to their queues like any unacked ones.
//!
//! A channel is transactional or in confirm mode, never both (406 PRECONDITION_FAILED).
//! What a transaction holds is bounded ([`TX_MAX_BYTES`], [`TX_MAX_ENTRIES`]): more is 406.

use amq_protocol::protocol::{AMQPClass, tx};

use crate::channel::{Channel, Taken};
use crate::connection::Session;
use crate::errors::{AmqpError, PRECONDITION_FAILED};
use crate::message::Message;

/// Most message body bytes one transaction holds before its commit.
pub const TX_MAX_BYTES: usize = 64 << 20;
/// Most publishes and acks one transaction holds before its commit.
pub const TX_MAX_ENTRIES: usize = 100_000;

/// What a transactional channel holds until tx.commit.
#[derive(Default)]
pub struct Tx {
    /// Published messages with their `mandatory` flag.
    publishes: Vec<(Message, bool)>,
    /// Acks (`None`), nacks and rejects (`Some(requeue)`), with the deliveries they took.
    settles: Vec<(Taken, Option<bool>)>,
    bytes: usize,
}

impl Tx {
    fn room_for(&self, bytes: usize) -> Result<(), AmqpError> {
        let entries = self.publishes.len() + self.settles.len();
        if entries >= TX_MAX_ENTRIES || self.bytes + bytes > TX_MAX_BYTES {
            return Err(AmqpError::channel(
                PRECONDITION_FAILED,
                format!(
                    "transaction too large: at most {TX_MAX_ENTRIES} publishes and acks and {TX_MAX_BYTES} bytes per commit"
                ),
            ));
        }
        Ok(())
    }

    pub fn publish(&mut self, msg: Message, mandatory: bool) -> Result<(), AmqpError> {
        self.room_for(msg.body.len())?;
        self.bytes += msg.body.len();
        self.publishes.push((msg, mandatory));
        Ok(())
    }

    pub fn settle(&mut self, taken: Taken, requeue: Option<bool>) -> Result<(), AmqpError> {
        self.room_for(0)?;
        self.settles.push((taken, requeue));
        Ok(())
    }
}

fn not_transactional() -> AmqpError {
    AmqpError::channel(PRECONDITION_FAILED, "channel is not transactional")
}

impl Session {
    pub async fn tx_method(
        &mut self,
        ch: u16,
        chan: &mut Channel,
        m: tx::AMQPMethod,
    ) -> Result<(), AmqpError> {
        let reply = match m {
            tx::AMQPMethod::Select(_) => {
                if chan.confirm {
                    return Err(AmqpError::channel(
                        PRECONDITION_FAILED,
                        "cannot switch from confirm to tx mode",
                    ));
                }
                chan.tx.get_or_insert_with(Tx::default);
                tx::AMQPMethod::SelectOk(tx::SelectOk {})
            }
            tx::AMQPMethod::Commit(_) => {
                let open = chan
                    .tx
                    .replace(Tx::default())
                    .ok_or_else(not_transactional)?;
                self.commit(ch, open).await?;
                tx::AMQPMethod::CommitOk(tx::CommitOk {})
            }
            tx::AMQPMethod::Rollback(_) => {
                let open = chan
                    .tx
                    .replace(Tx::default())
                    .ok_or_else(not_transactional)?;
                for (taken, _) in open.settles {
                    chan.restore_unacked(taken);
                }
                tx::AMQPMethod::RollbackOk(tx::RollbackOk {})
            }
            other => {
                return Err(AmqpError::connection(
                    crate::errors::COMMAND_INVALID,
                    format!("{other:?} is sent by servers, not clients"),
                ));
            }
        };
        self.out.method(ch, AMQPClass::Tx(reply));
        Ok(())
    }

    /// Stores the transaction's publishes, then applies its acks.
    async fn commit(&mut self, ch: u16, open: Tx) -> Result<(), AmqpError> {
        for (msg, mandatory) in open.publishes {
            // A full reject-publish queue drops it, as RabbitMQ does in a transaction.
            let (stored, pending) = self.route_and_store(ch, &msg, mandatory).await?;
            let mut durable = true;
            for p in pending {
                durable &= p.acked().await.is_ok();
            }
            if stored == crate::publish::Stored::Failed || !durable {
                return Err(AmqpError::channel(
                    PRECONDITION_FAILED,
                    "a message of the transaction could not be stored",
                ));
            }
        }
        for (taken, requeue) in open.settles {
            self.apply_settle(&taken, requeue).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_transaction_holds_a_bounded_number_of_entries_and_bytes() {
        let mut tx = Tx::default();
        for _ in 0..TX_MAX_ENTRIES {
            tx.settle(Vec::new(), None).unwrap();
        }
        let full = tx.settle(Vec::new(), None).unwrap_err();
        assert_eq!(full.code, PRECONDITION_FAILED);
        let mut tx = Tx::default();
        let msg = |len: usize| Message {
            body: vec![0; len],
            ..Message::default()
        };
        tx.publish(msg(TX_MAX_BYTES - 1), false).unwrap();
        tx.publish(msg(1), true).unwrap();
        assert_eq!(
            tx.publish(msg(1), false).unwrap_err().code,
            PRECONDITION_FAILED
        );
        assert_eq!(tx.publishes.len(), 2, "the refused message is not held");
    }
}
