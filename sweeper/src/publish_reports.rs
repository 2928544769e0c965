//! Publishing meeting reports: the report outbox ([`shared::store::report_outbox`]) is published
//! to NATS in id order (so in order per meeting), at least once, de-duplicated by the report id,
//! and its rows deleted once JetStream acknowledged them. One replica publishes at a time, under
//! the outbox's transaction-scoped lock (as the presence outbox, [`crate::publish_presence`]).

use std::time::Duration;

use shared::nats::reports::{ReportMessage, ReportStream};
use shared::store::report_outbox;
use sqlx::PgPool;

use crate::publish_presence::OutboxError;

/// Publishes up to `batch` reports; returns how many (0 when another replica holds the lock).
pub async fn publish_batch(pool: &PgPool, reports: &ReportStream, batch: i64) -> Result<usize, OutboxError> {
    let mut tx = pool.begin().await?;
    if !report_outbox::try_lock_publisher(&mut tx).await? {
        return Ok(0);
    }
    let entries = report_outbox::oldest(&mut tx, batch).await?;
    if entries.is_empty() {
        return Ok(0);
    }
    let messages: Vec<(ReportMessage, Option<String>)> = entries
        .iter()
        .map(|entry| {
            let message = ReportMessage {
                id: entry.report_id.clone(),
                kind: entry.kind,
                room_sid: entry.room_sid.clone(),
                sequence: entry.sequence,
                body: entry.body.clone().into(),
            };
            (message, entry.traceparent.clone())
        })
        .collect();
    reports.publish_all(&messages, Duration::from_secs(5)).await?;
    let ids: Vec<i64> = entries.iter().map(|entry| entry.id).collect();
    report_outbox::delete(&mut tx, &ids).await?;
    tx.commit().await?;
    Ok(entries.len())
}
