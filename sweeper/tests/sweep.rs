//! The sweeper against a real PostgreSQL and NATS, with the clock passed in (no sleeping):
//! stale cycles closed at their last heartbeat, corrected by a later participant_left, and two
//! sweepers at once doing each piece of work once.

use std::time::Duration;

use futures::StreamExt as _;
use shared::nats::PresenceArgs;
use shared::nats::presence::{PresenceMessage, PresenceStream};
use shared::store::closures::Staleness;
use shared::store::{self, read_model};
use sweeper::sweep::Swept;
use testkit::postgres::TestDatabase;
use worker::apply::{Applied, Input, apply_batch};

const MINUTE: i64 = 60_000;
const TIMEOUT: Duration = Duration::from_secs(300);
const MAX: Duration = Duration::from_secs(12 * 3600);
const T0: i64 = 1_790_000_000_000;

fn event(event_type: &str, id: &str, room: &str, identity: &str, sid: &str, at_ms: i64, joined_ms: i64) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "event": event_type, "id": id, "createdAt": (at_ms / 1000).to_string(),
        "room": {"sid": format!("RM_{room}"), "name": room},
        "participant": {"sid": sid, "identity": identity, "joinedAtMs": joined_ms.to_string()},
    }))
    .unwrap()
}

/// An event of meeting `room_sid` of room `room` (a room name reused by several meetings).
fn meeting_event(
    event_type: &str,
    id: &str,
    room: &str,
    room_sid: &str,
    identity: &str,
    sid: &str,
    at_ms: i64,
) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "event": event_type, "id": id, "createdAt": (at_ms / 1000).to_string(),
        "room": {"sid": room_sid, "name": room},
        "participant": {"sid": sid, "identity": identity, "joinedAtMs": at_ms.to_string()},
    }))
    .unwrap()
}

fn heartbeat(room: &str, identity: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "event": "client_heartbeat", "id": format!("HB_{}", testkit::unique_suffix()),
        "room": {"name": room}, "participant": {"identity": identity},
    }))
    .unwrap()
}

async fn apply(pool: &sqlx::PgPool, payload: Vec<u8>, received_at_ms: i64) {
    let input = Input {
        payload: payload.into(),
        received_at_ms: Some(received_at_ms),
        stream_sequence: 1,
        traceparent: None,
        wait_for_room: false,
    };
    let outcome = apply_batch(pool, &[input], &shared::domain::policy::Policy::default()).await.expect("applied");
    assert!(matches!(outcome[0], Applied::Stored { .. }), "{outcome:?}");
}

async fn sweep_at(pool: &sqlx::PgPool, now_ms: i64) -> Result<Swept, sqlx::Error> {
    sweeper::sweep::sweep(
        pool,
        &Staleness { now_ms, heartbeat_timeout: TIMEOUT, max_duration: MAX },
        &shared::domain::policy::Policy::default(),
    )
    .await
}

async fn cycle(pool: &sqlx::PgPool, room: &str, identity: &str) -> shared::domain::attendance::Cycle {
    let mut connection = pool.acquire().await.unwrap();
    let attendance = read_model::load_participant(&mut connection, room, identity).await.unwrap().expect("participant");
    assert_eq!(attendance.cycles.len(), 1);
    attendance.cycles[0].clone()
}

