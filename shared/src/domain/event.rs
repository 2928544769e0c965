//! LiveKit's webhook event, reduced to the fields attendance reads, and what makes a body an
//! event at all. Event types this code does not interpret are kept in the log as they are.

use serde::Deserialize as _;
use serde_json::Value;

use super::identifiers::{self, Field, InvalidIdentifier};

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
    #[error(transparent)]
    InvalidIdentifier(#[from] InvalidIdentifier),
}

impl EventError {
    pub fn code(&self) -> &'static str {
        match self {
            EventError::NotJson => "invalid_json",
            EventError::MissingType => "missing_event_type",
            EventError::MissingId => "missing_event_id",
            EventError::InvalidType => "invalid_event_type",
            EventError::InvalidIdentifier(reason) => reason.code(),
        }
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
    /// Seconds LiveKit keeps the room open when nobody joined (absent: its default).
    #[serde(deserialize_with = "uint32")]
    pub empty_timeout: Option<u32>,
    /// Seconds LiveKit keeps the room open after the last participant left.
    #[serde(deserialize_with = "uint32")]
    pub departure_timeout: Option<u32>,
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

    /// Checks every identifier the event carries ([`identifiers`]): what the edge does before an
    /// event may be stored. (Not part of [`WebhookEvent::parse`], which also reads back events
    /// logged before a bound existed.)
    pub fn check_identifiers(&self) -> Result<(), InvalidIdentifier> {
        identifiers::check(Field::EventId, &self.id)?;
        if let Some(room) = &self.room {
            identifiers::check(Field::RoomName, &room.name)?;
            identifiers::check(Field::RoomSid, &room.sid)?;
        }
        if let Some(participant) = &self.participant {
            identifiers::check(Field::Identity, &participant.identity)?;
            identifiers::check(Field::ParticipantSid, &participant.sid)?;
        }
        Ok(())
    }
}

/// Whether `s` is a valid event type: ASCII letters, digits, `_` and `-`, at most 64 bytes. An
/// event type becomes one token of a NATS subject, so it may hold nothing else.
pub fn is_valid_event_type(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// protojson writes int64 as a string; accept a number too, and treat 0 and "" as absent.
pub(crate) fn int64<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<i64>, D::Error> {
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

/// protojson writes uint32 as a number; a value that is not one is treated as absent rather than
/// refusing the event (attendance does not depend on it), and 0 as absent too.
fn uint32<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<u32>, D::Error> {
    let value = Option::<Value>::deserialize(deserializer)?;
    let number = match value {
        Some(Value::Number(n)) => n.as_u64(),
        Some(Value::String(text)) => text.parse().ok(),
        _ => None,
    };
    Ok(number.and_then(|n| u32::try_from(n).ok()).filter(|&n| n != 0))
}
