//! Retention against a real PostgreSQL: a meeting past the retention has its events deleted in
//! batches and is sealed: its attendance kept as it was, never recomputed, late events refused.

use shared::store::{self, read_model};
use testkit::postgres::TestDatabase;
use testkit::workload;

#[tokio::test]
async fn a_meeting_past_the_retention_is_sealed_its_events_deleted_in_batches_and_never_recomputed() {
    use worker::apply::{Applied, Input, apply_batch};

    let database = TestDatabase::create_shared().await;
    let pool = database.pool().await;
    store::MIGRATOR.run(&pool).await.unwrap();
    let start = 1_700_000_000_000;
    let events = workload::meetings(7, 1, 8, start);
    let inputs: Vec<Input> = events
        .iter()
        .map(|e| Input {
            payload: e.body.clone().into(),
            received_at_ms: Some(start),
            stream_sequence: 1,
            traceparent: None,
            wait_for_room: false,
        })
        .collect();
    apply_batch(&pool, &inputs, &shared::domain::policy::Policy::default()).await.unwrap();
    let room = events[0].room.clone();
    // The meeting ends (its room_finished may be one of the workload's lost ones).
    let finished = serde_json::to_vec(&serde_json::json!({
        "event": "room_finished", "id": "EV_end", "createdAt": ((start + 5 * 3_600_000) / 1000).to_string(),
        "room": {"sid": "RM_7_0", "name": room},
    }))
    .unwrap();
    let end = Input {
        payload: finished.into(),
        received_at_ms: Some(start),
        stream_sequence: 2,
        traceparent: None,
        wait_for_room: false,
    };
    apply_batch(&pool, &[end], &shared::domain::policy::Policy::default()).await.unwrap();
    let mut connection = pool.acquire().await.unwrap();
    let before = read_model::load_room(&mut connection, &room).await.unwrap();
    drop(connection);
    let logged: i64 = sqlx::query_scalar("SELECT count(*) FROM webhook_events").fetch_one(&pool).await.unwrap();
    assert!(logged > 10);

    // Retention 400 days, a day past it: deleted 5 at a time, over several rounds.
    let now = start + 5 * 3_600_000 + 401 * 86_400_000;
    let retention_cutoff = now - 400 * 86_400_000;
    let mut rounds = 0;
    let mut deleted = 0;
    loop {
        let round = sweeper::sweep::purge_expired(&pool, retention_cutoff, 5).await.unwrap();
        deleted += round;
        rounds += 1;
        if round == 0 {
            break;
        }
    }
    assert_eq!(deleted, logged as u64);
    assert!(rounds > logged as usize / 5, "in batches: {rounds} rounds");
    let mut connection = pool.acquire().await.unwrap();
    assert_eq!(read_model::load_room(&mut connection, &room).await.unwrap(), before, "attendance kept as it was");
    drop(connection);

    // A late event of the sealed meeting is refused; a recompute leaves the meeting alone.
    let late = Input {
        payload: testkit::livekit::participant_joined("EV_late", &room, "user-9").into(),
        received_at_ms: Some(now),
        stream_sequence: 3,
        traceparent: None,
        wait_for_room: false,
    };
    // participant_joined's room sid is RM_<room>; make it the sealed meeting's.
    let body = String::from_utf8(late.payload.to_vec()).unwrap().replace(&format!("RM_{room}"), "RM_7_0");
    let late = Input { payload: body.into_bytes().into(), ..late };
    assert_eq!(
        apply_batch(&pool, &[late], &shared::domain::policy::Policy::default()).await.unwrap(),
        vec![Applied::Refused { reason: "meeting_sealed" }]
    );
    let recomputed =
        worker::recompute::recompute(&pool, None, &shared::domain::policy::Policy::default()).await.unwrap();
    assert_eq!((recomputed.participants, recomputed.sealed_skipped), (0, 1));
    let mut connection = pool.acquire().await.unwrap();
    assert_eq!(read_model::load_room(&mut connection, &room).await.unwrap(), before);
    drop(connection);
    pool.close().await;
    database.drop_database().await;
}
