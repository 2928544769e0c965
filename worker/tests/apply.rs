//! Workers against a real NATS and PostgreSQL: exact tables whatever the order, duplicates and
//! number of replicas; poison messages dead-lettered while the others are applied.

mod common;

use std::time::Duration;

use common::{Harness, assert_same_attendance};
use shared::nats::dead_letters::headers as dlq;
use testkit::postgres::TestDatabase;
use testkit::workload;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_workers_on_shuffled_duplicated_events_give_exactly_the_expected_tables() {
    let harness = Harness::new(&testkit::nats::shared_url(), TestDatabase::create_shared().await).await;
    let events = workload::meetings(fastrand::u64(..), 30, 12, 1_790_000_000_000);
    assert!(events.len() > 1_000, "{} events", events.len());

    // Every event once, a third of them twice more under other message ids, all shuffled.
    let mut deliveries: Vec<(&workload::Event, String)> = events.iter().map(|e| (e, e.id.clone())).collect();
    for (n, event) in events.iter().enumerate().filter(|(n, _)| n % 3 == 0) {
        deliveries.push((event, format!("{}-copy-a{n}", event.id)));
        deliveries.push((event, format!("{}-copy-b{n}", event.id)));
    }
    fastrand::shuffle(&mut deliveries);
    let total = deliveries.len();

    let workers = [harness.spawn_worker().await, harness.spawn_worker().await, harness.spawn_worker().await];
    harness.publish_with_ids(deliveries).await;
    harness.wait_drained(Duration::from_secs(120)).await;

    let expected = workload::expected(&events);
    let stored = harness.stored(expected.keys().cloned()).await;
    assert_same_attendance(&stored, &expected);
    assert_eq!(harness.event_log_count().await, events.len() as i64, "each event logged once out of {total}");
    assert!(harness.dead_letters().await.is_empty());
    assert_presence_outbox_follows_the_flips(&harness, &stored).await;

    for worker in workers {
        worker.stop().await;
    }
    harness.cleanup().await;
}

#[tokio::test]
async fn poison_messages_are_dead_lettered_with_their_reason_and_the_others_applied() {
    let harness = Harness::new(&testkit::nats::shared_url(), TestDatabase::create_shared().await).await;
    let events = workload::meetings(fastrand::u64(..), 2, 4, 1_790_000_000_000);
    let worker = harness.spawn_worker().await;

    let (first_half, second_half) = events.split_at(events.len() / 2);
    harness.publish(&first_half.iter().collect::<Vec<_>>()).await;
    harness.publish_raw("participant_joined", b"this is not JSON", "poison-1").await;
    // PostgreSQL's jsonb refuses \u0000: a valid event that can never be stored.
    let unstorable = br#"{"event":"track_published","id":"EV_nul","room":{"name":"r","sid":"RM_x"},"x":"a\u0000b"}"#;
    harness.publish_raw("track_published", unstorable, "poison-2").await;
    harness.publish(&second_half.iter().collect::<Vec<_>>()).await;
    harness.wait_drained(Duration::from_secs(60)).await;

    let expected = workload::expected(&events);
    assert_same_attendance(&harness.stored(expected.keys().cloned()).await, &expected);

    let letters = harness.dead_letters().await;
    assert_eq!(letters.len(), 2, "the two poison messages");
    let header = |message: &async_nats::jetstream::message::StreamMessage, name: &str| {
        message.headers.get(name).map(|v| v.as_str().to_owned()).unwrap_or_default()
    };
    let by_reason = |reason: &str| letters.iter().find(|l| header(l, dlq::REASON) == reason).expect(reason);
    let invalid = by_reason("invalid_event");
    assert_eq!(invalid.payload.as_ref(), b"this is not JSON", "the original bytes");
    assert_eq!(header(invalid, dlq::ORIGINAL_SUBJECT), format!("{}.participant_joined", harness.subject_prefix()));
    assert_eq!(header(invalid, dlq::ORIGINAL_STREAM), harness.stream_name());
    assert!(header(invalid, dlq::ORIGINAL_SEQUENCE).parse::<u64>().is_ok());
    assert_eq!(header(invalid, dlq::DELIVERY_COUNT), "1");
    assert!(!header(invalid, dlq::ERROR).is_empty());
    assert_eq!(header(invalid, "Nats-Msg-Id").split(':').next(), Some("dlq"));
    let unstorable_letter = by_reason("unstorable_event");
    assert_eq!(unstorable_letter.payload.as_ref(), unstorable.as_slice());
    let first: i64 = header(unstorable_letter, dlq::FIRST_FAILURE_AT_MS).parse().unwrap();
    let last: i64 = header(unstorable_letter, dlq::LAST_FAILURE_AT_MS).parse().unwrap();
    assert!(first <= last && last <= shared::domain::time::now_unix_ms());

    worker.stop().await;
    harness.cleanup().await;
}

