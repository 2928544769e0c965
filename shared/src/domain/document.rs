//! The JSON documents of attendance that platforms read: a participant's attendance, and a
//! meeting's with the attendance policy applied. The read API answers with them and the meeting
//! reports carry them, so that a platform parses one shape whichever way it gets the figures.

use std::collections::BTreeMap;

use serde::Serialize;

use super::attendance::{Attendance, union_ms};
use super::meeting::MeetingSpan;
use super::policy::{self, Assessment, Policy};
use super::time::{millis, rfc3339_ms};

#[derive(Debug, Serialize)]
pub struct ParticipantView {
    pub identity: String,
    pub name: String,
    pub kind: String,
    pub present: bool,
    /// Union of the cycles; open cycles count up to the time of the read.
    pub attended_ms: i64,
    pub join_count: i64,
    pub leave_count: i64,
    pub first_joined_at: Option<String>,
    pub last_left_at: Option<String>,
    pub last_heartbeat_at: Option<String>,
    pub cycles: Vec<CycleView>,
}

#[derive(Debug, Serialize)]
pub struct CycleView {
    pub participant_sid: String,
    pub room_sid: String,
    pub joined_at: String,
    pub left_at: Option<String>,
    pub closed_by: Option<&'static str>,
    pub duration_ms: Option<i64>,
}

impl ParticipantView {
    pub fn new(attendance: Attendance, last_heartbeat_ms: Option<i64>, now_ms: i64) -> Self {
        let attended_ms = union_ms(attendance.cycles.iter().map(|c| (c.joined_at_ms, c.left_at_ms.unwrap_or(now_ms))));
        ParticipantView {
            identity: attendance.identity,
            name: attendance.name,
            kind: attendance.kind,
            present: attendance.present,
            attended_ms,
            join_count: attendance.join_count,
            leave_count: attendance.leave_count,
            first_joined_at: attendance.first_joined_at_ms.map(rfc3339_ms),
            last_left_at: attendance.last_left_at_ms.map(rfc3339_ms),
            last_heartbeat_at: last_heartbeat_ms.map(rfc3339_ms),
            cycles: attendance
                .cycles
                .into_iter()
                .map(|c| CycleView {
                    joined_at: rfc3339_ms(c.joined_at_ms),
                    left_at: c.left_at_ms.map(rfc3339_ms),
                    closed_by: c.closed_by.map(|by| by.as_str()),
                    duration_ms: c.duration_ms(),
                    participant_sid: c.participant_sid,
                    room_sid: c.room_sid,
                })
                .collect(),
        }
    }
}

/// What identifies a meeting and its span.
#[derive(Debug, Serialize)]
pub struct MeetingFields {
    pub room: String,
    pub room_sid: String,
    pub started_at: Option<String>,
    pub ended_at: Option<String>,
    /// `room_finished`, `inferred`, or `null` while the meeting runs.
    pub ended_by: Option<&'static str>,
    /// To the end, or to the time of the read while the meeting runs.
    pub duration_ms: Option<i64>,
    pub in_progress: bool,
}

#[derive(Debug, Serialize)]
pub struct ParticipantCounts {
    pub people: i64,
    pub bots: i64,
    /// People present now.
    pub present_now: i64,
}

impl MeetingFields {
    pub fn new(room_name: &str, room_sid: &str, span: &MeetingSpan, now_ms: i64) -> Self {
        MeetingFields {
            room: room_name.to_owned(),
            room_sid: room_sid.to_owned(),
            started_at: span.started_at_ms.map(rfc3339_ms),
            ended_at: span.ended_at_ms.map(rfc3339_ms),
            ended_by: span.ended_by.map(|by| by.as_str()),
            duration_ms: policy::duration_ms(span, now_ms),
            in_progress: span.ended_at_ms.is_none(),
        }
    }
}

/// A participant of a meeting with the policy applied.
#[derive(Debug, Serialize)]
pub struct AssessedView {
    #[serde(flatten)]
    pub participant: ParticipantView,
    /// Attended time over the meeting's duration; `null` before the meeting has a duration.
    pub attended_ratio: Option<f64>,
    pub joined_late: bool,
    pub left_early: bool,
    /// `attended`, `partial`, `in_progress`; `null` for bots.
    pub status: Option<&'static str>,
}

#[derive(Debug, Serialize)]
pub struct PolicyView {
    pub min_ratio: f64,
    pub late_after_ms: i64,
    pub early_before_ms: i64,
}

#[derive(Debug, Serialize)]
pub struct MeetingAttendanceView {
    #[serde(flatten)]
    pub meeting: MeetingFields,
    /// The counts the room's list shows (`participants` there), here beside the lists.
    pub counts: ParticipantCounts,
    pub policy: PolicyView,
    /// People (SIP callers included), by identity.
    pub participants: Vec<AssessedView>,
    /// Agents, egress and ingress: listed apart, never given a status.
    pub bots: Vec<AssessedView>,
}

impl PolicyView {
    pub fn new(policy: &Policy) -> Self {
        PolicyView {
            min_ratio: policy.min_ratio,
            late_after_ms: millis(policy.late_after),
            early_before_ms: millis(policy.early_before),
        }
    }
}

impl MeetingAttendanceView {
    /// The meeting with each participant's attendance and its assessment under `policy`
    /// (computed by [`policy::assess`] as of `now_ms`), people and bots apart, each with its
    /// last heartbeat if any.
    pub fn new(
        meeting: MeetingFields,
        counts: ParticipantCounts,
        policy: &Policy,
        assessed: Vec<(Attendance, Assessment)>,
        heartbeats: &BTreeMap<String, i64>,
        now_ms: i64,
    ) -> Self {
        let (bots, people): (Vec<_>, Vec<_>) = assessed.into_iter().partition(|(a, _)| a.is_bot());
        let view = |list: Vec<(Attendance, Assessment)>| -> Vec<AssessedView> {
            list.into_iter()
                .map(|(attendance, assessment)| {
                    let last_heartbeat = heartbeats.get(&attendance.identity).copied();
                    let mut participant = ParticipantView::new(attendance, last_heartbeat, now_ms);
                    participant.attended_ms = assessment.attended_ms;
                    AssessedView {
                        participant,
                        attended_ratio: assessment.attended_ratio,
                        joined_late: assessment.joined_late,
                        left_early: assessment.left_early,
                        status: assessment.status.map(|s| s.as_str()),
                    }
                })
                .collect()
        };
        MeetingAttendanceView {
            meeting,
            counts,
            policy: PolicyView::new(policy),
            participants: view(people),
            bots: view(bots),
        }
    }
}
