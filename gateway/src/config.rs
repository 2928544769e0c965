//! The gateway's configuration: environment variables (or flags), validated at start-up.

use std::net::SocketAddr;
use std::time::Duration;

use shared::nats::{PresenceArgs, WebhookStreamArgs};
use shared::runtime::config::{LiveKitKeyArgs, NatsArgs, parse_duration};
use shared::runtime::database::DatabaseArgs;

/// LiveKit webhook gateway: verifies, stores in JetStream, then answers.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "gateway", version)]
pub struct GatewayConfig {
    /// Address the HTTP server listens on.
    #[arg(long, env = "LISTEN_ADDR", default_value = "0.0.0.0:8080")]
    pub listen_addr: SocketAddr,
    /// Largest webhook body accepted, in bytes; larger ones get 413.
    #[arg(long, env = "WEBHOOK_BODY_LIMIT", default_value_t = 1024 * 1024)]
    pub body_limit: usize,
    /// Longest a client may take to send a webhook body (slow senders get 408).
    #[arg(long, env = "WEBHOOK_BODY_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub body_timeout: Duration,
    /// How long to wait for JetStream's acknowledgement before answering 503 (LiveKit retries).
    /// LiveKit drops events that wait 30 s in its per-room queue, so keep this short.
    #[arg(long, env = "PUBLISH_TIMEOUT", default_value = "2s", value_parser = parse_duration)]
    pub publish_timeout: Duration,
    /// Heartbeats a participant may send at once before the limit applies.
    #[arg(long, env = "HEARTBEAT_BURST", default_value_t = 3)]
    pub heartbeat_burst: u32,
    /// After the burst, one heartbeat per this interval per participant; more get 429.
    #[arg(long, env = "HEARTBEAT_MIN_INTERVAL", default_value = "5s", value_parser = parse_duration)]
    pub heartbeat_min_interval: Duration,
    #[command(flatten)]
    pub nats: NatsArgs,
    #[command(flatten)]
    pub stream: WebhookStreamArgs,
    #[command(flatten)]
    pub keys: LiveKitKeyArgs,
    /// The attendance database, for the read API (webhooks never touch it).
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// Where presence changes are published, for the live stream.
    #[command(flatten)]
    pub presence: PresenceArgs,
}
