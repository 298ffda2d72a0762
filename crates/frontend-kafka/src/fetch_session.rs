//! Incremental fetch sessions (KIP-227): a consumer of many partitions sends its partition
//! list once, then only the partitions whose fetch position changed (and the ones it
//! forgets), and gets back only the partitions with something new (records, a moved
//! watermark or log start, an error). The broker keeps each session's partitions here.
//!
//! Request shapes (session id, epoch): (0, -1) sessionless, a full request answered in full;
//! (0, 0) a full request that opens a session; (id, n > 0) the next incremental request of
//! session id (n must be the session's next epoch); (id, 0) closes id and opens a new one;
//! (id, -1) closes id and is answered sessionless. At most `max_sessions` live at once; a
//! new one evicts the least recently used.

use std::collections::{BTreeMap, HashMap};

use parking_lot::Mutex;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;

/// A partition of a session: (topic name as the request spelled it, topic id, index).
pub type SessionKey = (String, uuid::Uuid, i32);

/// What the session remembers of one partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionPartition {
    pub fetch_offset: i64,
    pub max_bytes: i32,
    /// Watermarks last sent for it (`None` before the first response that included it).
    pub last_sent: Option<(i64, i64, i64)>,
}

struct Session {
    next_epoch: i32,
    partitions: BTreeMap<SessionKey, SessionPartition>,
    last_used: u64,
}

/// Why a session request cannot be served (Kafka's top-level error codes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionError {
    /// FETCH_SESSION_ID_NOT_FOUND (70).
    NotFound,
    /// INVALID_FETCH_SESSION_EPOCH (71).
    InvalidEpoch,
}

impl SessionError {
    pub fn code(self) -> i16 {
        match self {
            SessionError::NotFound => 70,
            SessionError::InvalidEpoch => 71,
        }
    }
}

/// How one fetch request relates to the sessions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SessionUse {
    /// No session: the request's partitions, answered in full.
    None,
    /// Open a session with the request's partitions after answering them in full.
    Open,
    /// Incremental request of session `id` (the partitions to fetch come from the session).
    Incremental { id: i32 },
}

/// The sessions of one Kafka door.
pub struct FetchSessions {
    max_sessions: usize,
    inner: Mutex<Inner>,
    /// `sluice_kafka_fetch_sessions`: sessions alive now.
    live: Gauge,
    /// `sluice_kafka_fetch_incremental_total`: incremental fetches served.
    incremental: Counter,
}

#[derive(Default)]
struct Inner {
    by_id: HashMap<i32, Session>,
    next_id: i32,
    clock: u64,
}

impl FetchSessions {
    pub fn new(max_sessions: usize) -> FetchSessions {
        FetchSessions {
            max_sessions,
            inner: Mutex::new(Inner::default()),
            live: Gauge::default(),
            incremental: Counter::default(),
        }
    }

    /// Adds this door's session metrics to `registry`.
    pub fn register(&self, registry: &mut prometheus_client::registry::Registry) {
        registry.register(
            "sluice_kafka_fetch_sessions",
            "Incremental fetch sessions (KIP-227) alive",
            self.live.clone(),
        );
        registry.register(
            "sluice_kafka_fetch_incremental",
            "Incremental fetch requests served",
            self.incremental.clone(),
        );
    }

