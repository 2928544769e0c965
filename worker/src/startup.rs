//! Building and running a worker. `build` binds the probes port and connects; `run` prepares
//! what it needs (migrations, streams, the consumer), retrying while NATS or PostgreSQL are
//! down, then consumes until the shutdown token is cancelled.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, pull};
use prometheus_client::registry::Registry;
use shared::config::StartupError;
use shared::ops;
use shared::stream::{DeadLetterStream, WebhookStream};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::WorkerConfig;
use crate::consume::{CRASH_MARGIN, Consumer, Settings};
use crate::metrics::WorkerMetrics;

pub struct Application {
    config: WorkerConfig,
    listener: TcpListener,
    nats: async_nats::Client,
    pool: sqlx::PgPool,
}

impl Application {
    pub async fn build(config: WorkerConfig) -> Result<Self, StartupError> {
        let (webhooks, dead_letters) = (&config.stream.subject_prefix, &config.dead_letters.subject_prefix);
        let overlap = |a: &str, b: &str| a == b || a.starts_with(&format!("{b}."));
        if overlap(webhooks, dead_letters) || overlap(dead_letters, webhooks) {
            return Err(StartupError::Invalid(format!(
                "the dead-letter subjects ({dead_letters}.>) must not overlap the webhook subjects ({webhooks}.>)"
            )));
        }
        let listener = shared::config::bind(config.metrics_addr).await?;
        let nats = config.nats.connect("attendance-worker").await?;
        let pool = config.database.pool()?;
        Ok(Application { config, listener, nats, pool })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("a bound listener has an address")
    }

    /// Runs until `shutdown` is cancelled, then finishes the batch in hand and exits.
    pub async fn run(self, shutdown: CancellationToken) -> std::io::Result<()> {
        let Application { config, listener, nats, pool } = self;
        let mut registry = Registry::default();
        let metrics = WorkerMetrics::register(&mut registry);
        let consuming = Arc::new(AtomicBool::new(false));
        let readiness = ops::background_readiness(nats.clone(), pool.clone(), consuming.clone(), "not consuming yet");
        let ops_server = ops::OpsServer::spawn(listener, registry, readiness);

        if let Some(mut consumer) = prepare(&config, &nats, &pool, metrics, &shutdown).await {
            consuming.store(true, Ordering::Relaxed);
            let depth_watch = consumer.watch_dead_letter_depth(shutdown.clone());
            tracing::info!(consumer = config.consumer_name, "consuming");
            while !shutdown.is_cancelled() {
                if let Err(error) = consumer.run(&shutdown).await {
                    tracing::warn!(%error, "consumer loop stopped; restarting it");
                    tokio::select! {
                        () = shutdown.cancelled() => {}
                        () = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
                    }
                }
            }
            consuming.store(false, Ordering::Relaxed);
            let _ = depth_watch.await;
        }

        ops::close_connections(&pool, &nats).await;
        let served = ops_server.stop().await;
        tracing::info!("worker stopped");
        served
    }
}

/// Migrations, the dead-letter stream, the webhook stream and the shared consumer; `None` if
/// shutdown came first.
async fn prepare(
    config: &WorkerConfig,
    nats: &async_nats::Client,
    pool: &sqlx::PgPool,
    metrics: WorkerMetrics,
    shutdown: &CancellationToken,
) -> Option<Consumer> {
    shared::retry::until_ok(shutdown, "database migrations", || shared::storage::MIGRATOR.run(pool)).await?;
    let dead_letters = DeadLetterStream::new(nats.clone(), config.dead_letters.clone());
    shared::retry::until_ok(shutdown, "dead-letter stream set-up", || dead_letters.ensure()).await?;
    let webhooks = WebhookStream::new(nats.clone(), config.stream.clone());
    shared::retry::until_ok(shutdown, "webhook stream set-up", || webhooks.ensure()).await?;
    let consumer_config = pull::Config {
        durable_name: Some(config.consumer_name.clone()),
        description: Some("Attendance workers: apply webhook events to PostgreSQL".into()),
        deliver_policy: DeliverPolicy::All,
        ack_policy: AckPolicy::Explicit,
        ack_wait: config.ack_wait,
        max_deliver: config.max_deliver + CRASH_MARGIN,
        max_ack_pending: config.max_ack_pending,
        ..Default::default()
    };
    let consumer =
        shared::retry::until_ok(shutdown, "consumer set-up", || webhooks.durable_consumer(consumer_config.clone()))
            .await?;
    let settings = Settings {
        max_deliver: config.max_deliver,
        batch_size: usize::from(config.batch_size),
        retry_min_delay: config.retry_min_delay,
        retry_max_delay: config.retry_max_delay,
    };
    Some(Consumer::new(consumer, pool.clone(), dead_letters, metrics, settings))
}
