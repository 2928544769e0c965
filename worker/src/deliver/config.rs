//! The configuration of `worker deliver`: environment variables (or flags), validated at
//! start-up. The endpoints themselves (URLs, secrets) are in the endpoints file, never in the
//! environment or the command line.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use shared::nats::{DeadLetterArgs, NatsArgs, ReportArgs};
use shared::runtime::config::parse_duration;
use shared::runtime::database::DatabaseArgs;

use super::destination::NetworkList;
use super::schedule::RetrySchedule;

#[derive(Debug, Clone, clap::Args)]
pub struct DeliverConfig {
    /// Address of the probes and metrics HTTP server.
    #[arg(long, env = "METRICS_ADDR", default_value = "0.0.0.0:9091")]
    pub metrics_addr: SocketAddr,
    /// The endpoints file (YAML: name, url, secrets, event_types, rooms of each endpoint); read
    /// again on SIGHUP and when it changes.
    #[arg(long, env = "DELIVERY_ENDPOINTS_FILE", default_value = "/etc/attendance/endpoints.yaml")]
    pub endpoints_file: PathBuf,
    /// Delays between the attempts of a delivery, comma-separated; after the last, the delivery
    /// is dead-lettered. Each delay varies by ±10 %.
    #[arg(long, env = "DELIVERY_RETRY_SCHEDULE", default_value = "5s,5m,30m,2h,5h,10h")]
    pub retry_schedule: RetrySchedule,
    /// How long one attempt may take, from resolving the host to the answer.
    #[arg(long, env = "DELIVERY_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// The longest `Retry-After` honoured (a longer one waits this long).
    #[arg(long, env = "DELIVERY_MAX_RETRY_AFTER", default_value = "1h", value_parser = parse_duration)]
    pub max_retry_after: Duration,
    /// Internal networks deliveries may go to, comma-separated CIDRs (`10.0.0.0/8,fd00::/8`).
    /// Loopback, private, link-local (cloud metadata), shared and reserved addresses are refused
    /// otherwise.
    #[arg(long, env = "DELIVERY_ALLOWED_NETWORKS", default_value = "")]
    pub allowed_networks: NetworkList,
    /// Deliveries in flight per endpoint on each replica.
    #[arg(long, env = "DELIVERY_CONCURRENCY", default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=1000))]
    pub concurrency: u16,
    /// Reports in flight or waiting for a retry per endpoint, across replicas; past it, an
    /// endpoint's newer reports wait.
    #[arg(long, env = "DELIVERY_MAX_PENDING", default_value_t = 1_000, value_parser = clap::value_parser!(i64).range(1..))]
    pub max_pending: i64,
    /// Root certificates (PEM) trusted for https endpoints besides the system's.
    #[arg(long, env = "DELIVERY_CA_FILE")]
    pub ca_file: Option<PathBuf>,
    /// How long delivery attempts are kept in `delivery_attempts`.
    #[arg(long, env = "DELIVERY_ATTEMPTS_MAX_AGE", default_value = "30d", value_parser = parse_duration)]
    pub attempts_max_age: Duration,
    #[command(flatten)]
    pub nats: NatsArgs,
    #[command(flatten)]
    pub reports: ReportArgs,
    #[command(flatten)]
    pub dead_letters: DeadLetterArgs,
    #[command(flatten)]
    pub database: DatabaseArgs,
}

impl DeliverConfig {
    /// The ack wait of the endpoints' consumers: an attempt (the timeout), then its record
    /// (bounded by the timeout too), then the ack, with a margin.
    pub fn ack_wait(&self) -> Duration {
        self.timeout * 2 + Duration::from_secs(5)
    }

    /// What cannot work, said before anything starts.
    pub fn check(&self) -> Result<(), String> {
        if self.timeout.is_zero() {
            return Err("DELIVERY_TIMEOUT is above zero".into());
        }
        let attempts = u32::try_from(self.retry_schedule.attempts()).unwrap_or(u32::MAX);
        let span = self.retry_schedule.span(self.max_retry_after) + self.ack_wait() * attempts;
        if span >= self.reports.max_age {
            return Err(format!(
                "DELIVERY_RETRY_SCHEDULE spans up to {} with its attempts, not less than REPORT_STREAM_MAX_AGE ({}): reports would expire before their last attempt",
                humantime::format_duration(span),
                humantime::format_duration(self.reports.max_age)
            ));
        }
        let (reports, dead_letters) = (&self.reports.subject_prefix, &self.dead_letters.subject_prefix);
        let overlap = |a: &str, b: &str| a == b || a.starts_with(&format!("{b}."));
        if overlap(reports, dead_letters) || overlap(dead_letters, reports) {
            return Err(format!(
                "the dead-letter subjects ({dead_letters}.>) must not overlap the report subjects ({reports}.>)"
            ));
        }
        Ok(())
    }
}
