//! Reconciliation with the LiveKit server: every running meeting is checked, about once per
//! `RECONCILE_INTERVAL`, against LiveKit's own list of its room's participants
//! ([`shared::domain::reconciliation`] decides what the answer means;
//! [`shared::store::reconciliation`] claims the meetings due and applies the answers).
//!
//! A check asks `ListParticipants` for the room name, then `ListRooms` to confirm that the room
//! is still this meeting's session (room names are reused; a `not_found` needs no second call).
//! LiveKit is never waited on with a database connection held, and this loop runs apart from the
//! sweep and the outboxes, so a slow LiveKit delays neither.
//!
//! Good citizenship: all sweepers together stay within `RECONCILE_MAX_RPS` (a token bucket in
//! PostgreSQL), each at most `RECONCILE_CONCURRENCY` checks at once, each call within
//! `RECONCILE_TIMEOUT`. While LiveKit answers errors (unreachable, time-outs, 5xx, a refused
//! token), this sweeper stops calling for an exponentially growing, jittered pause, says so once
//! in the log and in `sweeper_reconcile_paused`, and closes nothing; readiness is unaffected.

use std::time::{Duration, Instant};

use shared::domain::policy::Policy;
use shared::domain::reconciliation::RoomAnswer;
use shared::domain::time::now_unix_ms;
use shared::livekit::room_service::{RoomService, RoomServiceError};
use shared::store::reconciliation::{self, Applied, DueMeeting};
use sqlx::PgPool;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::metrics::{CallLabels, ClosedByLabel, MethodLabel, SweeperMetrics};

/// How often the loop looks for meetings due.
const TICK: Duration = Duration::from_millis(200);
/// The first pause after an error; each further error doubles it, up to the interval.
const FIRST_PAUSE: Duration = Duration::from_secs(1);
/// How often running meetings are looked for (a new meeting is first checked within this and one
/// interval), and the watched and overdue gauges refreshed.
const WATCH_EVERY: Duration = Duration::from_secs(2);

/// What the reconciliation loop needs.
pub struct Reconciler {
    pub service: RoomService,
    pub pool: PgPool,
    pub interval: Duration,
    pub max_rps: f64,
    pub concurrency: usize,
    pub policy: Policy,
    pub metrics: SweeperMetrics,
}

/// Whether LiveKit has been answering: errors in a row, and the pause they called for.
#[derive(Default)]
struct Health {
    failures: u32,
    paused_until: Option<Instant>,
}

