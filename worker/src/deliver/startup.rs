//! Building and running `worker deliver`. `build` checks the configuration and the endpoints
//! file, binds the probes port and connects; `run` prepares what it needs (migrations, the
//! streams, a consumer per endpoint), retrying while NATS or PostgreSQL are down, then runs one
//! loop per enabled endpoint until the shutdown token is cancelled, reading the endpoints file
//! again on SIGHUP and when it changes, and the disabled endpoints every few seconds.
//!
//! Invariant: at shutdown, pulling stops first, then every delivery in flight finishes (each is
//! bounded by the timeout) and is acknowledged or handed back before the connections close.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use async_nats::jetstream::{self, consumer::PullConsumer};
use prometheus_client::registry::Registry;
use shared::nats::StreamSettings;
use shared::nats::dead_letters::DeadLetterStream;
use shared::nats::reports::ReportStream;
use shared::runtime::config::StartupError;
use shared::runtime::ops::{self, OpsServer, ServiceConnections, SetupFailure};
use shared::runtime::shutdown::Ticks;
use shared::runtime::startup_retry;
use shared::store::MIGRATOR;
use shared::store::deliveries::{self, DisabledEndpoint};
use sqlx::PgPool;
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::attempt::Deliverer;
use super::config::DeliverConfig;
use super::consumer::{ConsumerSettings, EndpointLoop, ensure_consumer};
use super::destination::Policy;
use super::endpoints::{self, Endpoint};
use super::metrics::{DeliveryMetrics, EndpointLabel, ReloadLabel};
use super::send::Client;

/// How often the endpoints file and the disabled endpoints are read again.
const RELOAD_INTERVAL: Duration = Duration::from_secs(5);
/// How often old delivery attempts are deleted, and how many per statement.
const PURGE_INTERVAL: Duration = Duration::from_secs(3600);
const PURGE_BATCH: i64 = 10_000;
/// Deliveries the server allows beyond the schedule's attempts (see `ConsumerSettings`).
const CRASH_MARGIN: i64 = crate::consume::CRASH_MARGIN;

pub struct Application {
    config: DeliverConfig,
    connections: ServiceConnections,
    client: Client,
    policy: Policy,
    /// The endpoints file as read at start-up, and its bytes.
    endpoints: Vec<Endpoint>,
    file: Vec<u8>,
}

impl Application {
    pub async fn build(config: DeliverConfig) -> Result<Self, StartupError> {
        config.check().map_err(StartupError::Invalid)?;
        let policy = Policy::new(config.allowed_networks.0.clone());
        let (endpoints, file) = endpoints::load(&config.endpoints_file, &policy)
            .map_err(|error| StartupError::Invalid(error.to_string()))?;
        let client = Client::new(policy.clone(), config.timeout, config.ca_file.as_deref())
            .map_err(|error| StartupError::Invalid(error.to_string()))?;
        let connections =
            ServiceConnections::open(config.metrics_addr, &config.nats, &config.database, "attendance-deliver").await?;
        Ok(Application { config, connections, client, policy, endpoints, file })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.connections.local_addr()
    }

    /// Runs until `shutdown` is cancelled; `reload` asks for the endpoints file to be read again.
    pub async fn run(self, shutdown: CancellationToken, reload: Arc<Notify>) -> std::io::Result<()> {
        let Application { config, connections, client, policy, endpoints, file } = self;
        let (nats, pool) = (connections.nats.clone(), connections.pool.clone());
        let mut registry = Registry::default();
        let metrics = DeliveryMetrics::register(&mut registry);
        let (ops_server, delivering, setup) = OpsServer::spawn_background(connections, registry, "not delivering yet");

        let prepared = prepare(&config, &nats, &pool, &setup, &shutdown, &endpoints).await;
        if let Some((dead_letters, consumers)) = prepared {
            let deliverer = Arc::new(Deliverer {
                client,
                pool: pool.clone(),
                dead_letters,
                metrics: metrics.clone(),
                schedule: config.retry_schedule.clone(),
                max_retry_after: config.max_retry_after,
                subject_prefix: config.reports.subject_prefix.clone(),
            });
            let mut fleet = Fleet {
                path: config.endpoints_file.clone(),
                policy,
                endpoints: endpoints.into_iter().map(Arc::new).collect(),
                file,
                disabled: Vec::new(),
                jetstream: jetstream::new(nats.clone()),
                stream: config.reports.settings(),
                consumer_settings: consumer_settings(&config),
                consumers,
                concurrency: usize::from(config.concurrency),
                running: HashMap::new(),
                loops: TaskTracker::new(),
                deliveries: TaskTracker::new(),
                deliverer,
                pool: pool.clone(),
                metrics,
            };
            let purge = tokio::spawn(purge_attempts(pool.clone(), config.attempts_max_age, shutdown.clone()));
            delivering.store(true, Ordering::Relaxed);
            tracing::info!(endpoints = fleet.endpoints.len(), "delivering");
            fleet.supervise(&shutdown, &reload).await;
            delivering.store(false, Ordering::Relaxed);
            fleet.finish().await;
            let _ = purge.await;
        }

        ops::close_connections(&pool, &nats).await;
        let served = ops_server.stop().await;
        tracing::info!("deliverer stopped");
        served
    }
}

