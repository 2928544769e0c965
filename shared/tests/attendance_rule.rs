//! The attendance rule: one hand-written case per rule, then property tests showing that
//! duplicates and arrival order never change the result.

use proptest::prelude::*;
use std::collections::BTreeMap;

use shared::domain::attendance::{
    Attendance, ClosedBy, Cycle, Fact, FactKind, ParticipantInfo, course_total, participant_attendance,
    room_attendance, union_ms,
};

const ROOM: &str = "algebra";

fn info(identity: &str, sid: &str) -> ParticipantInfo {
    ParticipantInfo {
        sid: sid.into(),
        identity: identity.into(),
        name: format!("{identity} name"),
        metadata: String::new(),
        kind: "STANDARD".into(),
    }
}

fn joined(id: &str, identity: &str, sid: &str, room_sid: &str, at: i64) -> Fact {
    Fact {
        event_id: id.into(),
        created_at_ms: at,
        room_name: ROOM.into(),
        room_sid: room_sid.into(),
        kind: FactKind::Joined { participant: info(identity, sid), joined_at_ms: at },
    }
}

fn left(id: &str, identity: &str, sid: &str, room_sid: &str, joined_at: Option<i64>, at: i64) -> Fact {
    Fact {
        event_id: id.into(),
        created_at_ms: at,
        room_name: ROOM.into(),
        room_sid: room_sid.into(),
        kind: FactKind::Left { participant: info(identity, sid), joined_at_ms: joined_at },
    }
}

fn aborted(id: &str, identity: &str, sid: &str, at: i64) -> Fact {
    Fact {
        event_id: id.into(),
        created_at_ms: at,
        room_name: ROOM.into(),
        room_sid: "RM_1".into(),
        kind: FactKind::Aborted { participant: info(identity, sid) },
    }
}

fn finished(id: &str, room_sid: &str, at: i64) -> Fact {
    Fact {
        event_id: id.into(),
        created_at_ms: at,
        room_name: ROOM.into(),
        room_sid: room_sid.into(),
        kind: FactKind::RoomFinished,
    }
}

fn closure(identity: &str, sid: &str, at: i64, closed_by: ClosedBy) -> Fact {
    Fact {
        event_id: format!("closure:{sid}:{}", closed_by.as_str()),
        created_at_ms: at,
        room_name: ROOM.into(),
        room_sid: String::new(),
        kind: FactKind::Closure { identity: identity.into(), participant_sid: sid.into(), closed_by },
    }
}

fn listed(identity: &str, sid: &str, room_sid: &str, joined_at: i64, at: i64) -> Fact {
    Fact {
        event_id: format!("listed:{sid}"),
        created_at_ms: at,
        room_name: ROOM.into(),
        room_sid: room_sid.into(),
        kind: FactKind::Listed { participant: info(identity, sid), joined_at_ms: joined_at },
    }
}

fn cycle(sid: &str, joined: i64, left: Option<i64>, closed_by: Option<ClosedBy>) -> Cycle {
    Cycle { participant_sid: sid.into(), room_sid: "RM_1".into(), joined_at_ms: joined, left_at_ms: left, closed_by }
}

fn ada(facts: &[Fact]) -> Attendance {
    participant_attendance("ada", facts).expect("ada has facts")
}

#[test]
fn joined_then_left_is_one_closed_cycle() {
    let a = ada(&[joined("E1", "ada", "PA_1", "RM_1", 1_000), left("E2", "ada", "PA_1", "RM_1", Some(1_000), 61_000)]);
    assert_eq!(a.cycles, [cycle("PA_1", 1_000, Some(61_000), Some(ClosedBy::ParticipantLeft))]);
    assert_eq!((a.attended_ms, a.join_count, a.leave_count, a.present), (60_000, 1, 1, false));
    assert_eq!((a.first_joined_at_ms, a.last_left_at_ms), (Some(1_000), Some(61_000)));
}

