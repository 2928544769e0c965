//! The data lifecycle: retention (the events of meetings that ended longer ago than the retention
//! are deleted in small batches; the meeting's attendance stays, sealed) and erasure (a person's
//! data deleted on request, recorded without personal data so that their old events, replayed,
//! are refused).
//!
//! Invariants: a sealed meeting is never recomputed (its events are gone, the stored attendance
//! is all there is), and an event of a sealed meeting or of an erased identity is never stored
//! again.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use sha2::{Digest as _, Sha256};
use sqlx::{PgConnection, PgPool};

use super::meetings;
use super::recompute;
use crate::domain::time::timestamp;

/// Advisory lock key that orders erasures with everything that writes a person's rows
/// ("erasure" in ASCII).
const ERASURE_LOCK: i64 = 0x0065_7261_7375_7265;

/// `BEGIN` with the shared erasure lock, sent as one simple query (the key is [`ERASURE_LOCK`]).
const BEGIN_HOLDING_OFF_ERASURES: &str = "BEGIN; SELECT pg_advisory_xact_lock_shared(28554735522247269)";

/// Begins a transaction (a worker's batch, a sweep) that an erasure in progress holds off, and
/// that holds off an erasure: taken first, before the erasures are read, the lock guarantees
/// that a person erased is either erased before the transaction looks (and refused by it) or
/// after it committed (and its rows deleted). Shared: such transactions do not wait for each
/// other. One round trip with the BEGIN.
pub async fn begin_holding_off_erasures(
    pool: &PgPool,
) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, sqlx::Error> {
    pool.begin_with(BEGIN_HOLDING_OFF_ERASURES).await
}

/// The hex SHA-256 of an identity: what an erasure keeps of it.
pub fn identity_digest(identity: &str) -> String {
    use std::fmt::Write as _;
    Sha256::digest(identity.as_bytes()).iter().fold(String::with_capacity(64), |mut hex, b| {
        let _ = write!(hex, "{b:02x}");
        hex
    })
}

/// Meetings that ended before `ended_before_ms` and still have events (at most 100, oldest
/// first).
pub async fn expired_meetings(pool: &PgPool, ended_before_ms: i64) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT room_sid FROM meetings WHERE ended_at < $1 AND NOT purged ORDER BY ended_at LIMIT 100")
        .bind(timestamp(ended_before_ms))
        .fetch_all(pool)
        .await
}

/// Seals a meeting (locked by the caller's transaction) and deletes up to `batch` of its events.
/// Returns how many were deleted; the meeting is marked purged once none are left.
pub async fn purge_meeting(conn: &mut PgConnection, room_sid: &str, batch: i64) -> Result<u64, sqlx::Error> {
    sqlx::query("UPDATE meetings SET sealed_at = coalesce(sealed_at, now()) WHERE room_sid = $1")
        .bind(room_sid)
        .execute(&mut *conn)
        .await?;
    let deleted = sqlx::query(
        "DELETE FROM webhook_events WHERE ctid = ANY(ARRAY(SELECT ctid FROM webhook_events WHERE room_sid = $1 LIMIT $2))",
    )
    .bind(room_sid)
    .bind(batch)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if deleted < u64::try_from(batch).unwrap_or(u64::MAX) {
        // LiveKit's listings are facts like the events: they go with them.
        sqlx::query("DELETE FROM participant_listings WHERE room_sid = $1").bind(room_sid).execute(&mut *conn).await?;
        sqlx::query("UPDATE meetings SET purged = true WHERE room_sid = $1").bind(room_sid).execute(&mut *conn).await?;
    }
    Ok(deleted)
}

/// The sealed meetings among these.
pub async fn sealed_among(
    conn: &mut PgConnection,
    room_sids: &BTreeSet<String>,
) -> Result<BTreeSet<String>, sqlx::Error> {
    if room_sids.is_empty() {
        return Ok(BTreeSet::new());
    }
    let sids: Vec<&str> = room_sids.iter().map(String::as_str).collect();
    let sealed: Vec<String> =
        sqlx::query_scalar("SELECT room_sid FROM meetings WHERE room_sid = ANY($1) AND sealed_at IS NOT NULL")
            .bind(&sids)
            .fetch_all(&mut *conn)
            .await?;
    Ok(sealed.into_iter().collect())
}

