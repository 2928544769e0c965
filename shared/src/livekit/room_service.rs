//! A client of LiveKit's RoomService over its Twirp JSON API: `ListParticipants` and `ListRooms`,
//! what reconciliation asks the LiveKit server.
//!
//! Each call is `POST {LIVEKIT_URL}/twirp/livekit.RoomService/{Method}` with a JSON body and a
//! token minted for that call alone (HS256, ten minutes): `roomAdmin` for the room whose
//! participants are listed, `roomList` to list rooms, as livekit-server requires. Answers are
//! protojson: livekit-server's Twirp writes proto names (`joined_at_ms`) with every zero value,
//! int64 as strings and enums by name; lowerCamelCase names, numbers for int64 and enums are read
//! too. An error is Twirp's `{"code": …, "msg": …}` with its HTTP status, except a token that does
//! not verify, which livekit-server refuses with a plain-text 401 (read as its status alone: that
//! text may quote the token).

use bytes::Bytes;
use serde::Deserialize;

use super::keys::Secret;
use super::token::{self, Claims, VideoGrant};
use crate::domain::attendance::ParticipantInfo;
use crate::domain::reconciliation::{ListedParticipant, ParticipantState};
use crate::runtime::http_client::{CallError, OriginClient};

/// The most of an answer read: a room of 10 000 participants lists in well under this.
pub const MAX_ANSWER_BYTES: usize = 16 * 1024 * 1024;
/// How long a call's token is valid.
const TOKEN_TTL_SECS: i64 = 600;

/// Why a call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RoomServiceError {
    /// LiveKit answered a Twirp error.
    #[error("LiveKit answered {status} {code}: {msg}")]
    Twirp { status: u16, code: String, msg: String },
    #[error(transparent)]
    Call(#[from] CallError),
    #[error("LiveKit's answer is not RoomService JSON: {0}")]
    InvalidAnswer(String),
}

impl RoomServiceError {
    /// A `not_found` error. (livekit-server answers `ListParticipants` of a room it does not have
    /// with an empty list, so `ListRooms` is what tells a room is gone; a `not_found` means the
    /// same wherever it comes from.)
    pub fn is_not_found(&self) -> bool {
        matches!(self, RoomServiceError::Twirp { code, .. } if code == "not_found")
    }

    /// The stable name of the outcome in metrics.
    pub fn outcome(&self) -> &'static str {
        match self {
            RoomServiceError::Twirp { code, .. } if code == "not_found" => "not_found",
            RoomServiceError::Twirp { status: 401 | 403, .. } => "denied",
            RoomServiceError::Twirp { .. } => "error",
            RoomServiceError::Call(CallError::Timeout(_)) => "timeout",
            RoomServiceError::Call(CallError::Connect(_) | CallError::Tls(_)) => "unreachable",
            RoomServiceError::Call(_) | RoomServiceError::InvalidAnswer(_) => "invalid",
        }
    }
}

/// A room as `ListRooms` lists it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct ListedRoom {
    pub sid: String,
    pub name: String,
}

/// LiveKit's RoomService at one URL, calling with one API key; cheap to clone.
#[derive(Clone)]
pub struct RoomService {
    client: OriginClient,
    api_key: String,
    secret: Secret,
}

impl RoomService {
    pub fn new(client: OriginClient, api_key: &str, secret: Secret) -> Self {
        RoomService { client, api_key: api_key.to_owned(), secret }
    }

    /// The participants of `room` (a room name), or a `not_found` error if LiveKit has no such
    /// room. `now` is unix seconds, for the token.
    pub async fn list_participants(&self, room: &str, now: i64) -> Result<Vec<ListedParticipant>, RoomServiceError> {
        #[derive(Deserialize, Default)]
        #[serde(default)]
        struct Answer {
            participants: Vec<WireParticipant>,
        }
        let grant = VideoGrant { room: Some(room.to_owned()), room_admin: true, ..VideoGrant::default() };
        let body = serde_json::json!({ "room": room });
        let answer: Answer = self.call("ListParticipants", grant, &body, now).await?;
        Ok(answer.participants.into_iter().map(WireParticipant::into_listed).collect())
    }

