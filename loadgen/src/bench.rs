//! `loadgen bench`: the benchmark report. Five phases, each on streams and databases of the
//! run's own, with the release binaries as separate processes:
//!
//! 1. **Live**: gateway, workers and sweeper take a realistic workload ([`crate::scenario`]:
//!    rooms with several consecutive meetings) through the gateway on its schedule. Measured:
//!    the gateway's latency, the time from a webhook's 200 to its committed attendance, CPU and
//!    peak memory of every process; then each meeting's attendance in PostgreSQL is compared
//!    with the workload's own expectation.
//! 2. **Capacity**: a gateway alone, as fast as it answers, at several concurrency levels.
//! 3. **Replay**: the live phase's stream (webhooks and heartbeats as the gateway stored
//!    them) applied again from the start by 1, then 2 workers into fresh databases: events/s
//!    at saturation, and the same comparison afterwards; interleaved with the workers' ceiling
//!    (`loadgen ceiling-workers`: the event rows alone, batched the same way), round after round.
//! 4. **Read latency** ([`crate::read_latency`]): one large meeting read again and again
//!    through the gateway's read API, as JSON and as CSV.
//! 5. **History** ([`crate::history`]): events/s applying a meeting per room with no earlier
//!    meeting stored, against the same events with many earlier meetings of the same rooms.
//!
//! Last, the **reconciliation** phase ([`crate::reconciliation`]): the sweeper checking live
//! meetings against a stand-in LiveKit server, some of whose sessions leave with their
//! `participant_left` lost.
//!
//! Meeting reports ([`crate::reports`]) go through the live phase too: `worker deliver` pushes
//! them to a receiver of the run, whose reports are compared with the expectation, and a last
//! phase delivers copies of them at saturation with 1, then 2 deliverers.
//!
//! What the phases measure goes into [`crate::results`], from which [`crate::report`] writes.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use shared::domain::time::millis;
use shared::livekit::KeySet;
use shared::nats::NatsArgs;
use shared::store::admin::{self, StatementStats};
use sqlx::PgPool;
use tokio::sync::Semaphore;

use crate::capacity;
use crate::procstat::{self, GroupCpu, MachineCpu};
use crate::report;
use crate::results::{Answer, Applied, CapacityRound, LevelCpu, Live, LiveReports, Replay, Results, Settings, Usage};
use crate::scenario::{Expected, MeetingExpectations, Plan, Request, ScenarioConfig};
use crate::sign;
use crate::system::{self, BenchDatabase, RunNames, Service, StreamSource, with_env};
use crate::{ceiling, history, read_latency, reconciliation, reports};

