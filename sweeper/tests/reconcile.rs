//! Reconciliation with the LiveKit server, against a real PostgreSQL and NATS and a stand-in
//! RoomService (`testkit::livekit_server`) that LiveKit's official Python SDK proves right: lost
//! lefts, lost joins and rooms gone are repaired as estimates that the real events replace;
//! LiveKit down or hanging closes nothing and pauses the calls while sweeping and presence go
//! on; two reconcilers check each room once per interval; every call carries a token the stand-in
//! checks.

use std::collections::BTreeMap;
use std::time::Duration;

use prometheus_client::registry::Registry;
use serde_json::{Value, json};
use shared::domain::attendance::ClosedBy;
use shared::domain::meeting::EndedBy;
use shared::domain::policy::Policy;
use shared::domain::time::{now_unix_ms, unix_ms};
use shared::livekit::room_service::RoomService;
use shared::runtime::http_client::{OriginClient, tls_client_config};
use shared::store::read_model;
use sweeper::metrics::SweeperMetrics;
use sweeper::reconcile::Reconciler;
use testkit::livekit::{TEST_KEYS, test_keys};
use testkit::livekit_server::{Mode, Participant, StandIn};
use testkit::postgres::TestDatabase;
use tokio_util::sync::CancellationToken;
use worker::apply::{Applied, Input, apply_batch};

const MINUTE: i64 = 60_000;
const WAIT: Duration = Duration::from_secs(30);

fn participant_event(
    event_type: &str,
    room: &str,
    room_sid: &str,
    sid: &str,
    identity: &str,
    at_ms: i64,
    joined_ms: i64,
) -> Value {
    json!({"event": event_type, "id": format!("EV_{event_type}_{sid}"), "createdAt": (at_ms / 1000).to_string(),
           "room": {"sid": room_sid, "name": room},
           "participant": {"sid": sid, "identity": identity, "name": format!("{identity} name"),
                           "joinedAtMs": joined_ms.to_string()}})
}

async fn apply(pool: &sqlx::PgPool, event: Value) {
    let input = Input {
        payload: serde_json::to_vec(&event).unwrap().into(),
        received_at_ms: Some(now_unix_ms()),
        stream_sequence: 1,
        traceparent: None,
        wait_for_room: false,
    };
    let outcome = apply_batch(pool, &[input], &Policy::default()).await.expect("applied");
    assert!(matches!(outcome[0], Applied::Stored { .. }), "{outcome:?}");
}

async fn setup() -> (TestDatabase, sqlx::PgPool, StandIn) {
    let database = TestDatabase::create_shared().await;
    let pool = database.pool().await;
    shared::store::MIGRATOR.run(&pool).await.unwrap();
    (database, pool, StandIn::start(test_keys()).await)
}

fn room_service(url: &str, api_key: &str, secret: &str, timeout: Duration) -> RoomService {
    let client = OriginClient::new(url.parse().unwrap(), tls_client_config(None, "TEST").unwrap(), timeout, "test");
    let keys = shared::livekit::KeySet::parse(&format!("{api_key}: {secret}")).unwrap();
    RoomService::new(client, api_key, keys.secret(api_key).unwrap().clone())
}

fn test_secret() -> String {
    let keys = test_keys();
    String::from_utf8(keys.secret("APItestAlpha").unwrap().expose().to_vec()).unwrap()
}

/// A reconciler of the test's database against `url`, running until the returned token is
/// cancelled.
fn start_reconciler(
    pool: &sqlx::PgPool,
    service: RoomService,
    interval: Duration,
) -> (CancellationToken, SweeperMetrics, tokio::task::JoinHandle<()>) {
    let metrics = SweeperMetrics::register(&mut Registry::default());
    let reconciler = Reconciler {
        service,
        pool: pool.clone(),
        interval,
        max_rps: 1000.0,
        concurrency: 8,
        policy: Policy::default(),
        metrics: metrics.clone(),
    };
    let shutdown = CancellationToken::new();
    let token = shutdown.clone();
    let running = tokio::spawn(async move { reconciler.run(&token).await });
    (shutdown, metrics, running)
}

