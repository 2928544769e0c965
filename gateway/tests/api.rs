//! Heartbeats, the read API and the live presence stream, with a real worker and sweeper
//! behind the gateway (all in-process), on a real NATS and PostgreSQL.

mod common;

use std::time::{Duration, Instant};

use common::{System, error_code};
use futures::StreamExt as _;
use testkit::livekit::{admin_token, participant_joined, participant_left, participant_token, sign_now};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn heartbeats_are_authenticated_stored_and_rate_limited() {
    let system = System::start().await;
    let ada = participant_token("ada", "algebra");

    let response = system.heartbeat(Some(&ada)).await;
    assert_eq!(response.status(), 202);
    let answer: serde_json::Value = response.json().await.unwrap();
    let stored = system.gateway.stored_heartbeats().await;
    assert_eq!(stored.len(), 1);
    assert!(system.gateway.stored_messages().await.is_empty(), "heartbeats have a stream of their own");
    let received_at_ms: i64 =
        stored[0].headers.get(shared::nats::webhooks::RECEIVED_AT_MS_HEADER).unwrap().as_str().parse().unwrap();
    assert_eq!(
        answer["receivedAt"].as_str(),
        Some(shared::domain::time::rfc3339_ms(received_at_ms).as_str()),
        "{answer}"
    );
    let heartbeat_prefix = system.gateway.stream.heartbeat_settings().subject_prefix;
    assert_eq!(stored[0].subject.as_str(), format!("{heartbeat_prefix}.client_heartbeat"));
    let payload: serde_json::Value = serde_json::from_slice(&stored[0].payload).unwrap();
    assert_eq!(
        (payload["room"]["name"].as_str(), payload["participant"]["identity"].as_str()),
        (Some("algebra"), Some("ada"))
    );

    assert_eq!(system.heartbeat(Some(&ada)).await.status(), 202, "within the burst of 2");
    let limited = system.heartbeat(Some(&ada)).await;
    assert_eq!(limited.status(), 429);
    assert_eq!(error_code(limited).await, "rate_limited");
    assert_eq!(system.heartbeat(Some(&participant_token("bob", "algebra"))).await.status(), 202, "per participant");

    let cases = [
        (None, 401, "missing_token"),
        (Some("not-a-jwt".to_owned()), 401, "malformed_token"),
        (Some(admin_token("algebra")), 403, "no_room_grant"),
        (
            Some(testkit::livekit::access_token(
                Some("ada"),
                shared::livekit::VideoGrant { room: Some("algebra".into()), room_join: true, ..Default::default() },
                -600,
            )),
            401,
            "token_expired",
        ),
    ];
    for (token, status, code) in cases {
        let response = system.heartbeat(token.as_deref()).await;
        assert_eq!(response.status(), status, "{code}");
        assert_eq!(error_code(response).await, code);
    }
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_read_api_shows_attendance_to_whom_it_may_and_refuses_everyone_else() {
    let system = System::start().await;
    let joined = participant_joined("EV_read_1", "algebra", "ada");
    assert_eq!(system.gateway.post_webhook(joined.clone(), Some(&sign_now(&joined))).await.status(), 200);
    let other = participant_joined("EV_read_2", "algebra", "bob");
    assert_eq!(system.gateway.post_webhook(other.clone(), Some(&sign_now(&other))).await.status(), 200);
    assert_eq!(system.heartbeat(Some(&participant_token("ada", "algebra"))).await.status(), 202);

    let admin = admin_token("algebra");
    let room = testkit::eventually(Duration::from_secs(20), "both participants applied", || async {
        let body: serde_json::Value =
            system.get("/v1/rooms/algebra/attendance", Some(&admin)).await.json().await.ok()?;
        // Applied in any order: the heartbeat may be recorded before ada's joined.
        let ada = &body["participants"][0];
        (body["participants"].as_array()?.len() == 2
            && ada["last_heartbeat_at"].is_string()
            && ada["cycles"].as_array()?.len() == 1)
            .then_some(body)
    })
    .await;
    assert_eq!(room["room"], "algebra");
    let ada = &room["participants"][0];
    assert_eq!(
        (ada["identity"].as_str(), ada["present"].as_bool(), ada["join_count"].as_i64()),
        (Some("ada"), Some(true), Some(1))
    );
    assert!(ada["attended_ms"].as_i64().is_some());
    let cycle = &ada["cycles"][0];
    assert_eq!((cycle["participant_sid"].as_str(), cycle["room_sid"].as_str()), (Some("PA_ada"), Some("RM_algebra")));
    assert!(cycle["left_at"].is_null() && cycle["closed_by"].is_null() && cycle["duration_ms"].is_null());
    let joined_at = cycle["joined_at"].as_str().unwrap();
    assert!(joined_at.ends_with('Z') && joined_at.len() == "2026-11-25T10:00:00.000Z".len(), "{joined_at}");

    let ada_token = participant_token("ada", "algebra");
    let own = system.get("/v1/rooms/algebra/attendance/ada", Some(&ada_token)).await;
    assert_eq!(own.status(), 200);
    assert_eq!(own.json::<serde_json::Value>().await.unwrap()["identity"], "ada");
    let list_token = testkit::access_token_room_list();
    assert_eq!(system.get("/v1/rooms/algebra/attendance", Some(&list_token)).await.status(), 200);

    let refusals = [
        ("/v1/rooms/algebra/attendance", None, 401, "missing_token"),
        ("/v1/rooms/algebra/attendance", Some("garbage".to_owned()), 401, "malformed_token"),
        ("/v1/rooms/algebra/attendance", Some(ada_token.clone()), 403, "forbidden"),
        ("/v1/rooms/algebra/attendance/bob", Some(ada_token.clone()), 403, "forbidden"),
        ("/v1/rooms/geometry/attendance/ada", Some(ada_token.clone()), 403, "forbidden"),
        ("/v1/rooms/geometry/attendance", Some(admin.clone()), 403, "forbidden"),
        ("/v1/rooms/algebra/attendance/nobody", Some(admin.clone()), 404, "participant_not_found"),
        (
            "/v1/rooms/algebra/attendance",
            Some(testkit::livekit::access_token(
                None,
                shared::livekit::VideoGrant { room: Some("algebra".into()), room_admin: true, ..Default::default() },
                -600,
            )),
            401,
            "token_expired",
        ),
        ("/v1/rooms/algebra/presence", None, 401, "missing_token"),
        ("/v1/rooms/geometry/presence", Some(ada_token.clone()), 403, "forbidden"),
    ];
    for (path, token, status, code) in refusals {
        let response = system.get(path, token.as_deref()).await;
        assert_eq!(response.status(), status, "{path} {code}");
        assert_eq!(error_code(response).await, code, "{path}");
    }
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_presence_stream_sees_join_and_leave_within_a_second_of_the_webhook() {
    let system = System::start().await;
    let response = system.get("/v1/rooms/algebra/presence", Some(&admin_token("algebra"))).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let mut body = response.bytes_stream();
    let mut buffer = String::new();
    let mut next_change = async move || -> serde_json::Value {
        loop {
            if let Some(end) = buffer.find("\n\n") {
                let frame: String = buffer.drain(..end + 2).collect();
                if let Some(data) = frame.lines().find_map(|line| line.strip_prefix("data: ")) {
                    return serde_json::from_str(data).unwrap();
                }
                continue;
            }
            let chunk = body.next().await.expect("the stream stays open").unwrap();
            buffer.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    };

    let joined = participant_joined("EV_live_1", "algebra", "ada");
    assert_eq!(system.gateway.post_webhook(joined.clone(), Some(&sign_now(&joined))).await.status(), 200);
    let answered = Instant::now();
    let change = tokio::time::timeout(Duration::from_secs(5), next_change()).await.expect("a join change");
    let join_latency = answered.elapsed();
    assert_eq!((change["identity"].as_str(), change["present"].as_bool()), (Some("ada"), Some(true)));

    let left = participant_left("EV_live_2", "algebra", "ada", shared::domain::time::now_unix_ms() / 1000);
    assert_eq!(system.gateway.post_webhook(left.clone(), Some(&sign_now(&left))).await.status(), 200);
    let answered = Instant::now();
    let change = tokio::time::timeout(Duration::from_secs(5), next_change()).await.expect("a leave change");
    let leave_latency = answered.elapsed();
    assert_eq!((change["identity"].as_str(), change["present"].as_bool()), (Some("ada"), Some(false)));

    assert!(join_latency < Duration::from_secs(1), "join seen after {join_latency:?}");
    assert!(leave_latency < Duration::from_secs(1), "leave seen after {leave_latency:?}");
    system.stop().await;
}
