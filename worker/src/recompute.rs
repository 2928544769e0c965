//! `worker recompute`: rebuilds attendance from the event log, for the meetings of one room name
//! or of all; and, at start-up, the meetings a migration marked for rebuilding. Safe while
//! workers run: each meeting is recomputed under its lock, like any event.

use std::collections::{BTreeMap, BTreeSet};

use shared::domain::policy::Policy;
use shared::domain::time::now_unix_ms;
use shared::store::presence_outbox::Cause;
use shared::store::recompute;
use shared::store::{meetings, report_outbox};
use sqlx::PgPool;

/// What a recompute did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Recomputed {
    /// Participants recomputed, counted per meeting.
    pub participants: usize,
    /// Sealed meetings (their events deleted after the retention), left as they are.
    pub sealed_skipped: usize,
}

/// Recomputes every meeting of `room` (or of every room name).
pub async fn recompute(pool: &PgPool, room: Option<&str>, policy: &Policy) -> Result<Recomputed, sqlx::Error> {
    let room_sids = meetings::room_sids(pool, room).await?;
    rebuild(pool, &room_sids, policy).await
}

/// Rebuilds the meetings a migration marked (`needs_recompute`).
pub async fn rebuild_pending(pool: &PgPool, policy: &Policy) -> Result<Recomputed, sqlx::Error> {
    let room_sids = meetings::needing_recompute(pool).await?;
    if !room_sids.is_empty() {
        tracing::info!(meetings = room_sids.len(), "rebuilding meetings from the event log");
    }
    rebuild(pool, &room_sids, policy).await
}

/// Rebuilds each meeting and reports what changed in it (an ended meeting whose figures moved
/// is an update for the platform).
async fn rebuild(pool: &PgPool, room_sids: &[String], policy: &Policy) -> Result<Recomputed, sqlx::Error> {
    let mut done = Recomputed::default();
    for room_sid in room_sids {
        let mut tx = pool.begin().await?;
        meetings::lock_meetings(&mut tx, &BTreeSet::from([room_sid.clone()]), &BTreeSet::new()).await?;
        match recompute::recompute_meeting(&mut tx, room_sid, &Cause::named("recompute")).await? {
            Some(participants) => {
                let changed = BTreeMap::from([(room_sid.clone(), Cause::named("recompute"))]);
                report_outbox::record_changes(&mut tx, &changed, policy, now_unix_ms()).await?;
                done.participants += participants;
                tracing::info!(room_sid, "meeting recomputed");
            }
            None => {
                done.sealed_skipped += 1;
                tracing::info!(room_sid, "meeting sealed (its events are past the retention): left as it is");
            }
        }
        tx.commit().await?;
    }
    Ok(done)
}
