//! The gateway's Prometheus metrics.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StreamLabel {
    pub stream: String,
}

pub struct GatewayMetrics {
    /// Bytes held by each stream the gateway publishes to, and the limit (-1: none): alert on
    /// their ratio before a stream refuses publishes (webhooks would then get 503).
    pub stream_bytes: Family<StreamLabel, Gauge>,
    pub stream_max_bytes: Family<StreamLabel, Gauge>,
    /// Webhook requests by outcome: stored, duplicate, or the error code.
    pub webhook_requests: Family<OutcomeLabel, Counter>,
    /// Verification failures by reason (`token_expired`, `body_hash_mismatch`, …).
    pub verification_failures: Family<ReasonLabel, Counter>,
    /// Time from publish to JetStream's acknowledgement (or failure).
    pub publish_duration: Histogram,
    /// Webhook requests being handled now (they hold LiveKit's per-room queue).
    pub in_flight: Gauge,
    /// The `stored` and `duplicate` series of `webhook_requests`, looked up once: every accepted
    /// webhook counts in one (the family's lookup takes a lock and hashes the label).
    stored: Counter,
    duplicate: Counter,
}

impl GatewayMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let webhook_requests = Family::<OutcomeLabel, Counter>::default();
        let stored = webhook_requests.get_or_create(&OutcomeLabel { outcome: "stored" }).clone();
        let duplicate = webhook_requests.get_or_create(&OutcomeLabel { outcome: "duplicate" }).clone();
        let metrics = GatewayMetrics {
            stream_bytes: Family::default(),
            stream_max_bytes: Family::default(),
            webhook_requests,
            verification_failures: Family::default(),
            // 0.25 ms … ~4 s
            publish_duration: Histogram::new(exponential_buckets(0.000_25, 2.0, 15)),
            in_flight: Gauge::default(),
            stored,
            duplicate,
        };
        registry.register(
            "gateway_stream_bytes",
            "Bytes held by the webhook and heartbeat streams (read every 15 s)",
            metrics.stream_bytes.clone(),
        );
        registry.register(
            "gateway_stream_max_bytes",
            "The streams' byte limits (-1: none); past a limit, publishes to that stream get 503",
            metrics.stream_max_bytes.clone(),
        );
        registry.register(
            "gateway_webhook_requests",
            "LiveKit webhook requests by outcome",
            metrics.webhook_requests.clone(),
        );
        registry.register(
            "gateway_webhook_verification_failures",
            "Webhook requests refused by the signature check, by reason",
            metrics.verification_failures.clone(),
        );
        registry.register(
            "gateway_jetstream_publish_duration_seconds",
            "Time from publishing an event to JetStream's acknowledgement",
            metrics.publish_duration.clone(),
        );
        registry.register(
            "gateway_webhook_requests_in_flight",
            "Webhook requests being handled now",
            metrics.in_flight.clone(),
        );
        metrics
    }

    pub fn count(&self, outcome: &'static str) {
        match outcome {
            "stored" => self.stored.inc(),
            "duplicate" => self.duplicate.inc(),
            refused => self.webhook_requests.get_or_create(&OutcomeLabel { outcome: refused }).inc(),
        };
    }
}
