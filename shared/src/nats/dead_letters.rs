//! The dead-letter stream: what the workers could not apply, written by them and read, replayed
//! and purged by operators. Its format lives here alone: a dead letter is the original message
//! (bytes and headers) plus the `Dlq-*` headers below, on `<prefix>.<event type>`.
//!
//! Invariants: a dead letter's message id is derived from the original's stream position and
//! the subject it replays to, so a worker that dies between publishing it and terminating the
//! original produces one dead letter, not two (while one report that several delivery endpoints
//! failed to take gives one dead letter per endpoint, each replaying to its own endpoint). A replay republishes the original with a fresh `Nats-Msg-Id` (the webhook stream's
//! duplicate window would otherwise swallow it) and deletes the dead letter only once the
//! republish is acknowledged.

use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::{self, message::PublishMessage, message::StreamMessage};
use bytes::Bytes;
use serde::Serialize;

use super::publish::{PublishAck, PublishError, publish_acknowledged};
use super::settings::{DeadLetterArgs, StreamSettings, StreamSetupError};
use crate::domain::event::is_valid_event_type;
use crate::domain::time::rfc3339_ms;

/// Headers a dead letter carries besides the original message's own.
pub mod headers {
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
    /// Every dead-letter header starts with this; a replay drops them.
    pub const PREFIX: &str = "Dlq-";
}

/// A message to dead-letter: the original bytes and headers, and why.
#[derive(Debug, Clone)]
pub struct DeadLetter<'a> {
    pub event_type: &'a str,
    pub payload: Bytes,
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

/// The workers' handle on the dead-letter stream: they create it and write to it.
#[derive(Clone)]
pub struct DeadLetterStream {
    jetstream: jetstream::Context,
    settings: StreamSettings,
}

impl DeadLetterStream {
    pub fn new(client: async_nats::Client, args: &DeadLetterArgs) -> Self {
        DeadLetterStream { jetstream: jetstream::new(client), settings: args.settings() }
    }

    pub fn name(&self) -> &str {
        &self.settings.name
    }

    /// Creates the stream if it does not exist; an existing one is left as it is (its
    /// differences from the configuration are logged).
    pub async fn ensure(&self) -> Result<(), StreamSetupError> {
        self.settings.create_or_check(&self.jetstream).await.map(|_| ())
    }

    /// Dead letters waiting in the stream.
    pub async fn depth(&self) -> Result<u64, StreamSetupError> {
        let mut stream = self.jetstream.get_stream(self.name()).await.map_err(|e| self.settings.setup_error(e))?;
        Ok(stream.info().await.map_err(|e| self.settings.setup_error(e))?.state.messages)
    }

    /// Publishes the dead letter and waits for JetStream's acknowledgement. Publishing it twice
    /// stores it once.
    pub async fn publish(&self, letter: &DeadLetter<'_>, deadline: Duration) -> Result<PublishAck, PublishError> {
        use headers as h;
        let mut headers = letter.original_headers.cloned().unwrap_or_default();
        headers.insert(h::ERROR, letter.error.replace(['\r', '\n'], " ").as_str());
        headers.insert(h::REASON, letter.reason);
        headers.insert(h::DELIVERY_COUNT, letter.delivery_count.to_string().as_str());
        headers.insert(h::ORIGINAL_SUBJECT, letter.original_subject);
        headers.insert(h::ORIGINAL_STREAM, letter.original_stream);
        headers.insert(h::ORIGINAL_SEQUENCE, letter.original_sequence.to_string().as_str());
        headers.insert(h::FIRST_FAILURE_AT_MS, letter.first_failure_at_ms.to_string().as_str());
        headers.insert(h::LAST_FAILURE_AT_MS, letter.last_failure_at_ms.to_string().as_str());
        let message_id =
            format!("dlq:{}:{}:{}", letter.original_stream, letter.original_sequence, letter.original_subject);
        let message = PublishMessage::build().payload(letter.payload.clone()).headers(headers).message_id(message_id);
        let token = if is_valid_event_type(letter.event_type) { letter.event_type } else { "unknown" };
        publish_acknowledged(&self.jetstream, self.settings.subject(token), message, deadline).await
    }
}

