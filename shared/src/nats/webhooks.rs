//! The stream of verified webhook events and client heartbeats, from the gateway to the workers:
//! its publishes (the gateway's 2xx depends on them) and its message format, written and read
//! here.
//!
//! Invariant: [`WebhookStream::publish`] returns `Ok` only once JetStream acknowledged that the
//! event is stored. Events are de-duplicated by LiveKit's event id through `Nats-Msg-Id`.
//!
//! Format: a LiveKit event is the body LiveKit sent (secrets removed), on
//! `<prefix>.<event type>`. A heartbeat travels on the heartbeat stream beside it (its own
//! retention and byte limit, so that heartbeats can never fill the disk the webhooks need), with
//! the same guarantees, as `{"event": "client_heartbeat", "id", "createdAt", "room": {"name"},
//! "participant": {"identity"}}` on `<heartbeat prefix>.client_heartbeat`: the shape of a
//! LiveKit event, so that operators' tools show its room and identity like any other message.
//! Workers read both streams and accept either kind of message on either.

use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::{self, message::PublishMessage};
use bytes::Bytes;

use super::publish::{PublishAck, PublishError, publish_acknowledged};
use super::settings::{StreamSettings, StreamSetupError, WebhookStreamArgs};
use crate::domain::event::{EventError, WebhookEvent};
use crate::domain::heartbeat::Heartbeat;
use crate::livekit::VerifiedEvent;
use crate::runtime::trace;

/// NATS header carrying when the gateway received the message, in unix milliseconds.
pub const RECEIVED_AT_MS_HEADER: &str = "Livekit-Received-At-Ms";
/// NATS header carrying the event type, so tools need not parse the payload.
pub const EVENT_TYPE_HEADER: &str = "Livekit-Event";
/// The event type under which heartbeats travel.
const HEARTBEAT_EVENT_TYPE: &str = "client_heartbeat";

/// What one message of the stream carries.
#[derive(Debug, Clone, PartialEq, Eq)]
#[expect(clippy::large_enum_variant, reason = "one short-lived value per message; most messages are LiveKit events")]
pub enum WebhookMessage {
    /// A LiveKit event: its parsed fields, and its JSON text for the event log.
    LiveKit {
        event: WebhookEvent,
        json: String,
    },
    Heartbeat(Heartbeat),
}

/// Why a message of the stream cannot be read; it can never be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    #[error("the payload is not UTF-8")]
    NotUtf8,
    #[error(transparent)]
    Event(#[from] EventError),
    #[error("a heartbeat needs a room name, an identity and a time")]
    IncompleteHeartbeat,
}

impl WebhookMessage {
    /// Reads a message's payload; `received_at_ms` is its [`RECEIVED_AT_MS_HEADER`], if any.
    pub fn decode(payload: &[u8], received_at_ms: Option<i64>) -> Result<Self, MessageError> {
        let json = std::str::from_utf8(payload).map_err(|_| MessageError::NotUtf8)?;
        let event = WebhookEvent::parse(payload)?;
        event.check_identifiers().map_err(EventError::from)?;
        if event.event != HEARTBEAT_EVENT_TYPE {
            return Ok(WebhookMessage::LiveKit { event, json: json.to_owned() });
        }
        let room_name = event.room.map(|room| room.name).filter(|name| !name.is_empty());
        let identity = event.participant.map(|p| p.identity).filter(|identity| !identity.is_empty());
        let received_at_ms = received_at_ms.or(event.created_at.map(|s| s.saturating_mul(1000)));
        match (room_name, identity, received_at_ms) {
            (Some(room_name), Some(identity), Some(received_at_ms)) => {
                Ok(WebhookMessage::Heartbeat(Heartbeat { id: event.id, room_name, identity, received_at_ms }))
            }
            _ => Err(MessageError::IncompleteHeartbeat),
        }
    }
}

