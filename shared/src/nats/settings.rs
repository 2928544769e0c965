//! The streams' settings: one [`StreamSettings`] type for every stream, built from the clap
//! arguments of each (their environment variable names differ, so each has its own group), and
//! the one way to set a stream up: created with these settings when it does not exist; an
//! existing stream is left as it is (an operator may have tuned it with `nats stream edit`), and
//! its differences from the configuration are reported, never overwritten. One that cannot work
//! (its subjects do not take ours) is a permanent set-up failure, reported by readiness.

use std::time::Duration;

use async_nats::jetstream::context::GetStreamErrorKind;
use async_nats::jetstream::stream::ConsumerErrorKind;
use async_nats::jetstream::{self, ErrorCode, stream};

/// What defines one of the project's streams.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamSettings {
    pub name: String,
    pub description: &'static str,
    /// Messages are published on `<subject_prefix>.<token>`; the stream takes `<subject_prefix>.>`.
    pub subject_prefix: String,
    pub replicas: usize,
    pub max_age: Duration,
    /// JetStream's de-duplication window on `Nats-Msg-Id`; zero leaves the server's default.
    pub duplicate_window: Duration,
    /// The most bytes the stream holds; -1 for no limit. Past it, a publish is refused (never
    /// an older message dropped): the gateway answers 503 and LiveKit or the client retries.
    pub max_bytes: i64,
}

impl StreamSettings {
    /// Subjects the stream takes.
    pub fn subjects(&self) -> String {
        format!("{}.>", self.subject_prefix)
    }

    /// The subject of one token (an event type, a room token).
    pub fn subject(&self, token: &str) -> String {
        format!("{}.{token}", self.subject_prefix)
    }

    /// The JetStream definition: file storage and limits retention, so that messages stay for
    /// inspection and replay after they were consumed, until `max_age`; the oldest go first.
    pub fn stream_config(&self) -> stream::Config {
        stream::Config {
            name: self.name.clone(),
            description: Some(self.description.into()),
            subjects: vec![self.subjects()],
            retention: stream::RetentionPolicy::Limits,
            storage: stream::StorageType::File,
            num_replicas: self.replicas,
            duplicate_window: self.duplicate_window,
            max_age: self.max_age,
            max_bytes: self.max_bytes,
            // Limits reached: refuse new messages rather than drop unconsumed ones.
            discard: stream::DiscardPolicy::New,
            ..Default::default()
        }
    }

    /// Creates the stream if it does not exist; leaves an existing one as it is, logging each
    /// setting that differs from these (see the module). Returns those differences.
    pub async fn create_or_check(&self, jetstream: &jetstream::Context) -> Result<Vec<String>, StreamSetupError> {
        let mut existing = match jetstream.get_stream(&self.name).await {
            Ok(stream) => stream,
            Err(error) if matches!(error.kind(), GetStreamErrorKind::JetStream(e) if e.error_code() == ErrorCode::STREAM_NOT_FOUND) =>
            {
                jetstream.create_stream(self.stream_config()).await.map_err(|e| self.setup_error(e))?;
                tracing::info!(stream = self.name, "stream created");
                return Ok(Vec::new());
            }
            Err(error) => return Err(self.setup_error(error)),
        };
        let config = existing.info().await.map_err(|e| self.setup_error(e))?.config.clone();
        if !config.subjects.iter().any(|subject| subject == &self.subjects() || subject == ">") {
            return Err(StreamSetupError {
                permanent: true,
                ..self.setup_error(format!(
                    "it takes {:?}, not {}: add the subjects (`nats stream edit`) or configure another stream name",
                    config.subjects,
                    self.subjects()
                ))
            });
        }
        let differences = self.differences(&config);
        for difference in &differences {
            tracing::warn!(
                stream = self.name,
                difference,
                "stream setting differs from the configuration; left as it is"
            );
        }
        Ok(differences)
    }

    /// The settings of `server` (an existing stream's) that differ from these, as text.
    pub fn differences(&self, server: &stream::Config) -> Vec<String> {
        let ours = self.stream_config();
        let mut differences = Vec::new();
        let mut compare = |name: &str, theirs: String, mine: String| {
            if theirs != mine {
                differences.push(format!("{name}: {theirs} on the server, {mine} configured"));
            }
        };
        compare("retention", format!("{:?}", server.retention), format!("{:?}", ours.retention));
        compare("storage", format!("{:?}", server.storage), format!("{:?}", ours.storage));
        compare("replicas", server.num_replicas.to_string(), ours.num_replicas.to_string());
        compare("max_age", format!("{:?}", server.max_age), format!("{:?}", ours.max_age));
        compare("discard", format!("{:?}", server.discard), format!("{:?}", ours.discard));
        compare("max_bytes", server.max_bytes.to_string(), ours.max_bytes.to_string());
        // Zero asks for the server's default (2 minutes): compare only a configured window.
        if !ours.duplicate_window.is_zero() {
            compare(
                "duplicate_window",
                format!("{:?}", server.duplicate_window),
                format!("{:?}", ours.duplicate_window),
            );
        }
        differences
    }

