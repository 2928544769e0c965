//! The real binaries: they start against real NATS and PostgreSQL, become ready, and shut down
//! cleanly on SIGTERM, the gateway only after its in-flight requests were answered.

use std::time::Duration;

use testkit::binaries::Service;
use testkit::livekit::{TEST_KEYS, participant_joined, sign_now};
use testkit::nats::{PrivateNats, free_port, shared_url, unique_stream};
use testkit::postgres::TestDatabase;

async fn wait_ready(http: &reqwest::Client, base_url: &str) {
    testkit::eventually(Duration::from_secs(20), &format!("{base_url}/readyz"), || async {
        let response = http.get(format!("{base_url}/readyz")).send().await.ok()?;
        response.status().is_success().then_some(())
    })
    .await;
}

async fn metric(http: &reqwest::Client, base_url: &str, name: &str) -> Option<f64> {
    let text = http.get(format!("{base_url}/metrics")).send().await.ok()?.text().await.ok()?;
    text.lines().find_map(|line| line.strip_prefix(name)?.trim().parse().ok())
}

#[tokio::test]
async fn worker_and_sweeper_become_ready_and_exit_cleanly_on_sigterm() {
    let http = reqwest::Client::new();
    let database = TestDatabase::create_shared().await;
    let stream = unique_stream();
    for name in ["worker", "sweeper"] {
        let port = free_port();
        let mut service = Service::start(
            name,
            &[
                ("METRICS_ADDR", format!("127.0.0.1:{port}")),
                ("NATS_URL", shared_url()),
                ("DATABASE_URL", database.url.clone()),
                ("WEBHOOK_STREAM", stream.stream.clone()),
                ("WEBHOOK_SUBJECT_PREFIX", stream.subject_prefix.clone()),
                ("WEBHOOK_STREAM_MAX_AGE", "1h".into()),
                ("DLQ_STREAM", format!("{}_DLQ", stream.stream)),
                ("DLQ_SUBJECT_PREFIX", stream.subject_prefix.replace(".webhook", ".dlq")),
                ("CONSUMER_NAME", "e2e-worker".into()),
                ("PRESENCE_STREAM", format!("{}_PRESENCE", stream.stream)),
                ("PRESENCE_SUBJECT_PREFIX", stream.subject_prefix.replace(".webhook", ".presence")),
            ],
        );
        let base_url = format!("http://127.0.0.1:{port}");
        wait_ready(&http, &base_url).await;
        assert_eq!(http.get(format!("{base_url}/healthz")).send().await.unwrap().status(), 200);
        if name == "worker" {
            let metrics = http.get(format!("{base_url}/metrics")).send().await.unwrap().text().await.unwrap();
            // Labelled families (applied by type, retries, dead letters) appear with their first sample.
            for metric in [
                "worker_events_duplicate_total",
                "worker_batch_apply_duration_seconds",
                "worker_consumer_pending_messages",
                "worker_dead_letter_stream_messages",
            ] {
                assert!(metrics.contains(metric), "{metric} missing from {metrics}");
            }
        }

        service.signal("TERM");
        let status = service.wait_exit(Duration::from_secs(10)).await;
        assert!(status.success(), "{name} exited with {status}");
    }
    let js = async_nats::jetstream::new(async_nats::connect(shared_url()).await.unwrap());
    let _ = js.delete_stream(&stream.stream).await;
    let _ = js.delete_stream(&stream.heartbeat_settings().name).await;
    let _ = js.delete_stream(format!("{}_DLQ", stream.stream)).await;
    let _ = js.delete_stream(format!("{}_PRESENCE", stream.stream)).await;
    database.drop_database().await;
}

#[tokio::test]
async fn gateway_answers_its_in_flight_request_before_exiting_on_sigterm() {
    let nats = PrivateNats::start().await;
    let stream = unique_stream();
    let (port, metrics_port) = (free_port(), free_port());
    let mut gateway = Service::start(
        "gateway",
        &[
            ("LISTEN_ADDR", format!("127.0.0.1:{port}")),
            ("METRICS_ADDR", format!("127.0.0.1:{metrics_port}")),
            ("NATS_URL", nats.url()),
            ("WEBHOOK_STREAM", stream.stream.clone()),
            ("WEBHOOK_SUBJECT_PREFIX", stream.subject_prefix.clone()),
            ("LIVEKIT_KEYS", TEST_KEYS.into()),
            ("PUBLISH_TIMEOUT", "20s".into()),
        ],
    );
    let base_url = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    wait_ready(&http, &base_url).await;

    // Hold the request in flight: JetStream cannot acknowledge while NATS is paused.
    nats.signal("STOP");
    let body = participant_joined("EV_inflight", "r", "a");
    let token = sign_now(&body);
    let request = tokio::spawn({
        let (http, url) = (http.clone(), format!("{base_url}/webhooks/livekit"));
        async move { http.post(url).header("Authorization", token).body(body).send().await }
    });
    testkit::eventually(Duration::from_secs(10), "the request to be in flight", || {
        let (http, metrics_url) = (http.clone(), format!("http://127.0.0.1:{metrics_port}"));
        async move {
            let in_flight = metric(&http, &metrics_url, "gateway_webhook_requests_in_flight").await?;
            (in_flight >= 1.0).then_some(())
        }
    })
    .await;

    gateway.signal("TERM");
    // Shutting down: new connections are refused while the in-flight request is still held.
    testkit::eventually(Duration::from_secs(10), "the listener to close", || async {
        tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err().then_some(())
    })
    .await;
    assert!(gateway.is_running(), "the gateway exited with a request in flight");

    nats.signal("CONT");
    let response = request.await.unwrap().expect("the in-flight request is answered");
    assert_eq!(response.status(), 200, "stored, so 200");
    let status = gateway.wait_exit(Duration::from_secs(10)).await;
    assert!(status.success(), "gateway exited with {status}");

    let client = async_nats::connect(nats.url()).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let mut stored = js.get_stream(&stream.stream).await.unwrap();
    assert_eq!(stored.info().await.unwrap().state.messages, 1);
}
