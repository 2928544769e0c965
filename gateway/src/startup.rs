//! Building and running the gateway. `build` binds the listener first (so tests can use port 0
//! and ask for the port) and `run` takes the shutdown signal as an argument.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use shared::nats::NatsHealth;
use shared::nats::webhooks::WebhookStream;
use shared::runtime::config::StartupError;
use shared::runtime::ops::{OpsServer, ReadinessCheck, SetupFailure};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::GatewayConfig;
use crate::heartbeat::{HeartbeatState, RateLimiter};
use crate::limits::RequestLimits;
use crate::metrics::{GatewayMetrics, StreamLabel};
use crate::presence_stream::PresenceStreams;
use crate::read_api::ReadState;
use crate::routes::{AppState, router};
use crate::server::{self, ConnectionArgs};
use crate::view_links::ViewLinkState;
use crate::webhook::WebhookState;

/// A gateway bound to its port, ready to run.
pub struct Application {
    listener: TcpListener,
    router: Router,
    connections: ConnectionArgs,
    /// `/metrics` (and the probes) on the metrics address, up from start-up to the very end.
    ops: OpsServer,
    /// A permanent failure to set the stream up, which readiness reports.
    setup: SetupFailure,
    /// `gateway_stream_bytes` and `gateway_stream_max_bytes`.
    fill_gauges: (Family<StreamLabel, Gauge>, Family<StreamLabel, Gauge>),
    nats: async_nats::Client,
    stream: WebhookStream,
    /// Cancelled with the shutdown signal, to end the live presence streams.
    streams_shutdown: CancellationToken,
}

impl Application {
    pub async fn build(config: GatewayConfig) -> Result<Self, StartupError> {
        let keys = config.keys.key_set()?;
        tracing::info!(api_keys = ?keys.key_ids().collect::<Vec<_>>(), "LiveKit keys loaded");
        let listener = shared::runtime::config::bind(config.listen_addr).await?;
        let metrics_listener = shared::runtime::config::bind(config.metrics_addr).await?;
        let (nats, nats_health) = config.nats.connect("attendance-gateway").await?;
        let stream = WebhookStream::new(nats.clone(), &config.stream);

        let mut registry = Registry::default();
        let metrics = GatewayMetrics::register(&mut registry);
        let fill_gauges = (metrics.stream_bytes.clone(), metrics.stream_max_bytes.clone());
        let pool = config.database.pool()?;
        let streams_shutdown = CancellationToken::new();
        let limits = RequestLimits::new(&config.requests);
        let setup = SetupFailure::default();
        let state_readiness = readiness_check((nats.clone(), nats_health), stream.clone(), setup.clone());
        let state = AppState {
            heartbeats: Arc::new(HeartbeatState {
                keys: keys.clone(),
                stream: stream.clone(),
                publish_timeout: config.publish_timeout,
                limiter: RateLimiter::new(config.heartbeat_min_interval, config.heartbeat_burst),
            }),
            reads: Arc::new(ReadState {
                keys: keys.clone(),
                pool,
                nats: nats.clone(),
                presence: PresenceStreams::new(&config.presence_streams, &config.presence),
                shutdown: streams_shutdown.clone(),
                policy: config.policy.policy(),
            }),
            webhooks: Arc::new(WebhookState {
                keys: keys.clone(),
                stream: stream.clone(),
                body_limit: config.body_limit,
                body_timeout: config.body_timeout,
                publish_timeout: config.publish_timeout,
                metrics,
                limits: limits.clone(),
            }),
            view_links: Arc::new(ViewLinkState { keys, args: config.view_links.clone() }),
            readiness: state_readiness.clone(),
            limits,
            cors_allowed_origins: config.cors_allowed_origins.clone(),
        };
        let connections = config.connections.clone();
        let ops = OpsServer::spawn(metrics_listener, Arc::new(registry), state_readiness);
        Ok(Application {
            listener,
            router: router(state),
            connections,
            ops,
            setup,
            fill_gauges,
            nats,
            stream,
            streams_shutdown,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("a bound listener has an address")
    }

    /// Where `/metrics` is served.
    pub fn metrics_addr(&self) -> SocketAddr {
        self.ops.local_addr()
    }

    /// Serves until `shutdown` is cancelled, then lets in-flight requests finish (each is bounded
    /// by the publish timeout) and flushes what is still buffered for NATS.
    pub async fn run(self, shutdown: CancellationToken) -> std::io::Result<()> {
        let tasks = TaskTracker::new();
        tasks.spawn(ensure_stream(self.stream.clone(), self.setup.clone(), shutdown.clone()));
        tasks.spawn(watch_stream_fill(self.stream.clone(), self.fill_gauges.clone(), shutdown.clone()));
        let (signal, streams_shutdown) = (shutdown.clone(), self.streams_shutdown.clone());
        tasks.spawn(async move {
            signal.cancelled().await;
            streams_shutdown.cancel();
        });
        tracing::info!(addr = %self.local_addr(), "gateway listening");
        let served = server::serve(self.listener, self.router, &self.connections, shutdown.clone()).await;
        shutdown.cancel();
        tasks.close();
        tasks.wait().await;
        shared::nats::connection::flush_before_exit(&self.nats).await;
        self.ops.stop().await?;
        tracing::info!("gateway stopped");
        served
    }
}

fn readiness_check(
    (nats, nats_health): (async_nats::Client, NatsHealth),
    stream: WebhookStream,
    setup: SetupFailure,
) -> ReadinessCheck {
    Arc::new(move || {
        let (nats, nats_health, stream, setup) = (nats.clone(), nats_health.clone(), stream.clone(), setup.clone());
        Box::pin(async move {
            setup.check()?;
            nats_health.check(&nats)?;
            if stream.is_present().await { Ok(()) } else { Err(format!("stream {} is not present", stream.name())) }
        })
    })
}

/// Creates the stream if missing (an existing one is checked, not changed), retrying while NATS
/// is unreachable, so that the gateway can start during an outage (and reports not ready until
/// this succeeds, or why it cannot).
async fn ensure_stream(stream: WebhookStream, setup: SetupFailure, shutdown: CancellationToken) {
    if setup.run(&shutdown, "stream set-up", || stream.ensure()).await.is_some() {
        tracing::info!(stream = stream.name(), "stream ready");
    }
}

/// Reads how full the streams are every 15 s, for the metrics that warn before a stream's byte
/// limit makes its publishes fail. A failed read is skipped (readiness reports NATS itself).
async fn watch_stream_fill(
    stream: WebhookStream,
    (bytes, max_bytes): (Family<StreamLabel, Gauge>, Family<StreamLabel, Gauge>),
    shutdown: CancellationToken,
) {
    let mut ticks = tokio::time::interval(std::time::Duration::from_secs(15));
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = ticks.tick() => {}
        }
        match stream.fill().await {
            Ok(fills) => {
                for fill in fills {
                    let label = StreamLabel { stream: fill.stream };
                    bytes.get_or_create(&label).set(i64::try_from(fill.bytes).unwrap_or(i64::MAX));
                    max_bytes.get_or_create(&label).set(fill.max_bytes);
                }
            }
            Err(error) => tracing::debug!(%error, "cannot read the streams' sizes"),
        }
    }
}
