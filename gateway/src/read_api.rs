//! The read side, for display (it never writes attendance): `GET /v1/rooms/{room}/attendance`,
//! `GET /v1/rooms/{room}/attendance/{identity}`, and `GET /v1/rooms/{room}/presence`, a live
//! stream (Server-Sent Events) of presence changes fed from NATS.

use std::convert::Infallible;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, Sse};
use futures::Stream;
use serde::Serialize;
use shared::domain::document::ParticipantView;
use shared::domain::identifiers::{self, Field};
use shared::domain::policy::Policy;
use shared::domain::time::now_unix_ms;
use shared::livekit::KeySet;
use shared::store::read_model;
use tokio_util::sync::CancellationToken;

use crate::error::{ApiError, Forbidden};
use crate::read_access::{Access, authorize};

pub struct ReadState {
    pub keys: KeySet,
    pub pool: sqlx::PgPool,
    pub nats: async_nats::Client,
    /// The live presence streams: their bounds, and where they read.
    pub presence: Arc<crate::presence_stream::PresenceStreams>,
    /// Ends the live streams when the gateway shuts down.
    pub shutdown: CancellationToken,
    /// The attendance policy requests get unless they override it.
    pub policy: Policy,
}

#[derive(Debug, Serialize)]
pub struct RoomView {
    pub room: String,
    pub participants: Vec<ParticipantView>,
}

pub async fn room(
    State(state): State<Arc<ReadState>>,
    Path(room): Path<String>,
    headers: HeaderMap,
) -> Result<Json<RoomView>, ApiError> {
    let now_ms = now_unix_ms();
    identifiers::check(Field::RoomName, &room)?;
    if authorize(&headers, &state.keys, &room, now_ms / 1000)? != Access::WholeRoom {
        return Err(ApiError::Forbidden(Forbidden::WholeRoom));
    }
    let mut connection = state.pool.acquire().await.map_err(read_failed)?;
    let stored = read_model::load_room(&mut connection, &room).await.map_err(read_failed)?;
    let heartbeats = read_model::last_heartbeats(&mut connection, &room, None).await.map_err(read_failed)?;
    let participants = stored
        .into_iter()
        .map(|(identity, attendance)| ParticipantView::new(attendance, heartbeats.get(&identity).copied(), now_ms))
        .collect();
    Ok(Json(RoomView { room, participants }))
}

pub async fn participant(
    State(state): State<Arc<ReadState>>,
    Path((room, identity)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Json<ParticipantView>, ApiError> {
    let now_ms = now_unix_ms();
    identifiers::check(Field::RoomName, &room)?;
    identifiers::check(Field::Identity, &identity)?;
    if !authorize(&headers, &state.keys, &room, now_ms / 1000)?.covers(&identity) {
        return Err(ApiError::Forbidden(Forbidden::OtherParticipant));
    }
    let mut connection = state.pool.acquire().await.map_err(read_failed)?;
    let attendance = read_model::load_participant(&mut connection, &room, &identity)
        .await
        .map_err(read_failed)?
        .ok_or(ApiError::NoSuchParticipant)?;
    let heartbeats = read_model::last_heartbeats(&mut connection, &room, Some(&identity)).await.map_err(read_failed)?;
    Ok(Json(ParticipantView::new(attendance, heartbeats.get(&identity).copied(), now_ms)))
}

/// Server-Sent Events of the room's presence changes (only the caller's own for a participant
/// token): [`crate::presence_stream`].
pub async fn presence(
    State(state): State<Arc<ReadState>>,
    Path(room): Path<String>,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    crate::presence_stream::open(&state, room, &headers).await
}

pub fn read_failed(error: sqlx::Error) -> ApiError {
    tracing::warn!(%error, "attendance read failed");
    ApiError::ReadUnavailable
}

/// `GET /rooms/{room}`: the live attendance page. It is static: the token stays in the URL
/// fragment (never sent to a server, never in a query string) and the page calls the read API
/// and the presence stream with it.
pub async fn live_page() -> impl axum::response::IntoResponse {
    (
        [
            (axum::http::header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (axum::http::header::CACHE_CONTROL, "no-store"),
            (axum::http::header::REFERRER_POLICY, "no-referrer"),
            (
                axum::http::header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; connect-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'",
            ),
        ],
        include_str!("../static/live.html"),
    )
}
