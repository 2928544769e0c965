//! The meetings of a room name, and one meeting's attendance with the attendance policy applied:
//! `GET /v1/rooms/{room}/meetings` (newest first, cursor pagination) and
//! `GET /v1/meetings/{room_sid}`, as JSON or as CSV (`Accept: text/csv` or `?format=csv`).
//!
//! Same token rules as the room's attendance: `roomAdmin` of the room or `roomList` reads whole
//! meetings, a participant's own token only its own row. Bad parameters get 400 with the field
//! named. The CSV is written row by row as the response body streams.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde::Serialize;
use shared::domain::attendance::Attendance;
use shared::domain::document::{MeetingAttendanceView, MeetingFields, ParticipantCounts};
use shared::domain::identifiers::{self, Field};
use shared::domain::policy::{self, Assessment, Policy};
use shared::domain::time::{now_unix_ms, parse_instant, rfc3339_ms};
use shared::store::read_model::{self, MeetingSummary, MeetingsAfter, MeetingsQuery};

use crate::csv_export;
use crate::error::ApiError;
use crate::read_access::{self, Access};
use crate::read_api::{ReadState, read_failed};

const DEFAULT_PAGE: i64 = 50;
const MAX_PAGE: i64 = 500;

/// Query parameters as given; unknown ones are ignored.
pub(crate) struct Params(BTreeMap<String, String>);

impl Params {
    pub(crate) fn from(query: Result<Query<Vec<(String, String)>>, QueryRejection>) -> Result<Self, ApiError> {
        let Query(pairs) = query.map_err(|e| ApiError::InvalidParameter { field: "query", reason: e.body_text() })?;
        Ok(Params(pairs.into_iter().collect()))
    }

    fn get(&self, field: &str) -> Option<&str> {
        self.0.get(field).map(String::as_str).filter(|value| !value.is_empty())
    }

    pub(crate) fn parse<T>(
        &self,
        field: &'static str,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Result<Option<T>, ApiError> {
        self.get(field).map(parse).transpose().map_err(|reason| ApiError::InvalidParameter { field, reason })
    }

    fn instant(&self, field: &'static str, now_ms: i64) -> Result<Option<i64>, ApiError> {
        self.parse(field, |text| parse_instant(text, now_ms))
    }

    fn duration(&self, field: &'static str) -> Result<Option<Duration>, ApiError> {
        self.parse(field, |text| humantime::parse_duration(text).map_err(|e| format!("{text:?}: {e}")))
    }

    /// The gateway's policy with the request's overrides.
    fn policy(&self, defaults: Policy) -> Result<Policy, ApiError> {
        Ok(Policy {
            min_ratio: self.parse("min_ratio", shared::runtime::config::parse_ratio)?.unwrap_or(defaults.min_ratio),
            late_after: self.duration("late_after")?.unwrap_or(defaults.late_after),
            early_before: self.duration("early_before")?.unwrap_or(defaults.early_before),
        })
    }
}

/// An opaque position in a room's meetings: after this meeting.
fn encode_cursor(after: &MeetingsAfter) -> String {
    let text = format!("{}:{}", after.started_at_ms, after.room_sid);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text)
}

fn decode_cursor(cursor: &str) -> Result<MeetingsAfter, String> {
    let invalid = || "not a cursor this API gave".to_owned();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(cursor).map_err(|_| invalid())?;
    let text = String::from_utf8(bytes).map_err(|_| invalid())?;
    let (started_at, room_sid) = text.split_once(':').ok_or_else(invalid)?;
    if room_sid.contains(char::is_control) {
        return Err(invalid());
    }
    let started_at_ms = started_at.parse().map_err(|_| invalid())?;
    Ok(MeetingsAfter { started_at_ms, room_sid: room_sid.to_owned() })
}

/// A meeting in the room's list: its span and its participant counts.
#[derive(Debug, Serialize)]
pub struct MeetingView {
    #[serde(flatten)]
    pub meeting: MeetingFields,
    pub participants: ParticipantCounts,
}

