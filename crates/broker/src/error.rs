//! The broker core's error type. Front doors map each variant to their protocol's code.

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("unknown topic or partition")]
    UnknownTopicOrPartition,
    #[error("unknown topic id")]
    UnknownTopicId,
    #[error("topic {0} already exists")]
    TopicAlreadyExists(String),
    #[error("invalid topic name: {0}")]
    InvalidTopic(String),
    #[error("invalid partitions: {0}")]
    InvalidPartitions(String),
    #[error("invalid replication factor {0}: this broker keeps one replica")]
    InvalidReplicationFactor(i32),
    #[error("invalid config: {0}")]
    InvalidConfig(String),
    #[error("record batch of {size} bytes exceeds max.message.bytes {max}")]
    MessageTooLarge { size: usize, max: usize },
    #[error("corrupt record batch: {0}")]
    CorruptMessage(String),
    #[error("invalid record: {0}")]
    InvalidRecord(String),
    /// An acknowledgement of a record the consumer does not hold (share groups).
    #[error("invalid record state: {0}")]
    InvalidRecordState(String),
    #[error("invalid timestamp: {0}")]
    InvalidTimestamp(String),
    #[error("offset {offset} out of range [{log_start}, {log_end}]")]
    OffsetOutOfRange {
        offset: i64,
        log_start: i64,
        log_end: i64,
    },
    #[error("limit reached: {0}")]
    LimitReached(String),
    #[error("storage: {0}")]
    Storage(#[source] storage::StorageError),
    #[error("metadata log: {0}")]
    Metadata(String),
    #[error("broker is shutting down")]
    ShuttingDown,
    /// A layer above the core ([`crate::PartitionHooks`]) refused an append; its own error
    /// type, which the front door that installed it knows how to map.
    #[error(transparent)]
    Refused(Box<dyn std::error::Error + Send + Sync>),
}

impl From<storage::StorageError> for BrokerError {
    fn from(e: storage::StorageError) -> Self {
        use storage::StorageError as S;
        match e {
            S::CorruptBatch { .. } => BrokerError::CorruptMessage(e.to_string()),
            S::InvalidBatch(msg) => BrokerError::InvalidRecord(msg),
            S::OffsetOutOfRange {
                offset,
                log_start,
                log_end,
                ..
            } => BrokerError::OffsetOutOfRange {
                offset,
                log_start,
                log_end,
            },
            S::UnknownPartition(_) => BrokerError::UnknownTopicOrPartition,
            // Not retriable for clients (KAFKA_STORAGE_ERROR would make them retry the same
            // offset forever, silently): the application sees it until a repair.
            S::CorruptData { .. } => BrokerError::CorruptMessage(format!(
                "{e}; the batch is never served: `sluice storage check` / `repair`"
            )),
            other => BrokerError::Storage(other),
        }
    }
}

pub type Result<T, E = BrokerError> = std::result::Result<T, E>;
