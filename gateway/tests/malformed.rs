//! Malformed requests against the running gateway: each gets its status (with the JSON error
//! shape where the gateway answers), and the good events sent in between are all stored.

mod common;

use std::time::Duration;

use common::{TestGateway, error_code};
use testkit::livekit::{participant_joined, sign_now};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// Sends raw bytes, optionally pausing between chunks, and returns the response's status line
/// and body.
async fn raw(base_url: &str, chunks: &[&[u8]], pause: Duration) -> (u16, String) {
    let address = base_url.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    for chunk in chunks {
        if stream.write_all(chunk).await.is_err() {
            break; // the server may answer (and close) before everything was sent
        }
        tokio::time::sleep(pause).await;
    }
    let mut response = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut response)).await;
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    (status, body)
}

#[tokio::test]
async fn malformed_requests_get_their_status_and_good_events_in_between_are_stored() {
    let gateway = TestGateway::spawn(&testkit::nats::shared_url(), &["--body-timeout=1s"]).await;
    let mut good = 0;
    let mut send_good = async || {
        good += 1;
        let body = participant_joined(&format!("EV_good_{good}"), "r", &format!("p{good}"));
        assert_eq!(gateway.post_webhook(body.clone(), Some(&sign_now(&body))).await.status(), 200);
    };
    let url = format!("{}/webhooks/livekit", gateway.base_url);

    for method in [reqwest::Method::GET, reqwest::Method::PUT, reqwest::Method::DELETE, reqwest::Method::PATCH] {
        let response = gateway.http.request(method.clone(), &url).send().await.unwrap();
        assert_eq!(response.status(), 405, "{method}");
        assert_eq!(error_code(response).await, "method_not_allowed");
    }
    send_good().await;

    // Headers: 8 KB reach the handler (and fail verification); 100 KB and 1 MB are refused by
    // the HTTP layer before any handler runs (HTTP_MAX_HEADER_BYTES, 16 KiB).
    for (size, expected) in [(8_000, 401), (100_000, 431), (1_000_000, 431)] {
        let request = format!(
            "POST /webhooks/livekit HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Padding: {}\r\nContent-Length: 0\r\n\r\n",
            "a".repeat(size)
        );
        let (status, _) = raw(&gateway.base_url, &[request.as_bytes()], Duration::ZERO).await;
        assert_eq!(status, expected, "{size}-byte header");
    }
    send_good().await;

    // A body trickling in slower than the body timeout: 503, which LiveKit retries (a 408 would
    // be final for it, and a slow network is not the event's fault).
    let head = b"POST /webhooks/livekit HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: x.y.z\r\nContent-Length: 40\r\n\r\n";
    let trickle: Vec<&[u8]> =
        std::iter::once(head.as_slice()).chain(std::iter::repeat_n(b"{".as_slice(), 40)).collect();
    let (status, body) = raw(&gateway.base_url, &trickle, Duration::from_millis(100)).await;
    assert_eq!(status, 503);
    assert!(body.contains("\"body_timeout\""), "{body}");
    send_good().await;

    // Invalid UTF-8, signed: authentic, but not an event.
    let bytes = b"{\"event\":\"room_started\",\"id\":\"EV_\xff\xfe\"}".to_vec();
    let response = gateway.post_webhook(bytes.clone(), Some(&sign_now(&bytes))).await;
    assert_eq!(response.status(), 400);
    assert_eq!(error_code(response).await, "invalid_json");
    // Invalid UTF-8 in the Authorization header.
    let invalid_header =
        b"POST /webhooks/livekit HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: \xff\xfe\r\nContent-Length: 2\r\n\r\n{}";
    let (status, body) = raw(&gateway.base_url, &[invalid_header.as_slice()], Duration::ZERO).await;
    assert_eq!(status, 401);
    assert!(body.contains("\"malformed_token\""), "{body}");
    send_good().await;

    // Deeply nested JSON, signed.
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000)).into_bytes();
    let response = gateway.post_webhook(deep.clone(), Some(&sign_now(&deep))).await;
    assert_eq!(response.status(), 400);
    assert_eq!(error_code(response).await, "invalid_json");
    // An empty body and a truncated one.
    for body in [b"".to_vec(), b"{\"event\":\"room_sta".to_vec()] {
        let response = gateway.post_webhook(body.clone(), Some(&sign_now(&body))).await;
        assert_eq!(response.status(), 400);
        assert_eq!(error_code(response).await, "invalid_json");
    }
    send_good().await;

    let stored = gateway.stored_messages().await;
    assert_eq!(stored.len(), good, "every good event, and nothing else");
    gateway.stop().await;
}