/// Replicas do not queue behind each other: a room another transaction holds is put off, the
/// rest of the batch applied; a message put off too often waits for its room.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_puts_off_the_rooms_another_transaction_holds_and_applies_the_rest() {
    use shared::store::{self, meetings};
    use worker::apply::{Applied, Input, apply_batch};

    let database = TestDatabase::create_shared().await;
    let pool = database.pool().await;
    store::MIGRATOR.run(&pool).await.unwrap();
    let joined = |id: &str, room: &str, wait_for_room: bool| Input {
        payload: testkit::livekit::participant_joined(id, room, "ada").into(),
        received_at_ms: Some(shared::domain::time::now_unix_ms()),
        stream_sequence: 1,
        traceparent: None,
        wait_for_room,
    };
    let logged = |id: &'static str| {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>("SELECT count(*) FROM webhook_events WHERE event_id = $1")
                .bind(id)
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    };

    // Another replica is applying the meeting of room "busy".
    let busy = std::collections::BTreeSet::from(["RM_busy".to_owned()]);
    meetings::create_meetings(&pool, &[("RM_busy".to_owned(), "busy".to_owned())].into()).await.unwrap();
    let mut other = pool.begin().await.unwrap();
    meetings::lock_meetings(&mut other, &busy, &Default::default()).await.unwrap();

    let outcomes = apply_batch(
        &pool,
        &[joined("EV_busy", "busy", false), joined("EV_free", "free", false)],
        &shared::domain::policy::Policy::default(),
    )
    .await
    .unwrap();
    assert_eq!(outcomes[0], Applied::Deferred);
    assert!(matches!(outcomes[1], Applied::Stored { .. }), "{outcomes:?}");
    assert_eq!((logged("EV_busy").await, logged("EV_free").await), (0, 1));

    let waiting = {
        let pool = pool.clone();
        let input = joined("EV_busy", "busy", true);
        tokio::spawn(async move { apply_batch(&pool, &[input], &shared::domain::policy::Policy::default()).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiting.is_finished(), "waits for the room");
    other.commit().await.unwrap();
    let outcomes = waiting.await.unwrap().unwrap();
    assert!(matches!(outcomes[0], Applied::Stored { .. }), "{outcomes:?}");
    assert_eq!(logged("EV_busy").await, 1);
    pool.close().await;
    database.drop_database().await;
}

#[tokio::test]
async fn recompute_rebuilds_the_tables_from_the_event_log() {
    let harness = Harness::new(&testkit::nats::shared_url(), TestDatabase::create_shared().await).await;
    let events = workload::meetings(fastrand::u64(..), 3, 5, 1_790_000_000_000);
    let worker = harness.spawn_worker().await;
    harness.publish(&events.iter().collect::<Vec<_>>()).await;
    harness.wait_drained(Duration::from_secs(60)).await;
    worker.stop().await;

    let pool = harness.database.pool().await;
    sqlx::query("UPDATE meeting_participants SET attended_ms = 0, present = NOT present").execute(&pool).await.unwrap();
    sqlx::query("DELETE FROM cycles").execute(&pool).await.unwrap();
    let recomputed = worker::recompute::recompute(&pool, None, &shared::domain::policy::Policy::default())
        .await
        .unwrap()
        .participants;

    let expected = workload::expected(&events);
    assert_eq!(recomputed, expected.values().map(|room| room.len()).sum::<usize>());
    assert_same_attendance(&harness.stored(expected.keys().cloned()).await, &expected);
    harness.cleanup().await;
}

/// Each participant's outbox rows alternate (a flip each) and end at its stored presence.
async fn assert_presence_outbox_follows_the_flips(
    harness: &Harness,
    stored: &std::collections::BTreeMap<
        String,
        std::collections::BTreeMap<String, shared::domain::attendance::Attendance>,
    >,
) {
    let pool = harness.database.pool().await;
    let rows: Vec<(String, String, bool)> =
        sqlx::query_as("SELECT room_name, identity, present FROM presence_outbox ORDER BY id")
            .fetch_all(&pool)
            .await
            .unwrap();
    let mut flips: std::collections::BTreeMap<(String, String), Vec<bool>> = Default::default();
    for (room, identity, present) in rows {
        flips.entry((room, identity)).or_default().push(present);
    }
    for (room, participants) in stored {
        for (identity, attendance) in participants {
            let history = flips.remove(&(room.clone(), identity.clone())).unwrap_or_default();
            assert!(history.windows(2).all(|w| w[0] != w[1]), "{room}/{identity}: {history:?} is not a flip each");
            assert!(history.first().copied().unwrap_or(true), "{room}/{identity}: first change is a join");
            assert_eq!(history.last().copied().unwrap_or(false), attendance.present, "{room}/{identity}: {history:?}");
        }
    }
    assert!(flips.is_empty(), "outbox rows for unknown participants: {flips:?}");
}

/// A database of the schema before meetings (migrations 1 to 3) with events, an old heartbeat
/// and an old sweeper estimate: migrating it and rebuilding gives the rule's attendance per
/// meeting, and keeps the heartbeat and the estimate, now in their meetings.
#[tokio::test]
async fn a_database_of_the_previous_schema_migrates_and_rebuilds_every_meeting() {
    use shared::domain::event::WebhookEvent;
    use shared::store::event_log::{self, LoggedEvent};
    use shared::store::{self, read_model};

    let database = TestDatabase::create_shared().await;
    let pool = database.pool().await;
    store::MIGRATOR.run_to(3, &pool).await.unwrap();
    let events = workload::meetings(fastrand::u64(..), 3, 6, 1_790_000_000_000);
    let parsed: Vec<(WebhookEvent, String)> = events
        .iter()
        .map(|e| (WebhookEvent::parse(&e.body).unwrap(), String::from_utf8(e.body.clone()).unwrap()))
        .collect();
    let logged: Vec<LoggedEvent> = parsed
        .iter()
        .map(|(event, json)| LoggedEvent { event, payload: json, received_at_ms: None, stream_sequence: None })
        .collect();
    let mut tx = pool.begin().await.unwrap();
    event_log::insert_events(&mut tx, &logged).await.unwrap();
    tx.commit().await.unwrap();
    // What the previous schema held beside the log: a heartbeat and an estimate, by room name.
    // A session whose left arrived: the estimate cannot change its attendance (a left wins).
    let sid_of = |e: &WebhookEvent| e.participant.as_ref().map(|p| p.sid.clone());
    let (event, _) = parsed
        .iter()
        .find(|(e, _)| {
            e.event == "participant_joined"
                && parsed.iter().any(|(other, _)| other.event == "participant_left" && sid_of(other) == sid_of(e))
        })
        .expect("a session with a joined and a left");
    let (room, room_sid) = (&event.room.as_ref().unwrap().name, &event.room.as_ref().unwrap().sid);
    let participant = event.participant.as_ref().unwrap();
    sqlx::query("INSERT INTO participant_heartbeats (room_name, identity, last_heartbeat_at) VALUES ($1, $2, now())")
        .bind(room)
        .bind(&participant.identity)
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO cycle_closures (room_name, identity, participant_sid, closed_by, closed_at)
         VALUES ($1, $2, $3, 'max_duration', to_timestamp(4000000000))",
    )
    .bind(room)
    .bind(&participant.identity)
    .bind(&participant.sid)
    .execute(&pool)
    .await
    .unwrap();

    store::MIGRATOR.run(&pool).await.unwrap();
    let pending: i64 =
        sqlx::query_scalar("SELECT count(*) FROM meetings WHERE needs_recompute").fetch_one(&pool).await.unwrap();
    assert_eq!(pending, 3, "every meeting of the log is to be rebuilt");
    worker::recompute::rebuild_pending(&pool, &shared::domain::policy::Policy::default()).await.unwrap();
    assert_eq!(
        worker::recompute::rebuild_pending(&pool, &shared::domain::policy::Policy::default())
            .await
            .unwrap()
            .participants,
        0,
        "nothing left to rebuild"
    );

    let expected = workload::expected(&events);
    let mut connection = pool.acquire().await.unwrap();
    for (room, participants) in &expected {
        assert_eq!(&read_model::load_room(&mut connection, room).await.unwrap(), participants, "{room}");
    }
    let heartbeat_meeting: String =
        sqlx::query_scalar("SELECT room_sid FROM meeting_heartbeats").fetch_one(&mut *connection).await.unwrap();
    assert_eq!(&heartbeat_meeting, room_sid, "the heartbeat belongs to the identity's meeting");
    let estimate_meeting: String =
        sqlx::query_scalar("SELECT room_sid FROM cycle_closures").fetch_one(&mut *connection).await.unwrap();
    assert_eq!(&estimate_meeting, room_sid, "the estimate belongs to its session's meeting");
    drop(connection);
    pool.close().await;
    database.drop_database().await;
}

