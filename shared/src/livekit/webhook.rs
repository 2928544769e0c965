//! Verification of a LiveKit webhook request, in the order LiveKit's receivers use
//! (`protocol/webhook/verifier.go`): token first, then the body hash, and only then is the body
//! parsed.
//!
//! Invariant: a [`VerifiedEvent`] can only be made by [`receive`], after the signature and body
//! hash were checked, so an unverified request cannot reach the stream by mistake. Its payload is
//! the body LiveKit sent, with `room.turnPassword` removed: that secret must never leave the
//! gateway.

use std::borrow::Cow;

use base64::Engine as _;
use bytes::Bytes;
use serde_json::value::RawValue;
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

use super::keys::KeySet;
use super::token::{self, TokenError};
use crate::domain::event::{EventError, WebhookEvent, is_valid_event_type};

/// Why a webhook request is not authentic. `code()` is stable (API errors and metric labels).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("the request has no Authorization header")]
    MissingAuthorization,
    #[error(transparent)]
    Token(#[from] TokenError),
    #[error("the token carries no sha256 claim")]
    MissingBodyHash,
    #[error("the body does not match the token's sha256 claim")]
    BodyHashMismatch,
}

impl VerifyError {
    pub fn code(self) -> &'static str {
        match self {
            VerifyError::MissingAuthorization => "missing_authorization",
            VerifyError::Token(e) => e.code(),
            VerifyError::MissingBodyHash => "missing_body_hash",
            VerifyError::BodyHashMismatch => "body_hash_mismatch",
        }
    }
}