/// Which of these (room name, identity) were erased (for that room, or for every room).
pub async fn erased_among(
    conn: &mut PgConnection,
    participants: &BTreeSet<(String, String)>,
) -> Result<BTreeSet<(String, String)>, sqlx::Error> {
    if participants.is_empty() {
        return Ok(BTreeSet::new());
    }
    let digests: BTreeMap<String, Vec<&(String, String)>> =
        participants.iter().fold(BTreeMap::new(), |mut by_digest, participant| {
            by_digest.entry(identity_digest(&participant.1)).or_insert_with(Vec::new).push(participant);
            by_digest
        });
    let keys: Vec<&str> = digests.keys().map(String::as_str).collect();
    let erasures: Vec<(String, Option<String>)> =
        sqlx::query_as("SELECT identity_sha256, room_name FROM erasures WHERE identity_sha256 = ANY($1)")
            .bind(&keys)
            .fetch_all(&mut *conn)
            .await?;
    let mut erased = BTreeSet::new();
    for (digest, room_name) in erasures {
        for participant in digests.get(&digest).into_iter().flatten() {
            if room_name.as_ref().is_none_or(|room| *room == participant.0) {
                erased.insert((*participant).clone());
            }
        }
    }
    Ok(erased)
}

/// What an erasure deleted, table by table.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ErasureCounts {
    pub events: u64,
    pub meeting_participants: u64,
    pub cycles: u64,
    pub heartbeats: u64,
    pub closures: u64,
    /// Sessions the LiveKit server listed (reconciliation's estimates of lost joins).
    pub listings: u64,
    pub presence_outbox: u64,
}

impl ErasureCounts {
    pub fn total(&self) -> u64 {
        self.events
            + self.meeting_participants
            + self.cycles
            + self.heartbeats
            + self.closures
            + self.listings
            + self.presence_outbox
    }
}

/// What erasing `identity` (in `room_name`, or everywhere) would delete, without locking.
pub async fn erasure_preview(
    pool: &PgPool,
    identity: &str,
    room_name: Option<&str>,
) -> Result<ErasureCounts, sqlx::Error> {
    let count = |sql: &'static str| sqlx::query_scalar::<_, i64>(sql).bind(identity).bind(room_name).fetch_one(pool);
    let n = |v: i64| u64::try_from(v).unwrap_or_default();
    Ok(ErasureCounts {
        events: n(count(
            "SELECT count(*) FROM webhook_events WHERE identity = $1 AND ($2::text IS NULL OR room_name = $2)",
        )
        .await?),
        meeting_participants: n(count(
            "SELECT count(*) FROM meeting_participants WHERE identity = $1 AND ($2::text IS NULL OR room_name = $2)",
        )
        .await?),
        cycles: n(count(
            "SELECT count(*) FROM cycles c JOIN meetings m USING (room_sid)
             WHERE c.identity = $1 AND ($2::text IS NULL OR m.room_name = $2)",
        )
        .await?),
        heartbeats: n(count(
            "SELECT count(*) FROM meeting_heartbeats h JOIN meetings m USING (room_sid)
             WHERE h.identity = $1 AND ($2::text IS NULL OR m.room_name = $2)",
        )
        .await?),
        closures: n(count(
            "SELECT count(*) FROM cycle_closures c JOIN meetings m USING (room_sid)
             WHERE c.identity = $1 AND ($2::text IS NULL OR m.room_name = $2)",
        )
        .await?),
        listings: n(count(
            "SELECT count(*) FROM participant_listings WHERE identity = $1 AND ($2::text IS NULL OR room_name = $2)",
        )
        .await?),
        presence_outbox: n(count(
            "SELECT count(*) FROM presence_outbox WHERE identity = $1 AND ($2::text IS NULL OR room_name = $2)",
        )
        .await?),
    })
}