/// The receipt time a message's headers carry.
pub fn received_at_ms(headers: Option<&HeaderMap>) -> Option<i64> {
    headers?.get(RECEIVED_AT_MS_HEADER)?.as_str().parse().ok()
}

fn heartbeat_payload(heartbeat: &Heartbeat) -> Bytes {
    let body = serde_json::json!({
        "event": HEARTBEAT_EVENT_TYPE,
        "id": heartbeat.id,
        "createdAt": (heartbeat.received_at_ms / 1000).to_string(),
        "room": {"name": heartbeat.room_name},
        "participant": {"identity": heartbeat.identity},
    });
    Bytes::from(serde_json::to_vec(&body).expect("JSON serializes"))
}

/// Handle on the webhook stream and the heartbeat stream beside it (one message format, two
/// retentions: see [`WebhookStreamArgs`]).
#[derive(Clone)]
pub struct WebhookStream {
    jetstream: jetstream::Context,
    settings: StreamSettings,
    heartbeats: StreamSettings,
}

/// How full a stream is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamFill {
    pub stream: String,
    pub bytes: u64,
    /// -1: no limit.
    pub max_bytes: i64,
}

impl WebhookStream {
    pub fn new(client: async_nats::Client, args: &WebhookStreamArgs) -> Self {
        WebhookStream {
            jetstream: jetstream::new(client),
            settings: args.settings(),
            heartbeats: args.heartbeat_settings(),
        }
    }

    /// The heartbeat stream's settings.
    pub fn heartbeat_settings(&self) -> &StreamSettings {
        &self.heartbeats
    }

    pub fn name(&self) -> &str {
        &self.settings.name
    }

    pub fn settings(&self) -> &StreamSettings {
        &self.settings
    }

    /// Creates both streams if they do not exist; an existing one is left as it is (its
    /// differences from the configuration are logged).
    pub async fn ensure(&self) -> Result<(), StreamSetupError> {
        self.settings.create_or_check(&self.jetstream).await?;
        self.heartbeats.create_or_check(&self.jetstream).await.map(|_| ())
    }

    /// Creates the durable pull consumer the workers share, or updates it to `config` if it
    /// exists (a changed ack wait or max deliveries takes effect at the next start), reading
    /// every subject of this stream. A change the server refuses is a permanent failure.
    pub async fn durable_consumer(
        &self,
        config: jetstream::consumer::pull::Config,
    ) -> Result<jetstream::consumer::PullConsumer, StreamSetupError> {
        super::settings::durable_consumer(&self.jetstream, &self.settings, config).await
    }

    /// The same for the heartbeat stream: the durable consumer named as `config`'s, then
    /// `-heartbeats`.
    pub async fn heartbeat_consumer(
        &self,
        config: jetstream::consumer::pull::Config,
    ) -> Result<jetstream::consumer::PullConsumer, StreamSetupError> {
        let durable_name = config.durable_name.as_deref().map(super::settings::heartbeat_consumer);
        super::settings::durable_consumer(
            &self.jetstream,
            &self.heartbeats,
            jetstream::consumer::pull::Config { durable_name, ..config },
        )
        .await
    }

    /// The gateway's receipt time of the webhook at `sequence` of the webhook stream.
    pub async fn received_at_ms_of(&self, sequence: u64) -> Option<i64> {
        let stream = self.jetstream.get_stream(self.name()).await.ok()?;
        let message = stream.get_raw_message(sequence).await.ok()?;
        received_at_ms(Some(&message.headers))
    }

    /// Whether both streams exist (asks the server).
    pub async fn is_present(&self) -> bool {
        self.jetstream.get_stream(self.name()).await.is_ok()
            && self.jetstream.get_stream(&self.heartbeats.name).await.is_ok()
    }

