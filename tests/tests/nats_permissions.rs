//! Least privilege on NATS, as deployed: `deploy/nats/accounts.conf`, loaded as is by a private
//! nats-server over TLS, with one NKEY user per service (their public keys in the server's
//! environment, as the NATS pods get them; their seeds in files, as the services' Secrets) and
//! each service on its own inbox prefix, as the Deployments set them.
//!
//! - The whole system works under it (ready, a webhook applied, presence followed live, the
//!   operators' `worker dlq`, meeting reports delivered to the platform by `worker deliver`, a
//!   failed delivery dead-lettered and replayed), and the server logs no permission violation.
//! - The gateway's user can neither delete nor purge a stream, nor read a dead letter; the
//!   workers' cannot publish a webhook; the sweepers' cannot consume one; the deliverers' can
//!   neither publish a webhook or a report nor read the webhooks.
//!
//! A refusal is asserted as the server really makes it: it answers the client with
//! `Permissions Violation for Publish to "<subject>"` (or `Subscription to`) and drops the
//! message, so a JetStream request gets no reply and times out; the streams are intact after.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::{self, consumer::pull};
use base64::Engine as _;
use nkeys::KeyPair;
use serde_json::Value;
use shared::nats::{DeadLetterArgs, WebhookStreamArgs};
use testkit::binaries::Service;
use testkit::livekit::{TEST_KEYS, admin_token, participant_joined, participant_token, sign_now};
use testkit::nats::{PrivateNats, free_port};
use testkit::postgres::TestDatabase;
use testkit::tls::TestCa;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// The deploy's account layout, byte for byte.
const ACCOUNTS: &str = include_str!("../../deploy/nats/accounts.conf");

/// A user of the layout: who connects as what, as the Deployments and the operators' Job do.
#[derive(Clone, Copy, Debug)]
enum User {
    Gateway,
    Worker,
    Sweeper,
    Deliver,
    Operator,
}

impl User {
    const ALL: [User; 5] = [User::Gateway, User::Worker, User::Sweeper, User::Deliver, User::Operator];

    fn name(self) -> &'static str {
        match self {
            User::Gateway => "gateway",
            User::Worker => "worker",
            User::Sweeper => "sweeper",
            User::Deliver => "deliver",
            User::Operator => "operator",
        }
    }

    /// The variable of the server's environment holding the user's public key.
    fn public_key_variable(self) -> String {
        format!("ATTENDANCE_{}_NKEY", self.name().to_uppercase())
    }

    /// NATS_INBOX_PREFIX of its Deployment: the only replies the user may subscribe to.
    fn inbox_prefix(self) -> String {
        format!("_INBOX_{}", self.name())
    }
}

/// The private server with the deploy's accounts, and each user's seed file.
struct Deployment {
    nats: PrivateNats,
    /// The seeds (one file per user, as mounted from a Secret) and the TLS files.
    dir: tempfile::TempDir,
    /// What the clients trust (NATS_CA): the CA that signed the server's certificate.
    ca: PathBuf,
    /// The same CA after another, in one file: what clients trust during a CA rotation.
    ca_bundle: PathBuf,
}

