//! Building and running a sweeper: two cancellable loops, the sweep and the outbox publisher.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use prometheus_client::registry::Registry;
use shared::config::StartupError;
use shared::ops;
use shared::presence::PresenceStream;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::SweeperConfig;
use crate::metrics::{ClosedByLabel, SweeperMetrics};
use crate::{outbox, sweep};

pub struct Application {
    config: SweeperConfig,
    listener: TcpListener,
    nats: async_nats::Client,
    pool: sqlx::PgPool,
}

impl Application {
    pub async fn build(config: SweeperConfig) -> Result<Self, StartupError> {
        let listener = shared::config::bind(config.metrics_addr).await?;
        let nats = config.nats.connect("attendance-sweeper").await?;
        let pool = config.database.pool()?;
        Ok(Application { config, listener, nats, pool })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("a bound listener has an address")
    }

    /// Runs until `shutdown` is cancelled; the round in progress finishes first.
    pub async fn run(self, shutdown: CancellationToken) -> std::io::Result<()> {
        let Application { config, listener, nats, pool } = self;
        let mut registry = Registry::default();
        let metrics = SweeperMetrics::register(&mut registry);
        let running = Arc::new(AtomicBool::new(false));
        let readiness = ops::background_readiness(nats.clone(), pool.clone(), running.clone(), "not sweeping yet");
        let ops_server = ops::OpsServer::spawn(listener, registry, readiness);

        let presence = PresenceStream::new(nats.clone(), config.presence.clone());
        let prepared = async {
            shared::retry::until_ok(&shutdown, "database migrations", || shared::storage::MIGRATOR.run(&pool)).await?;
            shared::retry::until_ok(&shutdown, "presence stream set-up", || presence.ensure()).await
        };
        if prepared.await.is_some() {
            running.store(true, Ordering::Relaxed);
            tracing::info!("sweeping");
            tokio::join!(
                sweep_loop(&config, &pool, &metrics, &shutdown),
                outbox_loop(&config, &pool, &presence, &metrics, &shutdown)
            );
            running.store(false, Ordering::Relaxed);
        }

        ops::close_connections(&pool, &nats).await;
        let served = ops_server.stop().await;
        tracing::info!("sweeper stopped");
        served
    }
}

async fn sweep_loop(
    config: &SweeperConfig,
    pool: &sqlx::PgPool,
    metrics: &SweeperMetrics,
    shutdown: &CancellationToken,
) {
    let mut ticks = tokio::time::interval(config.sweep_interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = ticks.tick() => {}
        }
        match sweep::sweep(pool, shared::now_unix_ms(), config.heartbeat_timeout, config.max_cycle_duration).await {
            Ok(swept) => {
                let closed = |closed_by| metrics.cycles_closed.get_or_create(&ClosedByLabel { closed_by });
                closed("heartbeat_timeout").inc_by(swept.heartbeat_timeouts as u64);
                closed("max_duration").inc_by(swept.max_durations as u64);
            }
            Err(error) => {
                metrics.failed_rounds.inc();
                tracing::warn!(%error, retry_in = ?config.sweep_interval, "sweep failed");
            }
        }
    }
}

async fn outbox_loop(
    config: &SweeperConfig,
    pool: &sqlx::PgPool,
    presence: &PresenceStream,
    metrics: &SweeperMetrics,
    shutdown: &CancellationToken,
) {
    let mut ticks = tokio::time::interval(config.outbox_poll_interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = ticks.tick() => {}
        }
        // Drain what is there, a batch at a time.
        loop {
            match outbox::publish_batch(pool, presence, config.outbox_batch_size).await {
                Ok(published) => {
                    metrics.presence_published.inc_by(published as u64);
                    if (published as i64) < config.outbox_batch_size || shutdown.is_cancelled() {
                        break;
                    }
                }
                Err(error) => {
                    metrics.failed_rounds.inc();
                    tracing::warn!(%error, "publishing the presence outbox failed; retried next round");
                    break;
                }
            }
        }
        if let Ok(pending) = outbox::pending(pool).await {
            metrics.outbox_pending.set(pending);
        }
    }
}
