//! Presence changes on NATS: the sweeper publishes each flip of a participant's "present now"
//! on a subject per room; the gateway's live stream subscribes to it.
//!
//! Room names may hold any character, a NATS subject token may not: the room's token is the
//! unpadded base64url of its UTF-8 name (letters, digits, `-`, `_`).

use std::time::Duration;

use async_nats::jetstream::{self, message::PublishMessage, stream};
use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::stream::{PublishError, StreamSetupError, create_or_update};

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

/// One presence change, as published.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PresenceChange {
    /// The outbox row's id: increasing, so consumers can order and de-duplicate.
    pub id: i64,
    pub room: String,
    pub identity: String,
    pub present: bool,
    /// RFC 3339, UTC, milliseconds.
    pub changed_at: String,
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
    args: PresenceArgs,
}

impl PresenceStream {
    pub fn new(client: async_nats::Client, args: PresenceArgs) -> Self {
        PresenceStream { jetstream: jetstream::new(client), args }
    }

    pub async fn ensure(&self) -> Result<(), StreamSetupError> {
        let config = stream::Config {
            name: self.args.stream.clone(),
            description: Some("Presence changes of attendance, per room".into()),
            subjects: vec![format!("{}.>", self.args.subject_prefix)],
            storage: stream::StorageType::File,
            num_replicas: self.args.replicas,
            max_age: self.args.max_age,
            duplicate_window: Duration::from_secs(120),
            ..Default::default()
        };
        create_or_update(&self.jetstream, config).await
    }

    /// Publishes changes in order and waits for every acknowledgement (at most `deadline`).
    /// The message id is the outbox id, so a change published twice is stored once. Each publish
    /// continues the trace of the change's cause (its stored `traceparent`), if any.
    pub async fn publish_all(
        &self,
        changes: &[(PresenceChange, Option<String>)],
        deadline: Duration,
    ) -> Result<(), PublishError> {
        let publish = async {
            let mut acks = Vec::with_capacity(changes.len());
            for (change, traceparent) in changes {
                let span = tracing::info_span!("publish_presence", outbox_id = change.id, room = %change.room);
                let mut headers = async_nats::HeaderMap::new();
                if let Some(traceparent) = traceparent {
                    headers.insert(crate::trace::TRACEPARENT, traceparent.as_str());
                    crate::trace::continue_from_nats(&span, Some(&headers));
                }
                crate::trace::inject_into_nats(&span, &mut headers);
                let payload = serde_json::to_vec(change).expect("a presence change serializes");
                let message = PublishMessage::build()
                    .payload(payload.into())
                    .headers(headers)
                    .message_id(format!("presence-{}", change.id));
                acks.push(
                    self.jetstream.send_publish(subject(&self.args.subject_prefix, &change.room), message).await?,
                );
            }
            for ack in acks {
                ack.await?;
            }
            Ok::<(), async_nats::Error>(())
        };
        match tokio::time::timeout(deadline, publish).await {
            Err(_) => Err(PublishError::Timeout(deadline)),
            Ok(Err(error)) => Err(PublishError::Unavailable(error.to_string())),
            Ok(Ok(())) => Ok(()),
        }
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
