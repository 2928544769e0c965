//! The browser heartbeat example (`examples/browser/heartbeat.js`) in a real headless Chromium,
//! from a page on another origin than the gateway's: with the origin allowed
//! (`CORS_ALLOWED_ORIGINS`), its heartbeats are stored, an expired token included (the example
//! asks for a fresh one); with the origin not allowed, the browser blocks them.

mod common;

use std::time::Duration;

use axum::response::Html;
use common::TestGateway;
use serde_json::Value;
use testkit::browser::Browser;
use testkit::livekit::{access_token, participant_token};

const EXAMPLE: &str = include_str!("../../examples/browser/heartbeat.js");

/// Serves one page on a port of its own (another origin than the gateway's); returns its origin.
async fn serve_page(page: String) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
    let app = axum::Router::new().route("/", axum::routing::get(move || async move { Html(page) }));
    tokio::spawn(async move { axum::serve(listener, app).await });
    origin
}

/// The page: the example, started with an expired token first, then a fresh one.
fn page(gateway: &str) -> String {
    let grant = shared::livekit::VideoGrant { room: Some("algebra".into()), room_join: true, ..Default::default() };
    let expired = access_token(Some("ada"), grant, -600);
    let fresh = participant_token("ada", "algebra");
    format!(
        r#"<!doctype html><html><body><script>{EXAMPLE}</script><script>
window.results = [];
window.tokensAsked = 0;
const tokens = ["{expired}", "{fresh}"];
startAttendanceHeartbeats({{
  gateway: "{gateway}",
  getToken: async () => tokens[Math.min(window.tokensAsked++, 1)],
  intervalMs: 300,
  onResult: result => window.results.push(result),
}});
</script></body></html>"#
    )
}

async fn first_result(browser: &Browser) -> Value {
    testkit::eventually(Duration::from_secs(15), "the page's first heartbeat answer", || async {
        let results = browser.eval("return window.results || []").await;
        results.as_array().and_then(|r| r.first().cloned())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn heartbeats_from_an_allowed_origin_are_stored_and_from_another_blocked() {
    let browser = Browser::start().await;

    // Allowed: the page's origin is in CORS_ALLOWED_ORIGINS.
    let allowed_page_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let allowed_origin = format!("http://127.0.0.1:{}", allowed_page_listener.local_addr().unwrap().port());
    let gateway = TestGateway::spawn(
        &testkit::nats::shared_url(),
        &[&format!("--cors-allowed-origins={allowed_origin}"), "--heartbeat-burst=3", "--heartbeat-min-interval=1h"],
    )
    .await;
    let app = axum::Router::new().route("/", axum::routing::get(Html(page(&gateway.base_url))));
    tokio::spawn(async move { axum::serve(allowed_page_listener, app).await });
    browser.goto(&format!("{allowed_origin}/")).await;
    assert_eq!(first_result(&browser).await, serde_json::json!({"status": 202}), "stored after a token refresh");
    assert_eq!(browser.eval("return window.tokensAsked").await, 2, "the expired token was replaced");
    // The burst (3) spent, the page's later beats are refused (429) and nothing more is stored.
    testkit::eventually(Duration::from_secs(15), "the burst spent", || async {
        let results = browser.eval("return window.results.map(r => r.status)").await;
        results.as_array().is_some_and(|r| r.iter().any(|s| s == 429)).then_some(())
    })
    .await;
    let stored_before = gateway.stored_heartbeats().await.len();
    assert_eq!(stored_before, 3);

    // Not allowed: another origin's page cannot send them (the browser stops the preflight).
    let other_origin = serve_page(page(&gateway.base_url)).await;
    browser.goto(&format!("{other_origin}/")).await;
    let blocked = first_result(&browser).await;
    assert!(blocked["error"].as_str().is_some_and(|e| e.contains("Failed to fetch")), "{blocked}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(gateway.stored_heartbeats().await.len(), stored_before, "nothing stored from the other origin");
    gateway.stop().await;
}
