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
use crate::trace::{TRACEPARENT, TraceParent};

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
        self.jetstream
            .create_or_update_stream(self.config())
            .await
            .map(|_| ())
            .map_err(|e| StreamSetupError { stream: self.args.stream.clone(), reason: e.to_string() })
    }

    /// Whether the stream exists (asks the server).
    pub async fn is_present(&self) -> bool {
        self.jetstream.get_stream(&self.args.stream).await.is_ok()
    }

    /// Publishes the event and waits, at most `deadline`, for JetStream's acknowledgement.
    pub async fn publish(
        &self,
        event: &VerifiedEvent,
        trace: &TraceParent,
        deadline: Duration,
    ) -> Result<Stored, PublishError> {
        let mut headers = HeaderMap::new();
        headers.insert(RECEIVED_AT_MS_HEADER, event.received_at_ms().to_string().as_str());
        headers.insert(EVENT_TYPE_HEADER, event.event_type());
        headers.insert(TRACEPARENT, trace.to_string().as_str());
        // `headers` replaces the map, so the message id goes after it.
        let message = PublishMessage::build().payload(event.payload().clone()).headers(headers).message_id(event.id());
        let subject = self.subject(event.event_type());
        let publish_and_ack = async {
            let ack = self.jetstream.send_publish(subject, message).await?;
            ack.await
        };
        match tokio::time::timeout(deadline, publish_and_ack).await {
            Err(_elapsed) => Err(PublishError::Timeout(deadline)),
            Ok(Err(error)) => Err(PublishError::Unavailable(error.to_string())),
            Ok(Ok(ack)) => Ok(Stored { sequence: ack.sequence, duplicate: ack.duplicate }),
        }
    }
}
