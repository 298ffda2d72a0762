//! Domain errors → Kafka error codes (the only place that knows both).

use broker::BrokerError;
use kafka_coord::CoordError;
use kafka_coord::group::GroupError;
use kafka_protocol::ResponseError as E;

pub const NONE: i16 = 0;

/// An error with a Kafka error code.
pub trait ErrorCode {
    fn kafka_code(&self) -> i16;
}

impl ErrorCode for BrokerError {
    fn kafka_code(&self) -> i16 {
        broker_code(self)
    }
}

impl ErrorCode for CoordError {
    fn kafka_code(&self) -> i16 {
        coord_code(self)
    }
}

/// The Kafka error code of a core or coordinator error.
pub fn error_code(e: &impl ErrorCode) -> i16 {
    e.kafka_code()
}

pub fn broker_code(e: &BrokerError) -> i16 {
    let code = match e {
        BrokerError::UnknownTopicOrPartition => E::UnknownTopicOrPartition,
        BrokerError::UnknownTopicId => E::UnknownTopicId,
        BrokerError::TopicAlreadyExists(_) => E::TopicAlreadyExists,
        BrokerError::InvalidTopic(_) => E::InvalidTopicException,
        BrokerError::InvalidPartitions(_) => E::InvalidPartitions,
        BrokerError::InvalidReplicationFactor(_) => E::InvalidReplicationFactor,
        BrokerError::InvalidConfig(_) => E::InvalidConfig,
        BrokerError::MessageTooLarge { .. } => E::MessageTooLarge,
        BrokerError::CorruptMessage(_) => E::CorruptMessage,
        BrokerError::InvalidRecord(_) => E::InvalidRecord,
        BrokerError::InvalidRecordState(_) => E::InvalidRecordState,
        BrokerError::InvalidTimestamp(_) => E::InvalidTimestamp,
        BrokerError::OffsetOutOfRange { .. } => E::OffsetOutOfRange,
        BrokerError::LimitReached(_) => E::PolicyViolation,
        BrokerError::Storage(_) => E::KafkaStorageError,
        BrokerError::Metadata(_) => E::KafkaStorageError,
        BrokerError::ShuttingDown => E::NotLeaderOrFollower,
        BrokerError::Refused(_) => match CoordError::from_broker(e) {
            Some(c) => return coord_code(c),
            None => E::UnknownServerError,
        },
    };
    code.code()
}

/// The Kafka coordinators' errors (groups, transactions, idempotent producers).
pub fn coord_code(e: &CoordError) -> i16 {
    let code = match e {
        CoordError::Broker(b) => return broker_code(b),
        CoordError::Group(g) => return group_code(g),
        CoordError::Txn(t) => return txn_code(t),
        CoordError::OutOfOrderSequence(_) => E::OutOfOrderSequenceNumber,
        CoordError::ProducerFenced(_) => E::InvalidProducerEpoch,
    };
    code.code()
}

pub fn txn_code(e: &kafka_coord::txn::TxnError) -> i16 {
    use kafka_coord::txn::TxnError as T;
    let code = match e {
        T::ProducerFenced(_) => E::ProducerFenced,
        T::InvalidProducerIdMapping => E::InvalidProducerIdMapping,
        T::InvalidTxnState(_) => E::InvalidTxnState,
        T::ConcurrentTransactions => E::ConcurrentTransactions,
        T::InvalidTransactionTimeout(_) => E::InvalidTransactionTimeout,
        T::TransactionalIdNotFound => E::TransactionalIdNotFound,
    };
    code.code()
}

pub fn group_code(e: &GroupError) -> i16 {
    let code = match e {
        GroupError::UnknownMemberId => E::UnknownMemberId,
        GroupError::IllegalGeneration => E::IllegalGeneration,
        GroupError::RebalanceInProgress => E::RebalanceInProgress,
        GroupError::InconsistentGroupProtocol => E::InconsistentGroupProtocol,
        GroupError::InvalidSessionTimeout => E::InvalidSessionTimeout,
        GroupError::MemberIdRequired(_) => E::MemberIdRequired,
        GroupError::FencedInstanceId => E::FencedInstanceId,
        GroupError::GroupIdNotFound => E::GroupIdNotFound,
        GroupError::NonEmptyGroup => E::NonEmptyGroup,
        GroupError::GroupMaxSizeReached => E::GroupMaxSizeReached,
        GroupError::InvalidGroupId => E::InvalidGroupId,
        GroupError::GroupSubscribedToTopic => E::GroupSubscribedToTopic,
        GroupError::OffsetMetadataTooLarge => E::OffsetMetadataTooLarge,
        GroupError::UnknownTopicOrPartition => E::UnknownTopicOrPartition,
        GroupError::CoordinatorNotAvailable => E::CoordinatorNotAvailable,
        GroupError::StaleMemberEpoch => E::StaleMemberEpoch,
    };
    code.code()
}

/// Short label of an error code for metrics.
pub fn code_name(code: i16) -> String {
    E::try_from_code(code)
        .map(|e| format!("{e:?}"))
        .unwrap_or_else(|| code.to_string())
}
