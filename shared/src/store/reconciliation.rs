//! Reconciliation's tables: `meeting_checks` (which running meetings are due for a check against
//! the LiveKit server, and what the last check listed), `reconcile_budget` (the calls all
//! sweepers together may make) and `participant_listings` (sessions LiveKit listed that no event
//! opened: estimates of lost joins, facts for the rule).
//!
//! Invariants: a meeting is claimed by one sweeper at a time and at most once per interval
//! (claims are serialized by the budget's row lock and move the meeting's next check a whole
//! interval on); a check's result is applied under the meeting's lock, so it never races a
//! worker applying the meeting's events, and only while the meeting is still running.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use sqlx::{PgConnection, PgPool};
use time::OffsetDateTime;

use super::presence_outbox::Cause;
use super::recompute::{self, ParticipantKey};
use super::{closures, lifecycle, meetings, report_outbox};
use crate::domain::attendance::{ClosedBy, ParticipantInfo};
use crate::domain::policy::Policy;
use crate::domain::reconciliation::{self, Decision, Known, OpenCycle, RoomAnswer};
use crate::domain::time::{millis, timestamp, unix_ms};

/// A meeting due for a check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueMeeting {
    pub room_sid: String,
    pub room_name: String,
}

/// Calls a check may make: `ListParticipants`, then `ListRooms` to confirm the room's session.
pub const CALLS_PER_CHECK: f64 = 2.0;

/// Starts watching the running meetings not watched yet, each first due at a random moment within
/// `interval` (which spreads the checks over it), and stops watching those that ended.
pub async fn refresh_watched(pool: &PgPool, interval: Duration) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO meeting_checks (room_sid, next_check_at)
         SELECT m.room_sid, now() + random() * $1 * interval '1 millisecond' FROM meetings m
         WHERE m.ended_at IS NULL AND m.started_at IS NOT NULL AND m.sealed_at IS NULL
           AND NOT EXISTS (SELECT 1 FROM meeting_checks c WHERE c.room_sid = m.room_sid)
         ON CONFLICT DO NOTHING",
    )
    .bind(millis(interval))
    .execute(pool)
    .await?;
    sqlx::query(
        "DELETE FROM meeting_checks c USING meetings m
         WHERE c.room_sid = m.room_sid AND (m.ended_at IS NOT NULL OR m.sealed_at IS NOT NULL)",
    )
    .execute(pool)
    .await?;
    Ok(())
}

/// Claims up to `wanted` watched meetings due for a check, as many as the shared budget of
/// `max_rps` calls a second allows (bursts up to a second's worth), and moves their next check
/// `interval` on. One short transaction; never waits for another sweeper's claim longer than
/// that.
pub async fn claim_due(
    pool: &PgPool,
    interval: Duration,
    max_rps: f64,
    wanted: usize,
) -> Result<Vec<DueMeeting>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let capacity = max_rps.max(CALLS_PER_CHECK);
    sqlx::query("INSERT INTO reconcile_budget (tokens, drawn_at) VALUES ($1, now()) ON CONFLICT DO NOTHING")
        .bind(capacity)
        .execute(&mut *tx)
        .await?;
    let available: f64 = sqlx::query_scalar(
        "SELECT least($1, tokens + $2 * extract(epoch FROM now() - drawn_at)::float8)
         FROM reconcile_budget FOR UPDATE",
    )
    .bind(capacity)
    .bind(max_rps)
    .fetch_one(&mut *tx)
    .await?;
    let affordable = (available / CALLS_PER_CHECK).floor().max(0.0) as usize;
    let limit = i64::try_from(wanted.min(affordable)).unwrap_or(0);
    let interval_ms = millis(interval);
    let due: Vec<(String, String)> = if limit == 0 {
        Vec::new()
    } else {
        sqlx::query_as(
            "UPDATE meeting_checks c SET next_check_at = now() + $2 * interval '1 millisecond'
             FROM meetings m
             WHERE m.room_sid = c.room_sid AND c.room_sid IN (
                 SELECT room_sid FROM meeting_checks WHERE next_check_at <= now()
                 ORDER BY next_check_at LIMIT $1 FOR UPDATE SKIP LOCKED)
             RETURNING c.room_sid, m.room_name",
        )
        .bind(limit)
        .bind(interval_ms)
        .fetch_all(&mut *tx)
        .await?
    };
    sqlx::query("UPDATE reconcile_budget SET tokens = $1, drawn_at = now()")
        .bind(available - due.len() as f64 * CALLS_PER_CHECK)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(due.into_iter().map(|(room_sid, room_name)| DueMeeting { room_sid, room_name }).collect())
}