#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Rooms in the workload.
    #[arg(long, default_value_t = 500)]
    pub rooms: usize,
    /// Participants (distinct identities), spread over the rooms.
    #[arg(long, default_value_t = 10_000)]
    pub participants: usize,
    /// Consecutive meetings per room (LiveKit room sessions, each with its own room sid).
    #[arg(long, default_value_t = 3)]
    pub meetings_per_room: usize,
    /// The span in which each room's meetings happen, their finishing and the gaps between them
    /// included (longer when a meeting would get less than 15 s of activity).
    #[arg(long, default_value = "4m", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// How often each client heartbeats.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub heartbeat_interval: Duration,
    /// The sweeper's heartbeat timeout [default: 3 heartbeat intervals].
    #[arg(long, value_parser = humantime::parse_duration)]
    pub heartbeat_timeout: Option<Duration>,
    /// After each session, the chance the participant reconnects with the same identity.
    #[arg(long, default_value_t = 0.3)]
    pub reconnect_rate: f64,
    /// The chance a participant's final participant_left is never delivered.
    #[arg(long, default_value_t = 0.05)]
    pub lost_left_rate: f64,
    /// The chance a connection attempt aborts before a session.
    #[arg(long, default_value_t = 0.02)]
    pub abort_rate: f64,
    /// The chance a room finishes (room_finished) within the run.
    #[arg(long, default_value_t = 0.8)]
    pub finish_rate: f64,
    /// The chance a webhook is delivered twice.
    #[arg(long, default_value_t = 0.05)]
    pub duplicate_rate: f64,
    /// The chance a webhook is delivered late (out of order), by up to --reorder-delay.
    #[arg(long, default_value_t = 0.05)]
    pub reorder_rate: f64,
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub reorder_delay: Duration,
    /// Workers in the live phase.
    #[arg(long, default_value_t = 2)]
    pub workers: usize,
    /// Worker counts of the replay phase, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    pub replay_workers: Vec<usize>,
    /// Rounds of the replay phase: each applies the stream with the workers' ceiling
    /// (`loadgen ceiling-workers`) and with the workers (alternating which goes first), for
    /// every count of --replay-workers.
    #[arg(long, default_value_t = 2)]
    pub replay_rounds: usize,
    /// Participants of the meeting whose reading through the read API is measured.
    #[arg(long, default_value_t = 1_000)]
    pub read_participants: usize,
    /// Sequential reads of that meeting, in each format (JSON, CSV).
    #[arg(long, default_value_t = 200)]
    pub read_requests: usize,
    /// Rooms of the history phase (events/s with earlier meetings stored against without).
    #[arg(long, default_value_t = 50)]
    pub history_rooms: usize,
    /// Participants of the history phase, spread over its rooms.
    #[arg(long, default_value_t = 1_000)]
    pub history_participants: usize,
    /// Earlier meetings per room stored before the history phase's measured meeting.
    #[arg(long, default_value_t = 20)]
    pub history_meetings: usize,
    /// Rounds of the history phase: each measures without, then with the earlier meetings, for
    /// every count of --replay-workers.
    #[arg(long, default_value_t = 3)]
    pub history_rounds: usize,
    /// Reports delivered at saturation in the delivery phase (copies of the live phase's).
    #[arg(long, default_value_t = 5_000)]
    pub delivery_reports: usize,
    /// Deliverer counts (`worker deliver` replicas) of the delivery phase, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    pub deliverers: Vec<usize>,
    /// Live meetings of the reconciliation phase (checked against a stand-in LiveKit server).
    #[arg(long, default_value_t = 1_000)]
    pub reconcile_meetings: usize,
    /// Participants per meeting of the reconciliation phase (half of them heartbeat).
    #[arg(long, default_value_t = 10)]
    pub reconcile_participants: usize,
    /// The sweeper's RECONCILE_INTERVAL in the reconciliation phase (60 s in production: shorter
    /// here to keep the run short; calls per second scale with 1 / interval).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub reconcile_interval: Duration,
    /// The sweeper's RECONCILE_MAX_RPS in the reconciliation phase.
    #[arg(long, default_value_t = 1_000.0)]
    pub reconcile_max_rps: f64,
    /// Concurrency levels of the capacity phase, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,16,64,256")]
    pub capacity_concurrency: Vec<usize>,
    /// Rounds of the capacity phase: each measures the gateway's ceiling and the gateway
    /// (alternating which goes first) and raw JetStream publishes at every concurrency level.
    #[arg(long, default_value_t = 3)]
    pub capacity_rounds: usize,
    /// Requests per concurrency level of the capacity phase.
    #[arg(long, default_value_t = 20_000)]
    pub capacity_requests: usize,
    /// Most live requests in flight at once; past it, sending falls behind schedule (reported).
    #[arg(long, default_value_t = 2_000)]
    pub max_in_flight: usize,
    /// The workload's seed [default: random, printed in the report].
    #[arg(long)]
    pub seed: Option<u64>,
    /// Where the report goes (a folder per run, `latest` links to the newest).
    #[arg(long, default_value = "bench-results")]
    pub out: PathBuf,
    /// Where the release binaries are [default: next to this one].
    #[arg(long)]
    pub bin_dir: Option<PathBuf>,
    #[command(flatten)]
    pub nats: NatsArgs,
    /// Replicas of every stream the run creates: 3 on a JetStream cluster of 3 nodes (what
    /// `scripts/bench.sh --cluster` runs against); the report names the setup.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=5))]
    pub stream_replicas: u8,
    /// The PostgreSQL server; the run creates and drops databases of its own on it.
    #[arg(long, env = "DATABASE_URL", default_value = "postgres://postgres@127.0.0.1:5432/attendance")]
    pub database_url: String,
}

impl BenchArgs {
    pub(crate) fn heartbeat_timeout(&self) -> Duration {
        self.heartbeat_timeout.unwrap_or(self.heartbeat_interval * 3)
    }

    fn settings(&self) -> Settings {
        Settings {
            workers: self.workers,
            heartbeat_interval: self.heartbeat_interval,
            heartbeat_timeout: self.heartbeat_timeout(),
            reorder_delay: self.reorder_delay,
            nats_servers: self.nats.url.split(',').filter(|url| !url.trim().is_empty()).count(),
            stream_replicas: usize::from(self.stream_replicas),
        }
    }

    pub(crate) fn scenario(&self, seed: u64) -> ScenarioConfig {
        ScenarioConfig {
            seed,
            rooms: self.rooms,
            participants: self.participants,
            meetings_per_room: self.meetings_per_room,
            duration_ms: millis(self.duration),
            heartbeat_interval_ms: millis(self.heartbeat_interval),
            heartbeat_timeout_ms: millis(self.heartbeat_timeout()),
            reconnect_rate: self.reconnect_rate,
            lost_left_rate: self.lost_left_rate,
            abort_rate: self.abort_rate,
            finish_rate: self.finish_rate,
            duplicate_rate: self.duplicate_rate,
            reorder_rate: self.reorder_rate,
            reorder_delay_ms: millis(self.reorder_delay),
        }
    }
}

/// What every phase shares: the arguments, the run's names, keys, folders and NATS.
pub(crate) struct Run<'a> {
    pub(crate) args: &'a BenchArgs,
    pub(crate) names: RunNames,
    pub(crate) keys: KeySet,
    keys_file: PathBuf,
    bin_dir: PathBuf,
    /// The run's folder (report, logs, the files the services are given).
    pub(crate) dir: PathBuf,
    log_dir: PathBuf,
    pub(crate) client: async_nats::Client,
    pub(crate) jetstream: async_nats::jetstream::Context,
}

