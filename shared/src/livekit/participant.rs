//! A participant's own LiveKit access token, as clients present it (heartbeats, their own
//! attendance): valid for one of our keys, granting `roomJoin` for a room; the identity is `sub`.
//! A participant can therefore only ever speak for itself, in its own room.

use super::keys::KeySet;
use super::token::{self, TokenError};

/// Why a request does not carry a usable participant token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParticipantTokenError {
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
pub struct ParticipantGrant {
    pub room: String,
    pub identity: String,
}

/// Verifies a participant token at `now` (unix seconds) and returns whom it admits where.
pub fn verify(token: &str, keys: &KeySet, now: i64) -> Result<ParticipantGrant, ParticipantTokenError> {
    let claims = token::verify(token, keys, now)?;
    let grant = claims.video.unwrap_or_default();
    let room =
        grant.room.filter(|room| grant.room_join && !room.is_empty()).ok_or(ParticipantTokenError::NoRoomGrant)?;
    let identity = claims.sub.filter(|sub| !sub.is_empty()).ok_or(ParticipantTokenError::NoIdentity)?;
    Ok(ParticipantGrant { room, identity })
}

/// Verifies the bearer token of an `Authorization` header value.
pub fn verify_header(
    authorization: Option<&[u8]>,
    keys: &KeySet,
    now: i64,
) -> Result<ParticipantGrant, ParticipantTokenError> {
    let token = token::bearer(authorization).ok_or(ParticipantTokenError::MissingToken)?;
    verify(token, keys, now)
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
        let expected = ParticipantGrant { room: "algebra".into(), identity: "ada".into() };
        assert_eq!(verify(&token(Some("ada"), join("algebra")), &keys(), NOW), Ok(expected.clone()));
        let header = format!("Bearer {}", token(Some("ada"), join("algebra")));
        assert_eq!(verify_header(Some(header.as_bytes()), &keys(), NOW), Ok(expected));
    }

    #[test]
    fn refuses_tokens_without_a_room_join_grant_or_an_identity() {
        let no_join = Some(VideoGrant { room: Some("algebra".into()), room_admin: true, ..Default::default() });
        assert_eq!(verify(&token(Some("ada"), no_join), &keys(), NOW), Err(ParticipantTokenError::NoRoomGrant));
        assert_eq!(verify(&token(Some("ada"), None), &keys(), NOW), Err(ParticipantTokenError::NoRoomGrant));
        assert_eq!(verify(&token(None, join("algebra")), &keys(), NOW), Err(ParticipantTokenError::NoIdentity));
        assert_eq!(verify_header(Some(b"Basic abc"), &keys(), NOW), Err(ParticipantTokenError::MissingToken));
        assert_eq!(verify_header(None, &keys(), NOW), Err(ParticipantTokenError::MissingToken));
    }
}