#[tokio::test]
async fn a_silent_client_is_closed_at_its_last_heartbeat_and_a_later_left_corrects_it() {
    let database = TestDatabase::create_shared().await;
    let pool = database.pool().await;
    store::MIGRATOR.run(&pool).await.unwrap();
    apply(&pool, event("participant_joined", "EV_j", "r", "ada", "PA_1", T0, T0), T0).await;
    apply(&pool, heartbeat("r", "ada"), T0 + MINUTE).await;
    apply(&pool, heartbeat("r", "ada"), T0 + 2 * MINUTE).await;
    // A client without heartbeats in the same room is never closed this way.
    apply(&pool, event("participant_joined", "EV_k", "r", "bob", "PA_2", T0, T0), T0).await;

    let early = sweep_at(&pool, T0 + 2 * MINUTE + 4 * MINUTE).await.unwrap();
    assert_eq!(early.heartbeat_timeouts, 0, "4 minutes of silence is within the timeout");
    let swept = sweep_at(&pool, T0 + 2 * MINUTE + 6 * MINUTE).await.unwrap();
    assert_eq!((swept.heartbeat_timeouts, swept.max_durations), (1, 0));

    let closed = cycle(&pool, "r", "ada").await;
    assert_eq!(closed.left_at_ms, Some(T0 + 2 * MINUTE), "closed at the last heartbeat");
    assert_eq!(closed.closed_by, Some(shared::domain::attendance::ClosedBy::HeartbeatTimeout));
    assert_eq!(cycle(&pool, "r", "bob").await.left_at_ms, None);

    // The authoritative left arrives late and replaces the estimate.
    apply(&pool, event("participant_left", "EV_l", "r", "ada", "PA_1", T0 + 3 * MINUTE, T0), T0 + 9 * MINUTE).await;
    let corrected = cycle(&pool, "r", "ada").await;
    assert_eq!(corrected.left_at_ms, Some(T0 + 3 * MINUTE));
    assert_eq!(corrected.closed_by, Some(shared::domain::attendance::ClosedBy::ParticipantLeft));

    // bob's cycle has no heartbeat but runs past the maximum: closed there and flagged.
    let late = sweep_at(&pool, T0 + 13 * 60 * MINUTE).await.unwrap();
    assert_eq!(late.max_durations, 1);
    let capped = cycle(&pool, "r", "bob").await;
    assert_eq!(
        (capped.left_at_ms, capped.closed_by),
        (Some(T0 + 12 * 60 * MINUTE), Some(shared::domain::attendance::ClosedBy::MaxDuration))
    );
    pool.close().await;
    database.drop_database().await;
}

#[tokio::test]
async fn a_heartbeat_after_a_timeout_reopens_the_cycle_and_a_batch_keeps_each_participants_latest() {
    let database = TestDatabase::create_shared().await;
    let pool = database.pool().await;
    store::MIGRATOR.run(&pool).await.unwrap();
    apply(&pool, event("participant_joined", "EV_j", "r", "ada", "PA_1", T0, T0), T0).await;
    apply(&pool, event("participant_joined", "EV_bj", "r", "bob", "PA_2", T0, T0), T0).await;
    apply(&pool, heartbeat("r", "ada"), T0 + MINUTE).await;
    sweep_at(&pool, T0 + 10 * MINUTE).await.unwrap();
    assert!(cycle(&pool, "r", "ada").await.left_at_ms.is_some());

    // The client was only cut off: a later heartbeat proves it is still there. Out of order in
    // one batch: the one that proves it, a stale one, another participant's.
    let input = |payload: Vec<u8>, at_ms: i64| Input {
        payload: payload.into(),
        received_at_ms: Some(at_ms),
        stream_sequence: 1,
        traceparent: None,
        wait_for_room: false,
    };
    let batch = [
        input(heartbeat("r", "ada"), T0 + 11 * MINUTE),
        input(heartbeat("r", "ada"), T0 + MINUTE / 2),
        input(heartbeat("r", "bob"), T0 + 3 * MINUTE),
    ];
    let outcomes = apply_batch(&pool, &batch, &shared::domain::policy::Policy::default()).await.unwrap();
    assert!(outcomes.iter().all(|o| matches!(o, Applied::Stored { .. })), "{outcomes:?}");
    assert_eq!(cycle(&pool, "r", "ada").await.left_at_ms, None, "reopened");
    let mut connection = pool.acquire().await.unwrap();
    let last = read_model::last_heartbeats(&mut connection, "r", None).await.unwrap();
    assert_eq!(last.get("ada"), Some(&(T0 + 11 * MINUTE)));
    assert_eq!(last.get("bob"), Some(&(T0 + 3 * MINUTE)));
    drop(connection);
    pool.close().await;
    database.drop_database().await;
}

