//! A meeting: one LiveKit room session, identified by the room `sid` that LiveKit puts in every
//! room and participant event. A room name (a weekly class) has many meetings over time.
//!
//! A meeting starts at its `room_started` (else at its earliest join) and ends at its
//! `room_finished`; when that never comes (LiveKit keeps no webhook on disk), at the end the
//! sweeper inferred once the meeting had been empty past LiveKit's own timeouts: an estimate that
//! a late `room_finished` replaces, and that a later join or leave withdraws. Like the attendance rule, this is a pure function of the
//! meeting's facts: duplicates and order do not matter.

use super::attendance::{Fact, FactKind};

/// How a meeting's end is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum EndedBy {
    RoomFinished,
    /// No room_finished came; the sweeper inferred the end.
    Inferred,
}

impl EndedBy {
    pub fn as_str(self) -> &'static str {
        match self {
            EndedBy::RoomFinished => "room_finished",
            EndedBy::Inferred => "inferred",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [EndedBy::RoomFinished, EndedBy::Inferred].into_iter().find(|by| by.as_str() == text)
    }
}

/// When a meeting ran.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MeetingSpan {
    pub started_at_ms: Option<i64>,
    pub ended_at_ms: Option<i64>,
    pub ended_by: Option<EndedBy>,
}

/// What the meeting's participants did, as far as its span is concerned.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Activity {
    pub earliest_join_ms: Option<i64>,
    pub latest_left_ms: Option<i64>,
    /// Some cycle is open.
    pub open: bool,
}

/// The span of a meeting from its facts (its room_started and room_finished facts; others are
/// ignored), its participants' activity, and the sweeper's inferred end, if any. An inferred end
/// counts only while nothing contradicts it: no cycle open, no leave after it.
pub fn span(facts: &[Fact], activity: Activity, inferred_end_ms: Option<i64>) -> MeetingSpan {
    let earliest = |kind: &FactKind| facts.iter().filter(|f| &f.kind == kind).map(|f| f.created_at_ms).min();
    let started_at_ms = earliest(&FactKind::RoomStarted).or(activity.earliest_join_ms);
    let inferred =
        inferred_end_ms.filter(|&end| !activity.open && activity.latest_left_ms.is_none_or(|left| left <= end));
    let (ended_at_ms, ended_by) = match (earliest(&FactKind::RoomFinished), inferred) {
        (Some(finished), _) => (Some(finished), Some(EndedBy::RoomFinished)),
        (None, Some(inferred)) => (Some(inferred), Some(EndedBy::Inferred)),
        (None, None) => (None, None),
    };
    MeetingSpan { started_at_ms, ended_at_ms, ended_by }
}

/// How long LiveKit keeps an idle room open, from the room object (its defaults when absent).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RoomTimeouts {
    /// Seconds, when nobody joined.
    pub empty_s: Option<u32>,
    /// Seconds, after the last participant left.
    pub departure_s: Option<u32>,
}

impl RoomTimeouts {
    /// LiveKit's defaults (`room.empty_timeout`, `room.departure_timeout` of livekit-server).
    pub const DEFAULT_EMPTY_S: u32 = 300;
    pub const DEFAULT_DEPARTURE_S: u32 = 20;
}

/// When LiveKit would have closed (and sent room_finished for) a meeting with no one left in it:
/// its departure timeout after the last leave, or its empty timeout after its start when nobody
/// ever came. The sweeper infers that end once this is more than a margin in the past.
pub fn expected_close_ms(started_at_ms: i64, latest_left_ms: Option<i64>, timeouts: RoomTimeouts) -> i64 {
    let seconds = |s: Option<u32>, default: u32| i64::from(s.unwrap_or(default)) * 1000;
    match latest_left_ms {
        Some(left) => left + seconds(timeouts.departure_s, RoomTimeouts::DEFAULT_DEPARTURE_S),
        None => started_at_ms + seconds(timeouts.empty_s, RoomTimeouts::DEFAULT_EMPTY_S),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fact(kind: FactKind, at: i64) -> Fact {
        Fact { event_id: format!("EV_{at}"), created_at_ms: at, room_name: "r".into(), room_sid: "RM_1".into(), kind }
    }

    #[test]
    fn starts_at_room_started_else_the_earliest_join_and_ends_at_room_finished_else_the_inference() {
        let started = fact(FactKind::RoomStarted, 1_000);
        let finished = fact(FactKind::RoomFinished, 9_000);
        let joined = Activity { earliest_join_ms: Some(500), latest_left_ms: Some(7_000), open: false };
        let full = span(&[finished.clone(), started.clone(), finished.clone()], joined, Some(8_000));
        let expected =
            MeetingSpan { started_at_ms: Some(1_000), ended_at_ms: Some(9_000), ended_by: Some(EndedBy::RoomFinished) };
        assert_eq!(full, expected);
        let inferred = span(&[], joined, Some(8_000));
        let expected =
            MeetingSpan { started_at_ms: Some(500), ended_at_ms: Some(8_000), ended_by: Some(EndedBy::Inferred) };
        assert_eq!(inferred, expected);
        let only_started = span(&[started], Activity::default(), None);
        assert_eq!(only_started, MeetingSpan { started_at_ms: Some(1_000), ..Default::default() });
    }

    #[test]
    fn an_inferred_end_gives_way_to_anything_that_contradicts_it() {
        let reopened = Activity { earliest_join_ms: Some(0), latest_left_ms: Some(7_000), open: true };
        assert_eq!(span(&[], reopened, Some(8_000)).ended_at_ms, None, "a cycle is open again");
        let left_later = Activity { earliest_join_ms: Some(0), latest_left_ms: Some(9_000), open: false };
        assert_eq!(span(&[], left_later, Some(8_000)).ended_at_ms, None, "someone left after it");
    }

    #[test]
    fn livekit_closes_an_idle_room_after_its_departure_or_empty_timeout() {
        let custom = RoomTimeouts { empty_s: Some(60), departure_s: Some(5) };
        assert_eq!(expected_close_ms(1_000, Some(10_000), custom), 15_000);
        assert_eq!(expected_close_ms(1_000, None, custom), 61_000);
        assert_eq!(expected_close_ms(1_000, Some(10_000), RoomTimeouts::default()), 30_000);
        assert_eq!(expected_close_ms(1_000, None, RoomTimeouts::default()), 301_000);
    }
}
