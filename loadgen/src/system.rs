//! The system under test, as separate processes: the release binaries of the gateway, workers
//! and sweeper, each with its own streams and database for the run, logging to files.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use shared::nats::settings::{default_heartbeat_stream, heartbeat_consumer};
use shared::store::admin;

use crate::procstat;

/// One running binary.
pub struct Service {
    pub name: String,
    child: Child,
}

impl Service {
    /// Starts `binary args…` from `bin_dir` as `name`, logging to `<log_dir>/<name>.log`.
    pub fn start(
        bin_dir: &Path,
        (binary, args): (&str, &[&str]),
        name: &str,
        env: &[(String, String)],
        log_dir: &Path,
    ) -> anyhow::Result<Self> {
        let log = std::fs::File::create(log_dir.join(format!("{name}.log")))?;
        let child = Command::new(bin_dir.join(binary))
            .args(args)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| {
                format!("start {} (build it with `cargo build --release`)", bin_dir.join(binary).display())
            })?;
        Ok(Service { name: name.to_owned(), child })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn cpu_seconds(&self) -> f64 {
        procstat::cpu_seconds(self.pid()).unwrap_or(0.0)
    }

    pub fn peak_rss_bytes(&self) -> u64 {
        procstat::peak_rss_bytes(self.pid()).unwrap_or(0)
    }

    /// Fails if the process has exited (it should run until stopped).
    pub fn check_running(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!("{} exited early ({status}); see its log", self.name);
        }
        Ok(())
    }

    /// SIGTERM, then up to 15 s for a graceful exit, then SIGKILL.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        let _ = Command::new("kill").args(["-TERM", &self.pid().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(15);
        while self.child.try_wait()?.is_none() {
            if Instant::now() > deadline {
                eprintln!("{} did not stop within 15 s of SIGTERM: killed", self.name);
                self.child.kill()?;
                self.child.wait()?;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A free TCP port on 127.0.0.1 (bound then released).
pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A database of the run's own on the server of `DATABASE_URL`, migrated.
pub struct BenchDatabase {
    pub url: String,
    name: String,
    server_url: String,
}

impl BenchDatabase {
    pub async fn create(server_url: &str, name: &str) -> anyhow::Result<Self> {
        let url = admin::create_database(server_url, name).await.context("create the benchmark's database")?;
        let database = BenchDatabase { url, name: name.to_owned(), server_url: server_url.to_owned() };
        let pool = sqlx::PgPool::connect(&database.url).await?;
        shared::store::MIGRATOR.run(&pool).await?;
        pool.close().await;
        Ok(database)
    }

    /// A copy of this database, named `name` (nobody may be connected to this one meanwhile).
    pub async fn copy(&self, name: &str) -> anyhow::Result<Self> {
        let url =
            admin::copy_database(&self.server_url, &self.name, name).await.context("copy the benchmark's database")?;
        Ok(BenchDatabase { url, name: name.to_owned(), server_url: self.server_url.clone() })
    }

    /// Vacuums and analyzes it, as autovacuum would have a running system's database.
    pub async fn vacuum_analyze(&self) -> anyhow::Result<()> {
        Ok(admin::vacuum_analyze(&self.url).await?)
    }

    /// Reads all of it into PostgreSQL's buffers, as a running system's database would be (a
    /// copy starts with none there). Without `pg_prewarm` on the server it says so and goes on.
    pub async fn prewarm(&self) {
        if let Err(error) = admin::prewarm(&self.url).await {
            eprintln!("[bench] could not prewarm {} (pg_prewarm missing?): {error}", self.name);
        }
    }

    /// Writes what the server holds unwritten to disk (`CHECKPOINT`), so that a measurement does
    /// not pay for the writes of the copy before it. Without the right it says so and goes on.
    pub async fn checkpoint(&self) {
        if let Err(error) = admin::checkpoint(&self.url).await {
            eprintln!("[bench] could not checkpoint before measuring {}: {error}", self.name);
        }
    }

    /// Makes PostgreSQL announce every event-log row on `channel` when its transaction commits.
    pub async fn announce_commits(&self, channel: &str) -> anyhow::Result<()> {
        Ok(admin::announce_event_log_commits(&self.url, channel).await?)
    }

    /// Drops it, unless `LOADGEN_KEEP_DATABASES` is set (to look into a run's databases
    /// afterwards: statements, plans, rows).
    pub async fn drop_database(self) {
        if std::env::var_os("LOADGEN_KEEP_DATABASES").is_some() {
            eprintln!("[bench] kept the database {} (LOADGEN_KEEP_DATABASES)", self.name);
            return;
        }
        if let Err(error) = admin::drop_database(&self.server_url, &self.name).await {
            eprintln!("could not drop the benchmark's database {}: {error}", self.name);
        }
    }
}

/// A stream of webhooks and heartbeats that workers apply, and the durable consumer they share.
#[derive(Debug, Clone)]
pub struct StreamSource {
    pub stream: String,
    pub subject_prefix: String,
    pub consumer: String,
    /// Replicas the stream is created with (the run's `--stream-replicas`).
    pub replicas: usize,
}

impl StreamSource {
    /// `env` with the workers pointed at this stream and consumer.
    pub fn worker_env(&self, env: Vec<(String, String)>) -> Vec<(String, String)> {
        let env = with_env(env, "WEBHOOK_STREAM", self.stream.clone());
        let env = with_env(env, "WEBHOOK_SUBJECT_PREFIX", self.subject_prefix.clone());
        with_env(env, "CONSUMER_NAME", self.consumer.clone())
    }

    /// The same stream read by another consumer.
    pub fn with_consumer(&self, consumer: impl Into<String>) -> Self {
        StreamSource { consumer: consumer.into(), ..self.clone() }
    }
}

/// The streams the run fills itself, straight from a plan (not through a gateway).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoadedStream {
    /// The earlier meetings of the history phase.
    History,
    /// The meeting the history phase measures.
    Measured,
    /// The large meeting whose reading is measured.
    ReadLatency,
}

impl LoadedStream {
    const ALL: [LoadedStream; 3] = [LoadedStream::History, LoadedStream::Measured, LoadedStream::ReadLatency];

    fn as_str(self) -> &'static str {
        match self {
            LoadedStream::History => "history",
            LoadedStream::Measured => "measured",
            LoadedStream::ReadLatency => "read",
        }
    }
}

