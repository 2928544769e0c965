//! One delivery attempt of one report to one endpoint: whether the endpoint takes the report,
//! signing it (Standard Webhooks, at the time of the attempt), the `POST`, the attempt's record
//! (`delivery_attempts`, metrics, a log line), and what JetStream is told: an [`Outcome`],
//! mapped to an `AckKind` in one place ([`Deliverer::settle`]).
//!
//! Invariants: the body sent and signed is the report's payload, byte for byte; `webhook-id` is
//! the report's id, the same at every attempt, replay and replica; a report is acknowledged only
//! once it was delivered (2xx) or is not the endpoint's, and terminated only once its dead
//! letter is stored.

use std::time::{Duration, Instant};

use async_nats::jetstream::{AckKind, Message};
use shared::domain::time::{now_unix_ms, unix_ms};
use shared::nats::dead_letters::{DeadLetter, DeadLetterStream};
use shared::nats::reports::ReportMessage;
use shared::store::deliveries::{self, Attempt};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use super::endpoints::Endpoint;
use super::metrics::{AttemptLabel, DeliveryMetrics, EndpointLabel};
use super::schedule::{Next, RetrySchedule};
use super::send::{Answer, Client};
use super::signature::sign;
use super::subjects::{Route, redelivery_subject, route};

/// The token of a delivery's dead letters (`<DLQ prefix>.delivery`): `worker dlq list
/// --event-type delivery` lists them.
pub const DEAD_LETTER_TYPE: &str = "delivery";
const DEAD_LETTER_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a failed dead-letter publish waits before the report comes back to try again.
const DEAD_LETTER_RETRY: Duration = Duration::from_secs(5);

/// What became of a report for an endpoint, and so what JetStream is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The receiver answered 2xx: acknowledged.
    Delivered,
    /// Not for this endpoint (its type or room, another endpoint's replay): acknowledged.
    NotWanted,
    /// The attempt failed: handed back, to come again after this delay.
    Retry(Duration),
    /// Failed for good (the last attempt failed, or the report cannot be read): dead-lettered,
    /// then terminated.
    Failed { reason: &'static str, error: String },
    /// The endpoint answered 410 Gone and is now disabled: handed back at once, for when it is
    /// enabled again (a disabled endpoint is not consumed).
    Gone,
    /// Not attempted (the endpoint stopped meanwhile): handed back at once.
    HandedBack,
}

/// What every delivery needs, shared by the endpoints' loops.
pub struct Deliverer {
    pub client: Client,
    pub pool: PgPool,
    pub dead_letters: DeadLetterStream,
    pub metrics: DeliveryMetrics,
    pub schedule: RetrySchedule,
    /// The longest `Retry-After` honoured.
    pub max_retry_after: Duration,
    /// The report stream's subject prefix.
    pub subject_prefix: String,
}