#[test]
fn joined_alone_is_present_with_no_attended_time_yet() {
    let a = ada(&[joined("E1", "ada", "PA_1", "RM_1", 1_000)]);
    assert_eq!(a.cycles, [cycle("PA_1", 1_000, None, None)]);
    assert_eq!((a.attended_ms, a.present, a.last_left_at_ms), (0, true, None));
}

#[test]
fn a_left_whose_joined_never_arrived_still_gives_the_whole_cycle() {
    let a = ada(&[left("E2", "ada", "PA_1", "RM_1", Some(1_000), 61_000)]);
    assert_eq!(a.cycles, [cycle("PA_1", 1_000, Some(61_000), Some(ClosedBy::ParticipantLeft))]);
    assert_eq!((a.attended_ms, a.join_count, a.leave_count), (60_000, 1, 1));
}

#[test]
fn a_connection_aborted_gives_no_time() {
    let a = ada(&[aborted("E1", "ada", "PA_1", 5_000)]);
    assert_eq!((a.cycles.len(), a.attended_ms, a.join_count, a.present), (0, 0, 0, false));
}

#[test]
fn room_finished_closes_open_cycles_of_that_room_instance_only() {
    let a = ada(&[
        joined("E1", "ada", "PA_1", "RM_1", 1_000),
        joined("E2", "ada", "PA_2", "RM_2", 2_000),
        finished("E3", "RM_1", 31_000),
    ]);
    assert_eq!(a.cycles[0], cycle("PA_1", 1_000, Some(31_000), Some(ClosedBy::RoomFinished)));
    assert_eq!(a.cycles[1].left_at_ms, None);
    assert_eq!((a.attended_ms, a.present, a.leave_count), (30_000, true, 0));
}

#[test]
fn a_later_participant_left_replaces_the_room_finished_estimate() {
    let early = ada(&[joined("E1", "ada", "PA_1", "RM_1", 1_000), finished("E3", "RM_1", 31_000)]);
    assert_eq!(early.attended_ms, 30_000);
    let corrected = ada(&[
        joined("E1", "ada", "PA_1", "RM_1", 1_000),
        finished("E3", "RM_1", 31_000),
        left("E2", "ada", "PA_1", "RM_1", Some(1_000), 29_000),
    ]);
    assert_eq!(corrected.cycles, [cycle("PA_1", 1_000, Some(29_000), Some(ClosedBy::ParticipantLeft))]);
    assert_eq!(corrected.attended_ms, 28_000);
}

#[test]
fn reconnect_with_the_same_identity_keeps_both_sessions_apart() {
    // The old session's left (DUPLICATE_IDENTITY) arrives after the new session's joined.
    let a = ada(&[
        joined("E1", "ada", "PA_old", "RM_1", 1_000),
        joined("E2", "ada", "PA_new", "RM_1", 50_000),
        left("E3", "ada", "PA_old", "RM_1", Some(1_000), 51_000),
    ]);
    assert_eq!(
        a.cycles,
        [cycle("PA_old", 1_000, Some(51_000), Some(ClosedBy::ParticipantLeft)), cycle("PA_new", 50_000, None, None),]
    );
    assert!(a.present, "the new session is still open");
    assert_eq!((a.join_count, a.leave_count, a.attended_ms), (2, 1, 50_000));
}

#[test]
fn a_heartbeat_timeout_closes_at_the_last_heartbeat_and_a_later_left_replaces_it() {
    let timed_out =
        ada(&[joined("E1", "ada", "PA_1", "RM_1", 1_000), closure("ada", "PA_1", 40_000, ClosedBy::HeartbeatTimeout)]);
    assert_eq!(timed_out.cycles, [cycle("PA_1", 1_000, Some(40_000), Some(ClosedBy::HeartbeatTimeout))]);
    assert!(!timed_out.present);
    let corrected = ada(&[
        joined("E1", "ada", "PA_1", "RM_1", 1_000),
        closure("ada", "PA_1", 40_000, ClosedBy::HeartbeatTimeout),
        left("E2", "ada", "PA_1", "RM_1", Some(1_000), 45_000),
    ]);
    assert_eq!(corrected.cycles, [cycle("PA_1", 1_000, Some(45_000), Some(ClosedBy::ParticipantLeft))]);
}

