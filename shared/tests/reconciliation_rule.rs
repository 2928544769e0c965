//! What a check against the LiveKit server decides, over random meetings and answers: an
//! estimate is never later than the check, never before the session began, never about a session
//! LiveKit still lists, never opens a session already known, and a room gone ends the meeting no
//! earlier than any cycle it closed.

use std::collections::BTreeSet;

use proptest::prelude::*;
use shared::domain::attendance::ParticipantInfo;
use shared::domain::reconciliation::{
    CLOCK_MARGIN_MS, Known, ListedParticipant, OpenCycle, ParticipantState, RoomAnswer, reconcile,
};

const CHECK: i64 = 10_000_000;

fn info(sid: &str) -> ParticipantInfo {
    ParticipantInfo {
        sid: sid.into(),
        identity: format!("id-{sid}"),
        name: String::new(),
        metadata: String::new(),
        kind: "STANDARD".into(),
    }
}

fn state(n: u8) -> ParticipantState {
    [ParticipantState::Joining, ParticipantState::Joined, ParticipantState::Active, ParticipantState::Disconnected]
        [usize::from(n % 4)]
}

prop_compose! {
    fn scenario()(
        open in proptest::collection::vec((0..12u8, 0..CHECK + 5_000, proptest::option::of(0..CHECK + 60_000)), 0..8),
        listed in proptest::collection::vec((0..12u8, 0..4u8, proptest::option::of(0..CHECK + 5_000)), 0..8),
        previous in proptest::option::of(0..CHECK),
        previously_listed in proptest::collection::btree_set(0..12u8, 0..6),
        closed in proptest::collection::btree_set(0..12u8, 0..4),
        gone in any::<bool>(),
        latest_left in proptest::option::of(0..CHECK),
    ) -> (Known, RoomAnswer) {
        let sid = |n: u8| format!("PA_{n}");
        let mut seen = BTreeSet::new();
        let open_cycles: Vec<OpenCycle> = open
            .into_iter()
            .filter(|(n, _, _)| seen.insert(*n))
            .map(|(n, joined, heartbeat)| OpenCycle {
                identity: format!("id-{}", sid(n)),
                participant_sid: sid(n),
                joined_at_ms: joined,
                last_heartbeat_ms: heartbeat,
            })
            .collect();
        let known_sessions = open_cycles.iter().map(|c| c.participant_sid.clone()).chain(closed.iter().map(|n| sid(*n))).collect();
        let known = Known {
            previous_check_ms: previous,
            previously_listed: previously_listed.into_iter().map(sid).collect(),
            open_cycles,
            known_sessions,
            reconciled_sessions: closed.into_iter().map(sid).collect(),
            started_at_ms: Some(0),
            latest_left_ms: latest_left,
        };
        let mut seen = BTreeSet::new();
        let answer = if gone {
            RoomAnswer::Gone
        } else {
            RoomAnswer::Listed(
                listed
                    .into_iter()
                    .filter(|(n, _, _)| seen.insert(*n))
                    .map(|(n, s, joined)| ListedParticipant { info: info(&sid(n)), state: state(s), joined_at_ms: joined })
                    .collect(),
            )
        };
        (known, answer)
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3_000))]

    #[test]
    fn estimates_stay_within_what_was_observed((known, answer) in scenario()) {
        let decision = reconcile(&known, CHECK, &answer);
        let still_there: BTreeSet<&str> = match &answer {
            RoomAnswer::Listed(listed) => listed
                .iter()
                .filter(|p| p.state != ParticipantState::Disconnected)
                .map(|p| p.info.sid.as_str())
                .collect(),
            RoomAnswer::Gone => BTreeSet::new(),
        };
        for closing in &decision.closings {
            let cycle = known.open_cycles.iter().find(|c| c.participant_sid == closing.participant_sid).unwrap();
            prop_assert!(!still_there.contains(closing.participant_sid.as_str()), "closed a listed session");
            prop_assert!(closing.at_ms >= cycle.joined_at_ms, "closed before it began");
            prop_assert!(closing.at_ms <= CHECK.max(cycle.joined_at_ms), "closed after the check that missed it");
            if answer != RoomAnswer::Gone {
                prop_assert!(cycle.joined_at_ms < CHECK - CLOCK_MARGIN_MS, "closed a session younger than the margin");
            }
        }
        for (participant, joined_at_ms) in &decision.openings {
            prop_assert!(!known.known_sessions.contains(&participant.sid), "opened a known session");
            prop_assert!(*joined_at_ms < CHECK - CLOCK_MARGIN_MS);
        }
        // Every open cycle LiveKit does not list (and old enough) is closed: none is forgotten.
        let closed: BTreeSet<&str> = decision.closings.iter().map(|c| c.participant_sid.as_str()).collect();
        for cycle in &known.open_cycles {
            let missing = !still_there.contains(cycle.participant_sid.as_str());
            let old_enough = answer == RoomAnswer::Gone || cycle.joined_at_ms < CHECK - CLOCK_MARGIN_MS;
            prop_assert_eq!(closed.contains(cycle.participant_sid.as_str()), missing && old_enough);
        }
        match decision.meeting_ended_at_ms {
            Some(end) => {
                prop_assert_eq!(&answer, &RoomAnswer::Gone);
                prop_assert!(decision.closings.iter().all(|c| c.at_ms <= end), "a cycle closed after the end");
                prop_assert!(known.latest_left_ms.is_none_or(|left| left <= end), "a left after the end");
                prop_assert!(decision.listed.is_empty());
            }
            None => prop_assert_ne!(&answer, &RoomAnswer::Gone),
        }
    }
}
