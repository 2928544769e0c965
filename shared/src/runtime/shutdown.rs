//! The shutdown signal. Binaries turn SIGTERM/SIGINT into a cancelled token; everything below
//! takes that token (or any future) as an argument, so tests trigger shutdown themselves.

use tokio_util::sync::CancellationToken;

/// Resolves on the first SIGINT (Ctrl-C) or SIGTERM (Kubernetes).
pub async fn signal() {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut sigterm) => {
                sigterm.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("SIGINT received, shutting down"),
        () = terminate => tracing::info!("SIGTERM received, shutting down"),
    }
}

/// A token cancelled by the first shutdown signal.
pub fn on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let trigger = token.clone();
    tokio::spawn(async move {
        signal().await;
        trigger.cancel();
    });
    token
}

/// A periodic loop's clock that stops at shutdown: `while ticks.next().await { … }` runs the body
/// at once, then every `period` (a late round delays the next rather than causing a burst),
/// until `shutdown` is cancelled.
pub struct Ticks {
    interval: tokio::time::Interval,
    shutdown: CancellationToken,
}

impl Ticks {
    pub fn every(period: std::time::Duration, shutdown: &CancellationToken) -> Self {
        let mut interval = tokio::time::interval(period);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Ticks { interval, shutdown: shutdown.clone() }
    }

    /// Waits for the next round; `false` once shutdown has begun.
    pub async fn next(&mut self) -> bool {
        tokio::select! {
            biased;
            () = self.shutdown.cancelled() => false,
            _ = self.interval.tick() => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn ticks_run_at_once_then_every_period_until_shutdown() {
        let shutdown = CancellationToken::new();
        let mut ticks = Ticks::every(Duration::from_secs(10), &shutdown);
        let started = tokio::time::Instant::now();
        assert!(ticks.next().await);
        assert!(ticks.next().await);
        assert_eq!(started.elapsed(), Duration::from_secs(10));
        shutdown.cancel();
        assert!(!ticks.next().await);
    }
}