    /// The rooms among `names` that LiveKit has now.
    pub async fn list_rooms(&self, names: &[&str], now: i64) -> Result<Vec<ListedRoom>, RoomServiceError> {
        #[derive(Deserialize, Default)]
        #[serde(default)]
        struct Answer {
            rooms: Vec<ListedRoom>,
        }
        let grant = VideoGrant { room_list: true, ..VideoGrant::default() };
        let body = serde_json::json!({ "names": names });
        let answer: Answer = self.call("ListRooms", grant, &body, now).await?;
        Ok(answer.rooms)
    }

    async fn call<T: serde::de::DeserializeOwned>(
        &self,
        method: &str,
        grant: VideoGrant,
        body: &serde_json::Value,
        now: i64,
    ) -> Result<T, RoomServiceError> {
        let claims = Claims {
            iss: self.api_key.clone(),
            nbf: Some(now),
            exp: Some(now + TOKEN_TTL_SECS),
            video: Some(grant),
            ..Claims::default()
        };
        let authorization = format!("Bearer {}", token::sign(&claims, &self.secret));
        let body = Bytes::from(serde_json::to_vec(body).expect("a JSON value serializes"));
        let answer = self
            .client
            .post(
                &format!("/twirp/livekit.RoomService/{method}"),
                "application/json",
                &[("authorization", authorization)],
                body,
                MAX_ANSWER_BYTES,
            )
            .await?;
        if !(200..300).contains(&answer.status) {
            return Err(twirp_error(answer.status, &answer.body));
        }
        serde_json::from_slice(&answer.body).map_err(|error| RoomServiceError::InvalidAnswer(error.to_string()))
    }
}

/// A Twirp error from its status and body; a body that is not Twirp's (a proxy's page) is
/// named by its status alone.
fn twirp_error(status: u16, body: &[u8]) -> RoomServiceError {
    #[derive(Deserialize, Default)]
    #[serde(default)]
    struct TwirpError {
        code: String,
        msg: String,
    }
    let error: TwirpError = serde_json::from_slice(body).unwrap_or_default();
    let code = if error.code.is_empty() { format!("http_{status}") } else { error.code };
    let msg: String = error.msg.chars().filter(|c| !c.is_control()).take(300).collect();
    RoomServiceError::Twirp { status, code, msg }
}

/// `ParticipantInfo` as protojson writes it.
#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct WireParticipant {
    sid: String,
    identity: String,
    name: String,
    metadata: String,
    #[serde(deserialize_with = "enum_name")]
    state: Option<EnumValue>,
    #[serde(deserialize_with = "enum_name")]
    kind: Option<EnumValue>,
    #[serde(alias = "joined_at", deserialize_with = "crate::domain::event::int64")]
    joined_at: Option<i64>,
    #[serde(alias = "joined_at_ms", deserialize_with = "crate::domain::event::int64")]
    joined_at_ms: Option<i64>,
}

/// A protobuf enum as protojson may write it: its name, or its number.
#[derive(Debug, Clone, PartialEq, Eq)]
enum EnumValue {
    Name(String),
    Number(i64),
}

fn enum_name<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<EnumValue>, D::Error> {
    Ok(match Option::<serde_json::Value>::deserialize(deserializer)? {
        Some(serde_json::Value::String(name)) => Some(EnumValue::Name(name)),
        Some(serde_json::Value::Number(number)) => number.as_i64().map(EnumValue::Number),
        _ => None,
    })
}

