//! `worker recompute`: rebuilds attendance from the event log, for the meetings of one room name
//! or of all; and, at start-up, the meetings a migration marked for rebuilding. Safe while
//! workers run: each meeting is recomputed under its lock, like any event.

use std::collections::BTreeSet;

use shared::store::meetings;
use shared::store::presence_outbox::Cause;
use shared::store::recompute;
use sqlx::PgPool;

/// Recomputes every meeting of `room` (or of every room name); returns how many participants
/// (per meeting) were recomputed.
pub async fn recompute(pool: &PgPool, room: Option<&str>) -> Result<usize, sqlx::Error> {
    let room_sids = meetings::room_sids(pool, room).await?;
    rebuild(pool, &room_sids).await
}

/// Rebuilds the meetings a migration marked (`needs_recompute`); returns how many participants
/// were recomputed.
pub async fn rebuild_pending(pool: &PgPool) -> Result<usize, sqlx::Error> {
    let room_sids = meetings::needing_recompute(pool).await?;
    if !room_sids.is_empty() {
        tracing::info!(meetings = room_sids.len(), "rebuilding meetings from the event log");
    }
    rebuild(pool, &room_sids).await
}

async fn rebuild(pool: &PgPool, room_sids: &[String]) -> Result<usize, sqlx::Error> {
    let mut participants = 0;
    for room_sid in room_sids {
        let mut tx = pool.begin().await?;
        meetings::lock_meetings(&mut tx, &BTreeSet::from([room_sid.clone()]), &BTreeSet::new()).await?;
        participants += recompute::recompute_meeting(&mut tx, room_sid, &Cause::named("recompute")).await?;
        tx.commit().await?;
        tracing::info!(room_sid, "meeting recomputed");
    }
    Ok(participants)
}