/// When a check last listed the meeting's room, once it lists `sid`.
async fn listed_with(pool: &sqlx::PgPool, room_sid: &str, sid: &str) -> i64 {
    testkit::eventually(WAIT, &format!("a check of {room_sid} listing {sid}"), || async {
        let listed: Option<time::OffsetDateTime> =
            sqlx::query_scalar("SELECT listed_at FROM meeting_checks WHERE room_sid = $1 AND $2 = ANY(listed_sids)")
                .bind(room_sid)
                .bind(sid)
                .fetch_optional(pool)
                .await
                .unwrap()
                .flatten();
        listed.map(unix_ms)
    })
    .await
}

async fn attendance(pool: &sqlx::PgPool, room_sid: &str) -> BTreeMap<String, shared::domain::attendance::Attendance> {
    let mut connection = pool.acquire().await.unwrap();
    read_model::load_meeting(&mut connection, room_sid).await.unwrap()
}

async fn meeting_end(pool: &sqlx::PgPool, room_sid: &str) -> Option<(i64, String)> {
    let row: Option<(Option<time::OffsetDateTime>, Option<String>)> =
        sqlx::query_as("SELECT ended_at, ended_by FROM meetings WHERE room_sid = $1")
            .bind(room_sid)
            .fetch_optional(pool)
            .await
            .unwrap();
    match row {
        Some((Some(ended_at), Some(ended_by))) => Some((unix_ms(ended_at), ended_by)),
        _ => None,
    }
}