    /// Names this stream in a set-up failure (one retrying may fix).
    pub fn setup_error(&self, reason: impl std::fmt::Display) -> StreamSetupError {
        StreamSetupError { stream: self.name.clone(), reason: reason.to_string(), permanent: false }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("cannot set up the stream {stream}: {reason}")]
pub struct StreamSetupError {
    pub stream: String,
    pub reason: String,
    /// Retrying cannot fix it: the configuration or the server's stream must change.
    pub permanent: bool,
}

impl crate::runtime::startup_retry::Permanent for StreamSetupError {
    fn is_permanent(&self) -> bool {
        self.permanent
    }
}

/// Creates a durable pull consumer on the stream of `settings`, reading every subject of it, or
/// updates it to `config` if it exists. A change the server refuses is a permanent failure.
pub async fn durable_consumer(
    jetstream: &jetstream::Context,
    settings: &StreamSettings,
    config: jetstream::consumer::pull::Config,
) -> Result<jetstream::consumer::PullConsumer, StreamSetupError> {
    let name = config.durable_name.clone().unwrap_or_default();
    let config = jetstream::consumer::pull::Config { filter_subject: settings.subjects(), ..config };
    let stream = jetstream.get_stream(&settings.name).await.map_err(|e| settings.setup_error(e))?;
    let mut consumer = stream.create_consumer(config).await.map_err(|error| {
        // The server answered 400: it refuses this configuration (e.g. a setting it cannot
        // change on an existing consumer). Anything else (a timeout, 503) may pass later.
        let refused = matches!(error.kind(), ConsumerErrorKind::JetStream(e) if e.code() == 400);
        StreamSetupError { permanent: refused, ..settings.setup_error(format!("consumer {name}: {error}")) }
    })?;
    wait_for_leader(&mut consumer, &name).await;
    Ok(consumer)
}

/// How long a new consumer may take to elect its leader before pulling starts anyway.
const LEADER_WAIT: Duration = Duration::from_secs(10);

/// Waits (at most [`LEADER_WAIT`]) until a replicated consumer has a leader: a pull sent before
/// gets "no responders", and the client's next try comes only after its missed heartbeats
/// (about 10 s, seen on a 3-node cluster at every start). On a single server there is no
/// election and this returns at once.
pub async fn wait_for_leader(consumer: &mut jetstream::consumer::PullConsumer, name: &str) {
    let deadline = tokio::time::Instant::now() + LEADER_WAIT;
    loop {
        match consumer.info().await {
            Ok(info) if info.cluster.as_ref().is_none_or(|cluster| cluster.leader.is_some()) => return,
            Ok(_) | Err(_) if tokio::time::Instant::now() >= deadline => {
                tracing::warn!(consumer = name, "the consumer has no leader yet; pulling anyway");
                return;
            }
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// The stream of verified webhook events, and the stream of client heartbeats beside it.
/// Heartbeats have a stream of their own: they are many (one per participant every few
/// seconds) and worth little once old, so a short retention and a byte limit keep them from
/// filling the disk the webhooks need. Its name and subjects follow the webhook stream's unless
/// set.
#[derive(Debug, Clone, clap::Args)]
pub struct WebhookStreamArgs {
    /// Name of the stream of verified webhook events.
    #[arg(id = "webhook-stream", long = "webhook-stream", env = "WEBHOOK_STREAM", default_value = "LIVEKIT_WEBHOOKS")]
    pub stream: String,
    /// Subject prefix; an event is published on `<prefix>.<event type>`.
    #[arg(
        id = "webhook-subject-prefix",
        long = "webhook-subject-prefix",
        env = "WEBHOOK_SUBJECT_PREFIX",
        default_value = "livekit.webhook"
    )]
    pub subject_prefix: String,
    /// Stream replicas (3 on a production JetStream cluster).
    #[arg(
        id = "webhook-stream-replicas",
        long = "webhook-stream-replicas",
        env = "WEBHOOK_STREAM_REPLICAS",
        default_value_t = 1
    )]
    pub replicas: usize,
    /// JetStream de-duplication window on the event id. A resent request only verifies until its
    /// token expires (5 min + 60 s leeway after signing), so 6 minutes covers every retry.
    #[arg(id = "webhook-duplicate-window", long = "webhook-duplicate-window", env = "WEBHOOK_DUPLICATE_WINDOW", default_value = "6m", value_parser = humantime::parse_duration)]
    pub duplicate_window: Duration,
    /// How long events stay in the stream after they were published.
    #[arg(id = "webhook-stream-max-age", long = "webhook-stream-max-age", env = "WEBHOOK_STREAM_MAX_AGE", default_value = "7d", value_parser = humantime::parse_duration)]
    pub max_age: Duration,
    /// Most bytes the webhook stream holds (-1: no limit); past it webhooks get 503.
    #[arg(id = "webhook-stream-max-bytes", long = "webhook-stream-max-bytes", env = "WEBHOOK_STREAM_MAX_BYTES", default_value_t = -1, allow_negative_numbers = true)]
    pub max_bytes: i64,
    /// Name of the heartbeat stream [default: the webhook stream's, then `_HEARTBEATS`].
    #[arg(id = "heartbeat-stream", long = "heartbeat-stream", env = "HEARTBEAT_STREAM")]
    pub heartbeat_stream: Option<String>,
    /// Heartbeats are published on `<prefix>.client_heartbeat` [default: the webhook prefix,
    /// then `-heartbeats`].
    #[arg(id = "heartbeat-subject-prefix", long = "heartbeat-subject-prefix", env = "HEARTBEAT_SUBJECT_PREFIX")]
    pub heartbeat_subject_prefix: Option<String>,
    /// How long heartbeats stay in their stream (older ones are worth nothing to attendance
    /// once the sweeper's timeout has passed).
    #[arg(id = "heartbeat-stream-max-age", long = "heartbeat-stream-max-age", env = "HEARTBEAT_STREAM_MAX_AGE", default_value = "1h", value_parser = humantime::parse_duration)]
    pub heartbeat_max_age: Duration,
    /// Most bytes the heartbeat stream holds; past it heartbeats get 503 (webhooks do not).
    #[arg(id = "heartbeat-stream-max-bytes", long = "heartbeat-stream-max-bytes", env = "HEARTBEAT_STREAM_MAX_BYTES", default_value_t = 1 << 30)]
    pub heartbeat_max_bytes: i64,
}