/// A database the previous schema's worker wrote (commit 1584c14, the last before meetings: a
/// weekly class of three meetings under one room name, another room, heartbeats by room name),
/// kept as its `pg_dump`: migrated and rebuilt, every meeting has exactly the attendance and span
/// its events give when applied afresh by today's worker, and the heartbeats moved to meetings.
#[tokio::test]
async fn a_dump_of_the_previous_schema_migrates_to_the_meetings_its_events_give_afresh() {
    use shared::store::{self, meetings, read_model};
    use sqlx::Connection as _;
    use worker::apply::{Applied, Input, apply_batch};

    let migrated = TestDatabase::create_shared().await;
    // A connection of its own: the dump sets the session's search_path.
    let mut restore = sqlx::PgConnection::connect(&migrated.url).await.unwrap();
    sqlx::raw_sql(include_str!("fixtures/schema_v3.sql")).execute(&mut restore).await.unwrap();
    restore.close().await.unwrap();
    let pool = migrated.pool().await;
    let old_heartbeats: i64 =
        sqlx::query_scalar("SELECT count(*) FROM participant_heartbeats").fetch_one(&pool).await.unwrap();
    assert!(old_heartbeats > 0, "the fixture holds heartbeats");
    store::MIGRATOR.run(&pool).await.unwrap();
    worker::recompute::rebuild_pending(&pool, &shared::domain::policy::Policy::default()).await.unwrap();

    // The same events, applied afresh.
    let fresh = TestDatabase::create_shared().await;
    let fresh_pool = fresh.pool().await;
    store::MIGRATOR.run(&fresh_pool).await.unwrap();
    let logged: Vec<(String, Option<i64>)> = sqlx::query_as(
        "SELECT payload::text, (extract(epoch FROM received_at) * 1000)::int8 FROM webhook_events
         ORDER BY stream_sequence NULLS LAST, event_id",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let inputs: Vec<Input> = logged
        .into_iter()
        .enumerate()
        .map(|(i, (payload, received_at_ms))| Input {
            payload: payload.into_bytes().into(),
            received_at_ms,
            stream_sequence: i as u64 + 1,
            traceparent: None,
            wait_for_room: true,
        })
        .collect();
    for batch in inputs.chunks(10) {
        let outcomes = apply_batch(&fresh_pool, batch, &shared::domain::policy::Policy::default()).await.unwrap();
        assert!(outcomes.iter().all(|o| matches!(o, Applied::Stored { .. })), "{outcomes:?}");
    }

    let room_sids = meetings::room_sids(&pool, None).await.unwrap();
    assert_eq!(room_sids, meetings::room_sids(&fresh_pool, None).await.unwrap());
    let class = meetings::room_sids(&pool, Some("algebra-7b")).await.unwrap();
    assert_eq!(class.len(), 3, "three meetings of the class: {room_sids:?}");
    let (mut old, mut new) = (pool.acquire().await.unwrap(), fresh_pool.acquire().await.unwrap());
    for room_sid in &room_sids {
        let attendance = read_model::load_meeting(&mut old, room_sid).await.unwrap();
        assert!(!attendance.is_empty(), "{room_sid} has participants");
        assert_eq!(attendance, read_model::load_meeting(&mut new, room_sid).await.unwrap(), "{room_sid}");
        let span = read_model::meeting(&mut old, room_sid).await.unwrap().expect("rebuilt").span;
        assert_eq!(span, read_model::meeting(&mut new, room_sid).await.unwrap().unwrap().span, "{room_sid}");
    }
    let heartbeats: i64 =
        sqlx::query_scalar("SELECT count(*) FROM meeting_heartbeats").fetch_one(&mut *old).await.unwrap();
    assert_eq!(heartbeats, old_heartbeats, "every heartbeat kept, in a meeting");
    drop((old, new));
    pool.close().await;
    fresh_pool.close().await;
    migrated.drop_database().await;
    fresh.drop_database().await;
}

/// The log stores an event once whatever it names: a participant's (unique within its
/// participant of its meeting), a room's and a room-less one (unique by id alone), each
/// redelivered alone and then all together.
#[tokio::test]
async fn every_kind_of_event_is_logged_once_however_often_it_is_inserted() {
    use shared::domain::event::WebhookEvent;
    use shared::store::{
        self,
        event_log::{self, LoggedEvent},
    };

    let database = TestDatabase::create_shared().await;
    let pool = database.pool().await;
    store::MIGRATOR.run(&pool).await.unwrap();
    let bodies = [
        r#"{"event":"participant_joined","id":"EV_joined","createdAt":"1790000000",
            "room":{"sid":"RM_a","name":"algebra"},"participant":{"sid":"PA_a","identity":"ada"}}"#,
        r#"{"event":"room_finished","id":"EV_finished","createdAt":"1790000100","room":{"sid":"RM_a","name":"algebra"}}"#,
        r#"{"event":"egress_started","id":"EV_egress","createdAt":"1790000010"}"#,
    ];
    let parsed: Vec<WebhookEvent> = bodies.iter().map(|b| WebhookEvent::parse(b.as_bytes()).unwrap()).collect();
    let logged: Vec<LoggedEvent> = parsed
        .iter()
        .zip(bodies)
        .map(|(event, payload)| LoggedEvent { event, payload, received_at_ms: None, stream_sequence: None })
        .collect();
    let mut tx = pool.begin().await.unwrap();
    let first = event_log::insert_events(&mut tx, &logged).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(first.len(), 3, "{first:?}");
    for one in &logged {
        let mut tx = pool.begin().await.unwrap();
        let again = event_log::insert_events(&mut tx, std::slice::from_ref(one)).await.unwrap();
        tx.commit().await.unwrap();
        assert!(again.is_empty(), "{} inserted again", one.event.id);
    }
    let mut tx = pool.begin().await.unwrap();
    assert!(event_log::insert_events(&mut tx, &logged).await.unwrap().is_empty());
    tx.commit().await.unwrap();
    let stored: Vec<String> =
        sqlx::query_scalar("SELECT event_id FROM webhook_events ORDER BY event_id").fetch_all(&pool).await.unwrap();
    assert_eq!(stored, ["EV_egress", "EV_finished", "EV_joined"]);
    pool.close().await;
    database.drop_database().await;
}