impl Deployment {
    async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let server = TestCa::new().issue_server(&["localhost"], dir.path());
        let ca_bundle = dir.path().join("ca-bundle.crt");
        let current = std::fs::read_to_string(&server.ca).unwrap();
        std::fs::write(&ca_bundle, format!("{}{current}", TestCa::new().cert_pem())).unwrap();
        let mut env = Vec::new();
        for user in User::ALL {
            let key = KeyPair::new_user();
            std::fs::write(Self::seed_path(dir.path(), user), key.seed().unwrap()).unwrap();
            env.push((user.public_key_variable(), key.public_key()));
        }
        env.push(("NATS_SYSTEM_NKEY".to_owned(), KeyPair::new_user().public_key()));
        // The chart adds the TLS block beside the included accounts, like this.
        let config = format!(
            "{ACCOUNTS}\ntls {{\n  cert_file: \"{}\"\n  key_file: \"{}\"\n}}\n",
            server.cert.display(),
            server.key.display()
        );
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let nats = PrivateNats::start_with_config(&config, &env).await;
        Deployment { nats, dir, ca: server.ca, ca_bundle }
    }

    fn seed_path(dir: &std::path::Path, user: User) -> PathBuf {
        dir.join(format!("{}.nk", user.name()))
    }

    /// The NATS settings of `user`'s Deployment. The workers trust a bundle of two CAs, as every
    /// client does while the NATS CA is rotated.
    fn env(&self, user: User) -> Vec<(&'static str, String)> {
        let ca = if matches!(user, User::Worker) { &self.ca_bundle } else { &self.ca };
        vec![
            ("NATS_URL", format!("tls://localhost:{}", self.nats.port)),
            ("NATS_CA", ca.display().to_string()),
            ("NATS_NKEY", Self::seed_path(self.dir.path(), user).display().to_string()),
            ("NATS_INBOX_PREFIX", user.inbox_prefix()),
        ]
    }

    /// A client connected as `user`, that hears what the server refuses it.
    async fn client(&self, user: User) -> UserClient {
        let (refusals, heard) = tokio::sync::mpsc::unbounded_channel();
        let seed = std::fs::read_to_string(Self::seed_path(self.dir.path(), user)).unwrap();
        let client = async_nats::ConnectOptions::new()
            .nkey(seed)
            .custom_inbox_prefix(user.inbox_prefix())
            .add_root_certificates(self.ca.clone())
            .require_tls(true)
            // A refused request gets no reply: give up on it soon.
            .request_timeout(Some(Duration::from_secs(2)))
            .event_callback(move |event| {
                let refusals = refusals.clone();
                async move {
                    if let async_nats::Event::ServerError(error) = event {
                        let _ = refusals.send(error.to_string());
                    }
                }
            })
            .connect(format!("tls://localhost:{}", self.nats.port))
            .await
            .unwrap_or_else(|e| panic!("connect as the {} user: {e}", user.name()));
        let jetstream = jetstream::ContextBuilder::new().timeout(Duration::from_secs(2)).build(client.clone());
        UserClient { user, client, jetstream, heard }
    }

    /// The server's log lines about a refused permission (or credential).
    fn violations(&self) -> Vec<String> {
        self.nats.log().lines().filter(|line| line.contains("Violation")).map(str::to_owned).collect()
    }
}

/// A connection as one user of the layout.
struct UserClient {
    user: User,
    client: async_nats::Client,
    jetstream: jetstream::Context,
    /// What the server said it refused this client.
    heard: tokio::sync::mpsc::UnboundedReceiver<String>,
}

impl UserClient {
    /// Waits until the server says it refused this client `what` (`Publish to "<subject>"`,
    /// `Subscription to "<subject>"`).
    async fn refused(&mut self, what: &str) {
        self.refused_all(&[what.to_owned()]).await;
    }

    /// Waits until the server said it refused this client each of `whats`, in any order (for
    /// requests made at once, so that their timeouts run together).
    async fn refused_all(&mut self, whats: &[String]) {
        let mut waiting: Vec<String> =
            whats.iter().map(|what| format!("permissions violation for {what}").to_lowercase()).collect();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !waiting.is_empty() {
            match tokio::time::timeout_at(deadline, self.heard.recv()).await {
                Ok(Some(error)) => waiting.retain(|wanted| !error.to_lowercase().contains(wanted.as_str())),
                _ => panic!("the server did not refuse the {} user: {waiting:?}", self.user.name()),
            }
        }
    }

    /// Messages in `stream` now.
    async fn messages(&self, stream: &str) -> u64 {
        let mut stream = self.jetstream.get_stream(stream).await.unwrap();
        stream.info().await.unwrap().state.messages
    }
}

/// The deploy's streams (the defaults, as in deploy/kubernetes/base/config.yaml).
fn webhook_streams() -> WebhookStreamArgs {
    WebhookStreamArgs::new(
        "LIVEKIT_WEBHOOKS".into(),
        "livekit.webhook".into(),
        Duration::from_secs(360),
        Duration::from_secs(3600),
    )
}

fn dead_letter_stream() -> DeadLetterArgs {
    DeadLetterArgs {
        stream: "LIVEKIT_DLQ".into(),
        subject_prefix: "livekit.dlq".into(),
        replicas: 1,
        max_age: Duration::from_secs(3600),
    }
}

/// `worker dlq <args>` as the operators run it: with the operator's NATS settings only (no
/// database, no other credential).
fn dlq_cli(deployment: &Deployment, args: &[&str]) -> Value {
    let output = std::process::Command::new(testkit::binaries::path("worker"))
        .env_clear()
        .envs(deployment.env(User::Operator).iter().map(|(k, v)| (*k, v.as_str())))
        .arg("dlq")
        .args(args)
        .output()
        .expect("run worker dlq");
    assert!(output.status.success(), "worker dlq {args:?}: {}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).expect("stdout is JSON")
}

/// Reads the SSE response until a `presence` event naming `identity` arrives.
async fn presence_of(response: &mut reqwest::Response, identity: &str) -> String {
    let mut text = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        match tokio::time::timeout_at(deadline, response.chunk()).await {
            Ok(Ok(Some(chunk))) => text.push_str(&String::from_utf8_lossy(&chunk)),
            other => panic!("no presence change of {identity} on the stream ({other:?}): {text}"),
        }
        let is_change = |frame: &&str| {
            frame.lines().any(|line| line.strip_prefix("event:").map(str::trim) == Some("presence"))
                && frame.contains(identity)
        };
        if let Some(frame) = text.split("\n\n").find(is_change) {
            return frame.to_owned();
        }
    }
}