impl Deliverer {
    /// Delivers `message` to `endpoint` once (unless it is not the endpoint's, or `stop` was
    /// cancelled first). A 410 disables the endpoint and cancels `stop`.
    pub async fn deliver(&self, endpoint: &Endpoint, message: &Message, stop: &CancellationToken) -> Outcome {
        let span = tracing::Span::current();
        let delivered = message.info().map(|info| info.delivered).unwrap_or(1);
        match route(&self.subject_prefix, &message.subject) {
            Route::Unknown => return Outcome::NotWanted,
            Route::Only(other) if other != endpoint.name => return Outcome::NotWanted,
            Route::Everyone | Route::Only(_) => {}
        }
        let report = match ReportMessage::decode(&message.subject, message.headers.as_ref(), message.payload.clone()) {
            Ok(report) => report,
            Err(error) => return Outcome::Failed { reason: "unreadable_report", error: error.to_string() },
        };
        span.record("report_id", report.id.as_str());
        span.record("kind", report.kind.as_str());
        let room = endpoint.rooms.is_some().then(|| room_of(&report.body)).flatten();
        if !endpoint.wants(report.kind, room.as_deref()) {
            self.metrics.skipped.get_or_create(&EndpointLabel { endpoint: endpoint.name.clone() }).inc();
            return Outcome::NotWanted;
        }
        if stop.is_cancelled() {
            return Outcome::HandedBack;
        }

        let timestamp = now_unix_ms().div_euclid(1000);
        let signed = sign(&report.id, timestamp, &report.body, &endpoint.secrets);
        let headers = [
            ("webhook-id", signed.id),
            ("webhook-timestamp", signed.timestamp.to_string()),
            ("webhook-signature", signed.signature),
        ];
        let started = Instant::now();
        let result = self.client.post(&endpoint.destination, &headers, report.body.clone()).await;
        let latency = started.elapsed();

        let (status, retry_after, outcome_label, error) = match &result {
            Ok(Answer { status, .. }) if (200..300).contains(status) => (Some(*status), None, "delivered", None),
            Ok(Answer { status, retry_after, excerpt }) => {
                let label = if *status == 410 { "gone" } else { "http_error" };
                let error =
                    if excerpt.is_empty() { format!("HTTP {status}") } else { format!("HTTP {status}: {excerpt}") };
                (Some(*status), *retry_after, label, Some(error))
            }
            Err(error) => (None, None, error.outcome(), Some(error.to_string())),
        };
        let label = EndpointLabel { endpoint: endpoint.name.clone() };
        self.metrics
            .attempts
            .get_or_create(&AttemptLabel { endpoint: endpoint.name.clone(), outcome: outcome_label })
            .inc();
        self.metrics.attempt_duration.get_or_create(&label).observe(latency.as_secs_f64());
        let attempt = Attempt {
            endpoint: endpoint.name.clone(),
            report_id: report.id.clone(),
            attempt: delivered,
            status,
            latency_ms: i64::try_from(latency.as_millis()).unwrap_or(i64::MAX),
            error: error.clone(),
        };
        self.record(&attempt).await;

        let Some(error) = error else {
            tracing::info!(status, latency_ms = attempt.latency_ms, "report delivered");
            return Outcome::Delivered;
        };
        tracing::warn!(
            status,
            outcome = outcome_label,
            error,
            latency_ms = attempt.latency_ms,
            url = endpoint.destination.origin(),
            "delivery attempt failed"
        );
        if status == Some(410) {
            stop.cancel();
            self.disable(endpoint, &error).await;
            if delivered >= self.schedule.attempts() {
                return Outcome::Failed { reason: "endpoint_gone", error };
            }
            return Outcome::Gone;
        }
        match self.schedule.next(delivered, retry_after, self.max_retry_after, fastrand::f64()) {
            Next::RetryAfter(delay) => Outcome::Retry(delay),
            Next::GiveUp => Outcome::Failed { reason: "delivery_failed", error },
        }
    }

    /// Tells JetStream what became of `message`.
    pub async fn settle(&self, endpoint: &Endpoint, message: &Message, outcome: Outcome) {
        let kind = match outcome {
            Outcome::Delivered | Outcome::NotWanted => AckKind::Ack,
            Outcome::Retry(delay) => AckKind::Nak(Some(delay)),
            Outcome::Gone | Outcome::HandedBack => AckKind::Nak(None),
            Outcome::Failed { reason, error } => {
                if self.dead_letter(endpoint, message, reason, &error).await {
                    AckKind::Term
                } else {
                    AckKind::Nak(Some(DEAD_LETTER_RETRY))
                }
            }
        };
        // A lost ack or NAK means a redelivery after the ack wait: at least once, same id.
        if let Err(error) = message.ack_with(kind).await {
            tracing::warn!(%error, ?kind, "telling JetStream failed; the report comes back after the ack wait");
        }
    }

