//! The kit every test in the workspace shares, so that each test talks to real servers in
//! isolation: unique stream names and subjects on the shared NATS, private servers for tests that
//! kill or stop one, and webhook requests signed the way LiveKit signs them.
//!
//! The end-to-end tests that drive the real binaries live in this crate's `tests/` folder.

pub mod binaries;
pub mod browser;
pub mod exactness;
pub mod fleet;
pub mod livekit;
pub mod livekit_server;
pub mod nats;
pub mod nats_auth;
pub mod nats_cluster;
pub mod postgres;
pub mod tls;
pub mod webhook_load;
pub mod workload;

/// A short random lowercase hex string for unique names.
pub fn unique_suffix() -> String {
    format!("{:012x}", fastrand::u64(..) & 0xffff_ffff_ffff)
}

/// Polls `check` every 50 ms until it returns `Some`, or panics after `timeout` with `what`.
pub async fn eventually<T, F, Fut>(timeout: std::time::Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// A token with `roomList` (reads every room).
pub fn access_token_room_list() -> String {
    livekit::access_token(None, shared::livekit::VideoGrant { room_list: true, ..Default::default() }, 600)
}
