//! Domain requests, replies and errors of the group coordinator (no wire types).

use bytes::Bytes;

use super::member::ProtocolOffer;

/// Why a group operation failed. The Kafka front door maps each to its error code.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum GroupError {
    #[error("unknown member id")]
    UnknownMemberId,
    #[error("illegal generation")]
    IllegalGeneration,
    #[error("rebalance in progress")]
    RebalanceInProgress,
    #[error("inconsistent group protocol")]
    InconsistentGroupProtocol,
    #[error("session timeout out of the allowed range")]
    InvalidSessionTimeout,
    #[error("member id required (assigned {0})")]
    MemberIdRequired(String),
    #[error("static member fenced by a newer instance")]
    FencedInstanceId,
    #[error("group not found")]
    GroupIdNotFound,
    #[error("group is not empty")]
    NonEmptyGroup,
    #[error("group is full")]
    GroupMaxSizeReached,
    #[error("invalid group id")]
    InvalidGroupId,
    #[error("group is subscribed to the topic")]
    GroupSubscribedToTopic,
    #[error("offset metadata too large")]
    OffsetMetadataTooLarge,
    #[error("unknown topic or partition")]
    UnknownTopicOrPartition,
    #[error("coordinator is shutting down")]
    CoordinatorNotAvailable,
    #[error("stale member epoch")]
    StaleMemberEpoch,
}

/// Observable group state (Kafka's names).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum GroupState {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
    Dead,
}

impl GroupState {
    pub fn as_str(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
            GroupState::Dead => "Dead",
        }
    }
}

#[derive(Clone, Debug)]
pub struct JoinRequest {
    pub group_id: String,
    /// Empty for a member joining for the first time.
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    pub protocol_type: String,
    pub protocols: Vec<ProtocolOffer>,
    /// KIP-394 (JoinGroup v4+): a first join gets `MemberIdRequired` with an id.
    pub require_known_member_id: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JoinedMember {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub metadata: Bytes,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JoinOutcome {
    pub generation_id: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub leader_id: String,
    pub member_id: String,
    /// Filled for the leader only.
    pub members: Vec<JoinedMember>,
}

#[derive(Clone, Debug)]
pub struct SyncRequest {
    pub group_id: String,
    pub generation_id: i32,
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    /// Leader only: (member id, assignment).
    pub assignments: Vec<(String, Bytes)>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncOutcome {
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub assignment: Bytes,
}

/// A member to remove with LeaveGroup (v3+ carries several, by id or instance id).
#[derive(Clone, Debug)]
pub struct LeavingMember {
    pub member_id: String,
    pub group_instance_id: Option<String>,
}

/// A static member as saved with its group, so it survives a broker restart.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SavedMember {
    pub instance_id: String,
    pub member_id: String,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    /// (protocol name, its metadata).
    pub protocols: Vec<(String, Vec<u8>)>,
    pub assignment: Vec<u8>,
    pub leader: bool,
}

/// A reply that was parked and is now ready; the async wrapper routes it to its waiter.
#[derive(Clone, Debug)]
pub enum Completion {
    Join {
        group_id: String,
        member_id: String,
        result: Result<JoinOutcome, GroupError>,
    },
    Sync {
        group_id: String,
        member_id: String,
        result: Result<SyncOutcome, GroupError>,
    },
}

/// Immediate reply, or "parked: the answer comes later as a `Completion`".
#[derive(Clone, Debug)]
pub enum Reply<T> {
    Now(Result<T, GroupError>),
    /// Parked under this member id (new members get their id here).
    Parked {
        member_id: String,
    },
}

pub use broker::CommittedOffset;

#[derive(Clone, Debug)]
pub struct MemberDescription {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub metadata: Bytes,
    pub assignment: Bytes,
}

#[derive(Clone, Debug)]
pub struct GroupDescription {
    pub group_id: String,
    pub state: GroupState,
    pub protocol_type: String,
    pub protocol_name: String,
    pub members: Vec<MemberDescription>,
}

#[derive(Clone, Debug)]
pub struct GroupListing {
    pub group_id: String,
    pub protocol_type: String,
    pub state: GroupState,
}
