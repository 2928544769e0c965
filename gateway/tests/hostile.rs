//! Hostile traffic against the gateway: connections that never finish their headers, bodies
//! meant to exhaust memory, identifiers meant to break headers or storage. Each is bounded or
//! refused while the signed webhooks sent at the same time are all stored.

mod common;

use std::time::{Duration, Instant};

use common::{TestGateway, error_code};
use testkit::livekit::{participant_joined, participant_token, sign_now};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// Posts a signed webhook to the gateway at `base_url` until it is stored, as LiveKit's sender
/// retries a 5xx; anything but 200 or 503 fails the test.
async fn store_with_retries(http: &reqwest::Client, base_url: &str, body: Vec<u8>) {
    let token = sign_now(&body);
    for _ in 0..100 {
        let response = http
            .post(format!("{base_url}/webhooks/livekit"))
            .header("Authorization", &token)
            .body(body.clone())
            .send()
            .await
            .expect("an answer");
        match response.status().as_u16() {
            200 => return,
            503 => tokio::time::sleep(Duration::from_millis(100)).await,
            other => panic!("a signed webhook got {other}"),
        }
    }
    panic!("a signed webhook was never stored");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_that_never_finish_their_headers_are_closed_and_webhooks_still_stored() {
    let gateway =
        TestGateway::spawn(&testkit::nats::shared_url(), &["--http-header-timeout=1s", "--http-max-connections=64"])
            .await;
    let address = gateway.base_url.trim_start_matches("http://").to_owned();
    let opened = Instant::now();
    let mut slow = Vec::new();
    for _ in 0..200 {
        let mut stream = tokio::net::TcpStream::connect(&address).await.unwrap();
        stream.write_all(b"POST /webhooks/livekit HTTP/1.1\r\nHost: x\r\n").await.unwrap();
        slow.push(stream);
    }
    // Meanwhile, LiveKit's webhooks: each is stored (once a slot frees, past the slow ones).
    let webhooks = futures::future::join_all((0..20).map(|n| {
        let body = participant_joined(&format!("EV_amid_slow_{n}"), "r", &format!("p{n}"));
        store_with_retries(&gateway.http, &gateway.base_url, body)
    }));
    // Every slow connection is closed by the server: 200 of them, 64 at a time, 1 s each.
    let closed = futures::future::join_all(slow.into_iter().map(|mut stream| async move {
        let mut buffer = [0u8; 256];
        loop {
            match tokio::time::timeout(Duration::from_secs(15), stream.read(&mut buffer)).await {
                Ok(Ok(0) | Err(_)) => return true,
                Ok(Ok(_)) => continue,
                Err(_elapsed) => return false,
            }
        }
    }));
    let (_, closed) = tokio::join!(webhooks, closed);
    assert!(closed.iter().all(|c| *c), "{} of 200 slow connections still open", closed.iter().filter(|c| !**c).count());
    assert!(opened.elapsed() < Duration::from_secs(12), "closed in {:?}", opened.elapsed());
    assert_eq!(gateway.stored_messages().await.len(), 20);
    gateway.stop().await;
}

/// The peak resident memory of a process, from /proc.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_large_bodies_at_once_stay_within_the_memory_budget() {
    let stream = testkit::nats::unique_stream();
    let (port, metrics_port) = (testkit::nats::free_port(), testkit::nats::free_port());
    const BUDGET: usize = 8 * 1024 * 1024;
    let mut gateway = testkit::binaries::Service::start(
        "gateway",
        &[
            ("LISTEN_ADDR", format!("127.0.0.1:{port}")),
            ("METRICS_ADDR", format!("127.0.0.1:{metrics_port}")),
            ("NATS_URL", testkit::nats::shared_url()),
            ("WEBHOOK_STREAM", stream.stream.clone()),
            ("WEBHOOK_SUBJECT_PREFIX", stream.subject_prefix.clone()),
            ("WEBHOOK_STREAM_MAX_AGE", "1h".into()),
            ("LIVEKIT_KEYS", testkit::livekit::TEST_KEYS.into()),
            ("WEBHOOK_BODY_MEMORY", BUDGET.to_string()),
            ("RUST_LOG", "error".into()),
        ],
    );
    let base_url = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    testkit::eventually(Duration::from_secs(20), "the gateway to be ready", || async {
        let response = http.get(format!("{base_url}/readyz")).send().await.ok()?;
        response.status().is_success().then_some(())
    })
    .await;
    let before = peak_rss_kib(gateway.pid());

    // 300 requests at once, each announcing and sending a 1 MB body (the limit): 300 MB if
    // buffered whole.
    static BODY: [u8; 1_000_000] = [b' '; 1_000_000];
    let address = format!("127.0.0.1:{port}");
    let big = futures::future::join_all((0..300).map(|_| {
        let address = address.clone();
        async move {
            let mut connection = tokio::net::TcpStream::connect(&address).await.unwrap();
            let head = "POST /webhooks/livekit HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: x.y.z\r\nContent-Length: 1000000\r\n\r\n";
            let _ = connection.write_all(head.as_bytes()).await;
            let _ = connection.write_all(&BODY).await;
            let mut answer = Vec::new();
            let _ = tokio::time::timeout(Duration::from_secs(30), connection.read_to_end(&mut answer)).await;
            String::from_utf8_lossy(&answer).split_whitespace().nth(1).and_then(|s| s.parse::<u16>().ok())
        }
    }));
    let good = async {
        for n in 0..10 {
            store_with_retries(
                &http,
                &base_url,
                participant_joined(&format!("EV_amid_big_{n}"), "r", &format!("p{n}")),
            )
            .await;
        }
    };
    let (statuses, ()) = tokio::join!(big, good);
    // 401 once read (the token is bogus), 503 when the budget was spent; none is stored. (An
    // answer may be lost to the reset of a connection whose body was not read: None.)
    assert!(statuses.iter().all(|s| matches!(s, None | Some(401 | 503))), "{statuses:?}");
    let growth_mib = (peak_rss_kib(gateway.pid()).saturating_sub(before)) / 1024;
    // The budget, plus hyper's buffers for 300 connections and the allocator's slack.
    assert!(growth_mib < 64, "peak RSS grew by {growth_mib} MiB for a body budget of 8 MiB");
    let metrics_url = format!("http://127.0.0.1:{metrics_port}/metrics");
    let metrics = http.get(metrics_url).send().await.unwrap().text().await.unwrap();
    let overloaded: u64 = metrics
        .lines()
        .find(|line| line.starts_with("gateway_webhook_requests_total{outcome=\"overloaded\"}"))
        .and_then(|line| line.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0);
    assert!(overloaded > 0, "some found the budget spent and got 503 at once");

    gateway.signal("TERM");
    gateway.wait_exit(Duration::from_secs(20)).await;
    let client = async_nats::connect(testkit::nats::shared_url()).await.unwrap();
    let jetstream = async_nats::jetstream::new(client);
    let info = jetstream.get_stream(&stream.stream).await.unwrap().info().await.unwrap().clone();
    assert_eq!(info.state.messages, 10, "every good webhook stored once");
    let _ = jetstream.delete_stream(&stream.stream).await;
    let _ = jetstream.delete_stream(&stream.heartbeat_settings().name).await;
}