/// Gives back a call a check did not make (LiveKit said at once that the room is gone).
pub async fn refund_call(pool: &PgPool) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE reconcile_budget SET tokens = tokens + 1").execute(pool).await?;
    Ok(())
}

/// What applying a check changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Applied {
    pub cycles_closed: usize,
    pub cycles_opened: usize,
    pub meeting_ended: bool,
}

/// Applies what LiveKit answered to a check of a meeting sent at `checked_at_ms`: under the
/// meeting's lock, if the meeting is still running, decides ([`reconciliation::reconcile`]),
/// records the estimates, recomputes the participants and the span, and writes the meeting's
/// report if it changed. Returns `None` when the meeting was no longer running.
pub async fn apply_check(
    pool: &PgPool,
    room_sid: &str,
    checked_at_ms: i64,
    answer: &RoomAnswer,
    policy: &Policy,
) -> Result<Option<Applied>, sqlx::Error> {
    // The estimates name people: not while one is being erased.
    let mut tx = lifecycle::begin_holding_off_erasures(pool).await?;
    let this_meeting = BTreeSet::from([room_sid.to_owned()]);
    let locked = meetings::lock_meetings(&mut tx, &this_meeting, &BTreeSet::new()).await?;
    if locked.is_empty() || !locked.sealed.is_empty() {
        return Ok(None);
    }
    let Some((room_name, known)) = load_known(&mut tx, room_sid).await? else {
        sqlx::query("DELETE FROM meeting_checks WHERE room_sid = $1").bind(room_sid).execute(&mut *tx).await?;
        tx.commit().await?;
        return Ok(None);
    };
    let decision = reconciliation::reconcile(&known, checked_at_ms, answer);
    let applied = write_decision(&mut tx, room_sid, &room_name, checked_at_ms, &decision, policy).await?;
    tx.commit().await?;
    Ok(Some(applied))
}

/// The meeting's room name and what is known of it, if it is still running.
async fn load_known(conn: &mut PgConnection, room_sid: &str) -> Result<Option<(String, Known)>, sqlx::Error> {
    type MeetingRow =
        (String, Option<OffsetDateTime>, Option<OffsetDateTime>, Option<Vec<String>>, Option<OffsetDateTime>);
    let meeting: Option<MeetingRow> = sqlx::query_as(
        "SELECT m.room_name, m.started_at, c.listed_at, c.listed_sids,
                (SELECT max(y.left_at) FROM cycles y WHERE y.room_sid = m.room_sid)
         FROM meetings m LEFT JOIN meeting_checks c USING (room_sid)
         WHERE m.room_sid = $1 AND m.ended_at IS NULL AND m.started_at IS NOT NULL",
    )
    .bind(room_sid)
    .fetch_optional(&mut *conn)
    .await?;
    let Some((room_name, started_at, listed_at, listed_sids, latest_left)) = meeting else { return Ok(None) };
    let open: Vec<(String, String, OffsetDateTime, Option<OffsetDateTime>)> = sqlx::query_as(
        "SELECT c.identity, c.participant_sid, c.joined_at, h.last_heartbeat_at FROM cycles c
         LEFT JOIN meeting_heartbeats h USING (room_sid, identity)
         WHERE c.room_sid = $1 AND c.left_at IS NULL",
    )
    .bind(room_sid)
    .fetch_all(&mut *conn)
    .await?;
    let sessions: Vec<(String, bool)> = sqlx::query_as(
        "SELECT participant_sid, false FROM cycles WHERE room_sid = $1
         UNION SELECT participant_sid, false FROM participant_listings WHERE room_sid = $1
         UNION SELECT participant_sid, true FROM cycle_closures WHERE room_sid = $1 AND closed_by = 'reconciled'",
    )
    .bind(room_sid)
    .fetch_all(&mut *conn)
    .await?;
    let known = Known {
        previous_check_ms: listed_at.map(unix_ms),
        previously_listed: listed_sids.unwrap_or_default().into_iter().collect(),
        open_cycles: open
            .into_iter()
            .map(|(identity, participant_sid, joined_at, heartbeat)| OpenCycle {
                identity,
                participant_sid,
                joined_at_ms: unix_ms(joined_at),
                last_heartbeat_ms: heartbeat.map(unix_ms),
            })
            .collect(),
        known_sessions: sessions.iter().map(|(sid, _)| sid.clone()).collect(),
        reconciled_sessions: sessions.into_iter().filter(|(_, reconciled)| *reconciled).map(|(sid, _)| sid).collect(),
        started_at_ms: started_at.map(unix_ms),
        latest_left_ms: latest_left.map(unix_ms),
    };
    Ok(Some((room_name, known)))
}

