//! The Prometheus metrics of `worker deliver`, by endpoint (the names of the endpoints file).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointLabel {
    pub endpoint: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AttemptLabel {
    pub endpoint: String,
    /// `delivered` (2xx), `http_error` (another status), `gone` (410), or why there was no
    /// answer: `timeout`, `refused` (an internal address), `unreachable`, `tls`, `protocol`.
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReloadLabel {
    /// `applied` or `refused` (the file was invalid; the previous one stays in force).
    pub result: &'static str,
}

type HistogramFamily = Family<EndpointLabel, Histogram, fn() -> Histogram>;

#[derive(Clone)]
pub struct DeliveryMetrics {
    /// Delivery attempts, by endpoint and outcome.
    pub attempts: Family<AttemptLabel, Counter>,
    /// Time from the start of an attempt to its answer (or its failure), by endpoint.
    pub attempt_duration: HistogramFamily,
    /// 1 while an endpoint is disabled (it answered 410 Gone), else 0.
    pub disabled: Family<EndpointLabel, Gauge>,
    /// Deliveries whose every attempt failed, sent to the dead-letter stream.
    pub dead_lettered: Family<EndpointLabel, Counter>,
    /// Reports an endpoint does not take (their type or room), acknowledged without delivery.
    pub skipped: Family<EndpointLabel, Counter>,
    /// Readings of the endpoints file after a change or SIGHUP.
    pub reloads: Family<ReloadLabel, Counter>,
    /// Endpoints in the file in force.
    pub endpoints: Gauge,
}

impl DeliveryMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = DeliveryMetrics {
            attempts: Family::default(),
            attempt_duration: Family::new_with_constructor(|| Histogram::new(exponential_buckets(0.005, 2.0, 14))),
            disabled: Family::default(),
            dead_lettered: Family::default(),
            skipped: Family::default(),
            reloads: Family::default(),
            endpoints: Gauge::default(),
        };
        registry.register("delivery_attempts", "Delivery attempts, by endpoint and outcome", metrics.attempts.clone());
        registry.register(
            "delivery_attempt_duration_seconds",
            "Time from the start of a delivery attempt to its answer or failure",
            metrics.attempt_duration.clone(),
        );
        registry.register(
            "delivery_endpoint_disabled",
            "1 while the endpoint is disabled (it answered 410 Gone)",
            metrics.disabled.clone(),
        );
        registry.register(
            "delivery_dead_lettered",
            "Deliveries whose every attempt failed, sent to the dead-letter stream",
            metrics.dead_lettered.clone(),
        );
        registry.register(
            "delivery_reports_skipped",
            "Reports an endpoint does not take (type or room), acknowledged without delivery",
            metrics.skipped.clone(),
        );
        registry.register(
            "delivery_endpoints_reloads",
            "Readings of the endpoints file after a change or SIGHUP, by result",
            metrics.reloads.clone(),
        );
        registry.register("delivery_endpoints", "Endpoints in the endpoints file in force", metrics.endpoints.clone());
        metrics
    }
}