fn consumer_settings(config: &DeliverConfig) -> ConsumerSettings {
    ConsumerSettings {
        ack_wait: config.ack_wait(),
        max_deliver: config.retry_schedule.attempts() + CRASH_MARGIN,
        max_ack_pending: config.max_pending,
    }
}

/// Migrations, the dead-letter and report streams, and the consumer of every endpoint of the
/// file (disabled ones too: what is published while they are disabled waits for them); `None`
/// if shutdown came first.
async fn prepare(
    config: &DeliverConfig,
    nats: &async_nats::Client,
    pool: &PgPool,
    setup: &SetupFailure,
    shutdown: &CancellationToken,
    endpoints: &[Endpoint],
) -> Option<(DeadLetterStream, HashMap<String, PullConsumer>)> {
    startup_retry::until_ok(shutdown, "database migrations", || MIGRATOR.run(pool)).await?;
    let dead_letters = DeadLetterStream::new(nats.clone(), &config.dead_letters);
    setup.run(shutdown, "dead-letter stream set-up", || dead_letters.ensure()).await?;
    let reports = ReportStream::new(nats.clone(), &config.reports);
    setup.run(shutdown, "report stream set-up", || reports.ensure()).await?;
    let jetstream = jetstream::new(nats.clone());
    let settings = consumer_settings(config);
    let mut consumers = HashMap::new();
    for endpoint in endpoints {
        let what = format!("consumer set-up of endpoint {}", endpoint.name);
        let consumer = setup
            .run(shutdown, &what, || ensure_consumer(&jetstream, reports.settings(), &endpoint.name, &settings))
            .await?;
        consumers.insert(endpoint.name.clone(), consumer);
    }
    Some((dead_letters, consumers))
}

/// The endpoints in force and their loops on this replica.
struct Fleet {
    path: PathBuf,
    policy: Policy,
    endpoints: Vec<Arc<Endpoint>>,
    /// The bytes of the file in force (or last refused), to tell when it changes.
    file: Vec<u8>,
    /// As last read from PostgreSQL.
    disabled: Vec<DisabledEndpoint>,
    jetstream: jetstream::Context,
    stream: StreamSettings,
    consumer_settings: ConsumerSettings,
    /// Each endpoint's consumer, once created.
    consumers: HashMap<String, PullConsumer>,
    concurrency: usize,
    /// The loops running, by endpoint name.
    running: HashMap<String, Running>,
    loops: TaskTracker,
    deliveries: TaskTracker,
    deliverer: Arc<Deliverer>,
    pool: PgPool,
    metrics: DeliveryMetrics,
}

/// A running endpoint loop, as its supervisor holds it.
struct Running {
    /// The endpoint in force, which the loop reads at each delivery.
    endpoint: watch::Sender<Arc<Endpoint>>,
    /// Stops the loop; the loop cancels it itself after a 410.
    stop: CancellationToken,
}

