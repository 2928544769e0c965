//! The webhook endpoint over HTTP, against a real NATS with JetStream.

mod common;

use common::{TestGateway, error_code};
use testkit::livekit::{participant_joined, sign_now, test_keys, webhook_token};
use testkit::nats::shared_url;

#[tokio::test]
async fn an_event_posted_three_times_is_stored_once_without_its_turn_password() {
    let gateway = TestGateway::spawn(&shared_url(), &[]).await;
    let body = participant_joined("EV_thrice", "algebra", "student-42");
    let token = sign_now(&body);

    let mut answers = Vec::new();
    for _ in 0..3 {
        let response = gateway.post_webhook(body.clone(), Some(&token)).await;
        assert_eq!(response.status(), 200);
        answers.push(response.json::<serde_json::Value>().await.expect("JSON answer"));
    }

    assert_eq!(
        answers.iter().map(|a| a["duplicate"].as_bool()).collect::<Vec<_>>(),
        [Some(false), Some(true), Some(true)]
    );
    let stored = gateway.stored_messages().await;
    assert_eq!(stored.len(), 1, "exactly one copy in the stream");
    let message = &stored[0];
    assert_eq!(message.subject.as_str(), format!("{}.participant_joined", gateway.stream.subject_prefix));
    assert_eq!(message.headers.get("Nats-Msg-Id").map(|v| v.as_str()), Some("EV_thrice"));
    let traceparent = message.headers.get("traceparent").map(|v| v.as_str().to_owned()).unwrap_or_default();
    let parts: Vec<&str> = traceparent.split('-').collect();
    assert_eq!(parts.iter().map(|p| p.len()).collect::<Vec<_>>(), [2, 32, 16, 2], "W3C traceparent: {traceparent}");
    assert!(
        message
            .headers
            .get(shared::nats::webhooks::RECEIVED_AT_MS_HEADER)
            .is_some_and(|v| v.as_str().parse::<i64>().is_ok())
    );
    let payload: serde_json::Value = serde_json::from_slice(&message.payload).expect("stored JSON");
    assert_eq!(payload["room"]["name"], "algebra");
    assert_eq!(payload["participant"]["identity"], "student-42");
    assert!(payload["room"].get("turnPassword").is_none(), "turnPassword was stored: {payload}");
    assert!(!String::from_utf8_lossy(&message.payload).contains("turn-secret"));
    gateway.stop().await;
}

#[tokio::test]
async fn events_signed_with_either_key_and_a_bearer_prefix_are_accepted() {
    let gateway = TestGateway::spawn(&shared_url(), &[]).await;
    let now = shared::domain::time::now_unix_ms() / 1000;
    let first = participant_joined("EV_alpha", "r", "a");
    let second = participant_joined("EV_bravo", "r", "b");
    let bearer = format!("Bearer {}", webhook_token(&test_keys(), "APItestAlpha", &first, now));
    let rotated = webhook_token(&test_keys(), "APItestBravo", &second, now);

    assert_eq!(gateway.post_webhook(first, Some(&bearer)).await.status(), 200);
    assert_eq!(gateway.post_webhook(second, Some(&rotated)).await.status(), 200);
    assert_eq!(gateway.stored_messages().await.len(), 2);
    gateway.stop().await;
}

