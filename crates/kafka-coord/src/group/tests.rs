//! State-machine tests of the coordinator: time moves only when the test says so.

use bytes::Bytes;
use common::{Clock, ManualClock};

use super::*;

const SESSION_MS: i32 = 10_000;
const REBALANCE_MS: i32 = 30_000;

fn coordinator(initial_delay_ms: u64) -> GroupCoordinator {
    GroupCoordinator::new(CoordinatorConfig {
        initial_rebalance_delay_ms: initial_delay_ms,
        ..CoordinatorConfig::default()
    })
}

fn join_req(member_id: &str, instance: Option<&str>, protocols: &[&str]) -> JoinRequest {
    JoinRequest {
        group_id: "g".into(),
        member_id: member_id.into(),
        group_instance_id: instance.map(str::to_string),
        client_id: "client".into(),
        client_host: "/127.0.0.1".into(),
        session_timeout_ms: SESSION_MS,
        rebalance_timeout_ms: REBALANCE_MS,
        protocol_type: "consumer".into(),
        protocols: protocols
            .iter()
            .map(|p| ProtocolOffer {
                name: p.to_string(),
                metadata: Bytes::from(format!("meta-{p}")),
            })
            .collect(),
        require_known_member_id: true,
    }
}

fn sync_req(member_id: &str, generation_id: i32, assignments: Vec<(String, Bytes)>) -> SyncRequest {
    SyncRequest {
        group_id: "g".into(),
        generation_id,
        member_id: member_id.into(),
        group_instance_id: None,
        protocol_type: None,
        protocol_name: None,
        assignments,
    }
}

/// KIP-394 first round trip: returns the assigned member id.
fn get_member_id(c: &mut GroupCoordinator, clock: &ManualClock) -> String {
    match c.join(join_req("", None, &["range"]), clock.now_ms()).0 {
        Reply::Now(Err(GroupError::MemberIdRequired(id))) => id,
        other => panic!("expected MemberIdRequired, got {other:?}"),
    }
}

fn join_outcomes(out: &[Completion]) -> Vec<(String, JoinOutcome)> {
    out.iter()
        .filter_map(|c| match c {
            Completion::Join {
                member_id,
                result: Ok(o),
                ..
            } => Some((member_id.clone(), o.clone())),
            _ => None,
        })
        .collect()
}

/// One member joins and syncs; returns its id and generation.
fn single_stable_member(c: &mut GroupCoordinator, clock: &ManualClock) -> (String, i32) {
    let id = get_member_id(c, clock);
    let (reply, out) = c.join(join_req(&id, None, &["range"]), clock.now_ms());
    assert!(matches!(reply, Reply::Parked { .. }));
    let joined = join_outcomes(&out);
    assert_eq!(joined.len(), 1);
    let generation = joined[0].1.generation_id;
    assert_eq!(joined[0].1.leader_id, id);
    let (reply, out) = c.sync(
        sync_req(
            &id,
            generation,
            vec![(id.clone(), Bytes::from_static(b"a0"))],
        ),
        clock.now_ms(),
    );
    assert!(matches!(reply, Reply::Parked { .. }));
    assert!(
        matches!(&out[..], [Completion::Sync { result: Ok(s), .. }] if s.assignment == Bytes::from_static(b"a0"))
    );
    (id, generation)
}

#[test]
fn first_join_requires_member_id() {
    let clock = ManualClock::new(1_000);
    let mut c = coordinator(0);
    let id = get_member_id(&mut c, &clock);
    assert!(id.starts_with("client-"));
    // An unknown member id is refused.
    let (reply, _) = c.join(join_req("bogus", None, &["range"]), clock.now_ms());
    assert!(matches!(
        reply,
        Reply::Now(Err(GroupError::UnknownMemberId))
    ));
}

#[test]
fn join_sync_heartbeat_single_member() {
    let clock = ManualClock::new(1_000);
    let mut c = coordinator(0);
    let (id, generation) = single_stable_member(&mut c, &clock);
    assert_eq!(generation, 1);
    assert_eq!(
        c.heartbeat("g", &id, None, generation, clock.now_ms()),
        Ok(())
    );
    assert_eq!(
        c.heartbeat("g", &id, None, generation + 1, clock.now_ms()),
        Err(GroupError::IllegalGeneration)
    );
    assert_eq!(
        c.heartbeat("g", "nobody", None, generation, clock.now_ms()),
        Err(GroupError::UnknownMemberId)
    );
    assert_eq!(c.describe_group("g").state, GroupState::Stable);
}