impl Fleet {
    /// Keeps the loops in line with the file and the disabled endpoints until `shutdown`.
    async fn supervise(&mut self, shutdown: &CancellationToken, reload: &Notify) {
        let mut ticks = Ticks::every(RELOAD_INTERVAL, shutdown);
        loop {
            tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                () = reload.notified() => {
                    tracing::info!("SIGHUP: reading the endpoints file again");
                    self.reload(true).await;
                }
                more = ticks.next() => {
                    if !more {
                        break;
                    }
                    self.reload(false).await;
                }
            }
            self.reconcile(shutdown).await;
        }
    }

    /// Stops every loop, then waits for the deliveries in flight.
    async fn finish(self) {
        for running in self.running.values() {
            running.stop.cancel();
        }
        self.loops.close();
        self.loops.wait().await;
        self.deliveries.close();
        self.deliveries.wait().await;
    }

    /// Reads the endpoints file if it changed (or `always`); an invalid one leaves the one in
    /// force as it is.
    async fn reload(&mut self, always: bool) {
        let bytes = match tokio::fs::read(&self.path).await {
            Ok(bytes) => bytes,
            Err(error) => {
                tracing::error!(path = %self.path.display(), %error, "cannot read the endpoints file; the endpoints in force stay");
                return;
            }
        };
        if bytes == self.file && !always {
            return;
        }
        let parsed = std::str::from_utf8(&bytes)
            .map_err(|_| endpoints::EndpointsError::Yaml("not UTF-8".into()))
            .and_then(|text| endpoints::parse(text, &self.policy));
        self.file = bytes;
        match parsed {
            Ok(endpoints) => {
                let names: Vec<&str> = endpoints.iter().map(|endpoint| endpoint.name.as_str()).collect();
                tracing::info!(endpoints = ?names, "endpoints file read");
                self.endpoints = endpoints.into_iter().map(Arc::new).collect();
                // Running endpoints take their changes (a secret rotation) at once; starting and
                // stopping loops is the reconciliation's.
                for endpoint in &self.endpoints {
                    if let Some(running) = self.running.get(&endpoint.name)
                        && **running.endpoint.borrow() != **endpoint
                    {
                        running.endpoint.send_replace(endpoint.clone());
                        tracing::info!(endpoint = endpoint.name, "endpoint changed: the next deliveries use it");
                    }
                }
                self.metrics.reloads.get_or_create(&ReloadLabel { result: "applied" }).inc();
            }
            Err(error) => {
                self.metrics.reloads.get_or_create(&ReloadLabel { result: "refused" }).inc();
                tracing::error!(%error, "the endpoints file is invalid; the endpoints in force stay");
            }
        }
    }

    /// Starts, updates and stops loops so that exactly the enabled endpoints of the file run.
    async fn reconcile(&mut self, shutdown: &CancellationToken) {
        // Loops that stopped themselves (a 410) recorded the endpoint as disabled before: the
        // disabled endpoints read next include it.
        self.running.retain(|_, running| !running.stop.is_cancelled());
        match deliveries::disabled_endpoints(&self.pool).await {
            Ok(disabled) => self.disabled = disabled,
            Err(error) => tracing::warn!(%error, "cannot read the disabled endpoints; keeping the last known"),
        }
        let configured: BTreeSet<String> = self.endpoints.iter().map(|endpoint| endpoint.name.clone()).collect();
        let metrics = &self.metrics;
        self.running.retain(|name, running| {
            let keep = configured.contains(name);
            if !keep {
                running.stop.cancel();
                metrics.disabled.remove(&EndpointLabel { endpoint: name.clone() });
                tracing::info!(endpoint = name, "endpoint removed from the file: stopped");
            }
            keep
        });
        for endpoint in self.endpoints.clone() {
            let name = endpoint.name.clone();
            let url = endpoint.destination.url();
            let disabled = self.disabled.iter().any(|d| d.endpoint == name && d.url == url);
            self.metrics.disabled.get_or_create(&EndpointLabel { endpoint: name.clone() }).set(i64::from(disabled));
            if disabled {
                if let Some(running) = self.running.remove(&name) {
                    running.stop.cancel();
                    tracing::info!(endpoint = name, "endpoint disabled: stopped");
                }
                continue;
            }
            if let Some(running) = self.running.get(&name) {
                if **running.endpoint.borrow() != *endpoint {
                    running.endpoint.send_replace(endpoint);
                    tracing::info!(endpoint = name, "endpoint changed: the next deliveries use it");
                }
                continue;
            }
            let Some(consumer) = self.consumer(&name).await else { continue };
            let (sender, receiver) = watch::channel(endpoint);
            let stop = shutdown.child_token();
            let endpoint_loop = EndpointLoop {
                consumer,
                endpoint: receiver,
                deliverer: self.deliverer.clone(),
                concurrency: self.concurrency,
                stop: stop.clone(),
                tracker: self.deliveries.clone(),
            };
            self.loops.spawn(endpoint_loop.run());
            tracing::info!(endpoint = name, "delivering to endpoint");
            self.running.insert(name, Running { endpoint: sender, stop });
        }
        self.metrics.endpoints.set(i64::try_from(self.endpoints.len()).unwrap_or(i64::MAX));
    }

    /// The endpoint's consumer, created if needed; `None` (logged, tried again at the next
    /// round) if NATS refuses.
    async fn consumer(&mut self, name: &str) -> Option<PullConsumer> {
        if let Some(consumer) = self.consumers.get(name) {
            return Some(consumer.clone());
        }
        match ensure_consumer(&self.jetstream, &self.stream, name, &self.consumer_settings).await {
            Ok(consumer) => {
                self.consumers.insert(name.to_owned(), consumer.clone());
                Some(consumer)
            }
            Err(error) => {
                tracing::warn!(endpoint = name, %error, "cannot set up the endpoint's consumer; trying again soon");
                None
            }
        }
    }
}

/// Deletes delivery attempts older than `max_age`, every hour, until `shutdown`.
async fn purge_attempts(pool: PgPool, max_age: Duration, shutdown: CancellationToken) {
    let mut ticks = Ticks::every(PURGE_INTERVAL, &shutdown);
    while ticks.next().await {
        let cutoff = time::OffsetDateTime::now_utc() - max_age;
        let mut purged = 0;
        loop {
            match deliveries::delete_attempts_before(&pool, cutoff, PURGE_BATCH).await {
                Ok(deleted) => {
                    purged += deleted;
                    if deleted < PURGE_BATCH.unsigned_abs() || shutdown.is_cancelled() {
                        break;
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, "cannot delete old delivery attempts; trying again in an hour");
                    break;
                }
            }
        }
        if purged > 0 {
            tracing::info!(purged, "old delivery attempts deleted");
        }
    }
}
