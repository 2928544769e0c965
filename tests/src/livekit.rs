//! Webhook requests signed the way LiveKit's server signs them (HS256, `iss` = API key,
//! `nbf` = now, `exp` = now + 5 min, `sha256` = base64(SHA-256(body))).

use shared::livekit::token::{self, Claims};
use shared::livekit::{KeySet, webhook};

/// The key pair the tests configure (secrets of 32+ bytes, as the gateway requires).
pub const TEST_KEYS: &str =
    "APItestAlpha: test-alpha-secret-0123456789abcdef0123\nAPItestBravo: test-bravo-secret-fedcba9876543210fedc\n";

pub fn test_keys() -> KeySet {
    KeySet::parse(TEST_KEYS).expect("test keys are valid")
}

/// A LiveKit webhook token for `body`, signed with `api_key` from `keys` at `issued_at`.
pub fn webhook_token(keys: &KeySet, api_key: &str, body: &[u8], issued_at: i64) -> String {
    webhook::sign_request(body, api_key, keys.secret(api_key).expect("the key is configured"), issued_at)
}

/// A token for `body` signed now with the first test key.
pub fn sign_now(body: &[u8]) -> String {
    webhook_token(&test_keys(), "APItestAlpha", body, shared::domain::time::now_unix_ms() / 1000)
}

/// A protojson-like `participant_joined` event with a `turnPassword` to redact.
pub fn participant_joined(event_id: &str, room: &str, identity: &str) -> Vec<u8> {
    participant_joined_at(event_id, room, identity, shared::domain::time::now_unix_ms() / 1000)
}

/// A `participant_joined` whose session began at `joined_at_secs`.
pub fn participant_joined_at(event_id: &str, room: &str, identity: &str, joined_at_secs: i64) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "event": "participant_joined",
        "id": event_id,
        "createdAt": (shared::domain::time::now_unix_ms() / 1000).to_string(),
        "room": {"sid": format!("RM_{room}"), "name": room, "turnPassword": "turn-secret-must-be-redacted"},
        "participant": {"sid": format!("PA_{identity}"), "identity": identity, "state": "ACTIVE",
                         "joinedAt": joined_at_secs.to_string()},
    }))
    .expect("JSON serializes")
}

/// A participant access token as LiveKit issues them: `sub` = identity, `roomJoin` for `room`.
pub fn participant_token(identity: &str, room: &str) -> String {
    access_token(
        Some(identity),
        shared::livekit::VideoGrant { room: Some(room.into()), room_join: true, ..Default::default() },
        6 * 3600,
    )
}

/// An admin token for `room` (`roomAdmin`).
pub fn admin_token(room: &str) -> String {
    access_token(
        None,
        shared::livekit::VideoGrant { room: Some(room.into()), room_admin: true, ..Default::default() },
        600,
    )
}

/// An access token with any grant, valid for `ttl_secs` (negative: already expired).
pub fn access_token(identity: Option<&str>, video: shared::livekit::VideoGrant, ttl_secs: i64) -> String {
    let keys = test_keys();
    let now = shared::domain::time::now_unix_ms() / 1000;
    let claims = Claims {
        iss: "APItestAlpha".into(),
        sub: identity.map(Into::into),
        nbf: Some(now.min(now + ttl_secs)),
        exp: Some(now + ttl_secs),
        video: Some(video),
        ..Default::default()
    };
    token::sign(&claims, keys.secret("APItestAlpha").expect("test key"))
}

/// A signed `participant_left` for the session `participant_joined` opened.
pub fn participant_left(event_id: &str, room: &str, identity: &str, joined_at_secs: i64) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "event": "participant_left",
        "id": event_id,
        "createdAt": (shared::domain::time::now_unix_ms() / 1000).to_string(),
        "room": {"sid": format!("RM_{room}"), "name": room},
        "participant": {"sid": format!("PA_{identity}"), "identity": identity, "state": "DISCONNECTED",
                         "joinedAt": joined_at_secs.to_string()},
    }))
    .expect("JSON serializes")
}
