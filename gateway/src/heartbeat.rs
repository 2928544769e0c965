//! `POST /v1/heartbeats`: a client says it is still in the meeting. The participant's own
//! LiveKit token says who and where; the heartbeat goes through JetStream like every event (202
//! once stored), and a per-participant limit keeps a client loop from flooding the fleet.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use shared::domain::heartbeat::Heartbeat;
use shared::domain::identifiers::{self, Field};
use shared::domain::time::{now_unix_ms, rfc3339_ms};
use shared::livekit::{KeySet, ParticipantGrant, participant};
use shared::nats::webhooks::WebhookStream;
use shared::runtime::trace;
use tracing::Instrument as _;

use crate::error::ApiError;

pub struct HeartbeatState {
    pub keys: KeySet,
    pub stream: WebhookStream,
    pub publish_timeout: Duration,
    pub limiter: RateLimiter,
}

pub async fn receive(
    State(state): State<Arc<HeartbeatState>>,
    headers: HeaderMap,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let span = tracing::info_span!("heartbeat", room = tracing::field::Empty, identity = tracing::field::Empty);
    trace::continue_from_http(&span, &headers);
    receive_traced(&state, &headers).instrument(span).await
}

async fn receive_traced(
    state: &HeartbeatState,
    headers: &HeaderMap,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let now_ms = now_unix_ms();
    let authorization = headers.get(header::AUTHORIZATION).map(|v| v.as_bytes());
    let who = participant::verify_header(authorization, &state.keys, now_ms / 1000)?;
    // The token is authentic, but its room and identity still become a message and rows.
    identifiers::check(Field::RoomName, &who.room)?;
    identifiers::check(Field::Identity, &who.identity)?;
    tracing::Span::current().record("room", &who.room).record("identity", &who.identity);
    if !state.limiter.allow(&who, Instant::now()) {
        return Err(ApiError::RateLimited);
    }
    let heartbeat = Heartbeat::new(who.room, who.identity, now_ms);
    match state.stream.publish_heartbeat(&heartbeat, state.publish_timeout).await {
        // The receipt time is the time the sweeper would close the cycle at, were this the
        // last heartbeat: the client learns it (and the server's clock) from the answer.
        Ok(_) => {
            Ok((StatusCode::ACCEPTED, Json(serde_json::json!({"accepted": true, "receivedAt": rfc3339_ms(now_ms)}))))
        }
        Err(error) => {
            tracing::error!(%error, "heartbeat not stored");
            Err(ApiError::HeartbeatUnavailable)
        }
    }
}

/// A token bucket per participant: `burst` heartbeats at once, then one per `interval`.
pub struct RateLimiter {
    interval: Duration,
    burst: f64,
    buckets: Mutex<HashMap<(String, String), (f64, Instant)>>,
}

impl RateLimiter {
    const MAX_TRACKED: usize = 100_000;

    pub fn new(interval: Duration, burst: u32) -> Self {
        RateLimiter { interval, burst: f64::from(burst.max(1)), buckets: Mutex::new(HashMap::new()) }
    }

    /// Takes a token for this participant if one is left.
    pub fn allow(&self, who: &ParticipantGrant, now: Instant) -> bool {
        let mut buckets = self.buckets.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if buckets.len() >= Self::MAX_TRACKED {
            // Forget participants whose bucket has refilled: they lose nothing.
            let full_after = self.interval.mul_f64(self.burst);
            buckets.retain(|_, (_, last)| now.duration_since(*last) < full_after);
        }
        let refill_per_sec = 1.0 / self.interval.as_secs_f64().max(f64::EPSILON);
        let (tokens, last) = buckets.entry((who.room.clone(), who.identity.clone())).or_insert((self.burst, now));
        *tokens = (*tokens + now.duration_since(*last).as_secs_f64() * refill_per_sec).min(self.burst);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allows_a_burst_then_one_per_interval_per_participant() {
        let limiter = RateLimiter::new(Duration::from_secs(5), 2);
        let ada = ParticipantGrant { room: "r".into(), identity: "ada".into() };
        let bob = ParticipantGrant { room: "r".into(), identity: "bob".into() };
        let t0 = Instant::now();
        assert!(limiter.allow(&ada, t0));
        assert!(limiter.allow(&ada, t0));
        assert!(!limiter.allow(&ada, t0), "burst used up");
        assert!(limiter.allow(&bob, t0), "others are not affected");
        assert!(!limiter.allow(&ada, t0 + Duration::from_secs(4)));
        assert!(limiter.allow(&ada, t0 + Duration::from_secs(6)), "refilled after the interval");
    }
}