/// Why an operator's dead-letter command failed; the text is what the operator reads.
#[derive(Debug, thiserror::Error)]
pub enum DeadLetterError {
    #[error("cannot reach NATS at {url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("the dead-letter stream {0} does not exist (no worker has started yet?)")]
    NoStream(String),
    #[error("no dead letter with sequence {0}")]
    NoSuchSequence(u64),
    #[error("dead letter {0} has no original subject; it cannot be replayed")]
    NoOriginalSubject(u64),
    #[error("NATS: {0}")]
    Nats(String),
}

/// Which dead letters a command applies to; every given filter must match.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct DeadLetterFilter {
    /// Only this event type (`participant_joined`, …).
    #[arg(long)]
    pub event_type: Option<String>,
    /// Only events of this room.
    #[arg(long)]
    pub room: Option<String>,
    /// Only dead letters whose error contains this text (case-insensitive).
    #[arg(long)]
    pub error: Option<String>,
    /// Only dead letters that last failed at or after this time (RFC 3339, or a duration ago: `2h`).
    #[arg(long, value_parser = parse_instant_now)]
    pub since: Option<i64>,
    /// Only dead letters that last failed before this time (RFC 3339, or a duration ago).
    #[arg(long, value_parser = parse_instant_now)]
    pub until: Option<i64>,
}

fn parse_instant_now(text: &str) -> Result<i64, String> {
    crate::domain::time::parse_instant(text, crate::domain::time::now_unix_ms())
}

impl DeadLetterFilter {
    pub fn is_empty(&self) -> bool {
        self.event_type.is_none()
            && self.room.is_none()
            && self.error.is_none()
            && self.since.is_none()
            && self.until.is_none()
    }

    pub fn matches(&self, letter: &DeadLetterSummary) -> bool {
        self.event_type.as_ref().is_none_or(|t| &letter.event_type == t)
            && self.room.as_ref().is_none_or(|r| letter.room.as_ref() == Some(r))
            && self.error.as_ref().is_none_or(|e| letter.error.to_lowercase().contains(&e.to_lowercase()))
            && self.since.is_none_or(|since| letter.failed_at_ms.is_some_and(|at| at >= since))
            && self.until.is_none_or(|until| letter.failed_at_ms.is_some_and(|at| at < until))
    }
}

/// One dead letter, summarized from its headers and (when it is JSON) its payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeadLetterSummary {
    pub sequence: u64,
    pub event_type: String,
    pub event_id: Option<String>,
    pub room: Option<String>,
    pub identity: Option<String>,
    pub reason: String,
    pub error: String,
    pub delivery_count: i64,
    pub original_subject: String,
    pub failed_at: Option<String>,
    #[serde(skip)]
    pub failed_at_ms: Option<i64>,
}

impl DeadLetterSummary {
    pub fn of(message: &StreamMessage) -> Self {
        let payload: serde_json::Value = serde_json::from_slice(&message.payload).unwrap_or_default();
        let text = |value: &serde_json::Value| value.as_str().filter(|s| !s.is_empty()).map(str::to_owned);
        let header = |name| header(&message.headers, name);
        let failed_at_ms = header(headers::LAST_FAILURE_AT_MS).and_then(|v| v.parse().ok());
        DeadLetterSummary {
            sequence: message.sequence,
            event_type: message.subject.rsplit('.').next().unwrap_or_default().to_owned(),
            event_id: text(&payload["id"]),
            // A LiveKit event's room, or a meeting report's (`data.room`).
            room: text(&payload["room"]["name"]).or_else(|| text(&payload["data"]["room"])),
            identity: text(&payload["participant"]["identity"]),
            reason: header(headers::REASON).unwrap_or_default(),
            error: header(headers::ERROR).unwrap_or_default(),
            delivery_count: header(headers::DELIVERY_COUNT).and_then(|v| v.parse().ok()).unwrap_or_default(),
            original_subject: header(headers::ORIGINAL_SUBJECT).unwrap_or_default(),
            failed_at: failed_at_ms.map(rfc3339_ms),
            failed_at_ms,
        }
    }
}

fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers.get(name).map(|v| v.as_str().to_owned())
}

/// The operators' handle on the dead letters: list, show, replay, delete.
pub struct DeadLetters {
    jetstream: jetstream::Context,
    stream: jetstream::stream::Stream,
    name: String,
}

impl DeadLetters {
    /// Connects once with `nats` (an operator wants an answer, not a hang) and opens the
    /// existing stream `stream_name`.
    pub async fn connect(nats: &super::NatsArgs, stream_name: &str) -> Result<Self, DeadLetterError> {
        let client = nats
            .connect_once("attendance-dlq-cli")
            .await
            .map_err(|reason| DeadLetterError::Unreachable { url: nats.servers_for_display(), reason })?;
        Self::open(client, stream_name).await
    }

