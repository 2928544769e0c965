//! LiveKit's webhook event, reduced to the fields attendance reads, and what makes a body an
//! event at all. Event types this code does not interpret are kept in the log as they are.

use serde::de::{self, Visitor};
use serde_json::value::RawValue;

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
pub type WebhookEvent = Event<Room>;

/// [`WebhookEvent`], with the room as `R`: a [`Room`], or the room object's own bytes where the
/// edge must rewrite it (one list of fields for both readings).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "camelCase", bound(deserialize = "R: serde::Deserialize<'de>"))]
pub struct Event<R> {
    #[serde(default)]
    pub event: String,
    #[serde(default)]
    pub id: String,
    /// Unix seconds.
    #[serde(default, deserialize_with = "int64")]
    pub created_at: Option<i64>,
    #[serde(default)]
    pub room: Option<R>,
    #[serde(default)]
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
        read::<WebhookEvent>(payload)?.complete()
    }

    /// [`WebhookEvent::parse`], which also gives the room object's exact bytes (a slice of
    /// `payload`), so that the edge can rewrite the room without reading the body again.
    pub fn parse_keeping_room(payload: &[u8]) -> Result<(Self, Option<&RawValue>), EventError> {
        let raw = read::<Event<&RawValue>>(payload)?;
        let room = match raw.room {
            Some(room) => Some(serde_json::from_str::<Room>(room.get()).map_err(|_| EventError::NotJson)?),
            None => None,
        };
        let event =
            Event { event: raw.event, id: raw.id, created_at: raw.created_at, room, participant: raw.participant };
        Ok((event.complete()?, raw.room))
    }

    /// The event, if it has a type and an id.
    fn complete(self) -> Result<Self, EventError> {
        if self.event.is_empty() {
            return Err(EventError::MissingType);
        }
        if self.id.is_empty() {
            return Err(EventError::MissingId);
        }
        Ok(self)
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

/// Reads `payload` as one JSON object (serde's derive would also read an array as the fields in
/// order: an event is an object).
fn read<'a, T: serde::Deserialize<'a>>(payload: &'a [u8]) -> Result<T, EventError> {
    if payload.trim_ascii_start().first() != Some(&b'{') {
        return Err(EventError::NotJson);
    }
    serde_json::from_slice(payload).map_err(|_| EventError::NotJson)
}

/// Whether `s` is a valid event type: ASCII letters, digits, `_` and `-`, at most 64 bytes. An
/// event type becomes one token of a NATS subject, so it may hold nothing else.
pub fn is_valid_event_type(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// protojson writes int64 as a string; accept a number too, and treat 0 and "" as absent.
pub(crate) fn int64<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<i64>, D::Error> {
    match deserializer.deserialize_option(Integer { lenient: false })? {
        None | Some(0) => Ok(None),
        Some(n) => i64::try_from(n).map(Some).map_err(|_| de::Error::custom(format!("{n} is out of the int64 range"))),
    }
}

/// protojson writes uint32 as a number; a value that is not one is treated as absent rather than
/// refusing the event (attendance does not depend on it), and 0 as absent too.
fn uint32<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<u32>, D::Error> {
    let number = deserializer.deserialize_option(Integer { lenient: true })?;
    Ok(number.and_then(|n| u32::try_from(n).ok()).filter(|&n| n != 0))
}

/// An integer written as a number or as a string (absent: null, or ""); `lenient` reads any other
/// value as absent, else refuses it. A visitor rather than an untagged enum, which buffers every
/// value before trying each variant: this runs a few times per webhook at the edge.
struct Integer {
    lenient: bool,
}

impl Integer {
    fn other<E: de::Error>(&self, unexpected: de::Unexpected<'_>) -> Result<Option<i128>, E> {
        if self.lenient { Ok(None) } else { Err(E::invalid_type(unexpected, self)) }
    }
}

impl<'de> Visitor<'de> for Integer {
    type Value = Option<i128>;

    fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("an integer, as a number or a string")
    }

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_some<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(self)
    }

    fn visit_i64<E: de::Error>(self, n: i64) -> Result<Self::Value, E> {
        Ok(Some(i128::from(n)))
    }

    fn visit_u64<E: de::Error>(self, n: u64) -> Result<Self::Value, E> {
        Ok(Some(i128::from(n)))
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<Self::Value, E> {
        match text.parse::<i128>() {
            _ if text.is_empty() => Ok(None),
            Ok(n) => Ok(Some(n)),
            Err(_) => self.other(de::Unexpected::Str(text)),
        }
    }

    fn visit_bool<E: de::Error>(self, value: bool) -> Result<Self::Value, E> {
        self.other(de::Unexpected::Bool(value))
    }

    fn visit_f64<E: de::Error>(self, value: f64) -> Result<Self::Value, E> {
        self.other(de::Unexpected::Float(value))
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<de::IgnoredAny>()?.is_some() {}
        self.other(de::Unexpected::Seq)
    }

    fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        while map.next_entry::<de::IgnoredAny, de::IgnoredAny>()?.is_some() {}
        self.other(de::Unexpected::Map)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(json: &str) -> Result<WebhookEvent, EventError> {
        WebhookEvent::parse(format!(r#"{{"event":"room_started","id":"EV_1",{json}}}"#).as_bytes())
    }

    #[test]
    fn int64_is_a_number_or_a_string_and_zero_or_empty_is_absent() {
        for (json, expected) in [
            (r#""createdAt":"1795495151""#, Some(1_795_495_151)),
            (r#""createdAt":1795495151"#, Some(1_795_495_151)),
            (r#""createdAt":"-5""#, Some(-5)),
            (r#""createdAt":"""#, None),
            (r#""createdAt":"0""#, None),
            (r#""createdAt":0"#, None),
            (r#""createdAt":null"#, None),
            (r#""x":1"#, None),
        ] {
            assert_eq!(event(json).map(|e| e.created_at), Ok(expected), "{json}");
        }
        for json in [
            r#""createdAt":"soon""#,
            r#""createdAt":1.5"#,
            r#""createdAt":18446744073709551615"#,
            r#""createdAt":true"#,
            r#""createdAt":{}"#,
        ] {
            assert_eq!(event(json), Err(EventError::NotJson), "{json}");
        }
    }

    #[test]
    fn a_uint32_that_is_not_one_is_absent_and_never_refuses_the_event() {
        for (json, expected) in [
            ("300", Some(300)),
            (r#""300""#, Some(300)),
            ("0", None),
            ("-1", None),
            ("4294967296", None),
            ("1.5", None),
            ("true", None),
            ("null", None),
            (r#"[1, [2]]"#, None),
            (r#"{"a": {"b": 1}}"#, None),
            (r#""x""#, None),
        ] {
            let parsed = event(&format!(r#""room":{{"emptyTimeout":{json},"name":"r"}}"#)).unwrap();
            let room = parsed.room.unwrap();
            assert_eq!((room.empty_timeout, room.name.as_str()), (expected, "r"), "{json}");
        }
    }
}
