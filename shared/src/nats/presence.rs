//! Presence changes on NATS: the sweeper publishes each flip of a participant's "present now"
//! on a subject per room; the gateway's live stream subscribes to it. The message format
//! ([`PresenceMessage`]) is written and read here.
//!
//! Room names may hold any character, a NATS subject token may not: the room's token is the
//! unpadded base64url of its UTF-8 name (letters, digits, `-`, `_`).

use std::time::Duration;

use async_nats::jetstream;
use base64::Engine as _;
use serde::{Deserialize, Serialize};

use super::publish::{OutboxMessage, PublishError, publish_outbox};
use super::settings::{PresenceArgs, StreamSettings, StreamSetupError};

/// One presence change, as published.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PresenceMessage {
    /// The outbox row's id: increasing, so consumers can order and de-duplicate.
    pub id: i64,
    pub room: String,
    /// The meeting (room session) whose attendance changed; empty for changes written before
    /// meetings existed.
    #[serde(default)]
    pub room_sid: String,
    pub identity: String,
    pub present: bool,
    /// RFC 3339, UTC, milliseconds.
    pub changed_at: String,
}

impl PresenceMessage {
    /// Reads a published change; `None` if the bytes are not one.
    pub fn decode(payload: &[u8]) -> Option<Self> {
        serde_json::from_slice(payload).ok()
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a presence message serializes")
    }
}

/// A room name as one subject token.
pub fn room_token(room: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(room.as_bytes())
}

/// Subject of a room's presence changes.
pub fn subject(prefix: &str, room: &str) -> String {
    format!("{prefix}.{}", room_token(room))
}

#[derive(Clone)]
pub struct PresenceStream {
    jetstream: jetstream::Context,
    settings: StreamSettings,
}

impl PresenceStream {
    pub fn new(client: async_nats::Client, args: &PresenceArgs) -> Self {
        PresenceStream { jetstream: jetstream::new(client), settings: args.settings() }
    }

    /// Creates the stream if it does not exist; an existing one is left as it is (its
    /// differences from the configuration are logged).
    pub async fn ensure(&self) -> Result<(), StreamSetupError> {
        self.settings.create_or_check(&self.jetstream).await.map(|_| ())
    }

    /// Publishes changes in order and waits for every acknowledgement (at most `deadline`).
    /// The message id is the outbox id, so a change published twice is stored once. Each publish
    /// continues the trace of the change's cause (its stored `traceparent`), if any.
    pub async fn publish_all(
        &self,
        changes: &[(PresenceMessage, Option<String>)],
        deadline: Duration,
    ) -> Result<(), PublishError> {
        let messages = changes
            .iter()
            .map(|(change, traceparent)| OutboxMessage {
                subject: subject(&self.settings.subject_prefix, &change.room),
                payload: change.to_json().into(),
                headers: async_nats::HeaderMap::new(),
                message_id: format!("presence-{}", change.id),
                span: tracing::info_span!("publish_presence", outbox_id = change.id, room = %change.room),
                traceparent: traceparent.clone(),
            })
            .collect();
        publish_outbox(&self.jetstream, messages, deadline).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_room_name_becomes_a_valid_token() {
        for room in ["algebra", "a.b", "a b*>", "é€😀", "", "room/with/slashes"] {
            let token = room_token(room);
            assert!(token.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'), "{room}: {token}");
        }
        assert_ne!(room_token("a.b"), room_token("a_b"));
    }
}