impl Run<'_> {
    /// The environment of the run's services, on `database_url`.
    pub(crate) fn env(&self, database_url: &str) -> Vec<(String, String)> {
        self.names.env(&self.args.nats.url, database_url, &self.keys_file)
    }

    pub(crate) fn start(&self, binary: &str, name: &str, env: &[(String, String)]) -> anyhow::Result<Service> {
        Service::start(&self.bin_dir, (binary, &[]), name, env, &self.log_dir)
    }

    /// `binary args…` named `name`.
    pub(crate) fn start_args(
        &self,
        binary: &str,
        args: &[&str],
        name: &str,
        env: &[(String, String)],
    ) -> anyhow::Result<Service> {
        Service::start(&self.bin_dir, (binary, args), name, env, &self.log_dir)
    }

    /// A `worker deliver` named `name`.
    pub(crate) fn start_deliverer(&self, name: &str, env: &[(String, String)]) -> anyhow::Result<Service> {
        Service::start(&self.bin_dir, ("worker", &["deliver"]), name, env, &self.log_dir)
    }

    /// A sweeper that looks every [`SWEEP_INTERVAL`], with the run's heartbeat timeout.
    fn start_sweeper(&self, name: &str, env: &[(String, String)]) -> anyhow::Result<Service> {
        let env = with_env(env.to_vec(), "SWEEP_INTERVAL", format!("{}ms", SWEEP_INTERVAL.as_millis()));
        let env = with_env(env, "HEARTBEAT_TIMEOUT", format!("{}ms", self.args.heartbeat_timeout().as_millis()));
        self.start("sweeper", name, &env)
    }

    /// Starts `workers` workers (named after `label`) on `database_url`, reading `source` from
    /// its start at saturation; once they have acknowledged every message, stops them and
    /// returns what it took.
    pub(crate) async fn apply_stream(
        &self,
        database_url: &str,
        source: &StreamSource,
        workers: usize,
        label: &str,
    ) -> anyhow::Result<Applied> {
        self.apply_stream_by(("worker", &[]), database_url, source, workers, label).await
    }

    /// [`Run::apply_stream`] by `replicas` processes of `program` (a binary and its arguments):
    /// the workers, or their ceiling.
    async fn apply_stream_by(
        &self,
        program: (&str, &[&str]),
        database_url: &str,
        source: &StreamSource,
        replicas: usize,
        label: &str,
    ) -> anyhow::Result<Applied> {
        let env = source.worker_env(self.env(database_url));
        let clock = SaturationClock::start();
        let mut running = Vec::new();
        for n in 0..replicas.max(1) {
            running.push(self.start_args(program.0, program.1, &format!("{label}-{}-{}", program.0, n + 1), &env)?);
        }
        let mut services: Vec<&mut Service> = running.iter_mut().collect();
        let messages = system::wait_drained(
            &self.jetstream,
            &source.stream,
            &source.consumer,
            &mut services,
            Duration::from_secs(900),
        )
        .await?;
        let applied = clock.applied(&running, messages);
        for process in running {
            process.stop().await?;
        }
        Ok(applied)
    }
}

/// A measurement at saturation from its start: the time, and the CPU of PostgreSQL, NATS and the
/// machine; [`SaturationClock::applied`] adds the measured processes' own.
pub(crate) struct SaturationClock {
    started: Instant,
    postgres: GroupCpu,
    nats: GroupCpu,
    machine: MachineCpu,
}

impl SaturationClock {
    pub(crate) fn start() -> Self {
        let (postgres, nats, machine) = (GroupCpu::read("postgres"), GroupCpu::read("nats-server"), MachineCpu::read());
        SaturationClock { started: Instant::now(), postgres, nats, machine }
    }

    pub(crate) fn started(&self) -> Instant {
        self.started
    }

    /// What `processes` did with `messages` from the start until now.
    pub(crate) fn applied(&self, processes: &[Service], messages: u64) -> Applied {
        Applied {
            workers: processes.len(),
            messages,
            elapsed: self.started.elapsed(),
            cpu_seconds: processes.iter().map(Service::cpu_seconds).sum(),
            peak_rss_bytes: processes.iter().map(Service::peak_rss_bytes).max().unwrap_or(0),
            postgres_cpu_seconds: GroupCpu::read("postgres").since(&self.postgres),
            nats_cpu_seconds: GroupCpu::read("nats-server").since(&self.nats),
            machine_busy: MachineCpu::read().busy_since(&self.machine),
        }
    }
}

const SWEEP_INTERVAL: Duration = Duration::from_secs(1);
const COMMIT_CHANNEL: &str = "bench_committed";
const LIVE_CONSUMER: &str = "bench-live";

