//! Meeting reports (`report_outbox`, `meeting_reports`): what the platform is due to be told of
//! a meeting, decided and written in the transaction that changed the meeting (see
//! [`record_changes`]), then published to NATS by the outbox publisher and deleted once
//! JetStream acknowledged it.
//!
//! Invariants: a meeting's reports are numbered 1, 2, … in commit order (the caller holds the
//! meeting's lock); a report's id follows from its meeting and number, so publishing a row twice
//! stores it once; rows are published in id order by one publisher at a time, which holds a
//! transaction-scoped advisory lock while it publishes and deletes.

use std::collections::BTreeMap;

use sqlx::{PgConnection, PgPool};
use time::OffsetDateTime;

use super::presence_outbox::Cause;
use super::read_model;
use crate::domain::document::{MeetingAttendanceView, MeetingFields, ParticipantCounts};
use crate::domain::meeting::{EndedBy, MeetingSpan};
use crate::domain::policy::{self, Policy};
use crate::domain::report::{self, ReportType, Reported};
use crate::domain::time::{rfc3339_ms, unix_ms};

/// Advisory lock key of the report publisher ("reports!" in ASCII).
const PUBLISHER_LOCK: i64 = 0x7265_706f_7274_7321;

/// A report waiting to be published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxReport {
    /// Increasing: the publishing order.
    pub id: i64,
    pub report_id: String,
    pub room_sid: String,
    pub sequence: i64,
    pub kind: ReportType,
    /// The Standard Webhooks body.
    pub body: String,
    /// The cause's trace context.
    pub traceparent: Option<String>,
}

/// Decides and writes the reports due for `meetings` (each with what changed it), whose
/// attendance and spans the caller's transaction has just recomputed under their locks. Reads
/// a meeting's whole attendance only when it has ended (or its end was withdrawn). Returns how
/// many reports were written.
pub async fn record_changes(
    conn: &mut PgConnection,
    meetings: &BTreeMap<String, Cause>,
    policy: &Policy,
    now_ms: i64,
) -> Result<usize, sqlx::Error> {
    if meetings.is_empty() {
        return Ok(0);
    }
    let sids: Vec<&str> = meetings.keys().map(String::as_str).collect();
    type Row = (
        String,
        String,
        Option<OffsetDateTime>,
        Option<OffsetDateTime>,
        Option<String>,
        Option<i64>,
        Option<bool>,
        Option<String>,
    );
    // Meetings being rebuilt (after a migration) or sealed (past retention) are not reported.
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT m.room_sid, m.room_name, m.started_at, m.ended_at, m.ended_by,
                r.sequence, r.reported_started, r.reported_digest
         FROM meetings m LEFT JOIN meeting_reports r USING (room_sid)
         WHERE m.room_sid = ANY($1) AND NOT m.needs_recompute AND m.sealed_at IS NULL",
    )
    .bind(&sids)
    .fetch_all(&mut *conn)
    .await?;
    let timestamp = rfc3339_ms(now_ms);
    let mut written = Vec::new();
    let mut states = Vec::new();
    for (room_sid, room_name, started_at, ended_at, ended_by, sequence, reported_started, reported_digest) in rows {
        let span = MeetingSpan {
            started_at_ms: started_at.map(unix_ms),
            ended_at_ms: ended_at.map(unix_ms),
            ended_by: ended_by.as_deref().and_then(EndedBy::parse),
        };
        let reported = Reported {
            sequence: sequence.unwrap_or(0),
            started: reported_started.unwrap_or(false),
            digest: reported_digest,
        };
        let document = if span.ended_at_ms.is_some() || reported.digest.is_some() {
            Some(meeting_document(conn, &room_name, &room_sid, &span, policy, now_ms).await?)
        } else {
            None
        };
        let ended_digest = document.as_ref().filter(|_| span.ended_at_ms.is_some()).map(report::digest);
        let (due, next) = report::reports_due(&reported, span.started_at_ms.is_some(), ended_digest.as_deref());
        if due.is_empty() {
            if next != reported {
                states.push((room_sid, next));
            }
            continue;
        }
        let start_fields = MeetingFields::new(&room_name, &room_sid, &span, now_ms);
        for (kind, sequence) in due.into_iter().zip(reported.sequence + 1..) {
            let body = match (&document, kind) {
                (Some(document), ReportType::Ended | ReportType::Updated) => {
                    report::body(kind, &timestamp, sequence, document)
                }
                _ => report::body(kind, &timestamp, sequence, &start_fields),
            };
            let traceparent = meetings[&room_sid].traceparent.clone();
            written.push((report::report_id(&room_sid, sequence), room_sid.clone(), sequence, kind, body, traceparent));
        }
        states.push((room_sid, next));
    }
    if states.is_empty() {
        return Ok(0);
    }
    sqlx::query(
        "INSERT INTO report_outbox (report_id, room_sid, sequence, kind, body, traceparent)
         SELECT report_id, room_sid, sequence, kind, body, traceparent
         FROM unnest($1::text[], $2::text[], $3::int8[], $4::text[], $5::text[], $6::text[])
              WITH ORDINALITY AS r (report_id, room_sid, sequence, kind, body, traceparent, n)
         ORDER BY n
         ON CONFLICT (report_id) DO NOTHING",
    )
    .bind(written.iter().map(|w| w.0.as_str()).collect::<Vec<_>>())
    .bind(written.iter().map(|w| w.1.as_str()).collect::<Vec<_>>())
    .bind(written.iter().map(|w| w.2).collect::<Vec<_>>())
    .bind(written.iter().map(|w| w.3.token()).collect::<Vec<_>>())
    .bind(written.iter().map(|w| w.4.as_str()).collect::<Vec<_>>())
    .bind(written.iter().map(|w| w.5.as_deref()).collect::<Vec<_>>())
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "INSERT INTO meeting_reports (room_sid, sequence, reported_started, reported_digest)
         SELECT * FROM unnest($1::text[], $2::int8[], $3::bool[], $4::text[])
         ON CONFLICT (room_sid) DO UPDATE SET sequence = excluded.sequence,
             reported_started = excluded.reported_started, reported_digest = excluded.reported_digest",
    )
    .bind(states.iter().map(|(sid, _)| sid.as_str()).collect::<Vec<_>>())
    .bind(states.iter().map(|(_, r)| r.sequence).collect::<Vec<_>>())
    .bind(states.iter().map(|(_, r)| r.started).collect::<Vec<_>>())
    .bind(states.iter().map(|(_, r)| r.digest.as_deref()).collect::<Vec<_>>())
    .execute(&mut *conn)
    .await?;
    Ok(written.len())
}

