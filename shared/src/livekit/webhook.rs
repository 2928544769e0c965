//! Verification of a LiveKit webhook request, in the order LiveKit's receivers use
//! (`protocol/webhook/verifier.go`): token first, then the body hash, and only then is the body
//! parsed.
//!
//! Invariant: a [`VerifiedEvent`] can only be made by [`receive`], after the signature and body
//! hash were checked, so an unverified request cannot reach the stream by mistake. Its payload is
//! the body LiveKit sent, with `room.turnPassword` removed: that secret must never leave the
//! gateway.

use base64::Engine as _;
use bytes::Bytes;
use serde_json::Value;
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

use super::keys::KeySet;
use super::token::{self, TokenError};
use crate::domain::event::{EventError, is_valid_event_type};
use crate::domain::identifiers::{self, Field};

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
    /// Private to this module: only [`receive`] calls it, after verification.
    fn parse(body: Bytes, received_at_ms: i64) -> Result<Self, EventError> {
        let mut json: Value = serde_json::from_slice(&body).map_err(|_| EventError::NotJson)?;
        let object = json.as_object_mut().ok_or(EventError::NotJson)?;
        let event_type = non_empty_str(object.get("event")).ok_or(EventError::MissingType)?;
        if !is_valid_event_type(event_type) {
            return Err(EventError::InvalidType);
        }
        let event_type = event_type.to_owned();
        let id = non_empty_str(object.get("id")).ok_or(EventError::MissingId)?.to_owned();
        identifiers::check(Field::EventId, &id)?;
        let participant = object.get("participant").and_then(Value::as_object);
        for (field, key) in [(Field::Identity, "identity"), (Field::ParticipantSid, "sid")] {
            if let Some(value) = non_empty_str(participant.and_then(|p| p.get(key))) {
                identifiers::check(field, value)?;
            }
        }
        let room = object.get_mut("room").and_then(Value::as_object_mut);
        if let Some(sid) = non_empty_str(room.as_ref().and_then(|r| r.get("sid"))) {
            identifiers::check(Field::RoomSid, sid)?;
        }
        let room_name = room.as_ref().and_then(|r| non_empty_str(r.get("name"))).map(str::to_owned);
        if let Some(name) = &room_name {
            identifiers::check(Field::RoomName, name)?;
        }
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