#[test]
fn the_earliest_estimate_wins_and_closures_of_unknown_sessions_are_ignored() {
    let a = ada(&[
        joined("E1", "ada", "PA_1", "RM_1", 1_000),
        finished("F", "RM_1", 90_000),
        closure("ada", "PA_1", 60_000, ClosedBy::HeartbeatTimeout),
        closure("ada", "PA_1", 80_000, ClosedBy::MaxDuration),
        closure("ada", "PA_ghost", 5_000, ClosedBy::HeartbeatTimeout),
        closure("bob", "PA_1", 2_000, ClosedBy::HeartbeatTimeout),
    ]);
    assert_eq!(a.cycles, [cycle("PA_1", 1_000, Some(60_000), Some(ClosedBy::HeartbeatTimeout))]);
    assert!(participant_attendance("bob", &[closure("bob", "PA_9", 1, ClosedBy::MaxDuration)]).is_none());
}

#[test]
fn a_session_livekit_listed_opens_its_cycle_and_real_events_replace_the_estimate() {
    // The participant_joined was lost; the reconciler saw the session listed at 20 s.
    let estimated = ada(&[listed("ada", "PA_1", "RM_1", 1_000, 20_000)]);
    assert_eq!(estimated.cycles, [cycle("PA_1", 1_000, None, None)]);
    assert_eq!((estimated.join_count, estimated.present), (1, true));
    // The real join, arriving later, says the same: nothing changes.
    let confirmed = ada(&[listed("ada", "PA_1", "RM_1", 1_000, 20_000), joined("E1", "ada", "PA_1", "RM_1", 1_000)]);
    assert_eq!(confirmed, estimated);
    // A real join that disagrees wins.
    let corrected = ada(&[listed("ada", "PA_1", "RM_1", 1_000, 20_000), joined("E1", "ada", "PA_1", "RM_1", 1_500)]);
    assert_eq!(corrected.cycles, [cycle("PA_1", 1_500, None, None)]);
    // A session aborted never counts, listed or not.
    assert_eq!(ada(&[listed("ada", "PA_1", "RM_1", 1_000, 20_000), aborted("E2", "ada", "PA_1", 2_000)]).join_count, 0);
}

#[test]
fn a_session_livekit_stopped_listing_closes_where_it_was_last_seen_until_its_left_arrives() {
    let missed =
        ada(&[joined("E1", "ada", "PA_1", "RM_1", 1_000), closure("ada", "PA_1", 60_000, ClosedBy::Reconciled)]);
    assert_eq!(missed.cycles, [cycle("PA_1", 1_000, Some(60_000), Some(ClosedBy::Reconciled))]);
    assert!(!missed.present);
    let corrected = ada(&[
        joined("E1", "ada", "PA_1", "RM_1", 1_000),
        closure("ada", "PA_1", 60_000, ClosedBy::Reconciled),
        left("E2", "ada", "PA_1", "RM_1", Some(1_000), 75_000),
    ]);
    assert_eq!(corrected.cycles, [cycle("PA_1", 1_000, Some(75_000), Some(ClosedBy::ParticipantLeft))]);
    // Both joined and left lost: listed, then missed.
    let both_lost =
        ada(&[listed("ada", "PA_1", "RM_1", 1_000, 20_000), closure("ada", "PA_1", 80_000, ClosedBy::Reconciled)]);
    assert_eq!(both_lost.cycles, [cycle("PA_1", 1_000, Some(80_000), Some(ClosedBy::Reconciled))]);
    assert_eq!(both_lost.attended_ms, 79_000);
}