/// Why a webhook request was refused: not authentic, or authentic but not a usable event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReceiveError {
    #[error(transparent)]
    Unauthorized(#[from] VerifyError),
    #[error(transparent)]
    Invalid(#[from] EventError),
}

/// Checks that `body` was signed by LiveKit with one of `keys`, at `now` (unix seconds).
/// `authorization` is the raw header value: a bare JWT, as LiveKit sends it, or `Bearer <jwt>`.
pub fn verify(authorization: Option<&[u8]>, body: &[u8], keys: &KeySet, now: i64) -> Result<(), VerifyError> {
    let header = authorization.ok_or(VerifyError::MissingAuthorization)?;
    let header = std::str::from_utf8(header).map_err(|_| TokenError::Malformed)?.trim();
    let jwt = strip_bearer(header);
    if jwt.is_empty() {
        return Err(VerifyError::MissingAuthorization);
    }
    let claims = token::verify(jwt, keys, now)?;
    let claimed = claims.sha256.ok_or(VerifyError::MissingBodyHash)?;
    let actual = body_hash(body);
    if !bool::from(claimed.as_bytes().ct_eq(actual.as_bytes())) {
        return Err(VerifyError::BodyHashMismatch);
    }
    Ok(())
}

/// Verifies the request, then parses it into the event that will be stored.
pub fn receive(
    authorization: Option<&[u8]>,
    body: Bytes,
    keys: &KeySet,
    now: i64,
    received_at_ms: i64,
) -> Result<VerifiedEvent, ReceiveError> {
    verify(authorization, &body, keys, now)?;
    Ok(VerifiedEvent::parse(body, received_at_ms)?)
}

/// The token LiveKit sends with a webhook `body` (the gateway only verifies; load tools and
/// tests sign): HS256, `iss` = the API key, valid for 5 minutes from `now` (unix seconds),
/// `sha256` = the body's hash.
pub fn sign_request(body: &[u8], api_key: &str, secret: &super::keys::Secret, now: i64) -> String {
    let claims = token::Claims {
        iss: api_key.to_owned(),
        nbf: Some(now),
        exp: Some(now + 5 * 60),
        sha256: Some(body_hash(body)),
        ..Default::default()
    };
    token::sign(&claims, secret)
}

/// base64 (standard alphabet, padded) of the body's SHA-256: the `sha256` claim LiveKit signs.
pub fn body_hash(body: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(Sha256::digest(body))
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
    /// Private to this module: only [`receive`] calls it, after verification. The body is read
    /// the way the worker will read it ([`WebhookEvent::parse`], the identifier checks), so that
    /// what the edge accepts the worker can apply: an event it would refuse is refused here, with
    /// a 4xx LiveKit does not retry, not dead-lettered later.
    fn parse(body: Bytes, received_at_ms: i64) -> Result<Self, EventError> {
        let (event, room) = WebhookEvent::parse_keeping_room(&body)?;
        if !is_valid_event_type(&event.event) {
            return Err(EventError::InvalidType);
        }
        event.check_identifiers()?;
        let redacted = match room {
            Some(room) => without_turn_password(&body, room)?,
            None => None,
        };
        let payload = redacted.map_or(body, Bytes::from);
        let room_name = event.room.map(|room| room.name).filter(|name| !name.is_empty());
        Ok(VerifiedEvent { id: event.id, event_type: event.event, room_name, payload, received_at_ms })
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

/// `body` without `room.turnPassword`, if the room (`room`, a slice of `body`) holds it: LiveKit's
/// bytes as they are but for the room object, written again from its members' own bytes less the
/// secret (no tree of the body is built, and nothing else is re-encoded).
fn without_turn_password(body: &[u8], room: &RawValue) -> Result<Option<Vec<u8>>, EventError> {
    let Members(members) = serde_json::from_str(room.get()).map_err(|_| EventError::NotJson)?;
    if !members.iter().any(|(key, _)| key == TURN_PASSWORD) {
        return Ok(None);
    }
    // The raw value borrows from `body`: its place in it is its offset from the body's start.
    let start = (room.get().as_ptr() as usize).checked_sub(body.as_ptr() as usize).expect("the room lies in the body");
    let end = start + room.get().len();
    assert!(end <= body.len(), "the room lies in the body");
    let mut redacted = Vec::with_capacity(body.len());
    redacted.extend_from_slice(&body[..start]);
    redacted.push(b'{');
    for (index, (key, value)) in members.iter().filter(|(key, _)| key != TURN_PASSWORD).enumerate() {
        if index > 0 {
            redacted.push(b',');
        }
        serde_json::to_writer(&mut redacted, key).expect("a string serializes into a Vec");
        redacted.push(b':');
        redacted.extend_from_slice(value.get().as_bytes());
    }
    redacted.push(b'}');
    redacted.extend_from_slice(&body[end..]);
    Ok(Some(redacted))
}

/// The room's field holding a TURN credential: a secret that never leaves the gateway.
const TURN_PASSWORD: &str = "turnPassword";

/// The members of a JSON object in their order, each value as its exact bytes.
struct Members<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);

impl<'de> serde::Deserialize<'de> for Members<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        /// A key, borrowed from the input unless it holds escapes.
        #[derive(serde::Deserialize)]
        struct Key<'a>(#[serde(borrow)] Cow<'a, str>);

        struct MembersVisitor;
        impl<'de> serde::de::Visitor<'de> for MembersVisitor {
            type Value = Members<'de>;

            fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                formatter.write_str("a JSON object")
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut members = Vec::new();
                while let Some(Key(key)) = map.next_key()? {
                    members.push((key, map.next_value()?));
                }
                Ok(Members(members))
            }
        }
        deserializer.deserialize_map(MembersVisitor)
    }
}

