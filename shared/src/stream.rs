//! The JetStream stream of verified webhook events: its definition, its creation, and the
//! publish that the gateway's 2xx depends on.
//!
//! Invariant: [`WebhookStream::publish`] returns `Ok` only once JetStream acknowledged that the
//! event is stored (a duplicate acknowledgement counts: the event was stored earlier). Events are
//! de-duplicated by LiveKit's event id through `Nats-Msg-Id`.

use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::{self, message::PublishMessage, stream};

use crate::config::WebhookStreamArgs;
use crate::event::VerifiedEvent;
use crate::trace;

/// NATS header carrying when the gateway received the event, in unix milliseconds.
pub const RECEIVED_AT_MS_HEADER: &str = "Livekit-Received-At-Ms";
/// NATS header carrying the event type, so tools need not parse the payload.
pub const EVENT_TYPE_HEADER: &str = "Livekit-Event";

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("JetStream did not acknowledge within {0:?}")]
    Timeout(Duration),
    #[error("JetStream refused or could not take the publish: {0}")]
    Unavailable(String),
}

#[derive(Debug, thiserror::Error)]
#[error("cannot create or update the stream {stream}: {reason}")]
pub struct StreamSetupError {
    pub stream: String,
    pub reason: String,
}

/// What JetStream answered for a stored event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub sequence: u64,
    /// True when the event id was already in the stream (a LiveKit retry or a duplicate).
    pub duplicate: bool,
}

/// Handle on the webhook stream.
#[derive(Clone)]
pub struct WebhookStream {
    jetstream: jetstream::Context,
    args: WebhookStreamArgs,
}

impl WebhookStream {
    pub fn new(client: async_nats::Client, args: WebhookStreamArgs) -> Self {
        WebhookStream { jetstream: jetstream::new(client), args }
    }

    pub fn name(&self) -> &str {
        &self.args.stream
    }

    /// The subject an event type is published on.
    pub fn subject(&self, event_type: &str) -> String {
        format!("{}.{event_type}", self.args.subject_prefix)
    }

    /// The stream's definition. Limits retention, so that events stay available for inspection
    /// and replay after the workers acknowledged them, until `max_age`.
    pub fn config(&self) -> stream::Config {
        stream::Config {
            name: self.args.stream.clone(),
            description: Some("LiveKit webhook events, verified by the gateway".into()),
            subjects: vec![format!("{}.>", self.args.subject_prefix)],
            retention: stream::RetentionPolicy::Limits,
            storage: stream::StorageType::File,
            num_replicas: self.args.replicas,
            duplicate_window: self.args.duplicate_window,
            max_age: self.args.max_age,
            discard: stream::DiscardPolicy::Old,
            ..Default::default()
        }
    }

    /// Creates the stream, or updates it to this definition if it exists.
    pub async fn ensure(&self) -> Result<(), StreamSetupError> {
        create_or_update(&self.jetstream, self.config()).await
    }

    /// Creates the durable pull consumer the workers share, or binds to it if it exists, reading
    /// every event subject of this stream.
    pub async fn durable_consumer(
        &self,
        config: jetstream::consumer::pull::Config,
    ) -> Result<jetstream::consumer::PullConsumer, StreamSetupError> {
        let name = config.durable_name.clone().unwrap_or_default();
        let config =
            jetstream::consumer::pull::Config { filter_subject: format!("{}.>", self.args.subject_prefix), ..config };
        let setup_error = |reason: String| StreamSetupError { stream: self.args.stream.clone(), reason };
        let stream = self.jetstream.get_stream(&self.args.stream).await.map_err(|e| setup_error(e.to_string()))?;
        stream.get_or_create_consumer(&name, config).await.map_err(|e| setup_error(format!("consumer {name}: {e}")))
    }

    /// Whether the stream exists (asks the server).
    pub async fn is_present(&self) -> bool {
        self.jetstream.get_stream(&self.args.stream).await.is_ok()
    }

    /// Publishes the event, with the current span's trace context, and waits, at most
    /// `deadline`, for JetStream's acknowledgement.
    pub async fn publish(&self, event: &VerifiedEvent, deadline: Duration) -> Result<Stored, PublishError> {
        let mut headers = HeaderMap::new();
        headers.insert(RECEIVED_AT_MS_HEADER, event.received_at_ms().to_string().as_str());
        headers.insert(EVENT_TYPE_HEADER, event.event_type());
        trace::inject_into_nats(&tracing::Span::current(), &mut headers);
        // `headers` replaces the map, so the message id goes after it.
        let message = PublishMessage::build().payload(event.payload().clone()).headers(headers).message_id(event.id());
        publish_acknowledged(&self.jetstream, self.subject(event.event_type()), message, deadline).await
    }
}

/// Headers a dead letter carries besides the original message's own.
pub mod dead_letter_headers {
    /// Why the event could not be applied.
    pub const ERROR: &str = "Dlq-Error";
    /// Stable reason code (`invalid_event`, `delivery_limit`, …).
    pub const REASON: &str = "Dlq-Reason";
    pub const DELIVERY_COUNT: &str = "Dlq-Delivery-Count";
    pub const ORIGINAL_SUBJECT: &str = "Dlq-Original-Subject";
    pub const ORIGINAL_STREAM: &str = "Dlq-Original-Stream";
    pub const ORIGINAL_SEQUENCE: &str = "Dlq-Original-Sequence";
    /// Unix milliseconds.
    pub const FIRST_FAILURE_AT_MS: &str = "Dlq-First-Failure-At-Ms";
    pub const LAST_FAILURE_AT_MS: &str = "Dlq-Last-Failure-At-Ms";
}

