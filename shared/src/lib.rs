//! Everything the gateway, the worker and the sweeper share: configuration pieces, telemetry,
//! LiveKit authentication, the webhook event model and the JetStream plumbing.
//!
//! Domain logic lives here as plain functions over plain types so that it can be tested without
//! a socket; the service crates only wire it to the network.

pub mod attendance;
pub mod config;
pub mod db;
pub mod event;
pub mod livekit;
pub mod ops;
pub mod presence;
pub mod retry;
pub mod shutdown;
pub mod storage;
pub mod stream;
pub mod telemetry;
pub mod trace;

/// Milliseconds since the Unix epoch, from the system clock.
pub fn now_unix_ms() -> i64 {
    let since_epoch = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    i64::try_from(since_epoch.as_millis()).unwrap_or(i64::MAX)
}