#[test]
fn second_member_triggers_rebalance_and_both_get_assignments() {
    let clock = ManualClock::new(1_000);
    let mut c = coordinator(0);
    let (a, gen1) = single_stable_member(&mut c, &clock);
    let b = get_member_id(&mut c, &clock);
    let (reply, out) = c.join(join_req(&b, None, &["range"]), clock.now_ms());
    assert!(matches!(reply, Reply::Parked { .. }));
    assert!(out.is_empty(), "a has not rejoined yet");
    // a learns of the rebalance through its heartbeat.
    assert_eq!(
        c.heartbeat("g", &a, None, gen1, clock.now_ms()),
        Err(GroupError::RebalanceInProgress)
    );
    let (reply, out) = c.join(join_req(&a, None, &["range"]), clock.now_ms());
    assert!(matches!(reply, Reply::Parked { .. }));
    let joined = join_outcomes(&out);
    assert_eq!(joined.len(), 2);
    let gen2 = joined[0].1.generation_id;
    assert_eq!(gen2, gen1 + 1);
    let leader = joined[0].1.leader_id.clone();
    assert_eq!(leader, a, "the old leader stays leader");
    for (m, o) in &joined {
        assert_eq!(o.protocol_name.as_deref(), Some("range"));
        assert_eq!(o.members.len(), if *m == leader { 2 } else { 0 });
    }
    // Follower syncs first and waits for the leader.
    let (reply, out) = c.sync(sync_req(&b, gen2, vec![]), clock.now_ms());
    assert!(matches!(reply, Reply::Parked { .. }) && out.is_empty());
    let assignments = vec![
        (a.clone(), Bytes::from_static(b"A")),
        (b.clone(), Bytes::from_static(b"B")),
    ];
    let (_, out) = c.sync(sync_req(&a, gen2, assignments), clock.now_ms());
    let mut synced: Vec<(String, Bytes)> = out
        .into_iter()
        .filter_map(|c| match c {
            Completion::Sync {
                member_id,
                result: Ok(s),
                ..
            } => Some((member_id, s.assignment)),
            _ => None,
        })
        .collect();
    synced.sort();
    let mut want = vec![
        (a.clone(), Bytes::from_static(b"A")),
        (b.clone(), Bytes::from_static(b"B")),
    ];
    want.sort();
    assert_eq!(synced, want);
    assert_eq!(c.describe_group("g").state, GroupState::Stable);
}

#[test]
fn session_timeout_removes_member_and_rebalances() {
    let clock = ManualClock::new(1_000);
    let mut c = coordinator(0);
    let (a, gen1) = single_stable_member(&mut c, &clock);
    let b = get_member_id(&mut c, &clock);
    c.join(join_req(&b, None, &["range"]), clock.now_ms());
    let (_, out) = c.join(join_req(&a, None, &["range"]), clock.now_ms());
    let gen2 = join_outcomes(&out)[0].1.generation_id;
    c.sync(sync_req(&b, gen2, vec![]), clock.now_ms());
    c.sync(sync_req(&a, gen2, vec![]), clock.now_ms());
    assert!(gen2 > gen1);
    // b keeps heartbeating; a goes silent.
    for _ in 0..3 {
        clock.advance_ms(4_000);
        assert_eq!(c.heartbeat("g", &b, None, gen2, clock.now_ms()), Ok(()));
        c.tick(clock.now_ms());
    }
    assert_eq!(
        c.heartbeat("g", &b, None, gen2, clock.now_ms()),
        Err(GroupError::RebalanceInProgress)
    );
    assert_eq!(
        c.heartbeat("g", &a, None, gen2, clock.now_ms()),
        Err(GroupError::UnknownMemberId)
    );
    let (_, out) = c.join(join_req(&b, None, &["range"]), clock.now_ms());
    let joined = join_outcomes(&out);
    assert_eq!(joined.len(), 1);
    assert_eq!(joined[0].1.leader_id, b);
    assert_eq!(joined[0].1.generation_id, gen2 + 1);
}

