//! Reconciliation with the LiveKit server: what a check of a running meeting against LiveKit's
//! own list of its participants means for attendance. A pure function: the store gathers what it
//! knows of the meeting, the sweeper asks LiveKit, this decides.
//!
//! - A session with an open cycle that LiveKit no longer lists left without its
//!   participant_left: closed (`reconciled`) at the last moment it was known present, the later
//!   of the previous check that listed it and its last heartbeat (its start if neither), never
//!   later than the check that missed it.
//! - A session LiveKit lists as active with no cycle lost its participant_joined: a cycle opened
//!   from LiveKit's `joinedAtMs`.
//! - A room LiveKit no longer has (or has as another session): the meeting is over; every open
//!   cycle closes as above and the meeting ends, inferred, at the last time a check saw it (or
//!   later, if an event or a closure says someone was still there).
//!
//! Everything decided is an estimate for the attendance rule: a real event for the same session
//! always takes precedence. A session younger than [`CLOCK_MARGIN_MS`] at the check is left
//! alone (LiveKit's clock and ours differ, and its events may still be on their way).

use std::collections::BTreeSet;

use super::attendance::ParticipantInfo;
use super::identifiers::{self, Field};

/// Sessions that began less than this before a check are neither closed nor opened by it.
pub const CLOCK_MARGIN_MS: i64 = 10_000;

/// A participant's connection state as LiveKit reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParticipantState {
    Joining,
    Joined,
    Active,
    Disconnected,
}

impl ParticipantState {
    /// LiveKit's protojson name (`JOINING`, the zero value, is omitted by LiveKit).
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "" | "JOINING" => Some(ParticipantState::Joining),
            "JOINED" => Some(ParticipantState::Joined),
            "ACTIVE" => Some(ParticipantState::Active),
            "DISCONNECTED" => Some(ParticipantState::Disconnected),
            _ => None,
        }
    }
}

/// A participant as LiveKit's `ListParticipants` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedParticipant {
    pub info: ParticipantInfo,
    pub state: ParticipantState,
    /// LiveKit's `joinedAtMs` (else `joinedAt` in milliseconds), if it gave one.
    pub joined_at_ms: Option<i64>,
}

/// What LiveKit answered about the meeting's room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoomAnswer {
    /// The room is this meeting's session, with these participants.
    Listed(Vec<ListedParticipant>),
    /// LiveKit has no such room, or the name now belongs to another session.
    Gone,
}

/// An open cycle of the meeting, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenCycle {
    pub identity: String,
    pub participant_sid: String,
    pub joined_at_ms: i64,
    pub last_heartbeat_ms: Option<i64>,
}

/// What is known of the meeting before the check.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Known {
    /// The previous check that listed the room: when, and the sessions it listed.
    pub previous_check_ms: Option<i64>,
    pub previously_listed: BTreeSet<String>,
    pub open_cycles: Vec<OpenCycle>,
    /// Every session of the meeting with a cycle, open or closed, or aborted.
    pub known_sessions: BTreeSet<String>,
    /// Sessions whose cycle a previous check closed as `reconciled`.
    pub reconciled_sessions: BTreeSet<String>,
    pub started_at_ms: Option<i64>,
    /// The latest end of a cycle of the meeting.
    pub latest_left_ms: Option<i64>,
}

/// A cycle to close as `reconciled`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Closing {
    pub identity: String,
    pub participant_sid: String,
    pub at_ms: i64,
}

/// What a check decided.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Decision {
    pub closings: Vec<Closing>,
    /// Sessions listed as active with no cycle: opened from LiveKit's join time.
    pub openings: Vec<(ParticipantInfo, i64)>,
    /// Sessions listed again after a check had closed them: their `reconciled` estimate is
    /// withdrawn.
    pub relisted: Vec<String>,
    /// The sessions listed (kept for the next check); empty when the room is gone.
    pub listed: BTreeSet<String>,
    /// The meeting's inferred end, when the room is gone.
    pub meeting_ended_at_ms: Option<i64>,
}