#[test]
fn two_tabs_at_once_count_once() {
    let a = ada(&[
        joined("E1", "ada", "PA_tab1", "RM_1", 0),
        joined("E2", "ada", "PA_tab2", "RM_1", 30_000),
        left("E3", "ada", "PA_tab1", "RM_1", Some(0), 60_000),
        left("E4", "ada", "PA_tab2", "RM_1", Some(30_000), 90_000),
    ]);
    assert_eq!(a.attended_ms, 90_000, "not 60 + 60");
    assert_eq!((a.join_count, a.leave_count), (2, 2));
}

#[test]
fn name_metadata_and_kind_come_from_the_latest_event_and_bots_are_flagged() {
    let mut first = joined("E1", "ada", "PA_1", "RM_1", 1_000);
    let mut later = left("E2", "ada", "PA_1", "RM_1", Some(1_000), 9_000);
    if let FactKind::Joined { participant, .. } = &mut first.kind {
        participant.name = "Old Name".into();
    }
    if let FactKind::Left { participant, .. } = &mut later.kind {
        participant.name = "New Name".into();
        participant.metadata = "{\"user_id\":42}".into();
        participant.kind = "AGENT".into();
    }
    let a = ada(&[later, first]);
    assert_eq!((a.name.as_str(), a.metadata.as_str(), a.kind.as_str()), ("New Name", "{\"user_id\":42}", "AGENT"));
    assert!(a.is_bot());
}

#[test]
fn union_merges_overlaps_and_ignores_empty_intervals() {
    assert_eq!(union_ms([(0, 10), (5, 15), (20, 30), (30, 30), (25, 26)]), 25);
    assert_eq!(union_ms([]), 0);
}

#[test]
fn facts_come_from_livekit_bodies() {
    let body = br#"{"event":"participant_left","id":"EV_1","createdAt":"1717405302",
        "room":{"sid":"RM_a","name":"algebra"},
        "participant":{"sid":"PA_a","identity":"ada","joinedAt":"1717405000","joinedAtMs":"1717405000123","kind":"AGENT"}}"#;
    let event = shared::domain::event::WebhookEvent::parse(body).unwrap();
    let fact = Fact::from_event(&event).unwrap().unwrap();
    assert_eq!(fact.created_at_ms, 1_717_405_302_000);
    let FactKind::Left { participant, joined_at_ms } = fact.kind else { panic!("a left fact") };
    assert_eq!((participant.kind.as_str(), joined_at_ms), ("AGENT", Some(1_717_405_000_123)));

    let track = shared::domain::event::WebhookEvent::parse(br#"{"event":"track_published","id":"EV_2"}"#).unwrap();
    assert_eq!(Fact::from_event(&track), Ok(None));
    let no_participant = shared::domain::event::WebhookEvent::parse(
        br#"{"event":"participant_joined","id":"EV_3","room":{"sid":"RM_a","name":"r"}}"#,
    )
    .unwrap();
    assert!(Fact::from_event(&no_participant).is_err());
}

// ---- property tests ----