impl MeetingView {
    fn new(summary: &MeetingSummary, now_ms: i64) -> Self {
        let meeting = MeetingFields::new(&summary.room_name, &summary.room_sid, &summary.span, now_ms);
        MeetingView { meeting, participants: counts(summary) }
    }
}

fn counts(summary: &MeetingSummary) -> ParticipantCounts {
    ParticipantCounts { people: summary.people, bots: summary.bots, present_now: summary.present_now }
}

#[derive(Debug, Serialize)]
pub struct MeetingsPage {
    pub room: String,
    pub meetings: Vec<MeetingView>,
    /// Pass as `cursor` for the next page; `null` on the last.
    pub next_cursor: Option<String>,
}

/// `GET /v1/rooms/{room}/meetings?since=&until=&limit=&cursor=`: newest first.
pub async fn list(
    State(state): State<Arc<ReadState>>,
    Path(room): Path<String>,
    headers: HeaderMap,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Json<MeetingsPage>, ApiError> {
    let now_ms = now_unix_ms();
    identifiers::check(Field::RoomName, &room)?;
    read_access::authorize(&headers, &state.keys, &room, now_ms / 1000)?;
    let params = Params::from(query)?;
    let limit = params
        .parse("limit", |text| match text.parse::<i64>() {
            Ok(n) if (1..=MAX_PAGE).contains(&n) => Ok(n),
            _ => Err(format!("{text:?} is not a whole number from 1 to {MAX_PAGE}")),
        })?
        .unwrap_or(DEFAULT_PAGE);
    let query = MeetingsQuery {
        since_ms: params.instant("since", now_ms)?,
        until_ms: params.instant("until", now_ms)?,
        after: params.parse("cursor", decode_cursor)?,
        // One more than asked, to know whether there is a next page.
        limit: limit + 1,
    };
    let mut meetings = {
        let mut connection = state.pool.acquire().await.map_err(read_failed)?;
        read_model::list_meetings(&mut connection, &room, &query).await.map_err(read_failed)?
    };
    let next_cursor = if meetings.len() as i64 > limit {
        meetings.truncate(limit as usize);
        meetings.last().and_then(|last| {
            Some(encode_cursor(&MeetingsAfter {
                started_at_ms: last.span.started_at_ms?,
                room_sid: last.room_sid.clone(),
            }))
        })
    } else {
        None
    };
    let meetings = meetings.iter().map(|m| MeetingView::new(m, now_ms)).collect();
    Ok(Json(MeetingsPage { room, meetings, next_cursor }))
}

/// `GET /v1/meetings/{room_sid}`: the meeting and its participants with the policy applied.
pub async fn one(
    State(state): State<Arc<ReadState>>,
    Path(room_sid): Path<String>,
    headers: HeaderMap,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Response, ApiError> {
    let now_ms = now_unix_ms();
    identifiers::check(Field::RoomSid, &room_sid)?;
    let claims = read_access::verify(&headers, &state.keys, now_ms / 1000)?;
    let params = Params::from(query)?;
    let policy = params.policy(state.policy)?;
    let csv = match params.get("format") {
        Some("csv") => true,
        Some("json") => false,
        Some(other) => {
            return Err(ApiError::InvalidParameter {
                field: "format",
                reason: format!("{other:?} is not json or csv"),
            });
        }
        None => accepts_csv(&headers),
    };

    let mut connection = state.pool.acquire().await.map_err(read_failed)?;
    let summary =
        read_model::meeting(&mut connection, &room_sid).await.map_err(read_failed)?.ok_or(ApiError::NoSuchMeeting)?;
    let access = read_access::access(&claims, &summary.room_name)?;
    let mut attendance = read_model::load_meeting(&mut connection, &room_sid).await.map_err(read_failed)?;
    let heartbeats = read_model::meeting_heartbeats(&mut connection, &room_sid).await.map_err(read_failed)?;
    drop(connection);
    if let Access::OnlyParticipant(own) = &access {
        attendance.retain(|identity, _| identity == own);
    }

    let assessed: Vec<(Attendance, Assessment)> = attendance
        .into_values()
        .map(|a| {
            let assessment = policy::assess(&a, &summary.span, now_ms, &policy);
            (a, assessment)
        })
        .collect();
    if csv {
        return Ok(csv_response(&summary, assessed));
    }
    let meeting = MeetingFields::new(&summary.room_name, &summary.room_sid, &summary.span, now_ms);
    let body = MeetingAttendanceView::new(meeting, counts(&summary), &policy, assessed, &heartbeats, now_ms);
    Ok(Json(body).into_response())
}

fn accepts_csv(headers: &HeaderMap) -> bool {
    headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).is_some_and(|accept| {
        accept
            .split(',')
            .any(|kind| kind.split(';').next().is_some_and(|kind| kind.trim().eq_ignore_ascii_case("text/csv")))
    })
}

/// The CSV's columns.
const CSV_HEADER: [&str; 17] = [
    "room",
    "room_sid",
    "meeting_started_at",
    "meeting_ended_at",
    "identity",
    "name",
    "kind",
    "bot",
    "status",
    "attended_ms",
    "attended_ratio",
    "joined_late",
    "left_early",
    "join_count",
    "leave_count",
    "first_joined_at",
    "last_left_at",
];

/// One row per participant (people first, then bots), written as the body streams.
fn csv_response(summary: &MeetingSummary, assessed: Vec<(Attendance, Assessment)>) -> Response {
    let mut ordered = assessed;
    ordered.sort_by(|(a, _), (b, _)| (a.is_bot(), &a.identity).cmp(&(b.is_bot(), &b.identity)));
    let meeting = [
        summary.room_name.clone(),
        summary.room_sid.clone(),
        summary.span.started_at_ms.map(rfc3339_ms).unwrap_or_default(),
        summary.span.ended_at_ms.map(rfc3339_ms).unwrap_or_default(),
    ];
    let header = std::iter::once(csv_export::record(&CSV_HEADER));
    let rows = ordered.into_iter().map(move |(attendance, assessment)| {
        let bot = attendance.is_bot().to_string();
        let mut fields: Vec<String> = meeting.to_vec();
        fields.extend([
            attendance.identity,
            attendance.name,
            attendance.kind,
            bot,
            assessment.status.map(|s| s.as_str().to_owned()).unwrap_or_default(),
            assessment.attended_ms.to_string(),
            assessment.attended_ratio.map(|r| format!("{r:.4}")).unwrap_or_default(),
            assessment.joined_late.to_string(),
            assessment.left_early.to_string(),
            attendance.join_count.to_string(),
            attendance.leave_count.to_string(),
            attendance.first_joined_at_ms.map(rfc3339_ms).unwrap_or_default(),
            attendance.last_left_at_ms.map(rfc3339_ms).unwrap_or_default(),
        ]);
        csv_export::record(&fields)
    });
    let chunks = header.chain(rows).map(|record| Ok::<_, Infallible>(Bytes::from(record)));
    let file_name: String =
        summary.room_sid.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-').collect();
    let mut response = Response::new(Body::from_stream(futures::stream::iter(chunks)));
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/csv; charset=utf-8"));
    if let Ok(disposition) = HeaderValue::from_str(&format!("attachment; filename=\"meeting-{file_name}.csv\"")) {
        headers.insert(header::CONTENT_DISPOSITION, disposition);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_foreign_ones_are_refused() {
        let after = MeetingsAfter { started_at_ms: 1_790_000_000_123, room_sid: "RM_a:b".into() };
        assert_eq!(decode_cursor(&encode_cursor(&after)), Ok(after));
        assert!(decode_cursor("not base64!").is_err());
        assert!(decode_cursor(&base64::engine::general_purpose::URL_SAFE_NO_PAD.encode("x:RM")).is_err());
    }

    #[test]
    fn csv_is_chosen_by_accept_or_format() {
        let mut headers = HeaderMap::new();
        assert!(!accepts_csv(&headers));
        headers.insert(header::ACCEPT, HeaderValue::from_static("application/json, text/csv;q=0.9"));
        assert!(accepts_csv(&headers));
    }
}