/// Erases `identity` (in `room_name`, or everywhere) in one transaction: its events, attendance,
/// cycles, heartbeats, estimates, LiveKit's listings of it and presence changes, under the locks of its meetings; records
/// the erasure (who, when, counts; the identity only as a digest); recomputes the meetings'
/// spans (the person may have been the first to join). Returns what was deleted.
pub async fn erase_identity(
    pool: &PgPool,
    identity: &str,
    room_name: Option<&str>,
    erased_by: &str,
) -> Result<ErasureCounts, sqlx::Error> {
    let mut tx = pool.begin().await?;
    // Waits for the transactions writing now, then keeps new ones out until this commits.
    sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(ERASURE_LOCK).execute(&mut *tx).await?;
    let room_sids: BTreeSet<String> = sqlx::query_scalar::<_, String>(
        "SELECT room_sid FROM meeting_participants WHERE identity = $1 AND ($2::text IS NULL OR room_name = $2)
         UNION SELECT room_sid FROM webhook_events
         WHERE identity = $1 AND room_sid IS NOT NULL AND ($2::text IS NULL OR room_name = $2)
         UNION SELECT room_sid FROM participant_listings
         WHERE identity = $1 AND ($2::text IS NULL OR room_name = $2)",
    )
    .bind(identity)
    .bind(room_name)
    .fetch_all(&mut *tx)
    .await?
    .into_iter()
    .collect();
    // Locks the meetings that exist (events of a meeting never created have no row to lock).
    let locked = meetings::lock_meetings(&mut tx, &room_sids, &BTreeSet::new()).await?;

    let delete = |sql: &'static str| sqlx::query(sql).bind(identity).bind(room_name);
    // Cycles first: deleting the participants would take them along uncounted.
    let cycles = delete(
        "DELETE FROM cycles c USING meetings m
         WHERE c.room_sid = m.room_sid AND c.identity = $1 AND ($2::text IS NULL OR m.room_name = $2)",
    )
    .execute(&mut *tx)
    .await?
    .rows_affected();
    let meeting_participants =
        delete("DELETE FROM meeting_participants WHERE identity = $1 AND ($2::text IS NULL OR room_name = $2)")
            .execute(&mut *tx)
            .await?
            .rows_affected();
    let heartbeats = delete(
        "DELETE FROM meeting_heartbeats h USING meetings m
         WHERE h.room_sid = m.room_sid AND h.identity = $1 AND ($2::text IS NULL OR m.room_name = $2)",
    )
    .execute(&mut *tx)
    .await?
    .rows_affected();
    let closures = delete(
        "DELETE FROM cycle_closures c USING meetings m
         WHERE c.room_sid = m.room_sid AND c.identity = $1 AND ($2::text IS NULL OR m.room_name = $2)",
    )
    .execute(&mut *tx)
    .await?
    .rows_affected();
    let listings =
        delete("DELETE FROM participant_listings WHERE identity = $1 AND ($2::text IS NULL OR room_name = $2)")
            .execute(&mut *tx)
            .await?
            .rows_affected();
    let presence_outbox =
        delete("DELETE FROM presence_outbox WHERE identity = $1 AND ($2::text IS NULL OR room_name = $2)")
            .execute(&mut *tx)
            .await?
            .rows_affected();
    let events = delete("DELETE FROM webhook_events WHERE identity = $1 AND ($2::text IS NULL OR room_name = $2)")
        .execute(&mut *tx)
        .await?
        .rows_affected();
    let counts =
        ErasureCounts { events, meeting_participants, cycles, heartbeats, closures, listings, presence_outbox };
    sqlx::query("INSERT INTO erasures (identity_sha256, room_name, erased_by, counts) VALUES ($1, $2, $3, $4)")
        .bind(identity_digest(identity))
        .bind(room_name)
        .bind(erased_by)
        .bind(sqlx::types::Json(&counts))
        .execute(&mut *tx)
        .await?;
    let unsealed: BTreeSet<String> = locked.meetings.difference(&locked.sealed).cloned().collect();
    recompute::recompute_spans(&mut tx, &unsealed).await?;
    tx.commit().await?;
    Ok(counts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_begin_statement_takes_the_erasure_lock() {
        assert!(BEGIN_HOLDING_OFF_ERASURES.ends_with(&format!("({ERASURE_LOCK})")));
    }

    #[test]
    fn the_digest_is_hex_sha256() {
        assert_eq!(identity_digest(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
        assert_ne!(identity_digest("ada"), identity_digest("Ada"));
    }
}