/// A signed LiveKit event of a whole room (`room_started`, `room_finished`): the room of
/// `participant_joined`.
fn room_event(event: &str, event_id: &str, room: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "event": event,
        "id": event_id,
        "createdAt": (shared::domain::time::now_unix_ms() / 1000).to_string(),
        "room": {"sid": format!("RM_{room}"), "name": room},
    }))
    .unwrap()
}

/// Sends a webhook to the gateway as LiveKit does; it answers 200 once JetStream stored it.
async fn send_webhook(http: &reqwest::Client, gateway: &str, body: Vec<u8>) {
    let response = http
        .post(format!("{gateway}/webhooks/livekit"))
        .header("Authorization", sign_now(&body))
        .body(body)
        .send()
        .await;
    assert_eq!(response.unwrap().status(), 200);
}

/// One request to the platform's endpoint, as the receiver answered it.
#[derive(Debug, Clone)]
struct Delivery {
    /// `webhook-id`: the report's id, the same at every attempt and replay.
    id: String,
    /// The body's `type` (`meeting.started`, …) and `data.room_sid`.
    kind: String,
    room_sid: String,
    signature: String,
    answered: u16,
}

/// The platform's endpoint: a bare HTTP/1.1 server on 127.0.0.1 that records every request and
/// answers 200, or 500 to `meeting.ended` while told to refuse it. What the deliverer sends is
/// checked with the reference library in worker/tests/deliver.rs; here only that it arrives.
struct Receiver {
    port: u16,
    received: Arc<Mutex<Vec<Delivery>>>,
    refuse_ended: Arc<AtomicBool>,
    server: tokio::task::JoinHandle<()>,
}

