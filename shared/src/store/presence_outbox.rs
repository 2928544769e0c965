//! The presence outbox (`presence_outbox`): a row for each flip of a participant's "present
//! now", written in the transaction that causes it (see [`super::recompute`]), then published
//! to NATS by the sweeper and deleted once JetStream acknowledged it. One [`PresenceChange`]
//! type is written and read here.
//!
//! Invariant: rows are published in id order (so in order per participant), by one publisher at
//! a time, which holds a transaction-scoped advisory lock while it publishes and deletes.

use sqlx::{PgConnection, PgPool, Row as _};
use time::OffsetDateTime;

use crate::domain::time::{timestamp, unix_ms};

/// Advisory lock key of the outbox publisher ("presence" in ASCII).
const PUBLISHER_LOCK: i64 = 0x7072_6573_656e_6365;

/// A participant whose "present now" flipped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresenceChange {
    pub room_name: String,
    /// The meeting whose attendance changed.
    pub room_sid: String,
    pub identity: String,
    pub present: bool,
    pub changed_at_ms: i64,
}

/// What caused a change: an event id (or `recompute`, `sweeper`) and the trace context to
/// continue when the change is published.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cause {
    pub event_id: String,
    pub traceparent: Option<String>,
}

impl Cause {
    pub fn named(event_id: &str) -> Self {
        Cause { event_id: event_id.to_owned(), traceparent: None }
    }
}

/// A row of the outbox, waiting to be published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxEntry {
    /// Increasing: the publishing order, and the published message's id.
    pub id: i64,
    pub change: PresenceChange,
    /// The cause's trace context.
    pub traceparent: Option<String>,
}

/// Adds changes to the outbox, in the order given (the ids follow it), in one statement.
pub async fn append(conn: &mut PgConnection, changes: &[(PresenceChange, &Cause)]) -> Result<(), sqlx::Error> {
    if changes.is_empty() {
        return Ok(());
    }
    let rooms: Vec<&str> = changes.iter().map(|(c, _)| c.room_name.as_str()).collect();
    let room_sids: Vec<&str> = changes.iter().map(|(c, _)| c.room_sid.as_str()).collect();
    let identities: Vec<&str> = changes.iter().map(|(c, _)| c.identity.as_str()).collect();
    let event_ids: Vec<&str> = changes.iter().map(|(_, cause)| cause.event_id.as_str()).collect();
    let present: Vec<bool> = changes.iter().map(|(c, _)| c.present).collect();
    let changed_at: Vec<OffsetDateTime> = changes.iter().map(|(c, _)| timestamp(c.changed_at_ms)).collect();
    let traceparents: Vec<Option<&str>> = changes.iter().map(|(_, cause)| cause.traceparent.as_deref()).collect();
    sqlx::query(
        "INSERT INTO presence_outbox (room_name, identity, present, changed_at, event_id, traceparent, room_sid)
         SELECT room_name, identity, present, changed_at, event_id, traceparent, room_sid
         FROM unnest($1::text[], $2::text[], $3::bool[], $4::timestamptz[], $5::text[], $6::text[], $7::text[])
              WITH ORDINALITY AS c (room_name, identity, present, changed_at, event_id, traceparent, room_sid, n)
         ORDER BY n",
    )
    .bind(&rooms)
    .bind(&identities)
    .bind(&present)
    .bind(&changed_at)
    .bind(&event_ids)
    .bind(&traceparents)
    .bind(&room_sids)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Takes the publisher's lock for the caller's transaction; `false` when another publisher
/// holds it (the caller then leaves the outbox alone).
pub async fn try_lock_publisher(conn: &mut PgConnection) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1)").bind(PUBLISHER_LOCK).fetch_one(&mut *conn).await
}

/// The oldest `limit` rows, in id order.
pub async fn oldest(conn: &mut PgConnection, limit: i64) -> Result<Vec<OutboxEntry>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT id, room_name, room_sid, identity, present, changed_at, traceparent FROM presence_outbox
         ORDER BY id LIMIT $1",
    )
    .bind(limit)
    .fetch_all(&mut *conn)
    .await?;
    rows.into_iter()
        .map(|row| {
            Ok(OutboxEntry {
                id: row.try_get("id")?,
                change: PresenceChange {
                    room_name: row.try_get("room_name")?,
                    // Rows written before meetings existed have none.
                    room_sid: row.try_get::<Option<String>, _>("room_sid")?.unwrap_or_default(),
                    identity: row.try_get("identity")?,
                    present: row.try_get("present")?,
                    changed_at_ms: unix_ms(row.try_get("changed_at")?),
                },
                traceparent: row.try_get("traceparent")?,
            })
        })
        .collect()
}

/// Deletes published rows.
pub async fn delete(conn: &mut PgConnection, ids: &[i64]) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM presence_outbox WHERE id = ANY($1)").bind(ids).execute(&mut *conn).await?;
    Ok(())
}

/// Rows waiting in the outbox.
pub async fn pending(pool: &PgPool) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT count(*) FROM presence_outbox").fetch_one(pool).await
}