/// Runs the three phases and writes the report; returns whether the attendance was exact.
pub async fn run(args: BenchArgs) -> anyhow::Result<bool> {
    let started_at = time::OffsetDateTime::now_utc();
    let names = RunNames::unique(usize::from(args.stream_replicas));
    let run_dir = args.out.join(format!(
        "bench-{:04}{:02}{:02}-{:02}{:02}{:02}",
        started_at.year(),
        u8::from(started_at.month()),
        started_at.day(),
        started_at.hour(),
        started_at.minute(),
        started_at.second()
    ));
    let log_dir = run_dir.join("logs");
    std::fs::create_dir_all(&log_dir).with_context(|| format!("create {}", log_dir.display()))?;
    let (keys_yaml, keys) = sign::random_keys();
    let keys_file = run_dir.join("livekit-keys.yaml");
    {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        // A secret, if only the run's own: readable by its owner alone.
        let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&keys_file)?;
        file.write_all(keys_yaml.as_bytes())?;
    }
    let (client, _) = args.nats.connect("loadgen-bench").await?;
    let run = Run {
        args: &args,
        names,
        keys,
        keys_file,
        bin_dir: args.bin_dir.clone().unwrap_or_else(system::default_bin_dir),
        dir: run_dir.clone(),
        log_dir,
        client: client.clone(),
        jetstream: async_nats::jetstream::new(client.clone()),
    };
    let seed = args.seed.unwrap_or_else(|| fastrand::u64(..));

    let outcome = async {
        eprintln!(
            "[bench] live phase: {} rooms × {} meetings, {} participants, {:?} (seed {seed})",
            args.rooms, args.meetings_per_room, args.participants, args.duration
        );
        let live = live_phase(&run, seed).await?;
        eprintln!(
            "[bench] capacity phase: concurrency {:?}, {} requests each, {} rounds against the ceilings",
            args.capacity_concurrency, args.capacity_requests, args.capacity_rounds
        );
        let capacity = capacity_phase(&run).await?;
        let mut replays = Vec::new();
        for round in 1..=args.replay_rounds.max(1) {
            for &workers in &args.replay_workers {
                eprintln!("[bench] replay phase, round {round}: {workers} worker(s) and their ceiling");
                replays.push(replay_phase(&run, round, workers, &live).await?);
            }
        }
        eprintln!(
            "[bench] read latency phase: a meeting of {} participants, {} reads per format",
            args.read_participants, args.read_requests
        );
        let read_latency = read_latency::read_latency_phase(&run, seed).await?;
        eprintln!(
            "[bench] history phase: {} rooms, {} participants, {} earlier meetings, {} rounds",
            args.history_rooms, args.history_participants, args.history_meetings, args.history_rounds
        );
        let history = history::history_phase(&run, seed).await?;
        eprintln!(
            "[bench] delivery phase: {} reports at saturation, {:?} deliverer(s)",
            args.delivery_reports, args.deliverers
        );
        let deliveries = delivery_phase(&run, &live).await?;
        eprintln!(
            "[bench] reconciliation phase: {} meetings × {} participants, interval {:?}",
            args.reconcile_meetings, args.reconcile_participants, args.reconcile_interval
        );
        let reconciliation = reconciliation::reconciliation_phase(&run, seed).await?;
        anyhow::Ok((live, capacity, replays, read_latency, history, deliveries, reconciliation))
    }
    .await;
    run.names.delete_streams(&run.jetstream).await;
    let (live, capacity, replays, read_latency, history, deliveries, reconciliation) = outcome?;
    let nats_version = client.server_info().version;

    let postgres_version = postgres_version(&args.database_url).await.unwrap_or_else(|_| "?".into());
    let results = Results {
        settings: args.settings(),
        seed,
        started_at,
        nats_version,
        postgres_version,
        live,
        capacity,
        replays,
        read_latency,
        history,
        deliveries,
        reconciliation,
    };
    let markdown = report::write(&results, &run_dir)?;
    let latest = args.out.join("latest");
    let _ = std::fs::remove_file(&latest);
    if let Some(dir_name) = run_dir.file_name() {
        std::os::unix::fs::symlink(dir_name, &latest)?;
    }
    println!("{markdown}");
    eprintln!("[bench] report: {}", run_dir.join("report.md").display());
    Ok(results.attendance_exact())
}

