//! Workers running in-process against a real NATS (unique stream, consumer and dead-letter
//! stream per test) and a fresh PostgreSQL database.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::time::Duration;

use async_nats::jetstream;
use clap::Parser as _;
use shared::domain::attendance::Attendance;
use testkit::postgres::TestDatabase;
use testkit::workload::Event;
use tokio_util::sync::CancellationToken;

#[derive(clap::Parser)]
struct Args {
    #[command(flatten)]
    config: worker::WorkerConfig,
}

pub struct Harness {
    pub nats_url: String,
    pub suffix: String,
    pub database: TestDatabase,
    pub jetstream: jetstream::Context,
}

pub struct RunningWorker {
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl RunningWorker {
    pub async fn stop(self) {
        self.shutdown.cancel();
        self.task.await.expect("worker task").expect("worker stops cleanly");
    }
}

impl Harness {
    pub async fn new(nats_url: &str, database: TestDatabase) -> Self {
        let _telemetry = shared::runtime::telemetry::init("worker-test");
        let client = async_nats::connect(nats_url).await.expect("NATS");
        let harness = Harness {
            nats_url: nats_url.to_owned(),
            suffix: testkit::unique_suffix(),
            database,
            jetstream: jetstream::new(client),
        };
        let stream = shared::nats::webhooks::WebhookStream::new(harness.jetstream.client(), &harness.stream_args());
        stream.ensure().await.expect("create the test stream");
        harness
    }

    pub fn stream_name(&self) -> String {
        format!("TEST_WEBHOOKS_{}", self.suffix)
    }

    pub fn subject_prefix(&self) -> String {
        format!("test{}.webhook", self.suffix)
    }

    pub fn dlq_name(&self) -> String {
        format!("TEST_DLQ_{}", self.suffix)
    }

    pub fn stream_args(&self) -> shared::nats::WebhookStreamArgs {
        shared::nats::WebhookStreamArgs::new(
            self.stream_name(),
            self.subject_prefix(),
            Duration::from_secs(120),
            Duration::from_secs(3600),
        )
    }

    /// The arguments a worker of this harness runs with (for in-process workers and binaries).
    pub fn worker_env(&self, database_url: &str) -> Vec<(&'static str, String)> {
        vec![
            ("NATS_URL", self.nats_url.clone()),
            ("DATABASE_URL", database_url.to_owned()),
            ("WEBHOOK_STREAM", self.stream_name()),
            ("WEBHOOK_SUBJECT_PREFIX", self.subject_prefix()),
            ("WEBHOOK_STREAM_MAX_AGE", "1h".into()),
            ("DLQ_STREAM", self.dlq_name()),
            ("DLQ_SUBJECT_PREFIX", format!("test{}.dlq", self.suffix)),
            ("DLQ_MAX_AGE", "1h".into()),
            ("CONSUMER_NAME", format!("worker-{}", self.suffix)),
            ("RETRY_MIN_DELAY", "100ms".into()),
            ("RETRY_MAX_DELAY", "1s".into()),
            ("CONSUMER_ACK_WAIT", "5s".into()),
            ("MAX_DELIVER", "5".into()),
            ("BATCH_SIZE", "50".into()),
            ("DATABASE_ACQUIRE_TIMEOUT", "1s".into()),
        ]
    }

    pub async fn spawn_worker(&self) -> RunningWorker {
        self.spawn_worker_on(&self.database.url).await
    }

    pub async fn spawn_worker_on(&self, database_url: &str) -> RunningWorker {
        let mut args = vec!["worker".to_owned(), "--metrics-addr=127.0.0.1:0".into()];
        for (name, value) in self.worker_env(database_url) {
            let flag = match name {
                "NATS_URL" => "nats-url".to_owned(),
                "DATABASE_URL" => "database-url".to_owned(),
                "MAX_DELIVER" => "max-deliver".to_owned(),
                "BATCH_SIZE" => "batch-size".to_owned(),
                "CONSUMER_ACK_WAIT" => "ack-wait".to_owned(),
                "DATABASE_ACQUIRE_TIMEOUT" => "database-acquire-timeout".to_owned(),
                other => other.to_lowercase().replace('_', "-"),
            };
            args.push(format!("--{flag}={value}"));
        }
        let config = Args::try_parse_from(args).expect("valid worker configuration").config;
        let app = worker::Application::build(config).await.expect("worker starts");
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(app.run(shutdown.clone()));
        RunningWorker { shutdown, task }
    }

