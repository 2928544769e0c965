//! View links: a room's admin makes a read-only link; its token reads that room's attendance
//! and presence, and nothing else (no other room, no heartbeat, no further links), until it
//! expires.

mod common;

use common::{System, error_code};
use serde_json::Value;
use testkit::livekit::{admin_token, participant_token};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_view_link_reads_its_room_only_and_grants_nothing_else() {
    let system = System::start().await;
    // The worker has migrated the database when an admin can read.
    testkit::eventually(std::time::Duration::from_secs(30), "the database to be migrated", || async {
        (system.get("/v1/rooms/algebra%207b/meetings", Some(&admin_token("algebra 7b"))).await.status() == 200)
            .then_some(())
    })
    .await;
    let make = |token: String, query: &'static str| {
        let request = system.gateway.http.post(system.url(&format!("/v1/rooms/algebra%207b/view-links{query}")));
        async move { request.bearer_auth(token).send().await.unwrap() }
    };
    let created = make(admin_token("algebra 7b"), "?ttl=1h").await;
    assert_eq!(created.status(), 201);
    let link: Value = created.json().await.unwrap();
    let token = link["token"].as_str().unwrap().to_owned();
    assert_eq!(link["url"].as_str().unwrap(), format!("/rooms/algebra%207b#{token}"));
    let now_ms = shared::domain::time::now_unix_ms();
    let expires = shared::domain::time::parse_instant(link["expires_at"].as_str().unwrap(), now_ms).unwrap() / 1000;
    let now = now_ms / 1000;
    assert!((now + 3590..=now + 3610).contains(&expires), "an hour from now: {link}");
    let claims: Value = serde_json::from_slice(
        &base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, token.split('.').nth(1).unwrap())
            .unwrap(),
    )
    .unwrap();
    assert!(claims.get("video").is_none(), "no LiveKit grant, so livekit-server refuses it: {claims}");

    // It reads its room, the whole of it.
    for path in ["/v1/rooms/algebra%207b/meetings", "/v1/rooms/algebra%207b/attendance"] {
        assert_eq!(system.get(path, Some(&token)).await.status(), 200, "{path}");
    }
    // And nothing else.
    let other = system.get("/v1/rooms/geometry/meetings", Some(&token)).await;
    assert_eq!(other.status(), 403);
    assert_eq!(error_code(other).await, "forbidden");
    let heartbeat = system.heartbeat(Some(&token)).await;
    assert_eq!(heartbeat.status(), 403);
    assert_eq!(error_code(heartbeat).await, "no_room_grant");
    for (who, token) in [("the link itself", token.clone()), ("a participant", participant_token("ada", "algebra 7b"))]
    {
        let refused = make(token, "").await;
        assert_eq!(refused.status(), 403, "{who} cannot make links");
        assert_eq!(error_code(refused).await, "forbidden");
    }
    // Lifetimes within the maximum (30 days by default).
    for query in ["?ttl=31d", "?ttl=0s", "?ttl=soon"] {
        let refused = make(admin_token("algebra 7b"), query).await;
        assert_eq!(refused.status(), 400, "{query}");
        let body: Value = refused.json().await.unwrap();
        assert_eq!((body["error"].as_str(), body["field"].as_str()), (Some("invalid_parameter"), Some("ttl")));
    }
    system.stop().await;
}