    /// Sessions alive now.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.inner.lock().by_id.len()
    }

    fn count_live(&self, inner: &Inner) {
        self.live.set(inner.by_id.len() as i64);
    }

    /// Classifies a request (closing the session it ends) and checks its epoch.
    pub fn begin(&self, session_id: i32, epoch: i32) -> Result<SessionUse, SessionError> {
        let mut inner = self.inner.lock();
        match (session_id, epoch) {
            (0, 0) => Ok(SessionUse::Open),
            (0, _) => Ok(SessionUse::None),
            (id, 0) => {
                inner.by_id.remove(&id);
                self.count_live(&inner);
                Ok(SessionUse::Open)
            }
            (id, -1) => {
                inner.by_id.remove(&id);
                self.count_live(&inner);
                Ok(SessionUse::None)
            }
            (id, n) => {
                let s = inner.by_id.get(&id).ok_or(SessionError::NotFound)?;
                if s.next_epoch != n {
                    return Err(SessionError::InvalidEpoch);
                }
                Ok(SessionUse::Incremental { id })
            }
        }
    }

    /// Applies an incremental request to session `id` (partitions added or moved, others
    /// forgotten) and returns every partition to fetch, in order, with which ones the
    /// request named (those are always answered), and the named partitions refused because
    /// the session already holds `max_partitions` (a session grows across requests, so the
    /// per-request partition limit bounds the session, not only one request).
    #[allow(clippy::type_complexity)]
    pub fn update(
        &self,
        id: i32,
        named: &[(SessionKey, i64, i32)],
        forgotten: &[SessionKey],
        max_partitions: usize,
    ) -> Result<(Vec<(SessionKey, SessionPartition, bool)>, Vec<SessionKey>), SessionError> {
        let mut inner = self.inner.lock();
        inner.clock += 1;
        let clock = inner.clock;
        let s = inner.by_id.get_mut(&id).ok_or(SessionError::NotFound)?;
        s.last_used = clock;
        self.incremental.inc();
        for k in forgotten {
            s.partitions.remove(k);
        }
        let mut refused = Vec::new();
        for (k, offset, max_bytes) in named {
            if !s.partitions.contains_key(k) && s.partitions.len() >= max_partitions {
                refused.push(k.clone());
                continue;
            }
            let p = s.partitions.entry(k.clone()).or_insert(SessionPartition {
                fetch_offset: *offset,
                max_bytes: *max_bytes,
                last_sent: None,
            });
            p.fetch_offset = *offset;
            p.max_bytes = *max_bytes;
        }
        let all = s
            .partitions
            .iter()
            .map(|(k, p)| (k.clone(), *p, named.iter().any(|(n, _, _)| n == k)))
            .collect();
        Ok((all, refused))
    }

    /// Opens a session holding `partitions` (with the watermarks just sent); returns its id,
    /// or 0 when no session can be kept (`max_sessions` is 0).
    pub fn open(&self, partitions: Vec<(SessionKey, SessionPartition)>) -> i32 {
        if self.max_sessions == 0 {
            return 0;
        }
        let mut inner = self.inner.lock();
        while inner.by_id.len() >= self.max_sessions {
            let oldest = inner
                .by_id
                .iter()
                .min_by_key(|(_, s)| s.last_used)
                .map(|(id, _)| *id);
            match oldest {
                Some(id) => inner.by_id.remove(&id),
                None => break,
            };
        }
        inner.clock += 1;
        let id = loop {
            inner.next_id = inner.next_id.wrapping_add(1).max(1);
            if !inner.by_id.contains_key(&inner.next_id) {
                break inner.next_id;
            }
        };
        let session = Session {
            next_epoch: 1,
            partitions: partitions.into_iter().collect(),
            last_used: inner.clock,
        };
        inner.by_id.insert(id, session);
        self.count_live(&inner);
        id
    }

    /// After an incremental response: the watermarks sent per partition, and the epoch
    /// moves on.
    pub fn sent(&self, id: i32, sent: &[(SessionKey, (i64, i64, i64))]) {
        let mut inner = self.inner.lock();
        if let Some(s) = inner.by_id.get_mut(&id) {
            s.next_epoch = s.next_epoch.wrapping_add(1).max(1);
            for (k, marks) in sent {
                if let Some(p) = s.partitions.get_mut(k) {
                    p.last_sent = Some(*marks);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(p: i32) -> SessionKey {
        ("t".to_string(), uuid::Uuid::nil(), p)
    }

    fn part(offset: i64) -> SessionPartition {
        SessionPartition {
            fetch_offset: offset,
            max_bytes: 100,
            last_sent: None,
        }
    }

    #[test]
    fn a_session_lives_through_incremental_epochs() {
        let s = FetchSessions::new(10);
        assert_eq!(s.begin(0, -1), Ok(SessionUse::None));
        assert_eq!(s.begin(0, 0), Ok(SessionUse::Open));
        let id = s.open(vec![(key(0), part(0)), (key(1), part(0))]);
        assert_eq!(s.begin(id, 2), Err(SessionError::InvalidEpoch));
        assert_eq!(s.begin(id, 1), Ok(SessionUse::Incremental { id }));
        let (all, _) = s.update(id, &[(key(1), 5, 100)], &[key(0)], 10).unwrap();
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].1.fetch_offset, 5);
        assert!(all[0].2, "named in the request");
        s.sent(id, &[(key(1), (9, 9, 0))]);
        assert_eq!(s.begin(id, 2), Ok(SessionUse::Incremental { id }));
        let (all, _) = s.update(id, &[], &[], 10).unwrap();
        assert_eq!(all[0].1.last_sent, Some((9, 9, 0)));
        assert!(!all[0].2);
        // (id, -1) closes it.
        assert_eq!(s.begin(id, -1), Ok(SessionUse::None));
        assert_eq!(s.begin(id, 3), Err(SessionError::NotFound));
    }

    /// A client naming new partitions request after request cannot grow its session past
    /// the per-request partition limit: the extra ones are refused, the session stays.
    #[test]
    fn a_session_holds_at_most_the_partition_limit() {
        let s = FetchSessions::new(10);
        let id = s.open(vec![(key(0), part(0)), (key(1), part(0))]);
        let named: Vec<(SessionKey, i64, i32)> = (2..6).map(|p| (key(p), 0, 100)).collect();
        let (all, refused) = s.update(id, &named, &[], 3).unwrap();
        assert_eq!(all.len(), 3);
        assert_eq!(refused, vec![key(3), key(4), key(5)]);
        // Partitions already in the session may still move.
        let (all, refused) = s.update(id, &[(key(0), 7, 100)], &[], 3).unwrap();
        assert!(refused.is_empty());
        assert_eq!(all[0].1.fetch_offset, 7);
    }

    #[test]
    fn the_least_recently_used_session_makes_room() {
        let s = FetchSessions::new(2);
        let a = s.open(vec![(key(0), part(0))]);
        let b = s.open(vec![(key(0), part(0))]);
        s.update(a, &[], &[], 10).unwrap();
        let c = s.open(vec![(key(0), part(0))]);
        assert_eq!(s.len(), 2);
        assert_eq!(
            s.begin(b, 1),
            Err(SessionError::NotFound),
            "b was idle longest"
        );
        assert!(s.begin(a, 1).is_ok());
        assert!(s.begin(c, 1).is_ok());
        assert_eq!(
            FetchSessions::new(0).open(vec![]),
            0,
            "no slots, no session"
        );
    }
}
