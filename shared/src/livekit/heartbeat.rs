//! Client heartbeats, authenticated with the participant's own LiveKit access token: the token
//! must be valid for one of our keys and grant `roomJoin` for a room; the identity is `sub`.
//! A participant can therefore only ever heartbeat for itself in its own room.

use bytes::Bytes;

use super::keys::KeySet;
use super::token::{self, TokenError};
use crate::event::{HEARTBEAT_EVENT, VerifiedEvent};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeartbeatError {
    #[error("the request has no bearer token")]
    MissingToken,
    #[error(transparent)]
    Token(#[from] TokenError),
    #[error("the token does not grant joining a room")]
    NoRoomGrant,
    #[error("the token names no participant identity")]
    NoIdentity,
}

/// The room and identity a participant token grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Participant {
    pub room: String,
    pub identity: String,
}

/// Extracts the bearer token of an `Authorization` header value.
pub fn bearer(authorization: Option<&[u8]>) -> Option<&str> {
    let value = std::str::from_utf8(authorization?).ok()?.trim();
    token::after_bearer_prefix(value).map(str::trim).filter(|token| !token.is_empty())
}

/// Verifies a participant token and returns whom it admits where.
pub fn participant(token: &str, keys: &KeySet, now: i64) -> Result<Participant, HeartbeatError> {
    let claims = token::verify(token, keys, now)?;
    let grant = claims.video.unwrap_or_default();
    let room = grant.room.filter(|room| grant.room_join && !room.is_empty()).ok_or(HeartbeatError::NoRoomGrant)?;
    let identity = claims.sub.filter(|sub| !sub.is_empty()).ok_or(HeartbeatError::NoIdentity)?;
    Ok(Participant { room, identity })
}

/// Verifies the heartbeat's token and makes the event that carries it to the workers.
pub fn receive(
    authorization: Option<&[u8]>,
    keys: &KeySet,
    now_ms: i64,
) -> Result<(Participant, VerifiedEvent), HeartbeatError> {
    let token = bearer(authorization).ok_or(HeartbeatError::MissingToken)?;
    let who = participant(token, keys, now_ms / 1000)?;
    let id = format!("HB_{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..));
    let body = serde_json::json!({
        "event": HEARTBEAT_EVENT,
        "id": id,
        "createdAt": (now_ms / 1000).to_string(),
        "room": {"name": who.room},
        "participant": {"identity": who.identity},
    });
    let payload = Bytes::from(serde_json::to_vec(&body).expect("JSON serializes"));
    let event = VerifiedEvent::parse(payload, now_ms).expect("a heartbeat event is well-formed");
    Ok((who, event))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::livekit::token::{Claims, VideoGrant, sign};

    const NOW: i64 = 1_800_000_000;

    fn keys() -> KeySet {
        KeySet::parse("alpha: 0123456789abcdef0123456789abcdef").unwrap()
    }

    fn token(sub: Option<&str>, video: Option<VideoGrant>) -> String {
        let claims = Claims {
            iss: "alpha".into(),
            sub: sub.map(Into::into),
            exp: Some(NOW + 3600),
            video,
            ..Default::default()
        };
        sign(&claims, keys().secret("alpha").unwrap())
    }

    fn join(room: &str) -> Option<VideoGrant> {
        Some(VideoGrant { room: Some(room.into()), room_join: true, ..Default::default() })
    }

    #[test]
    fn a_participant_token_admits_its_identity_in_its_room() {
        let who = participant(&token(Some("ada"), join("algebra")), &keys(), NOW).unwrap();
        assert_eq!(who, Participant { room: "algebra".into(), identity: "ada".into() });
        let header = format!("Bearer {}", token(Some("ada"), join("algebra")));
        let (_, event) = receive(Some(header.as_bytes()), &keys(), NOW * 1000).unwrap();
        assert_eq!((event.event_type(), event.room_name()), (HEARTBEAT_EVENT, Some("algebra")));
    }

    #[test]
    fn refuses_tokens_without_a_room_join_grant_or_an_identity() {
        let no_join = Some(VideoGrant { room: Some("algebra".into()), room_admin: true, ..Default::default() });
        assert_eq!(participant(&token(Some("ada"), no_join), &keys(), NOW), Err(HeartbeatError::NoRoomGrant));
        assert_eq!(participant(&token(Some("ada"), None), &keys(), NOW), Err(HeartbeatError::NoRoomGrant));
        assert_eq!(participant(&token(None, join("algebra")), &keys(), NOW), Err(HeartbeatError::NoIdentity));
        assert_eq!(receive(Some(b"Basic abc"), &keys(), NOW * 1000).unwrap_err(), HeartbeatError::MissingToken);
        assert_eq!(receive(None, &keys(), NOW * 1000).unwrap_err(), HeartbeatError::MissingToken);
    }
}
