//! The operational HTTP surface every service exposes: `/healthz` (the process is alive),
//! `/readyz` (its dependencies are usable) and `/metrics` (Prometheus text format).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus_client::registry::Registry;

/// A readiness check: resolves to `Err(reason)` when the service should not receive traffic.
pub type ReadinessCheck = Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Result<(), String>> + Send>> + Send + Sync>;

/// `/healthz`, `/readyz` and `/metrics`, served on a service's own metrics address.
pub fn router(registry: Arc<Registry>, readiness: ReadinessCheck) -> Router {
    Router::new().route("/metrics", get(metrics)).with_state(registry).merge(probes(readiness))
}

/// `/healthz` and `/readyz` alone: what a public listener may also answer (load balancers and
/// kubelets probe it), while the metrics stay on the metrics address.
pub fn probes(readiness: ReadinessCheck) -> Router {
    Router::new()
        .route("/healthz", get(|| async { axum::Json(serde_json::json!({"status": "ok"})) }))
        .route("/readyz", get(readyz))
        .with_state(readiness)
}

async fn readyz(State(readiness): State<ReadinessCheck>) -> Response {
    match readiness().await {
        Ok(()) => axum::Json(serde_json::json!({"status": "ready"})).into_response(),
        Err(reason) => {
            (StatusCode::SERVICE_UNAVAILABLE, axum::Json(serde_json::json!({"error": "not_ready", "message": reason})))
                .into_response()
        }
    }
}

async fn metrics(State(registry): State<Arc<Registry>>) -> Response {
    let mut text = String::new();
    match prometheus_client::encoding::text::encode(&mut text, &registry) {
        Ok(()) => ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], text)
            .into_response(),
        Err(error) => {
            tracing::error!(%error, "cannot encode metrics");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

/// Serves the ops router alone on `listener` until `shutdown` is cancelled (worker, sweeper).
pub async fn serve(
    listener: tokio::net::TcpListener,
    registry: Arc<Registry>,
    readiness: ReadinessCheck,
    shutdown: tokio_util::sync::CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, router(registry, readiness)).with_graceful_shutdown(shutdown.cancelled_owned()).await
}

/// Why a service cannot become ready until its configuration (or a server's) changes: a
/// permanent set-up failure, which `/readyz` then shows instead of the service retrying for ever.
#[derive(Clone, Default)]
pub struct SetupFailure(Arc<std::sync::Mutex<Option<String>>>);

impl SetupFailure {
    pub fn set(&self, reason: impl std::fmt::Display) {
        *self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(reason.to_string());
    }

    /// `Err(reason)` once a permanent failure was set.
    pub fn check(&self) -> Result<(), String> {
        match self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).as_ref() {
            Some(reason) => Err(reason.clone()),
            None => Ok(()),
        }
    }
}

impl SetupFailure {
    /// Runs a set-up step until it succeeds, retrying what may pass later; a permanent failure
    /// is recorded here (so `/readyz` says why) and the service then waits, up but not ready,
    /// for its shutdown instead of retrying for ever. `None` unless the step succeeded.
    pub async fn run<T, E, F, Fut>(
        &self,
        shutdown: &tokio_util::sync::CancellationToken,
        what: &str,
        attempt: F,
    ) -> Option<T>
    where
        E: std::fmt::Display + super::startup_retry::Permanent,
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        match super::startup_retry::until_ok_or_permanent(shutdown, what, attempt).await? {
            Ok(value) => Some(value),
            Err(error) => {
                self.set(format!("{what}: {error}"));
                shutdown.cancelled().await;
                None
            }
        }
    }
}

/// Readiness of a background service (worker, sweeper): no permanent set-up failure, NATS
/// connected, PostgreSQL answering, and its main loop running (`running`, else `not_running` is
/// the reason).
pub fn background_readiness(
    (nats, nats_health): (async_nats::Client, crate::nats::NatsHealth),
    pool: sqlx::PgPool,
    running: Arc<std::sync::atomic::AtomicBool>,
    not_running: &'static str,
    failure: SetupFailure,
) -> ReadinessCheck {
    Arc::new(move || {
        let (nats, nats_health, pool, running, failure) =
            (nats.clone(), nats_health.clone(), pool.clone(), running.clone(), failure.clone());
        Box::pin(async move {
            failure.check()?;
            nats_health.check(&nats)?;
            crate::store::ping(&pool).await?;
            if running.load(std::sync::atomic::Ordering::Relaxed) { Ok(()) } else { Err(not_running.into()) }
        })
    })
}

/// The probes and metrics server of a background service, on its own task, so that it answers
/// through start-up retries and shutdown; [`OpsServer::stop`] ends it last.
pub struct OpsServer {
    stop: tokio_util::sync::CancellationToken,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
    addr: std::net::SocketAddr,
}

impl OpsServer {
    pub fn spawn(listener: tokio::net::TcpListener, registry: Arc<Registry>, readiness: ReadinessCheck) -> Self {
        let stop = tokio_util::sync::CancellationToken::new();
        let addr = listener.local_addr().expect("a bound listener has an address");
        let task = tokio::spawn(serve(listener, registry, readiness, stop.clone()));
        OpsServer { stop, task, addr }
    }

    /// Where it listens.
    pub fn local_addr(&self) -> std::net::SocketAddr {
        self.addr
    }

    /// The ops server of a background service, ready when NATS and PostgreSQL are and the
    /// returned flag is set (its main loop runs); else `not_running` is the reason, or the
    /// permanent set-up failure set in the returned [`SetupFailure`].
    pub fn spawn_background(
        connections: ServiceConnections,
        registry: Registry,
        not_running: &'static str,
    ) -> (Self, Arc<std::sync::atomic::AtomicBool>, SetupFailure) {
        let ServiceConnections { listener, nats, nats_health, pool } = connections;
        let running = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let failure = SetupFailure::default();
        let readiness = background_readiness((nats, nats_health), pool, running.clone(), not_running, failure.clone());
        (Self::spawn(listener, Arc::new(registry), readiness), running, failure)
    }

    pub async fn stop(self) -> std::io::Result<()> {
        self.stop.cancel();
        self.task.await.unwrap_or(Ok(()))
    }
}

/// Closes a background service's connections on shutdown: the pool, then what NATS still buffers.
pub async fn close_connections(pool: &sqlx::PgPool, nats: &async_nats::Client) {
    pool.close().await;
    crate::nats::connection::flush_before_exit(nats).await;
}

/// What a background service (worker, sweeper) opens in `build`, before it runs: its probes
/// port (bound first, so tests can use port 0), NATS and the database pool (both connect in the
/// background, so the service starts, not ready, during an outage).
pub struct ServiceConnections {
    pub listener: tokio::net::TcpListener,
    pub nats: async_nats::Client,
    /// Why NATS is not usable, for readiness.
    pub nats_health: crate::nats::NatsHealth,
    pub pool: sqlx::PgPool,
}

impl ServiceConnections {
    pub async fn open(
        probes_addr: std::net::SocketAddr,
        nats: &crate::nats::NatsArgs,
        database: &crate::runtime::database::DatabaseArgs,
        client_name: &str,
    ) -> Result<Self, crate::runtime::config::StartupError> {
        let listener = crate::runtime::config::bind(probes_addr).await?;
        let (nats, nats_health) = nats.connect(client_name).await?;
        let pool = database.background_pool()?;
        Ok(ServiceConnections { listener, nats, nats_health, pool })
    }

    pub fn local_addr(&self) -> std::net::SocketAddr {
        self.listener.local_addr().expect("a bound listener has an address")
    }
}
