//! Requests signed the way LiveKit signs them: webhooks with an HS256 token over the body's
//! SHA-256 (`iss` = API key, valid 5 minutes), participants with an access token granting
//! `roomJoin` for their room, and a reader with `roomList`.

use shared::livekit::token::{self, Claims};
use shared::livekit::{KeySet, VideoGrant, webhook};

/// The `Authorization` value LiveKit sends with `body`, signed now with the first key.
pub fn webhook_authorization(keys: &KeySet, body: &[u8]) -> String {
    let (api_key, secret) = keys.first();
    webhook::sign_request(body, api_key, secret, shared::domain::time::now_unix_ms() / 1000)
}

/// A participant's access token, as the platform's backend issues it for LiveKit.
pub fn participant_token(keys: &KeySet, identity: &str, room: &str, ttl_secs: i64) -> String {
    let grant = VideoGrant { room: Some(room.to_owned()), room_join: true, ..Default::default() };
    access_token(keys, identity, grant, ttl_secs)
}

/// A token that reads every room's attendance and meetings (`roomList`), as a platform's
/// backend holds for its reports.
pub fn reader_token(keys: &KeySet, ttl_secs: i64) -> String {
    access_token(keys, "bench-reader", VideoGrant { room_list: true, ..Default::default() }, ttl_secs)
}

/// An access token for `subject` with `grant`, valid from now for `ttl_secs`, signed with the
/// first key.
fn access_token(keys: &KeySet, subject: &str, grant: VideoGrant, ttl_secs: i64) -> String {
    let now = shared::domain::time::now_unix_ms() / 1000;
    let (api_key, secret) = keys.first();
    let claims = Claims {
        iss: api_key.to_owned(),
        sub: Some(subject.to_owned()),
        nbf: Some(now),
        exp: Some(now + ttl_secs),
        video: Some(grant),
        ..Default::default()
    };
    token::sign(&claims, secret)
}

/// A fresh key set with one random key, for a run of its own.
pub fn random_keys() -> (String, KeySet) {
    let secret: String = std::iter::repeat_with(fastrand::alphanumeric).take(40).collect();
    let yaml = format!("benchkey: {secret}\n");
    let keys = KeySet::parse(&yaml).expect("a valid key set");
    (yaml, keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gateway_side_accepts_what_we_sign() {
        let (_, keys) = random_keys();
        let body = br#"{"event":"room_started","id":"EV_1"}"#;
        let now = shared::domain::time::now_unix_ms() / 1000;
        let authorization = webhook_authorization(&keys, body);
        assert!(webhook::receive(Some(authorization.as_bytes()), body.to_vec().into(), &keys, now, now * 1000).is_ok());
        let token = participant_token(&keys, "ada", "algebra", 60);
        let who = shared::livekit::participant::verify(&token, &keys, now).unwrap();
        assert_eq!((who.room.as_str(), who.identity.as_str()), ("algebra", "ada"));
    }
}