#[test]
fn rebalance_timeout_drops_members_that_do_not_rejoin() {
    let clock = ManualClock::new(1_000);
    let mut c = coordinator(0);
    let (a, _) = single_stable_member(&mut c, &clock);
    let b = get_member_id(&mut c, &clock);
    let (reply, _) = c.join(join_req(&b, None, &["range"]), clock.now_ms());
    assert!(matches!(reply, Reply::Parked { .. }));
    // a keeps heartbeating (so its session holds) but never rejoins.
    clock.advance_ms(i64::from(REBALANCE_MS) / 2);
    let _ = c.heartbeat("g", &a, None, 1, clock.now_ms());
    assert!(c.tick(clock.now_ms()).is_empty());
    clock.advance_ms(i64::from(REBALANCE_MS) / 2 + 1);
    let out = c.tick(clock.now_ms());
    let joined = join_outcomes(&out);
    assert_eq!(joined.len(), 1);
    assert_eq!(joined[0].0, b);
    assert_eq!(joined[0].1.leader_id, b);
}

#[test]
fn initial_delay_waits_for_more_members() {
    let clock = ManualClock::new(1_000);
    let mut c = coordinator(3_000);
    let a = get_member_id(&mut c, &clock);
    let (_, out) = c.join(join_req(&a, None, &["range"]), clock.now_ms());
    assert!(out.is_empty(), "held by the initial delay");
    clock.advance_ms(1_000);
    let b = get_member_id(&mut c, &clock);
    let (_, out) = c.join(join_req(&b, None, &["range"]), clock.now_ms());
    assert!(out.is_empty());
    clock.advance_ms(2_500);
    assert!(
        c.tick(clock.now_ms()).is_empty(),
        "delay extended by b's join"
    );
    clock.advance_ms(600);
    let joined = join_outcomes(&c.tick(clock.now_ms()));
    assert_eq!(joined.len(), 2);
    assert_eq!(joined[0].1.generation_id, 1);
}

#[test]
fn protocol_selection_and_inconsistent_protocols() {
    let clock = ManualClock::new(1_000);
    let mut c = coordinator(0);
    let a = get_member_id(&mut c, &clock);
    c.join(
        join_req(&a, None, &["cooperative-sticky", "range"]),
        clock.now_ms(),
    );
    let b = get_member_id(&mut c, &clock);
    // b only speaks range: the group must settle on range.
    let (_, out) = c.join(join_req(&b, None, &["range"]), clock.now_ms());
    assert!(out.is_empty());
    let (_, out) = c.join(
        join_req(&a, None, &["cooperative-sticky", "range"]),
        clock.now_ms(),
    );
    let joined = join_outcomes(&out);
    assert_eq!(joined[0].1.protocol_name.as_deref(), Some("range"));
    let leader = joined.iter().find(|(m, o)| *m == o.leader_id).unwrap();
    assert!(
        leader
            .1
            .members
            .iter()
            .all(|m| m.metadata == Bytes::from_static(b"meta-range"))
    );
    // A third member with nothing in common is refused.
    let d = get_member_id(&mut c, &clock);
    let (reply, _) = c.join(join_req(&d, None, &["roundrobin"]), clock.now_ms());
    assert!(matches!(
        reply,
        Reply::Now(Err(GroupError::InconsistentGroupProtocol))
    ));
}

#[test]
fn static_member_rejoin_keeps_assignment_and_fences_old_id() {
    let clock = ManualClock::new(1_000);
    let mut c = coordinator(0);
    // Static members skip the member-id round trip.
    let (reply, out) = c.join(join_req("", Some("inst-1"), &["range"]), clock.now_ms());
    let Reply::Parked { member_id: old } = reply else {
        panic!("{reply:?}")
    };
    let generation = join_outcomes(&out)[0].1.generation_id;
    c.sync(
        sync_req(
            &old,
            generation,
            vec![(old.clone(), Bytes::from_static(b"X"))],
        ),
        clock.now_ms(),
    );
    // Restarted instance: same instance id, no member id.
    let (reply, out) = c.join(join_req("", Some("inst-1"), &["range"]), clock.now_ms());
    assert!(out.is_empty());
    let Reply::Now(Ok(o)) = reply else {
        panic!("{reply:?}")
    };
    assert_eq!(
        o.generation_id, generation,
        "no rebalance for a static rejoin"
    );
    assert_ne!(o.member_id, old);
    // The old id is fenced.
    assert_eq!(
        c.heartbeat("g", &old, Some("inst-1"), generation, clock.now_ms()),
        Err(GroupError::FencedInstanceId)
    );
    assert_eq!(
        c.heartbeat(
            "g",
            &o.member_id,
            Some("inst-1"),
            generation,
            clock.now_ms()
        ),
        Ok(())
    );
    let (reply, _) = c.sync(sync_req(&o.member_id, generation, vec![]), clock.now_ms());
    assert!(matches!(reply, Reply::Now(Ok(s)) if s.assignment == Bytes::from_static(b"X")));
}