impl Receiver {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (received, refuse_ended) = (Arc::new(Mutex::new(Vec::new())), Arc::new(AtomicBool::new(false)));
        let (record, refuse) = (received.clone(), refuse_ended.clone());
        let server = tokio::spawn(async move {
            while let Ok((connection, _)) = listener.accept().await {
                tokio::spawn(Self::answer(connection, record.clone(), refuse.clone()));
            }
        });
        Receiver { port, received, refuse_ended, server }
    }

    /// Reads one request (the deliverer makes one connection per attempt) and answers it.
    async fn answer(mut connection: tokio::net::TcpStream, record: Arc<Mutex<Vec<Delivery>>>, refuse: Arc<AtomicBool>) {
        let mut request = Vec::new();
        let mut chunk = [0; 8192];
        let (head, body) = loop {
            match connection.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(read) => request.extend_from_slice(&chunk[..read]),
            }
            let Some(end) = request.windows(4).position(|window| window == b"\r\n\r\n") else { continue };
            let head = String::from_utf8_lossy(&request[..end]).to_lowercase();
            let length = head
                .lines()
                .find_map(|line| line.strip_prefix("content-length:"))
                .and_then(|value| value.trim().parse::<usize>().ok())
                .unwrap_or(0);
            if request.len() >= end + 4 + length {
                break (head, request[end + 4..end + 4 + length].to_vec());
            }
        };
        let header = |name: &str| {
            head.lines().find_map(|line| line.strip_prefix(&format!("{name}:"))).unwrap_or_default().trim().to_owned()
        };
        let body: Value = serde_json::from_slice(&body).unwrap_or_default();
        let kind = body["type"].as_str().unwrap_or_default().to_owned();
        let answered = if kind == "meeting.ended" && refuse.load(Ordering::SeqCst) { 500 } else { 200 };
        record.lock().unwrap().push(Delivery {
            id: header("webhook-id"),
            kind,
            room_sid: body["data"]["room_sid"].as_str().unwrap_or_default().to_owned(),
            signature: header("webhook-signature"),
            answered,
        });
        let answer = format!("HTTP/1.1 {answered} -\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
        let _ = connection.write_all(answer.as_bytes()).await;
        let _ = connection.shutdown().await;
    }

    /// The endpoints file of the deliverers: one endpoint, this receiver, named `platform` (its
    /// consumer `deliver-platform`, as in deploy/kubernetes/base/deliver.yaml).
    fn endpoints_file(&self, dir: &std::path::Path) -> PathBuf {
        let key: Vec<u8> = (0..32).map(|_| fastrand::u8(..)).collect();
        let secret = format!("whsec_{}", base64::engine::general_purpose::STANDARD.encode(key));
        let path = dir.join("endpoints.yaml");
        let url = format!("http://127.0.0.1:{}/hooks/attendance", self.port);
        std::fs::write(&path, format!("endpoints:\n  - name: platform\n    url: {url}\n    secrets: [{secret}]\n"))
            .unwrap();
        path
    }

    /// Waits until a `kind` request answered `answered` has arrived `count` times; returns them.
    async fn wait_for(&self, kind: &str, answered: u16, count: usize) -> Vec<Delivery> {
        testkit::eventually(Duration::from_secs(20), &format!("{count} {kind} answered {answered}"), || async {
            let received = self.received.lock().unwrap().clone();
            let matching: Vec<Delivery> =
                received.into_iter().filter(|d| d.kind == kind && d.answered == answered).collect();
            (matching.len() >= count).then_some(matching)
        })
        .await
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// Waits until the service at `base` answers its readiness probe.
async fn wait_ready(http: &reqwest::Client, name: &str, base: &str) {
    testkit::eventually(Duration::from_secs(30), &format!("{name} to be ready"), || async {
        let response = http.get(format!("{base}/readyz")).send().await.ok()?;
        response.status().is_success().then_some(())
    })
    .await;
}

/// `worker deliver` as its Deployment runs it (`args: ["deliver"]`), killed on drop if still
/// running.
struct Deliverer {
    child: std::process::Child,
    base: String,
}

impl Deliverer {
    fn start(env: &[(&str, String)]) -> Self {
        let metrics_port = free_port();
        let child = std::process::Command::new(testkit::binaries::path("worker"))
            .arg("deliver")
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .env("METRICS_ADDR", format!("127.0.0.1:{metrics_port}"))
            .env("RUST_LOG", "info")
            .stdin(std::process::Stdio::null())
            .spawn()
            .expect("start worker deliver");
        Deliverer { child, base: format!("http://127.0.0.1:{metrics_port}") }
    }
}

impl Drop for Deliverer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_system_works_with_one_least_privileged_user_per_service() {
    let deployment = Deployment::start().await;
    let database = TestDatabase::create_shared().await;
    // The deliverers first, alone, so that they create both their streams (reports and dead
    // letters), with the platform's endpoint on 127.0.0.1 (an internal address, allowed here);
    // a failed delivery is tried once more after 100 ms, then dead-lettered.
    let receiver = Receiver::start().await;
    let mut env = vec![
        ("DATABASE_URL", database.url.clone()),
        ("OTEL_SERVICE_NAME", "attendance-deliver".to_owned()),
        ("DELIVERY_ENDPOINTS_FILE", receiver.endpoints_file(deployment.dir.path()).display().to_string()),
        ("DELIVERY_ALLOWED_NETWORKS", "127.0.0.0/8,::1".to_owned()),
        ("DELIVERY_RETRY_SCHEDULE", "100ms".to_owned()),
    ];
    env.extend(deployment.env(User::Deliver));
    let mut deliverer = Deliverer::start(&env);
    let http = reqwest::Client::new();
    wait_ready(&http, "deliver", &deliverer.base).await;
    let gateway_port = free_port();
    let mut services = Vec::new();
    for (name, user) in [("gateway", User::Gateway), ("worker", User::Worker), ("sweeper", User::Sweeper)] {
        let metrics_port = free_port();
        let mut env = vec![
            ("DATABASE_URL", database.url.clone()),
            ("LIVEKIT_KEYS", TEST_KEYS.to_owned()),
            ("LISTEN_ADDR", format!("127.0.0.1:{gateway_port}")),
            ("METRICS_ADDR", format!("127.0.0.1:{metrics_port}")),
            ("OUTBOX_POLL_INTERVAL", "100ms".to_owned()),
        ];
        env.extend(deployment.env(user));
        services.push((Service::start(name, &env), format!("http://127.0.0.1:{metrics_port}")));
    }
    for (service, base) in &services {
        wait_ready(&http, service.name, base).await;
    }
    let gateway = format!("http://127.0.0.1:{gateway_port}");

    // The live page follows the room (the gateway reads the presence stream) while a webhook
    // goes through the gateway to the worker, and the sweeper publishes the change.
    let mut live = http
        .get(format!("{gateway}/v1/rooms/permissions-room/presence"))
        .bearer_auth(admin_token("permissions-room"))
        .send()
        .await
        .unwrap();
    assert_eq!(live.status(), 200);
    send_webhook(&http, &gateway, room_event("room_started", "EV_permissions_started", "permissions-room")).await;
    send_webhook(&http, &gateway, participant_joined("EV_permissions", "permissions-room", "alice")).await;
    let pool = database.pool().await;
    testkit::eventually(Duration::from_secs(20), "alice's attendance in PostgreSQL", || async {
        let present: bool = sqlx::query_scalar(
            "SELECT present FROM meeting_participants WHERE room_name = 'permissions-room' AND identity = 'alice'",
        )
        .fetch_optional(&pool)
        .await
        .ok()??;
        present.then_some(())
    })
    .await;
    let change = presence_of(&mut live, "alice").await;
    assert!(change.contains(r#""present":true"#), "{change}");
    drop(live);
    // Her client's heartbeat: through the gateway to the heartbeat stream, applied by a worker.
    let response = http
        .post(format!("{gateway}/v1/heartbeats"))
        .bearer_auth(participant_token("alice", "permissions-room"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    testkit::eventually(Duration::from_secs(20), "alice's heartbeat in PostgreSQL", || async {
        let beats: i64 = sqlx::query_scalar("SELECT count(*) FROM meeting_heartbeats WHERE identity = 'alice'")
            .fetch_one(&pool)
            .await
            .ok()?;
        (beats == 1).then_some(())
    })
    .await;
    // The meeting's start, reported by the sweeper, delivered to the platform.
    let started = receiver.wait_for("meeting.started", 200, 1).await;
    assert_eq!(started[0].room_sid, "RM_permissions-room", "{started:?}");
    assert!(started[0].id.starts_with("msg_") && started[0].signature.starts_with("v1,"), "{started:?}");

    // A message no worker can apply becomes a dead letter; the operators' CLI lists, shows,
    // replays (to the webhook subjects) and purges it.
    let gateway_user = deployment.client(User::Gateway).await;
    gateway_user
        .jetstream
        .publish("livekit.webhook.participant_joined", r#"{"event":"participant_joined"}"#.into())
        .await
        .unwrap()
        .await
        .expect("the gateway's user publishes webhooks");
    let letters = testkit::eventually(Duration::from_secs(30), "a dead letter", || async {
        let letters = dlq_cli(&deployment, &["list", "--json"]);
        (letters.as_array()?.len() == 1).then_some(letters)
    })
    .await;
    assert_eq!(letters[0]["reason"], "invalid_event", "{letters}");
    let sequence = letters[0]["sequence"].as_u64().unwrap();
    let shown = dlq_cli(&deployment, &["show", &sequence.to_string(), "--json"]);
    assert_eq!(shown["payload"]["event"], "participant_joined", "{shown}");
    let replayed = dlq_cli(&deployment, &["replay", "--sequence", &sequence.to_string(), "--json"]);
    assert_eq!(replayed["replayed"].as_array().map(Vec::len), Some(1), "{replayed}");
    // Replayed, it fails again: a new dead letter, which is purged.
    testkit::eventually(Duration::from_secs(30), "the replayed letter back", || async {
        let letters = dlq_cli(&deployment, &["list", "--json"]);
        letters.as_array()?.iter().any(|letter| letter["sequence"].as_u64() > Some(sequence)).then_some(())
    })
    .await;
    let purged = dlq_cli(&deployment, &["purge", "--yes", "--json"]);
    assert_eq!(purged["purged"].as_array().map(Vec::len), Some(1), "{purged}");
    assert_eq!(dlq_cli(&deployment, &["list", "--json"]), serde_json::json!([]));

    // The meeting ends; the platform refuses its end report, which is tried again, then
    // dead-lettered by the deliverer. The operators replay it (to the redelivery subject of that
    // endpoint) once the platform is fixed: it arrives with the same webhook-id.
    receiver.refuse_ended.store(true, Ordering::SeqCst);
    send_webhook(&http, &gateway, room_event("room_finished", "EV_permissions_finished", "permissions-room")).await;
    let refused = receiver.wait_for("meeting.ended", 500, 2).await;
    let letters = testkit::eventually(Duration::from_secs(20), "the delivery's dead letter", || async {
        let letters = dlq_cli(&deployment, &["list", "--event-type", "delivery", "--json"]);
        (letters.as_array()?.len() == 1).then_some(letters)
    })
    .await;
    assert_eq!(letters[0]["reason"], "delivery_failed", "{letters}");
    receiver.refuse_ended.store(false, Ordering::SeqCst);
    let sequence = letters[0]["sequence"].as_u64().unwrap().to_string();
    let replayed = dlq_cli(&deployment, &["replay", "--sequence", &sequence, "--json"]);
    assert_eq!(replayed["replayed"].as_array().map(Vec::len), Some(1), "{replayed}");
    let ended = receiver.wait_for("meeting.ended", 200, 1).await;
    assert_eq!((&ended[0].id, ended[0].room_sid.as_str()), (&refused[0].id, "RM_permissions-room"), "{ended:?}");
    assert_eq!(dlq_cli(&deployment, &["list", "--json"]), serde_json::json!([]), "a replayed letter is removed");
    // The commands for endpoints disabled by a 410 need PostgreSQL's settings alone (the runbook
    // runs them in a deliverer's pod): nothing else in their environment.
    let deliver_cli = |args: &[&str]| {
        let output = std::process::Command::new(testkit::binaries::path("worker"))
            .env_clear()
            .env("DATABASE_URL", &database.url)
            .arg("deliver")
            .args(args)
            .output()
            .unwrap();
        assert!(output.status.success(), "worker deliver {args:?}: {}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8(output.stdout).unwrap()
    };
    assert_eq!(deliver_cli(&["disabled", "--json"]).trim(), "[]");
    assert!(deliver_cli(&["enable", "platform"]).contains("was not disabled"));

    let probes = services.iter().map(|(service, base)| (service.name, base)).chain([("deliver", &deliverer.base)]);
    for (name, base) in probes {
        let response = http.get(format!("{base}/readyz")).send().await.unwrap();
        assert_eq!(response.status(), 200, "{name} is no longer ready: {}", response.text().await.unwrap());
    }
    for (mut service, _) in services {
        service.signal("TERM");
        let status = service.wait_exit(Duration::from_secs(20)).await;
        assert!(status.success(), "{} exited with {status}", service.name);
    }
    testkit::binaries::signal_pid(deliverer.child.id(), "TERM");
    let status = testkit::eventually(Duration::from_secs(20), "deliver to exit", || {
        let status = deliverer.child.try_wait().unwrap();
        async move { status }
    })
    .await;
    assert!(status.success(), "deliver exited with {status}");
    assert_eq!(
        deployment.violations(),
        Vec::<String>::new(),
        "a service lacks a permission:\n{}",
        deployment.nats.log()
    );
    database.drop_database().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_user_can_neither_delete_nor_purge_a_stream_nor_read_dead_letters() {
    let deployment = Deployment::start().await;
    let mut gateway = deployment.client(User::Gateway).await;
    let worker = deployment.client(User::Worker).await;
    let operator = deployment.client(User::Operator).await;
    // The streams as the services create them, with a webhook and a dead letter.
    let webhooks = webhook_streams().settings();
    let dead_letters = dead_letter_stream().settings();
    webhooks.create_or_check(&gateway.jetstream).await.unwrap();
    dead_letters.create_or_check(&worker.jetstream).await.unwrap();
    gateway.jetstream.publish("livekit.webhook.room_started", "{}".into()).await.unwrap().await.unwrap();
    worker.jetstream.publish("livekit.dlq.room_started", "a dead letter".into()).await.unwrap().await.unwrap();

    for stream in ["LIVEKIT_WEBHOOKS", "LIVEKIT_DLQ"] {
        let deleted = gateway.jetstream.delete_stream(stream).await;
        assert!(deleted.is_err(), "the gateway deleted {stream}");
        gateway.refused(&format!(r#"Publish to "$JS.API.STREAM.DELETE.{stream}""#)).await;
        let purged = gateway.client.request(format!("$JS.API.STREAM.PURGE.{stream}"), "".into()).await;
        assert!(purged.is_err(), "the gateway purged {stream}: {purged:?}");
        gateway.refused(&format!(r#"Publish to "$JS.API.STREAM.PURGE.{stream}""#)).await;
    }
    let own = gateway.jetstream.get_stream("LIVEKIT_WEBHOOKS").await.expect("the gateway reads its stream's info");
    assert!(own.purge().await.is_err(), "the gateway purged its own stream");
    gateway.refused(r#"Publish to "$JS.API.STREAM.PURGE.LIVEKIT_WEBHOOKS""#).await;

    // Dead letters: not by the stream API, nor a direct get, nor a consumer, nor a subscription.
    assert!(gateway.jetstream.get_stream("LIVEKIT_DLQ").await.is_err(), "the gateway read the DLQ's info");
    gateway.refused(r#"Publish to "$JS.API.STREAM.INFO.LIVEKIT_DLQ""#).await;
    for (api, request) in [
        ("$JS.API.STREAM.MSG.GET.LIVEKIT_DLQ", r#"{"seq":1}"#),
        ("$JS.API.DIRECT.GET.LIVEKIT_DLQ", r#"{"seq":1}"#),
        ("$JS.API.DIRECT.GET.LIVEKIT_DLQ.livekit.dlq.room_started", ""),
        ("$JS.API.CONSUMER.CREATE.LIVEKIT_DLQ", r#"{"stream_name":"LIVEKIT_DLQ","config":{}}"#),
    ] {
        let answer = gateway.client.request(api, request.into()).await;
        assert!(answer.is_err(), "{api} answered the gateway: {answer:?}");
        gateway.refused(&format!(r#"Publish to "{api}""#)).await;
    }
    let mut listening = gateway.client.subscribe("livekit.dlq.>").await.unwrap();
    gateway.refused(r#"Subscription to "livekit.dlq.>""#).await;
    worker.jetstream.publish("livekit.dlq.room_finished", "another".into()).await.unwrap().await.unwrap();
    gateway.client.flush().await.unwrap();
    let heard = tokio::time::timeout(Duration::from_millis(500), futures::StreamExt::next(&mut listening)).await;
    assert!(!matches!(heard, Ok(Some(_))), "the gateway heard a dead letter");

    // The operator's user reads and deletes letters, but is no stream administrator either.
    assert!(operator.jetstream.delete_stream("LIVEKIT_DLQ").await.is_err(), "the operator deleted the DLQ");
    assert_eq!(operator.messages("LIVEKIT_DLQ").await, 2, "the dead letters are intact");
    assert_eq!(gateway.messages("LIVEKIT_WEBHOOKS").await, 1, "the webhooks are intact");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_user_cannot_publish_webhooks_and_the_sweeper_user_cannot_consume_them() {
    let deployment = Deployment::start().await;
    let gateway = deployment.client(User::Gateway).await;
    let mut worker = deployment.client(User::Worker).await;
    let mut sweeper = deployment.client(User::Sweeper).await;
    let streams = webhook_streams();
    streams.settings().create_or_check(&gateway.jetstream).await.unwrap();
    streams.heartbeat_settings().create_or_check(&gateway.jetstream).await.unwrap();
    gateway.jetstream.publish("livekit.webhook.room_started", "{}".into()).await.unwrap().await.unwrap();
    // The workers' consumer, as they create it.
    let stream = worker.jetstream.get_stream("LIVEKIT_WEBHOOKS").await.unwrap();
    let mut consumer: jetstream::consumer::PullConsumer = stream
        .create_consumer(pull::Config {
            durable_name: Some("attendance-worker".into()),
            filter_subject: "livekit.webhook.>".into(),
            ..Default::default()
        })
        .await
        .expect("the worker's user creates its consumer");
    // What a worker waiting for the webhooks before a heartbeat reads.
    assert_eq!(consumer.info().await.expect("the worker reads its consumer's info").num_pending, 1);
    stream.get_raw_message(1).await.expect("the worker reads a webhook's receipt time");

    // The worker's user: no webhook, no heartbeat, by JetStream or by core NATS.
    let acknowledged = worker.jetstream.publish("livekit.webhook.participant_joined", "forged".into()).await;
    assert!(acknowledged.unwrap().await.is_err(), "a webhook published by the worker was stored");
    worker.refused(r#"Publish to "livekit.webhook.participant_joined""#).await;
    worker.client.publish("livekit.webhook-heartbeats.client_heartbeat", "forged".into()).await.unwrap();
    worker.client.flush().await.unwrap();
    worker.refused(r#"Publish to "livekit.webhook-heartbeats.client_heartbeat""#).await;
    assert_eq!(gateway.messages("LIVEKIT_WEBHOOKS").await, 1, "nothing the worker published reached the stream");
    assert_eq!(gateway.messages("LIVEKIT_WEBHOOKS_HEARTBEATS").await, 0);

    // The sweeper's user: no consumer of its own, no pull from the workers', no message by
    // sequence, no subscription.
    let created =
        sweeper.client.request("$JS.API.CONSUMER.CREATE.LIVEKIT_WEBHOOKS.sweeper.livekit.webhook.>", "{}".into()).await;
    assert!(created.is_err(), "the sweeper created a consumer: {created:?}");
    sweeper.refused(r#"Publish to "$JS.API.CONSUMER.CREATE.LIVEKIT_WEBHOOKS.sweeper.livekit.webhook.>""#).await;
    for (api, request) in [
        ("$JS.API.CONSUMER.MSG.NEXT.LIVEKIT_WEBHOOKS.attendance-worker", r#"{"batch":1}"#),
        ("$JS.API.STREAM.MSG.GET.LIVEKIT_WEBHOOKS", r#"{"seq":1}"#),
        ("$JS.API.DIRECT.GET.LIVEKIT_WEBHOOKS", r#"{"seq":1}"#),
        ("$JS.API.STREAM.INFO.LIVEKIT_WEBHOOKS", ""),
    ] {
        let answer = sweeper.client.request(api, request.into()).await;
        assert!(answer.is_err(), "{api} answered the sweeper: {answer:?}");
        sweeper.refused(&format!(r#"Publish to "{api}""#)).await;
    }
    let _listening = sweeper.client.subscribe("livekit.webhook.>").await.unwrap();
    sweeper.refused(r#"Subscription to "livekit.webhook.>""#).await;
    let info = consumer.info().await.unwrap();
    assert_eq!(
        (info.num_pending, info.delivered.stream_sequence),
        (1, 0),
        "the webhook is still waiting for the workers, delivered to no one"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_deliver_user_can_neither_publish_webhooks_or_reports_nor_read_webhooks() {
    let deployment = Deployment::start().await;
    let gateway = deployment.client(User::Gateway).await;
    let worker = deployment.client(User::Worker).await;
    let mut deliver = deployment.client(User::Deliver).await;
    webhook_streams().settings().create_or_check(&gateway.jetstream).await.unwrap();
    gateway.jetstream.publish("livekit.webhook.room_started", "{}".into()).await.unwrap().await.unwrap();
    let stream = worker.jetstream.get_stream("LIVEKIT_WEBHOOKS").await.unwrap();
    let mut consumer: jetstream::consumer::PullConsumer = stream
        .create_consumer(pull::Config {
            durable_name: Some("attendance-worker".into()),
            filter_subject: "livekit.webhook.>".into(),
            ..Default::default()
        })
        .await
        .unwrap();

    // Publishing: no webhook, no heartbeat, no report (only the sweepers report).
    let forged = [
        "livekit.webhook.participant_joined",
        "livekit.webhook-heartbeats.client_heartbeat",
        "attendance.meeting.ended",
    ];
    for subject in forged {
        deliver.client.publish(subject, "forged".into()).await.unwrap();
    }
    let acknowledged = deliver.jetstream.publish("livekit.webhook.participant_left", "forged".into()).await;
    // Reading the webhooks: not their stream, not a consumer (its own or the workers'), not a
    // message by sequence, not a subscription. Asked at once: each refusal is a timeout.
    let reads = [
        ("$JS.API.STREAM.INFO.LIVEKIT_WEBHOOKS", ""),
        ("$JS.API.STREAM.MSG.GET.LIVEKIT_WEBHOOKS", r#"{"seq":1}"#),
        ("$JS.API.DIRECT.GET.LIVEKIT_WEBHOOKS", r#"{"seq":1}"#),
        ("$JS.API.CONSUMER.CREATE.LIVEKIT_WEBHOOKS.deliver-platform.livekit.webhook.>", "{}"),
        ("$JS.API.CONSUMER.MSG.NEXT.LIVEKIT_WEBHOOKS.attendance-worker", r#"{"batch":1}"#),
    ];
    let client = &deliver.client;
    let (answers, stored) = tokio::join!(
        futures::future::join_all(reads.iter().map(|(api, request)| client.request(*api, (*request).into()))),
        acknowledged.unwrap()
    );
    assert!(stored.is_err(), "a webhook published by the deliverer was stored");
    for ((api, _), answer) in reads.iter().zip(answers) {
        assert!(answer.is_err(), "{api} answered the deliverer: {answer:?}");
    }
    let _listening = deliver.client.subscribe("livekit.webhook.>").await.unwrap();
    let refusals: Vec<String> = forged
        .iter()
        .chain(["livekit.webhook.participant_left"].iter())
        .chain(reads.iter().map(|(api, _)| api))
        .map(|subject| format!(r#"Publish to "{subject}""#))
        .chain([r#"Subscription to "livekit.webhook.>""#.to_owned()])
        .collect();
    deliver.refused_all(&refusals).await;

    assert_eq!(gateway.messages("LIVEKIT_WEBHOOKS").await, 1, "nothing the deliverer published reached the stream");
    let info = consumer.info().await.unwrap();
    assert_eq!(
        (info.num_pending, info.delivered.stream_sequence),
        (1, 0),
        "the webhook is still waiting for the workers, delivered to no one"
    );
}