#[tokio::test]
async fn requests_that_fail_verification_get_401_with_a_reason_and_are_not_stored() {
    let gateway = TestGateway::spawn(&shared_url(), &[]).await;
    let body = participant_joined("EV_refused", "r", "a");
    let now = shared::domain::time::now_unix_ms() / 1000;
    let stranger = shared::livekit::KeySet::parse("APItestAlpha: another-secret-entirely-0123456789abcdef").unwrap();
    let mut tampered = body.clone();
    tampered[10] ^= 1;

    let cases: Vec<(&str, Vec<u8>, Option<String>)> = vec![
        ("missing_authorization", body.clone(), None),
        ("malformed_token", body.clone(), Some("not-a-jwt".into())),
        ("invalid_signature", body.clone(), Some(webhook_token(&stranger, "APItestAlpha", &body, now))),
        ("token_expired", body.clone(), Some(webhook_token(&test_keys(), "APItestAlpha", &body, now - 10 * 60))),
        ("token_not_yet_valid", body.clone(), Some(webhook_token(&test_keys(), "APItestAlpha", &body, now + 10 * 60))),
        ("body_hash_mismatch", tampered, Some(sign_now(&body))),
    ];
    for (expected, body, authorization) in cases {
        let response = gateway.post_webhook(body, authorization.as_deref()).await;
        assert_eq!(response.status(), 401, "{expected}");
        assert_eq!(error_code(response).await, expected);
    }
    assert!(gateway.stored_messages().await.is_empty());

    let metrics =
        gateway.http.get(format!("{}/metrics", gateway.metrics_url)).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains(r#"gateway_webhook_verification_failures_total{reason="token_expired"} 1"#), "{metrics}");
    assert!(metrics.contains(r#"gateway_webhook_requests_total{outcome="body_hash_mismatch"} 1"#), "{metrics}");
    gateway.stop().await;
}

#[tokio::test]
async fn verified_bodies_that_are_not_events_get_400() {
    let gateway = TestGateway::spawn(&shared_url(), &[]).await;
    let cases: [(&str, &[u8]); 4] = [
        ("invalid_json", b"this is not JSON"),
        ("invalid_json", b"[\"an array\"]"),
        ("missing_event_type", br#"{"id":"EV_x"}"#),
        ("missing_event_id", br#"{"event":"room_started"}"#),
    ];
    for (expected, body) in cases {
        let response = gateway.post_webhook(body.to_vec(), Some(&sign_now(body))).await;
        assert_eq!(response.status(), 400, "{expected}");
        assert_eq!(error_code(response).await, expected);
    }
    assert!(gateway.stored_messages().await.is_empty());
    gateway.stop().await;
}

#[tokio::test]
async fn bodies_over_the_limit_get_413() {
    let gateway = TestGateway::spawn(&shared_url(), &["--body-limit=2048"]).await;
    let mut event = serde_json::json!({"event": "room_started", "id": "EV_big", "padding": ""});
    event["padding"] = "x".repeat(4096).into();
    let body = serde_json::to_vec(&event).unwrap();

    let response = gateway.post_webhook(body.clone(), Some(&sign_now(&body))).await;
    assert_eq!(response.status(), 413);
    assert_eq!(error_code(response).await, "payload_too_large");

    let small = participant_joined("EV_small", "r", "a");
    assert!(small.len() < 2048);
    assert_eq!(gateway.post_webhook(small.clone(), Some(&sign_now(&small))).await.status(), 200);
    gateway.stop().await;
}

#[tokio::test]
async fn unknown_routes_and_methods_get_json_errors_and_probes_answer() {
    let gateway = TestGateway::spawn(&shared_url(), &[]).await;
    let url = |path: &str| format!("{}{path}", gateway.base_url);

    let response = gateway.http.get(url("/nowhere")).send().await.unwrap();
    assert_eq!(response.status(), 404);
    assert_eq!(error_code(response).await, "not_found");
    let response = gateway.http.get(url("/webhooks/livekit")).send().await.unwrap();
    assert_eq!(response.status(), 405);
    assert_eq!(error_code(response).await, "method_not_allowed");

    assert_eq!(gateway.http.get(url("/healthz")).send().await.unwrap().status(), 200);
    assert_eq!(gateway.http.get(url("/readyz")).send().await.unwrap().status(), 200);
    // The metrics are on the metrics address only; the probes answer on both.
    assert_eq!(gateway.http.get(url("/metrics")).send().await.unwrap().status(), 404);
    let metrics_url = |path: &str| format!("{}{path}", gateway.metrics_url);
    let metrics = gateway.http.get(metrics_url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("gateway_jetstream_publish_duration_seconds"), "{metrics}");
    assert_eq!(gateway.http.get(metrics_url("/readyz")).send().await.unwrap().status(), 200);
    gateway.stop().await;
}
