//! A stand-in for the LiveKit server's RoomService (a LiveKit server cannot be installed on these
//! machines): `ListParticipants` and `ListRooms` over Twirp as livekit-server serves them (its
//! `pkg/service/roomservice.go`, `auth.go` and the Twirp code generated into livekit/protocol):
//!
//! - `POST /twirp/livekit.RoomService/{Method}`, JSON (`application/json`) or protobuf
//!   (`application/protobuf`, what LiveKit's own SDKs send); another content type is `bad_route`.
//! - JSON answers as Twirp's defaults write them (livekit-server sets no JSON option): proto field
//!   names (`joined_at_ms`), every field present with its zero value, int64 as strings, enums by
//!   name. Requests are read in either naming.
//! - `ListParticipants` of a room LiveKit does not have answers an empty list (it reads the
//!   participant store only); `ListRooms` lists the named rooms that exist.
//! - A token without the grant (`roomAdmin` for that very room; `roomList`) gets Twirp's
//!   `401 {"code":"unauthenticated","msg":"permissions denied"}`; a token that does not verify
//!   (unknown key, bad signature, expired) is refused before Twirp, with a plain-text 401.
//!
//! LiveKit's official Python SDK (`livekit-api`) is the proof that it answers as LiveKit does
//! (`sweeper/tests/reconcile.rs`). Tests set its rooms, make it fail (503) or hang, and read
//! back every call it took.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use shared::livekit::token;
use shared::livekit::{KeySet, VideoGrant};

/// A participant of a stand-in room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Participant {
    pub sid: String,
    pub identity: String,
    pub name: String,
    pub metadata: String,
    /// JOINING, JOINED, ACTIVE or DISCONNECTED.
    pub state: &'static str,
    /// STANDARD, INGRESS, EGRESS, SIP or AGENT.
    pub kind: &'static str,
    pub joined_at_ms: i64,
}

impl Participant {
    /// An active standard participant.
    pub fn active(sid: &str, identity: &str, joined_at_ms: i64) -> Self {
        Participant {
            sid: sid.into(),
            identity: identity.into(),
            name: format!("{identity} name"),
            metadata: String::new(),
            state: "ACTIVE",
            kind: "STANDARD",
            joined_at_ms,
        }
    }
}

/// How the stand-in answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Answer,
    /// Every call: 503 `unavailable`.
    Unavailable,
    /// Every call: no answer at all.
    Hang,
}

/// A call the stand-in took.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    pub at: Instant,
    pub method: String,
    /// The room named in the request (`ListParticipants`), or the names (`ListRooms`).
    pub rooms: Vec<String>,
    pub status: u16,
}

#[derive(Debug)]
struct Room {
    sid: String,
    created_at_ms: i64,
    participants: Vec<Participant>,
}

struct Inner {
    keys: KeySet,
    rooms: BTreeMap<String, Room>,
    mode: Mode,
    calls: Vec<Call>,
}