/// Decides what a check at `checked_at_ms` (when the request was sent) means for a meeting.
pub fn reconcile(known: &Known, checked_at_ms: i64, answer: &RoomAnswer) -> Decision {
    let settled_before_ms = checked_at_ms - CLOCK_MARGIN_MS;
    let listed: Vec<&ListedParticipant> = match answer {
        RoomAnswer::Listed(participants) => {
            participants.iter().filter(|p| p.state != ParticipantState::Disconnected).collect()
        }
        RoomAnswer::Gone => Vec::new(),
    };
    // A sid outside the identifier rules can match no stored session, and is not kept.
    let listed_sids: BTreeSet<String> = listed
        .iter()
        .filter(|p| identifiers::check(Field::ParticipantSid, &p.info.sid).is_ok())
        .map(|p| p.info.sid.clone())
        .collect();
    let gone = *answer == RoomAnswer::Gone;

    let closings: Vec<Closing> = known
        .open_cycles
        .iter()
        .filter(|cycle| !listed_sids.contains(&cycle.participant_sid))
        .filter(|cycle| gone || cycle.joined_at_ms < settled_before_ms)
        .map(|cycle| {
            let seen_by_a_check =
                known.previous_check_ms.filter(|_| known.previously_listed.contains(&cycle.participant_sid));
            let last_known_present = [Some(cycle.joined_at_ms), seen_by_a_check, cycle.last_heartbeat_ms]
                .into_iter()
                .flatten()
                .max()
                .unwrap_or(cycle.joined_at_ms);
            Closing {
                identity: cycle.identity.clone(),
                participant_sid: cycle.participant_sid.clone(),
                at_ms: last_known_present.min(checked_at_ms).max(cycle.joined_at_ms),
            }
        })
        .collect();

    let openings = listed
        .iter()
        .filter(|p| p.state == ParticipantState::Active && !known.known_sessions.contains(&p.info.sid))
        .filter(|p| is_storable(&p.info))
        .filter_map(|p| {
            let joined_at_ms = p.joined_at_ms?;
            (joined_at_ms < settled_before_ms).then(|| (p.info.clone(), joined_at_ms))
        })
        .collect();
    let relisted = known.reconciled_sessions.intersection(&listed_sids).cloned().collect();

    let meeting_ended_at_ms = gone.then(|| {
        let last_seen = known.previous_check_ms.or(known.started_at_ms).unwrap_or(checked_at_ms).min(checked_at_ms);
        closings.iter().map(|c| c.at_ms).chain(known.latest_left_ms).chain([last_seen]).max().unwrap_or(last_seen)
    });
    Decision {
        closings,
        openings,
        relisted,
        listed: if gone { BTreeSet::new() } else { listed_sids },
        meeting_ended_at_ms,
    }
}

