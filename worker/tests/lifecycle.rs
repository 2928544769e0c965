//! Erasure against a real NATS and PostgreSQL: erasing a person while workers run (nothing of them
//! is left, everyone else is untouched, their events replayed later are refused), and the
//! `worker erase` command. (Retention is in the sweeper's tests.)

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{Harness, assert_same_attendance};
use shared::store::lifecycle;
use testkit::postgres::TestDatabase;
use testkit::workload::{self, Event};

/// Rows that still name `identity`, table by table.
async fn rows_naming(pool: &sqlx::PgPool, identity: &str) -> BTreeMap<&'static str, i64> {
    let mut rows = BTreeMap::new();
    for table in
        ["webhook_events", "meeting_participants", "cycles", "meeting_heartbeats", "cycle_closures", "presence_outbox"]
    {
        let count: i64 =
            sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table} WHERE identity = $1")))
                .bind(identity)
                .fetch_one(pool)
                .await
                .unwrap();
        rows.insert(table, count);
    }
    rows
}

fn is_about(event: &Event, identity: &str) -> bool {
    let body: serde_json::Value = serde_json::from_slice(&event.body).unwrap();
    body["participant"]["identity"] == identity
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_erased_person_leaves_nothing_behind_and_their_replayed_events_are_refused() {
    let harness = Harness::new(&testkit::nats::shared_url(), TestDatabase::create_shared().await).await;
    let events = workload::meetings(fastrand::u64(..), 4, 6, 1_790_000_000_000);
    let (first_half, second_half) = events.split_at(events.len() / 2);
    let worker = harness.spawn_worker().await;
    harness.publish(&first_half.iter().collect::<Vec<_>>()).await;
    let pool = harness.database.pool().await;
    shared::store::MIGRATOR.run(&pool).await.unwrap();

    // Some of the person's data is in; the erasure then runs while the worker applies the rest.
    testkit::eventually(Duration::from_secs(30), "some of user-1's events applied", || async {
        (rows_naming(&pool, "user-1").await["webhook_events"] > 0).then_some(())
    })
    .await;
    let second_half: Vec<&Event> = second_half.iter().collect();
    let publishing = harness.publish(&second_half);
    let erasing = lifecycle::erase_identity(&pool, "user-1", None, "test");
    let ((), erased) = tokio::join!(publishing, erasing);
    assert!(erased.unwrap().events > 0);
    harness.wait_drained(Duration::from_secs(60)).await;

    let nothing: BTreeMap<&str, i64> = rows_naming(&pool, "user-1").await.into_keys().map(|t| (t, 0)).collect();
    assert_eq!(rows_naming(&pool, "user-1").await, nothing, "nothing of the erased person is left");
    let others: Vec<Event> = events.iter().filter(|e| !is_about(e, "user-1")).cloned().collect();
    let mut expected = workload::expected(&others);
    for room in expected.values_mut() {
        room.remove("user-1");
    }
    assert_same_attendance(&harness.stored(expected.keys().cloned()).await, &expected);

    // An operator replays their old events (new message ids, as a dead-letter replay does).
    let theirs: Vec<(&Event, String)> =
        events.iter().filter(|e| is_about(e, "user-1")).map(|e| (e, format!("replay-{}", e.id))).collect();
    assert!(!theirs.is_empty());
    let logged_before = harness.event_log_count().await;
    harness.publish_with_ids(theirs).await;
    harness.wait_drained(Duration::from_secs(60)).await;
    assert_eq!(harness.event_log_count().await, logged_before, "refused, not stored");
    assert_eq!(rows_naming(&pool, "user-1").await, nothing);
    assert!(harness.dead_letters().await.is_empty(), "refused and acknowledged, not dead-lettered");

    // The command line: JSON out, no question with --yes; the record holds no identity.
    let output = std::process::Command::new(testkit::binaries::path("worker"))
        .envs(harness.worker_env(&harness.database.url).iter().map(|(k, v)| (*k, v.as_str())))
        .args(["erase", "--identity", "user-2", "--yes", "--json", "--by", "dpo@example.org"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["erased"], true);
    assert!(report["removed"]["events"].as_u64().unwrap() > 0, "{report}");
    assert_eq!(report["identity_sha256"], lifecycle::identity_digest("user-2"));
    assert_eq!(rows_naming(&pool, "user-2").await, nothing);
    let records: Vec<(String, String)> =
        sqlx::query_as("SELECT identity_sha256, erased_by FROM erasures ORDER BY id").fetch_all(&pool).await.unwrap();
    assert_eq!(records.len(), 2);
    assert!(records.iter().all(|(digest, _)| digest.len() == 64 && !digest.contains("user")));
    assert_eq!(records[1].1, "dpo@example.org");

    worker.stop().await;
    pool.close().await;
    harness.cleanup().await;
}
