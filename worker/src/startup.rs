//! Building and running a worker. `build` binds the probes port and connects; `run` prepares
//! what it needs (migrations, streams, the consumer), retrying while NATS or PostgreSQL are
//! down, then consumes until the shutdown token is cancelled.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;

use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, pull};
use prometheus_client::registry::Registry;
use shared::nats::dead_letters::DeadLetterStream;
use shared::nats::webhooks::WebhookStream;
use shared::runtime::config::StartupError;
use shared::runtime::ops::{self, OpsServer, ServiceConnections, SetupFailure};
use shared::runtime::startup_retry;
use shared::store::MIGRATOR;
use tokio_util::sync::CancellationToken;

use crate::config::WorkerConfig;
use crate::consume::{CRASH_MARGIN, Consumer, Order, Settings, WebhookProgress};
use crate::metrics::WorkerMetrics;

pub struct Application {
    config: WorkerConfig,
    connections: ServiceConnections,
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
        let connections =
            ServiceConnections::open(config.metrics_addr, &config.nats, &config.database, "attendance-worker").await?;
        Ok(Application { config, connections })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.connections.local_addr()
    }

    /// Runs until `shutdown` is cancelled, then finishes the batch in hand and exits.
    pub async fn run(self, shutdown: CancellationToken) -> std::io::Result<()> {
        let Application { config, connections } = self;
        let (nats, pool) = (connections.nats.clone(), connections.pool.clone());
        let mut registry = Registry::default();
        let metrics = WorkerMetrics::register(&mut registry);
        let (ops_server, consuming, setup) = OpsServer::spawn_background(connections, registry, "not consuming yet");

        if let Some([mut webhooks, mut heartbeats]) = prepare(&config, &nats, &pool, metrics, &setup, &shutdown).await {
            consuming.store(true, Ordering::Relaxed);
            let depth_watch = webhooks.watch_dead_letter_depth(shutdown.clone());
            tracing::info!(consumer = config.consumer_name, "consuming");
            tokio::join!(consume(&mut webhooks, &shutdown), consume(&mut heartbeats, &shutdown));
            consuming.store(false, Ordering::Relaxed);
            let _ = depth_watch.await;
        }

        ops::close_connections(&pool, &nats).await;
        let served = ops_server.stop().await;
        tracing::info!("worker stopped");
        served
    }
}

/// The workers' durable consumer (of webhooks, and of heartbeats beside it), as `config` sets it.
pub fn consumer_config(config: &WorkerConfig) -> pull::Config {
    pull::Config {
        durable_name: Some(config.consumer_name.clone()),
        description: Some("Attendance workers: apply webhook events to PostgreSQL".into()),
        deliver_policy: DeliverPolicy::All,
        ack_policy: AckPolicy::Explicit,
        ack_wait: config.ack_wait,
        max_deliver: config.max_deliver + CRASH_MARGIN,
        max_ack_pending: config.max_ack_pending,
        ..Default::default()
    }
}

/// Runs a consumer until shutdown, restarting its loop after a failure.
async fn consume(consumer: &mut Consumer, shutdown: &CancellationToken) {
    while !shutdown.is_cancelled() {
        if let Err(error) = consumer.run(shutdown).await {
            tracing::warn!(%error, "consumer loop stopped; restarting it");
            tokio::select! {
                () = shutdown.cancelled() => {}
                () = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
            }
        }
    }
}

/// Migrations, the dead-letter stream, the webhook and heartbeat streams and the shared
/// consumers of both (webhooks, heartbeats); `None` if shutdown came first.
async fn prepare(
    config: &WorkerConfig,
    nats: &async_nats::Client,
    pool: &sqlx::PgPool,
    metrics: WorkerMetrics,
    setup: &SetupFailure,
    shutdown: &CancellationToken,
) -> Option<[Consumer; 2]> {
    startup_retry::until_ok(shutdown, "database migrations", || MIGRATOR.run(pool)).await?;
    // A migration may leave meetings to rebuild from the log (replicas share the work: each
    // meeting under its lock, and rebuilding one twice changes nothing).
    let policy = config.policy.policy();
    startup_retry::until_ok(shutdown, "rebuilding meetings", || crate::recompute::rebuild_pending(pool, &policy))
        .await?;
    let dead_letters = DeadLetterStream::new(nats.clone(), &config.dead_letters);
    setup.run(shutdown, "dead-letter stream set-up", || dead_letters.ensure()).await?;
    let webhooks = WebhookStream::new(nats.clone(), &config.stream);
    setup.run(shutdown, "webhook stream set-up", || webhooks.ensure()).await?;
    let consumer_config = consumer_config(config);
    let consumer =
        setup.run(shutdown, "consumer set-up", || webhooks.durable_consumer(consumer_config.clone())).await?;
    let heartbeat_consumer = setup
        .run(shutdown, "heartbeat consumer set-up", || webhooks.heartbeat_consumer(consumer_config.clone()))
        .await?;
    let settings = Settings {
        max_deliver: config.max_deliver,
        batch_size: usize::from(config.batch_size),
        retry_min_delay: config.retry_min_delay,
        retry_max_delay: config.retry_max_delay,
        policy: config.policy.policy(),
    };
    let progress = WebhookProgress::new(consumer.clone(), webhooks.clone());
    Some([
        Consumer::new(
            consumer,
            Order::Webhooks(progress.clone()),
            pool.clone(),
            dead_letters.clone(),
            metrics.clone(),
            settings.clone(),
        ),
        Consumer::new(
            heartbeat_consumer,
            Order::AfterWebhooks(progress),
            pool.clone(),
            dead_letters,
            metrics,
            settings,
        ),
    ])
}