#[tokio::test]
async fn the_stand_in_answers_as_livekit_does_to_its_official_python_sdk() {
    let standin = StandIn::start(test_keys()).await;
    let t = now_unix_ms() - 10 * MINUTE;
    let mut sip = Participant::active("PA_sip", "caller", t + 1_234);
    sip.kind = "SIP";
    sip.metadata = r#"{"user_id":7}"#.into();
    let mut joining = Participant::active("PA_new", "newcomer", t + 5_000);
    joining.state = "JOINING";
    standin.set_room("algebra", "RM_algebra", vec![Participant::active("PA_ada", "ada", t), sip, joining]);

    let python = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../.local/py/bin/python");
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/room_service_sdk.py");
    let output = tokio::process::Command::new(&python)
        .arg(&script)
        .args([standin.url(), "APItestAlpha".into(), test_secret(), "algebra".into()])
        .output()
        .await
        .unwrap_or_else(|e| {
            panic!("run {}: {e} (scripts/example-tools.sh installs livekit-api; make test runs it)", python.display())
        });
    assert!(output.status.success(), "the SDK failed: {}", String::from_utf8_lossy(&output.stderr));
    let seen: Value = serde_json::from_slice(&output.stdout).expect("the script prints JSON");

    // The SDK (protobuf) reads what the stand-in holds, in LiveKit's message types.
    let participants = seen["participants"].as_array().unwrap();
    assert_eq!(participants.len(), 3);
    assert_eq!(participants[0]["sid"], "PA_ada");
    assert_eq!(participants[0]["state"], "ACTIVE");
    assert_eq!(participants[0]["joinedAtMs"], t.to_string());
    assert_eq!(participants[0]["joinedAt"], (t / 1000).to_string());
    assert_eq!(
        (participants[1]["kind"].as_str(), participants[1]["metadata"].as_str()),
        (Some("SIP"), Some(r#"{"user_id":7}"#))
    );
    assert_eq!(participants[2].get("state"), None, "JOINING is protobuf's zero value");
    let rooms = seen["rooms"].as_array().unwrap();
    assert_eq!(rooms.len(), 1, "a name LiveKit does not have is not listed");
    assert_eq!((rooms[0]["sid"].as_str(), rooms[0]["name"].as_str()), (Some("RM_algebra"), Some("algebra")));
    assert_eq!(rooms[0]["numParticipants"], 3);
    // A room LiveKit does not have lists nobody (livekit-server reads only its participant store).
    assert_eq!(seen["missing_room_participants"], 0);
    // A token that does not verify is refused before Twirp (a plain-text 401); a token without
    // the grant, or for another room, gets Twirp's unauthenticated.
    assert_eq!(seen["wrong_secret"]["status"], 401);
    assert_eq!(seen["other_room"]["status"], 401);
    assert_eq!(seen["other_room"]["body"]["code"], "unauthenticated");
    assert_eq!(seen["other_room"]["body"]["msg"], "permissions denied");
    assert_eq!(seen["other_room"]["content_type"], "application/json");
    assert_eq!(seen["join_grant"]["status"], 401, "roomJoin is not roomAdmin");
    // The JSON the sweeper reads is LiveKit's own messages, written as livekit-server writes them.
    assert_eq!(seen["json_content_type"], "application/json");
    assert_eq!(seen["json_equals_protobuf"], true);
    assert_eq!(seen["json_as_livekit_writes_it"], true);
    assert_eq!(seen["rooms_json_equals_protobuf"], true);
    assert_eq!(seen["rooms_json_as_livekit_writes_it"], true);

    // And the sweeper's client reads the same.
    let service = room_service(&standin.url(), "APItestAlpha", &test_secret(), Duration::from_secs(5));
    let now = now_unix_ms() / 1000;
    let listed = service.list_participants("algebra", now).await.unwrap();
    let sids: Vec<(&str, Option<i64>, &str)> =
        listed.iter().map(|p| (p.info.sid.as_str(), p.joined_at_ms, p.info.kind.as_str())).collect();
    assert_eq!(
        sids,
        [("PA_ada", Some(t), "STANDARD"), ("PA_sip", Some(t + 1_234), "SIP"), ("PA_new", Some(t + 5_000), "STANDARD")]
    );
    assert!(service.list_participants("no-such-room", now).await.unwrap().is_empty());
    assert!(service.list_rooms(&["no-such-room"], now).await.unwrap().is_empty());
    let rooms = service.list_rooms(&["algebra"], now).await.unwrap();
    assert_eq!(rooms[0].sid, "RM_algebra");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_left_is_closed_where_it_was_last_seen_and_the_real_left_replaces_it() {
    let (database, pool, standin) = setup().await;
    let t = now_unix_ms() - 10 * MINUTE;
    for (sid, identity) in [("PA_ada", "ada"), ("PA_bob", "bob")] {
        apply(&pool, participant_event("participant_joined", "algebra", "RM_a", sid, identity, t, t)).await;
    }
    standin.set_room(
        "algebra",
        "RM_a",
        vec![Participant::active("PA_ada", "ada", t), Participant::active("PA_bob", "bob", t)],
    );
    let service = room_service(&standin.url(), "APItestAlpha", &test_secret(), Duration::from_secs(5));
    let (shutdown, _, running) = start_reconciler(&pool, service, Duration::from_secs(3));

    // bob's participant_left is lost: LiveKit stops listing him.
    let last_seen = listed_with(&pool, "RM_a", "PA_bob").await;
    standin.set_room("algebra", "RM_a", vec![Participant::active("PA_ada", "ada", t)]);
    let bob = testkit::eventually(WAIT, "bob's cycle closed by reconciliation", || async {
        let bob = attendance(&pool, "RM_a").await.remove("bob")?;
        (!bob.present).then_some(bob)
    })
    .await;
    assert_eq!(
        (bob.cycles[0].left_at_ms, bob.cycles[0].closed_by),
        (Some(last_seen), Some(ClosedBy::Reconciled)),
        "closed at the last check that listed him"
    );
    assert!(attendance(&pool, "RM_a").await["ada"].present, "ada is still listed");
    shutdown.cancel();
    running.await.unwrap();

    // The real left arrives late: it replaces the estimate.
    let left_at = (last_seen / 1000 + 20) * 1000;
    apply(&pool, participant_event("participant_left", "algebra", "RM_a", "PA_bob", "bob", left_at, t)).await;
    let bob = attendance(&pool, "RM_a").await.remove("bob").unwrap();
    assert_eq!((bob.cycles[0].left_at_ms, bob.cycles[0].closed_by), (Some(left_at), Some(ClosedBy::ParticipantLeft)));
    assert_eq!(bob.attended_ms, left_at - t);
    pool.close().await;
    database.drop_database().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_join_is_opened_from_livekits_join_time_and_the_real_join_changes_nothing() {
    let (database, pool, standin) = setup().await;
    let t = now_unix_ms() - 10 * MINUTE;
    apply(&pool, participant_event("participant_joined", "algebra", "RM_a", "PA_ada", "ada", t, t)).await;
    // carl's participant_joined was lost; LiveKit lists him.
    let carl_joined = t + 90_123;
    standin.set_room(
        "algebra",
        "RM_a",
        vec![Participant::active("PA_ada", "ada", t), Participant::active("PA_carl", "carl", carl_joined)],
    );
    let service = room_service(&standin.url(), "APItestAlpha", &test_secret(), Duration::from_secs(5));
    let (shutdown, metrics, running) = start_reconciler(&pool, service, Duration::from_secs(1));

    let carl = testkit::eventually(WAIT, "carl's cycle opened by reconciliation", || async {
        attendance(&pool, "RM_a").await.remove("carl")
    })
    .await;
    assert_eq!((carl.cycles.len(), carl.cycles[0].joined_at_ms, carl.present), (1, carl_joined, true));
    assert_eq!((carl.join_count, carl.name.as_str()), (1, "carl name"));
    testkit::eventually(WAIT, "the opening counted", || async {
        (metrics.reconcile_cycles_opened.get() == 1).then_some(())
    })
    .await;
    // Presence learned it too.
    let present: i64 = sqlx::query_scalar("SELECT count(*) FROM presence_outbox WHERE identity = 'carl' AND present")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(present, 1);
    shutdown.cancel();
    running.await.unwrap();

    // The real join, arriving later, says the same: nothing changes.
    let before = attendance(&pool, "RM_a").await;
    apply(
        &pool,
        participant_event("participant_joined", "algebra", "RM_a", "PA_carl", "carl", carl_joined, carl_joined),
    )
    .await;
    assert_eq!(attendance(&pool, "RM_a").await, before);
    pool.close().await;
    database.drop_database().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_gone_ends_the_meeting_and_a_late_room_finished_replaces_the_inferred_end() {
    let (database, pool, standin) = setup().await;
    let t = now_unix_ms() - 10 * MINUTE;
    apply(&pool, participant_event("participant_joined", "algebra", "RM_a", "PA_ada", "ada", t, t)).await;
    apply(&pool, participant_event("participant_joined", "physics", "RM_p", "PA_bob", "bob", t, t)).await;
    standin.set_room("algebra", "RM_a", vec![Participant::active("PA_ada", "ada", t)]);
    standin.set_room("physics", "RM_p", vec![Participant::active("PA_bob", "bob", t)]);
    let service = room_service(&standin.url(), "APItestAlpha", &test_secret(), Duration::from_secs(5));
    let (shutdown, metrics, running) = start_reconciler(&pool, service, Duration::from_secs(3));
    let algebra_seen = listed_with(&pool, "RM_a", "PA_ada").await;
    let physics_seen = listed_with(&pool, "RM_p", "PA_bob").await;

    // algebra's room closes (its room_finished is lost); physics's name is reused by a new
    // session whose participant must not land in the old meeting.
    standin.remove_room("algebra");
    standin.set_room("physics", "RM_p_next", vec![Participant::active("PA_new", "newcomer", now_unix_ms() - MINUTE)]);
    for (room_sid, seen) in [("RM_a", algebra_seen), ("RM_p", physics_seen)] {
        let end =
            testkit::eventually(WAIT, &format!("{room_sid} ended by reconciliation"), || meeting_end(&pool, room_sid))
                .await;
        assert_eq!(end, (seen, EndedBy::Inferred.as_str().to_owned()), "{room_sid} ended when a check last saw it");
    }
    testkit::eventually(WAIT, "both ends counted", || async {
        (metrics.reconcile_meetings_ended.get() == 2).then_some(())
    })
    .await;
    let algebra = attendance(&pool, "RM_a").await;
    assert_eq!(
        (algebra["ada"].cycles[0].left_at_ms, algebra["ada"].cycles[0].closed_by),
        (Some(algebra_seen), Some(ClosedBy::Reconciled))
    );
    assert_eq!(attendance(&pool, "RM_p").await.keys().collect::<Vec<_>>(), ["bob"], "nobody of the next session");
    let watched: i64 = sqlx::query_scalar("SELECT count(*) FROM meeting_checks").fetch_one(&pool).await.unwrap();
    assert_eq!(watched, 0, "ended meetings are no longer checked");
    shutdown.cancel();
    running.await.unwrap();

    // The late room_finished replaces the inferred end.
    let finished_at = (algebra_seen / 1000 + 30) * 1000;
    let finished = json!({"event": "room_finished", "id": "EV_fin", "createdAt": (finished_at / 1000).to_string(),
                          "room": {"sid": "RM_a", "name": "algebra"}});
    apply(&pool, finished).await;
    assert_eq!(meeting_end(&pool, "RM_a").await, Some((finished_at, EndedBy::RoomFinished.as_str().to_owned())));
    pool.close().await;
    database.drop_database().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_reconcilers_check_each_room_once_per_interval() {
    let (database, pool, standin) = setup().await;
    let t = now_unix_ms() - 10 * MINUTE;
    let rooms = 30;
    for r in 0..rooms {
        let (room, room_sid, sid) = (format!("room-{r}"), format!("RM_{r}"), format!("PA_{r}"));
        apply(&pool, participant_event("participant_joined", &room, &room_sid, &sid, "ada", t, t)).await;
        standin.set_room(&room, &room_sid, vec![Participant::active(&sid, "ada", t)]);
    }
    let interval = Duration::from_secs(2);
    let service = || room_service(&standin.url(), "APItestAlpha", &test_secret(), Duration::from_secs(5));
    let (first, _, first_running) = start_reconciler(&pool, service(), interval);
    let (second, _, second_running) = start_reconciler(&pool, service(), interval);
    tokio::time::sleep(Duration::from_secs(7)).await;
    first.cancel();
    second.cancel();
    first_running.await.unwrap();
    second_running.await.unwrap();

    let mut by_room: BTreeMap<String, Vec<std::time::Instant>> = BTreeMap::new();
    for call in standin.calls().into_iter().filter(|c| c.method == "ListParticipants") {
        by_room.entry(call.rooms[0].clone()).or_default().push(call.at);
    }
    assert_eq!(by_room.len(), rooms, "every room was checked");
    for (room, calls) in &by_room {
        assert!(calls.len() >= 2, "{room} checked {} times in 7 s", calls.len());
        for pair in calls.windows(2) {
            let apart = pair[1] - pair[0];
            assert!(apart >= interval - Duration::from_millis(150), "{room} checked twice within {apart:?}");
        }
    }
    let closures: i64 = sqlx::query_scalar("SELECT count(*) FROM cycle_closures").fetch_one(&pool).await.unwrap();
    assert_eq!(closures, 0, "everyone is still listed");
    pool.close().await;
    database.drop_database().await;
}

/// The sweeper binary with LiveKit hanging, then failing, then back: nothing is closed while
/// LiveKit cannot answer, calls pause and back off, readiness stays, and the sweep (a
/// heartbeat time-out) and presence go on; once LiveKit answers, reconciliation resumes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn livekit_down_or_hanging_closes_nothing_and_never_holds_up_the_sweep_or_presence() {
    let (database, pool, standin) = setup().await;
    let t = now_unix_ms() - 10 * MINUTE;
    // ada's client sends heartbeats and stopped 9 minutes ago; bob's sends none.
    apply(&pool, participant_event("participant_joined", "algebra", "RM_a", "PA_ada", "ada", t, t)).await;
    apply(&pool, participant_event("participant_joined", "algebra", "RM_a", "PA_bob", "bob", t, t)).await;
    let heartbeat = json!({"event": "client_heartbeat", "id": "HB_1", "room": {"name": "algebra"}, "participant": {"identity": "ada"}});
    let input = Input {
        payload: serde_json::to_vec(&heartbeat).unwrap().into(),
        received_at_ms: Some(t + MINUTE),
        stream_sequence: 1,
        traceparent: None,
        wait_for_room: false,
    };
    apply_batch(&pool, &[input], &Policy::default()).await.unwrap();
    // LiveKit no longer lists bob, but cannot say so yet.
    standin.set_room("algebra", "RM_a", vec![Participant::active("PA_ada", "ada", t)]);
    standin.set_mode(Mode::Hang);

    let suffix = testkit::unique_suffix();
    let metrics_port = testkit::nats::free_port();
    let presence_stream = format!("TEST_PRESENCE_{suffix}");
    let env = vec![
        ("NATS_URL", testkit::nats::shared_url()),
        ("DATABASE_URL", database.url.clone()),
        ("METRICS_ADDR", format!("127.0.0.1:{metrics_port}")),
        ("PRESENCE_STREAM", presence_stream.clone()),
        ("PRESENCE_SUBJECT_PREFIX", format!("test{suffix}.presence")),
        ("REPORT_STREAM", format!("TEST_REPORTS_{suffix}")),
        ("REPORT_SUBJECT_PREFIX", format!("test{suffix}.meeting")),
        ("SWEEP_INTERVAL", "200ms".into()),
        ("OUTBOX_POLL_INTERVAL", "100ms".into()),
        ("HEARTBEAT_TIMEOUT", "2m".into()),
        ("LIVEKIT_URL", standin.url()),
        ("LIVEKIT_KEYS", TEST_KEYS.into()),
        ("RECONCILE_INTERVAL", "1s".into()),
        ("RECONCILE_TIMEOUT", "300ms".into()),
    ];
    let sweeper = testkit::binaries::Service::start("sweeper", &env);
    let http = reqwest::Client::new();
    let metrics_url = format!("http://127.0.0.1:{metrics_port}/metrics");
    let metric = |name: &'static str| {
        let (http, url) = (http.clone(), metrics_url.clone());
        async move {
            let text = http.get(url).send().await.ok()?.text().await.ok()?;
            text.lines()
                .find(|line| line.starts_with(name))
                .and_then(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        }
    };

    // The sweep goes on: ada's silent client is closed at its heartbeat, and presence says so.
    let ada = testkit::eventually(WAIT, "ada closed by the sweep while LiveKit hangs", || async {
        let ada = attendance(&pool, "RM_a").await.remove("ada")?;
        (!ada.present).then_some(ada)
    })
    .await;
    assert_eq!(ada.cycles[0].closed_by, Some(ClosedBy::HeartbeatTimeout));
    let nats = async_nats::connect(testkit::nats::shared_url()).await.unwrap();
    let js = async_nats::jetstream::new(nats);
    testkit::eventually(WAIT, "ada's absence published", || async {
        let mut stream = js.get_stream(&presence_stream).await.ok()?;
        (stream.info().await.ok()?.state.messages >= 1).then_some(())
    })
    .await;
    testkit::eventually(WAIT, "reconciliation paused", || async {
        (metric("sweeper_reconcile_paused").await? == 1.0).then_some(())
    })
    .await;
    let ready = http.get(format!("http://127.0.0.1:{metrics_port}/readyz")).send().await.unwrap();
    assert!(ready.status().is_success(), "readiness does not depend on LiveKit");

    // Failing fast (503) instead of hanging: the calls back off rather than hammer it.
    standin.set_mode(Mode::Unavailable);
    let before = standin.calls().len();
    tokio::time::sleep(Duration::from_secs(4)).await;
    let during = standin.calls().len() - before;
    assert!(during <= 8, "{during} calls in 4 s to a failing LiveKit (one meeting, 1 s interval, backing off)");
    assert!(attendance(&pool, "RM_a").await["bob"].present, "nothing closed while LiveKit could not answer");

    // LiveKit answers again: bob, no longer listed, is closed.
    standin.set_mode(Mode::Answer);
    let bob = testkit::eventually(WAIT, "bob closed once LiveKit answers", || async {
        let bob = attendance(&pool, "RM_a").await.remove("bob")?;
        (!bob.present).then_some(bob)
    })
    .await;
    assert_eq!(
        (bob.cycles[0].left_at_ms, bob.cycles[0].closed_by),
        (Some(t), Some(ClosedBy::Reconciled)),
        "never seen listed: closed at its start"
    );
    testkit::eventually(WAIT, "reconciliation resumed", || async {
        (metric("sweeper_reconcile_paused").await? == 0.0).then_some(())
    })
    .await;
    drop(sweeper);
    let _ = js.delete_stream(&presence_stream).await;
    let _ = js.delete_stream(format!("TEST_REPORTS_{suffix}")).await;
    pool.close().await;
    database.drop_database().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_livekit_does_not_hold_is_refused_and_closes_nothing() {
    let (database, pool, standin) = setup().await;
    let t = now_unix_ms() - 10 * MINUTE;
    apply(&pool, participant_event("participant_joined", "algebra", "RM_a", "PA_ada", "ada", t, t)).await;
    standin.set_room("algebra", "RM_a", vec![]);
    let service =
        room_service(&standin.url(), "APIunknown", "an-unknown-secret-0123456789abcdef", Duration::from_secs(5));
    let (shutdown, metrics, running) = start_reconciler(&pool, service, Duration::from_secs(1));
    testkit::eventually(WAIT, "a refused call", || async {
        standin.calls().iter().any(|c| c.status == 401).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    shutdown.cancel();
    running.await.unwrap();
    assert!(standin.calls().iter().all(|c| c.status == 401), "{:?}", standin.calls());
    assert!(attendance(&pool, "RM_a").await["ada"].present, "nothing closed on a refused token");
    let refused = metrics
        .livekit_calls
        .get_or_create(&sweeper::metrics::CallLabels { method: "ListParticipants", outcome: "denied" })
        .get();
    assert!(refused >= 1);
    pool.close().await;
    database.drop_database().await;
}
