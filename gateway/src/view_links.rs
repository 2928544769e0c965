//! `POST /v1/rooms/{room}/view-links`: a room's admin (a LiveKit token with `roomAdmin` for the
//! room) makes a link to the live page for someone who should only watch: a teacher, a parent.
//! The link holds a token signed with the same API key that carries no LiveKit grant (so
//! livekit-server refuses it for anything: no joining, kicking or muting) and this project's
//! `attendance.view` grant for the room, which the read API and the presence stream accept for
//! that room only ([`crate::read_access`]). The caller chooses its lifetime (`?ttl=7d`) within
//! `VIEW_LINK_MAX_TTL`.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use serde::Serialize;
use shared::domain::identifiers::{self, Field};
use shared::domain::time::{now_unix_ms, rfc3339_ms};
use shared::livekit::{AttendanceGrant, Claims, KeySet, token};

use crate::error::{ApiError, Forbidden};
use crate::meetings_api::Params;
use crate::read_access;

/// How view links are made.
#[derive(Debug, Clone, clap::Args)]
pub struct ViewLinkArgs {
    /// Longest a view link may be valid (a request asks for less with `ttl`).
    #[arg(long = "view-link-max-ttl", env = "VIEW_LINK_MAX_TTL", default_value = "30d", value_parser = shared::runtime::config::parse_duration)]
    pub max_ttl: Duration,
    /// The gateway's public URL (`https://attendance.example.org`), for absolute links; without
    /// it links are relative (`/rooms/…#…`).
    #[arg(long = "public-url", env = "PUBLIC_URL")]
    pub public_url: Option<String>,
}

pub struct ViewLinkState {
    pub keys: KeySet,
    pub args: ViewLinkArgs,
}

/// A link's lifetime when the request does not say.
const DEFAULT_TTL: Duration = Duration::from_secs(7 * 86_400);

#[derive(Debug, Serialize)]
pub struct ViewLink {
    pub room: String,
    /// The live page with the token in its fragment (never sent to a server by browsers).
    pub url: String,
    pub token: String,
    pub expires_at: String,
}

pub async fn create(
    State(state): State<Arc<ViewLinkState>>,
    Path(room): Path<String>,
    headers: HeaderMap,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<(StatusCode, Json<ViewLink>), ApiError> {
    identifiers::check(Field::RoomName, &room)?;
    let now_ms = now_unix_ms();
    let claims = read_access::verify(&headers, &state.keys, now_ms / 1000)?;
    let grant = claims.video.clone().unwrap_or_default();
    let granted_room = grant.room.as_deref().unwrap_or_default();
    if !(grant.room_admin && (granted_room.is_empty() || granted_room == room)) {
        return Err(ApiError::Forbidden(Forbidden::NotRoomAdmin));
    }
    let max = state.args.max_ttl;
    let ttl = Params::from(query)?
        .parse("ttl", |text| {
            let ttl = humantime::parse_duration(text).map_err(|e| e.to_string())?;
            if ttl.is_zero() || ttl > max {
                return Err(format!("must be above 0 and at most {}", humantime::format_duration(max)));
            }
            Ok(ttl)
        })?
        .unwrap_or(DEFAULT_TTL.min(max));
    let secret = state.keys.secret(&claims.iss).expect("a verified token's key is configured");
    let now_s = now_ms / 1000;
    let expires_s = now_s.saturating_add(i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX));
    let view = Claims {
        iss: claims.iss.clone(),
        nbf: Some(now_s),
        exp: Some(expires_s),
        attendance: Some(AttendanceGrant { view: room.clone() }),
        ..Default::default()
    };
    let token = token::sign(&view, secret);
    let base = state.args.public_url.as_deref().unwrap_or_default().trim_end_matches('/');
    let url = format!("{base}/rooms/{}#{token}", path_segment(&room));
    Ok((
        StatusCode::CREATED,
        Json(ViewLink { room, url, token, expires_at: rfc3339_ms(expires_s.saturating_mul(1000)) }),
    ))
}

/// A room name as one URL path segment (percent-encoded but for unreserved characters).
fn path_segment(room: &str) -> String {
    room.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn room_names_become_one_path_segment() {
        assert_eq!(super::path_segment("algebra 7b/é#?"), "algebra%207b%2F%C3%A9%23%3F");
    }
}
