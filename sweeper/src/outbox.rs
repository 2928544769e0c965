//! Publishing the presence outbox: the worker writes a row in the transaction that flips a
//! participant's presence; this publishes the rows in id order (so in order per participant),
//! at least once, de-duplicated by the outbox id, and deletes them once JetStream acknowledged.
//! One replica publishes at a time, under a transaction-scoped advisory lock.

use std::time::Duration;

use shared::presence::{PresenceChange, PresenceStream};
use shared::storage::{rfc3339_ms, unix_ms};
use sqlx::PgPool;
use time::OffsetDateTime;

/// Advisory lock key of the outbox publisher ("presence" in ASCII).
const OUTBOX_LOCK: i64 = 0x7072_6573_656e_6365;

#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Publish(#[from] shared::stream::PublishError),
}

/// Publishes up to `batch` changes; returns how many (0 when another replica holds the lock).
pub async fn publish_batch(pool: &PgPool, presence: &PresenceStream, batch: i64) -> Result<usize, OutboxError> {
    let mut tx = pool.begin().await?;
    let locked: bool =
        sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1)").bind(OUTBOX_LOCK).fetch_one(&mut *tx).await?;
    if !locked {
        return Ok(0);
    }
    let rows: Vec<(i64, String, String, bool, OffsetDateTime, Option<String>)> = sqlx::query_as(
        "SELECT id, room_name, identity, present, changed_at, traceparent FROM presence_outbox ORDER BY id LIMIT $1",
    )
    .bind(batch)
    .fetch_all(&mut *tx)
    .await?;
    if rows.is_empty() {
        return Ok(0);
    }
    let changes: Vec<(PresenceChange, Option<String>)> = rows
        .into_iter()
        .map(|(id, room, identity, present, changed_at, traceparent)| {
            let change = PresenceChange { id, room, identity, present, changed_at: rfc3339_ms(unix_ms(changed_at)) };
            (change, traceparent)
        })
        .collect();
    presence.publish_all(&changes, Duration::from_secs(5)).await?;
    let ids: Vec<i64> = changes.iter().map(|(change, _)| change.id).collect();
    sqlx::query("DELETE FROM presence_outbox WHERE id = ANY($1)").bind(&ids).execute(&mut *tx).await?;
    tx.commit().await?;
    Ok(changes.len())
}

/// Rows waiting in the outbox.
pub async fn pending(pool: &PgPool) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT count(*) FROM presence_outbox").fetch_one(pool).await
}