/// Names of the run's streams and subjects, unique per run, and the replicas of those streams.
#[derive(Debug, Clone)]
pub struct RunNames {
    pub suffix: String,
    /// Replicas of every stream of the run: 1 on one server, 3 on a cluster.
    pub replicas: usize,
}

impl RunNames {
    /// Fresh names, unlike any other run's.
    pub fn unique(replicas: usize) -> Self {
        RunNames { suffix: format!("{:010x}", fastrand::u64(..) & 0xff_ffff_ffff), replicas }
    }

    pub fn webhook_stream(&self) -> String {
        format!("BENCH_WEBHOOKS_{}", self.suffix)
    }

    pub fn capacity_stream(&self) -> String {
        format!("BENCH_CAPACITY_{}", self.suffix)
    }

    pub fn dlq_stream(&self) -> String {
        format!("BENCH_DLQ_{}", self.suffix)
    }

    pub fn presence_stream(&self) -> String {
        format!("BENCH_PRESENCE_{}", self.suffix)
    }

    /// The report stream of `purpose`: `live` for the live phase's, which every service of the
    /// run is given; others for the delivery phase's.
    pub fn report_args(&self, purpose: &str) -> shared::nats::ReportArgs {
        shared::nats::ReportArgs {
            stream: format!("BENCH_REPORTS_{}_{}", purpose.to_uppercase(), self.suffix),
            subject_prefix: format!("bench{purpose}{}.meeting", self.suffix),
            replicas: self.replicas,
            max_age: Duration::from_secs(2 * 3600),
        }
    }

    /// The live phase's stream, read by `consumer`.
    pub fn live_source(&self, consumer: &str) -> StreamSource {
        StreamSource {
            stream: self.webhook_stream(),
            subject_prefix: format!("bench{}.webhook", self.suffix),
            consumer: consumer.to_owned(),
            replicas: self.replicas,
        }
    }

    /// A stream the run fills itself, read by `consumer`.
    pub fn loaded_source(&self, loaded: LoadedStream, consumer: &str) -> StreamSource {
        let purpose = loaded.as_str();
        StreamSource {
            stream: format!("BENCH_{}_{}", purpose.to_uppercase(), self.suffix),
            subject_prefix: format!("bench{purpose}{}.webhook", self.suffix),
            consumer: consumer.to_owned(),
            replicas: self.replicas,
        }
    }

