//! `worker deliver`: meeting reports delivered to the platform's HTTP endpoints as Standard
//! Webhooks (<https://www.standardwebhooks.com/>), from the report stream, with retries, dead
//! letters and a guard against delivering into the internal network.
//!
//! - [`config`]: the environment; [`endpoints`]: the operator's endpoints file;
//! - [`startup`]: build and run, one loop per endpoint, reloads;
//! - [`consumer`]: an endpoint's durable consumer and pull loop;
//! - [`attempt`]: one delivery attempt and what JetStream is told of it;
//! - [`schedule`]: when a failed delivery is tried again; [`subjects`]: which endpoint a
//!   message of the report stream is for, and where a delivery's dead letter replays to;
//! - [`signature`]: the signature headers; [`send`]: the HTTP client; [`destination`]: where
//!   it may connect.
//!
//! Guarantees: every report is delivered at least once to every endpoint that takes it (or
//! dead-lettered after the last attempt), always with the same `webhook-id`, the report's id; a
//! receiver de-duplicates by that id and keeps each meeting's highest `data.sequence` (reports
//! may arrive out of order: several are in flight at once, and retries come later).

pub mod attempt;
pub mod config;
pub mod consumer;
pub mod destination;
pub mod endpoints;
pub mod metrics;
pub mod schedule;
pub mod send;
pub mod signature;
pub mod startup;
pub mod subjects;

use std::sync::Arc;

use shared::runtime::config::StartupError;
use shared::store::deliveries;
use tokio::sync::Notify;

pub use config::DeliverConfig;
pub use startup::Application;

/// `worker deliver …`.
#[derive(Debug, Clone, clap::Args)]
pub struct DeliverArgs {
    #[command(subcommand)]
    pub command: Option<DeliverCommand>,
    #[command(flatten)]
    pub config: DeliverConfig,
}

/// The `worker deliver` subcommands.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum DeliverCommand {
    /// Deliver reports until SIGTERM (the default); SIGHUP reads the endpoints file again.
    Run,
    /// Enable an endpoint that answered 410 Gone again. Running deliverers take it back within
    /// 5 seconds; the reports published meanwhile are then delivered.
    Enable {
        /// Its name in the endpoints file.
        endpoint: String,
    },
    /// List the disabled endpoints.
    Disabled {
        /// As a JSON array.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum DeliverError {
    #[error("start-up failed: {0}")]
    Startup(#[from] StartupError),
    #[error("the deliverer failed: {0}")]
    Run(#[from] std::io::Error),
    #[error("PostgreSQL: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migrations: {0}")]
    Migrations(#[from] sqlx::migrate::MigrateError),
}

/// Runs a `worker deliver` command; results go to stdout, logs to stderr.
pub async fn run(args: DeliverArgs) -> Result<(), DeliverError> {
    let DeliverArgs { command, config } = args;
    match command.unwrap_or(DeliverCommand::Run) {
        DeliverCommand::Run => {
            let shutdown = shared::runtime::shutdown::on_signal();
            let reload = on_hangup();
            let app = Application::build(config).await?;
            app.run(shutdown, reload).await?;
        }
        DeliverCommand::Enable { endpoint } => {
            let pool = config.database.pool()?;
            shared::store::MIGRATOR.run(&pool).await?;
            if deliveries::enable_endpoint(&pool, &endpoint).await? {
                println!("endpoint {endpoint} enabled: deliverers resume within 5 s (at once on SIGHUP)");
            } else {
                println!("endpoint {endpoint} was not disabled");
            }
        }
        DeliverCommand::Disabled { json } => {
            let pool = config.database.pool()?;
            shared::store::MIGRATOR.run(&pool).await?;
            let disabled = deliveries::disabled_endpoints(&pool).await?;
            let rows: Vec<serde_json::Value> = disabled
                .iter()
                .map(|d| {
                    serde_json::json!({
                        "endpoint": d.endpoint,
                        "status": d.status,
                        "reason": d.reason,
                        "disabled_at": shared::domain::time::rfc3339_ms(shared::domain::time::unix_ms(d.disabled_at)),
                    })
                })
                .collect();
            if json {
                println!("{}", serde_json::Value::Array(rows));
            } else if rows.is_empty() {
                println!("no disabled endpoints");
            } else {
                for d in &disabled {
                    let reason = crate::dlq::printable(&d.reason);
                    println!("{}  disabled at {}  ({reason})", d.endpoint, d.disabled_at);
                }
            }
        }
    }
    Ok(())
}

/// A notification on every SIGHUP: read the endpoints file again. The handler is in place when
/// this returns (SIGHUP's default action would end the process).
pub fn on_hangup() -> Arc<Notify> {
    let notify = Arc::new(Notify::new());
    let trigger = notify.clone();
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(mut hangups) => {
            tokio::spawn(async move {
                while hangups.recv().await.is_some() {
                    trigger.notify_one();
                }
            });
        }
        Err(error) => {
            tracing::error!(%error, "cannot listen for SIGHUP; the endpoints file is still read when it changes")
        }
    }
    notify
}
