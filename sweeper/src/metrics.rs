//! The sweeper's Prometheus metrics.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClosedByLabel {
    pub closed_by: &'static str,
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
        metrics
    }
}
