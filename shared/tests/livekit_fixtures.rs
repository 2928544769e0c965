//! Every request in `tests/fixtures/livekit/` (signed by LiveKit's official server SDK, copied from
//! the team's shared fixtures) goes through the verifier with the clock at the fixture's
//! `verify_at` and must give the fixture's status.

use std::collections::BTreeMap;
use std::path::PathBuf;

use bytes::Bytes;
use serde::Deserialize;
use shared::livekit::{KeySet, ReceiveError, webhook};

#[derive(Deserialize)]
struct Fixture {
    name: String,
    keys: BTreeMap<String, String>,
    verify_at: i64,
    headers: BTreeMap<String, String>,
    body: String,
    status: u16,
}

fn fixtures() -> Vec<Fixture> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/livekit");
    let mut fixtures: Vec<Fixture> = std::fs::read_dir(&dir)
        .expect("fixture directory")
        .map(|entry| entry.expect("directory entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "json"))
        .map(|path| serde_json::from_slice(&std::fs::read(&path).expect("fixture file")).expect("fixture JSON"))
        .collect();
    fixtures.sort_by(|a, b| a.name.cmp(&b.name));
    fixtures
}

/// The precise reason each rejected fixture must be refused for.
fn expected_rejection(name: &str) -> &'static str {
    match name {
        "alg_none" => "unsupported_algorithm",
        "expired" => "token_expired",
        "missing_authorization" => "missing_authorization",
        "tampered_body" | "urlsafe_sha" => "body_hash_mismatch",
        "unknown_key" => "unknown_api_key",
        "wrong_secret" => "invalid_signature",
        other => panic!("fixture {other} is rejected but has no expected reason here"),
    }
}

/// The fixture's keys as a key file: plain `key: secret` lines, or as an operator may write
/// the same YAML (quoted, commented).
fn key_file(keys: &BTreeMap<String, String>, quoted: bool) -> String {
    keys.iter()
        .map(
            |(k, s)| {
                if quoted { format!("# {k}'s pair\n\"{k}\": '{s}'  # rotated yearly\n") } else { format!("{k}: {s}\n") }
            },
        )
        .collect()
}

#[test]
fn a_quoted_and_commented_key_file_reads_as_the_plain_one() {
    for fixture in fixtures() {
        let plain = KeySet::parse(&key_file(&fixture.keys, false)).expect("fixture keys");
        assert_eq!(KeySet::parse(&key_file(&fixture.keys, true)).expect("quoted keys"), plain, "{}", fixture.name);
    }
}

#[test]
fn every_fixture_gets_its_status() {
    let fixtures = fixtures();
    assert!(fixtures.len() >= 16, "expected the 16 fixtures, found {}", fixtures.len());
    for (n, fixture) in fixtures.into_iter().enumerate() {
        // Every other fixture verified with the keys written as an operator may write them.
        let keys = KeySet::parse(&key_file(&fixture.keys, n % 2 == 1)).expect("fixture keys");
        let authorization = fixture.headers.get("Authorization").map(String::as_bytes);
        let body = Bytes::from(fixture.body.clone());
        let result = webhook::receive(authorization, body, &keys, fixture.verify_at, 0);
        match (fixture.status, result) {
            (200, Ok(event)) => {
                let stored = String::from_utf8(event.payload().to_vec()).expect("UTF-8 payload");
                assert!(!stored.contains("turnPassword"), "{}: turnPassword left in the payload", fixture.name);
                assert!(event.id().starts_with("EV_"), "{}: id {}", fixture.name, event.id());
            }
            (401, Err(ReceiveError::Unauthorized(reason))) => {
                assert_eq!(reason.code(), expected_rejection(&fixture.name), "{}", fixture.name);
            }
            (status, result) => panic!("{}: expected {status}, got {result:?}", fixture.name),
        }
    }
}

#[test]
fn the_accepted_fixtures_are_rejected_once_their_token_has_expired() {
    for fixture in fixtures().into_iter().filter(|f| f.status == 200) {
        let keys = KeySet::parse(&fixture.keys.iter().map(|(k, s)| format!("{k}: {s}\n")).collect::<String>())
            .expect("fixture keys");
        let authorization = fixture.headers.get("Authorization").map(String::as_bytes);
        let too_late = fixture.verify_at + 5 * 60 + 61;
        let result = webhook::verify(authorization, fixture.body.as_bytes(), &keys, too_late);
        assert_eq!(result.map_err(|e| e.code()), Err("token_expired"), "{}", fixture.name);
    }
}