impl WebhookStreamArgs {
    /// Settings of the stream and the heartbeat stream beside it, with defaults for tests and
    /// tools: no byte limits, an hour of heartbeats.
    pub fn new(stream: String, subject_prefix: String, duplicate_window: Duration, max_age: Duration) -> Self {
        WebhookStreamArgs {
            stream,
            subject_prefix,
            replicas: 1,
            duplicate_window,
            max_age,
            max_bytes: -1,
            heartbeat_stream: None,
            heartbeat_subject_prefix: None,
            heartbeat_max_age: Duration::from_secs(3600),
            heartbeat_max_bytes: -1,
        }
    }

    pub fn settings(&self) -> StreamSettings {
        StreamSettings {
            name: self.stream.clone(),
            description: "LiveKit webhook events, verified by the gateway",
            subject_prefix: self.subject_prefix.clone(),
            replicas: self.replicas,
            max_age: self.max_age,
            duplicate_window: self.duplicate_window,
            max_bytes: self.max_bytes,
        }
    }

    /// The heartbeat stream's settings.
    pub fn heartbeat_settings(&self) -> StreamSettings {
        StreamSettings {
            name: self.heartbeat_stream.clone().unwrap_or_else(|| default_heartbeat_stream(&self.stream)),
            description: "Client heartbeats, verified by the gateway",
            subject_prefix: self
                .heartbeat_subject_prefix
                .clone()
                .unwrap_or_else(|| format!("{}-heartbeats", self.subject_prefix)),
            replicas: self.replicas,
            max_age: self.heartbeat_max_age,
            // A heartbeat is never resent with the same id: no de-duplication to keep.
            duplicate_window: Duration::ZERO,
            max_bytes: self.heartbeat_max_bytes,
        }
    }
}

/// The heartbeat stream beside the webhook stream `webhook_stream` unless one is named.
pub fn default_heartbeat_stream(webhook_stream: &str) -> String {
    format!("{webhook_stream}_HEARTBEATS")
}

/// The durable consumer of the heartbeat stream that goes with the webhook stream's `consumer`.
pub fn heartbeat_consumer(consumer: &str) -> String {
    format!("{consumer}-heartbeats")
}

