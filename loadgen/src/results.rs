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
    /// The capacity phase: per round and concurrency level, the gateway against its ceilings.
    pub capacity: Vec<CapacityRound>,
    pub replays: Vec<Replay>,
    pub read_latency: ReadLatency,
    pub history: History,
    /// Deliveries of meeting reports at saturation, one per deliverer count.
    pub deliveries: Vec<Applied>,
    pub reconciliation: Reconciliation,
}

impl Results {
    /// Whether the stored attendance matched the workload's expectation after the live phase
    /// and after every replay.
    pub fn attendance_exact(&self) -> bool {
        self.all_differences().next().is_none()
    }

    /// Every difference from an expectation: the live phase's (stored, then reported), the
    /// replays', then the read latency's, the history phase's meetings and the reconciliation
    /// phase's sessions.
    pub fn all_differences(&self) -> impl Iterator<Item = &String> {
        self.live
            .differences
            .iter()
            .chain(self.live.reports.differences.iter())
            .chain(self.replays.iter().flat_map(|r| r.differences.iter()))
            .chain(self.read_latency.differences.iter())
            .chain(self.history.samples.iter().flat_map(|s| s.differences.iter()))
            .chain(self.reconciliation.differences.iter())
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
    /// NATS servers the services were given (more than one: a cluster).
    pub nats_servers: usize,
    /// Replicas of the run's streams.
    pub stream_replicas: usize,
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
    pub reports: LiveReports,
}

/// The meeting reports `worker deliver` pushed to the run's receiver during the live phase.
pub struct LiveReports {
    /// Each report once, in arrival order.
    pub delivered: Vec<crate::reports::Delivered>,
    /// Requests for a report received before.
    pub duplicates: u64,
    /// Requests whose signature did not verify.
    pub refused: u64,
    /// From each `room_finished`'s first 200 to the receiver's 2xx of its `meeting.ended`.
    pub finish_to_delivery_us: Histogram<u64>,
    /// Meetings finished by `room_finished` whose `meeting.ended` never came.
    pub ends_undelivered: usize,
    /// How the latest report of each meeting differs from the expectation.
    pub differences: Vec<String>,
}

/// What applying a stream with some workers at saturation measured: from the workers' start to
/// every message acknowledged.
#[derive(Debug, Clone)]
pub struct Applied {
    pub workers: usize,
    pub messages: u64,
    pub elapsed: Duration,
    /// The workers' CPU (all of them).
    pub cpu_seconds: f64,
    pub peak_rss_bytes: u64,
    pub postgres_cpu_seconds: f64,
    pub nats_cpu_seconds: f64,
    pub machine_busy: f64,
}

impl Applied {
    pub fn events_per_second(&self) -> f64 {
        self.messages as f64 / self.elapsed.as_secs_f64()
    }
}

/// What one replay of the live phase's stream measured: the workers, and their ceiling (as
/// many processes of `loadgen ceiling-workers`) on the same stream in the same round.
pub struct Replay {
    pub round: usize,
    pub applied: Applied,
    pub ceiling: Applied,
    pub differences: Vec<String>,
    /// The workers' statements in PostgreSQL, costliest first, when the server counts them
    /// (`pg_stat_statements` preloaded, as by `scripts/postgres-statements.sh`).
    pub statements: Option<Vec<shared::store::admin::StatementStats>>,
}

impl Replay {
    /// The workers' events/s over their ceiling's.
    pub fn ratio(&self) -> f64 {
        self.applied.events_per_second() / self.ceiling.events_per_second().max(f64::EPSILON)
    }
}

/// Reading one large meeting through the gateway's read API.
pub struct ReadLatency {
    pub participants: usize,
    /// One per format, JSON first.
    pub formats: Vec<ReadFormat>,
    pub differences: Vec<String>,
}

/// Sequential GETs of `GET /v1/meetings/{room_sid}` in one format.
pub struct ReadFormat {
    /// `json` or `csv`.
    pub format: &'static str,
    pub latencies_us: Histogram<u64>,
    pub response_bytes: usize,
}

/// Applying one meeting per room into a fresh database (the first meeting of its room names)
/// against applying the same events on top of earlier meetings of the same room names.
pub struct History {
    pub rooms: usize,
    pub participants: usize,
    /// Earlier meetings per room, stored before the measured one.
    pub earlier_meetings: usize,
    /// Messages of the earlier meetings (loaded, not measured).
    pub history_messages: u64,
    pub samples: Vec<HistorySample>,
}

/// One measurement of the history phase.
pub struct HistorySample {
    pub round: usize,
    /// Whether the earlier meetings were stored (the measured meeting is then the last of many).
    pub with_history: bool,
    pub applied: Applied,
    pub differences: Vec<String>,
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

/// The reconciliation phase ([`crate::reconciliation`]).
pub struct Reconciliation {
    pub meetings: usize,
    pub sessions: usize,
    pub interval: Duration,
    pub heartbeat_interval: Duration,
    /// The steady window (nobody leaving) and what it cost.
    pub window: Duration,
    /// Calls LiveKit (the stand-in) took in the window.
    pub calls: usize,
    pub sweeper_cpu_seconds: f64,
    pub postgres_cpu_seconds: f64,
    /// Sessions that left without their participant_left.
    pub lost_lefts: usize,
    /// How they were closed.
    pub closed_reconciled: usize,
    pub closed_heartbeat: usize,
    /// How much earlier than the real leave each was closed, in milliseconds.
    pub early_ms: Histogram<u64>,
    pub differences: Vec<String>,
}

impl Reconciliation {
    pub fn calls_per_second(&self) -> f64 {
        self.calls as f64 / self.window.as_secs_f64().max(f64::EPSILON)
    }