async fn write_decision(
    conn: &mut PgConnection,
    room_sid: &str,
    room_name: &str,
    checked_at_ms: i64,
    decision: &Decision,
    policy: &Policy,
) -> Result<Applied, sqlx::Error> {
    let cause = || Cause::named("reconciliation");
    let mut participants: BTreeMap<ParticipantKey, Cause> = BTreeMap::new();
    for closing in &decision.closings {
        closures::record_closure(
            conn,
            room_sid,
            &closing.identity,
            &closing.participant_sid,
            ClosedBy::Reconciled,
            closing.at_ms,
        )
        .await?;
        participants.insert(ParticipantKey::new(room_sid, closing.identity.as_str()), cause());
    }
    for identity in closures::withdraw(conn, room_sid, &decision.relisted, ClosedBy::Reconciled).await? {
        participants.insert(ParticipantKey::new(room_sid, identity), cause());
    }
    record_listings(conn, room_sid, room_name, checked_at_ms, &decision.openings).await?;
    for (participant, _) in &decision.openings {
        participants.insert(ParticipantKey::new(room_sid, participant.identity.as_str()), cause());
    }
    recompute::recompute_participants(conn, &participants).await?;
    let this_meeting = BTreeSet::from([room_sid.to_owned()]);
    match decision.meeting_ended_at_ms {
        Some(ended_at_ms) => {
            meetings::record_inferred_end(conn, room_sid, ended_at_ms).await?;
            sqlx::query("DELETE FROM meeting_checks WHERE room_sid = $1").bind(room_sid).execute(&mut *conn).await?;
        }
        None => {
            let listed: Vec<&str> = decision.listed.iter().map(String::as_str).collect();
            sqlx::query("UPDATE meeting_checks SET listed_at = $2, listed_sids = $3 WHERE room_sid = $1")
                .bind(room_sid)
                .bind(timestamp(checked_at_ms))
                .bind(&listed)
                .execute(&mut *conn)
                .await?;
        }
    }
    let changed = !participants.is_empty() || decision.meeting_ended_at_ms.is_some();
    if changed {
        recompute::recompute_spans(conn, &this_meeting).await?;
        let meetings = BTreeMap::from([(room_sid.to_owned(), cause())]);
        report_outbox::record_changes(conn, &meetings, policy, crate::domain::time::now_unix_ms()).await?;
    }
    Ok(Applied {
        cycles_closed: decision.closings.len(),
        cycles_opened: decision.openings.len(),
        meeting_ended: decision.meeting_ended_at_ms.is_some(),
    })
}

/// Records sessions LiveKit listed with no cycle; a session already recorded keeps its first
/// listing.
async fn record_listings(
    conn: &mut PgConnection,
    room_sid: &str,
    room_name: &str,
    listed_at_ms: i64,
    openings: &[(ParticipantInfo, i64)],
) -> Result<(), sqlx::Error> {
    if openings.is_empty() {
        return Ok(());
    }
    let column = |f: fn(&ParticipantInfo) -> &str| openings.iter().map(|(p, _)| f(p)).collect::<Vec<&str>>();
    let joined: Vec<OffsetDateTime> = openings.iter().map(|(_, at)| timestamp(*at)).collect();
    sqlx::query(
        "INSERT INTO participant_listings
             (room_sid, room_name, listed_at, identity, participant_sid, name, metadata, kind, joined_at)
         SELECT $1, $2, $3, * FROM unnest($4::text[], $5::text[], $6::text[], $7::text[], $8::text[],
                                          $9::timestamptz[])
         ON CONFLICT DO NOTHING",
    )
    .bind(room_sid)
    .bind(room_name)
    .bind(timestamp(listed_at_ms))
    .bind(column(|p| p.identity.as_str()))
    .bind(column(|p| p.sid.as_str()))
    .bind(column(|p| p.name.as_str()))
    .bind(column(|p| p.metadata.as_str()))
    .bind(column(|p| p.kind.as_str()))
    .bind(&joined)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// How many meetings are watched, and how many of them are overdue (due longer than `by` ago):
/// what tells an operator whether the budget keeps up.
pub async fn watched(pool: &PgPool, by: Duration) -> Result<(i64, i64), sqlx::Error> {
    sqlx::query_as(
        "SELECT count(*), count(*) FILTER (WHERE next_check_at < now() - $1 * interval '1 millisecond')
         FROM meeting_checks",
    )
    .bind(millis(by))
    .fetch_one(pool)
    .await
}
