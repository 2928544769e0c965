//! What the chaos suites assert once a load has stopped and the workers drained: every event the
//! gateway acknowledged is in the event log exactly once (the event id is its key) and nothing
//! else is; attendance equals what the rule gives for the events sent; no event was
//! dead-lettered. Also counted, for the report: messages of the webhook stream stored more than
//! once (JetStream's de-duplication missed a retry; harmless to attendance, as the workers
//! apply an event id once, but worth seeing).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use futures::StreamExt as _;

use crate::fleet::Fleet;
use crate::webhook_load::FailureStats;
use crate::workload::{self, Event};

/// The comparison of what was sent and acknowledged with what the system stored.
#[derive(Debug, Clone)]
pub struct Verdict {
    pub sent: usize,
    pub acknowledged: usize,
    /// Events in the event log.
    pub stored: usize,
    /// Acknowledged events missing from the event log.
    pub lost: usize,
    /// Events in the event log that were never acknowledged.
    pub unexpected: usize,
    /// Joins and leaves counted more often than the rule counts them.
    pub doubled: i64,
    /// Participants whose attendance differs from the rule's (or who should not be there).
    pub mismatched: usize,
    /// Messages of the dead-letter stream.
    pub dead_letters: u64,
    /// Messages of the webhook stream whose event id an earlier message already had.
    pub stream_duplicates: u64,
}

/// The header of [`Verdict::row`]'s table.
pub const TABLE_HEADER: &str = "| fault | events sent | 2xx | stored | lost | doubled | attendance | dead letters | duplicates in the stream | requests failed (503 / other 5xx / no answer) | longest failure window |\n\
|---|---:|---:|---:|---:|---:|---|---:|---:|---|---:|";

impl Verdict {
    /// Compares `sent` and `accepted` (ids) with the fleet's database and streams.
    pub async fn check(fleet: &Fleet, sent: &[Event], accepted: &BTreeSet<String>) -> Self {
        let pool = sqlx::PgPool::connect(&fleet.database_url).await.expect("connect to the fleet's database");
        let logged: Vec<String> =
            sqlx::query_scalar("SELECT event_id FROM webhook_events").fetch_all(&pool).await.expect("the event log");
        let logged: BTreeSet<String> = logged.into_iter().collect();
        let expected = workload::expected(sent);
        let mut connection = pool.acquire().await.expect("a connection");
        let (mut mismatched, mut counted, mut expected_count) = (0, 0, 0);
        for (room, participants) in &expected {
            let stored =
                shared::store::read_model::load_room(&mut connection, room).await.expect("the room's attendance");
            mismatched += participants.iter().filter(|(identity, a)| stored.get(*identity) != Some(*a)).count();
            mismatched += stored.keys().filter(|identity| !participants.contains_key(*identity)).count();
            counted += stored.values().map(|a| a.join_count + a.leave_count).sum::<i64>();
            expected_count += participants.values().map(|a| a.join_count + a.leave_count).sum::<i64>();
        }
        drop(connection);
        pool.close().await;

        let js = async_nats::jetstream::new(fleet.nats().await);
        let mut dlq = js.get_stream("LIVEKIT_DLQ").await.expect("the dead-letter stream");
        let dead_letters = dlq.info().await.expect("the dead-letter stream's info").state.messages;
        Verdict {
            sent: sent.len(),
            acknowledged: accepted.len(),
            stored: logged.len(),
            lost: accepted.difference(&logged).count(),
            unexpected: logged.difference(accepted).count(),
            doubled: (counted - expected_count).max(0),
            mismatched,
            dead_letters,
            stream_duplicates: stream_duplicates(&js, "LIVEKIT_WEBHOOKS").await,
        }
    }

    /// Fails the test unless every 2xx is stored once, attendance is exact and nothing was
    /// dead-lettered.
    pub fn assert_exact(&self, fault: &str) {
        assert_eq!(self.lost, 0, "{fault}: acknowledged events missing from the log");
        assert_eq!(self.unexpected, 0, "{fault}: events in the log that were never acknowledged");
        assert_eq!(self.doubled, 0, "{fault}: joins or leaves counted twice");
        assert_eq!(self.mismatched, 0, "{fault}: attendance differs from the rule");
        assert_eq!(self.dead_letters, 0, "{fault}: faults must not dead-letter events");
    }

    /// A line of the table under [`TABLE_HEADER`].
    pub fn row(&self, fault: &str, failures: &FailureStats) -> String {
        let attendance =
            if self.mismatched == 0 { "exact".to_owned() } else { format!("{} participants differ", self.mismatched) };
        format!(
            "| {fault} | {} | {} | {} | {} | {} | {attendance} | {} | {} | {} / {} / {} | {:.2} s |",
            self.sent,
            self.acknowledged,
            self.stored,
            self.lost,
            self.doubled,
            self.dead_letters,
            self.stream_duplicates,
            failures.unavailable,
            failures.other_5xx,
            failures.no_answer,
            failures.longest_failure_window.as_secs_f64()
        )
    }
}

/// Messages of `stream` whose `Nats-Msg-Id` an earlier message of it already had.
async fn stream_duplicates(js: &async_nats::jetstream::Context, stream: &str) -> u64 {
    let mut stream = js.get_stream(stream).await.expect("the webhook stream");
    let messages = stream.info().await.expect("the webhook stream's info").state.messages;
    if messages == 0 {
        return 0;
    }
    let consumer = stream
        .create_consumer(async_nats::jetstream::consumer::pull::OrderedConfig::default())
        .await
        .expect("an ordered consumer of the webhook stream");
    let mut delivered = consumer.messages().await.expect("the webhook stream's messages");
    let mut seen: BTreeMap<String, u64> = BTreeMap::new();
    for _ in 0..messages {
        let message = tokio::time::timeout(Duration::from_secs(30), delivered.next())
            .await
            .expect("the webhook stream's messages within 30 s")
            .expect("a message")
            .expect("a message without error");
        let id = message
            .headers
            .as_ref()
            .and_then(|headers| headers.get("Nats-Msg-Id"))
            .map(|id| id.as_str().to_owned())
            .unwrap_or_default();
        *seen.entry(id).or_default() += 1;
    }
    seen.values().map(|count| count - 1).sum()
}
