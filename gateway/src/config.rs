//! The gateway's configuration: environment variables (or flags), validated at start-up.

use std::net::SocketAddr;
use std::time::Duration;

use shared::nats::NatsArgs;
use shared::nats::{PresenceArgs, WebhookStreamArgs};
use shared::runtime::config::{LiveKitKeyArgs, PolicyArgs, parse_duration};
use shared::runtime::database::DatabaseArgs;

use crate::limits::RequestArgs;
use crate::presence_stream::PresenceStreamArgs;
use crate::server::ConnectionArgs;
use crate::view_links::ViewLinkArgs;

/// LiveKit webhook gateway: verifies, stores in JetStream, then answers.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "gateway", version)]
pub struct GatewayConfig {
    /// Address the HTTP server listens on.
    #[arg(long, env = "LISTEN_ADDR", default_value = "0.0.0.0:8080")]
    pub listen_addr: SocketAddr,
    /// Browser origins allowed to call the heartbeat and read API from another origin (CORS),
    /// comma-separated, exact (`https://app.example.org`), or `*` for any; none by default (the
    /// webhook route never answers CORS).
    #[arg(long, env = "CORS_ALLOWED_ORIGINS", value_delimiter = ',', value_parser = parse_origin)]
    pub cors_allowed_origins: Vec<String>,
    /// Address of `/metrics` (and the probes), apart from the public listener.
    #[arg(long, env = "METRICS_ADDR", default_value = "0.0.0.0:9090")]
    pub metrics_addr: SocketAddr,
    /// Largest webhook body accepted, in bytes; larger ones get 413.
    #[arg(long, env = "WEBHOOK_BODY_LIMIT", default_value_t = 1024 * 1024)]
    pub body_limit: usize,
    /// Longest a client may take to send a webhook body (slow senders get 503: LiveKit retries).
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
    pub policy: PolicyArgs,
    #[command(flatten)]
    pub connections: ConnectionArgs,
    #[command(flatten)]
    pub requests: RequestArgs,
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
    #[command(flatten)]
    pub presence_streams: PresenceStreamArgs,
    #[command(flatten)]
    pub view_links: ViewLinkArgs,
}

/// An origin as browsers send it: `scheme://host[:port]`, nothing after; or `*`.
pub fn parse_origin(text: &str) -> Result<String, String> {
    let text = text.trim();
    if text == "*" {
        return Ok(text.to_owned());
    }
    let after_scheme = text.strip_prefix("https://").or_else(|| text.strip_prefix("http://"));
    match after_scheme {
        Some(host) if !host.is_empty() && !host.contains(['/', '?', '#', ' ', '*']) => Ok(text.to_owned()),
        _ => Err(format!("{text:?} is not an origin like https://app.example.org (scheme and host, no path)")),
    }
}