async fn live_phase(run: &Run<'_>, seed: u64) -> anyhow::Result<Live> {
    let (args, names) = (run.args, &run.names);
    let database = BenchDatabase::create(&args.database_url, &format!("bench_{}_live", names.suffix)).await?;
    database.announce_commits(COMMIT_CHANNEL).await?;
    let result = async {
        let env = run.env(&database.url);
        let port = system::free_port()?;
        // The gateway's limit must not refuse the workload's own pace (jitter, reconnects).
        let min_interval = (args.heartbeat_interval / 2).min(Duration::from_secs(5));
        let gateway_env = with_env(env.clone(), "LISTEN_ADDR", format!("127.0.0.1:{port}"));
        let gateway_env = with_env(gateway_env, "METRICS_ADDR", "127.0.0.1:0".to_owned());
        let gateway_env = with_env(gateway_env, "HEARTBEAT_MIN_INTERVAL", format!("{}ms", min_interval.as_millis()));
        let mut gateway = run.start("gateway", "gateway", &gateway_env)?;
        let mut workers = Vec::new();
        for n in 0..args.workers.max(1) {
            let worker_env = with_env(env.clone(), "CONSUMER_NAME", LIVE_CONSUMER);
            workers.push(run.start("worker", &format!("worker-{}", n + 1), &worker_env)?);
        }
        let mut sweeper = run.start_sweeper("sweeper", &env)?;
        let receiver = reports::Receiver::start().await?;
        let endpoints_file = run.dir.join("endpoints-live.yaml");
        receiver.write_endpoints_file(&endpoints_file)?;
        let report_args = names.report_args(system::LIVE_REPORTS);
        let mut deliverer =
            run.start_deliverer("deliver", &reports::deliverer_env(env.clone(), &report_args, &endpoints_file))?;

        let http = reqwest::Client::builder().pool_max_idle_per_host(args.max_in_flight).build()?;
        let base_url = format!("http://127.0.0.1:{port}");
        system::wait_ready(&http, &base_url, &mut gateway).await?;

        let lead = Duration::from_secs(2);
        let plan = Plan::build(&args.scenario(seed), shared::domain::time::now_unix_ms() + millis(lead));
        let tokens: Vec<String> = plan
            .participants
            .iter()
            .enumerate()
            .map(|(index, p)| sign::participant_token(&run.keys, &p.identity, plan.room_name_of(index), 6 * 3600))
            .collect();
        eprintln!(
            "[bench] {} webhooks, {} requests in all, over {:.0} s",
            plan.webhooks.len(),
            plan.sends.len(),
            (plan.end_ms() - plan.start_ms) as f64 / 1000.0
        );

        let phase_start = Instant::now() + lead;
        let commits = listen_for_commits(&database.url, phase_start).await?;
        let mut services: Vec<&mut Service> = vec![&mut gateway];
        services.extend(workers.iter_mut());
        services.push(&mut sweeper);
        services.push(&mut deliverer);
        let cpu_before: Vec<f64> = services.iter().map(|s| s.cpu_seconds()).collect();
        let (nats_before, postgres_before) = (GroupCpu::read("nats-server"), GroupCpu::read("postgres"));
        let own_before = procstat::cpu_seconds(std::process::id()).unwrap_or(0.0);
        let machine_before = MachineCpu::read();

        let plan = Arc::new(plan);
        let (answers, max_lag) =
            drive(&http, &base_url, plan.clone(), &run.keys, Arc::new(tokens), phase_start, args.max_in_flight).await?;
        let last_send = phase_start.elapsed();

        eprintln!("[bench] all requests answered; waiting for the workers to drain");
        let stored_messages = system::wait_drained(
            &run.jetstream,
            &names.webhook_stream(),
            LIVE_CONSUMER,
            &mut services,
            Duration::from_secs(900),
        )
        .await?;
        let last_heartbeats = last_heartbeats(&answers);
        let expected = plan.expected(|index| last_heartbeats.get(&index).copied());
        let pool = PgPool::connect(&database.url).await?;
        let deadline = Instant::now() + args.heartbeat_timeout() + SWEEP_INTERVAL * 2 + Duration::from_secs(30);
        let differences = converge(&pool, &expected, deadline).await?;
        let converged_after = differences.is_empty().then(|| phase_start.elapsed().saturating_sub(last_send));
        pool.close().await;
        // The last reports follow the last commits by an outbox poll and a delivery.
        let report_differences =
            reports::converge(&receiver, &plan, &expected, Instant::now() + Duration::from_secs(30)).await;
        let machine_busy = MachineCpu::read().busy_since(&machine_before);

        let mut usage: Vec<Usage> = services
            .iter()
            .zip(cpu_before)
            .map(|(service, before)| Usage {
                name: service.name.clone(),
                cpu_seconds: service.cpu_seconds() - before,
                peak_rss_bytes: Some(service.peak_rss_bytes()),
            })
            .collect();
        usage.push(Usage {
            name: "nats-server".into(),
            cpu_seconds: GroupCpu::read("nats-server").since(&nats_before),
            peak_rss_bytes: None,
        });
        usage.push(Usage {
            name: "postgres".into(),
            cpu_seconds: GroupCpu::read("postgres").since(&postgres_before),
            peak_rss_bytes: None,
        });
        usage.push(Usage {
            name: "loadgen".into(),
            cpu_seconds: procstat::cpu_seconds(std::process::id()).unwrap_or(0.0) - own_before,
            peak_rss_bytes: procstat::peak_rss_bytes(std::process::id()),
        });
        let dead_letters = match run.jetstream.get_stream(names.dlq_stream()).await {
            Ok(mut stream) => stream.info().await.map(|info| info.state.messages).unwrap_or(0),
            Err(_) => 0,
        };
        drop(services);
        for service in std::iter::once(gateway).chain(workers).chain([sweeper, deliverer]) {
            service.stop().await?;
        }
        let delivered = receiver.delivered();
        let (finish_to_delivery_us, ends_undelivered) =
            reports::finish_to_delivery_us(&delivered, &plan, &answers, phase_start);
        let (duplicates, refused) = receiver.duplicates_and_refused();
        let reports = LiveReports {
            delivered,
            duplicates,
            refused,
            finish_to_delivery_us,
            ends_undelivered,
            differences: report_differences,
        };
        let commits = commits.stop().await;
        let plan = Arc::try_unwrap(plan).unwrap_or_else(|shared| (*shared).clone());
        anyhow::Ok(Live {
            plan,
            answers,
            commits,
            max_lag,
            converged_after,
            differences,
            usage,
            stored_messages,
            dead_letters,
            machine_busy,
            expected,
            reports,
        })
    }
    .await;
    database.drop_database().await;
    result
}