/// The dead-letter stream.
#[derive(Debug, Clone, clap::Args)]
pub struct DeadLetterArgs {
    /// Stream of events the workers could not apply, for operators to inspect and replay.
    #[arg(id = "dlq-stream", long = "dlq-stream", env = "DLQ_STREAM", default_value = "LIVEKIT_DLQ")]
    pub stream: String,
    /// Dead letters are published on `<prefix>.<event type>`.
    #[arg(
        id = "dlq-subject-prefix",
        long = "dlq-subject-prefix",
        env = "DLQ_SUBJECT_PREFIX",
        default_value = "livekit.dlq"
    )]
    pub subject_prefix: String,
    #[arg(id = "dlq-stream-replicas", long = "dlq-stream-replicas", env = "DLQ_STREAM_REPLICAS", default_value_t = 1)]
    pub replicas: usize,
    /// How long dead letters are kept.
    #[arg(id = "dlq-max-age", long = "dlq-max-age", env = "DLQ_MAX_AGE", default_value = "30d", value_parser = humantime::parse_duration)]
    pub max_age: Duration,
}

impl DeadLetterArgs {
    pub fn settings(&self) -> StreamSettings {
        StreamSettings {
            name: self.stream.clone(),
            description: "LiveKit webhook events the workers could not apply",
            subject_prefix: self.subject_prefix.clone(),
            replicas: self.replicas,
            max_age: self.max_age,
            // A dead letter's id is derived from the original's position (see dead_letters).
            duplicate_window: Duration::ZERO,
            max_bytes: -1,
        }
    }
}

/// The stream of presence changes.
#[derive(Debug, Clone, clap::Args)]
pub struct PresenceArgs {
    /// Stream of presence changes.
    #[arg(
        id = "presence-stream",
        long = "presence-stream",
        env = "PRESENCE_STREAM",
        default_value = "LIVEKIT_PRESENCE"
    )]
    pub stream: String,
    /// Changes are published on `<prefix>.<room token>`.
    #[arg(
        id = "presence-subject-prefix",
        long = "presence-subject-prefix",
        env = "PRESENCE_SUBJECT_PREFIX",
        default_value = "livekit.presence"
    )]
    pub subject_prefix: String,
    #[arg(
        id = "presence-stream-replicas",
        long = "presence-stream-replicas",
        env = "PRESENCE_STREAM_REPLICAS",
        default_value_t = 1
    )]
    pub replicas: usize,
    /// How long changes stay in the stream (they are for live display).
    #[arg(
        id = "presence-stream-max-age",
        long = "presence-stream-max-age",
        env = "PRESENCE_STREAM_MAX_AGE",
        default_value = "1h",
        value_parser = humantime::parse_duration
    )]
    pub max_age: Duration,
}

impl PresenceArgs {
    pub fn settings(&self) -> StreamSettings {
        StreamSettings {
            name: self.stream.clone(),
            description: "Presence changes of attendance, per room",
            subject_prefix: self.subject_prefix.clone(),
            replicas: self.replicas,
            max_age: self.max_age,
            // Covers the outbox publisher's retries of a batch.
            duplicate_window: Duration::from_secs(120),
            max_bytes: -1,
        }
    }
}

/// The stream of meeting reports (`meeting.started`, `.ended`, `.updated`), from the outbox to
/// internal consumers and to `worker deliver`.
#[derive(Debug, Clone, clap::Args)]
pub struct ReportArgs {
    /// Stream of meeting reports.
    #[arg(id = "report-stream", long = "report-stream", env = "REPORT_STREAM", default_value = "ATTENDANCE_REPORTS")]
    pub stream: String,
    /// Reports are published on `<prefix>.<started|ended|updated>`.
    #[arg(
        id = "report-subject-prefix",
        long = "report-subject-prefix",
        env = "REPORT_SUBJECT_PREFIX",
        default_value = "attendance.meeting"
    )]
    pub subject_prefix: String,
    #[arg(
        id = "report-stream-replicas",
        long = "report-stream-replicas",
        env = "REPORT_STREAM_REPLICAS",
        default_value_t = 1
    )]
    pub replicas: usize,
    /// How long reports stay in the stream: at least the longest delivery retry (a day).
    #[arg(
        id = "report-stream-max-age",
        long = "report-stream-max-age",
        env = "REPORT_STREAM_MAX_AGE",
        default_value = "7d",
        value_parser = humantime::parse_duration
    )]
    pub max_age: Duration,
}

impl ReportArgs {
    pub fn settings(&self) -> StreamSettings {
        StreamSettings {
            name: self.stream.clone(),
            description: "Meeting reports (Standard Webhooks payloads) for the platform",
            subject_prefix: self.subject_prefix.clone(),
            replicas: self.replicas,
            max_age: self.max_age,
            // Covers the outbox publisher's retries of a batch (the id is the report's).
            duplicate_window: Duration::from_secs(600),
            max_bytes: -1,
        }
    }
}
