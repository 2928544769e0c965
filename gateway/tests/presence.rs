//! The live presence stream against a real NATS: changes resume after a reconnection with
//! `Last-Event-ID` (none lost), a position too old to resume says `reload`, streams are capped
//! overall and per identity (429), and a stream ends when its token expires.

mod common;

use std::time::Duration;

use common::{TestGateway, error_code};
use futures::StreamExt as _;
use shared::nats::presence::{PresenceMessage, PresenceStream};
use testkit::livekit::{access_token, admin_token, participant_token};

/// One Server-Sent Event: its type, id and data.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Sse {
    event: String,
    id: String,
    data: String,
}

/// Reads events from a response until `count` of them came (or `wait` passed); returns them and
/// whether the stream ended.
async fn read_events(response: &mut reqwest::Response, count: usize, wait: Duration) -> (Vec<Sse>, bool) {
    let mut events = Vec::new();
    let mut buffer = String::new();
    let deadline = tokio::time::Instant::now() + wait;
    while events.len() < count {
        let chunk = match tokio::time::timeout_at(deadline, response.chunk()).await {
            Err(_elapsed) => return (events, false),
            Ok(Ok(Some(chunk))) => chunk,
            Ok(_) => return (events, true),
        };
        buffer.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buffer.find("\n\n") {
            let frame: String = buffer.drain(..end + 2).collect();
            let field = |name: &str| {
                frame
                    .lines()
                    .find_map(|line| line.strip_prefix(name))
                    .map(|v| v.trim_start().to_owned())
                    .unwrap_or_default()
            };
            if frame.lines().any(|line| line.starts_with("data:")) {
                events.push(Sse { event: field("event:"), id: field("id:"), data: field("data:") });
            }
        }
    }
    (events, false)
}

struct Presence {
    gateway: TestGateway,
    stream: PresenceStream,
    args: shared::nats::PresenceArgs,
    next_id: i64,
}

impl Presence {
    async fn start(extra: &[&str]) -> Self {
        let suffix = testkit::unique_suffix();
        let args = shared::nats::PresenceArgs {
            stream: format!("TEST_PRESENCE_{suffix}"),
            subject_prefix: format!("test{suffix}.presence"),
            replicas: 1,
            max_age: Duration::from_secs(3600),
        };
        let client = async_nats::connect(testkit::nats::shared_url()).await.unwrap();
        let stream = PresenceStream::new(client, &args);
        stream.ensure().await.unwrap();
        let mut flags = vec![
            format!("--presence-stream={}", args.stream),
            format!("--presence-subject-prefix={}", args.subject_prefix),
        ];
        flags.extend(extra.iter().map(|flag| (*flag).to_owned()));
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        let gateway = TestGateway::spawn(&testkit::nats::shared_url(), &flags).await;
        Presence { gateway, stream, args, next_id: 1 }
    }

    async fn publish(&mut self, identities: &[&str]) {
        let changes: Vec<(PresenceMessage, Option<String>)> = identities
            .iter()
            .map(|identity| {
                self.next_id += 1;
                let change = PresenceMessage {
                    id: self.next_id,
                    room: "algebra".into(),
                    room_sid: "RM_live".into(),
                    identity: (*identity).into(),
                    present: true,
                    changed_at: "2026-11-28T00:00:00.000Z".into(),
                };
                (change, None)
            })
            .collect();
        self.stream.publish_all(&changes, Duration::from_secs(5)).await.unwrap();
    }

    async fn follow(&self, token: &str, last_event_id: Option<&str>) -> reqwest::Response {
        let mut request =
            self.gateway.http.get(format!("{}/v1/rooms/algebra/presence", self.gateway.base_url)).bearer_auth(token);
        if let Some(id) = last_event_id {
            request = request.header("Last-Event-ID", id);
        }
        request.send().await.unwrap()
    }

