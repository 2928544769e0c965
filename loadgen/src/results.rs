//! What a benchmark run measured, as plain data: [`crate::bench`] fills it in, [`crate::report`]
//! and [`crate::plot`] read it. A module of its own so that the phases and the report each
//! depend on the data, not on one another.

use std::collections::HashMap;
use std::time::Duration;

use hdrhistogram::Histogram;

use crate::capacity::LevelResult;
use crate::scenario::{MeetingExpectations, Plan, Request};

/// Everything the report is written from.
pub struct Results {
    pub settings: Settings,
    pub seed: u64,
    pub started_at: time::OffsetDateTime,
    pub nats_version: String,
    pub postgres_version: String,
    pub live: Live,
    pub capacity: Vec<LevelResult>,
    pub replays: Vec<Replay>,
}

impl Results {
    /// Whether the stored attendance matched the workload's expectation after the live phase
    /// and after every replay.
    pub fn attendance_exact(&self) -> bool {
        self.live.differences.is_empty() && self.replays.iter().all(|r| r.differences.is_empty())
    }
}

/// The run's settings that the report states; the workload itself it describes from the plan.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Workers in the live phase.
    pub workers: usize,
    pub heartbeat_interval: Duration,
    pub heartbeat_timeout: Duration,
    pub reorder_delay: Duration,
}

/// One answer the gateway gave (or a transport failure: status 0).
#[derive(Debug, Clone)]
pub struct Answer {
    pub request: Request,
    /// Since the live phase's start.
    pub sent_at: Duration,
    pub latency: Duration,
    pub status: u16,
    /// For a heartbeat: when the gateway received it (its answer says).
    pub received_at_ms: Option<i64>,
}

impl Answer {
    pub fn answered_at(&self) -> Duration {
        self.sent_at + self.latency
    }

    pub fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// CPU and memory of one process over a phase.
#[derive(Debug, Clone)]
pub struct Usage {
    pub name: String,
    pub cpu_seconds: f64,
    pub peak_rss_bytes: Option<u64>,
}

/// What the live phase measured.
pub struct Live {
    pub plan: Plan,
    pub answers: Vec<Answer>,
    /// Event id → when its transaction committed, since the phase's start.
    pub commits: HashMap<String, Duration>,
    pub max_lag: Duration,
    /// From the last request to the database matching the expectation.
    pub converged_after: Option<Duration>,
    pub differences: Vec<String>,
    pub usage: Vec<Usage>,
    pub stored_messages: u64,
    pub dead_letters: u64,
    /// The share of the machine's CPU time that was busy.
    pub machine_busy: f64,
    /// The attendance the workload implies, given when the gateway received each heartbeat.
    pub expected: MeetingExpectations,
}

/// What one replay measured.
pub struct Replay {
    pub workers: usize,
    pub messages: u64,
    pub elapsed: Duration,
    pub cpu_seconds: f64,
    pub peak_rss_bytes: u64,
    pub postgres_cpu_seconds: f64,
    pub nats_cpu_seconds: f64,
    pub machine_busy: f64,
    pub differences: Vec<String>,
}

impl Replay {
    pub fn events_per_second(&self) -> f64 {
        self.messages as f64 / self.elapsed.as_secs_f64()
    }
}

/// One second of the live phase, by when the answer came or the commit happened.
pub struct Second {
    /// Requests answered 2xx.
    pub answered: u64,
    pub gateway_us: Histogram<u64>,
    /// Webhooks whose attendance committed.
    pub commits: u64,
    /// From a webhook's 200 to its commit.
    pub end_to_end_us: Histogram<u64>,
}