/// A running stand-in; stopped on drop.
pub struct StandIn {
    addr: SocketAddr,
    inner: Arc<Mutex<Inner>>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for StandIn {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl StandIn {
    /// Starts a stand-in on a free port that accepts tokens signed with `keys`.
    pub async fn start(keys: KeySet) -> StandIn {
        let inner = Arc::new(Mutex::new(Inner { keys, rooms: BTreeMap::new(), mode: Mode::Answer, calls: Vec::new() }));
        let app = axum::Router::new()
            .route("/twirp/livekit.RoomService/{method}", axum::routing::post(serve))
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind the stand-in");
        let addr = listener.local_addr().expect("the stand-in's address");
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        StandIn { addr, inner, server }
    }

    /// Its URL, as `LIVEKIT_URL`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Creates (or replaces) the room `name` as session `sid` with these participants.
    pub fn set_room(&self, name: &str, sid: &str, participants: Vec<Participant>) {
        let mut inner = self.lock();
        let created_at_ms = inner.rooms.get(name).filter(|r| r.sid == sid).map_or_else(now_ms, |r| r.created_at_ms);
        inner.rooms.insert(name.into(), Room { sid: sid.into(), created_at_ms, participants });
    }

    /// Closes the room `name`.
    pub fn remove_room(&self, name: &str) {
        self.lock().rooms.remove(name);
    }

    pub fn set_mode(&self, mode: Mode) {
        self.lock().mode = mode;
    }

    /// Every call taken so far.
    pub fn calls(&self) -> Vec<Call> {
        self.lock().calls.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().expect("the stand-in's lock is never poisoned")
    }
}

fn now_ms() -> i64 {
    shared::domain::time::now_unix_ms()
}

/// Whether the request body is protobuf (else JSON), by its content type as Twirp decides.
fn is_protobuf(headers: &HeaderMap) -> Option<bool> {
    let content_type = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
    match content_type.split(';').next()?.trim() {
        "application/protobuf" => Some(true),
        "application/json" => Some(false),
        _ => None,
    }
}

fn twirp_error(status: StatusCode, code: &str, msg: &str) -> Response {
    let body = serde_json::json!({ "code": code, "msg": msg }).to_string();
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

async fn serve(
    State(inner): State<Arc<Mutex<Inner>>>,
    Path(method): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mode = inner.lock().expect("lock").mode;
    if mode == Mode::Hang {
        tokio::time::sleep(Duration::from_secs(3600)).await;
    }
    let (response, rooms) = answer(&inner, &method, &headers, &body, mode);
    inner.lock().expect("lock").calls.push(Call {
        at: Instant::now(),
        method,
        rooms,
        status: response.status().as_u16(),
    });
    response
}

fn answer(inner: &Mutex<Inner>, method: &str, headers: &HeaderMap, body: &[u8], mode: Mode) -> (Response, Vec<String>) {
    if mode == Mode::Unavailable {
        return (twirp_error(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "service unavailable"), Vec::new());
    }
    let Some(protobuf) = is_protobuf(headers) else {
        let error = twirp_error(StatusCode::NOT_FOUND, "bad_route", "unexpected Content-Type");
        return (error, Vec::new());
    };
    // Request messages of both methods hold one string field, number 1 (room; names).
    let strings = if protobuf {
        proto::strings_of_field_1(body)
    } else {
        let key = if method == "ListRooms" { "names" } else { "room" };
        serde_json::from_slice::<serde_json::Value>(body).ok().map(|value| match &value[key] {
            serde_json::Value::String(room) => vec![room.clone()],
            serde_json::Value::Array(names) => names.iter().filter_map(|n| n.as_str().map(String::from)).collect(),
            _ => Vec::new(),
        })
    };
    let Some(strings) = strings else {
        return (
            twirp_error(StatusCode::BAD_REQUEST, "malformed", "the request body could not be decoded"),
            Vec::new(),
        );
    };
    let inner = inner.lock().expect("lock");
    let grant = match authorize(&inner.keys, headers) {
        Ok(grant) => grant,
        Err(response) => return (*response, strings),
    };
    let response = match method {
        "ListParticipants" => {
            let room = strings.first().cloned().unwrap_or_default();
            if room.is_empty() {
                twirp_error(StatusCode::BAD_REQUEST, "invalid_argument", "room is required")
            } else if !(grant.room_admin && grant.room.as_deref() == Some(room.as_str())) {
                twirp_error(StatusCode::UNAUTHORIZED, "unauthenticated", "permissions denied")
            } else {
                let participants =
                    inner.rooms.get(&room).map(|found| found.participants.as_slice()).unwrap_or_default();
                encode(protobuf, &ListAnswer::Participants(participants))
            }
        }
        "ListRooms" => {
            if !grant.room_list {
                twirp_error(StatusCode::UNAUTHORIZED, "unauthenticated", "permissions denied")
            } else {
                let rooms: Vec<(&String, &Room)> =
                    inner.rooms.iter().filter(|(name, _)| strings.is_empty() || strings.contains(name)).collect();
                encode(protobuf, &ListAnswer::Rooms(&rooms))
            }
        }
        _ => twirp_error(
            StatusCode::NOT_FOUND,
            "bad_route",
            &format!("no handler for path \"/twirp/livekit.RoomService/{method}\""),
        ),
    };
    (response, strings)
}

/// The token's video grant (none without a token), or the plain-text 401 of livekit-server's
/// authentication middleware for a token that does not verify.
fn authorize(keys: &KeySet, headers: &HeaderMap) -> Result<VideoGrant, Box<Response>> {
    let refused = |msg: String| Box::new((StatusCode::UNAUTHORIZED, msg).into_response());
    let Some(value) = headers.get(header::AUTHORIZATION) else { return Ok(VideoGrant::default()) };
    let bearer = token::bearer(Some(value.as_bytes()))
        .ok_or_else(|| refused("invalid authorization header. Must start with Bearer ".into()))?;
    let claims =
        token::verify(bearer, keys, now_ms() / 1000).map_err(|error| refused(format!("invalid token: {error}")))?;
    Ok(claims.video.unwrap_or_default())
}

enum ListAnswer<'a> {
    Participants(&'a [Participant]),
    Rooms(&'a [(&'a String, &'a Room)]),
}

fn encode(protobuf: bool, answer: &ListAnswer<'_>) -> Response {
    let (content_type, body) = if protobuf {
        ("application/protobuf", proto::encode(answer))
    } else {
        ("application/json", json(answer).to_string().into_bytes())
    };
    (StatusCode::OK, [(header::CONTENT_TYPE, content_type)], body).into_response()
}

/// JSON as livekit-server's Twirp writes it (`protojson` with `UseProtoNames` and
/// `EmitUnpopulated`): proto field names, zero values present, int64 as strings, enums by name.
/// The fields written are those of the stand-in's model (no tracks, permissions or codecs).
fn json(answer: &ListAnswer<'_>) -> serde_json::Value {
    use serde_json::json;
    match answer {
        ListAnswer::Participants(participants) => {
            let listed: Vec<serde_json::Value> = participants
                .iter()
                .map(|p| {
                    json!({
                        "sid": p.sid, "identity": p.identity, "state": p.state, "tracks": [],
                        "metadata": p.metadata, "joined_at": (p.joined_at_ms / 1000).to_string(),
                        "name": p.name, "version": 0, "region": "", "is_publisher": false, "kind": p.kind,
                        "attributes": {}, "disconnect_reason": "UNKNOWN_REASON",
                        "joined_at_ms": p.joined_at_ms.to_string(),
                    })
                })
                .collect();
            json!({ "participants": listed })
        }
        ListAnswer::Rooms(rooms) => {
            let listed: Vec<serde_json::Value> = rooms
                .iter()
                .map(|(name, room)| {
                    json!({
                        "sid": room.sid, "name": name, "empty_timeout": 0, "departure_timeout": 0,
                        "max_participants": 0, "creation_time": (room.created_at_ms / 1000).to_string(),
                        "creation_time_ms": room.created_at_ms.to_string(), "turn_password": "",
                        "enabled_codecs": [], "metadata": "", "num_participants": room.participants.len(),
                        "num_publishers": 0, "active_recording": false,
                    })
                })
                .collect();
            json!({ "rooms": listed })
        }
    }
}

/// The protobuf wire format of the few messages the stand-in speaks (field numbers of
/// livekit/protocol's `livekit_models.proto` and `livekit_room.proto`).
mod proto {
    use super::{ListAnswer, Participant, Room};

    fn varint(out: &mut Vec<u8>, mut value: u64) {
        while value >= 0x80 {
            out.push((value as u8) | 0x80);
            value >>= 7;
        }
        out.push(value as u8);
    }

    fn tag(out: &mut Vec<u8>, field: u64, wire_type: u64) {
        varint(out, (field << 3) | wire_type);
    }

    fn bytes_field(out: &mut Vec<u8>, field: u64, bytes: &[u8]) {
        if !bytes.is_empty() {
            tag(out, field, 2);
            varint(out, bytes.len() as u64);
            out.extend_from_slice(bytes);
        }
    }

    fn int_field(out: &mut Vec<u8>, field: u64, value: i64) {
        if value != 0 {
            tag(out, field, 0);
            varint(out, value as u64);
        }
    }

    fn state_number(state: &str) -> i64 {
        ["JOINING", "JOINED", "ACTIVE", "DISCONNECTED"].iter().position(|s| *s == state).unwrap_or(0) as i64
    }

    fn kind_number(kind: &str) -> i64 {
        ["STANDARD", "INGRESS", "EGRESS", "SIP", "AGENT"].iter().position(|k| *k == kind).unwrap_or(0) as i64
    }

    fn participant(p: &Participant) -> Vec<u8> {
        let mut out = Vec::new();
        bytes_field(&mut out, 1, p.sid.as_bytes());
        bytes_field(&mut out, 2, p.identity.as_bytes());
        int_field(&mut out, 3, state_number(p.state));
        bytes_field(&mut out, 5, p.metadata.as_bytes());
        int_field(&mut out, 6, p.joined_at_ms / 1000);
        bytes_field(&mut out, 9, p.name.as_bytes());
        int_field(&mut out, 14, kind_number(p.kind));
        int_field(&mut out, 17, p.joined_at_ms);
        out
    }

    fn room(name: &str, room: &Room) -> Vec<u8> {
        let mut out = Vec::new();
        bytes_field(&mut out, 1, room.sid.as_bytes());
        bytes_field(&mut out, 2, name.as_bytes());
        int_field(&mut out, 5, room.created_at_ms / 1000);
        int_field(&mut out, 9, room.participants.len() as i64);
        int_field(&mut out, 15, room.created_at_ms);
        out
    }

    pub(super) fn encode(answer: &ListAnswer<'_>) -> Vec<u8> {
        let mut out = Vec::new();
        match answer {
            ListAnswer::Participants(participants) => {
                for p in *participants {
                    bytes_field(&mut out, 1, &participant(p));
                }
            }
            ListAnswer::Rooms(rooms) => {
                for (name, r) in *rooms {
                    bytes_field(&mut out, 1, &room(name, r));
                }
            }
        }
        out
    }

    fn read_varint(bytes: &[u8], at: &mut usize) -> Option<u64> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = *bytes.get(*at)?;
            *at += 1;
            value |= u64::from(byte & 0x7f) << shift;
            if byte < 0x80 {
                return Some(value);
            }
        }
        None
    }

    /// The strings of field 1 of a message (other fields skipped); `None` if it is not protobuf.
    pub(super) fn strings_of_field_1(bytes: &[u8]) -> Option<Vec<String>> {
        let mut at = 0;
        let mut strings = Vec::new();
        while at < bytes.len() {
            let key = read_varint(bytes, &mut at)?;
            match key & 7 {
                0 => {
                    read_varint(bytes, &mut at)?;
                }
                2 => {
                    let len = usize::try_from(read_varint(bytes, &mut at)?).ok()?;
                    let value = bytes.get(at..at.checked_add(len)?)?;
                    at += len;
                    if key >> 3 == 1 {
                        strings.push(String::from_utf8(value.to_vec()).ok()?);
                    }
                }
                1 => at += 8,
                5 => at += 4,
                _ => return None,
            }
        }
        Some(strings)
    }
}