    async fn stop(self) {
        let client = async_nats::connect(testkit::nats::shared_url()).await.unwrap();
        let _ = async_nats::jetstream::new(client).delete_stream(&self.args.stream).await;
        self.gateway.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconnection_resumes_after_its_last_event_and_loses_no_change() {
    let mut presence = Presence::start(&[]).await;
    let admin = admin_token("algebra");
    let mut live = presence.follow(&admin, None).await;
    assert_eq!(live.status(), 200);
    // The consumer is created before the answer: what is published now is followed.
    presence.publish(&["ada", "bob", "cy"]).await;
    let (first, _) = read_events(&mut live, 3, Duration::from_secs(10)).await;
    assert_eq!(first.iter().map(|e| e.event.as_str()).collect::<Vec<_>>(), ["presence"; 3]);
    let identities = |events: &[Sse]| -> Vec<String> {
        events
            .iter()
            .map(|e| serde_json::from_str::<serde_json::Value>(&e.data).unwrap()["identity"].to_string())
            .collect()
    };
    assert_eq!(identities(&first), ["\"ada\"", "\"bob\"", "\"cy\""]);
    drop(live);

    // Changes while disconnected, then a reconnection from the last id seen.
    presence.publish(&["dee", "eve"]).await;
    let last = first.last().unwrap().id.clone();
    let mut resumed = presence.follow(&admin, Some(&last)).await;
    assert_eq!(resumed.status(), 200);
    let (missed, _) = read_events(&mut resumed, 2, Duration::from_secs(10)).await;
    assert_eq!(identities(&missed), ["\"dee\"", "\"eve\""], "exactly the changes after {last}");
    assert!(missed.iter().all(|e| e.id.parse::<u64>().unwrap() > last.parse::<u64>().unwrap()));
    drop(resumed);

    // A position the stream no longer holds: reload first, then live changes.
    let client = async_nats::connect(testkit::nats::shared_url()).await.unwrap();
    let jetstream = async_nats::jetstream::new(client);
    jetstream.get_stream(&presence.args.stream).await.unwrap().purge().await.unwrap();
    let mut stale = presence.follow(&admin, Some("1")).await;
    let (told, _) = read_events(&mut stale, 1, Duration::from_secs(10)).await;
    assert_eq!(told.first().map(|e| e.event.as_str()), Some("reload"));
    presence.publish(&["fay"]).await;
    let (after, _) = read_events(&mut stale, 1, Duration::from_secs(10)).await;
    assert_eq!(identities(&after), ["\"fay\""]);

    let bad = presence.follow(&admin, Some("yesterday")).await;
    assert_eq!(bad.status(), 400);
    assert_eq!(error_code(bad).await, "invalid_parameter");
    presence.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_are_capped_and_end_when_their_token_expires() {
    let presence = Presence::start(&["--presence-streams-max=3", "--presence-streams-per-identity=2"]).await;
    let ada = participant_token("ada", "algebra");
    let (first, second) = (presence.follow(&ada, None).await, presence.follow(&ada, None).await);
    assert_eq!((first.status().as_u16(), second.status().as_u16()), (200, 200));
    let third = presence.follow(&ada, None).await;
    assert_eq!(third.status(), 429, "a third stream for one identity");
    assert_eq!(error_code(third).await, "too_many_streams");
    let admin = presence.follow(&admin_token("algebra"), None).await;
    assert_eq!(admin.status(), 200, "another holder, within the overall cap");
    let over = presence.follow(&participant_token("bob", "algebra"), None).await;
    assert_eq!(over.status(), 429, "past the overall cap");

    // Closed streams give their slots back (once the gateway notices, at its next write).
    drop((first, second, admin));
    // A token valid for 2 more seconds: the stream ends then.
    let mut expiring = testkit::eventually(Duration::from_secs(30), "a free slot", || async {
        let grant =
            shared::livekit::VideoGrant { room: Some("algebra".into()), room_admin: true, ..Default::default() };
        let response = presence.follow(&access_token(Some("cy"), grant, 2), None).await;
        (response.status() == 200).then_some(response)
    })
    .await;
    let (_, ended) = read_events(&mut expiring, usize::MAX, Duration::from_secs(10)).await;
    assert!(ended, "the stream ended at the token's expiry");
    // Its bytes, once ended: nothing more.
    assert!(expiring.bytes_stream().next().await.is_none());
    presence.stop().await;
}
