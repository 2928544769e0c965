//! Meetings through the whole system (gateway, worker, sweeper in-process, real NATS and
//! PostgreSQL): a room name with two meetings, the meetings list with its cursor, one meeting
//! with the attendance policy (and a request's own), its CSV read back by Python's `csv` module,
//! and the errors.

mod common;

use std::time::Duration;

use common::{System, error_code};
use serde_json::{Value, json};
use testkit::livekit::{admin_token, participant_token, sign_now};

const MINUTE: i64 = 60_000;
/// Meeting 1 of "algebra": 10:00 to 11:40 a week ago; meeting 2 started an hour ago and runs.
const WEEK: i64 = 7 * 24 * 60 * MINUTE;

fn event(event_type: &str, id: &str, room_sid: &str, at_ms: i64, participant: Option<Value>) -> Vec<u8> {
    let mut body = json!({
        "event": event_type, "id": id, "createdAt": (at_ms / 1000).to_string(),
        "room": {"sid": room_sid, "name": "algebra"},
    });
    if let Some(participant) = participant {
        body["participant"] = participant;
    }
    serde_json::to_vec(&body).unwrap()
}

fn person(identity: &str, name: &str, sid: &str, joined_ms: i64, kind: &str) -> Value {
    json!({"sid": sid, "identity": identity, "name": name, "kind": kind, "joinedAtMs": joined_ms.to_string()})
}

async fn send(system: &System, body: Vec<u8>) {
    let response = system.gateway.post_webhook(body.clone(), Some(&sign_now(&body))).await;
    assert_eq!(response.status(), 200);
}

