//! Publishing presence: the presence outbox ([`shared::store::presence_outbox`]) is published
//! to NATS in id order (so in order per participant), at least once, de-duplicated by the outbox
//! id, and its rows deleted once JetStream acknowledged them. One replica publishes at a time,
//! under the outbox's transaction-scoped lock.

use std::time::Duration;

use shared::domain::time::rfc3339_ms;
use shared::nats::PublishError;
use shared::nats::presence::{PresenceMessage, PresenceStream};
use shared::store::presence_outbox::{self, OutboxEntry};
use sqlx::PgPool;

#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Publish(#[from] PublishError),
}

/// The message published for an outbox row.
fn message_of(entry: &OutboxEntry) -> PresenceMessage {
    PresenceMessage {
        id: entry.id,
        room: entry.change.room_name.clone(),
        room_sid: entry.change.room_sid.clone(),
        identity: entry.change.identity.clone(),
        present: entry.change.present,
        changed_at: rfc3339_ms(entry.change.changed_at_ms),
    }
}

/// Publishes up to `batch` changes; returns how many (0 when another replica holds the lock).
pub async fn publish_batch(pool: &PgPool, presence: &PresenceStream, batch: i64) -> Result<usize, OutboxError> {
    let mut tx = pool.begin().await?;
    if !presence_outbox::try_lock_publisher(&mut tx).await? {
        return Ok(0);
    }
    let entries = presence_outbox::oldest(&mut tx, batch).await?;
    if entries.is_empty() {
        return Ok(0);
    }
    let messages: Vec<(PresenceMessage, Option<String>)> =
        entries.iter().map(|entry| (message_of(entry), entry.traceparent.clone())).collect();
    presence.publish_all(&messages, Duration::from_secs(5)).await?;
    let ids: Vec<i64> = entries.iter().map(|entry| entry.id).collect();
    presence_outbox::delete(&mut tx, &ids).await?;
    tx.commit().await?;
    Ok(entries.len())
}