#[test]
fn leave_group_rebalances_remaining_members() {
    let clock = ManualClock::new(1_000);
    let mut c = coordinator(0);
    let (a, _) = single_stable_member(&mut c, &clock);
    let (results, _) = c.leave(
        "g",
        &[LeavingMember {
            member_id: a.clone(),
            group_instance_id: None,
        }],
        clock.now_ms(),
    );
    assert_eq!(results, vec![Ok(())]);
    let d = c.describe_group("g");
    assert_eq!(d.state, GroupState::Empty);
    assert!(d.members.is_empty());
    let (results, _) = c.leave(
        "g",
        &[LeavingMember {
            member_id: a,
            group_instance_id: None,
        }],
        clock.now_ms(),
    );
    assert_eq!(results, vec![Err(GroupError::UnknownMemberId)]);
    assert_eq!(c.delete_group("g"), Ok(()));
    assert_eq!(c.delete_group("g"), Err(GroupError::GroupIdNotFound));
}

#[test]
fn offset_commit_rules() {
    let clock = ManualClock::new(1_000);
    let mut c = coordinator(0);
    let no_metadata = || std::iter::empty::<usize>();
    // A consumer outside the group protocol may commit to an empty group (creating it).
    assert_eq!(
        c.check_commit("g", -1, "", None, no_metadata(), clock.now_ms()),
        Ok(true)
    );
    assert_eq!(
        c.check_commit("g", -1, "", None, [5000], clock.now_ms()),
        Err(GroupError::OffsetMetadataTooLarge)
    );
    let (a, generation) = single_stable_member(&mut c, &clock);
    // Once the group is live, generation and membership are checked.
    assert_eq!(
        c.check_commit("g", -1, "", None, no_metadata(), clock.now_ms()),
        Err(GroupError::UnknownMemberId)
    );
    assert_eq!(
        c.check_commit("g", generation + 7, &a, None, no_metadata(), clock.now_ms()),
        Err(GroupError::IllegalGeneration)
    );
    assert_eq!(
        c.check_commit("g", generation, &a, None, no_metadata(), clock.now_ms()),
        Ok(false)
    );
    assert!(!c.is_idle("g"));
    // Deleting offsets of a subscribed topic of a live group is refused.
    let r = c
        .check_delete_offsets("g", &[("t".to_string(), 0)], &["t".to_string()])
        .unwrap();
    assert_eq!(r, vec![Err(GroupError::GroupSubscribedToTopic)]);
    assert_eq!(c.delete_group("g"), Err(GroupError::NonEmptyGroup));
    // A commit to an unknown group inside the protocol is refused.
    assert_eq!(
        c.check_commit("other", 3, "m", None, no_metadata(), clock.now_ms()),
        Err(GroupError::IllegalGeneration)
    );
}

#[test]
fn invalid_session_timeout() {
    let clock = ManualClock::new(1_000);
    let mut c = coordinator(0);
    let mut r = join_req("", None, &["range"]);
    r.session_timeout_ms = 10;
    assert!(matches!(
        c.join(r, clock.now_ms()).0,
        Reply::Now(Err(GroupError::InvalidSessionTimeout))
    ));
}

#[test]
fn leader_that_never_syncs_is_expired_and_followers_rejoin() {
    let clock = ManualClock::new(1_000);
    let mut c = coordinator(0);
    let (a, _) = single_stable_member(&mut c, &clock);
    let b = get_member_id(&mut c, &clock);
    c.join(join_req(&b, None, &["range"]), clock.now_ms());
    let (_, out) = c.join(join_req(&a, None, &["range"]), clock.now_ms());
    let gen2 = join_outcomes(&out)[0].1.generation_id;
    // The follower waits for the leader's assignment, which never comes.
    let (reply, _) = c.sync(sync_req(&b, gen2, vec![]), clock.now_ms());
    assert!(matches!(reply, Reply::Parked { .. }));
    clock.advance_ms(i64::from(SESSION_MS) + 1);
    let out = c.tick(clock.now_ms());
    assert!(out.iter().any(|o| matches!(o,
        Completion::Sync { member_id, result: Err(GroupError::RebalanceInProgress), .. } if *member_id == b)));
    assert_eq!(
        c.heartbeat("g", &a, None, gen2, clock.now_ms()),
        Err(GroupError::UnknownMemberId)
    );
    let (_, out) = c.join(join_req(&b, None, &["range"]), clock.now_ms());
    assert_eq!(join_outcomes(&out)[0].1.leader_id, b);
}
