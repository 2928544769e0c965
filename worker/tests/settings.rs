//! Stream and consumer settings across worker starts: the durable consumer follows the
//! configuration, a stream an operator tuned is left as it is, and a stream that cannot work
//! makes the worker not ready, saying why, instead of retrying for ever.

mod common;

use std::time::Duration;

use common::Harness;
use testkit::binaries::Service;
use testkit::postgres::TestDatabase;

/// Starts the worker binary with `changes` over the harness's settings; returns it and its
/// metrics address.
fn start(harness: &Harness, changes: &[(&'static str, &str)]) -> (Service, String) {
    let metrics = format!("127.0.0.1:{}", testkit::nats::free_port());
    let mut env = harness.worker_env(&harness.database.url);
    env.retain(|(name, _)| !changes.iter().any(|(changed, _)| changed == name));
    env.extend(changes.iter().map(|(name, value)| (*name, (*value).to_owned())));
    env.push(("METRICS_ADDR", metrics.clone()));
    (Service::start("worker", &env), format!("http://{metrics}"))
}

/// Waits until `/readyz` answers `status`, and returns its body.
async fn readiness(http: &reqwest::Client, base: &str, status: u16) -> serde_json::Value {
    testkit::eventually(Duration::from_secs(30), &format!("/readyz to answer {status}"), || async {
        let response = http.get(format!("{base}/readyz")).send().await.ok()?;
        if response.status().as_u16() != status {
            return None;
        }
        response.json().await.ok()
    })
    .await
}

async fn stop(mut worker: Service) {
    worker.signal("TERM");
    assert!(worker.wait_exit(Duration::from_secs(20)).await.success(), "the worker exits cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_settings_follow_the_configuration_and_a_tuned_stream_is_left_alone() {
    let harness = Harness::new(&testkit::nats::shared_url(), TestDatabase::create_shared().await).await;
    let http = reqwest::Client::new();
    let consumer_name = format!("worker-{}", harness.suffix);

    // An operator tuned the stream (`nats stream edit`): a longer retention than configured.
    let mut stream = harness.jetstream.get_stream(harness.stream_name()).await.unwrap();
    let mut tuned = stream.info().await.unwrap().config.clone();
    tuned.max_age = Duration::from_secs(2 * 3600);
    harness.jetstream.update_stream(&tuned).await.unwrap();

    let (first, metrics) = start(&harness, &[("CONSUMER_ACK_WAIT", "5s"), ("MAX_DELIVER", "5")]);
    readiness(&http, &metrics, 200).await;
    let config = stream.consumer_info(&consumer_name).await.unwrap().config.clone();
    assert_eq!((config.ack_wait, config.max_deliver), (Duration::from_secs(5), 5 + 3));
    stop(first).await;

    let (second, metrics) = start(&harness, &[("CONSUMER_ACK_WAIT", "9s"), ("MAX_DELIVER", "7")]);
    readiness(&http, &metrics, 200).await;
    let config = stream.consumer_info(&consumer_name).await.unwrap().config.clone();
    assert_eq!((config.ack_wait, config.max_deliver), (Duration::from_secs(9), 7 + 3), "the second start's settings");
    let kept = stream.info().await.unwrap().config.clone();
    assert_eq!(kept.max_age, Duration::from_secs(2 * 3600), "the operator's retention, not the configured 1 h");
    stop(second).await;

    // A stream that no longer takes the configured subjects cannot work: not ready, and why.
    let mut moved = kept.clone();
    moved.subjects = vec![format!("elsewhere{}.>", harness.suffix)];
    harness.jetstream.update_stream(&moved).await.unwrap();
    let (third, metrics) = start(&harness, &[]);
    // Not ready while it starts ("not consuming yet"), then for the reason that stays.
    let message = testkit::eventually(Duration::from_secs(30), "readiness to name the stream set-up", || async {
        let body = readiness(&http, &metrics, 503).await;
        let message = body["message"].as_str().unwrap_or_default().to_owned();
        message.contains("stream set-up").then_some(message)
    })
    .await;
    assert!(message.contains(&harness.subject_prefix()), "{message}");
    // It stays not ready (no retry loop turns it green by accident), and still stops cleanly.
    tokio::time::sleep(Duration::from_secs(2)).await;
    readiness(&http, &metrics, 503).await;
    stop(third).await;
    harness.cleanup().await;
}