/// Sends every planned request at its time (open loop: a slow answer does not delay the next
/// request), LiveKit-style retries for webhooks that were not answered 200.
async fn drive(
    http: &reqwest::Client,
    base_url: &str,
    plan: Arc<Plan>,
    keys: &KeySet,
    tokens: Arc<Vec<String>>,
    phase_start: Instant,
    max_in_flight: usize,
) -> anyhow::Result<(Vec<Answer>, Duration)> {
    let answers = Arc::new(Mutex::new(Vec::with_capacity(plan.sends.len())));
    let in_flight = Arc::new(Semaphore::new(max_in_flight));
    let sent = Arc::new(AtomicUsize::new(0));
    let progress = {
        let (sent, answers, total) = (sent.clone(), answers.clone(), plan.sends.len());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(10)).await;
                let answered = answers.lock().expect("not poisoned").len();
                eprintln!(
                    "[bench] {:>4.0} s: {} of {total} requests sent, {answered} answered",
                    phase_start.elapsed().as_secs_f64(),
                    sent.load(Ordering::Relaxed)
                );
            }
        })
    };
    let mut max_lag = Duration::ZERO;
    for (n, send) in plan.sends.iter().enumerate() {
        let due = phase_start + Duration::from_millis((send.at_ms - plan.start_ms).max(0) as u64);
        tokio::time::sleep_until(due.into()).await;
        let permit = in_flight.clone().acquire_owned().await?;
        max_lag = max_lag.max(Instant::now().saturating_duration_since(due));
        let (http, base_url, plan, keys, tokens, answers) =
            (http.clone(), base_url.to_owned(), plan.clone(), keys.clone(), tokens.clone(), answers.clone());
        tokio::spawn(async move {
            let attempts = send_one(&http, &base_url, &plan, &keys, &tokens, n, phase_start).await;
            answers.lock().expect("not poisoned").extend(attempts);
            drop(permit);
        });
        sent.store(n + 1, Ordering::Relaxed);
    }
    let _all_back = in_flight.acquire_many(u32::try_from(max_in_flight)?).await?;
    progress.abort();
    let answers = std::mem::take(&mut *answers.lock().expect("not poisoned"));
    Ok((answers, max_lag))
}

const WEBHOOK_ATTEMPTS: usize = 5;

