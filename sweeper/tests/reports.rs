//! Meeting reports against a real PostgreSQL and NATS: decided in the worker's transactions,
//! published by the sweeper's outbox publisher. A meeting is reported started, then ended with
//! its attendance, then updated when a late `participant_left` corrects it; the same change never
//! yields a second report, and each report's id follows from its meeting and number.

use std::time::Duration;

use futures::StreamExt as _;
use serde_json::{Value, json};
use shared::domain::policy::Policy;
use shared::domain::report::{ReportType, report_id};
use shared::nats::ReportArgs;
use shared::nats::reports::{ReportMessage, ReportStream};
use testkit::postgres::TestDatabase;
use worker::apply::{Applied, Input, apply_batch};

const MINUTE: i64 = 60_000;
const T0: i64 = 1_790_000_000_000;

fn room_event(event_type: &str, id: &str, room_sid: &str, at_ms: i64) -> Value {
    json!({"event": event_type, "id": id, "createdAt": (at_ms / 1000).to_string(),
           "room": {"sid": room_sid, "name": "algebra"}})
}

fn participant_event(event_type: &str, id: &str, room_sid: &str, identity: &str, at_ms: i64, joined_ms: i64) -> Value {
    json!({"event": event_type, "id": id, "createdAt": (at_ms / 1000).to_string(),
           "room": {"sid": room_sid, "name": "algebra"},
           "participant": {"sid": format!("PA_{identity}"), "identity": identity, "joinedAtMs": joined_ms.to_string()}})
}

async fn apply(pool: &sqlx::PgPool, events: &[Value]) -> Vec<Applied> {
    let inputs: Vec<Input> = events
        .iter()
        .enumerate()
        .map(|(n, event)| Input {
            payload: serde_json::to_vec(event).unwrap().into(),
            received_at_ms: Some(T0),
            stream_sequence: n as u64 + 1,
            traceparent: None,
            wait_for_room: true,
        })
        .collect();
    apply_batch(pool, &inputs, &Policy::default()).await.expect("applied")
}

/// A fresh database and a report stream of the test's own.
async fn setup() -> (TestDatabase, sqlx::PgPool, async_nats::jetstream::Context, ReportStream) {
    let database = TestDatabase::create_shared().await;
    let pool = database.pool().await;
    shared::store::MIGRATOR.run(&pool).await.unwrap();
    let client = async_nats::connect(testkit::nats::shared_url()).await.unwrap();
    let jetstream = async_nats::jetstream::new(client.clone());
    let stream = ReportStream::new(client, &report_args());
    stream.ensure().await.unwrap();
    (database, pool, jetstream, stream)
}

fn report_args() -> ReportArgs {
    let suffix = testkit::unique_suffix();
    ReportArgs {
        stream: format!("TEST_REPORTS_{suffix}"),
        subject_prefix: format!("test{suffix}.meeting"),
        replicas: 1,
        max_age: Duration::from_secs(3600),
    }
}

/// Publishes the outbox, then reads every report in the stream, in order.
async fn published(
    pool: &sqlx::PgPool,
    stream: &ReportStream,
    jetstream: &async_nats::jetstream::Context,
) -> Vec<(ReportMessage, Value)> {
    while sweeper::publish_reports::publish_batch(pool, stream, 100).await.expect("published") > 0 {}
    let mut source = jetstream.get_stream(&stream.settings().name).await.unwrap();
    let count = source.info().await.unwrap().state.messages as usize;
    let consumer =
        source.create_consumer(async_nats::jetstream::consumer::pull::OrderedConfig::default()).await.unwrap();
    let mut messages = consumer.messages().await.unwrap().take(count);
    let mut reports = Vec::new();
    while let Some(message) = messages.next().await {
        let message = message.unwrap();
        let report =
            ReportMessage::decode(&message.subject, message.headers.as_ref(), message.payload.clone()).unwrap();
        let body: Value = serde_json::from_slice(&report.body).unwrap();
        reports.push((report, body));
    }
    reports
}

