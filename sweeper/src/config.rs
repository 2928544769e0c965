//! The sweeper's configuration: environment variables (or flags), validated at start-up.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use shared::nats::NatsArgs;
use shared::nats::{PresenceArgs, ReportArgs};
use shared::runtime::config::{LiveKitKeyArgs, PolicyArgs, parse_duration};
use shared::runtime::database::DatabaseArgs;
use shared::runtime::http_client::Origin;

#[derive(Debug, Clone, clap::Parser)]
#[command(name = "sweeper", version)]
pub struct SweeperConfig {
    /// Address of the probes and metrics HTTP server.
    #[arg(long, env = "METRICS_ADDR", default_value = "0.0.0.0:9092")]
    pub metrics_addr: SocketAddr,
    /// How often stale cycles are looked for.
    #[arg(long, env = "SWEEP_INTERVAL", default_value = "15s", value_parser = parse_duration)]
    pub sweep_interval: Duration,
    /// A cycle whose last heartbeat is older than this is closed at that heartbeat.
    #[arg(long, env = "HEARTBEAT_TIMEOUT", default_value = "5m", value_parser = parse_duration)]
    pub heartbeat_timeout: Duration,
    /// A cycle open longer than this is closed at this length and flagged `max_duration`.
    #[arg(long, env = "MAX_CYCLE_DURATION", default_value = "12h", value_parser = parse_duration)]
    pub max_cycle_duration: Duration,
    /// A meeting whose room_finished never came is ended this long after LiveKit should have
    /// closed it (its departure or empty timeout past, nobody in it), as an inferred end.
    #[arg(long, env = "MEETING_END_MARGIN", default_value = "5m", value_parser = parse_duration)]
    pub meeting_end_margin: Duration,
    /// Events of meetings that ended longer ago than this are deleted (the meetings' attendance
    /// stays, sealed).
    #[arg(long, env = "EVENT_LOG_RETENTION", default_value = "400d", value_parser = parse_duration)]
    pub event_log_retention: Duration,
    /// Most events deleted per meeting and round (small transactions).
    #[arg(long, env = "RETENTION_BATCH", default_value_t = 1_000, value_parser = clap::value_parser!(i64).range(1..))]
    pub retention_batch: i64,
    /// How often the presence outbox is checked (presence pages wait on this).
    #[arg(long, env = "OUTBOX_POLL_INTERVAL", default_value = "250ms", value_parser = parse_duration)]
    pub outbox_poll_interval: Duration,
    /// Most presence changes published per round.
    #[arg(long, env = "OUTBOX_BATCH_SIZE", default_value_t = 500)]
    pub outbox_batch_size: i64,
    #[command(flatten)]
    pub reconcile: ReconcileArgs,
    #[command(flatten)]
    pub nats: NatsArgs,
    #[command(flatten)]
    pub presence: PresenceArgs,
    #[command(flatten)]
    pub database: DatabaseArgs,
    #[command(flatten)]
    pub policy: PolicyArgs,
    #[command(flatten)]
    pub reports: ReportArgs,
}

/// Reconciliation with the LiveKit server: off unless `LIVEKIT_URL` is set.
#[derive(Debug, Clone, clap::Args)]
pub struct ReconcileArgs {
    /// The LiveKit server (http, https, ws or wss URL). When set, every running meeting is
    /// checked against its RoomService: sessions it no longer lists are closed, sessions it lists
    /// with no cycle are opened, and meetings whose room it no longer has are ended.
    #[arg(long, env = "LIVEKIT_URL", value_parser = clap::value_parser!(Origin))]
    pub livekit_url: Option<Origin>,
    /// How often each running meeting is checked.
    #[arg(long, env = "RECONCILE_INTERVAL", default_value = "60s", value_parser = parse_duration)]
    pub reconcile_interval: Duration,
    /// Calls a second to the LiveKit server, all sweepers together (a check makes two).
    #[arg(long, env = "RECONCILE_MAX_RPS", default_value_t = 50.0, value_parser = parse_rate)]
    pub reconcile_max_rps: f64,
    /// A call to the LiveKit server without an answer within this fails.
    #[arg(long, env = "RECONCILE_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub reconcile_timeout: Duration,
    /// Checks in flight at once, per sweeper.
    #[arg(long, env = "RECONCILE_CONCURRENCY", default_value_t = 32, value_parser = clap::value_parser!(u16).range(1..))]
    pub reconcile_concurrency: u16,
    /// PEM certificates trusted for an https LIVEKIT_URL, beside the system's.
    #[arg(long, env = "LIVEKIT_CA_FILE")]
    pub livekit_ca_file: Option<PathBuf>,
    #[command(flatten)]
    pub keys: LiveKitKeyArgs,
}

fn parse_rate(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(rate) if rate.is_finite() && rate > 0.0 => Ok(rate),
        _ => Err(format!("{text:?} is not a positive number")),
    }
}
