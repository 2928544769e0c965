//! The webhook event as it travels from the gateway to the workers.
//!
//! A [`VerifiedEvent`] can only be made by [`crate::livekit::webhook::receive`], after the
//! signature and body hash were checked, so an unverified request cannot reach the stream by
//! mistake. Its payload is the body LiveKit sent, with `room.turnPassword` removed: that secret
//! must never leave the gateway. Event types this code does not interpret are kept as they are.

use bytes::Bytes;
use serde::Deserialize as _;
use serde_json::Value;

/// The event type of a client heartbeat: published by the gateway on the webhook stream, so that
/// heartbeats reach the workers in the same order and with the same guarantees as events.
pub const HEARTBEAT_EVENT: &str = "client_heartbeat";

/// Why an authentic body is not a usable event; such a request can never succeed (4xx).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    #[error("the body is not a JSON object")]
    NotJson,
    #[error("the event has no `event` type")]
    MissingType,
    #[error("the event has no `id`")]
    MissingId,
    #[error("the event type may only hold ASCII letters, digits, `_` and `-`")]
    InvalidType,
}

impl EventError {
    pub fn code(&self) -> &'static str {
        match self {
            EventError::NotJson => "invalid_json",
            EventError::MissingType => "missing_event_type",
            EventError::MissingId => "missing_event_id",
            EventError::InvalidType => "invalid_event_type",
        }
    }
}

/// A LiveKit webhook event whose signature was verified, ready to be stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedEvent {
    id: String,
    event_type: String,
    room_name: Option<String>,
    payload: Bytes,
    received_at_ms: i64,
}

impl VerifiedEvent {
    /// Crate-private: only the webhook verifier calls it, after verification.
    pub(crate) fn parse(body: Bytes, received_at_ms: i64) -> Result<Self, EventError> {
        let mut json: Value = serde_json::from_slice(&body).map_err(|_| EventError::NotJson)?;
        let object = json.as_object_mut().ok_or(EventError::NotJson)?;
        let event_type = non_empty_str(object.get("event")).ok_or(EventError::MissingType)?;
        if !is_subject_token(event_type) {
            return Err(EventError::InvalidType);
        }
        let event_type = event_type.to_owned();
        let id = non_empty_str(object.get("id")).ok_or(EventError::MissingId)?.to_owned();
        let room = object.get_mut("room").and_then(Value::as_object_mut);
        let room_name = room.as_ref().and_then(|r| non_empty_str(r.get("name"))).map(str::to_owned);
        let redacted = room.is_some_and(|r| r.remove("turnPassword").is_some());
        // Re-serialize only when something was removed: otherwise keep LiveKit's exact bytes.
        let payload = if redacted {
            Bytes::from(serde_json::to_vec(&json).expect("a parsed JSON value serializes"))
        } else {
            body
        };
        Ok(VerifiedEvent { id, event_type, room_name, payload, received_at_ms })
    }

    /// LiveKit's event id (`EV_…`), unique per event and identical across retries.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// `participant_joined`, `room_finished`, … (a valid NATS subject token).
    pub fn event_type(&self) -> &str {
        &self.event_type
    }

    pub fn room_name(&self) -> Option<&str> {
        self.room_name.as_deref()
    }

    /// The JSON body to store, with secrets removed.
    pub fn payload(&self) -> &Bytes {
        &self.payload
    }

    pub fn received_at_ms(&self) -> i64 {
        self.received_at_ms
    }
}

fn non_empty_str(value: Option<&Value>) -> Option<&str> {
    value.and_then(Value::as_str).filter(|s| !s.is_empty())
}

/// Whether `s` can be one token of a NATS subject (event types become subject tokens).
pub(crate) fn is_subject_token(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<VerifiedEvent, EventError> {
        VerifiedEvent::parse(Bytes::copy_from_slice(json.as_bytes()), 0)
    }

    #[test]
    fn keeps_the_exact_bytes_when_there_is_nothing_to_redact() {
        let body = r#"{"event":"room_started", "id":"EV_1","room":{"name":"r"},"extra":[1, 2]}"#;
        let event = parse(body).unwrap();
        assert_eq!(event.payload().as_ref(), body.as_bytes());
        assert_eq!((event.id(), event.event_type(), event.room_name()), ("EV_1", "room_started", Some("r")));
    }

    #[test]
    fn removes_the_turn_password_and_keeps_everything_else() {
        let event =
            parse(r#"{"event":"room_started","id":"EV_1","room":{"name":"r","turnPassword":"s3cret"},"x":1}"#).unwrap();
        let stored: Value = serde_json::from_slice(event.payload()).unwrap();
        assert_eq!(stored, serde_json::json!({"event":"room_started","id":"EV_1","room":{"name":"r"},"x":1}));
    }

    #[test]
    fn refuses_what_is_not_an_event() {
        assert_eq!(parse("not json"), Err(EventError::NotJson));
        assert_eq!(parse("[1]"), Err(EventError::NotJson));
        assert_eq!(parse(r#"{"id":"EV_1"}"#), Err(EventError::MissingType));
        assert_eq!(parse(r#"{"event":"","id":"EV_1"}"#), Err(EventError::MissingType));
        assert_eq!(parse(r#"{"event":"room_started"}"#), Err(EventError::MissingId));
        assert_eq!(parse(r#"{"event":"room_started","id":7}"#), Err(EventError::MissingId));
        assert_eq!(parse(r#"{"event":"a.b","id":"EV_1"}"#), Err(EventError::InvalidType));
        assert_eq!(parse(r#"{"event":"a>","id":"EV_1"}"#), Err(EventError::InvalidType));
    }
}

/// The fields of a LiveKit webhook body that attendance reads (protojson: lowerCamelCase, int64
/// values as strings, zero values omitted). Unknown fields are ignored.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct WebhookEvent {
    pub event: String,
    pub id: String,
    /// Unix seconds.
    #[serde(deserialize_with = "int64")]
    pub created_at: Option<i64>,
    pub room: Option<Room>,
    pub participant: Option<Participant>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Room {
    pub sid: String,
    pub name: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Participant {
    pub sid: String,
    pub identity: String,
    pub name: String,
    pub metadata: String,
    /// STANDARD when absent (protojson omits zero values).
    pub kind: Option<String>,
    /// Unix seconds.
    #[serde(deserialize_with = "int64")]
    pub joined_at: Option<i64>,
    #[serde(deserialize_with = "int64")]
    pub joined_at_ms: Option<i64>,
}

impl WebhookEvent {
    /// Parses a stored payload.
    pub fn parse(payload: &[u8]) -> Result<Self, EventError> {
        let event: WebhookEvent = serde_json::from_slice(payload).map_err(|_| EventError::NotJson)?;
        if event.event.is_empty() {
            return Err(EventError::MissingType);
        }
        if event.id.is_empty() {
            return Err(EventError::MissingId);
        }
        Ok(event)
    }
}

/// protojson writes int64 as a string; accept a number too, and treat 0 and "" as absent.
fn int64<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<i64>, D::Error> {
    #[derive(serde::Deserialize)]
    #[serde(untagged)]
    enum Int64 {
        Number(i64),
        Text(String),
    }
    let value = Option::<Int64>::deserialize(deserializer)?;
    let parsed = match value {
        None => None,
        Some(Int64::Number(n)) => Some(n),
        Some(Int64::Text(text)) if text.is_empty() => None,
        Some(Int64::Text(text)) => Some(text.parse().map_err(serde::de::Error::custom)?),
    };
    Ok(parsed.filter(|&n| n != 0))
}