/// A meeting's document as the read API shows it, without last heartbeats (they move after the
/// end without changing attendance, and would make every heartbeat an update).
async fn meeting_document(
    conn: &mut PgConnection,
    room_name: &str,
    room_sid: &str,
    span: &MeetingSpan,
    policy: &Policy,
    now_ms: i64,
) -> Result<MeetingAttendanceView, sqlx::Error> {
    let attendance = read_model::load_meeting(conn, room_sid).await?;
    let (mut people, mut bots, mut present_now) = (0, 0, 0);
    for participant in attendance.values() {
        if participant.is_bot() {
            bots += 1;
        } else {
            people += 1;
            present_now += i64::from(participant.present);
        }
    }
    let assessed = attendance
        .into_values()
        .map(|attendance| {
            let assessment = policy::assess(&attendance, span, now_ms, policy);
            (attendance, assessment)
        })
        .collect();
    let meeting = MeetingFields::new(room_name, room_sid, span, now_ms);
    let counts = ParticipantCounts { people, bots, present_now };
    Ok(MeetingAttendanceView::new(meeting, counts, policy, assessed, &BTreeMap::new(), now_ms))
}

/// Takes the publisher's lock for the caller's transaction; `false` when another publisher
/// holds it (the caller then leaves the outbox alone).
pub async fn try_lock_publisher(conn: &mut PgConnection) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1)").bind(PUBLISHER_LOCK).fetch_one(&mut *conn).await
}

/// The oldest `limit` reports, in id order.
pub async fn oldest(conn: &mut PgConnection, limit: i64) -> Result<Vec<OutboxReport>, sqlx::Error> {
    type Row = (i64, String, String, i64, String, String, Option<String>);
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT id, report_id, room_sid, sequence, kind, body, traceparent FROM report_outbox ORDER BY id LIMIT $1",
    )
    .bind(limit)
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(|(id, report_id, room_sid, sequence, kind, body, traceparent)| {
            // The table's CHECK admits only the three kinds.
            let kind = ReportType::from_token(&kind)?;
            Some(OutboxReport { id, report_id, room_sid, sequence, kind, body, traceparent })
        })
        .collect())
}

/// Deletes published reports.
pub async fn delete(conn: &mut PgConnection, ids: &[i64]) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM report_outbox WHERE id = ANY($1)").bind(ids).execute(&mut *conn).await?;
    Ok(())
}

/// Reports waiting in the outbox.
pub async fn pending(pool: &PgPool) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT count(*) FROM report_outbox").fetch_one(pool).await
}