/// What PostgreSQL could not store or index (a NUL, an identity far beyond the btree row limit)
/// or could not put in a header (CR/LF) is refused alone, in the batch it came in: its 99
/// neighbours, events and heartbeats, are applied in that same batch, none put off.
#[tokio::test]
async fn unstorable_identifiers_are_refused_alone_and_their_neighbours_applied_in_the_same_batch() {
    use shared::store::{self, read_model};
    use worker::apply::{Applied, Input, apply_batch};

    let database = TestDatabase::create_shared().await;
    let pool = database.pool().await;
    store::MIGRATOR.run(&pool).await.unwrap();
    let joined = |n: usize, room: &str, identity: &str| {
        serde_json::json!({
            "event": "participant_joined", "id": format!("EV_{n}"), "createdAt": "1790000000",
            "room": {"sid": "RM_bad_neighbours", "name": room},
            "participant": {"sid": format!("PA_{n}"), "identity": identity, "joinedAtMs": "1790000000000"},
        })
        .to_string()
    };
    let mut payloads: Vec<String> = (0..96).map(|n| joined(n, "algebra", &format!("student-{n}"))).collect();
    let unstorable = [
        joined(96, "algebra", "nul\0identity"),
        joined(97, "algebra", &"long".repeat(1_000)),
        joined(98, "algebra\r\nX-Injected: 1", "eve"),
        serde_json::json!({"event": "client_heartbeat", "id": "HB_bad", "createdAt": "1790000001",
            "room": {"name": "algebra"}, "participant": {"identity": "nul\0heartbeat"}})
        .to_string(),
    ];
    payloads.splice(10..10, unstorable.iter().cloned());
    let inputs: Vec<Input> = payloads
        .iter()
        .enumerate()
        .map(|(i, payload)| Input {
            payload: payload.clone().into_bytes().into(),
            received_at_ms: Some(1_790_000_000_500),
            stream_sequence: i as u64 + 1,
            traceparent: None,
            wait_for_room: false,
        })
        .collect();
    assert_eq!(inputs.len(), 100);

    let outcomes =
        apply_batch(&pool, &inputs, &shared::domain::policy::Policy::default()).await.expect("the batch commits");
    for (payload, outcome) in payloads.iter().zip(&outcomes) {
        if unstorable.contains(payload) {
            assert!(matches!(outcome, Applied::Rejected(r) if r.reason == "invalid_event"), "{outcome:?}");
        } else {
            assert!(matches!(outcome, Applied::Stored { .. }), "{payload}: {outcome:?}");
        }
    }
    let mut connection = pool.acquire().await.unwrap();
    let meeting = read_model::load_meeting(&mut connection, "RM_bad_neighbours").await.unwrap();
    assert_eq!(meeting.len(), 96, "every good participant stored");
    drop(connection);
    pool.close().await;
    database.drop_database().await;
}