/// LiveKit sends the bare token; a `Bearer ` prefix is tolerated.
fn strip_bearer(header: &str) -> &str {
    token::after_bearer_prefix(header).unwrap_or(header)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_a_bearer_prefix_in_any_case_only_at_the_start() {
        assert_eq!(strip_bearer("Bearer abc"), "abc");
        assert_eq!(strip_bearer("bearer  abc"), "abc");
        assert_eq!(strip_bearer("abc"), "abc");
        assert_eq!(strip_bearer("Bear"), "Bear");
        assert_eq!(strip_bearer("xBearer abc"), "xBearer abc");
        assert_eq!(strip_bearer("é€"), "é€");
    }

    #[test]
    fn a_signed_request_verifies_for_its_body_only_and_expires_after_5_minutes() {
        let keys = KeySet::parse("alpha: 0123456789abcdef0123456789abcdef").unwrap();
        let (api_key, secret) = keys.first();
        let token = sign_request(b"{}", api_key, secret, 1_800_000_000);
        assert_eq!(verify(Some(token.as_bytes()), b"{}", &keys, 1_800_000_000 + 299), Ok(()));
        assert_eq!(verify(Some(token.as_bytes()), b"{ }", &keys, 1_800_000_000), Err(VerifyError::BodyHashMismatch));
        assert!(verify(Some(token.as_bytes()), b"{}", &keys, 1_800_000_000 + 300 + 61).is_err());
    }

    #[test]
    fn body_hash_is_standard_padded_base64() {
        assert_eq!(body_hash(b""), "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=");
    }

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
    fn removes_the_turn_password_and_keeps_every_other_byte() {
        let body = r#"{"event":"room_started", "id":"EV_1","room":{"name":"r", "turnPassword":"s3cret" ,"sid":"RM_1", "n":[1, 2]},"x":1}"#;
        let event = parse(body).unwrap();
        let expected = r#"{"event":"room_started", "id":"EV_1","room":{"name":"r","sid":"RM_1","n":[1, 2]},"x":1}"#;
        assert_eq!(std::str::from_utf8(event.payload()).unwrap(), expected);
        let only = parse(r#"{"event":"room_started","id":"EV_1","room":{"turnPassword":"s3cret"}}"#).unwrap();
        assert_eq!(only.payload().as_ref(), br#"{"event":"room_started","id":"EV_1","room":{}}"#);
    }

    #[test]
    fn removes_an_escaped_or_repeated_turn_password_and_rewrites_escaped_keys() {
        let body =
            r#"{"event":"room_started","id":"EV_1","room":{"turn\u0050assword":"a","q\"k":"v","turnPassword":"b"}}"#;
        let event = parse(body).unwrap();
        let stored: serde_json::Value = serde_json::from_slice(event.payload()).unwrap();
        assert_eq!(stored, serde_json::json!({"event":"room_started","id":"EV_1","room":{"q\"k":"v"}}));
        assert!(!std::str::from_utf8(event.payload()).unwrap().contains("assword"));
    }

    #[test]
    fn refuses_what_is_not_an_event() {
        assert_eq!(parse("not json"), Err(EventError::NotJson));
        assert_eq!(parse("[1]"), Err(EventError::NotJson));
        assert_eq!(parse(r#" ["room_started", "EV_1"]"#), Err(EventError::NotJson));
        assert_eq!(parse(r#"{"id":"EV_1"}"#), Err(EventError::MissingType));
        assert_eq!(parse(r#"{"event":"","id":"EV_1"}"#), Err(EventError::MissingType));
        assert_eq!(parse(r#"{"event":"room_started"}"#), Err(EventError::MissingId));
        assert_eq!(parse(r#"{"event":"a.b","id":"EV_1"}"#), Err(EventError::InvalidType));
        assert_eq!(parse(r#"{"event":"a>","id":"EV_1"}"#), Err(EventError::InvalidType));
    }

    #[test]
    fn refuses_what_the_worker_could_not_read() {
        // Each would be dead-lettered by the worker's reading; the edge says so at once.
        for body in [
            r#"{"event":"room_started","id":7}"#,
            r#"{"event":"room_started","id":"EV_1","room":5}"#,
            r#"{"event":"room_started","id":"EV_1","participant":"p"}"#,
            r#"{"event":"room_started","id":"EV_1","createdAt":"soon"}"#,
            r#"{"event":"room_started","id":"EV_1","event":"room_finished"}"#,
            r#"{"event":"room_started","id":"EV_1","room":{"name":"a","name":"b"}}"#,
            r#"{"event":"room_started","id":"EV_1"} trailing"#,
        ] {
            assert_eq!(parse(body), Err(EventError::NotJson), "{body}");
        }
        let control = r#"{"event":"room_started","id":"EV_1","participant":{"identity":"a\u0000b"}}"#;
        assert!(matches!(parse(control), Err(EventError::InvalidIdentifier(_))));
    }
}