    /// The environment every service of the run shares.
    pub fn env(&self, nats_url: &str, database_url: &str, keys_file: &Path) -> Vec<(String, String)> {
        let s = &self.suffix;
        let reports = self.report_args(LIVE_REPORTS);
        [
            ("NATS_URL", nats_url.to_owned()),
            ("DATABASE_URL", database_url.to_owned()),
            ("LIVEKIT_KEYS_FILE", keys_file.display().to_string()),
            ("WEBHOOK_STREAM", self.webhook_stream()),
            ("WEBHOOK_SUBJECT_PREFIX", self.live_source("").subject_prefix),
            ("WEBHOOK_STREAM_MAX_AGE", "2h".into()),
            // Replays read the live phase's heartbeats again.
            ("HEARTBEAT_STREAM_MAX_AGE", "2h".into()),
            ("DLQ_STREAM", self.dlq_stream()),
            ("DLQ_SUBJECT_PREFIX", format!("bench{s}.dlq")),
            ("DLQ_MAX_AGE", "2h".into()),
            ("PRESENCE_STREAM", self.presence_stream()),
            ("PRESENCE_SUBJECT_PREFIX", format!("bench{s}.presence")),
            ("PRESENCE_STREAM_MAX_AGE", "2h".into()),
            ("WEBHOOK_STREAM_REPLICAS", self.replicas.to_string()),
            ("DLQ_STREAM_REPLICAS", self.replicas.to_string()),
            ("PRESENCE_STREAM_REPLICAS", self.replicas.to_string()),
            ("REPORT_STREAM", reports.stream),
            ("REPORT_SUBJECT_PREFIX", reports.subject_prefix),
            ("REPORT_STREAM_MAX_AGE", "2h".into()),
            ("REPORT_STREAM_REPLICAS", self.replicas.to_string()),
            ("METRICS_ADDR", "127.0.0.1:0".into()),
            ("RUST_LOG", "warn".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }

    /// Removes the run's streams.
    pub async fn delete_streams(&self, jetstream: &async_nats::jetstream::Context) {
        let loaded = LoadedStream::ALL.map(|loaded| self.loaded_source(loaded, "").stream);
        let webhook_streams = [self.webhook_stream(), self.capacity_stream()].into_iter().chain(loaded);
        for stream in webhook_streams {
            let _ = jetstream.delete_stream(default_heartbeat_stream(&stream)).await;
            let _ = jetstream.delete_stream(&stream).await;
        }
        for stream in [self.dlq_stream(), self.presence_stream(), self.report_args(LIVE_REPORTS).stream] {
            let _ = jetstream.delete_stream(&stream).await;
        }
    }
}

/// The purpose of the live phase's report stream ([`RunNames::report_args`]).
pub const LIVE_REPORTS: &str = "live";

/// Replaces (or adds) `key` in an environment list.
pub fn with_env(mut env: Vec<(String, String)>, key: &str, value: impl Into<String>) -> Vec<(String, String)> {
    env.retain(|(k, _)| k != key);
    env.push((key.to_owned(), value.into()));
    env
}

/// Waits up to 30 s for the gateway's `/readyz`.
pub async fn wait_ready(http: &reqwest::Client, base_url: &str, gateway: &mut Service) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        gateway.check_running()?;
        let ready = http.get(format!("{base_url}/readyz")).send().await;
        if ready.is_ok_and(|response| response.status().is_success()) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the gateway at {base_url} did not become ready within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until the consumer has delivered and had acknowledged every message of the stream,
/// and its heartbeat consumer every message of the heartbeat stream beside it (if there is
/// one); returns the number of messages of both.
pub async fn wait_drained(
    jetstream: &async_nats::jetstream::Context,
    stream: &str,
    consumer: &str,
    services: &mut [&mut Service],
    timeout: Duration,
) -> anyhow::Result<u64> {
    let mut streams = vec![(jetstream.get_stream(stream).await?, consumer.to_owned())];
    if let Ok(heartbeats) = jetstream.get_stream(default_heartbeat_stream(stream)).await {
        streams.push((heartbeats, heartbeat_consumer(consumer)));
    }
    let deadline = Instant::now() + timeout;
    loop {
        for service in services.iter_mut() {
            service.check_running()?;
        }
        let mut messages = 0;
        let mut drained = true;
        for (stream, consumer) in &mut streams {
            let state = stream.info().await?.state.clone();
            messages += state.messages;
            drained &= if state.messages == 0 {
                true
            } else {
                stream.consumer_info(consumer.as_str()).await.is_ok_and(|info| {
                    info.delivered.stream_sequence >= state.last_sequence
                        && info.num_pending == 0
                        && info.num_ack_pending == 0
                })
            };
        }
        if drained {
            return Ok(messages);
        }
        if Instant::now() > deadline {
            bail!("consumer {consumer} did not drain {stream:?} (and its heartbeats) within {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Where the binaries are: next to this one (`target/release`).
pub fn default_bin_dir() -> PathBuf {
    std::env::current_exe().ok().and_then(|exe| exe.parent().map(Path::to_path_buf)).unwrap_or_default()
}
