//! Closing stale cycles: what counts as stale is [`shared::store::closures`]; this decides how
//! each stale cycle ends, records it as an estimate under the meeting's lock, and recomputes the
//! participant, so the rule decides and a later participant_left replaces the estimate.

use std::collections::{BTreeMap, BTreeSet};

use std::time::Duration;

use shared::domain::attendance::ClosedBy;
use shared::domain::meeting::{self, RoomTimeouts};
use shared::domain::policy::Policy;
use shared::domain::time::millis;
use shared::store::closures::{self, StaleCycle, Staleness};
use shared::store::presence_outbox::Cause;
use shared::store::recompute::{self, ParticipantKey};
use shared::store::{lifecycle, meetings, report_outbox};
use sqlx::PgPool;

/// What one sweep did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Swept {
    pub heartbeat_timeouts: usize,
    pub max_durations: usize,
}

/// How a stale cycle ends: at its last heartbeat if the heartbeats stopped, else at the maximum
/// duration after it began.
pub fn closure_of(cycle: &StaleCycle, staleness: &Staleness) -> (ClosedBy, i64) {
    let stale_heartbeat = cycle
        .last_heartbeat_ms
        .filter(|&heartbeat| heartbeat < staleness.heartbeat_stale_before_ms() && cycle.joined_at_ms <= heartbeat);
    match stale_heartbeat {
        Some(heartbeat) => (ClosedBy::HeartbeatTimeout, heartbeat),
        None => (ClosedBy::MaxDuration, cycle.joined_at_ms + millis(staleness.max_duration)),
    }
}

/// Closes the stale cycles. A meeting another replica (or a worker) holds is left for the next
/// round.
pub async fn sweep(pool: &PgPool, staleness: &Staleness, policy: &Policy) -> Result<Swept, sqlx::Error> {
    let mut swept = Swept::default();
    for room_sid in closures::meetings_with_stale_cycles(pool, staleness).await? {
        let this_meeting = BTreeSet::from([room_sid.clone()]);
        // The closures name a person: not while one is being erased.
        let mut tx = lifecycle::begin_holding_off_erasures(pool).await?;
        if meetings::lock_meetings(&mut tx, &BTreeSet::new(), &this_meeting).await?.is_empty() {
            continue;
        }
        // Found again under the lock: a worker or another sweeper may have changed the meeting.
        let mut participants = BTreeMap::new();
        for cycle in closures::stale_cycles(&mut tx, &room_sid, staleness).await? {
            let (closed_by, closed_at_ms) = closure_of(&cycle, staleness);
            closures::record_closure(
                &mut tx,
                &room_sid,
                &cycle.identity,
                &cycle.participant_sid,
                closed_by,
                closed_at_ms,
            )
            .await?;
            match closed_by {
                ClosedBy::HeartbeatTimeout => swept.heartbeat_timeouts += 1,
                _ => swept.max_durations += 1,
            }
            tracing::info!(
                room_sid,
                identity = cycle.identity,
                participant_sid = cycle.participant_sid,
                closed_by = closed_by.as_str(),
                "cycle closed by the sweeper"
            );
            participants.insert(ParticipantKey::new(room_sid.as_str(), cycle.identity), Cause::named("sweeper"));
        }
        recompute::recompute_participants(&mut tx, &participants).await?;
        let changed = BTreeMap::from([(room_sid.clone(), Cause::named("sweeper"))]);
        report_outbox::record_changes(&mut tx, &changed, policy, staleness.now_ms).await?;
        tx.commit().await?;
    }
    Ok(swept)
}

