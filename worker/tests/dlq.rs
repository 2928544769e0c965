//! The operators' dead-letter tools against a real NATS and PostgreSQL: list with filters,
//! replay (idempotent for events already applied), purge, and the CLI's errors.

mod common;

use std::time::Duration;

use common::{Harness, assert_same_attendance};
use shared::nats::DeadLetterArgs;
use shared::nats::dead_letters::{
    DeadLetter, DeadLetterError, DeadLetterFilter as Filter, DeadLetterStream, DeadLetters,
};
use testkit::postgres::TestDatabase;
use testkit::workload;

fn dlq_args(harness: &Harness) -> DeadLetterArgs {
    DeadLetterArgs {
        stream: harness.dlq_name(),
        subject_prefix: format!("test{}.dlq", harness.suffix),
        replicas: 1,
        max_age: Duration::from_secs(3600),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replaying_an_event_already_applied_changes_nothing_and_removes_the_dead_letter() {
    let harness = Harness::new(&testkit::nats::shared_url(), TestDatabase::create_shared().await).await;
    let events = workload::meetings(fastrand::u64(..), 3, 4, 1_790_000_000_000);
    let worker = harness.spawn_worker().await;
    harness.publish(&events.iter().collect::<Vec<_>>()).await;
    harness.wait_drained(Duration::from_secs(60)).await;
    let expected = workload::expected(&events);
    let before = harness.stored(expected.keys().cloned()).await;
    assert_same_attendance(&before, &expected);

    // A dead letter of an event the workers did apply (say, its last retry timed out after commit).
    let applied = events.iter().find(|e| e.event_type == "participant_joined").unwrap();
    let subject = format!("{}.participant_joined", harness.subject_prefix());
    let dead_letters = DeadLetterStream::new(harness.jetstream.client(), &dlq_args(&harness));
    dead_letters
        .publish(
            &DeadLetter {
                event_type: "participant_joined",
                payload: applied.body.clone().into(),
                original_headers: None,
                original_subject: &subject,
                original_stream: &harness.stream_name(),
                original_sequence: 1,
                delivery_count: 5,
                reason: "retries_exhausted",
                error: "pool timed out while waiting for an open connection",
                first_failure_at_ms: shared::domain::time::now_unix_ms() - 60_000,
                last_failure_at_ms: shared::domain::time::now_unix_ms(),
            },
            Duration::from_secs(5),
        )
        .await
        .unwrap();

    let mut letters =
        DeadLetters::connect(&shared::nats::NatsArgs::for_url(&harness.nats_url), &harness.dlq_name()).await.unwrap();
    let listed = letters.list(&Filter::default()).await.unwrap();
    assert_eq!(listed.len(), 1);
    let (row, message) = &listed[0];
    assert_eq!(row.event_id.as_deref(), Some(applied.id.as_str()));
    assert_eq!(row.room.as_deref(), Some(applied.room.as_str()));
    assert_eq!((row.reason.as_str(), row.delivery_count), ("retries_exhausted", 5));
    assert!(letters.list(&Filter { room: Some("elsewhere".into()), ..Default::default() }).await.unwrap().is_empty());
    assert_eq!(
        letters.list(&Filter { error: Some("POOL TIMED".into()), ..Default::default() }).await.unwrap().len(),
        1
    );

    letters.replay(message).await.unwrap();
    harness.wait_drained(Duration::from_secs(60)).await;
    assert!(letters.list(&Filter::default()).await.unwrap().is_empty(), "the dead letter is gone");
    assert_eq!(harness.event_log_count().await, events.len() as i64, "nothing counted twice");
    assert_same_attendance(&harness.stored(expected.keys().cloned()).await, &expected);
    assert!(matches!(letters.get(message.sequence).await, Err(DeadLetterError::NoSuchSequence(_))));

    worker.stop().await;
    harness.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_poison_message_comes_back_and_purge_removes_it() {
    let harness = Harness::new(&testkit::nats::shared_url(), TestDatabase::create_shared().await).await;
    let worker = harness.spawn_worker().await;
    harness.publish_raw("room_started", b"{not json", "poison-a").await;
    harness.wait_drained(Duration::from_secs(30)).await;

    let mut letters =
        DeadLetters::connect(&shared::nats::NatsArgs::for_url(&harness.nats_url), &harness.dlq_name()).await.unwrap();
    let first = letters.list(&Filter { event_type: Some("room_started".into()), ..Default::default() }).await.unwrap();
    assert_eq!(first.len(), 1);
    letters.replay(&first[0].1).await.unwrap();
    harness.wait_drained(Duration::from_secs(30)).await;
    let again = testkit::eventually(Duration::from_secs(10), "the poison to be dead-lettered again", || async {
        let mut letters =
            DeadLetters::connect(&shared::nats::NatsArgs::for_url(&harness.nats_url), &harness.dlq_name())
                .await
                .ok()?;
        let rows = letters.list(&Filter::default()).await.ok()?;
        (rows.len() == 1 && rows[0].0.sequence != first[0].0.sequence).then_some(rows)
    })
    .await;
    assert_eq!(again[0].1.payload.as_ref(), b"{not json", "the original bytes, replayed as they were");

    // The CLI binary: list as JSON, then purge without asking.
    let env = harness.worker_env(&harness.database.url);
    let cli = |args: &[&str]| {
        std::process::Command::new(testkit::binaries::path("worker"))
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .arg("dlq")
            .args(args)
            .output()
            .expect("run worker dlq")
    };
    let json = |output: std::process::Output| -> serde_json::Value {
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        serde_json::from_slice(&output.stdout).expect("stdout is JSON and nothing else")
    };
    // An identity that would drive a terminal (an escape sequence) is dead-lettered too.
    harness
        .publish_raw(
            "participant_joined",
            br#"{"event":"participant_joined","id":"EV_esc","room":{"name":"r","sid":"RM_e"},"participant":{"sid":"PA_e","identity":"\u001b[2Jred"}}"#,
            "poison-b",
        )
        .await;
    let rows = testkit::eventually(Duration::from_secs(30), "two dead letters", || async {
        let rows = json(cli(&["list", "--json"]));
        (rows.as_array()?.len() == 2).then_some(rows)
    })
    .await;
    let rows = rows.as_array().unwrap();
    assert!(rows.iter().all(|row| row["reason"] == "invalid_event"), "{rows:?}");
    let escape = rows.iter().find(|row| row["event_type"] == "participant_joined").expect("the escape sequence's");
    assert_eq!(escape["identity"], "\u{1b}[2Jred");
    let table = String::from_utf8(cli(&["list"]).stdout).unwrap();
    assert!(table.contains("\\u{1b}[2Jred") && !table.contains('\u{1b}'), "escaped in the table: {table:?}");
    let sequence = escape["sequence"].as_u64().unwrap().to_string();
    let shown = json(cli(&["show", &sequence, "--json"]));
    assert_eq!(shown["payload"]["participant"]["identity"], "\u{1b}[2Jred");
    let plain = String::from_utf8(cli(&["show", &sequence]).stdout).unwrap();
    assert!(!plain.contains('\u{1b}'), "{plain:?}");
    let dry_run = json(cli(&["replay", "--all", "--dry-run", "--json"]));
    assert_eq!(dry_run["would_replay"].as_array().unwrap().len(), 2);
    let missing = cli(&["show", "999999"]);
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no dead letter with sequence 999999"));
    for rate in ["inf", "NaN", "0", "-1"] {
        let refused = cli(&["replay", "--all", "--rate", rate]);
        assert_eq!(refused.status.code(), Some(2), "--rate {rate}: a usage error, not a panic: {refused:?}");
    }
    assert!(!cli(&["replay"]).status.success(), "nothing selected is an error");
    assert!(!cli(&["purge", "--json"]).status.success(), "--json cannot ask for confirmation");
    let purged = cli(&["purge", "--event-type", "room_started", "--yes"]);
    assert!(purged.status.success());
    assert_eq!(String::from_utf8_lossy(&purged.stdout).trim(), "purged 1 dead letters");
    let purged = json(cli(&["purge", "--yes", "--json"]));
    assert_eq!(purged["purged"].as_array().unwrap().len(), 1);
    let empty = cli(&["list"]);
    assert_eq!(String::from_utf8_lossy(&empty.stdout).trim(), "no dead letters");
    assert_eq!(json(cli(&["list", "--json"])), serde_json::json!([]));
    assert_eq!(json(cli(&["replay", "--all", "--json"])), serde_json::json!({"replayed": []}));

    let unreachable = std::process::Command::new(testkit::binaries::path("worker"))
        .env("NATS_URL", format!("nats://operator:s3cret@127.0.0.1:{}", testkit::nats::free_port()))
        .args(["dlq", "list"])
        .output()
        .unwrap();
    assert!(!unreachable.status.success());
    let said = String::from_utf8_lossy(&unreachable.stderr);
    assert!(said.contains("cannot reach NATS") && !said.contains("s3cret"), "{said}");

    worker.stop().await;
    harness.cleanup().await;
}