fn participant<'a>(body: &'a Value, identity: &str) -> &'a Value {
    body["data"]["participants"].as_array().unwrap().iter().find(|p| p["identity"] == identity).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_meeting_is_reported_started_ended_then_updated_by_a_late_left() {
    let (database, pool, jetstream, stream) = setup().await;
    let sid = "RM_reported";

    apply(&pool, &[room_event("room_started", "EV_start", sid, T0)]).await;
    apply(
        &pool,
        &[
            participant_event("participant_joined", "EV_ada_in", sid, "ada", T0 + MINUTE, T0 + MINUTE),
            participant_event("participant_joined", "EV_bob_in", sid, "bob", T0 + MINUTE, T0 + MINUTE),
        ],
    )
    .await;
    apply(&pool, &[participant_event("participant_left", "EV_ada_out", sid, "ada", T0 + 59 * MINUTE, T0 + MINUTE)])
        .await;
    // Bob's left is lost for now: the room's end closes his cycle.
    apply(&pool, &[room_event("room_finished", "EV_end", sid, T0 + 60 * MINUTE)]).await;

    let reports = published(&pool, &stream, &jetstream).await;
    let kinds: Vec<(ReportType, i64)> = reports.iter().map(|(r, _)| (r.kind, r.sequence)).collect();
    assert_eq!(kinds, [(ReportType::Started, 1), (ReportType::Ended, 2)], "{reports:?}");
    for (report, body) in &reports {
        assert_eq!(report.id, report_id(sid, report.sequence));
        assert_eq!(report.room_sid, sid);
        assert_eq!(body["type"], report.kind.as_str());
        assert_eq!(body["data"]["sequence"], report.sequence);
        assert_eq!(body["data"]["room"], "algebra");
        assert!(body["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')), "{body}");
    }
    let ended = &reports[1].1;
    assert_eq!(ended["data"]["ended_by"], "room_finished");
    assert_eq!(ended["data"]["duration_ms"], 60 * MINUTE);
    assert_eq!(participant(ended, "ada")["attended_ms"], 58 * MINUTE);
    assert_eq!(participant(ended, "bob")["attended_ms"], 59 * MINUTE);
    assert_eq!(participant(ended, "bob")["status"], "attended");
    assert_eq!(ended["data"]["counts"]["people"], 2);

    // The late left corrects Bob: an update with the whole new attendance, numbered after.
    let late_left = participant_event("participant_left", "EV_bob_out", sid, "bob", T0 + 21 * MINUTE, T0 + MINUTE);
    apply(&pool, std::slice::from_ref(&late_left)).await;
    // The same event again, and an event that changes nothing: no report.
    assert_eq!(apply(&pool, &[late_left]).await, [Applied::Duplicate]);
    apply(&pool, &[room_event("room_finished", "EV_end_again", sid, T0 + 60 * MINUTE)]).await;

    let reports = published(&pool, &stream, &jetstream).await;
    let kinds: Vec<(ReportType, i64)> = reports.iter().map(|(r, _)| (r.kind, r.sequence)).collect();
    assert_eq!(kinds, [(ReportType::Started, 1), (ReportType::Ended, 2), (ReportType::Updated, 3)]);
    let updated = &reports[2].1;
    assert_eq!(participant(updated, "bob")["attended_ms"], 20 * MINUTE);
    assert_eq!(participant(updated, "bob")["status"], "partial");
    assert_eq!(participant(updated, "ada")["attended_ms"], 58 * MINUTE, "the whole attendance, not a diff");
    assert_eq!(shared::store::report_outbox::pending(&pool).await.unwrap(), 0, "published rows are deleted");

    jetstream.delete_stream(&stream.settings().name).await.unwrap();
    database.drop_database().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inferred_end_replaced_by_the_real_room_finished_is_an_update() {
    let (database, pool, jetstream, stream) = setup().await;
    let sid = "RM_inferred";

    let mut started = room_event("room_started", "EV_start", sid, T0);
    started["room"]["emptyTimeout"] = json!(300);
    started["room"]["departureTimeout"] = json!(20);
    apply(&pool, &[started]).await;
    apply(
        &pool,
        &[
            participant_event("participant_joined", "EV_in", sid, "ada", T0 + MINUTE, T0 + MINUTE),
            participant_event("participant_left", "EV_out", sid, "ada", T0 + 30 * MINUTE, T0 + MINUTE),
        ],
    )
    .await;
    // No room_finished: the sweeper infers the end (LiveKit's departure timeout after the last
    // left), then the real one comes late, at another time.
    let margin = Duration::from_secs(300);
    let ended = sweeper::sweep::end_idle_meetings(&pool, T0 + 40 * MINUTE, margin, &Policy::default()).await.unwrap();
    assert_eq!(ended, 1);
    apply(&pool, &[room_event("room_finished", "EV_end", sid, T0 + 31 * MINUTE)]).await;

    let reports = published(&pool, &stream, &jetstream).await;
    let kinds: Vec<ReportType> = reports.iter().map(|(r, _)| r.kind).collect();
    assert_eq!(kinds, [ReportType::Started, ReportType::Ended, ReportType::Updated]);
    assert_eq!(reports[1].1["data"]["ended_by"], "inferred");
    assert_eq!(reports[2].1["data"]["ended_by"], "room_finished");
    assert_eq!(reports[2].1["data"]["ended_at"], shared::domain::time::rfc3339_ms(T0 + 31 * MINUTE));

    jetstream.delete_stream(&stream.settings().name).await.unwrap();
    database.drop_database().await;
}
