//! Building and running a sweeper: cancellable loops, the sweep, the outboxes' publisher and,
//! with `LIVEKIT_URL`, the reconciliation with the LiveKit server.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;

use prometheus_client::registry::Registry;
use shared::domain::time::millis;
use shared::livekit::room_service::RoomService;
use shared::nats::presence::PresenceStream;
use shared::nats::reports::ReportStream;
use shared::runtime::config::StartupError;
use shared::runtime::http_client::{OriginClient, tls_client_config};
use shared::runtime::ops::{self, OpsServer, ServiceConnections};
use shared::runtime::shutdown::Ticks;
use shared::runtime::startup_retry;
use shared::store::closures::Staleness;
use shared::store::{MIGRATOR, presence_outbox, report_outbox};
use tokio_util::sync::CancellationToken;

use crate::config::{ReconcileArgs, SweeperConfig};
use crate::metrics::{ClosedByLabel, SweeperMetrics};
use crate::reconcile::Reconciler;
use crate::{publish_presence, publish_reports, sweep};

pub struct Application {
    config: SweeperConfig,
    connections: ServiceConnections,
    /// LiveKit's RoomService, when reconciliation is on (`LIVEKIT_URL`).
    room_service: Option<RoomService>,
}

impl Application {
    pub async fn build(config: SweeperConfig) -> Result<Self, StartupError> {
        let room_service = room_service(&config.reconcile)?;
        let connections =
            ServiceConnections::open(config.metrics_addr, &config.nats, &config.database, "attendance-sweeper").await?;
        Ok(Application { config, connections, room_service })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.connections.local_addr()
    }

    /// Runs until `shutdown` is cancelled; the round in progress finishes first.
    pub async fn run(self, shutdown: CancellationToken) -> std::io::Result<()> {
        let Application { config, connections, room_service } = self;
        let (nats, pool) = (connections.nats.clone(), connections.pool.clone());
        let mut registry = Registry::default();
        let metrics = SweeperMetrics::register(&mut registry);
        let (ops_server, running, setup) = OpsServer::spawn_background(connections, registry, "not sweeping yet");

        let presence = PresenceStream::new(nats.clone(), &config.presence);
        let reports = ReportStream::new(nats.clone(), &config.reports);
        let prepared = async {
            startup_retry::until_ok(&shutdown, "database migrations", || MIGRATOR.run(&pool)).await?;
            setup.run(&shutdown, "presence stream set-up", || presence.ensure()).await?;
            setup.run(&shutdown, "report stream set-up", || reports.ensure()).await
        };
        if prepared.await.is_some() {
            running.store(true, Ordering::Relaxed);
            tracing::info!("sweeping");
            let reconciler = room_service.map(|service| Reconciler {
                service,
                pool: pool.clone(),
                interval: config.reconcile.reconcile_interval,
                max_rps: config.reconcile.reconcile_max_rps,
                concurrency: usize::from(config.reconcile.reconcile_concurrency),
                policy: config.policy.policy(),
                metrics: metrics.clone(),
            });
            tokio::join!(
                sweep_loop(&config, &pool, &metrics, &shutdown),
                outbox_loop(&config, &pool, (&presence, &reports), &metrics, &shutdown),
                async {
                    if let Some(reconciler) = reconciler {
                        reconciler.run(&shutdown).await;
                    }
                }
            );
            running.store(false, Ordering::Relaxed);
        }

        ops::close_connections(&pool, &nats).await;
        let served = ops_server.stop().await;
        tracing::info!("sweeper stopped");
        served
    }
}

/// LiveKit's RoomService client, when `LIVEKIT_URL` is set: it calls with `LIVEKIT_API_KEY` (else
/// the first key configured).
fn room_service(args: &ReconcileArgs) -> Result<Option<RoomService>, StartupError> {
    let Some(origin) = args.livekit_url.clone() else {
        tracing::info!("LIVEKIT_URL is not set: no reconciliation with the LiveKit server");
        return Ok(None);
    };
    let keys = args.keys.key_set()?;
    let (api_key, secret) = match args.keys.api_key.as_deref().and_then(|key| Some((key, keys.secret(key)?))) {
        Some(pair) => pair,
        None => keys.first(),
    };
    let tls = tls_client_config(args.livekit_ca_file.as_deref(), "LIVEKIT_CA_FILE")
        .map_err(|error| StartupError::Invalid(error.to_string()))?;
    tracing::info!(
        host = origin.host,
        api_key,
        interval = ?args.reconcile_interval,
        max_rps = args.reconcile_max_rps,
        "reconciling running meetings with the LiveKit server"
    );
    let client = OriginClient::new(origin, tls, args.reconcile_timeout, USER_AGENT);
    Ok(Some(RoomService::new(client, api_key, secret.clone())))
}

const USER_AGENT: &str = concat!("attendance-sweeper/", env!("CARGO_PKG_VERSION"));

async fn sweep_loop(
    config: &SweeperConfig,
    pool: &sqlx::PgPool,
    metrics: &SweeperMetrics,
    shutdown: &CancellationToken,
) {
    let mut ticks = Ticks::every(config.sweep_interval, shutdown);
    while ticks.next().await {
        let staleness = Staleness {
            now_ms: shared::domain::time::now_unix_ms(),
            heartbeat_timeout: config.heartbeat_timeout,
            max_duration: config.max_cycle_duration,
        };
        match sweep::sweep(pool, &staleness, &config.policy.policy()).await {
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
        let ended_before_ms = staleness.now_ms.saturating_sub(millis(config.event_log_retention));
        match sweep::purge_expired(pool, ended_before_ms, config.retention_batch).await {
            Ok(deleted) => {
                metrics.events_purged.inc_by(deleted);
            }
            Err(error) => {
                metrics.failed_rounds.inc();
                tracing::warn!(%error, retry_in = ?config.sweep_interval, "deleting expired events failed");
            }
        }
        match sweep::end_idle_meetings(pool, staleness.now_ms, config.meeting_end_margin, &config.policy.policy()).await
        {
            Ok(ended) => {
                metrics.meetings_ended.inc_by(ended as u64);
            }
            Err(error) => {
                metrics.failed_rounds.inc();
                tracing::warn!(%error, retry_in = ?config.sweep_interval, "ending idle meetings failed");
            }
        }
    }
}

async fn outbox_loop(
    config: &SweeperConfig,
    pool: &sqlx::PgPool,
    (presence, reports): (&PresenceStream, &ReportStream),
    metrics: &SweeperMetrics,
    shutdown: &CancellationToken,
) {
    let mut ticks = Ticks::every(config.outbox_poll_interval, shutdown);
    while ticks.next().await {
        loop {
            match publish_reports::publish_batch(pool, reports, config.outbox_batch_size).await {
                Ok(published) => {
                    metrics.reports_published.inc_by(published as u64);
                    if (published as i64) < config.outbox_batch_size || shutdown.is_cancelled() {
                        break;
                    }
                }
                Err(error) => {
                    metrics.failed_rounds.inc();
                    tracing::warn!(%error, "publishing the report outbox failed; retried next round");
                    break;
                }
            }
        }
        if let Ok(pending) = report_outbox::pending(pool).await {
            metrics.report_outbox_pending.set(pending);
        }
        // Drain what is there, a batch at a time.
        loop {
            match publish_presence::publish_batch(pool, presence, config.outbox_batch_size).await {
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
        if let Ok(pending) = presence_outbox::pending(pool).await {
            metrics.outbox_pending.set(pending);
        }
    }
}
