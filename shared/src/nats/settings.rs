//! The streams' settings: one [`StreamSettings`] type for every stream, built from the clap
//! arguments of each (their environment variable names differ, so each has its own group), and
//! the one way to set a stream up: created with these settings when it does not exist; an
//! existing stream is left as it is (an operator may have tuned it with `nats stream edit`), and
//! its differences from the configuration are reported, never overwritten. One that cannot work
//! (its subjects do not take ours) is a permanent set-up failure, reported by readiness.

use std::time::Duration;

use async_nats::jetstream::context::GetStreamErrorKind;
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
            discard: stream::DiscardPolicy::Old,
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

/// The stream of verified webhook events (and client heartbeats).
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
}

impl WebhookStreamArgs {
    pub fn settings(&self) -> StreamSettings {
        StreamSettings {
            name: self.stream.clone(),
            description: "LiveKit webhook events, verified by the gateway",
            subject_prefix: self.subject_prefix.clone(),
            replicas: self.replicas,
            max_age: self.max_age,
            duplicate_window: self.duplicate_window,
        }
    }
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
        }
    }
}
