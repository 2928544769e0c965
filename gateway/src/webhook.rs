//! `POST /webhooks/livekit`: verify, store in JetStream, then answer.
//!
//! Invariant: a 2xx is sent only after JetStream acknowledged the event (or reported it as a
//! duplicate of one it holds). Anything that could succeed later gets a 5xx so that LiveKit
//! retries; a 4xx, which LiveKit never retries, is kept for requests that can never succeed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Json;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, header};
use bytes::Bytes;
use http_body_util::{BodyExt as _, LengthLimitError, Limited};
use prometheus_client::metrics::gauge::Gauge;
use serde::Serialize;
use shared::domain::time::now_unix_ms;
use shared::livekit::{KeySet, ReceiveError, webhook};
use shared::nats::webhooks::WebhookStream;
use shared::runtime::trace;
use tracing::field::Empty;
use tracing::{Instrument as _, Span};

use crate::error::ApiError;
use crate::limits::RequestLimits;
use crate::metrics::{GatewayMetrics, ReasonLabel};

/// What the webhook handler needs, shared by all requests.
pub struct WebhookState {
    pub keys: KeySet,
    pub stream: WebhookStream,
    pub body_limit: usize,
    pub body_timeout: Duration,
    pub publish_timeout: Duration,
    pub metrics: GatewayMetrics,
    /// The body bytes all requests may buffer at once.
    pub limits: Arc<RequestLimits>,
}

/// The answer to LiveKit once the event is stored.
#[derive(Debug, Serialize)]
pub struct Accepted {
    pub event_id: String,
    /// JetStream sequence of the stored event.
    pub sequence: u64,
    /// True when this event id had been stored before (a retry).
    pub duplicate: bool,
}

pub async fn receive(State(state): State<Arc<WebhookState>>, request: Request) -> Result<Json<Accepted>, ApiError> {
    let _in_flight = InFlight::enter(&state.metrics.in_flight);
    // The request taken whole, not its headers through their extractor, which copies them.
    let (parts, body) = request.into_parts();
    // The parent (the caller's trace, if any) must be set before the span is first entered.
    let span = tracing::info_span!("webhook", event_id = Empty, event_type = Empty, room = Empty, trace_id = Empty);
    trace::continue_from_http(&span, &parts.headers);
    if !span.is_disabled() {
        span.record("trace_id", trace::trace_id(&span));
    }
    receive_traced(&state, &parts.headers, body).instrument(span).await
}

async fn receive_traced(state: &WebhookState, headers: &HeaderMap, body: Body) -> Result<Json<Accepted>, ApiError> {
    let result = receive_inner(state, headers, body).await;
    match &result {
        Ok(accepted) => state.metrics.count(if accepted.duplicate { "duplicate" } else { "stored" }),
        Err(error) => {
            state.metrics.count(error.code());
            if let ApiError::Unauthorized(reason) = error {
                state.metrics.verification_failures.get_or_create(&ReasonLabel { reason: reason.code() }).inc();
                // The reason only: never the token or the body of a request that failed verification.
                tracing::warn!(reason = reason.code(), "webhook refused");
            } else {
                tracing::warn!(error = error.code(), "webhook not stored");
            }
        }
    }
    result.map(Json)
}

async fn receive_inner(state: &WebhookState, headers: &HeaderMap, body: Body) -> Result<Accepted, ApiError> {
    let received_at_ms = now_unix_ms();
    // Held until the answer: the body (or what was read of it) is in memory until then.
    let declared = declared_length(headers);
    let _reserved = state.limits.reserve_body(reserved_length(declared, state.body_limit))?;
    let body = read_body(body, declared, state.body_limit, state.body_timeout).await?;
    let authorization = headers.get(header::AUTHORIZATION).map(|value| value.as_bytes());
    let event =
        webhook::receive(authorization, body, &state.keys, received_at_ms / 1000, received_at_ms).map_err(|error| {
            match error {
                ReceiveError::Unauthorized(reason) => ApiError::Unauthorized(reason),
                ReceiveError::Invalid(reason) => ApiError::InvalidEvent(reason),
            }
        })?;

    let span = Span::current();
    span.record("event_id", event.id());
    span.record("event_type", event.event_type());
    span.record("room", event.room_name());

    let started = Instant::now();
    let published = state.stream.publish(&event, state.publish_timeout).await;
    state.metrics.publish_duration.observe(started.elapsed().as_secs_f64());
    match published {
        Ok(ack) => {
            tracing::info!(sequence = ack.sequence, duplicate = ack.duplicate, "event stored");
            Ok(Accepted { event_id: event.id().to_owned(), sequence: ack.sequence, duplicate: ack.duplicate })
        }
        Err(error) => {
            tracing::error!(%error, "event not stored, answering 503 so that LiveKit retries");
            Err(ApiError::Unavailable)
        }
    }
}

/// The body bytes a request may buffer: its declared length, else the limit (a chunked body
/// may be that long). A length beyond the limit is refused by [`read_body`] without reading.
fn reserved_length(declared: Option<u64>, limit: usize) -> usize {
    declared.map_or(limit, |declared| usize::try_from(declared).unwrap_or(usize::MAX).min(limit))
}

fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok())
}

/// Reads the whole body as raw bytes (the signature covers them exactly), up to `limit` bytes
/// and `timeout` long; a `declared` length (Content-Length) beyond the limit is refused unread.
async fn read_body(body: Body, declared: Option<u64>, limit: usize, timeout: Duration) -> Result<Bytes, ApiError> {
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(ApiError::PayloadTooLarge { limit });
    }
    let collected = tokio::time::timeout(timeout, Limited::new(body, limit).collect()).await;
    match collected.map_err(|_elapsed| ApiError::BodyTimeout)? {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) if error.downcast_ref::<LengthLimitError>().is_some() => Err(ApiError::PayloadTooLarge { limit }),
        Err(_) => Err(ApiError::UnreadableBody),
    }
}

/// Counts a request as in flight until dropped, even if the client goes away and the handler's
/// future is dropped mid-way.
struct InFlight<'a>(&'a Gauge);

impl<'a> InFlight<'a> {
    fn enter(gauge: &'a Gauge) -> Self {
        gauge.inc();
        InFlight(gauge)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}