async fn send_one(
    http: &reqwest::Client,
    base_url: &str,
    plan: &Plan,
    keys: &KeySet,
    tokens: &[String],
    send: usize,
    phase_start: Instant,
) -> Vec<Answer> {
    let request = plan.sends[send].request;
    let mut attempts = Vec::new();
    for attempt in 1..=WEBHOOK_ATTEMPTS {
        let builder = match request {
            Request::Webhook { index, .. } => {
                let body = plan.webhooks[index].body.clone();
                http.post(format!("{base_url}/webhooks/livekit"))
                    .header("Content-Type", "application/webhook+json")
                    .header("Authorization", sign::webhook_authorization(keys, &body))
                    .body(body)
            }
            Request::Heartbeat { index } => http.post(format!("{base_url}/v1/heartbeats")).bearer_auth(&tokens[index]),
        };
        let sent_at = phase_start.elapsed();
        let response = builder.send().await;
        let (status, received_at_ms) = match response {
            Ok(response) => {
                let status = response.status().as_u16();
                let body: Option<serde_json::Value> = response.json().await.ok();
                let received_at_ms = body
                    .as_ref()
                    .and_then(|body| body["receivedAt"].as_str())
                    .and_then(|at| time::OffsetDateTime::parse(at, &time::format_description::well_known::Rfc3339).ok())
                    .map(|at| (at.unix_timestamp_nanos() / 1_000_000) as i64);
                (status, received_at_ms)
            }
            Err(_) => (0, None),
        };
        let answer = Answer { request, sent_at, latency: phase_start.elapsed() - sent_at, status, received_at_ms };
        let done = answer.ok() || matches!(request, Request::Heartbeat { .. });
        attempts.push(answer);
        if done || attempt == WEBHOOK_ATTEMPTS {
            break;
        }
        // As LiveKit does, the event is sent again a little later.
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    attempts
}

/// When the gateway received each participant's last heartbeat, by participant index.
fn last_heartbeats(answers: &[Answer]) -> HashMap<usize, i64> {
    let mut last = HashMap::new();
    for answer in answers.iter().filter(|a| a.ok()) {
        if let (Request::Heartbeat { index }, Some(at)) = (answer.request, answer.received_at_ms) {
            let latest = last.entry(index).or_insert(at);
            *latest = (*latest).max(at);
        }
    }
    last
}

/// Event ids as their transactions commit (PostgreSQL delivers a notification at commit).
struct CommitListener {
    task: tokio::task::JoinHandle<HashMap<String, Duration>>,
    stop: tokio::sync::oneshot::Sender<()>,
}

async fn listen_for_commits(database_url: &str, phase_start: Instant) -> anyhow::Result<CommitListener> {
    let mut listener = sqlx::postgres::PgListener::connect(database_url).await?;
    listener.listen(COMMIT_CHANNEL).await?;
    let (stop, mut stopped) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(async move {
        let mut commits = HashMap::new();
        loop {
            tokio::select! {
                notification = listener.recv() => match notification {
                    Ok(notification) => {
                        commits.entry(notification.payload().to_owned()).or_insert_with(|| phase_start.elapsed());
                    }
                    Err(error) => {
                        eprintln!("[bench] commit notifications stopped: {error}");
                        break;
                    }
                },
                _ = &mut stopped => break,
            }
        }
        commits
    });
    Ok(CommitListener { task, stop })
}

impl CommitListener {
    async fn stop(self) -> HashMap<String, Duration> {
        let _ = self.stop.send(());
        self.task.await.unwrap_or_default()
    }
}

/// Compares the database with the expectation until they agree or `deadline` passes (the
/// sweeper closes sessions whose left was lost only after the heartbeat timeout).
pub(crate) async fn converge(
    pool: &PgPool,
    expected: &MeetingExpectations,
    deadline: Instant,
) -> anyhow::Result<Vec<String>> {
    loop {
        let differences = differences(pool, expected).await?;
        if differences.is_empty() || Instant::now() > deadline {
            return Ok(differences);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Every way the stored attendance of each meeting differs from the expectation, one line each;
/// a stored meeting the workload does not hold is one too.
pub async fn differences(pool: &PgPool, expected: &MeetingExpectations) -> anyhow::Result<Vec<String>> {
    let mut differences = Vec::new();
    let mut connection = pool.acquire().await?;
    for (room_sid, participants) in expected {
        let mut stored = shared::store::read_model::load_meeting(&mut connection, room_sid).await?;
        for (identity, want) in participants {
            match stored.remove(identity) {
                None => differences.push(format!("{room_sid} / {identity}: missing, expected {want:?}")),
                Some(attendance) => {
                    let got = Expected::from(&attendance);
                    if got != *want {
                        differences.push(format!("{room_sid} / {identity}: stored {got:?}, expected {want:?}"));
                    }
                }
            }
        }
        differences.extend(stored.keys().map(|identity| format!("{room_sid} / {identity}: not in the workload")));
    }
    let meetings = shared::store::meetings::room_sids(pool, None).await?;
    differences.extend(
        meetings
            .into_iter()
            .filter(|room_sid| !expected.contains_key(room_sid))
            .map(|room_sid| format!("meeting {room_sid}: not in the workload")),
    );
    Ok(differences)
}

/// One level of the capacity phase against `service` (the gateway or its ceiling at `url`), with
/// the CPU it cost that process and NATS.
async fn measure_level(
    http: &reqwest::Client,
    url: &str,
    requests: &std::sync::Arc<Vec<(bytes::Bytes, String)>>,
    concurrency: usize,
    service: &Service,
) -> anyhow::Result<(capacity::LevelResult, LevelCpu)> {
    let (service_before, nats_before) = (service.cpu_seconds(), GroupCpu::read("nats-server"));
    let level = capacity::measure_level(http, url, requests, concurrency).await?;
    let cpu = LevelCpu {
        service_seconds: service.cpu_seconds() - service_before,
        nats_seconds: GroupCpu::read("nats-server").since(&nats_before),
    };
    Ok((level, cpu))
}

/// The capacity phase: a gateway alone and its ceiling (`loadgen ceiling-gateway`) side by side
/// on the capacity stream, and raw publishes from here to the same stream, at every concurrency
/// level, round after round (the ceiling first in odd rounds, the gateway first in even ones),
/// each measurement with webhooks of its own.
async fn capacity_phase(run: &Run<'_>) -> anyhow::Result<Vec<CapacityRound>> {
    let (args, names) = (run.args, &run.names);
    let subject_prefix = format!("benchcap{}.webhook", names.suffix);
    let (port, ceiling_port) = (system::free_port()?, system::free_port()?);
    let env = run.env(&args.database_url);
    let env = with_env(env, "METRICS_ADDR", "127.0.0.1:0".to_owned());
    let env = with_env(env, "WEBHOOK_STREAM", names.capacity_stream());
    let env = with_env(env, "WEBHOOK_SUBJECT_PREFIX", subject_prefix.clone());
    let mut gateway =
        run.start("gateway", "gateway-capacity", &with_env(env.clone(), "LISTEN_ADDR", format!("127.0.0.1:{port}")))?;
    let http = reqwest::Client::builder().pool_max_idle_per_host(1024).build()?;
    let (base_url, ceiling_url) = (format!("http://127.0.0.1:{port}"), format!("http://127.0.0.1:{ceiling_port}"));
    system::wait_ready(&http, &base_url, &mut gateway).await?;
    // Started once the gateway made the stream.
    let ceiling_env = with_env(env, "LISTEN_ADDR", format!("127.0.0.1:{ceiling_port}"));
    let ceiling_env = with_env(ceiling_env, "CEILING_SUBJECT", format!("{subject_prefix}.ceiling"));
    let mut ceiling = run.start_args("loadgen", &["ceiling-gateway"], "gateway-ceiling", &ceiling_env)?;
    let result = async {
        system::wait_ready(&http, &ceiling_url, &mut ceiling).await?;
        let raw_subject = format!("{subject_prefix}.raw");
        let mut rounds = Vec::new();
        for round in 1..=args.capacity_rounds.max(1) {
            for &concurrency in &args.capacity_concurrency {
                let for_ceiling = capacity::sign_requests(&run.keys, args.capacity_requests);
                let for_gateway = capacity::sign_requests(&run.keys, args.capacity_requests);
                let ((ceiling_level, ceiling_cpu), (gateway_level, gateway_cpu)) = if round % 2 == 1 {
                    let on_ceiling = measure_level(&http, &ceiling_url, &for_ceiling, concurrency, &ceiling).await?;
                    (on_ceiling, measure_level(&http, &base_url, &for_gateway, concurrency, &gateway).await?)
                } else {
                    let on_gateway = measure_level(&http, &base_url, &for_gateway, concurrency, &gateway).await?;
                    (measure_level(&http, &ceiling_url, &for_ceiling, concurrency, &ceiling).await?, on_gateway)
                };
                let bodies = std::sync::Arc::new(for_ceiling.iter().map(|(body, _)| body.clone()).collect());
                let raw_publish = ceiling::raw_publish(&run.jetstream, &raw_subject, bodies, concurrency).await?;
                anyhow::ensure!(raw_publish.failures == 0, "{} raw publishes failed", raw_publish.failures);
                eprintln!(
                    "[bench] capacity round {round}, concurrency {concurrency}: gateway {:.0} req/s, ceiling {:.0} req/s, raw publish {:.0} msgs/s",
                    gateway_level.requests_per_second(),
                    ceiling_level.requests_per_second(),
                    raw_publish.requests_per_second()
                );
                rounds.push(CapacityRound {
                    round,
                    gateway: gateway_level,
                    ceiling: ceiling_level,
                    raw_publish,
                    gateway_cpu,
                    ceiling_cpu,
                });
            }
        }
        anyhow::Ok(rounds)
    }
    .await;
    ceiling.stop().await?;
    gateway.stop().await?;
    result
}

/// One round of the replay phase for `workers`: the live phase's stream applied from its start
/// by the workers' ceiling and by the workers (the ceiling first in odd rounds), each into a
/// fresh database by a consumer of its own; then the workers' attendance is compared with the
/// expectation.
async fn replay_phase(run: &Run<'_>, round: usize, workers: usize, live: &Live) -> anyhow::Result<Replay> {
    let (ceiling, (applied, differences, statements)) = if round % 2 == 1 {
        let ceiling = replay_ceiling(run, round, workers).await?;
        (ceiling, replay_workers(run, round, workers, live).await?)
    } else {
        let replayed = replay_workers(run, round, workers, live).await?;
        (replay_ceiling(run, round, workers).await?, replayed)
    };
    Ok(Replay { round, applied, ceiling, differences, statements })
}

async fn replay_workers(
    run: &Run<'_>,
    round: usize,
    workers: usize,
    live: &Live,
) -> anyhow::Result<(Applied, Vec<String>, Option<Vec<StatementStats>>)> {
    let (args, names) = (run.args, &run.names);
    let label = format!("replay{round}-{workers}");
    let database =
        BenchDatabase::create(&args.database_url, &format!("bench_{}_replay{round}_{workers}", names.suffix)).await?;
    let result = async {
        let source = names.live_source(&format!("bench-{label}"));
        let counting = admin::reset_statement_stats(&database.url).await?;
        let applied = run.apply_stream(&database.url, &source, workers, &label).await?;
        // Read before the sweeper's statements join them.
        let statements = if counting { Some(admin::statement_stats(&database.url).await?) } else { None };
        // The sweeper closes the sessions whose left never came, as in the live phase.
        let sweeper = run.start_sweeper(&format!("{label}-sweeper"), &source.worker_env(run.env(&database.url)))?;
        let pool = PgPool::connect(&database.url).await?;
        let differences = converge(&pool, &live.expected, Instant::now() + Duration::from_secs(60)).await?;
        pool.close().await;
        sweeper.stop().await?;
        anyhow::Ok((applied, differences, statements))
    }
    .await;
    database.drop_database().await;
    result
}

async fn replay_ceiling(run: &Run<'_>, round: usize, replicas: usize) -> anyhow::Result<Applied> {
    let (args, names) = (run.args, &run.names);
    let label = format!("ceiling{round}-{replicas}");
    let database =
        BenchDatabase::create(&args.database_url, &format!("bench_{}_ceiling{round}_{replicas}", names.suffix)).await?;
    let source = names.live_source(&format!("bench-{label}"));
    let applied =
        run.apply_stream_by(("loadgen", &["ceiling-workers"]), &database.url, &source, replicas, &label).await;
    database.drop_database().await;
    applied
}

/// The delivery phase: copies of the live phase's reports, delivered at saturation by each
/// count of `--deliverers`, into one database of the phase (delivery attempts are recorded).
async fn delivery_phase(run: &Run<'_>, live: &Live) -> anyhow::Result<Vec<Applied>> {
    let (args, names) = (run.args, &run.names);
    let database = BenchDatabase::create(&args.database_url, &format!("bench_{}_deliveries", names.suffix)).await?;
    let result = async {
        let mut runs = Vec::new();
        for &deliverers in &args.deliverers {
            let label = format!("d{deliverers}");
            let copies = reports::saturation_reports(&live.reports.delivered, args.delivery_reports, &label)?;
            eprintln!("[bench] delivery phase: {deliverers} deliverer(s)");
            runs.push(reports::delivery_phase(run, &database.url, deliverers, &copies).await?);
        }
        anyhow::Ok(runs)
    }
    .await;
    database.drop_database().await;
    result
}

/// The server's version, and whether the run's connections to it were encrypted (TLS to
/// PostgreSQL changes the workers' throughput several times over: README, Benchmark).
async fn postgres_version(database_url: &str) -> anyhow::Result<String> {
    let version = shared::store::admin::server_version(database_url).await?;
    let tls = shared::store::admin::connection_uses_tls(database_url).await?;
    Ok(format!("{version}, connections {}", if tls { "over TLS" } else { "without TLS" }))
}