#[tokio::test]
async fn identifiers_that_cannot_be_stored_or_sent_are_refused_with_their_code() {
    let gateway = TestGateway::spawn(&testkit::nats::shared_url(), &[]).await;
    let event = |id: &str, room: &str, identity: &str| {
        serde_json::to_vec(&serde_json::json!({
            "event": "participant_joined", "id": id, "createdAt": "1790000000",
            "room": {"sid": "RM_x", "name": room},
            "participant": {"sid": "PA_x", "identity": identity},
        }))
        .unwrap()
    };
    let long = "r".repeat(513);
    let cases = [
        (event("EV_a\r\nX-Injected: 1", "r", "ada"), "invalid_event_id"),
        (event("EV_b", "r", "ada\0"), "invalid_identity"),
        (event("EV_c", &long, "ada"), "invalid_room_name"),
        (event("EV_d", "r\n", "ada"), "invalid_room_name"),
    ];
    for (body, code) in cases {
        let response = gateway.post_webhook(body.clone(), Some(&sign_now(&body))).await;
        assert_eq!(response.status(), 400, "{code}");
        assert_eq!(error_code(response).await, code);
    }
    // Unicode and punctuation are names like any other.
    let fine = event("EV_fine", "Cours d'algèbre, 7b", "名前 \"ada\"");
    assert_eq!(gateway.post_webhook(fine.clone(), Some(&sign_now(&fine))).await.status(), 200);

    // A heartbeat token is authentic, but what it names still has to fit.
    for (identity, room, code) in [("ada\r\nx", "r", "invalid_identity"), ("ada", "r\0", "invalid_room_name")] {
        let response = gateway
            .http
            .post(format!("{}/v1/heartbeats", gateway.base_url))
            .bearer_auth(participant_token(identity, room))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{code}");
        assert_eq!(error_code(response).await, code);
    }
    for (path, code) in [
        ("/v1/rooms/r%00/attendance", "invalid_room_name"),
        ("/v1/rooms/r/attendance/a%0Db", "invalid_identity"),
        ("/v1/rooms/r%0A/presence", "invalid_room_name"),
    ] {
        let response = gateway.http.get(format!("{}{path}", gateway.base_url)).send().await.unwrap();
        assert_eq!(response.status(), 400, "{path}");
        assert_eq!(error_code(response).await, code, "{path}");
    }
    assert_eq!(gateway.stored_messages().await.len(), 1, "only the good event");
    gateway.stop().await;
}

#[tokio::test]
async fn a_full_heartbeat_stream_refuses_heartbeats_and_never_webhooks() {
    // Room for a few heartbeats only.
    let gateway = TestGateway::spawn(&testkit::nats::shared_url(), &["--heartbeat-stream-max-bytes=2000"]).await;
    let mut statuses = Vec::new();
    for n in 0..20 {
        let response = gateway
            .http
            .post(format!("{}/v1/heartbeats", gateway.base_url))
            .bearer_auth(participant_token(&format!("student-{n}"), "algebra"))
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        if status == 503 {
            assert_eq!(response.headers().get("retry-after").map(|v| v.to_str().unwrap()), Some("1"));
            assert_eq!(error_code(response).await, "unavailable");
        }
        statuses.push(status);
    }
    assert!(statuses.iter().all(|s| *s == 202 || *s == 503), "{statuses:?}");
    let (accepted, refused) =
        (statuses.iter().filter(|s| **s == 202).count(), statuses.iter().filter(|s| **s == 503).count());
    assert!(accepted >= 1 && refused >= 10, "the stream filled up: {statuses:?}");
    // Webhooks have a stream of their own: still stored.
    for n in 0..10 {
        let body = participant_joined(&format!("EV_heartbeats_full_{n}"), "algebra", &format!("student-{n}"));
        assert_eq!(gateway.post_webhook(body.clone(), Some(&sign_now(&body))).await.status(), 200);
    }
    assert_eq!(gateway.stored_messages().await.len(), 10, "only the webhooks are in the webhook stream");
    gateway.stop().await;
}
