//! The workers' ceiling (`loadgen ceiling-workers`), on the shared NATS and a fresh database: it
//! writes the row of every event of both streams once, acknowledges each, and a second pass over
//! the same events (another consumer) changes nothing: a correct write, as the workers' is.

use std::time::Duration;

use clap::Parser as _;
use loadgen::ceiling::serve_workers_ceiling;
use shared::domain::heartbeat::Heartbeat;
use shared::domain::time::now_unix_ms;
use shared::livekit::webhook;
use shared::nats::NatsArgs;
use shared::nats::webhooks::WebhookStream;
use testkit::livekit::{participant_joined, sign_now, test_keys};
use testkit::postgres::TestDatabase;
use tokio_util::sync::CancellationToken;

#[derive(clap::Parser)]
struct Cli {
    #[command(flatten)]
    args: worker::config::WorkerConfig,
}

const EVENTS: usize = 250;
const HEARTBEATS: usize = 30;

#[tokio::test]
async fn the_workers_ceiling_writes_each_event_row_once_and_acknowledges_it() {
    let stream_args = testkit::nats::unique_stream();
    let database = TestDatabase::create_shared().await;
    let (client, _) = NatsArgs::for_url(testkit::nats::shared_url()).connect("test-ceiling").await.unwrap();
    let stream = WebhookStream::new(client.clone(), &stream_args);
    stream.ensure().await.unwrap();
    let keys = test_keys();
    for n in 0..EVENTS {
        let body = participant_joined(&format!("EV_ceiling{n}"), "algebra", &format!("student-{n}"));
        let now_ms = now_unix_ms();
        let token = sign_now(&body);
        let event = webhook::receive(Some(token.as_bytes()), body.into(), &keys, now_ms / 1000, now_ms).unwrap();
        stream.publish(&event, Duration::from_secs(5)).await.unwrap();
    }
    for n in 0..HEARTBEATS {
        let heartbeat = Heartbeat {
            id: format!("HB_ceiling{n}"),
            room_name: "algebra".into(),
            identity: format!("student-{n}"),
            received_at_ms: now_unix_ms(),
        };
        stream.publish_heartbeat(&heartbeat, Duration::from_secs(5)).await.unwrap();
    }

    let pool = database.pool().await;
    for consumer in ["ceiling-first", "ceiling-again"] {
        let mut args = Cli::try_parse_from([
            "ceiling-workers",
            "--consumer-name",
            consumer,
            "--batch-size",
            "40",
            "--nats-url",
            &testkit::nats::shared_url(),
            "--database-url",
            &database.url,
        ])
        .unwrap()
        .args;
        args.stream = stream_args.clone();
        let shutdown = CancellationToken::new();
        let ceiling = tokio::spawn(serve_workers_ceiling(args, shutdown.clone()));
        let js = async_nats::jetstream::new(client.clone());
        let heartbeat_stream = shared::nats::settings::default_heartbeat_stream(&stream_args.stream);
        let consumers = [
            (stream_args.stream.clone(), consumer.to_owned(), EVENTS),
            (heartbeat_stream, shared::nats::settings::heartbeat_consumer(consumer), HEARTBEATS),
        ];
        testkit::eventually(Duration::from_secs(30), "every message acknowledged", || async {
            for (stream, consumer, count) in &consumers {
                let info = js.get_stream(stream).await.ok()?.consumer_info(consumer).await.ok()?;
                let acknowledged = info.ack_floor.stream_sequence == *count as u64 && info.num_ack_pending == 0;
                acknowledged.then_some(())?;
            }
            Some(())
        })
        .await;
        shutdown.cancel();
        ceiling.await.unwrap().expect("the ceiling stops cleanly");

        let (rows, ids, heartbeats): (i64, i64, i64) = sqlx::query_as(
            "SELECT count(*), count(DISTINCT event_id), count(*) FILTER (WHERE event_type = 'client_heartbeat')
             FROM webhook_events",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        assert_eq!((rows, ids, heartbeats), ((EVENTS + HEARTBEATS) as i64, (EVENTS + HEARTBEATS) as i64, 30));
        let redacted: bool =
            sqlx::query_scalar("SELECT bool_and(payload -> 'room' ? 'turnPassword' IS NOT TRUE) FROM webhook_events")
                .fetch_one(&pool)
                .await
                .unwrap();
        assert!(redacted, "a stored payload holds the TURN secret");
    }
    pool.close().await;
    database.drop_database().await;
}