/// The dead-letter stream's settings.
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

/// A message to dead-letter: the original bytes and headers, and why.
#[derive(Debug, Clone)]
pub struct DeadLetter<'a> {
    pub event_type: &'a str,
    pub payload: bytes::Bytes,
    pub original_headers: Option<&'a HeaderMap>,
    pub original_subject: &'a str,
    pub original_stream: &'a str,
    pub original_sequence: u64,
    pub delivery_count: i64,
    pub reason: &'a str,
    pub error: &'a str,
    pub first_failure_at_ms: i64,
    pub last_failure_at_ms: i64,
}

/// Handle on the dead-letter stream.
#[derive(Clone)]
pub struct DeadLetterStream {
    jetstream: jetstream::Context,
    args: DeadLetterArgs,
}

impl DeadLetterStream {
    pub fn new(client: async_nats::Client, args: DeadLetterArgs) -> Self {
        DeadLetterStream { jetstream: jetstream::new(client), args }
    }

    pub fn name(&self) -> &str {
        &self.args.stream
    }

    pub async fn ensure(&self) -> Result<(), StreamSetupError> {
        let config = stream::Config {
            name: self.args.stream.clone(),
            description: Some("LiveKit webhook events the workers could not apply".into()),
            subjects: vec![format!("{}.>", self.args.subject_prefix)],
            retention: stream::RetentionPolicy::Limits,
            storage: stream::StorageType::File,
            num_replicas: self.args.replicas,
            max_age: self.args.max_age,
            ..Default::default()
        };
        create_or_update(&self.jetstream, config).await
    }

    /// Dead letters waiting in the stream.
    pub async fn depth(&self) -> Result<u64, StreamSetupError> {
        let setup_error = |reason: String| StreamSetupError { stream: self.args.stream.clone(), reason };
        let mut stream = self.jetstream.get_stream(&self.args.stream).await.map_err(|e| setup_error(e.to_string()))?;
        Ok(stream.info().await.map_err(|e| setup_error(e.to_string()))?.state.messages)
    }

    /// Publishes the dead letter and waits for JetStream's acknowledgement. Its message id is
    /// derived from the original's position, so publishing it twice (a worker that died before
    /// terminating the original) stores it once.
    pub async fn publish(&self, letter: &DeadLetter<'_>, deadline: Duration) -> Result<Stored, PublishError> {
        use dead_letter_headers as h;
        let mut headers = letter.original_headers.cloned().unwrap_or_default();
        headers.insert(h::ERROR, letter.error.replace(['\r', '\n'], " ").as_str());
        headers.insert(h::REASON, letter.reason);
        headers.insert(h::DELIVERY_COUNT, letter.delivery_count.to_string().as_str());
        headers.insert(h::ORIGINAL_SUBJECT, letter.original_subject);
        headers.insert(h::ORIGINAL_STREAM, letter.original_stream);
        headers.insert(h::ORIGINAL_SEQUENCE, letter.original_sequence.to_string().as_str());
        headers.insert(h::FIRST_FAILURE_AT_MS, letter.first_failure_at_ms.to_string().as_str());
        headers.insert(h::LAST_FAILURE_AT_MS, letter.last_failure_at_ms.to_string().as_str());
        let message_id = format!("dlq:{}:{}", letter.original_stream, letter.original_sequence);
        let message = PublishMessage::build().payload(letter.payload.clone()).headers(headers).message_id(message_id);
        let token = if crate::event::is_subject_token(letter.event_type) { letter.event_type } else { "unknown" };
        let subject = format!("{}.{token}", self.args.subject_prefix);
        publish_acknowledged(&self.jetstream, subject, message, deadline).await
    }
}

/// Creates a stream, or updates it to `config` if it exists.
pub(crate) async fn create_or_update(
    jetstream: &jetstream::Context,
    config: stream::Config,
) -> Result<(), StreamSetupError> {
    let name = config.name.clone();
    jetstream
        .create_or_update_stream(config)
        .await
        .map(|_| ())
        .map_err(|e| StreamSetupError { stream: name, reason: e.to_string() })
}

/// Publishes and waits, at most `deadline`, for JetStream's acknowledgement.
async fn publish_acknowledged(
    jetstream: &jetstream::Context,
    subject: String,
    message: PublishMessage,
    deadline: Duration,
) -> Result<Stored, PublishError> {
    let publish_and_ack = async {
        let ack = jetstream.send_publish(subject, message).await?;
        ack.await
    };
    match tokio::time::timeout(deadline, publish_and_ack).await {
        Err(_elapsed) => Err(PublishError::Timeout(deadline)),
        Ok(Err(error)) => Err(PublishError::Unavailable(error.to_string())),
        Ok(Ok(ack)) => Ok(Stored { sequence: ack.sequence, duplicate: ack.duplicate }),
    }
}
