//! Every error the gateway's HTTP API returns, mapped to a status and a stable JSON body
//! `{"error": "<code>", "message": "<text>"}` in one place. Internal details (NATS errors) are
//! logged where they happen and never sent to the client.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use shared::event::EventError;
use shared::livekit::VerifyError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Unauthorized(VerifyError),
    #[error(transparent)]
    InvalidEvent(EventError),
    #[error("the body is larger than the {limit} bytes accepted")]
    PayloadTooLarge { limit: usize },
    #[error("the request body could not be read")]
    UnreadableBody,
    #[error("the event could not be stored now; retry later")]
    Unavailable,
    #[error("no such route")]
    NotFound,
    #[error("method not allowed on this route")]
    MethodNotAllowed,
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::InvalidEvent(_) | ApiError::UnreadableBody => StatusCode::BAD_REQUEST,
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::NotFound => StatusCode::NOT_FOUND,
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
            ApiError::Unavailable => "unavailable",
            ApiError::NotFound => "not_found",
            ApiError::MethodNotAllowed => "method_not_allowed",
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Json(serde_json::json!({"error": self.code(), "message": self.to_string()}));
        let mut response = (self.status(), body).into_response();
        if let ApiError::Unavailable = self {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}