/// A random meeting: participants with sessions, some left events lost, some joined events lost,
/// some sessions aborted, some listed by the LiveKit server (with or without their events),
/// sometimes a room_finished.
fn scenario() -> impl Strategy<Value = Vec<Fact>> {
    let session = (0..4usize, 0..2usize, 0..100_000i64, 1..100_000i64, 0..8u8);
    (proptest::collection::vec(session, 1..20), proptest::option::of(0..250_000i64)).prop_map(|(sessions, finish)| {
        let mut facts = Vec::new();
        for (n, (who, instance, start, length, shape)) in sessions.into_iter().enumerate() {
            let (identity, sid, room_sid) = (format!("p{who}"), format!("PA_{n}"), format!("RM_{instance}"));
            match shape {
                0 => facts.push(aborted(&format!("A{n}"), &identity, &sid, start)),
                1 => facts.push(joined(&format!("J{n}"), &identity, &sid, &room_sid, start)),
                2 => facts.push(left(&format!("L{n}"), &identity, &sid, &room_sid, Some(start), start + length)),
                6 => facts.push(listed(&identity, &sid, &room_sid, start, start + length / 2)),
                7 => {
                    facts.push(listed(&identity, &sid, &room_sid, start, start + length / 2));
                    facts.push(joined(&format!("J{n}"), &identity, &sid, &room_sid, start + length / 4));
                    facts.push(left(&format!("L{n}"), &identity, &sid, &room_sid, Some(start), start + length));
                }
                _ => {
                    facts.push(joined(&format!("J{n}"), &identity, &sid, &room_sid, start));
                    facts.push(left(&format!("L{n}"), &identity, &sid, &room_sid, Some(start), start + length));
                }
            }
        }
        if let Some(at) = finish {
            facts.push(finished("F0", "RM_0", at));
        }
        // The sweeper's estimates for every third session.
        let sessions: Vec<(String, String, i64)> = facts
            .iter()
            .filter_map(|f| Some((f.participant()?.identity.clone(), f.participant()?.sid.clone(), f.created_at_ms)))
            .collect();
        for (n, (identity, sid, at)) in sessions.into_iter().enumerate().filter(|(n, _)| n % 3 == 0) {
            let by = [ClosedBy::HeartbeatTimeout, ClosedBy::MaxDuration, ClosedBy::Reconciled][(n / 3) % 3];
            facts.push(closure(&identity, &sid, at + 30_000, by));
        }
        facts
    })
}

/// The scenario's facts, each possibly duplicated, in a random order.
fn delivered() -> impl Strategy<Value = (Vec<Fact>, Vec<Fact>)> {
    scenario().prop_flat_map(|facts| {
        let n = facts.len();
        (Just(facts), proptest::collection::vec(0..n, 0..n * 2)).prop_flat_map(|(facts, duplicates)| {
            let mut stream = facts.clone();
            stream.extend(duplicates.into_iter().map(|i| facts[i].clone()));
            (Just(facts), Just(stream).prop_shuffle())
        })
    })
}

