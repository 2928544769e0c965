//! Faults: PostgreSQL stopped mid-run, a worker killed with SIGKILL mid-batch. Afterwards every
//! event is applied exactly once and the tables are exactly what the rule expects.

mod common;

use std::time::Duration;

use common::{Harness, assert_same_attendance};
use testkit::binaries::Service;
use testkit::postgres::{PrivatePostgres, TestDatabase};
use testkit::workload;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_stopped_mid_run_then_restarted_loses_and_doubles_nothing() {
    let mut postgres = PrivatePostgres::start().await;
    let database = TestDatabase::create(&postgres.url("postgres")).await;
    let harness = Harness::new(&testkit::nats::shared_url(), database).await;
    let events = workload::meetings(fastrand::u64(..), 10, 8, 1_790_000_000_000);
    let (before, during) = events.split_at(events.len() / 2);
    let worker = harness.spawn_worker().await;

    harness.publish(&before.iter().collect::<Vec<_>>()).await;
    harness.wait_drained(Duration::from_secs(60)).await;
    assert_eq!(harness.event_log_count().await, before.len() as i64);

    postgres.stop();
    harness.publish(&during.iter().collect::<Vec<_>>()).await;
    // The worker takes a batch, fails to apply it and hands it back for later.
    let consumer = format!("worker-{}", harness.suffix);
    testkit::eventually(Duration::from_secs(30), "a failed delivery while PostgreSQL is down", || async {
        let stream = harness.jetstream.get_stream(harness.stream_name()).await.ok()?;
        let info = stream.consumer_info(&consumer).await.ok()?;
        (info.num_redelivered > 0 || info.num_ack_pending > 0).then_some(())
    })
    .await;
    // Stay down past the pool's acquire timeout (1 s here) and several retry delays.
    tokio::time::sleep(Duration::from_secs(4)).await;

    postgres.restart().await;
    harness.wait_drained(Duration::from_secs(90)).await;

    let expected = workload::expected(&events);
    assert_same_attendance(&harness.stored(expected.keys().cloned()).await, &expected);
    assert_eq!(harness.event_log_count().await, events.len() as i64, "every event exactly once");
    assert!(harness.dead_letters().await.is_empty(), "an outage must not dead-letter events");
    worker.stop().await;
    harness.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_batch_loses_nothing() {
    let harness = Harness::new(&testkit::nats::shared_url(), TestDatabase::create_shared().await).await;
    let events = workload::meetings(fastrand::u64(..), 40, 10, 1_790_000_000_000);
    let mut deliveries: Vec<&workload::Event> = events.iter().collect();
    fastrand::shuffle(&mut deliveries);
    harness.publish(&deliveries).await;

    let start = |harness: &Harness| {
        let mut env = harness.worker_env(&harness.database.url);
        env.push(("METRICS_ADDR", format!("127.0.0.1:{}", testkit::nats::free_port())));
        env.push(("BATCH_SIZE", "20".into()));
        Service::start("worker", &env)
    };
    let mut first = start(&harness);
    let applied_some = testkit::eventually(Duration::from_secs(60), "the first worker to be mid-way", || async {
        let count = harness.try_event_log_count().await?;
        (count > 0).then_some(count)
    })
    .await;
    first.signal("KILL");
    let status = first.wait_exit(Duration::from_secs(10)).await;
    assert!(!status.success(), "killed");
    let at_kill = harness.event_log_count().await;
    assert!(at_kill < events.len() as i64, "killed before the end ({applied_some}..{at_kill} of {})", events.len());

    let mut second = start(&harness);
    harness.wait_drained(Duration::from_secs(120)).await;
    second.signal("TERM");
    assert!(second.wait_exit(Duration::from_secs(10)).await.success());

    let expected = workload::expected(&events);
    assert_same_attendance(&harness.stored(expected.keys().cloned()).await, &expected);
    assert_eq!(harness.event_log_count().await, events.len() as i64);
    assert!(harness.dead_letters().await.is_empty());
    harness.cleanup().await;
}

/// A primary that turns read-only for a while (a failover, maintenance): writes fail with 25006
/// while `SELECT 1` still answers. Workers pause until it takes writes again, instead of
/// spending every message's deliveries on it and dead-lettering them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_database_pauses_the_workers_and_dead_letters_nothing() {
    let postgres = PrivatePostgres::start().await;
    let database = TestDatabase::create(&postgres.url("postgres")).await;
    let harness = Harness::new(&testkit::nats::shared_url(), database).await;
    let events = workload::meetings(fastrand::u64(..), 10, 8, 1_790_000_000_000);
    let (before, during) = events.split_at(events.len() / 2);
    let worker = harness.spawn_worker().await;
    harness.publish(&before.iter().collect::<Vec<_>>()).await;
    harness.wait_drained(Duration::from_secs(60)).await;

    let admin = sqlx::PgPool::connect(&postgres.url("postgres")).await.unwrap();
    let read_only = |on: bool| {
        let admin = admin.clone();
        async move {
            let value = if on { "on" } else { "off" };
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!("ALTER SYSTEM SET default_transaction_read_only = {value}")))
                .execute(&admin)
                .await
                .unwrap();
            sqlx::query("SELECT pg_reload_conf()").execute(&admin).await.unwrap();
        }
    };
    read_only(true).await;
    harness.publish(&during.iter().collect::<Vec<_>>()).await;
    let consumer = format!("worker-{}", harness.suffix);
    testkit::eventually(Duration::from_secs(60), "a delivery while PostgreSQL is read-only", || async {
        let stream = harness.jetstream.get_stream(harness.stream_name()).await.ok()?;
        let info = stream.consumer_info(&consumer).await.ok()?;
        (info.delivered.stream_sequence > before.len() as u64).then_some(())
    })
    .await;
    // Long enough for MAX_DELIVER (5) deliveries at the test's retry delays (100 ms to 1 s).
    tokio::time::sleep(Duration::from_secs(10)).await;
    read_only(false).await;
    harness.wait_drained(Duration::from_secs(60)).await;

    assert!(harness.dead_letters().await.is_empty(), "a read-only spell must not dead-letter events");
    let expected = workload::expected(&events);
    assert_same_attendance(&harness.stored(expected.keys().cloned()).await, &expected);
    assert_eq!(harness.event_log_count().await, events.len() as i64, "every event exactly once");
    admin.close().await;
    worker.stop().await;
    harness.cleanup().await;
}
