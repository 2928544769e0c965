//! Who may read what: the read API and the live presence stream take a LiveKit access token
//! signed with one of our keys. `roomAdmin` for the room (or for every room) or `roomList`
//! reads the whole room; a participant's own token (`roomJoin` for the room) reads only its own
//! row and its own presence changes; a view link's token (this project's `attendance.view`
//! grant, no LiveKit grant) reads its room, and cannot heartbeat, make links or moderate.

use axum::http::{HeaderMap, header};
use shared::livekit::{Claims, KeySet, token};

use crate::error::{ApiError, Forbidden};

/// What a token may read in a room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    WholeRoom,
    OnlyParticipant(String),
}

impl Access {
    /// Whether this access covers `identity`.
    pub fn covers(&self, identity: &str) -> bool {
        match self {
            Access::WholeRoom => true,
            Access::OnlyParticipant(own) => own == identity,
        }
    }
}

/// Checks the request's bearer token for reading `room` at `now` (unix seconds).
pub fn authorize(headers: &HeaderMap, keys: &KeySet, room: &str, now: i64) -> Result<Access, ApiError> {
    access(&verify(headers, keys, now)?, room)
}

/// The claims of the request's bearer token, verified at `now` (unix seconds); what it may read
/// is [`access`].
pub fn verify(headers: &HeaderMap, keys: &KeySet, now: i64) -> Result<Claims, ApiError> {
    let bearer =
        token::bearer(headers.get(header::AUTHORIZATION).map(|v| v.as_bytes())).ok_or(ApiError::MissingToken)?;
    token::verify(bearer, keys, now).map_err(ApiError::InvalidToken)
}

/// What verified claims may read in `room`.
pub fn access(claims: &Claims, room: &str) -> Result<Access, ApiError> {
    let grant = claims.video.clone().unwrap_or_default();
    let granted_room = grant.room.as_deref().unwrap_or_default();
    if grant.room_list || (grant.room_admin && (granted_room.is_empty() || granted_room == room)) {
        return Ok(Access::WholeRoom);
    }
    if claims.attendance.as_ref().is_some_and(|view| view.view == room) {
        return Ok(Access::WholeRoom);
    }
    if grant.room_join
        && granted_room == room
        && let Some(identity) = claims.sub.clone().filter(|sub| !sub.is_empty())
    {
        return Ok(Access::OnlyParticipant(identity));
    }
    Err(ApiError::Forbidden(Forbidden::NotThisRoom))
}