/// The facts of each meeting, as the store loads them: events by their room sid, the sweeper's
/// estimates by the meeting of their session.
fn by_meeting(facts: &[Fact]) -> BTreeMap<String, Vec<Fact>> {
    let meeting_of_session: BTreeMap<&str, &str> =
        facts.iter().filter_map(|f| Some((f.participant()?.sid.as_str(), f.room_sid.as_str()))).collect();
    let mut meetings: BTreeMap<String, Vec<Fact>> = BTreeMap::new();
    for fact in facts {
        let meeting = match &fact.kind {
            FactKind::Closure { participant_sid, .. } => match meeting_of_session.get(participant_sid.as_str()) {
                Some(meeting) => *meeting,
                None => continue,
            },
            _ => fact.room_sid.as_str(),
        };
        meetings.entry(meeting.to_owned()).or_default().push(fact.clone());
    }
    meetings
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn meetings_of_a_room_name_never_influence_each_other((facts, stream) in delivered()) {
        let together = room_attendance(&stream);
        for (meeting, own) in by_meeting(&facts) {
            for (identity, alone) in room_attendance(&own) {
                let cycles: Vec<&Cycle> =
                    together[&identity].cycles.iter().filter(|c| c.room_sid == meeting).collect();
                prop_assert_eq!(cycles, alone.cycles.iter().collect::<Vec<_>>(), "{} in {}", identity, meeting);
            }
        }
    }

    #[test]
    fn a_meeting_is_the_same_whatever_meetings_of_its_room_name_came_before(
        (facts, _) in delivered(), (earlier, _) in delivered(),
    ) {
        // Earlier meetings of the same room name: other room sids, a day before.
        let earlier: Vec<Fact> = earlier.into_iter().map(|mut f| {
            f.room_sid = format!("{}_before", f.room_sid);
            f.created_at_ms -= 86_400_000;
            if let FactKind::Closure { participant_sid, .. } | FactKind::Joined { participant: ParticipantInfo { sid: participant_sid, .. }, .. }
                | FactKind::Left { participant: ParticipantInfo { sid: participant_sid, .. }, .. }
                | FactKind::Listed { participant: ParticipantInfo { sid: participant_sid, .. }, .. }
                | FactKind::Aborted { participant: ParticipantInfo { sid: participant_sid, .. } } = &mut f.kind {
                participant_sid.push_str("_before");
            }
            if let FactKind::Joined { joined_at_ms, .. } | FactKind::Listed { joined_at_ms, .. } = &mut f.kind {
                *joined_at_ms -= 86_400_000;
            }
            if let FactKind::Left { joined_at_ms: Some(joined_at_ms), .. } = &mut f.kind { *joined_at_ms -= 86_400_000; }
            f.event_id.push_str("_before");
            f
        }).collect();
        let alone = by_meeting(&facts);
        let mut all = facts.clone();
        all.extend(earlier);
        let with_history = by_meeting(&all);
        for (meeting, own) in alone {
            prop_assert_eq!(room_attendance(&with_history[&meeting]), room_attendance(&own), "{}", meeting);
        }
    }

    #[test]
    fn the_course_total_of_the_meetings_is_the_rule_over_all_of_them((facts, _) in delivered()) {
        let mut per_identity: BTreeMap<String, Vec<Attendance>> = BTreeMap::new();
        for own in by_meeting(&facts).values() {
            for (identity, attendance) in room_attendance(own) {
                per_identity.entry(identity).or_default().push(attendance);
            }
        }
        let totals: BTreeMap<String, Attendance> =
            per_identity.into_iter().map(|(identity, meetings)| (identity, course_total(&meetings).unwrap())).collect();
        prop_assert_eq!(totals, room_attendance(&facts));
    }

    #[test]
    fn duplicates_and_order_never_change_attendance((facts, stream) in delivered()) {
        prop_assert_eq!(room_attendance(&stream), room_attendance(&facts));
    }

    #[test]
    fn attended_time_is_bounded_by_the_cycles((facts, _) in delivered()) {
        for attendance in room_attendance(&facts).values() {
            let sum: i64 = attendance.cycles.iter().filter_map(Cycle::duration_ms).sum();
            let span = match (attendance.first_joined_at_ms, attendance.last_left_at_ms) {
                (Some(first), Some(last)) => last - first,
                _ => 0,
            };
            prop_assert!(attendance.attended_ms <= sum, "union {} > sum {}", attendance.attended_ms, sum);
            prop_assert!(attendance.attended_ms <= span.max(0));
            prop_assert!(attendance.cycles.iter().all(|c| c.duration_ms().is_none_or(|d| d >= 0)));
            prop_assert_eq!(attendance.present, attendance.cycles.iter().any(|c| c.left_at_ms.is_none()));
        }
    }

    #[test]
    fn a_late_left_for_every_session_closes_each_one_authoritatively(
        (facts, _) in delivered(), extra_length in 1..50_000i64,
    ) {
        // A late authoritative left for every still-open or room-finished session.
        let before = room_attendance(&facts);
        let mut with_lefts = facts.clone();
        for attendance in before.values() {
            for c in attendance.cycles.iter().filter(|c| c.closed_by != Some(ClosedBy::ParticipantLeft)) {
                with_lefts.push(left(&format!("X{}", c.participant_sid), &attendance.identity, &c.participant_sid,
                    &c.room_sid, Some(c.joined_at_ms), c.joined_at_ms + extra_length));
            }
        }
        let after = room_attendance(&with_lefts);
        for (identity, attendance) in after {
            prop_assert!(!attendance.present, "{identity} still present after every session left");
            prop_assert!(attendance.cycles.iter().all(|c| c.closed_by == Some(ClosedBy::ParticipantLeft)));
        }
    }
}
