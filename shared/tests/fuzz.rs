//! Property-based fuzzing (stable Rust, runs in `make test`) of everything that reads untrusted
//! input: the token verifier, the webhook verifier and event parser, and the participant tokens
//! of heartbeats.
//! Whatever the bytes, they return an error and never panic; what they accept is well-formed.

use bytes::Bytes;
use proptest::prelude::*;
use shared::livekit::token::{self, Claims, VideoGrant};
use shared::livekit::{KeySet, participant, webhook};
use shared::nats::webhooks::WebhookMessage;

const NOW: i64 = 1_800_000_000;

fn keys() -> KeySet {
    KeySet::parse("alpha: 0123456789abcdef0123456789abcdef").unwrap()
}

fn signed(body: &[u8]) -> String {
    let claims = Claims {
        iss: "alpha".into(),
        nbf: Some(NOW),
        exp: Some(NOW + 300),
        sha256: Some(webhook::body_hash(body)),
        ..Default::default()
    };
    token::sign(&claims, keys().secret("alpha").unwrap())
}

/// Strings that look like JWTs more often than random text does.
fn jwt_like() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[A-Za-z0-9_=-]{0,40}\\.[A-Za-z0-9_=-]{0,80}\\.[A-Za-z0-9_=-]{0,50}",
        "(Bearer |bearer |)eyJ[A-Za-z0-9_-]{0,60}\\.[A-Za-z0-9_-]{0,60}\\.[A-Za-z0-9_-]{0,43}",
    ]
}

/// JSON-ish bodies: valid objects with odd fields, truncations, deep nesting, raw bytes.
fn body_like() -> impl Strategy<Value = Vec<u8>> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        ".{0,20}".prop_map(serde_json::Value::from),
    ];
    let json = leaf.prop_recursive(6, 48, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::from),
            proptest::collection::btree_map(
                prop_oneof![
                    Just("event".to_owned()),
                    Just("id".to_owned()),
                    Just("room".to_owned()),
                    Just("participant".to_owned()),
                    Just("turnPassword".to_owned()),
                    Just("createdAt".to_owned()),
                    Just("joinedAt".to_owned()),
                    Just("identity".to_owned()),
                    Just("sid".to_owned()),
                    ".{0,8}"
                ],
                inner,
                0..6,
            )
            .prop_map(|map| serde_json::Value::Object(map.into_iter().collect())),
        ]
    });
    prop_oneof![
        json.prop_map(|v| serde_json::to_vec(&v).unwrap()),
        proptest::collection::vec(any::<u8>(), 0..200),
        Just(format!("{}{}", "[".repeat(10_000), "]".repeat(10_000)).into_bytes()),
        Just(b"{\"event\":\"room_started\",\"id\":\"EV_1\",\"room\":{\"name\":\"\xff\xfe\"}}".to_vec()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3_000))]

    #[test]
    fn the_token_verifier_refuses_garbage_without_panicking(token in jwt_like(), now in any::<i64>()) {
        prop_assert!(token::verify(&token, &keys(), now).is_err());
    }

    #[test]
    fn unsigned_webhooks_are_refused(authorization in proptest::option::of(jwt_like()), body in body_like()) {
        let result = webhook::receive(authorization.as_deref().map(str::as_bytes), Bytes::from(body), &keys(), NOW, 0);
        prop_assert!(matches!(result, Err(shared::livekit::ReceiveError::Unauthorized(_))));
    }

    #[test]
    fn a_changed_body_never_verifies(body in body_like(), flip in any::<prop::sample::Index>()) {
        let token = signed(&body);
        let mut tampered = body.clone();
        if tampered.is_empty() {
            tampered.push(b' ');
        } else {
            let i = flip.index(tampered.len());
            tampered[i] ^= 0x01;
        }
        let result = webhook::verify(Some(token.as_bytes()), &tampered, &keys(), NOW);
        prop_assert_eq!(result, Err(shared::livekit::VerifyError::BodyHashMismatch));
    }

    #[test]
    fn signed_bodies_are_events_or_clear_rejections(body in body_like()) {
        let token = signed(&body);
        match webhook::receive(Some(token.as_bytes()), Bytes::from(body), &keys(), NOW, 0) {
            Ok(event) => {
                // What goes to the stream is a JSON object with a type and an id, and no secret.
                let stored: serde_json::Value = serde_json::from_slice(event.payload()).unwrap();
                prop_assert!(stored.is_object());
                prop_assert!(stored["room"].get("turnPassword").is_none());
                prop_assert!(!event.id().is_empty() && !event.event_type().is_empty());
                // The worker's parser and the rule accept or refuse it without panicking.
                if let Ok(WebhookMessage::LiveKit { event, .. }) = WebhookMessage::decode(event.payload(), Some(0)) {
                    let _ = shared::domain::attendance::Fact::from_event(&event);
                }
            }
            Err(shared::livekit::ReceiveError::Invalid(reason)) => prop_assert!(!reason.code().is_empty()),
            Err(other) => prop_assert!(false, "a signed body was refused as unauthentic: {other:?}"),
        }
    }

    #[test]
    fn heartbeats_need_a_valid_participant_token(authorization in proptest::option::of(jwt_like())) {
        let result = participant::verify_header(authorization.as_deref().map(str::as_bytes), &keys(), NOW);
        prop_assert!(result.is_err());
    }

    #[test]
    fn any_grant_shape_is_handled(sub in proptest::option::of(".{0,10}"), room in proptest::option::of(".{0,10}"),
                                  join in any::<bool>(), admin in any::<bool>()) {
        let claims = Claims {
            iss: "alpha".into(), sub: sub.clone(), exp: Some(NOW + 60),
            video: Some(VideoGrant { room: room.clone(), room_join: join, room_admin: admin, room_list: false }),
            ..Default::default()
        };
        let token = token::sign(&claims, keys().secret("alpha").unwrap());
        let result = participant::verify(&token, &keys(), NOW);
        let admitted = join && room.as_deref().is_some_and(|r| !r.is_empty()) && sub.as_deref().is_some_and(|s| !s.is_empty());
        prop_assert_eq!(result.is_ok(), admitted);
    }
}
