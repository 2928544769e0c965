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

/// Bodies of events the edge takes: LiveKit's fields with odd spacing, members in any order,
/// extra members, and the TURN secret in the room (escaped, repeated, first, last, or absent).
fn event_like() -> impl Strategy<Value = Vec<u8>> {
    let space = prop::sample::select(vec!["", " ", "\n  ", "\t"]);
    let extra = prop_oneof![
        Just(r#""numParticipants":2"#.to_owned()),
        Just(r#""enabledCodecs":[{"mime":"audio/opus"}, {"mime":"video/VP8"}]"#.to_owned()),
        Just(r#""metadata":"{\"turnPassword\":\"not the room's\"}""#.to_owned()),
        Just(r#""q\"k\\":"v""#.to_owned()),
        Just(r#""turnPassword":"s3cret""#.to_owned()),
        Just(r#""turn\u0050assword":"s3cret""#.to_owned()),
        "[a-z]{1,6}".prop_map(|key| format!(r#""{key}":{{"turnPassword":"nested, kept"}}"#)),
    ];
    let room_members = (
        proptest::collection::vec(extra, 0..5),
        proptest::option::of(Just(r#""name":"algebra""#.to_owned())),
        proptest::option::of(Just(r#""sid":"RM_1""#.to_owned())),
    )
        .prop_flat_map(|(mut members, name, sid)| {
            members.extend(name);
            members.extend(sid);
            Just(members).prop_shuffle()
        });
    (room_members, proptest::option::of(Just(r#""participant":{"identity":"ada","sid":"PA_1"}"#)), space.clone(), space)
        .prop_map(|(members, participant, a, b)| {
            let room = format!("{{{a}{}{b}}}", members.join(&format!("{b},{a}")));
            let mut top = vec![
                r#""event":"participant_joined""#.to_owned(),
                r#""id":"EV_1""#.to_owned(),
                format!(r#""room":{a}{room}"#),
            ];
            top.extend(participant.map(str::to_owned));
            format!("{b}{{{a}{}{b}}}{a}", top.join(&format!(",{a}"))).into_bytes()
        })
}

/// The stored payload is the body as JSON, less the room's `turnPassword`: serde_json's reading
/// of both (a tree) is the oracle.
fn assert_stored_as_sent_without_the_secret(body: &[u8], stored: &[u8]) -> Result<(), TestCaseError> {
    let mut expected: serde_json::Value = serde_json::from_slice(body).expect("an accepted body is JSON");
    if let Some(room) = expected.get_mut("room").and_then(serde_json::Value::as_object_mut) {
        room.remove("turnPassword");
    }
    let stored_json: serde_json::Value = serde_json::from_slice(stored).expect("the payload is JSON");
    prop_assert_eq!(&stored_json, &expected);
    prop_assert!(stored_json["room"].get("turnPassword").is_none());
    Ok(())
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
    fn signed_bodies_are_events_or_clear_rejections(body in prop_oneof![body_like(), event_like()]) {
        let token = signed(&body);
        let body_copy = body.clone();
        match webhook::receive(Some(token.as_bytes()), Bytes::from(body), &keys(), NOW, 0) {
            Ok(event) => {
                prop_assert!(!event.id().is_empty() && !event.event_type().is_empty());
                assert_stored_as_sent_without_the_secret(&body_copy, event.payload())?;
                // What the edge accepts the worker reads (and the rule takes without panicking).
                match WebhookMessage::decode(event.payload(), Some(0)) {
                    Ok(WebhookMessage::LiveKit { event, .. }) => {
                        let _ = shared::domain::attendance::Fact::from_event(&event);
                    }
                    Ok(WebhookMessage::Heartbeat(_)) => {}
                    Err(error) => prop_assert_eq!(event.event_type(), "client_heartbeat", "{:?}", error),
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
