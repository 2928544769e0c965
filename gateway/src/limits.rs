//! Bounds on what requests may hold at once, so that no volume of requests can exhaust the
//! gateway's memory: requests in flight, and body bytes buffered across all of them. Past a bound
//! a request is answered 503 at once (LiveKit retries it later) instead of waiting in memory.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse as _, Response};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::ApiError;

/// How requests are bounded.
#[derive(Debug, Clone, clap::Args)]
pub struct RequestArgs {
    /// Requests handled at once (the presence streams and probes apart); more get 503.
    #[arg(long = "http-max-requests-in-flight", env = "HTTP_MAX_REQUESTS_IN_FLIGHT", default_value_t = 1_024)]
    pub max_in_flight: usize,
    /// Webhook body bytes held in memory at once across all requests; a request whose body
    /// would exceed it gets 503. Each request counts its declared length (else the body limit).
    #[arg(long = "webhook-body-memory", env = "WEBHOOK_BODY_MEMORY", default_value_t = 32 * 1024 * 1024)]
    pub body_memory: usize,
}

/// The shared bounds.
pub struct RequestLimits {
    in_flight: Arc<Semaphore>,
    body_memory: Arc<Semaphore>,
    body_memory_total: usize,
}

impl RequestLimits {
    pub fn new(args: &RequestArgs) -> Arc<Self> {
        let body_memory_total = args.body_memory.min(Semaphore::MAX_PERMITS);
        Arc::new(RequestLimits {
            in_flight: Arc::new(Semaphore::new(args.max_in_flight.max(1))),
            body_memory: Arc::new(Semaphore::new(body_memory_total)),
            body_memory_total,
        })
    }

    /// Reserves room for a body of `bytes` until the permit is dropped, or fails at once.
    pub fn reserve_body(&self, bytes: usize) -> Result<OwnedSemaphorePermit, ApiError> {
        let bytes = u32::try_from(bytes.min(self.body_memory_total)).map_err(|_| ApiError::Overloaded)?;
        self.body_memory.clone().try_acquire_many_owned(bytes).map_err(|_| ApiError::Overloaded)
    }
}

/// Middleware: a request runs only while fewer than the bound are in flight; else 503.
pub async fn limit_in_flight(State(limits): State<Arc<RequestLimits>>, request: Request, next: Next) -> Response {
    match limits.in_flight.clone().try_acquire_owned() {
        Ok(_permit) => next.run(request).await,
        Err(_) => ApiError::Overloaded.into_response(),
    }
}