    /// Publishes events as the gateway would (message id = event id), in the given order.
    pub async fn publish(&self, events: &[&Event]) {
        self.publish_with_ids(events.iter().map(|e| (*e, e.id.clone()))).await;
    }

    /// Publishes with explicit message ids: a different id for a copy bypasses JetStream's
    /// de-duplication, so the worker sees the duplicate.
    pub async fn publish_with_ids<'a>(&self, events: impl IntoIterator<Item = (&'a Event, String)>) {
        // Awaited chunk by chunk: the context caps the acknowledgements in flight (5 000).
        let events: Vec<(&Event, String)> = events.into_iter().collect();
        for chunk in events.chunks(1_000) {
            let mut acks = Vec::with_capacity(chunk.len());
            for (event, message_id) in chunk {
                let subject = format!("{}.{}", self.subject_prefix(), event.event_type);
                let message = jetstream::message::PublishMessage::build()
                    .payload(event.body.clone().into())
                    .message_id(message_id.as_str());
                acks.push(self.jetstream.send_publish(subject, message).await.expect("publish"));
            }
            for ack in acks {
                ack.await.expect("JetStream ack");
            }
        }
    }

    pub async fn publish_raw(&self, event_type: &str, payload: &[u8], message_id: &str) {
        let subject = format!("{}.{event_type}", self.subject_prefix());
        let message =
            jetstream::message::PublishMessage::build().payload(payload.to_vec().into()).message_id(message_id);
        self.jetstream.send_publish(subject, message).await.expect("publish").await.expect("ack");
    }

    /// Waits until the consumer has delivered and got an answer for every message.
    pub async fn wait_drained(&self, timeout: Duration) {
        let consumer_name = format!("worker-{}", self.suffix);
        testkit::eventually(timeout, "the consumer to drain", || async {
            let stream = self.jetstream.get_stream(self.stream_name()).await.ok()?;
            let info = stream.consumer_info(&consumer_name).await.ok()?;
            (info.num_pending == 0 && info.num_ack_pending == 0).then_some(())
        })
        .await;
    }

    /// Every dead letter, oldest first.
    pub async fn dead_letters(&self) -> Vec<jetstream::message::StreamMessage> {
        let Ok(mut stream) = self.jetstream.get_stream(self.dlq_name()).await else { return Vec::new() };
        let state = stream.info().await.expect("DLQ info").state.clone();
        let mut letters = Vec::new();
        if state.messages == 0 {
            return letters;
        }
        for sequence in state.first_sequence..=state.last_sequence {
            if let Ok(message) = stream.get_raw_message(sequence).await {
                letters.push(message);
            }
        }
        letters
    }

    /// The stored attendance of every room in `expected`, in the same shape.
    pub async fn stored(
        &self,
        rooms: impl IntoIterator<Item = String>,
    ) -> BTreeMap<String, BTreeMap<String, Attendance>> {
        let pool = self.database.pool().await;
        let mut connection = pool.acquire().await.expect("connection");
        let mut stored = BTreeMap::new();
        for room in rooms {
            stored.insert(
                room.clone(),
                shared::store::read_model::load_room(&mut connection, &room).await.expect("load room"),
            );
        }
        stored
    }

    pub async fn event_log_count(&self) -> i64 {
        self.try_event_log_count().await.expect("count the event log")
    }

    /// `None` until the worker created the schema.
    pub async fn try_event_log_count(&self) -> Option<i64> {
        let pool = self.database.pool().await;
        sqlx::query_scalar("SELECT count(*) FROM webhook_events").fetch_one(&pool).await.ok()
    }

    pub async fn cleanup(self) {
        let _ = self.jetstream.delete_stream(self.stream_name()).await;
        let _ = self.jetstream.delete_stream(self.stream_args().heartbeat_settings().name).await;
        let _ = self.jetstream.delete_stream(self.dlq_name()).await;
        self.database.drop_database().await;
    }
}

/// Asserts that what is stored equals what the rule expects, room by room.
pub fn assert_same_attendance(
    stored: &BTreeMap<String, BTreeMap<String, Attendance>>,
    expected: &BTreeMap<String, BTreeMap<String, Attendance>>,
) {
    assert_eq!(stored.len(), expected.len(), "rooms");
    for (room, expected_room) in expected {
        let stored_room = &stored[room];
        assert_eq!(stored_room.keys().collect::<Vec<_>>(), expected_room.keys().collect::<Vec<_>>(), "{room}");
        for (identity, expected_attendance) in expected_room {
            assert_eq!(&stored_room[identity], expected_attendance, "{room} / {identity}");
        }
    }
}