/// Whether a listed participant may be stored as the edge stores an event's: an identity and a
/// sid within the identifier rules ([`identifiers`]), and no NUL (PostgreSQL's text refuses it)
/// in its name or metadata. One that is not stays unopened rather than failing the whole check.
fn is_storable(info: &ParticipantInfo) -> bool {
    !info.identity.is_empty()
        && !info.sid.is_empty()
        && identifiers::check(Field::Identity, &info.identity).is_ok()
        && identifiers::check(Field::ParticipantSid, &info.sid).is_ok()
        && !info.name.contains('\0')
        && !info.metadata.contains('\0')
        && !info.kind.contains('\0')
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: i64 = 60_000;

    fn info(identity: &str, sid: &str) -> ParticipantInfo {
        ParticipantInfo {
            sid: sid.into(),
            identity: identity.into(),
            name: String::new(),
            metadata: String::new(),
            kind: "STANDARD".into(),
        }
    }

    fn listed(identity: &str, sid: &str, state: ParticipantState, joined_at_ms: i64) -> ListedParticipant {
        ListedParticipant { info: info(identity, sid), state, joined_at_ms: Some(joined_at_ms) }
    }

    fn open(identity: &str, sid: &str, joined_at_ms: i64, last_heartbeat_ms: Option<i64>) -> OpenCycle {
        OpenCycle { identity: identity.into(), participant_sid: sid.into(), joined_at_ms, last_heartbeat_ms }
    }

    fn known(open_cycles: Vec<OpenCycle>) -> Known {
        Known {
            previous_check_ms: Some(10 * MINUTE),
            previously_listed: ["PA_ada".to_owned(), "PA_bob".to_owned()].into(),
            known_sessions: open_cycles.iter().map(|c| c.participant_sid.clone()).collect(),
            open_cycles,
            started_at_ms: Some(0),
            ..Known::default()
        }
    }

    #[test]
    fn a_session_no_longer_listed_closes_at_the_last_moment_it_was_known_present() {
        let known = known(vec![
            open("ada", "PA_ada", MINUTE, None),
            open("bob", "PA_bob", MINUTE, Some(10 * MINUTE + 30_000)),
            open("cy", "PA_cy", 2 * MINUTE, None),
            open("dee", "PA_dee", 2 * MINUTE, Some(12 * MINUTE)),
        ]);
        let decision = reconcile(&known, 11 * MINUTE, &RoomAnswer::Listed(vec![]));
        let at: Vec<(&str, i64)> = decision.closings.iter().map(|c| (c.participant_sid.as_str(), c.at_ms)).collect();
        assert_eq!(
            at,
            [
                ("PA_ada", 10 * MINUTE),          // the previous check listed it
                ("PA_bob", 10 * MINUTE + 30_000), // its heartbeat came later
                ("PA_cy", 2 * MINUTE),            // never listed, no heartbeat: its start
                ("PA_dee", 11 * MINUTE),          // never later than the check that missed it
            ]
        );
        assert_eq!(decision.meeting_ended_at_ms, None);
    }

    #[test]
    fn listed_sessions_stay_open_and_young_ones_are_left_for_the_next_check() {
        let known = known(vec![open("ada", "PA_ada", MINUTE, None), open("eve", "PA_eve", 11 * MINUTE - 5_000, None)]);
        let answer = RoomAnswer::Listed(vec![listed("ada", "PA_ada", ParticipantState::Active, MINUTE)]);
        let decision = reconcile(&known, 11 * MINUTE, &answer);
        assert!(decision.closings.is_empty(), "{decision:?}");
        assert_eq!(decision.listed, BTreeSet::from(["PA_ada".to_owned()]));
        // A session LiveKit reports disconnected is not there any more.
        let leaving = RoomAnswer::Listed(vec![listed("ada", "PA_ada", ParticipantState::Disconnected, MINUTE)]);
        assert_eq!(reconcile(&known, 11 * MINUTE, &leaving).closings.len(), 1);
    }

    #[test]
    fn an_active_session_without_a_cycle_opens_from_livekits_join_time() {
        let mut known = known(vec![open("ada", "PA_ada", MINUTE, None)]);
        known.known_sessions.insert("PA_gone".into());
        let answer = RoomAnswer::Listed(vec![
            listed("ada", "PA_ada", ParticipantState::Active, MINUTE),
            listed("fay", "PA_fay", ParticipantState::Active, 3 * MINUTE),
            listed("gus", "PA_gus", ParticipantState::Joining, 3 * MINUTE),
            listed("hal", "PA_hal", ParticipantState::Active, 11 * MINUTE - 1_000),
            listed("old", "PA_gone", ParticipantState::Active, MINUTE),
        ]);
        let decision = reconcile(&known, 11 * MINUTE, &answer);
        assert_eq!(decision.openings, [(info("fay", "PA_fay"), 3 * MINUTE)]);
    }

    #[test]
    fn a_listed_participant_that_could_not_be_stored_is_not_opened() {
        let known = known(vec![]);
        let mut hostile = vec![
            listed("", "PA_1", ParticipantState::Active, MINUTE),
            listed("bob", "", ParticipantState::Active, MINUTE),
            listed("line\r\nbreak", "PA_3", ParticipantState::Active, MINUTE),
            listed(&"x".repeat(10_000), "PA_4", ParticipantState::Active, MINUTE),
            listed("nul", "PA_5", ParticipantState::Active, MINUTE),
            listed("fine", "PA_6", ParticipantState::Active, MINUTE),
        ];
        hostile[4].info.metadata = "a\0b".into();
        let decision = reconcile(&known, 11 * MINUTE, &RoomAnswer::Listed(hostile));
        let opened: Vec<&str> = decision.openings.iter().map(|(p, _)| p.sid.as_str()).collect();
        assert_eq!(opened, ["PA_6"]);
        let hostile_sid = vec![listed("eve", "PA_\0", ParticipantState::Active, MINUTE)];
        assert!(reconcile(&known, 11 * MINUTE, &RoomAnswer::Listed(hostile_sid)).listed.is_empty(), "never stored");
    }

    #[test]
    fn a_session_listed_again_withdraws_its_reconciled_closure() {
        let mut known = known(vec![]);
        known.reconciled_sessions.insert("PA_ada".into());
        known.known_sessions.insert("PA_ada".into());
        let answer = RoomAnswer::Listed(vec![listed("ada", "PA_ada", ParticipantState::Active, MINUTE)]);
        let decision = reconcile(&known, 11 * MINUTE, &answer);
        assert_eq!(decision.relisted, ["PA_ada"]);
        assert!(decision.openings.is_empty());
    }

    #[test]
    fn a_room_gone_closes_everyone_and_ends_the_meeting_when_last_seen() {
        let known = known(vec![open("ada", "PA_ada", MINUTE, None), open("eve", "PA_eve", 11 * MINUTE - 5_000, None)]);
        let decision = reconcile(&known, 11 * MINUTE, &RoomAnswer::Gone);
        assert_eq!(decision.closings.len(), 2, "young sessions too: the room is gone");
        assert_eq!(decision.meeting_ended_at_ms, Some(11 * MINUTE - 5_000));
        let mut quiet = known.clone();
        quiet.open_cycles.pop();
        assert_eq!(reconcile(&quiet, 11 * MINUTE, &RoomAnswer::Gone).meeting_ended_at_ms, Some(10 * MINUTE));
        // A real left later than the last check: the end is not before it.
        quiet.latest_left_ms = Some(10 * MINUTE + 40_000);
        assert_eq!(reconcile(&quiet, 11 * MINUTE, &RoomAnswer::Gone).meeting_ended_at_ms, Some(10 * MINUTE + 40_000));
        // Never checked before: from its start.
        let never = Known { started_at_ms: Some(MINUTE), ..Known::default() };
        assert_eq!(reconcile(&never, 11 * MINUTE, &RoomAnswer::Gone).meeting_ended_at_ms, Some(MINUTE));
    }
}
