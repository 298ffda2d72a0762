//! The Kafka coordinator's error type: the core's errors plus Kafka's own (groups,
//! transactions, idempotent producers). The Kafka door maps each to its error code.

use broker::BrokerError;

use crate::group::GroupError;
use crate::txn::TxnError;

#[derive(Debug, thiserror::Error)]
pub enum CoordError {
    #[error(transparent)]
    Broker(#[from] BrokerError),
    #[error(transparent)]
    Group(#[from] GroupError),
    #[error(transparent)]
    Txn(#[from] TxnError),
    #[error("out of order sequence number: {0}")]
    OutOfOrderSequence(String),
    #[error("producer fenced: {0}")]
    ProducerFenced(String),
}

impl CoordError {
    /// As the core's error, for the append hooks (the Kafka door maps it back with
    /// [`CoordError::from_broker`]).
    pub fn into_broker(self) -> BrokerError {
        match self {
            CoordError::Broker(e) => e,
            other => BrokerError::Refused(Box::new(other)),
        }
    }

    /// The coordinator's error inside a core error, if it is one.
    pub fn from_broker(e: &BrokerError) -> Option<&CoordError> {
        match e {
            BrokerError::Refused(inner) => inner.downcast_ref::<CoordError>(),
            _ => None,
        }
    }
}

pub type Result<T, E = CoordError> = std::result::Result<T, E>;
