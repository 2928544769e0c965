//! Retrying a start-up step (a migration, a stream, a consumer) until it succeeds or the
//! service shuts down: every attempt is logged, and the delay doubles up to a cap.

use std::fmt::Display;
use std::future::Future;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// Runs `attempt` until it succeeds (`Some`) or `shutdown` is cancelled (`None`).
pub async fn until_ok<T, E, F, Fut>(shutdown: &CancellationToken, what: &str, mut attempt: F) -> Option<T>
where
    E: Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let mut delay = Duration::from_millis(250);
    loop {
        let result = tokio::select! {
            () = shutdown.cancelled() => return None,
            result = attempt() => result,
        };
        match result {
            Ok(value) => return Some(value),
            Err(error) => tracing::warn!(%error, retry_in = ?delay, "{what} failed"),
        }
        tokio::select! {
            () = shutdown.cancelled() => return None,
            () = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(Duration::from_secs(30));
    }
}