impl WireParticipant {
    fn into_listed(self) -> ListedParticipant {
        // ParticipantInfo.State: JOINING 0, JOINED 1, ACTIVE 2, DISCONNECTED 3.
        let state = match self.state {
            None => ParticipantState::Joining,
            Some(EnumValue::Name(name)) => ParticipantState::parse(&name).unwrap_or(ParticipantState::Joining),
            Some(EnumValue::Number(1)) => ParticipantState::Joined,
            Some(EnumValue::Number(2)) => ParticipantState::Active,
            Some(EnumValue::Number(3)) => ParticipantState::Disconnected,
            Some(EnumValue::Number(_)) => ParticipantState::Joining,
        };
        // ParticipantInfo.Kind: STANDARD 0, INGRESS 1, EGRESS 2, SIP 3, AGENT 4, CONNECTOR 7,
        // BRIDGE 8.
        let kind = match self.kind {
            Some(EnumValue::Name(name)) if !name.is_empty() => name,
            Some(EnumValue::Number(number)) => {
                let names = ["STANDARD", "INGRESS", "EGRESS", "SIP", "AGENT", "", "", "CONNECTOR", "BRIDGE"];
                names.get(number as usize).filter(|name| !name.is_empty()).unwrap_or(&"STANDARD").to_string()
            }
            _ => "STANDARD".to_owned(),
        };
        ListedParticipant {
            info: ParticipantInfo {
                sid: self.sid,
                identity: self.identity,
                name: self.name,
                metadata: self.metadata,
                kind,
            },
            state,
            joined_at_ms: self.joined_at_ms.or(self.joined_at.map(|s| s.saturating_mul(1000))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn participants_are_read_as_protojson_writes_them() {
        let body = br#"{"participants":[
            {"sid":"PA_1","identity":"ada","state":"ACTIVE","joinedAt":"1717405000","joinedAtMs":"1717405000123",
             "name":"Ada","metadata":"{}","kind":"SIP","permission":{"canSubscribe":true},"tracks":[]},
            {"sid":"PA_2","identity":"bob","joined_at":1717405001,"state":3,"kind":4},
            {"sid":"PA_3","identity":"cy"},
            {"sid":"PA_4","identity":"dee","state":"ACTIVE","joined_at_ms":"1717405002345"}]}"#;
        #[derive(Deserialize)]
        struct Answer {
            participants: Vec<WireParticipant>,
        }
        let answer: Answer = serde_json::from_slice(body).unwrap();
        let listed: Vec<ListedParticipant> =
            answer.participants.into_iter().map(WireParticipant::into_listed).collect();
        assert_eq!(
            (listed[0].state, listed[0].joined_at_ms, listed[0].info.kind.as_str()),
            (ParticipantState::Active, Some(1_717_405_000_123), "SIP")
        );
        assert_eq!(
            (listed[1].state, listed[1].joined_at_ms, listed[1].info.kind.as_str()),
            (ParticipantState::Disconnected, Some(1_717_405_001_000), "AGENT")
        );
        assert_eq!(
            (listed[2].state, listed[2].joined_at_ms, listed[2].info.kind.as_str()),
            (ParticipantState::Joining, None, "STANDARD")
        );
    }

    #[test]
    fn twirp_errors_keep_their_code_and_a_clean_message() {
        let error = twirp_error(404, br#"{"code":"not_found","msg":"requested room does not exist"}"#);
        assert!(error.is_not_found());
        assert_eq!(error.outcome(), "not_found");
        let proxy = twirp_error(502, b"<html>Bad Gateway</html>");
        assert_eq!(proxy, RoomServiceError::Twirp { status: 502, code: "http_502".into(), msg: String::new() });
        assert!(!proxy.is_not_found());
        assert_eq!(twirp_error(401, br#"{"code":"unauthenticated","msg":"x\u001b[31m"}"#).outcome(), "denied");
        let middleware = twirp_error(401, b"invalid token: eyJ..., error: signature is invalid");
        assert_eq!(
            (middleware.outcome(), middleware.to_string()),
            ("denied", "LiveKit answered 401 http_401: ".into())
        );
    }
}