/// Ends the meetings LiveKit should have closed more than `margin` ago (nobody in them past the
/// room's departure or empty timeout) but whose room_finished never came: an inferred end, at
/// the time LiveKit would have closed the room. A late room_finished replaces it; a later join
/// or leave withdraws it. A meeting another replica holds is left for the next round. Returns how
/// many meetings were ended.
pub async fn end_idle_meetings(
    pool: &PgPool,
    now_ms: i64,
    margin: Duration,
    policy: &Policy,
) -> Result<usize, sqlx::Error> {
    let due = |started_at_ms: i64, latest_left_ms: Option<i64>, timeouts: RoomTimeouts| {
        let close = meeting::expected_close_ms(started_at_ms, latest_left_ms, timeouts);
        (close + millis(margin) < now_ms).then_some(close)
    };
    let mut ended = 0;
    for idle in meetings::idle_meetings(pool, now_ms - millis(margin)).await? {
        if due(idle.started_at_ms, idle.latest_left_ms, idle.timeouts).is_none() {
            continue;
        }
        let mut tx = pool.begin().await?;
        let this_meeting = BTreeSet::from([idle.room_sid.clone()]);
        if meetings::lock_meetings(&mut tx, &BTreeSet::new(), &this_meeting).await?.is_empty() {
            continue;
        }
        // Checked again under the lock: a worker may have applied a join or the room_finished.
        let Some(idle) = meetings::idle_meeting(&mut tx, &idle.room_sid).await? else { continue };
        let Some(close_ms) = due(idle.started_at_ms, idle.latest_left_ms, idle.timeouts) else { continue };
        meetings::record_inferred_end(&mut tx, &idle.room_sid, close_ms).await?;
        recompute::recompute_spans(&mut tx, &this_meeting).await?;
        let changed = BTreeMap::from([(idle.room_sid.clone(), Cause::named("sweeper"))]);
        report_outbox::record_changes(&mut tx, &changed, policy, now_ms).await?;
        tx.commit().await?;
        tracing::info!(room_sid = idle.room_sid, ended_at_ms = close_ms, "meeting end inferred (no room_finished)");
        ended += 1;
    }
    Ok(ended)
}

/// Deletes the events of meetings that ended before `ended_before_ms` (past the retention), up to
/// `batch` per meeting a round, sealing each first: its attendance stays as it is and is never
/// recomputed. A meeting another replica holds is left for the next round. Returns how many
/// events were deleted.
pub async fn purge_expired(pool: &PgPool, ended_before_ms: i64, batch: i64) -> Result<u64, sqlx::Error> {
    let mut deleted = 0;
    for room_sid in lifecycle::expired_meetings(pool, ended_before_ms).await? {
        let mut tx = pool.begin().await?;
        let this_meeting = BTreeSet::from([room_sid.clone()]);
        if meetings::lock_meetings(&mut tx, &BTreeSet::new(), &this_meeting).await?.is_empty() {
            continue;
        }
        let purged = lifecycle::purge_meeting(&mut tx, &room_sid, batch).await?;
        tx.commit().await?;
        tracing::info!(room_sid, events = purged, "events past the retention deleted; meeting sealed");
        deleted += purged;
    }
    Ok(deleted)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: i64 = 60_000;

    fn cycle(joined_at_ms: i64, last_heartbeat_ms: Option<i64>) -> StaleCycle {
        StaleCycle { identity: "ada".into(), participant_sid: "PA_1".into(), joined_at_ms, last_heartbeat_ms }
    }

    #[test]
    fn a_cycle_ends_at_its_last_stale_heartbeat_else_at_the_maximum() {
        let staleness = Staleness {
            now_ms: 100 * MINUTE,
            heartbeat_timeout: Duration::from_secs(300),
            max_duration: Duration::from_secs(3600),
        };
        assert_eq!(
            closure_of(&cycle(10 * MINUTE, Some(20 * MINUTE)), &staleness),
            (ClosedBy::HeartbeatTimeout, 20 * MINUTE)
        );
        // A heartbeat from before the cycle began says nothing about it.
        assert_eq!(
            closure_of(&cycle(30 * MINUTE, Some(20 * MINUTE)), &staleness),
            (ClosedBy::MaxDuration, 90 * MINUTE)
        );
        // A fresh heartbeat: only the maximum can have made it stale.
        assert_eq!(
            closure_of(&cycle(30 * MINUTE, Some(99 * MINUTE)), &staleness),
            (ClosedBy::MaxDuration, 90 * MINUTE)
        );
        assert_eq!(closure_of(&cycle(30 * MINUTE, None), &staleness), (ClosedBy::MaxDuration, 90 * MINUTE));
    }
}