    /// CPU seconds per 1 000 meetings per reconciliation interval.
    pub fn cpu_per_thousand_meetings(&self, cpu_seconds: f64) -> f64 {
        let intervals = self.window.as_secs_f64() / self.interval.as_secs_f64().max(f64::EPSILON);
        cpu_seconds / intervals.max(f64::EPSILON) / (self.meetings as f64 / 1000.0).max(f64::EPSILON)
    }
}

/// One concurrency level of one round of the capacity phase: the gateway, its ceiling (the same
/// path without verification, parsing, redaction, limits, tracing or metrics) and raw JetStream
/// publishes from the load generator, each with the same number in flight.
pub struct CapacityRound {
    pub round: usize,
    pub gateway: LevelResult,
    pub ceiling: LevelResult,
    pub raw_publish: LevelResult,
    /// The CPU the gateway's measurement cost, and its ceiling's.
    pub gateway_cpu: LevelCpu,
    pub ceiling_cpu: LevelCpu,
}

/// The CPU one measurement of the capacity phase cost: the process measured (the gateway or its
/// ceiling) and NATS. Steadier than requests per second on a machine whose speed drifts: what a
/// webhook costs does not depend on how fast the machine runs it.
#[derive(Debug, Clone, Copy, Default)]
pub struct LevelCpu {
    pub service_seconds: f64,
    pub nats_seconds: f64,
}

impl LevelCpu {
    /// Milliseconds of the measured process's CPU per 1 000 requests of `level`.
    pub fn service_ms_per_1000(&self, level: &LevelResult) -> f64 {
        per_1000_requests(self.service_seconds, level)
    }

    /// Milliseconds of NATS's CPU per 1 000 requests of `level`.
    pub fn nats_ms_per_1000(&self, level: &LevelResult) -> f64 {
        per_1000_requests(self.nats_seconds, level)
    }
}

fn per_1000_requests(seconds: f64, level: &LevelResult) -> f64 {
    seconds * 1000.0 / (level.requests as f64 / 1000.0).max(f64::EPSILON)
}