/// Parses CSV text with Python's `csv` module (a reader nobody here wrote): rows of fields.
fn python_csv(text: &str) -> Vec<Vec<String>> {
    let mut child = std::process::Command::new("python3")
        .args([
            "-c",
            "import csv, io, json, sys; print(json.dumps(list(csv.reader(io.StringIO(sys.stdin.read(), newline='')))))",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3");
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), text.as_bytes()).unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success());
    serde_json::from_slice(&output.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_room_name_lists_its_meetings_and_each_meeting_gives_its_attendance_as_json_and_csv() {
    let system = System::start().await;
    // Whole seconds: LiveKit's createdAt has no milliseconds.
    let now = shared::domain::time::now_unix_ms() / 1000 * 1000;
    let start1 = now - WEEK;
    let end1 = start1 + 100 * MINUTE;
    let start2 = now - 60 * MINUTE;
    // Names a spreadsheet or a naive CSV writer would mishandle.
    let tricky = "=HYPERLINK(\"http://x\"), \"Ada\"\nLovelace";
    let mut events = vec![
        event("room_started", "EV_1s", "RM_w1", start1, None),
        // ada: the whole meeting; bob: late by one minute past the margin, leaves 20 minutes early.
        event("participant_joined", "EV_1a", "RM_w1", start1, Some(person("ada", tricky, "PA_1a", start1, "STANDARD"))),
        event("participant_left", "EV_1al", "RM_w1", end1, Some(person("ada", tricky, "PA_1a", start1, "STANDARD"))),
        event(
            "participant_joined",
            "EV_1b",
            "RM_w1",
            start1 + 6 * MINUTE,
            Some(person("bob", "Bob, Jr.", "PA_1b", start1 + 6 * MINUTE, "STANDARD")),
        ),
        event(
            "participant_left",
            "EV_1bl",
            "RM_w1",
            end1 - 20 * MINUTE,
            Some(person("bob", "Bob, Jr.", "PA_1b", start1 + 6 * MINUTE, "STANDARD")),
        ),
        event(
            "participant_joined",
            "EV_1r",
            "RM_w1",
            start1,
            Some(person("rec", "recorder", "EG_1", start1, "EGRESS")),
        ),
        event("participant_left", "EV_1rl", "RM_w1", end1, Some(person("rec", "recorder", "EG_1", start1, "EGRESS"))),
        event("room_finished", "EV_1f", "RM_w1", end1, None),
        // Meeting 2 of the same room name: ada is there now.
        event("room_started", "EV_2s", "RM_w2", start2, None),
        event("participant_joined", "EV_2a", "RM_w2", start2, Some(person("ada", "Ada", "PA_2a", start2, "STANDARD"))),
    ];
    for body in events.drain(..) {
        send(&system, body).await;
    }
    let admin = admin_token("algebra");
    let meetings: Value = testkit::eventually(Duration::from_secs(20), "both meetings", || async {
        let page: Value = system.get("/v1/rooms/algebra/meetings", Some(&admin)).await.json().await.ok()?;
        let done = page["meetings"].as_array()?.len() == 2 && page["meetings"][1]["ended_at"].is_string();
        done.then_some(page)
    })
    .await;

    // The list: newest first, counts, spans.
    assert_eq!(meetings["meetings"][0]["room_sid"], "RM_w2");
    assert_eq!(meetings["meetings"][0]["in_progress"], true);
    assert_eq!(meetings["meetings"][0]["participants"], json!({"people": 1, "bots": 0, "present_now": 1}));
    let first = &meetings["meetings"][1];
    assert_eq!((first["room_sid"].as_str(), first["ended_by"].as_str()), (Some("RM_w1"), Some("room_finished")));
    assert_eq!(first["duration_ms"], 100 * MINUTE);
    assert_eq!(first["participants"], json!({"people": 2, "bots": 1, "present_now": 0}));
    assert!(meetings["next_cursor"].is_null());

    // Pages of one, following the cursor.
    let page: Value = system.get("/v1/rooms/algebra/meetings?limit=1", Some(&admin)).await.json().await.unwrap();
    assert_eq!(page["meetings"][0]["room_sid"], "RM_w2");
    let cursor = page["next_cursor"].as_str().expect("a next page");
    let next: Value = system
        .get(&format!("/v1/rooms/algebra/meetings?limit=1&cursor={cursor}"), Some(&admin))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(next["meetings"][0]["room_sid"], "RM_w1");
    assert!(next["next_cursor"].is_null());

    // One meeting, with the default policy (75 %, 5 minutes late or early).
    let text = system.get("/v1/meetings/RM_w1", Some(&admin)).await.text().await.unwrap();
    // Each key once (a JSON parser would silently keep the last of two).
    assert_eq!(text.matches("\"participants\":").count(), 1, "{text}");
    let meeting: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(meeting["counts"]["people"], 2, "the list's counts, beside the lists: {meeting}");
    let people = meeting["participants"].as_array().unwrap();
    let (ada, bob) = (&people[0], &people[1]);
    assert_eq!(
        (ada["identity"].as_str(), ada["status"].as_str(), ada["attended_ratio"].as_f64()),
        (Some("ada"), Some("attended"), Some(1.0))
    );
    assert_eq!((ada["joined_late"].as_bool(), ada["left_early"].as_bool()), (Some(false), Some(false)));
    assert_eq!(bob["attended_ms"], 74 * MINUTE);
    assert_eq!(
        (bob["status"].as_str(), bob["joined_late"].as_bool(), bob["left_early"].as_bool()),
        (Some("partial"), Some(true), Some(true))
    );
    assert_eq!(meeting["bots"][0]["identity"], "rec");
    assert!(meeting["bots"][0]["status"].is_null(), "bots get no status");
    // A platform's own rules, per request.
    let lenient: Value =
        system.get("/v1/meetings/RM_w1?min_ratio=0.7&late_after=10m", Some(&admin)).await.json().await.unwrap();
    assert_eq!(
        (lenient["participants"][1]["status"].as_str(), lenient["participants"][1]["joined_late"].as_bool()),
        (Some("attended"), Some(false))
    );
    let running: Value = system.get("/v1/meetings/RM_w2", Some(&admin)).await.json().await.unwrap();
    assert_eq!(running["participants"][0]["status"], "in_progress");

    // CSV, by format and by Accept, read back by a real CSV reader.
    let csv = system.get("/v1/meetings/RM_w1?format=csv", Some(&admin)).await;
    assert_eq!(csv.headers()["content-type"], "text/csv; charset=utf-8");
    let rows = python_csv(&csv.text().await.unwrap());
    assert_eq!(rows.len(), 4, "a header and one row per participant");
    let column = |name: &str| rows[0].iter().position(|c| c == name).unwrap();
    assert_eq!(rows[1][column("identity")], "ada");
    assert_eq!(rows[1][column("name")], format!("'{tricky}"), "quoted whole, the formula neutralized");
    assert_eq!(rows[2][column("name")], "Bob, Jr.");
    assert_eq!((rows[2][column("status")].as_str(), rows[2][column("left_early")].as_str()), ("partial", "true"));
    assert_eq!((rows[3][column("identity")].as_str(), rows[3][column("bot")].as_str()), ("rec", "true"));
    let by_accept = system
        .gateway
        .http
        .get(system.url("/v1/meetings/RM_w1"))
        .bearer_auth(&admin)
        .header("Accept", "text/csv")
        .send()
        .await
        .unwrap();
    assert_eq!(python_csv(&by_accept.text().await.unwrap()), rows);

    // A participant's own token: its own row only; another room's token: refused.
    let own: Value =
        system.get("/v1/meetings/RM_w1", Some(&participant_token("bob", "algebra"))).await.json().await.unwrap();
    assert_eq!(own["participants"].as_array().unwrap().len(), 1);
    assert_eq!(own["participants"][0]["identity"], "bob");
    assert!(own["bots"].as_array().unwrap().is_empty());
    let elsewhere = system.get("/v1/meetings/RM_w1", Some(&participant_token("bob", "geometry"))).await;
    assert_eq!(elsewhere.status(), 403);
    assert_eq!(error_code(elsewhere).await, "forbidden");

    // Bad input: 404 for an unknown meeting, 400 naming the field.
    let unknown = system.get("/v1/meetings/RM_nope", Some(&admin)).await;
    assert_eq!(unknown.status(), 404);
    assert_eq!(error_code(unknown).await, "meeting_not_found");
    // A NUL, which PostgreSQL cannot hold, is a client's mistake (400 with its code), never an
    // outage (503).
    let nul_sid = system.get("/v1/meetings/RM%00x", Some(&admin)).await;
    assert_eq!(nul_sid.status(), 400);
    assert_eq!(error_code(nul_sid).await, "invalid_room_sid");
    let nul_room = system.get("/v1/rooms/algebra%00/meetings", Some(&admin_token("algebra\0"))).await;
    assert_eq!(nul_room.status(), 400);
    assert_eq!(error_code(nul_room).await, "invalid_room_name");
    let nul_cursor = base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, "1:RM\0");
    let response = system.get(&format!("/v1/rooms/algebra/meetings?cursor={nul_cursor}"), Some(&admin)).await;
    assert_eq!(response.status(), 400);
    for (path, field) in [
        ("/v1/rooms/algebra/meetings?limit=0", "limit"),
        ("/v1/rooms/algebra/meetings?limit=many", "limit"),
        ("/v1/rooms/algebra/meetings?cursor=bogus", "cursor"),
        ("/v1/rooms/algebra/meetings?since=yesterday", "since"),
        ("/v1/meetings/RM_w1?min_ratio=2", "min_ratio"),
        ("/v1/meetings/RM_w1?late_after=soon", "late_after"),
        ("/v1/meetings/RM_w1?format=xml", "format"),
    ] {
        let response = system.get(path, Some(&admin)).await;
        assert_eq!(response.status(), 400, "{path}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(
            (body["error"].as_str(), body["field"].as_str()),
            (Some("invalid_parameter"), Some(field)),
            "{path}"
        );
    }

    // The room's attendance adds the meetings up: ada's two meetings, one still running.
    let total: Value = system.get("/v1/rooms/algebra/attendance/ada", Some(&admin)).await.json().await.unwrap();
    assert_eq!((total["join_count"].as_i64(), total["present"].as_bool()), (Some(2), Some(true)));
    system.stop().await;
}