#[tokio::test]
async fn a_room_that_finished_long_after_the_client_went_silent_ends_the_cycle_at_its_last_heartbeat() {
    let database = TestDatabase::create_shared().await;
    let pool = database.pool().await;
    store::MIGRATOR.run(&pool).await.unwrap();
    for (identity, sid) in [("ada", "PA_1"), ("bob", "PA_2")] {
        apply(&pool, event("participant_joined", &format!("EV_{sid}"), "r", identity, sid, T0, T0), T0).await;
    }
    apply(&pool, heartbeat("r", "ada"), T0 + MINUTE).await;
    apply(&pool, heartbeat("r", "bob"), T0 + 20 * MINUTE).await;
    // The room finishes before the sweeper saw ada's silence: 19 minutes after her last
    // heartbeat, but only 2 minutes after bob's.
    let finished = serde_json::json!({"event": "room_finished", "id": "EV_fin", "createdAt": ((T0 + 22 * MINUTE) / 1000).to_string(),
                                      "room": {"sid": "RM_r", "name": "r"}});
    apply(&pool, serde_json::to_vec(&finished).unwrap(), T0 + 22 * MINUTE).await;
    assert_eq!(cycle(&pool, "r", "ada").await.closed_by, Some(shared::domain::attendance::ClosedBy::RoomFinished));

    let swept = sweep_at(&pool, T0 + 30 * MINUTE).await.unwrap();
    assert_eq!(swept.heartbeat_timeouts, 1, "{swept:?}");
    let ada = cycle(&pool, "r", "ada").await;
    assert_eq!(
        (ada.left_at_ms, ada.closed_by),
        (Some(T0 + MINUTE), Some(shared::domain::attendance::ClosedBy::HeartbeatTimeout))
    );
    let bob = cycle(&pool, "r", "bob").await;
    assert_eq!(
        (bob.left_at_ms, bob.closed_by),
        (Some(T0 + 22 * MINUTE), Some(shared::domain::attendance::ClosedBy::RoomFinished))
    );
    // Nothing is left to do: the next sweep changes nothing.
    assert_eq!(sweep_at(&pool, T0 + 31 * MINUTE).await.unwrap(), Default::default());
    pool.close().await;
    database.drop_database().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_sweepers_at_once_close_each_cycle_once_and_publish_each_change_once() {
    let database = TestDatabase::create_shared().await;
    let pool = database.pool().await;
    store::MIGRATOR.run(&pool).await.unwrap();
    let (rooms, people) = (20, 10);
    let mut inputs = Vec::new();
    for r in 0..rooms {
        for p in 0..people {
            let (room, identity, sid) = (format!("room-{r}"), format!("user-{p}"), format!("PA_{r}_{p}"));
            let joined = event("participant_joined", &format!("EV_{r}_{p}"), &room, &identity, &sid, T0, T0);
            inputs.push(Input {
                payload: joined.into(),
                received_at_ms: Some(T0),
                stream_sequence: 1,
                traceparent: None,
                wait_for_room: false,
            });
            inputs.push(Input {
                payload: heartbeat(&room, &identity).into(),
                received_at_ms: Some(T0 + MINUTE),
                stream_sequence: 2,
                traceparent: None,
                wait_for_room: false,
            });
        }
    }
    apply_batch(&pool, &inputs, &shared::domain::policy::Policy::default()).await.unwrap();

    let now = T0 + 30 * MINUTE;
    let (a, b) = tokio::join!(sweep_at(&pool, now), sweep_at(&pool, now));
    let (a, b) = (a.unwrap(), b.unwrap());
    // A room skipped by one (locked by the other) is swept by the next round.
    let again = sweep_at(&pool, now).await.unwrap();
    assert_eq!(
        a.heartbeat_timeouts + b.heartbeat_timeouts + again.heartbeat_timeouts,
        rooms * people,
        "{a:?} {b:?} {again:?}"
    );
    let closures: i64 = sqlx::query_scalar("SELECT count(*) FROM cycle_closures").fetch_one(&pool).await.unwrap();
    assert_eq!(closures, (rooms * people) as i64);
    let outbox: i64 = sqlx::query_scalar("SELECT count(*) FROM presence_outbox").fetch_one(&pool).await.unwrap();
    assert_eq!(outbox, 2 * (rooms * people) as i64, "a join and a leave per participant");

    let suffix = testkit::unique_suffix();
    let args = PresenceArgs {
        stream: format!("TEST_PRESENCE_{suffix}"),
        subject_prefix: format!("test{suffix}.presence"),
        replicas: 1,
        max_age: Duration::from_secs(3600),
    };
    let nats = async_nats::connect(testkit::nats::shared_url()).await.unwrap();
    let presence = PresenceStream::new(nats.clone(), &args);
    presence.ensure().await.unwrap();
    let publisher = |presence: PresenceStream, pool: sqlx::PgPool| async move {
        let mut published = 0;
        loop {
            let n = sweeper::publish_presence::publish_batch(&pool, &presence, 37).await.unwrap();
            published += n;
            let pending = store::presence_outbox::pending(&pool).await.unwrap();
            if pending == 0 {
                return published;
            }
            if n == 0 {
                tokio::task::yield_now().await;
            }
        }
    };
    let (first, second) =
        tokio::join!(publisher(presence.clone(), pool.clone()), publisher(presence.clone(), pool.clone()));
    assert_eq!(first + second, 2 * rooms * people, "each change published once");

    let js = async_nats::jetstream::new(nats);
    let mut stream = js.get_stream(&args.stream).await.unwrap();
    assert_eq!(stream.info().await.unwrap().state.messages, (2 * rooms * people) as u64);
    let consumer = stream.create_consumer(async_nats::jetstream::consumer::pull::Config::default()).await.unwrap();
    let mut messages = consumer.fetch().max_messages(2 * rooms * people).messages().await.unwrap();
    let mut last_id_by_participant = std::collections::HashMap::new();
    let mut seen = 0;
    while let Some(message) = messages.next().await {
        let change = PresenceMessage::decode(&message.unwrap().payload).expect("a presence message");
        let previous =
            last_id_by_participant.insert((change.room.clone(), change.identity.clone()), (change.id, change.present));
        match previous {
            None => assert!(change.present, "the join comes first"),
            Some((id, present)) => assert!(id < change.id && present && !change.present, "in order per participant"),
        }
        seen += 1;
    }
    assert_eq!(seen, 2 * rooms * people);
    let _ = js.delete_stream(&args.stream).await;
    pool.close().await;
    database.drop_database().await;
}

/// The reused room name: a weekly class is one room name, each week a new meeting. A lost left
/// in meeting 1, closed at the last heartbeat, must stay so when the same identity joins the same
/// room name in meeting 2 and sends heartbeats there (it used to be reopened and closed again
/// later: 2 s became 12 s).
#[tokio::test]
async fn heartbeats_in_a_later_meeting_of_the_room_name_never_reopen_an_earlier_one() {
    let database = TestDatabase::create_shared().await;
    let pool = database.pool().await;
    store::MIGRATOR.run(&pool).await.unwrap();
    let week = 7 * 24 * 60 * MINUTE;
    // Meeting 1: ada joins, heartbeats for 2 minutes, her left and the room_finished are lost.
    apply(&pool, meeting_event("participant_joined", "EV_1j", "algebra", "RM_week1", "ada", "PA_1", T0), T0).await;
    apply(&pool, heartbeat("algebra", "ada"), T0 + MINUTE).await;
    apply(&pool, heartbeat("algebra", "ada"), T0 + 2 * MINUTE).await;
    assert_eq!(sweep_at(&pool, T0 + 8 * MINUTE).await.unwrap().heartbeat_timeouts, 1);

    // Meeting 2, a week later: same room name, same identity, a new room sid.
    let t1 = T0 + week;
    apply(&pool, meeting_event("participant_joined", "EV_2j", "algebra", "RM_week2", "ada", "PA_2", t1), t1).await;
    apply(&pool, heartbeat("algebra", "ada"), t1 + MINUTE).await;
    apply(&pool, heartbeat("algebra", "ada"), t1 + 2 * MINUTE).await;

    let mut connection = pool.acquire().await.unwrap();
    let first = read_model::load_meeting(&mut connection, "RM_week1").await.unwrap();
    let ada = &first["ada"];
    assert_eq!(ada.cycles.len(), 1);
    assert_eq!(ada.cycles[0].left_at_ms, Some(T0 + 2 * MINUTE), "still closed at its last heartbeat");
    assert_eq!(ada.cycles[0].closed_by, Some(shared::domain::attendance::ClosedBy::HeartbeatTimeout));
    assert_eq!(ada.attended_ms, 2 * MINUTE);
    let second = read_model::load_meeting(&mut connection, "RM_week2").await.unwrap();
    assert!(second["ada"].present, "present in the running meeting");
    assert_eq!(second["ada"].cycles.len(), 1);

    // The room name's total adds the meetings up: the course total.
    let total = read_model::load_participant(&mut connection, "algebra", "ada").await.unwrap().unwrap();
    assert_eq!((total.join_count, total.cycles.len(), total.present), (2, 2, true));
    drop(connection);

    // Meeting 1's room_finished arrives late; meeting 1 ends there, meeting 2 is untouched.
    let finished = serde_json::to_vec(&serde_json::json!({
        "event": "room_finished", "id": "EV_1f", "createdAt": ((T0 + 30 * MINUTE) / 1000).to_string(),
        "room": {"sid": "RM_week1", "name": "algebra"},
    }))
    .unwrap();
    apply(&pool, finished, t1 + 3 * MINUTE).await;
    let mut connection = pool.acquire().await.unwrap();
    let first = read_model::load_meeting(&mut connection, "RM_week1").await.unwrap();
    assert_eq!(first["ada"].cycles[0].left_at_ms, Some(T0 + 2 * MINUTE), "the earliest estimate wins");
    assert!(read_model::load_meeting(&mut connection, "RM_week2").await.unwrap()["ada"].present);
    drop(connection);
    pool.close().await;
    database.drop_database().await;
}

/// A heartbeat can reach the worker before its participant's join is applied: another replica
/// holds the join's meeting, or the join is a few messages behind. The heartbeat is then put off
/// rather than lost or counted in the previous meeting of the room name (which never ended
/// here); after enough deferrals it waits for the meetings of its room being applied, and one
/// that falls in no meeting is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_heartbeat_before_its_join_is_put_off_then_counts_in_its_own_meeting() {
    use shared::store::meetings;

    let database = TestDatabase::create_shared().await;
    let pool = database.pool().await;
    store::MIGRATOR.run(&pool).await.unwrap();
    let input = |payload: Vec<u8>, at_ms: i64, wait_for_room: bool| Input {
        payload: payload.into(),
        received_at_ms: Some(at_ms),
        stream_sequence: 1,
        traceparent: None,
        wait_for_room,
    };
    let heartbeats_of = |identity: &'static str| {
        let pool = pool.clone();
        async move {
            sqlx::query_as::<_, (String, i64)>(
                "SELECT room_sid, (extract(epoch FROM last_heartbeat_at) * 1000)::int8 FROM meeting_heartbeats
                 WHERE identity = $1 ORDER BY room_sid",
            )
            .bind(identity)
            .fetch_all(&pool)
            .await
            .unwrap()
        }
    };
    // Meeting 1: ada joins; its room_finished never comes, so it is still running as stored.
    apply(&pool, meeting_event("participant_joined", "EV_1j", "algebra", "RM_w1", "ada", "PA_1", T0), T0).await;
    let t2 = T0 + 7 * 24 * 60 * MINUTE;

    // Meeting 2: bob's heartbeat comes before his join. He never joined meeting 1: put off.
    let bob_heartbeat = input(heartbeat("algebra", "bob"), t2 + 1_000, false);
    assert_eq!(
        apply_batch(&pool, std::slice::from_ref(&bob_heartbeat), &shared::domain::policy::Policy::default())
            .await
            .unwrap(),
        [Applied::Deferred]
    );
    apply(&pool, meeting_event("participant_joined", "EV_2b", "algebra", "RM_w2", "bob", "PA_2", t2), t2).await;
    let outcomes = apply_batch(&pool, &[bob_heartbeat], &shared::domain::policy::Policy::default()).await.unwrap();
    assert!(matches!(outcomes[0], Applied::Stored { .. }), "{outcomes:?}");
    assert_eq!(heartbeats_of("bob").await, [("RM_w2".to_owned(), t2 + 1_000)]);

    // Meeting 3: another replica has created it and holds it, applying ada's join. Ada was in
    // meeting 1, which never ended; her heartbeat is put off, then waits for meeting 3.
    let t3 = t2 + 7 * 24 * 60 * MINUTE;
    meetings::create_meetings(&pool, &[("RM_w3".to_owned(), "algebra".to_owned())].into()).await.unwrap();
    let mut other = pool.begin().await.unwrap();
    let w3 = std::collections::BTreeSet::from(["RM_w3".to_owned()]);
    meetings::lock_meetings(&mut other, &w3, &Default::default()).await.unwrap();
    let ada_heartbeat = |wait_for_room| input(heartbeat("algebra", "ada"), t3 + 1_000, wait_for_room);
    assert_eq!(
        apply_batch(&pool, &[ada_heartbeat(false)], &shared::domain::policy::Policy::default()).await.unwrap(),
        [Applied::Deferred]
    );
    let spawn_batch = |inputs: Vec<Input>| {
        let pool = pool.clone();
        tokio::spawn(async move { apply_batch(&pool, &inputs, &shared::domain::policy::Policy::default()).await })
    };
    let join_w3 = meeting_event("participant_joined", "EV_3a", "algebra", "RM_w3", "ada", "PA_3", t3);
    let join = spawn_batch(vec![input(join_w3, t3, true)]);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let waiting = spawn_batch(vec![ada_heartbeat(true)]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiting.is_finished(), "waits for the meeting being applied");
    other.commit().await.unwrap();
    assert!(matches!(join.await.unwrap().unwrap()[0], Applied::Stored { .. }));
    let outcomes = waiting.await.unwrap().unwrap();
    assert!(matches!(outcomes[0], Applied::Stored { .. }), "{outcomes:?}");
    assert_eq!(heartbeats_of("ada").await, [("RM_w3".to_owned(), t3 + 1_000)], "meeting 1 untouched");

    // A room with no meeting: put off, then refused once it has waited.
    let nowhere = |wait_for_room| input(heartbeat("geometry", "ada"), t3, wait_for_room);
    assert_eq!(
        apply_batch(&pool, &[nowhere(false)], &shared::domain::policy::Policy::default()).await.unwrap(),
        [Applied::Deferred]
    );
    assert_eq!(
        apply_batch(&pool, &[nowhere(true)], &shared::domain::policy::Policy::default()).await.unwrap(),
        [Applied::Refused { reason: "no_meeting" }]
    );
    pool.close().await;
    database.drop_database().await;
}

