//! The sweeper's Prometheus metrics.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClosedByLabel {
    pub closed_by: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CallLabels {
    pub method: &'static str,
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MethodLabel {
    pub method: &'static str,
}

#[derive(Clone)]
pub struct SweeperMetrics {
    /// Cycles closed by the sweeper, by reason.
    pub cycles_closed: Family<ClosedByLabel, Counter>,
    /// Meetings ended by inference (their room_finished never came).
    pub meetings_ended: Counter,
    /// Events deleted past the retention (their meetings sealed).
    pub events_purged: Counter,
    /// Presence changes published to NATS.
    pub presence_published: Counter,
    /// Presence changes waiting in the outbox, as last seen.
    pub outbox_pending: Gauge,
    /// Meeting reports published to NATS.
    pub reports_published: Counter,
    /// Meeting reports waiting in their outbox, as last seen.
    pub report_outbox_pending: Gauge,
    /// Rounds that failed (database or NATS unavailable); retried next round.
    pub failed_rounds: Counter,
    /// Calls to the LiveKit server's RoomService, by method and outcome.
    pub livekit_calls: Family<CallLabels, Counter>,
    /// Their latency, by method.
    pub livekit_call_duration: Family<MethodLabel, Histogram>,
    /// Sessions LiveKit listed with no cycle, opened by reconciliation.
    pub reconcile_cycles_opened: Counter,
    /// Meetings reconciliation ended (LiveKit no longer had their room).
    pub reconcile_meetings_ended: Counter,
    /// 1 while reconciliation waits because LiveKit answered errors.
    pub reconcile_paused: Gauge,
    /// Running meetings reconciliation watches, and those overdue for their check.
    pub reconcile_meetings_watched: Gauge,
    pub reconcile_meetings_overdue: Gauge,
}

impl SweeperMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = SweeperMetrics {
            cycles_closed: Family::default(),
            meetings_ended: Counter::default(),
            events_purged: Counter::default(),
            presence_published: Counter::default(),
            outbox_pending: Gauge::default(),
            reports_published: Counter::default(),
            report_outbox_pending: Gauge::default(),
            failed_rounds: Counter::default(),
            livekit_calls: Family::default(),
            livekit_call_duration: Family::new_with_constructor(|| Histogram::new(exponential_buckets(0.002, 2.0, 14))),
            reconcile_cycles_opened: Counter::default(),
            reconcile_meetings_ended: Counter::default(),
            reconcile_paused: Gauge::default(),
            reconcile_meetings_watched: Gauge::default(),
            reconcile_meetings_overdue: Gauge::default(),
        };
        registry.register(
            "sweeper_cycles_closed",
            "Cycles closed by the sweeper, by reason",
            metrics.cycles_closed.clone(),
        );
        registry.register(
            "sweeper_meetings_ended",
            "Meetings ended by inference, their room_finished never having come",
            metrics.meetings_ended.clone(),
        );
        registry.register(
            "sweeper_events_purged",
            "Events deleted past the retention, their meetings sealed",
            metrics.events_purged.clone(),
        );
        registry.register(
            "sweeper_presence_changes_published",
            "Presence changes published to NATS",
            metrics.presence_published.clone(),
        );
        registry.register(
            "sweeper_outbox_pending",
            "Presence changes waiting in the outbox",
            metrics.outbox_pending.clone(),
        );
        registry.register(
            "sweeper_reports_published",
            "Meeting reports published to NATS",
            metrics.reports_published.clone(),
        );
        registry.register(
            "sweeper_report_outbox_pending",
            "Meeting reports waiting in their outbox",
            metrics.report_outbox_pending.clone(),
        );
        registry.register(
            "sweeper_failed_rounds",
            "Sweep or publish rounds that failed",
            metrics.failed_rounds.clone(),
        );
        registry.register(
            "sweeper_livekit_calls",
            "Calls to the LiveKit server's RoomService, by method and outcome",
            metrics.livekit_calls.clone(),
        );
        registry.register(
            "sweeper_livekit_call_duration_seconds",
            "Latency of calls to the LiveKit server's RoomService, by method",
            metrics.livekit_call_duration.clone(),
        );
        registry.register(
            "sweeper_reconcile_cycles_opened",
            "Sessions the LiveKit server listed with no cycle (a lost participant_joined), opened by reconciliation",
            metrics.reconcile_cycles_opened.clone(),
        );
        registry.register(
            "sweeper_reconcile_meetings_ended",
            "Meetings ended by reconciliation: the LiveKit server no longer had their room",
            metrics.reconcile_meetings_ended.clone(),
        );
        registry.register(
            "sweeper_reconcile_paused",
            "1 while reconciliation waits because the LiveKit server answered errors",
            metrics.reconcile_paused.clone(),
        );
        registry.register(
            "sweeper_reconcile_meetings_watched",
            "Running meetings reconciliation checks against the LiveKit server",
            metrics.reconcile_meetings_watched.clone(),
        );
        registry.register(
            "sweeper_reconcile_meetings_overdue",
            "Watched meetings whose check is overdue (RECONCILE_MAX_RPS too low for their number, or LiveKit failing)",
            metrics.reconcile_meetings_overdue.clone(),
        );
        metrics
    }
}
