//! Closing stale cycles: what counts as stale is [`shared::store::closures`]; this decides how
//! each stale cycle ends, records it as an estimate under the meeting's lock, and recomputes the
//! participant, so the rule decides and a later participant_left replaces the estimate.

use std::collections::{BTreeMap, BTreeSet};

use shared::domain::attendance::ClosedBy;
use shared::domain::time::millis;
use shared::store::closures::{self, StaleCycle, Staleness};
use shared::store::meetings;
use shared::store::presence_outbox::Cause;
use shared::store::recompute::{self, ParticipantKey};
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
pub async fn sweep(pool: &PgPool, staleness: &Staleness) -> Result<Swept, sqlx::Error> {
    let mut swept = Swept::default();
    for room_sid in closures::meetings_with_stale_cycles(pool, staleness).await? {
        let this_meeting = BTreeSet::from([room_sid.clone()]);
        let mut tx = pool.begin().await?;
        if meetings::lock_meetings(&mut tx, &BTreeSet::new(), &this_meeting).await?.is_empty() {
            continue;
        }
        // Found again under the lock: a worker or another sweeper may have changed the meeting.
        let mut participants = BTreeMap::new();
        for cycle in closures::stale_cycles(&mut tx, &room_sid, staleness).await? {
            let (closed_by, closed_at_ms) = closure_of(&cycle, staleness);
            closures::record_closure(&mut tx, &room_sid, &cycle, closed_by, closed_at_ms).await?;
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
        tx.commit().await?;
    }
    Ok(swept)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

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
