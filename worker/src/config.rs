//! The worker's configuration: environment variables (or flags), validated at start-up.

use std::net::SocketAddr;
use std::time::Duration;

use shared::nats::NatsArgs;
use shared::nats::{DeadLetterArgs, WebhookStreamArgs};
use shared::runtime::config::{PolicyArgs, parse_duration};
use shared::runtime::database::DatabaseArgs;

#[derive(Debug, Clone, clap::Args)]
pub struct WorkerConfig {
    /// Address of the probes and metrics HTTP server.
    #[arg(long, env = "METRICS_ADDR", default_value = "0.0.0.0:9091")]
    pub metrics_addr: SocketAddr,
    /// Durable consumer shared by every worker replica.
    #[arg(long, env = "CONSUMER_NAME", default_value = "attendance-worker")]
    pub consumer_name: String,
    /// How long JetStream waits for an ack before redelivering.
    #[arg(long, env = "CONSUMER_ACK_WAIT", default_value = "30s", value_parser = parse_duration)]
    pub ack_wait: Duration,
    /// Deliveries of a message before it goes to the dead-letter stream.
    #[arg(long, env = "MAX_DELIVER", default_value_t = 10, value_parser = clap::value_parser!(i64).range(1..))]
    pub max_deliver: i64,
    /// Unacknowledged messages the consumer hands out across all replicas.
    #[arg(long, env = "MAX_ACK_PENDING", default_value_t = 2_000)]
    pub max_ack_pending: i64,
    /// Most messages applied in one transaction.
    #[arg(long, env = "BATCH_SIZE", default_value_t = 100, value_parser = clap::value_parser!(u16).range(1..))]
    pub batch_size: u16,
    /// Smallest redelivery delay after a transient failure.
    #[arg(long, env = "RETRY_MIN_DELAY", default_value = "1s", value_parser = parse_duration)]
    pub retry_min_delay: Duration,
    /// Largest redelivery delay after a transient failure.
    #[arg(long, env = "RETRY_MAX_DELAY", default_value = "5m", value_parser = parse_duration)]
    pub retry_max_delay: Duration,
    #[command(flatten)]
    pub nats: NatsArgs,
    #[command(flatten)]
    pub stream: WebhookStreamArgs,
    #[command(flatten)]
    pub dead_letters: DeadLetterArgs,
    #[command(flatten)]
    pub database: DatabaseArgs,
    #[command(flatten)]
    pub policy: PolicyArgs,
}
