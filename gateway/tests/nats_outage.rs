//! With NATS unreachable, the gateway answers 503 (so LiveKit retries) and never 2xx; the same
//! request succeeds once NATS is back, and is stored once. Uses a private nats-server.

mod common;

use std::time::Duration;

use common::{TestGateway, error_code};
use testkit::livekit::{participant_joined, sign_now};
use testkit::nats::PrivateNats;

#[tokio::test]
async fn nats_down_gives_503_and_the_retry_is_stored_once_nats_is_back() {
    let mut nats = PrivateNats::start().await;
    let gateway = TestGateway::spawn(&nats.url(), &["--publish-timeout=500ms"]).await;
    let body = participant_joined("EV_outage", "r", "a");
    let token = sign_now(&body);

    nats.kill();
    let response = gateway.post_webhook(body.clone(), Some(&token)).await;
    assert_eq!(response.status(), 503);
    // No Retry-After: LiveKit's sender would take it as its wait and give up sooner.
    assert_eq!(response.headers().get("retry-after"), None);
    assert_eq!(error_code(response).await, "unavailable");
    let ready = gateway.http.get(format!("{}/readyz", gateway.base_url)).send().await.unwrap();
    assert_eq!(ready.status(), 503);

    nats.restart().await;
    // LiveKit's retry: the same bytes and token, until one is acknowledged.
    testkit::eventually(Duration::from_secs(30), "a 200 once NATS is back", || async {
        let status = gateway.post_webhook(body.clone(), Some(&token)).await.status();
        assert!(status == 200 || status == 503, "unexpected status {status}");
        (status == 200).then_some(())
    })
    .await;

    gateway.wait_ready().await;
    let stored = gateway.stored_messages().await;
    assert_eq!(stored.len(), 1, "stored exactly once");
    assert_eq!(stored[0].headers.get("Nats-Msg-Id").map(|v| v.as_str()), Some("EV_outage"));
    gateway.stop().await;
}

#[tokio::test]
async fn a_gateway_started_while_nats_is_down_is_not_ready_and_recovers() {
    let mut nats = PrivateNats::start().await;
    nats.kill();
    let stream = testkit::nats::unique_stream();
    let config = <gateway::GatewayConfig as clap::Parser>::try_parse_from([
        "gateway".to_owned(),
        "--listen-addr=127.0.0.1:0".into(),
        "--metrics-addr=127.0.0.1:0".into(),
        format!("--nats-url={}", nats.url()),
        format!("--webhook-stream={}", stream.stream),
        format!("--webhook-subject-prefix={}", stream.subject_prefix),
        format!("--livekit-keys={}", testkit::livekit::TEST_KEYS),
    ])
    .unwrap();
    let app = gateway::Application::build(config).await.expect("starts without NATS");
    let base_url = format!("http://{}", app.local_addr());
    let shutdown = tokio_util::sync::CancellationToken::new();
    let server = tokio::spawn(app.run(shutdown.clone()));
    let http = reqwest::Client::new();

    assert_eq!(http.get(format!("{base_url}/healthz")).send().await.unwrap().status(), 200);
    assert_eq!(http.get(format!("{base_url}/readyz")).send().await.unwrap().status(), 503);
    let body = participant_joined("EV_early", "r", "a");
    let post = || {
        http.post(format!("{base_url}/webhooks/livekit")).header("Authorization", sign_now(&body)).body(body.clone())
    };
    assert_eq!(post().send().await.unwrap().status(), 503);

    nats.restart().await;
    testkit::eventually(Duration::from_secs(30), "readiness once NATS is up", || async {
        let status = http.get(format!("{base_url}/readyz")).send().await.ok()?.status();
        status.is_success().then_some(())
    })
    .await;
    assert_eq!(post().send().await.unwrap().status(), 200);

    shutdown.cancel();
    server.await.unwrap().unwrap();
}
