//! Retrying a start-up step (a migration, a stream, a consumer, waiting for the database) until
//! it succeeds or the service shuts down. Every failed attempt is logged; the delay doubles up
//! to a cap, and each wait is drawn at random in its upper half, so that replicas which failed
//! together during an outage do not all come back at the same instant.

use std::fmt::Display;
use std::future::Future;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

const FIRST_DELAY: Duration = Duration::from_millis(250);
const MAX_DELAY: Duration = Duration::from_secs(30);

/// A failure retrying cannot fix (the server refused the configuration): reported, not retried.
pub trait Permanent {
    fn is_permanent(&self) -> bool;
}

/// Runs `attempt` until it succeeds (`Some`) or `shutdown` is cancelled (`None`).
pub async fn until_ok<T, E, F, Fut>(shutdown: &CancellationToken, what: &str, attempt: F) -> Option<T>
where
    E: Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    retry(shutdown, what, attempt, |_| false).await.map(|done| done.unwrap_or_else(|_| unreachable!("never permanent")))
}

/// Like [`until_ok`], but a permanent failure ends the retries and is returned (`Some(Err)`).
pub async fn until_ok_or_permanent<T, E, F, Fut>(
    shutdown: &CancellationToken,
    what: &str,
    attempt: F,
) -> Option<Result<T, E>>
where
    E: Display + Permanent,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    retry(shutdown, what, attempt, E::is_permanent).await
}

async fn retry<T, E, F, Fut>(
    shutdown: &CancellationToken,
    what: &str,
    mut attempt: F,
    is_permanent: impl Fn(&E) -> bool,
) -> Option<Result<T, E>>
where
    E: Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let mut delay = FIRST_DELAY;
    loop {
        let result = tokio::select! {
            () = shutdown.cancelled() => return None,
            result = attempt() => result,
        };
        let wait = jittered(delay, fastrand::f64());
        match result {
            Ok(value) => return Some(Ok(value)),
            Err(error) if is_permanent(&error) => {
                tracing::error!(%error, "{what} failed; not retrying: the configuration or the server must change");
                return Some(Err(error));
            }
            Err(error) => tracing::warn!(%error, retry_in = ?wait, "{what} failed"),
        }
        tokio::select! {
            () = shutdown.cancelled() => return None,
            () = tokio::time::sleep(wait) => {}
        }
        delay = (delay * 2).min(MAX_DELAY);
    }
}

/// The wait for a nominal `delay`, given a uniform draw `random` in [0, 1): in [delay/2, delay].
fn jittered(delay: Duration, random: f64) -> Duration {
    let half = delay / 2;
    half + half.mul_f64(random.clamp(0.0, 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_are_spread_over_the_upper_half_of_the_delay() {
        let delay = Duration::from_secs(8);
        assert_eq!(jittered(delay, 0.0), Duration::from_secs(4));
        assert_eq!(jittered(delay, 0.5), Duration::from_secs(6));
        assert!(jittered(delay, 0.999_999) <= delay);
        let draws: std::collections::BTreeSet<Duration> = (0..100).map(|_| jittered(delay, fastrand::f64())).collect();
        assert!(draws.len() > 90, "replicas draw different waits");
    }

    #[tokio::test(start_paused = true)]
    async fn retries_until_success_and_stops_at_shutdown() {
        let shutdown = CancellationToken::new();
        let mut attempts = 0;
        let result = until_ok(&shutdown, "a step", || {
            attempts += 1;
            let done = attempts == 3;
            async move { if done { Ok(attempts) } else { Err("not yet") } }
        })
        .await;
        assert_eq!(result, Some(3));

        shutdown.cancel();
        let never = until_ok(&shutdown, "a step", || async { Err::<(), _>("down") }).await;
        assert_eq!(never, None);
    }
}
