//! Heartbeats travel in a stream of their own. After a backlog (workers down, then back), the
//! heartbeat consumer must not race ahead of the webhook consumer: a heartbeat applied before
//! the join it follows would find no meeting and be lost. Each must count in its meeting.

mod common;

use std::time::Duration;

use async_nats::jetstream;
use common::Harness;
use shared::domain::heartbeat::Heartbeat;
use shared::nats::webhooks::{RECEIVED_AT_MS_HEADER, WebhookStream};
use testkit::postgres::TestDatabase;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn heartbeats_after_a_backlog_of_webhooks_count_in_their_meetings() {
    let harness = Harness::new(&testkit::nats::shared_url(), TestDatabase::create_shared().await).await;
    let (rooms, participants) = (40, 20);
    let start_ms = shared::domain::time::now_unix_ms() - 10 * 60_000;

    // The backlog: every join in the webhook stream, every heartbeat (5 s after its join) in
    // the heartbeat stream, before any worker runs.
    let mut acks = Vec::new();
    for r in 0..rooms {
        for p in 0..participants {
            let joined_ms = start_ms + (r * participants + p) as i64 * 100;
            let body = serde_json::json!({
                "event": "participant_joined", "id": format!("EV_{r}_{p}"), "createdAt": (joined_ms / 1000).to_string(),
                "room": {"sid": format!("RM_order_{r}"), "name": format!("room-{r}")},
                "participant": {"sid": format!("PA_{r}_{p}"), "identity": format!("user-{p}"), "joinedAtMs": joined_ms.to_string()},
            });
            let mut headers = async_nats::HeaderMap::new();
            headers.insert(RECEIVED_AT_MS_HEADER, joined_ms.to_string().as_str());
            let message = jetstream::message::PublishMessage::build()
                .payload(serde_json::to_vec(&body).unwrap().into())
                .headers(headers)
                .message_id(format!("EV_{r}_{p}").as_str());
            let subject = format!("{}.participant_joined", harness.subject_prefix());
            acks.push(harness.jetstream.send_publish(subject, message).await.unwrap());
        }
    }
    for ack in acks {
        ack.await.unwrap();
    }
    let stream = WebhookStream::new(harness.jetstream.client(), &harness.stream_args());
    for r in 0..rooms {
        for p in 0..participants {
            let joined_ms = start_ms + (r * participants + p) as i64 * 100;
            let heartbeat = Heartbeat::new(format!("room-{r}"), format!("user-{p}"), joined_ms + 5_000);
            stream.publish_heartbeat(&heartbeat, Duration::from_secs(5)).await.unwrap();
        }
    }

    let worker = harness.spawn_worker().await;
    harness.wait_drained(Duration::from_secs(120)).await;
    let recorded = testkit::eventually(Duration::from_secs(60), "every heartbeat applied", || async {
        let pool = harness.database.pool().await;
        let count: i64 = sqlx::query_scalar("SELECT count(*) FROM meeting_heartbeats").fetch_one(&pool).await.ok()?;
        let heartbeats = harness.jetstream.get_stream(stream.heartbeat_settings().name.clone()).await.ok()?;
        let info = heartbeats.consumer_info(format!("worker-{}-heartbeats", harness.suffix)).await.ok()?;
        (info.num_pending == 0 && info.num_ack_pending == 0).then_some(count)
    })
    .await;
    assert_eq!(recorded, (rooms * participants) as i64, "every heartbeat counted in its participant's meeting");
    worker.stop().await;
    harness.cleanup().await;
}