    pub async fn open(client: async_nats::Client, stream_name: &str) -> Result<Self, DeadLetterError> {
        let jetstream = jetstream::new(client);
        let stream =
            jetstream.get_stream(stream_name).await.map_err(|_| DeadLetterError::NoStream(stream_name.to_owned()))?;
        Ok(DeadLetters { jetstream, stream, name: stream_name.to_owned() })
    }

    /// Every dead letter that matches, oldest first.
    pub async fn list(
        &mut self,
        filter: &DeadLetterFilter,
    ) -> Result<Vec<(DeadLetterSummary, StreamMessage)>, DeadLetterError> {
        let state = self.stream.info().await.map_err(|e| DeadLetterError::Nats(e.to_string()))?.state.clone();
        let mut letters = Vec::new();
        if state.messages == 0 {
            return Ok(letters);
        }
        for sequence in state.first_sequence..=state.last_sequence {
            // Deleted sequences (replayed or purged) leave gaps.
            let Ok(message) = self.stream.get_raw_message(sequence).await else { continue };
            let summary = DeadLetterSummary::of(&message);
            if filter.matches(&summary) {
                letters.push((summary, message));
            }
        }
        Ok(letters)
    }

    pub async fn get(&self, sequence: u64) -> Result<StreamMessage, DeadLetterError> {
        self.stream.get_raw_message(sequence).await.map_err(|_| DeadLetterError::NoSuchSequence(sequence))
    }

    /// Republishes a dead letter to its original subject with a fresh message id, then deletes
    /// it once JetStream acknowledged the republish. Returns the republished message's sequence.
    pub async fn replay(&self, message: &StreamMessage) -> Result<u64, DeadLetterError> {
        let subject = header(&message.headers, headers::ORIGINAL_SUBJECT)
            .ok_or(DeadLetterError::NoOriginalSubject(message.sequence))?;
        let mut original_headers = HeaderMap::new();
        for (name, values) in message.headers.iter() {
            let name: &str = name.as_ref();
            if name.starts_with(headers::PREFIX) || name == "Nats-Msg-Id" {
                continue;
            }
            for value in values {
                original_headers.append(name, value.as_str());
            }
        }
        let message_id = format!("replay:{}:{}:{:08x}", self.name, message.sequence, fastrand::u32(..));
        let publish = PublishMessage::build()
            .payload(Bytes::copy_from_slice(&message.payload))
            .headers(original_headers)
            .message_id(message_id);
        let ack =
            self.jetstream.send_publish(subject, publish).await.map_err(|e| DeadLetterError::Nats(e.to_string()))?;
        let stored = ack.await.map_err(|e| DeadLetterError::Nats(e.to_string()))?;
        self.delete(message.sequence).await?;
        Ok(stored.sequence)
    }

    pub async fn delete(&self, sequence: u64) -> Result<(), DeadLetterError> {
        self.stream.delete_message(sequence).await.map(|_| ()).map_err(|e| DeadLetterError::Nats(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary() -> DeadLetterSummary {
        DeadLetterSummary {
            sequence: 7,
            event_type: "participant_joined".into(),
            event_id: Some("EV_1".into()),
            room: Some("algebra".into()),
            identity: Some("ada".into()),
            reason: "invalid_event".into(),
            error: "the event has no `id`".into(),
            delivery_count: 1,
            original_subject: "livekit.webhook.participant_joined".into(),
            failed_at: Some(rfc3339_ms(1_000_000)),
            failed_at_ms: Some(1_000_000),
        }
    }

    #[test]
    fn every_filter_must_match() {
        let filter = |f: DeadLetterFilter| f.matches(&summary());
        assert!(filter(DeadLetterFilter::default()));
        assert!(filter(DeadLetterFilter {
            room: Some("algebra".into()),
            error: Some("NO `ID`".into()),
            ..Default::default()
        }));
        assert!(!filter(DeadLetterFilter { room: Some("geometry".into()), ..Default::default() }));
        assert!(!filter(DeadLetterFilter { event_type: Some("room_finished".into()), ..Default::default() }));
        assert!(filter(DeadLetterFilter { since: Some(1_000_000), until: Some(1_000_001), ..Default::default() }));
        assert!(!filter(DeadLetterFilter { since: Some(1_000_001), ..Default::default() }));
    }
}
