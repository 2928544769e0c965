//! The attendance policy: how a participant's time in a meeting becomes a verdict a teacher can
//! use. Pure, like the rule: a function of the stored attendance, the meeting's span, the time
//! of the read and the policy's thresholds.
//!
//! - `attended_ratio`: attended time over the meeting's duration (up to now while it runs; open
//!   cycles count up to now too).
//! - `joined_late`: the first join came more than `late_after` after the meeting's start.
//! - `left_early`: the meeting has ended and the last leave came more than `early_before`
//!   before its end.
//! - `status`: `in_progress` while the meeting runs; then `attended` when the ratio reaches
//!   `min_ratio`, else `partial`. Bots get no status.

use std::time::Duration;

use super::attendance::{Attendance, union_ms};
use super::meeting::MeetingSpan;
use super::time::millis;

/// The thresholds of the policy.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Policy {
    /// Smallest attended ratio that counts as attended (0 to 1).
    pub min_ratio: f64,
    pub late_after: Duration,
    pub early_before: Duration,
}

impl Default for Policy {
    fn default() -> Self {
        Policy { min_ratio: 0.75, late_after: Duration::from_secs(300), early_before: Duration::from_secs(300) }
    }
}

/// A participant's verdict in a meeting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    InProgress,
    Attended,
    Partial,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::InProgress => "in_progress",
            Status::Attended => "attended",
            Status::Partial => "partial",
        }
    }
}

/// What the policy says of a participant in a meeting.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Assessment {
    /// Attended time, open cycles counted up to the read.
    pub attended_ms: i64,
    /// `None` when the meeting has no duration yet.
    pub attended_ratio: Option<f64>,
    pub joined_late: bool,
    pub left_early: bool,
    /// `None` for bots.
    pub status: Option<Status>,
}

/// The meeting's duration as of `now_ms`: to its end, or to now while it runs.
pub fn duration_ms(span: &MeetingSpan, now_ms: i64) -> Option<i64> {
    let start = span.started_at_ms?;
    Some((span.ended_at_ms.unwrap_or(now_ms) - start).max(0))
}

/// Applies the policy to a participant's attendance in a meeting, as of `now_ms`.
pub fn assess(attendance: &Attendance, span: &MeetingSpan, now_ms: i64, policy: &Policy) -> Assessment {
    let until = span.ended_at_ms.unwrap_or(now_ms);
    let attended_ms = union_ms(attendance.cycles.iter().map(|c| (c.joined_at_ms, c.left_at_ms.unwrap_or(until))));
    let attended_ratio = duration_ms(span, now_ms).filter(|&d| d > 0).map(|d| (attended_ms as f64 / d as f64).min(1.0));
    let joined_late = match (span.started_at_ms, attendance.first_joined_at_ms) {
        (Some(start), Some(first)) => first > start + millis(policy.late_after),
        _ => false,
    };
    let left_early = match (span.ended_at_ms, attendance.last_left_at_ms) {
        (Some(end), Some(last)) if !attendance.present => last < end - millis(policy.early_before),
        _ => false,
    };
    let status = if attendance.is_bot() {
        None
    } else if span.ended_at_ms.is_none() {
        Some(Status::InProgress)
    } else if attended_ratio.is_some_and(|ratio| ratio >= policy.min_ratio) {
        Some(Status::Attended)
    } else {
        Some(Status::Partial)
    };
    Assessment { attended_ms, attended_ratio, joined_late, left_early, status }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::attendance::{ClosedBy, Cycle};

    const MINUTE: i64 = 60_000;

    fn attendance(kind: &str, cycles: &[(i64, Option<i64>)]) -> Attendance {
        let cycles: Vec<Cycle> = cycles
            .iter()
            .enumerate()
            .map(|(n, &(joined, left))| Cycle {
                participant_sid: format!("PA_{n}"),
                room_sid: "RM_1".into(),
                joined_at_ms: joined,
                left_at_ms: left,
                closed_by: left.map(|_| ClosedBy::ParticipantLeft),
            })
            .collect();
        Attendance {
            identity: "ada".into(),
            name: String::new(),
            metadata: String::new(),
            kind: kind.into(),
            attended_ms: 0,
            join_count: cycles.len() as i64,
            leave_count: cycles.iter().filter(|c| c.left_at_ms.is_some()).count() as i64,
            first_joined_at_ms: cycles.iter().map(|c| c.joined_at_ms).min(),
            last_left_at_ms: cycles.iter().filter_map(|c| c.left_at_ms).max(),
            present: cycles.iter().any(|c| c.left_at_ms.is_none()),
            cycles,
        }
    }

    fn ended(start: i64, end: i64) -> MeetingSpan {
        MeetingSpan { started_at_ms: Some(start), ended_at_ms: Some(end), ended_by: None }
    }

    #[test]
    fn the_ratio_threshold_is_inclusive() {
        let span = ended(0, 100 * MINUTE);
        let exactly = assess(&attendance("STANDARD", &[(0, Some(75 * MINUTE))]), &span, 0, &Policy::default());
        assert_eq!((exactly.attended_ratio, exactly.status), (Some(0.75), Some(Status::Attended)));
        let short = assess(&attendance("STANDARD", &[(0, Some(75 * MINUTE - 1))]), &span, 0, &Policy::default());
        assert_eq!(short.status, Some(Status::Partial));
    }

    #[test]
    fn late_and_early_are_strictly_past_their_margins() {
        let span = ended(0, 100 * MINUTE);
        let policy = Policy::default();
        let on_the_dot = assess(&attendance("STANDARD", &[(5 * MINUTE, Some(95 * MINUTE))]), &span, 0, &policy);
        assert!(!on_the_dot.joined_late && !on_the_dot.left_early);
        let by_one_ms = assess(&attendance("STANDARD", &[(5 * MINUTE + 1, Some(95 * MINUTE - 1))]), &span, 0, &policy);
        assert!(by_one_ms.joined_late && by_one_ms.left_early);
    }

    #[test]
    fn a_running_meeting_counts_up_to_now_and_bots_get_no_status() {
        let running = MeetingSpan { started_at_ms: Some(0), ..Default::default() };
        let now = 10 * MINUTE;
        let assessed = assess(&attendance("STANDARD", &[(0, None)]), &running, now, &Policy::default());
        assert_eq!(assessed.attended_ms, now);
        assert_eq!(
            (assessed.attended_ratio, assessed.status, assessed.left_early),
            (Some(1.0), Some(Status::InProgress), false)
        );
        let bot = assess(&attendance("AGENT", &[(0, Some(now))]), &ended(0, now), now, &Policy::default());
        assert_eq!(bot.status, None);
    }
}
