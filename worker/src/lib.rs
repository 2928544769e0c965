//! The worker fleet: consumes the webhook stream and applies events to PostgreSQL.
//!
//! For now it connects to NATS and PostgreSQL, serves its probes and metrics, and shuts down
//! cleanly; applying events comes with the attendance rule.

use std::net::SocketAddr;
use std::sync::Arc;

use prometheus_client::registry::Registry;
use shared::config::{NatsArgs, StartupError};
use shared::db::DatabaseArgs;
use shared::ops::{self, ReadinessCheck};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone, clap::Parser)]
#[command(name = "worker", version)]
pub struct Config {
    /// Address of the probes and metrics HTTP server.
    #[arg(long, env = "METRICS_ADDR", default_value = "0.0.0.0:9091")]
    pub metrics_addr: SocketAddr,
    #[command(flatten)]
    pub nats: NatsArgs,
    #[command(flatten)]
    pub database: DatabaseArgs,
}

/// A worker bound to its port, ready to run.
pub struct Application {
    listener: TcpListener,
    nats: async_nats::Client,
    database: sqlx::PgPool,
}

impl Application {
    pub async fn build(config: Config) -> Result<Self, StartupError> {
        let listener = shared::config::bind(config.metrics_addr).await?;
        let nats = config.nats.connect("attendance-worker").await?;
        let database = config.database.pool()?;
        Ok(Application { listener, nats, database })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("a bound listener has an address")
    }

    /// Runs until `shutdown` is cancelled.
    pub async fn run(self, shutdown: CancellationToken) -> std::io::Result<()> {
        let (nats, database) = (self.nats.clone(), self.database.clone());
        let readiness: ReadinessCheck = Arc::new(move || {
            let (nats, database) = (nats.clone(), database.clone());
            Box::pin(async move {
                ops::nats_connected(&nats)?;
                shared::db::ping(&database).await
            })
        });
        tracing::info!(addr = %self.local_addr(), "worker probes listening");
        ops::serve(self.listener, Arc::new(Registry::default()), readiness, shutdown).await?;
        self.database.close().await;
        if let Err(error) = self.nats.flush().await {
            tracing::warn!(%error, "could not flush NATS on shutdown");
        }
        tracing::info!("worker stopped");
        Ok(())
    }
}
