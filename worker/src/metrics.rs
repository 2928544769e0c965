//! The worker's Prometheus metrics.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EventTypeLabel {
    pub event_type: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: &'static str,
}

#[derive(Clone)]
pub struct WorkerMetrics {
    /// Events committed to PostgreSQL, by type (duplicates of stored events excluded).
    pub applied: Family<EventTypeLabel, Counter>,
    /// Redeliveries of already-stored events (LiveKit retries, redeliveries after a crash).
    pub duplicates: Counter,
    /// Messages put off to the next batch because another replica held their meeting.
    pub deferred: Counter,
    /// Messages refused for good and acknowledged, by reason (`meeting_sealed`, `identity_erased`,
    /// `no_meeting`).
    pub refused: Family<ReasonLabel, Counter>,
    /// Messages handed back to JetStream with a delay, by reason.
    pub retries: Family<ReasonLabel, Counter>,
    /// Messages sent to the dead-letter stream, by reason.
    pub dead_lettered: Family<ReasonLabel, Counter>,
    /// Time to apply one batch (transaction included).
    pub batch_duration: Histogram,
    /// Messages per batch.
    pub batch_size: Histogram,
    /// Messages the consumer still has to deliver, as last reported by JetStream.
    pub pending: Gauge,
    /// Dead letters waiting in the dead-letter stream.
    pub dead_letters: Gauge,
}

impl WorkerMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = WorkerMetrics {
            applied: Family::default(),
            duplicates: Counter::default(),
            deferred: Counter::default(),
            refused: Family::default(),
            retries: Family::default(),
            dead_lettered: Family::default(),
            batch_duration: Histogram::new(exponential_buckets(0.000_5, 2.0, 15)),
            batch_size: Histogram::new(exponential_buckets(1.0, 2.0, 10)),
            pending: Gauge::default(),
            dead_letters: Gauge::default(),
        };
        registry.register("worker_events_applied", "Events applied to PostgreSQL, by type", metrics.applied.clone());
        registry.register("worker_events_duplicate", "Deliveries of events already stored", metrics.duplicates.clone());
        registry.register(
            "worker_events_refused",
            "Messages never to be stored (sealed meeting, erased identity, heartbeat in no meeting), acknowledged",
            metrics.refused.clone(),
        );
        registry.register(
            "worker_events_deferred",
            "Messages put off to the next batch because another replica held their meeting",
            metrics.deferred.clone(),
        );
        registry.register("worker_event_retries", "Messages NAKed with a delay, by reason", metrics.retries.clone());
        registry.register(
            "worker_events_dead_lettered",
            "Messages sent to the dead-letter stream, by reason",
            metrics.dead_lettered.clone(),
        );
        registry.register(
            "worker_batch_apply_duration_seconds",
            "Time to apply one batch of messages, commit included",
            metrics.batch_duration.clone(),
        );
        registry.register("worker_batch_messages", "Messages per applied batch", metrics.batch_size.clone());
        registry.register(
            "worker_consumer_pending_messages",
            "Messages the JetStream consumer has yet to deliver",
            metrics.pending.clone(),
        );
        registry.register(
            "worker_dead_letter_stream_messages",
            "Dead letters waiting in the dead-letter stream",
            metrics.dead_letters.clone(),
        );
        metrics
    }
}
