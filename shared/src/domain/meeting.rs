//! A meeting: one LiveKit room session, identified by the room `sid` that LiveKit puts in every
//! room and participant event. A room name (a weekly class) has many meetings over time.
//!
//! A meeting starts at its `room_started` (else at its earliest join) and ends at its
//! `room_finished`; when that never comes, at the end the sweeper inferred, an estimate that a
//! late `room_finished` replaces. Like the attendance rule, this is a pure function of the
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

/// The span of a meeting from its facts (its room_started and room_finished facts; others are
/// ignored), the earliest join of its participants, and the sweeper's inferred end, if any.
pub fn span(facts: &[Fact], earliest_join_ms: Option<i64>, inferred_end_ms: Option<i64>) -> MeetingSpan {
    let earliest = |kind: &FactKind| facts.iter().filter(|f| &f.kind == kind).map(|f| f.created_at_ms).min();
    let started_at_ms = earliest(&FactKind::RoomStarted).or(earliest_join_ms);
    let (ended_at_ms, ended_by) = match (earliest(&FactKind::RoomFinished), inferred_end_ms) {
        (Some(finished), _) => (Some(finished), Some(EndedBy::RoomFinished)),
        (None, Some(inferred)) => (Some(inferred), Some(EndedBy::Inferred)),
        (None, None) => (None, None),
    };
    MeetingSpan { started_at_ms, ended_at_ms, ended_by }
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
        let full = span(&[finished.clone(), started.clone(), finished.clone()], Some(500), Some(8_000));
        assert_eq!(
            full,
            MeetingSpan { started_at_ms: Some(1_000), ended_at_ms: Some(9_000), ended_by: Some(EndedBy::RoomFinished) }
        );
        let inferred = span(&[], Some(500), Some(8_000));
        assert_eq!(
            inferred,
            MeetingSpan { started_at_ms: Some(500), ended_at_ms: Some(8_000), ended_by: Some(EndedBy::Inferred) }
        );
        assert_eq!(span(&[started], None, None), MeetingSpan { started_at_ms: Some(1_000), ..Default::default() });
    }
}
