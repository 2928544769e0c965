//! Every error the gateway's HTTP API returns, mapped to a status and a stable JSON body
//! `{"error": "<code>", "message": "<text>"}` in one place. Internal details (NATS errors) are
//! logged where they happen and never sent to the client.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use shared::domain::event::EventError;
use shared::domain::identifiers::InvalidIdentifier;
use shared::livekit::{ParticipantTokenError, TokenError, VerifyError};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Unauthorized(VerifyError),
    #[error(transparent)]
    InvalidEvent(EventError),
    #[error("the body is larger than the {limit} bytes accepted")]
    PayloadTooLarge { limit: usize },
    /// The connection failed while the body was sent (not the event's fault: retryable).
    #[error("the request body could not be read")]
    UnreadableBody,
    /// The body was sent too slowly (the network's fault as often as the sender's: retryable).
    #[error("the request body did not arrive in time")]
    BodyTimeout,
    #[error("the event could not be stored now; retry later")]
    Unavailable,
    #[error("the heartbeat could not be stored now; retry later")]
    HeartbeatUnavailable,
    /// Too many requests in flight or too many body bytes buffered at once.
    #[error("the gateway is at capacity; retry later")]
    Overloaded,
    /// An event id, room name, room sid, identity or participant sid that cannot enter.
    #[error(transparent)]
    InvalidIdentifier(InvalidIdentifier),
    /// A request to the heartbeat or read API without a bearer token.
    #[error("the request has no bearer token")]
    MissingToken,
    /// A participant or admin token that is not valid.
    #[error(transparent)]
    InvalidToken(TokenError),
    /// A valid token without the grant this needs.
    #[error(transparent)]
    Forbidden(Forbidden),
    #[error("too many heartbeats; slow down")]
    RateLimited,
    #[error("too many presence streams open, overall or for this identity")]
    TooManyStreams,
    #[error("attendance cannot be read now; retry later")]
    ReadUnavailable,
    #[error("no such participant in this room")]
    NoSuchParticipant,
    #[error("no such meeting")]
    NoSuchMeeting,
    /// A query parameter that cannot be used; `field` names it.
    #[error("{field}: {reason}")]
    InvalidParameter { field: &'static str, reason: String },
    #[error("no such route")]
    NotFound,
    #[error("method not allowed on this route")]
    MethodNotAllowed,
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::InvalidEvent(_) | ApiError::InvalidIdentifier(_) => StatusCode::BAD_REQUEST,
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnreadableBody
            | ApiError::BodyTimeout
            | ApiError::Unavailable
            | ApiError::HeartbeatUnavailable
            | ApiError::Overloaded
            | ApiError::ReadUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::MissingToken | ApiError::InvalidToken(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::RateLimited | ApiError::TooManyStreams => StatusCode::TOO_MANY_REQUESTS,
            ApiError::NotFound | ApiError::NoSuchParticipant | ApiError::NoSuchMeeting => StatusCode::NOT_FOUND,
            ApiError::InvalidParameter { .. } => StatusCode::BAD_REQUEST,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
        }
    }

    /// The stable machine-readable code clients and dashboards can rely on.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::Unauthorized(reason) => reason.code(),
            ApiError::InvalidEvent(reason) => reason.code(),
            ApiError::PayloadTooLarge { .. } => "payload_too_large",
            ApiError::UnreadableBody => "unreadable_body",
            ApiError::BodyTimeout => "body_timeout",
            ApiError::Unavailable | ApiError::HeartbeatUnavailable | ApiError::ReadUnavailable => "unavailable",
            ApiError::Overloaded => "overloaded",
            ApiError::InvalidIdentifier(reason) => reason.code(),
            ApiError::MissingToken => "missing_token",
            ApiError::InvalidToken(reason) => reason.code(),
            ApiError::Forbidden(reason) => reason.code(),
            ApiError::RateLimited => "rate_limited",
            ApiError::TooManyStreams => "too_many_streams",
            ApiError::NoSuchParticipant => "participant_not_found",
            ApiError::NoSuchMeeting => "meeting_not_found",
            ApiError::InvalidParameter { .. } => "invalid_parameter",
            ApiError::NotFound => "not_found",
            ApiError::MethodNotAllowed => "method_not_allowed",
        }
    }
}

/// What a valid token does not grant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Forbidden {
    /// A heartbeat's token without `roomJoin` for a room.
    #[error("the token does not grant joining a room")]
    NoRoomGrant,
    /// A heartbeat's token without an identity (`sub`).
    #[error("the token names no participant identity")]
    NoIdentity,
    /// A token that grants nothing in the room read.
    #[error("this token does not grant reading this room")]
    NotThisRoom,
    /// A participant's own token, used to read the whole room.
    #[error("a participant token reads only its own attendance (/attendance/{{identity}})")]
    WholeRoom,
    /// A participant's own token, used to read another participant.
    #[error("a participant token reads only its own attendance")]
    OtherParticipant,
    /// A token without `roomAdmin` for the room, asking for a view link.
    #[error("a view link needs a token with roomAdmin for the room")]
    NotRoomAdmin,
}

impl Forbidden {
    pub fn code(self) -> &'static str {
        match self {
            Forbidden::NoRoomGrant => "no_room_grant",
            Forbidden::NoIdentity => "no_identity",
            Forbidden::NotThisRoom | Forbidden::WholeRoom | Forbidden::OtherParticipant | Forbidden::NotRoomAdmin => {
                "forbidden"
            }
        }
    }
}

impl From<ParticipantTokenError> for ApiError {
    fn from(error: ParticipantTokenError) -> Self {
        match error {
            ParticipantTokenError::MissingToken => ApiError::MissingToken,
            ParticipantTokenError::Token(reason) => ApiError::InvalidToken(reason),
            ParticipantTokenError::NoRoomGrant => ApiError::Forbidden(Forbidden::NoRoomGrant),
            ParticipantTokenError::NoIdentity => ApiError::Forbidden(Forbidden::NoIdentity),
        }
    }
}

impl From<InvalidIdentifier> for ApiError {
    fn from(reason: InvalidIdentifier) -> Self {
        ApiError::InvalidIdentifier(reason)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = serde_json::json!({"error": self.code(), "message": self.to_string()});
        if let ApiError::InvalidParameter { field, .. } = &self {
            body["field"] = serde_json::Value::from(*field);
        }
        let body = Json(body);
        let mut response = (self.status(), body).into_response();
        // Browsers' heartbeats and reads may come back in a second. LiveKit's webhook sender
        // (go-retryablehttp) takes Retry-After on a 503 as its wait, which would shorten its own
        // growing backoff (1, 2, 4, 8 s) and the outage it rides out: webhook answers carry none.
        if matches!(self, ApiError::HeartbeatUnavailable | ApiError::ReadUnavailable | ApiError::RateLimited) {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}