    /// Publishes the dead letter of a failed delivery (replaying to this endpoint only);
    /// `false` if it could not be stored.
    async fn dead_letter(&self, endpoint: &Endpoint, message: &Message, reason: &'static str, error: &str) -> bool {
        let Ok(info) = message.info() else { return false };
        let (sequence, delivered, stream) = (info.stream_sequence, info.delivered, info.stream.to_owned());
        let kind = ReportMessage::decode(&message.subject, message.headers.as_ref(), message.payload.clone())
            .map(|report| (report.kind, report.id))
            .ok();
        // A report that cannot be read keeps its subject: replaying it is for its producer to fix.
        let original_subject = match &kind {
            Some((kind, _)) => redelivery_subject(&self.subject_prefix, &endpoint.name, *kind),
            None => message.subject.to_string(),
        };
        let now = now_unix_ms();
        let first_failure_at_ms = match &kind {
            Some((_, report_id)) => deliveries::first_attempt_at(&self.pool, &endpoint.name, report_id)
                .await
                .ok()
                .flatten()
                .map_or(now, unix_ms),
            None => now,
        };
        let letter = DeadLetter {
            event_type: DEAD_LETTER_TYPE,
            payload: message.payload.clone(),
            original_headers: message.headers.as_ref(),
            original_subject: &original_subject,
            original_stream: &stream,
            original_sequence: sequence,
            delivery_count: delivered,
            reason,
            error,
            first_failure_at_ms,
            last_failure_at_ms: now,
        };
        match self.dead_letters.publish(&letter, DEAD_LETTER_TIMEOUT).await {
            Ok(_) => {
                self.metrics.dead_lettered.get_or_create(&EndpointLabel { endpoint: endpoint.name.clone() }).inc();
                tracing::warn!(reason, error, replays_to = original_subject, "delivery dead-lettered");
                true
            }
            Err(publish_error) => {
                tracing::error!(%publish_error, "cannot dead-letter the delivery; it comes back to try again");
                false
            }
        }
    }

    /// Records an attempt, within the delivery timeout (a database outage must not hold the
    /// delivery: the attempt is then only in the log and the metrics).
    async fn record(&self, attempt: &Attempt) {
        match tokio::time::timeout(self.client.timeout(), deliveries::record_attempt(&self.pool, attempt)).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::warn!(%error, "cannot record the delivery attempt"),
            Err(_) => tracing::warn!("recording the delivery attempt timed out"),
        }
    }

    /// Disables `endpoint` (it answered 410) at its URL: three tries, each within the timeout.
    async fn disable(&self, endpoint: &Endpoint, error: &str) {
        self.metrics.disabled.get_or_create(&EndpointLabel { endpoint: endpoint.name.clone() }).set(1);
        let url = endpoint.destination.url();
        for attempt in 1..=3 {
            let disable = deliveries::disable_endpoint(&self.pool, &endpoint.name, &url, 410, error);
            match tokio::time::timeout(self.client.timeout(), disable).await {
                Ok(Ok(())) => {
                    tracing::error!(
                        url = endpoint.destination.origin(),
                        "the endpoint answered 410 Gone: disabled until `worker deliver enable {}` (or its URL changes)",
                        endpoint.name
                    );
                    return;
                }
                Ok(Err(error)) => tracing::warn!(%error, attempt, "cannot record the endpoint as disabled"),
                Err(_) => tracing::warn!(attempt, "recording the endpoint as disabled timed out"),
            }
        }
        tracing::error!(
            "the endpoint answered 410 Gone but could not be recorded as disabled: it is tried again at the next reload"
        );
    }
}

/// The room name of a report (`data.room`), when its body says.
fn room_of(body: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Body {
        data: Data,
    }
    #[derive(serde::Deserialize)]
    struct Data {
        room: Option<String>,
    }
    serde_json::from_slice::<Body>(body).ok().and_then(|body| body.data.room)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_room_is_read_from_the_data() {
        assert_eq!(
            room_of(br#"{"type":"meeting.ended","data":{"room":"algebra","sequence":2}}"#).as_deref(),
            Some("algebra")
        );
        assert_eq!(room_of(br#"{"type":"meeting.ended","data":{}}"#), None);
        assert_eq!(room_of(b"not json"), None);
    }
}