/// Why a check did not complete.
#[derive(Debug, thiserror::Error)]
enum CheckError {
    #[error(transparent)]
    LiveKit(#[from] RoomServiceError),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

impl Reconciler {
    /// Runs until `shutdown` is cancelled; the checks in flight finish first (each bounded by
    /// its calls' time-outs). Claims meetings at every tick, and as soon as a quarter of the
    /// slots are free again while meetings are due, so that the checks keep pace with the
    /// interval whatever LiveKit's latency.
    pub async fn run(self, shutdown: &CancellationToken) {
        let mut ticks = tokio::time::interval(TICK);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut in_flight: JoinSet<Result<Option<Applied>, CheckError>> = JoinSet::new();
        let mut health = Health::default();
        let mut watched_at: Option<Instant> = None;
        // Whether the last claim got all it asked for (more may be due before the next tick).
        let mut more_due = false;
        loop {
            let ticked = tokio::select! {
                () = shutdown.cancelled() => break,
                Some(done) = in_flight.join_next(), if !in_flight.is_empty() => {
                    self.handle(done, &mut health);
                    false
                }
                _ = ticks.tick() => true,
            };
            while let Some(done) = in_flight.try_join_next() {
                self.handle(done, &mut health);
            }
            if watched_at.is_none_or(|at| at.elapsed() >= WATCH_EVERY) {
                watched_at = Some(Instant::now());
                if let Err(error) = reconciliation::refresh_watched(&self.pool, self.interval).await {
                    tracing::warn!(%error, "looking for running meetings to reconcile failed; retried");
                }
                if let Ok((watched, overdue)) = reconciliation::watched(&self.pool, self.interval / 2).await {
                    self.metrics.reconcile_meetings_watched.set(watched);
                    self.metrics.reconcile_meetings_overdue.set(overdue);
                }
            }
            if health.paused_until.is_some_and(|until| Instant::now() < until) {
                continue;
            }
            health.paused_until = None;
            // One check at a time while LiveKit is being probed after errors.
            let room = if health.failures > 0 { 1 } else { self.concurrency };
            let free = room.saturating_sub(in_flight.len());
            // A claim is a transaction: at a tick, or for a quarter of the slots at least.
            let worth_a_claim = ticked || (more_due && free >= (room / 4).max(1));
            if free == 0 || !worth_a_claim {
                continue;
            }
            let due = match reconciliation::claim_due(&self.pool, self.interval, self.max_rps, free).await {
                Ok(due) => due,
                Err(error) => {
                    self.metrics.failed_rounds.inc();
                    tracing::warn!(%error, "claiming meetings to reconcile failed; retried");
                    continue;
                }
            };
            more_due = due.len() == free;
            for meeting in due {
                let check = Check {
                    service: self.service.clone(),
                    pool: self.pool.clone(),
                    policy: self.policy,
                    metrics: self.metrics.clone(),
                };
                in_flight.spawn(async move { check.run(meeting).await });
            }
        }
        while in_flight.join_next().await.is_some() {}
    }

    /// Counts a finished check; errors of LiveKit itself pause the calls.
    fn handle(&self, done: Result<Result<Option<Applied>, CheckError>, tokio::task::JoinError>, health: &mut Health) {
        match done {
            Ok(Ok(applied)) => {
                if health.failures > 0 {
                    tracing::info!(after_errors = health.failures, "LiveKit answers again; reconciliation resumed");
                    self.metrics.reconcile_paused.set(0);
                }
                health.failures = 0;
                self.count(applied);
            }
            Ok(Err(CheckError::LiveKit(error))) if pauses(&error) => {
                health.failures = health.failures.saturating_add(1);
                let pause = self.pause_after(health.failures);
                if health.paused_until.is_none_or(|until| until < Instant::now() + pause) {
                    health.paused_until = Some(Instant::now() + pause);
                }
                if health.failures == 1 {
                    tracing::warn!(%error, "LiveKit answers errors; reconciliation paused, nothing is closed");
                }
                tracing::debug!(%error, ?pause, failures = health.failures, "reconciliation paused");
                self.metrics.reconcile_paused.set(1);
            }
            Ok(Err(error)) => tracing::warn!(%error, "a reconciliation check failed; retried next interval"),
            Err(panic) => tracing::error!(%panic, "a reconciliation check panicked"),
        }
    }

    /// The pause after `failures` errors in a row: doubling from [`FIRST_PAUSE`] up to the
    /// interval, each drawn between half and all of it.
    fn pause_after(&self, failures: u32) -> Duration {
        let ceiling = FIRST_PAUSE.saturating_mul(1 << failures.saturating_sub(1).min(16)).min(self.interval);
        ceiling.mul_f64(0.5 + fastrand::f64() * 0.5)
    }

    fn count(&self, applied: Option<Applied>) {
        let Some(applied) = applied else { return };
        self.metrics
            .cycles_closed
            .get_or_create(&ClosedByLabel { closed_by: "reconciled" })
            .inc_by(applied.cycles_closed as u64);
        self.metrics.reconcile_cycles_opened.inc_by(applied.cycles_opened as u64);
        if applied.meeting_ended {
            self.metrics.reconcile_meetings_ended.inc();
        }
    }
}

/// Whether an error says LiveKit cannot answer now (rather than about this one room).
fn pauses(error: &RoomServiceError) -> bool {
    match error {
        RoomServiceError::Twirp { status, .. } => *status >= 500 || matches!(status, 401 | 403 | 429),
        RoomServiceError::Call(_) | RoomServiceError::InvalidAnswer(_) => true,
    }
}

/// One meeting's check.
struct Check {
    service: RoomService,
    pool: PgPool,
    policy: Policy,
    metrics: SweeperMetrics,
}

impl Check {
    async fn run(self, meeting: DueMeeting) -> Result<Option<Applied>, CheckError> {
        let checked_at_ms = now_unix_ms();
        let now = checked_at_ms / 1000;
        let started = Instant::now();
        let participants = self.service.list_participants(&meeting.room_name, now).await;
        self.record("ListParticipants", started, participants.as_ref().err());
        let answer = match participants {
            Err(error) if error.is_not_found() => {
                let _ = reconciliation::refund_call(&self.pool).await;
                RoomAnswer::Gone
            }
            Err(error) => return Err(error.into()),
            Ok(participants) => {
                let started = Instant::now();
                let rooms = self.service.list_rooms(&[meeting.room_name.as_str()], now).await;
                self.record("ListRooms", started, rooms.as_ref().err());
                if rooms?.iter().any(|room| room.sid == meeting.room_sid) {
                    RoomAnswer::Listed(participants)
                } else {
                    RoomAnswer::Gone
                }
            }
        };
        let applied =
            reconciliation::apply_check(&self.pool, &meeting.room_sid, checked_at_ms, &answer, &self.policy).await?;
        if let Some(applied) = &applied
            && (applied.cycles_closed > 0 || applied.cycles_opened > 0 || applied.meeting_ended)
        {
            tracing::info!(
                room_sid = meeting.room_sid,
                closed = applied.cycles_closed,
                opened = applied.cycles_opened,
                meeting_ended = applied.meeting_ended,
                "reconciled with the LiveKit server"
            );
        }
        Ok(applied)
    }

    fn record(&self, method: &'static str, started: Instant, error: Option<&RoomServiceError>) {
        let outcome = error.map_or("ok", RoomServiceError::outcome);
        self.metrics.livekit_calls.get_or_create(&CallLabels { method, outcome }).inc();
        self.metrics
            .livekit_call_duration
            .get_or_create(&MethodLabel { method })
            .observe(started.elapsed().as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_errors_about_livekit_itself_pause_the_calls() {
        let twirp = |status, code: &str| RoomServiceError::Twirp { status, code: code.into(), msg: String::new() };
        assert!(pauses(&twirp(503, "unavailable")));
        assert!(pauses(&twirp(401, "unauthenticated")));
        assert!(pauses(&twirp(401, "http_401")), "livekit-server's plain-text refusal of a token");
        assert!(pauses(&twirp(429, "resource_exhausted")));
        assert!(!pauses(&twirp(400, "invalid_argument")));
        assert!(!pauses(&twirp(404, "not_found")));
    }
}