/// A meeting whose room_finished never came is ended where LiveKit would have closed it (its
/// departure timeout after the last leave) once that is more than the margin past; the real
/// room_finished, arriving late, replaces the estimate. A meeting with someone in it is never
/// ended this way.
#[tokio::test]
async fn a_meeting_whose_room_finished_never_came_is_ended_by_inference_and_the_real_one_replaces_it() {
    use shared::domain::meeting::EndedBy;

    let database = TestDatabase::create_shared().await;
    let pool = database.pool().await;
    store::MIGRATOR.run(&pool).await.unwrap();
    let margin = Duration::from_secs(300);
    let started = serde_json::to_vec(&serde_json::json!({
        "event": "room_started", "id": "EV_s", "createdAt": (T0 / 1000).to_string(),
        "room": {"sid": "RM_idle", "name": "algebra", "departureTimeout": 30},
    }))
    .unwrap();
    apply(&pool, started, T0).await;
    apply(&pool, meeting_event("participant_joined", "EV_j", "algebra", "RM_idle", "ada", "PA_1", T0), T0).await;
    let left_at = T0 + 10 * MINUTE;
    let left = serde_json::to_vec(&serde_json::json!({
        "event": "participant_left", "id": "EV_l", "createdAt": (left_at / 1000).to_string(),
        "room": {"sid": "RM_idle", "name": "algebra"},
        "participant": {"sid": "PA_1", "identity": "ada", "joinedAtMs": T0.to_string()},
    }))
    .unwrap();
    apply(&pool, left, left_at).await;
    // Another meeting, with someone still in it.
    apply(&pool, meeting_event("participant_joined", "EV_k", "physics", "RM_busy", "bob", "PA_2", T0), T0).await;

    let close = left_at + 30_000;
    let meeting = |room_sid: &'static str| {
        let pool = pool.clone();
        async move {
            let mut connection = pool.acquire().await.unwrap();
            read_model::meeting(&mut connection, room_sid).await.unwrap().expect("the meeting")
        }
    };
    let margin_ms = 300_000;
    assert_eq!(
        sweeper::sweep::end_idle_meetings(&pool, close + margin_ms, margin, &shared::domain::policy::Policy::default())
            .await
            .unwrap(),
        0,
        "not yet"
    );
    assert_eq!(
        sweeper::sweep::end_idle_meetings(
            &pool,
            close + margin_ms + 1,
            margin,
            &shared::domain::policy::Policy::default()
        )
        .await
        .unwrap(),
        1
    );
    let inferred = meeting("RM_idle").await.span;
    assert_eq!((inferred.ended_at_ms, inferred.ended_by), (Some(close), Some(EndedBy::Inferred)));
    assert_eq!(meeting("RM_busy").await.span.ended_at_ms, None, "someone is still in it");
    assert_eq!(
        sweeper::sweep::end_idle_meetings(
            &pool,
            close + 2 * margin_ms,
            margin,
            &shared::domain::policy::Policy::default()
        )
        .await
        .unwrap(),
        0,
        "once"
    );

    // A heartbeat after the end counts for no meeting: the ended one takes none. (Refused once
    // it has been put off enough times to wait.)
    let after_end = Input {
        payload: heartbeat("algebra", "ada").into(),
        received_at_ms: Some(close + MINUTE),
        stream_sequence: 1,
        traceparent: None,
        wait_for_room: true,
    };
    let outcomes = apply_batch(&pool, &[after_end], &shared::domain::policy::Policy::default()).await.unwrap();
    assert_eq!(outcomes, [Applied::Refused { reason: "no_meeting" }]);
    let heartbeats: i64 = sqlx::query_scalar("SELECT count(*) FROM meeting_heartbeats").fetch_one(&pool).await.unwrap();
    assert_eq!(heartbeats, 0);

    let finished = serde_json::to_vec(&serde_json::json!({
        "event": "room_finished", "id": "EV_f", "createdAt": ((left_at + 20_000) / 1000).to_string(),
        "room": {"sid": "RM_idle", "name": "algebra"},
    }))
    .unwrap();
    apply(&pool, finished, close + 2 * margin_ms).await;
    let real = meeting("RM_idle").await.span;
    assert_eq!((real.ended_at_ms, real.ended_by), (Some(left_at + 20_000), Some(EndedBy::RoomFinished)));
    pool.close().await;
    database.drop_database().await;
}