    /// How full each stream is, for the metrics that warn before a limit is reached.
    pub async fn fill(&self) -> Result<Vec<StreamFill>, StreamSetupError> {
        let mut fills = Vec::new();
        for settings in [&self.settings, &self.heartbeats] {
            let mut stream = self.jetstream.get_stream(&settings.name).await.map_err(|e| settings.setup_error(e))?;
            let info = stream.info().await.map_err(|e| settings.setup_error(e))?;
            fills.push(StreamFill {
                stream: settings.name.clone(),
                bytes: info.state.bytes,
                max_bytes: info.config.max_bytes,
            });
        }
        Ok(fills)
    }

    /// Publishes a verified event, with the current span's trace context, and waits, at most
    /// `deadline`, for JetStream's acknowledgement.
    pub async fn publish(&self, event: &VerifiedEvent, deadline: Duration) -> Result<PublishAck, PublishError> {
        let message = self.message(event.id(), event.event_type(), event.received_at_ms(), event.payload().clone());
        publish_acknowledged(&self.jetstream, self.settings.subject(event.event_type()), message, deadline).await
    }

    /// Publishes a client heartbeat, like an event.
    pub async fn publish_heartbeat(
        &self,
        heartbeat: &Heartbeat,
        deadline: Duration,
    ) -> Result<PublishAck, PublishError> {
        let payload = heartbeat_payload(heartbeat);
        let message = self.message(&heartbeat.id, HEARTBEAT_EVENT_TYPE, heartbeat.received_at_ms, payload);
        publish_acknowledged(&self.jetstream, self.heartbeats.subject(HEARTBEAT_EVENT_TYPE), message, deadline).await
    }

    fn message(&self, id: &str, event_type: &str, received_at_ms: i64, payload: Bytes) -> PublishMessage {
        let mut headers = HeaderMap::new();
        headers.insert(RECEIVED_AT_MS_HEADER, received_at_ms.to_string().as_str());
        headers.insert(EVENT_TYPE_HEADER, event_type);
        trace::inject_into_nats(&tracing::Span::current(), &mut headers);
        // `headers` replaces the map, so the message id goes after it.
        PublishMessage::build().payload(payload).headers(headers).message_id(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_heartbeat_reads_back_as_it_was_published() {
        let heartbeat = Heartbeat::new("algebra".into(), "ada".into(), 1_800_000_000_123);
        let payload = heartbeat_payload(&heartbeat);
        assert_eq!(WebhookMessage::decode(&payload, Some(1_800_000_000_123)), Ok(WebhookMessage::Heartbeat(heartbeat)));
        let without_header = WebhookMessage::decode(&payload, None).unwrap();
        assert!(matches!(without_header, WebhookMessage::Heartbeat(h) if h.received_at_ms == 1_800_000_000_000));
    }

    #[test]
    fn a_livekit_event_keeps_its_json_text() {
        let json = r#"{"event":"room_started","id":"EV_1","room":{"name":"r","sid":"RM_1"}}"#;
        let WebhookMessage::LiveKit { event, json: kept } = WebhookMessage::decode(json.as_bytes(), None).unwrap()
        else {
            panic!("an event")
        };
        assert_eq!((event.id.as_str(), kept.as_str()), ("EV_1", json));
    }

    #[test]
    fn refuses_what_cannot_be_read() {
        assert_eq!(WebhookMessage::decode(b"\xff", None), Err(MessageError::NotUtf8));
        assert_eq!(WebhookMessage::decode(b"{}", None), Err(MessageError::Event(EventError::MissingType)));
        let no_identity = br#"{"event":"client_heartbeat","id":"HB_1","room":{"name":"r"}}"#;
        assert_eq!(WebhookMessage::decode(no_identity, Some(1)), Err(MessageError::IncompleteHeartbeat));
        let no_time = br#"{"event":"client_heartbeat","id":"HB_1","room":{"name":"r"},"participant":{"identity":"a"}}"#;
        assert_eq!(WebhookMessage::decode(no_time, None), Err(MessageError::IncompleteHeartbeat));
    }
}
