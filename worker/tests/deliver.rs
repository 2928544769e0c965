//! `worker deliver` end to end: the real binary (`cargo build --workspace --bins` first), the
//! shared NATS (a report and a dead-letter stream of each test's own) and PostgreSQL (a fresh
//! database per test), and a real receiver that verifies every request with the official
//! Standard Webhooks library: `examples/receiver/standard_webhooks_receiver.py` with PyPI's
//! `standardwebhooks` in `.local/py` (`scripts/example-tools.sh` installs it, `make test` runs
//! that).
//!
//! The receivers listen on 127.0.0.1, an internal address: the deliverers here allow
//! 127.0.0.0/8 and ::1 (`DELIVERY_ALLOWED_NETWORKS`), except where the guard itself is tested.
//! Retries use schedules of a few hundred milliseconds; nothing waits for the real one.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use async_nats::jetstream;
use base64::Engine as _;
use shared::domain::report::{ReportType, report_id};
use shared::nats::reports::{ReportMessage, ReportStream};
use shared::nats::{DeadLetterArgs, ReportArgs};
use shared::store::deliveries;
use testkit::postgres::TestDatabase;

const ALLOW_LOOPBACK: &str = "127.0.0.0/8,::1";

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the workspace").to_owned()
}

fn new_secret() -> String {
    let key: Vec<u8> = (0..32).map(|_| fastrand::u8(..)).collect();
    format!("whsec_{}", base64::engine::general_purpose::STANDARD.encode(key))
}

/// One request as the receiver recorded it.
#[derive(Debug, Clone, serde::Deserialize)]
struct Received {
    path: String,
    id: Option<String>,
    timestamp: Option<String>,
    signature: Option<String>,
    content_type: Option<String>,
    body: String,
    #[serde(rename = "type")]
    kind: Option<String>,
    sequence: Option<i64>,
    /// Whether each of the receiver's secrets verified it, with the reference library.
    verified: Vec<bool>,
    /// Whether a copy with its body changed was rejected by every secret.
    tampered_rejected: bool,
    answered: u16,
    arrived_at: f64,
}

/// The Python receiver, as a process of its own (stopped to be "down").
struct Receiver {
    port: u16,
    dir: tempfile::TempDir,
    secrets: Vec<String>,
    tls: Option<testkit::tls::CertFiles>,
    child: Option<Child>,
    http: reqwest::Client,
}

impl Receiver {
    async fn start(secrets: &[&str], tls: Option<testkit::tls::CertFiles>) -> Self {
        let mut receiver = Receiver {
            port: testkit::nats::free_port(),
            dir: tempfile::tempdir().expect("a temporary directory"),
            secrets: secrets.iter().map(|s| (*s).to_owned()).collect(),
            tls,
            child: None,
            http: reqwest::Client::new(),
        };
        receiver.restart().await;
        receiver
    }

    async fn restart(&mut self) {
        assert!(self.child.is_none(), "the receiver is running");
        let python = workspace().join(".local/py/bin/python");
        let ready = Command::new(&python).args(["-c", "import standardwebhooks"]).status();
        assert!(
            ready.is_ok_and(|status| status.success()),
            "{} cannot import standardwebhooks: run scripts/example-tools.sh (make test does)",
            python.display()
        );
        let mut command = Command::new(python);
        command
            .arg(workspace().join("examples/receiver/standard_webhooks_receiver.py"))
            .args(["--port", &self.port.to_string(), "--record"])
            .arg(self.record_file());
        for secret in &self.secrets {
            command.args(["--secret", secret]);
        }
        if let Some(tls) = &self.tls {
            command.arg("--cert").arg(&tls.cert).arg("--key").arg(&tls.key);
        }
        self.child = Some(command.stdin(Stdio::null()).spawn().expect("start the receiver"));
        let port = self.port;
        testkit::eventually(Duration::from_secs(10), "the receiver to listen", || async move {
            tokio::net::TcpStream::connect(("127.0.0.1", port)).await.ok().map(|_| ())
        })
        .await;
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn record_file(&self) -> PathBuf {
        self.dir.path().join("requests.jsonl")
    }

    /// The URL of `path`, by name (`localhost`: the guard resolves it at every attempt).
    fn url(&self, path: &str) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://localhost:{}{path}", self.port)
    }

    /// Sets how requests to `path` are answered: `answers` in turn, then `then`.
    async fn plan(&self, path: &str, answers: serde_json::Value, then: serde_json::Value) {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        assert!(scheme == "http", "plans are set on plain-HTTP receivers");
        let plan = serde_json::json!({"path": path, "answers": answers, "then": then});
        let url = format!("http://127.0.0.1:{}/control", self.port);
        let response = self.http.post(url).json(&plan).send().await.expect("the receiver's control");
        assert_eq!(response.status().as_u16(), 204);
    }

    /// Every request received so far, in arrival order.
    fn received(&self) -> Vec<Received> {
        let text = std::fs::read_to_string(self.record_file()).unwrap_or_default();
        text.lines().map(|line| serde_json::from_str(line).expect("a record of the receiver")).collect()
    }

    fn received_on(&self, path: &str) -> Vec<Received> {
        self.received().into_iter().filter(|r| r.path == path).collect()
    }

    /// Waits until `path` received at least `count` requests, and returns them all.
    async fn wait_for(&self, path: &str, count: usize, timeout: Duration) -> Vec<Received> {
        testkit::eventually(timeout, &format!("{count} requests on {path}"), || async move {
            let received = self.received_on(path);
            (received.len() >= count).then_some(received)
        })
        .await
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A running `worker deliver`, killed on drop.
struct Deliverer {
    child: Child,
    base_url: String,
}

impl Deliverer {
    fn signal(&self, signal: &str) {
        testkit::binaries::signal_pid(self.child.id(), signal);
    }

    async fn metrics(&self) -> String {
        reqwest::get(format!("{}/metrics", self.base_url)).await.expect("metrics").text().await.expect("metrics text")
    }

    /// The value of the sample `sample` (name and labels as printed), 0 when absent.
    async fn metric(&self, sample: &str) -> f64 {
        let text = self.metrics().await;
        text.lines()
            .find_map(|line| line.strip_prefix(sample).and_then(|rest| rest.strip_prefix(' ')))
            .map_or(0.0, |value| value.trim().parse().expect("a number"))
    }

    async fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let child = &mut self.child;
        testkit::eventually(timeout, "the deliverer to exit", || {
            let status = child.try_wait().expect("try_wait");
            async move { status }
        })
        .await
    }
}

impl Drop for Deliverer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A test's streams, database, endpoints file and receiver.
struct Bed {
    suffix: String,
    database: TestDatabase,
    jetstream: jetstream::Context,
    reports: ReportStream,
    dir: tempfile::TempDir,
    receiver: Receiver,
}

impl Bed {
    async fn new(receiver_secrets: &[&str]) -> Self {
        Self::with_receiver(Receiver::start(receiver_secrets, None).await).await
    }

    async fn with_receiver(receiver: Receiver) -> Self {
        let suffix = testkit::unique_suffix();
        let client = async_nats::connect(testkit::nats::shared_url()).await.expect("NATS");
        let bed = Bed {
            database: TestDatabase::create_shared().await,
            jetstream: jetstream::new(client.clone()),
            reports: ReportStream::new(client, &report_args(&suffix)),
            dir: tempfile::tempdir().expect("a temporary directory"),
            receiver,
            suffix,
        };
        bed.reports.ensure().await.expect("the report stream");
        bed
    }

    fn endpoints_file(&self) -> PathBuf {
        self.dir.path().join("endpoints.yaml")
    }

    fn write_endpoints(&self, yaml: &str) {
        std::fs::write(self.endpoints_file(), yaml).expect("write the endpoints file");
    }

    fn dlq_args(&self) -> DeadLetterArgs {
        DeadLetterArgs {
            stream: format!("TEST_DLQ_{}", self.suffix),
            subject_prefix: format!("test{}.dlq", self.suffix),
            replicas: 1,
            max_age: Duration::from_secs(3600),
        }
    }

    /// The environment every `worker` command of this test runs with.
    fn env(&self) -> Vec<(String, String)> {
        let reports = report_args(&self.suffix);
        let dlq = self.dlq_args();
        [
            ("NATS_URL", testkit::nats::shared_url()),
            ("DATABASE_URL", self.database.url.clone()),
            ("DATABASE_ACQUIRE_TIMEOUT", "2s".into()),
            ("REPORT_STREAM", reports.stream),
            ("REPORT_SUBJECT_PREFIX", reports.subject_prefix),
            ("REPORT_STREAM_MAX_AGE", "1h".into()),
            ("DLQ_STREAM", dlq.stream),
            ("DLQ_SUBJECT_PREFIX", dlq.subject_prefix),
            ("DLQ_MAX_AGE", "1h".into()),
            ("DELIVERY_ENDPOINTS_FILE", self.endpoints_file().display().to_string()),
            ("DELIVERY_RETRY_SCHEDULE", "100ms,200ms,400ms".into()),
            ("DELIVERY_TIMEOUT", "1s".into()),
            ("DELIVERY_MAX_RETRY_AFTER", "5s".into()),
            ("DELIVERY_ALLOWED_NETWORKS", ALLOW_LOOPBACK.into()),
            ("RUST_LOG", "info".into()),
        ]
        .into_iter()
        .map(|(name, value)| (name.to_owned(), value))
        .collect()
    }

    fn command(&self, overrides: &[(&str, &str)]) -> Command {
        let mut command = Command::new(testkit::binaries::path("worker"));
        command.envs(self.env()).stdin(Stdio::null());
        for (name, value) in overrides {
            command.env(name, value);
        }
        command
    }

    /// Starts `worker deliver` and waits until it is ready (its consumers exist).
    async fn start(&self, overrides: &[(&str, &str)]) -> Deliverer {
        let port = testkit::nats::free_port();
        let child = self
            .command(overrides)
            .env("METRICS_ADDR", format!("127.0.0.1:{port}"))
            .arg("deliver")
            .spawn()
            .expect("start worker deliver");
        let deliverer = Deliverer { child, base_url: format!("http://127.0.0.1:{port}") };
        let url = format!("{}/readyz", deliverer.base_url);
        testkit::eventually(Duration::from_secs(20), "worker deliver to be ready", || {
            let url = url.clone();
            async move { reqwest::get(url).await.ok().filter(|r| r.status().is_success()).map(|_| ()) }
        })
        .await;
        deliverer
    }

    /// Runs `worker <args>` to completion; its standard output, after checking it succeeded.
    fn worker(&self, args: &[&str]) -> String {
        let output = self.command(&[]).args(args).output().expect("run worker");
        let (stdout, stderr) = (String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
        assert!(output.status.success(), "worker {args:?} failed: {stdout}\n{stderr}");
        stdout.into_owned()
    }

    fn room_sid(&self) -> String {
        format!("RM_{}", self.suffix)
    }

    /// Report number `sequence` of this test's meeting.
    fn report(&self, sequence: i64, kind: ReportType) -> ReportMessage {
        let room_sid = self.room_sid();
        let body = serde_json::json!({
            "type": kind.as_str(),
            "timestamp": "2026-12-01T10:00:00.000Z",
            "data": {
                "room": "algebra",
                "room_sid": room_sid,
                "sequence": sequence,
                "participants": [{"identity": "zoë ✓", "attended_seconds": 3000 + sequence}],
            },
        });
        // Pretty-printed: what is signed and sent must be these bytes, not a re-serialization.
        let body = serde_json::to_vec_pretty(&body).expect("a body").into();
        ReportMessage { id: report_id(&room_sid, sequence), kind, room_sid, sequence, body }
    }

    async fn publish(&self, reports: &[&ReportMessage]) {
        let reports: Vec<(ReportMessage, Option<String>)> = reports.iter().map(|r| ((*r).clone(), None)).collect();
        self.reports.publish_all(&reports, Duration::from_secs(5)).await.expect("publish the reports");
    }

    async fn pool(&self) -> sqlx::PgPool {
        self.database.pool().await
    }

    /// Waits until the endpoint's consumer has nothing left to deliver or to hear back about.
    async fn wait_consumed(&self, endpoint: &str) {
        let stream = report_args(&self.suffix).stream;
        testkit::eventually(Duration::from_secs(10), &format!("deliver-{endpoint} to be drained"), || async {
            let stream = self.jetstream.get_stream(&stream).await.ok()?;
            let info = stream.consumer_info(format!("deliver-{endpoint}")).await.ok()?;
            (info.num_pending == 0 && info.num_ack_pending == 0).then_some(())
        })
        .await;
    }

    async fn cleanup(self) {
        let _ = self.jetstream.delete_stream(report_args(&self.suffix).stream).await;
        let _ = self.jetstream.delete_stream(self.dlq_args().stream).await;
        self.database.drop_database().await;
    }
}

fn report_args(suffix: &str) -> ReportArgs {
    ReportArgs {
        stream: format!("TEST_REPORTS_{suffix}"),
        subject_prefix: format!("test{suffix}.meeting"),
        replicas: 1,
        max_age: Duration::from_secs(3600),
    }
}

fn endpoint(name: &str, url: &str, secrets: &[&str]) -> String {
    format!("  - name: {name}\n    url: '{url}'\n    secrets: [{}]\n", secrets.join(", "))
}

/// Seconds between successive arrivals.
fn gaps(received: &[Received]) -> Vec<f64> {
    received.windows(2).map(|pair| pair[1].arrived_at - pair[0].arrived_at).collect()
}

#[tokio::test]
async fn every_request_verifies_with_the_reference_library_also_during_a_secret_rotation() {
    let (old, new) = (new_secret(), new_secret());
    let bed = Bed::new(&[&old, &new]).await;
    bed.write_endpoints(&format!("endpoints:\n{}", endpoint("platform", &bed.receiver.url("/hooks"), &[&old])));
    let deliverer = bed.start(&[]).await;

    let before: Vec<ReportMessage> = [(1, ReportType::Started), (2, ReportType::Ended), (3, ReportType::Updated)]
        .map(|(n, k)| bed.report(n, k))
        .into();
    bed.publish(&before.iter().collect::<Vec<_>>()).await;
    let received = bed.receiver.wait_for("/hooks", 3, Duration::from_secs(10)).await;
    for report in &before {
        let copies: Vec<&Received> = received.iter().filter(|r| r.id.as_deref() == Some(report.id.as_str())).collect();
        assert_eq!(copies.len(), 1, "report {} delivered once: {received:#?}", report.sequence);
        let request = copies[0];
        assert_eq!(request.verified, [true, false], "signed with the old secret only: {request:?}");
        assert!(request.tampered_rejected, "a changed body does not verify: {request:?}");
        assert_eq!(request.body.as_bytes(), &report.body[..], "the body is the report's bytes");
        assert_eq!((request.kind.as_deref(), request.sequence), (Some(report.kind.as_str()), Some(report.sequence)));
        assert_eq!(request.content_type.as_deref(), Some("application/json"));
        let sent_at: i64 = request.timestamp.as_deref().and_then(|t| t.parse().ok()).expect("webhook-timestamp");
        assert!((sent_at as f64 - request.arrived_at).abs() < 5.0, "the timestamp is the attempt's");
        assert_eq!(request.answered, 200);
    }

    // Rotation: the new secret signs, the old one too until the operator drops it.
    bed.write_endpoints(&format!("endpoints:\n{}", endpoint("platform", &bed.receiver.url("/hooks"), &[&new, &old])));
    deliverer.signal("HUP");
    let applied = r#"delivery_endpoints_reloads_total{result="applied"}"#;
    testkit::eventually(Duration::from_secs(10), "the reload", || async {
        (deliverer.metric(applied).await >= 1.0).then_some(())
    })
    .await;
    let during = bed.report(4, ReportType::Updated);
    bed.publish(&[&during]).await;
    let received = bed.receiver.wait_for("/hooks", 4, Duration::from_secs(10)).await;
    let rotated = &received[3];
    assert_eq!(rotated.id.as_deref(), Some(during.id.as_str()));
    assert_eq!(rotated.verified, [true, true], "either secret verifies during the rotation: {rotated:?}");
    assert_eq!(rotated.signature.as_deref().map(|s| s.split(' ').count()), Some(2));
    assert!(rotated.tampered_rejected);
    assert_eq!(deliverer.metric(r#"delivery_attempts_total{endpoint="platform",outcome="delivered"}"#).await, 4.0);
    drop(deliverer);
    bed.cleanup().await;
}

#[tokio::test]
async fn failures_and_timeouts_are_retried_on_the_schedule_and_retry_after_is_honoured() {
    let secret = new_secret();
    let bed = Bed::new(&[&secret]).await;
    bed.write_endpoints(&format!("endpoints:\n{}", endpoint("platform", &bed.receiver.url("/hooks"), &[&secret])));
    let answers = serde_json::json!([
        {"status": 500},
        {"status": 503, "retry_after": "1"},
        {"status": 200, "sleep": 1.5},
    ]);
    bed.receiver.plan("/hooks", answers, serde_json::json!({"status": 204})).await;
    let deliverer = bed.start(&[("DELIVERY_RETRY_SCHEDULE", "200ms,400ms,800ms,3200ms")]).await;

    let report = bed.report(1, ReportType::Ended);
    bed.publish(&[&report]).await;
    let received = bed.receiver.wait_for("/hooks", 4, Duration::from_secs(15)).await;
    assert!(
        received.iter().all(|r| r.id.as_deref() == Some(report.id.as_str()) && r.verified == [true]),
        "{received:#?}"
    );
    assert_eq!(received.iter().map(|r| r.answered).collect::<Vec<_>>(), [500, 503, 200, 204]);
    let gaps = gaps(&received);
    // 200 ms ± 10 %; then the receiver's 1 s (longer than 400 ms); then the 1 s timeout and
    // 800 ms ± 10 %. Each gap also holds an answer, a record and a NAK: up to 0.6 s more.
    let within = |gap: f64, low: f64, high: f64| gap >= low && gap <= high + 0.6;
    assert!(within(gaps[0], 0.18, 0.22), "first retry after 200 ms: {gaps:?}");
    assert!(within(gaps[1], 1.0, 1.0), "Retry-After: 1 honoured: {gaps:?}");
    assert!(within(gaps[2], 1.72, 1.88), "a timeout (1 s) then 800 ms: {gaps:?}");

    let pool = bed.pool().await;
    let attempts = testkit::eventually(Duration::from_secs(5), "4 attempts recorded", || async {
        let attempts = deliveries::attempts_of(&pool, "platform", &report.id).await.ok()?;
        (attempts.len() == 4).then_some(attempts)
    })
    .await;
    let statuses: Vec<Option<u16>> = attempts.iter().map(|a| a.attempt.status).collect();
    assert_eq!(statuses, [Some(500), Some(503), None, Some(204)]);
    assert_eq!(attempts.iter().map(|a| a.attempt.attempt).collect::<Vec<_>>(), [1, 2, 3, 4]);
    let timeout = attempts[2].attempt.error.as_deref().unwrap_or_default();
    assert!(timeout.contains("no answer within") && attempts[2].attempt.latency_ms >= 1000, "{timeout}");
    assert_eq!(attempts[0].attempt.error.as_deref(), Some("HTTP 500"));
    assert!(attempts[3].attempt.error.is_none());
    let sample = |outcome: &str| format!(r#"delivery_attempts_total{{endpoint="platform",outcome="{outcome}"}}"#);
    assert_eq!(deliverer.metric(&sample("http_error")).await, 2.0);
    assert_eq!(deliverer.metric(&sample("timeout")).await, 1.0);
    assert_eq!(deliverer.metric(&sample("delivered")).await, 1.0);
    assert!(deliverer.metrics().await.contains(r#"delivery_attempt_duration_seconds_count{endpoint="platform"} 4"#));
    drop(deliverer);
    bed.cleanup().await;
}

#[tokio::test]
async fn an_exhausted_delivery_is_dead_lettered_and_its_replay_goes_to_its_endpoint_alone() {
    let secret = new_secret();
    let bed = Bed::new(&[&secret]).await;
    let (failing, healthy) = (bed.receiver.url("/failing"), bed.receiver.url("/healthy"));
    bed.write_endpoints(&format!(
        "endpoints:\n{}{}",
        endpoint("failing", &failing, &[&secret]),
        endpoint("healthy", &healthy, &[&secret])
    ));
    bed.receiver.plan("/failing", serde_json::json!([]), serde_json::json!({"status": 500})).await;
    let deliverer = bed.start(&[("DELIVERY_RETRY_SCHEDULE", "100ms,200ms")]).await;

    let report = bed.report(2, ReportType::Ended);
    bed.publish(&[&report]).await;
    bed.receiver.wait_for("/failing", 3, Duration::from_secs(10)).await;
    let letters = testkit::eventually(Duration::from_secs(10), "the dead letter", || async {
        let listed: serde_json::Value = serde_json::from_str(&bed.worker(&["dlq", "list", "--json"])).ok()?;
        (listed.as_array()?.len() == 1).then_some(listed)
    })
    .await;
    let letter = &letters[0];
    assert_eq!(letter["event_type"], "delivery");
    assert_eq!(letter["reason"], "delivery_failed");
    assert_eq!(letter["room"], "algebra");
    assert_eq!(letter["delivery_count"], 3);
    assert_eq!(letter["original_subject"], format!("test{}.meeting.redeliver.failing.ended", bed.suffix));
    assert!(letter["error"].as_str().is_some_and(|e| e.contains("HTTP 500")), "{letter}");
    assert_eq!(bed.receiver.received_on("/failing").len(), 3, "three attempts, then none");
    assert_eq!(deliverer.metric(r#"delivery_dead_lettered_total{endpoint="failing"}"#).await, 1.0);

    // The receiver is fixed; the operator replays: the same report, with the same id.
    bed.receiver.plan("/failing", serde_json::json!([]), serde_json::json!({"status": 200})).await;
    let sequence = letter["sequence"].as_u64().expect("a sequence").to_string();
    bed.worker(&["dlq", "replay", "--sequence", &sequence, "--json"]);
    let received = bed.receiver.wait_for("/failing", 4, Duration::from_secs(10)).await;
    let replayed = &received[3];
    assert_eq!(replayed.id.as_deref(), Some(report.id.as_str()), "the same webhook-id");
    assert_eq!((replayed.verified.as_slice(), replayed.answered), (&[true][..], 200));
    assert_eq!(replayed.body.as_bytes(), &report.body[..]);
    assert_eq!(bed.worker(&["dlq", "list", "--json"]).trim(), "[]");

    bed.wait_consumed("healthy").await;
    bed.wait_consumed("failing").await;
    let healthy_received = bed.receiver.received_on("/healthy");
    assert_eq!(healthy_received.len(), 1, "the healthy endpoint got the report once, not the replay");
    assert_eq!(healthy_received[0].id.as_deref(), Some(report.id.as_str()));
    drop(deliverer);
    bed.cleanup().await;
}

#[tokio::test]
async fn gone_disables_the_endpoint_until_an_operator_enables_it() {
    let secret = new_secret();
    let bed = Bed::new(&[&secret]).await;
    bed.write_endpoints(&format!("endpoints:\n{}", endpoint("leaving", &bed.receiver.url("/gone"), &[&secret])));
    bed.receiver.plan("/gone", serde_json::json!([]), serde_json::json!({"status": 410})).await;
    let deliverer = bed.start(&[]).await;

    let first = bed.report(1, ReportType::Started);
    bed.publish(&[&first]).await;
    bed.receiver.wait_for("/gone", 1, Duration::from_secs(10)).await;
    let disabled = testkit::eventually(Duration::from_secs(10), "the endpoint disabled", || async {
        let listed: serde_json::Value = serde_json::from_str(&bed.worker(&["deliver", "disabled", "--json"])).ok()?;
        (listed.as_array()?.len() == 1).then_some(listed)
    })
    .await;
    assert_eq!((disabled[0]["endpoint"].as_str(), disabled[0]["status"].as_u64()), (Some("leaving"), Some(410)));
    assert_eq!(deliverer.metric(r#"delivery_endpoint_disabled{endpoint="leaving"}"#).await, 1.0);
    assert_eq!(deliverer.metric(r#"delivery_attempts_total{endpoint="leaving",outcome="gone"}"#).await, 1.0);

    // Disabled: nothing more is sent, nothing is dead-lettered, nothing is lost.
    let second = bed.report(2, ReportType::Ended);
    bed.publish(&[&second]).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(bed.receiver.received_on("/gone").len(), 1, "a disabled endpoint receives nothing");
    assert_eq!(bed.worker(&["dlq", "list", "--json"]).trim(), "[]");

    bed.receiver.plan("/gone", serde_json::json!([]), serde_json::json!({"status": 200})).await;
    assert!(bed.worker(&["deliver", "enable", "leaving"]).contains("enabled"));
    deliverer.signal("HUP");
    let received = bed.receiver.wait_for("/gone", 3, Duration::from_secs(10)).await;
    let mut delivered: Vec<&str> = received[1..].iter().filter_map(|r| r.id.as_deref()).collect();
    delivered.sort_unstable();
    let mut expected = vec![first.id.as_str(), second.id.as_str()];
    expected.sort_unstable();
    assert_eq!(delivered, expected, "both reports, the refused one with its id");
    assert!(received.iter().all(|r| r.verified == [true]));
    assert_eq!(deliverer.metric(r#"delivery_endpoint_disabled{endpoint="leaving"}"#).await, 0.0);
    bed.wait_consumed("leaving").await;
    assert_eq!(bed.receiver.received_on("/gone").len(), 3, "each delivered once");
    drop(deliverer);
    bed.cleanup().await;
}

#[tokio::test]
async fn a_slow_endpoint_does_not_delay_another() {
    let secret = new_secret();
    let bed = Bed::new(&[&secret]).await;
    let (slow, fast) = (bed.receiver.url("/slow"), bed.receiver.url("/fast"));
    bed.write_endpoints(&format!(
        "endpoints:\n{}{}",
        endpoint("slow", &slow, &[&secret]),
        endpoint("fast", &fast, &[&secret])
    ));
    bed.receiver.plan("/slow", serde_json::json!([]), serde_json::json!({"status": 200, "sleep": 10})).await;
    let overrides = [("DELIVERY_CONCURRENCY", "1"), ("DELIVERY_TIMEOUT", "5s"), ("DELIVERY_RETRY_SCHEDULE", "10s")];
    let deliverer = bed.start(&overrides).await;

    let reports: Vec<ReportMessage> = (1..=5).map(|n| bed.report(n, ReportType::Updated)).collect();
    let published = Instant::now();
    bed.publish(&reports.iter().collect::<Vec<_>>()).await;
    let fast_received = bed.receiver.wait_for("/fast", 5, Duration::from_secs(10)).await;
    let elapsed = published.elapsed();
    assert!(elapsed < Duration::from_secs(3), "the fast endpoint took {elapsed:?}");
    bed.receiver.wait_for("/slow", 1, Duration::from_secs(5)).await;
    let slow_received = bed.receiver.received_on("/slow").len();
    assert_eq!(slow_received, 1, "the slow endpoint is still at its first report");
    let mut ids: Vec<&str> = fast_received.iter().filter_map(|r| r.id.as_deref()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 5, "five reports, five ids");
    drop(deliverer);
    bed.cleanup().await;
}

#[tokio::test]
async fn a_receiver_down_for_a_while_gets_every_report_once_when_back() {
    let secret = new_secret();
    let mut bed = Bed::new(&[&secret]).await;
    bed.write_endpoints(&format!("endpoints:\n{}", endpoint("platform", &bed.receiver.url("/hooks"), &[&secret])));
    let deliverer = bed.start(&[("DELIVERY_RETRY_SCHEDULE", "200ms,400ms,800ms,1600ms,3200ms")]).await;
    bed.receiver.stop();

    let reports: Vec<ReportMessage> = (1..=3).map(|n| bed.report(n, ReportType::Updated)).collect();
    bed.publish(&reports.iter().collect::<Vec<_>>()).await;
    let unreachable = r#"delivery_attempts_total{endpoint="platform",outcome="unreachable"}"#;
    testkit::eventually(Duration::from_secs(10), "failed attempts while the receiver is down", || async {
        (deliverer.metric(unreachable).await >= 6.0).then_some(())
    })
    .await;
    bed.receiver.restart().await;

    let received = bed.receiver.wait_for("/hooks", 3, Duration::from_secs(15)).await;
    bed.wait_consumed("platform").await;
    let received_after = bed.receiver.received_on("/hooks");
    assert_eq!(received_after.len(), received.len().max(3));
    for report in &reports {
        let copies: Vec<&Received> =
            received_after.iter().filter(|r| r.id.as_deref() == Some(report.id.as_str())).collect();
        assert_eq!(copies.len(), 1, "report {} once: {received_after:#?}", report.sequence);
        assert_eq!((copies[0].verified.as_slice(), copies[0].answered), (&[true][..], 200));
        assert_eq!(copies[0].sequence, Some(report.sequence));
    }
    let pool = bed.pool().await;
    let attempts = deliveries::attempts_of(&pool, "platform", &reports[0].id).await.expect("attempts");
    let refused = attempts.first().and_then(|a| a.attempt.error.clone()).unwrap_or_default();
    assert!(refused.starts_with("cannot connect"), "{attempts:#?}");
    assert_eq!(attempts.last().map(|a| a.attempt.status), Some(Some(200)));
    drop(deliverer);
    bed.cleanup().await;
}

#[tokio::test]
async fn a_deliverer_killed_mid_delivery_leaves_the_report_to_another_with_the_same_id() {
    let secret = new_secret();
    let bed = Bed::new(&[&secret]).await;
    bed.write_endpoints(&format!("endpoints:\n{}", endpoint("platform", &bed.receiver.url("/hooks"), &[&secret])));
    bed.receiver
        .plan("/hooks", serde_json::json!([{"status": 200, "sleep": 30}]), serde_json::json!({"status": 200}))
        .await;
    // An attempt may take 2 s: the consumer's ack wait is 2 × 2 s + 5 s.
    let overrides = [("DELIVERY_TIMEOUT", "2s")];
    let mut first = bed.start(&overrides).await;

    let report = bed.report(1, ReportType::Ended);
    bed.publish(&[&report]).await;
    bed.receiver.wait_for("/hooks", 1, Duration::from_secs(10)).await;
    first.signal("KILL");
    first.wait_exit(Duration::from_secs(5)).await;
    let second = bed.start(&overrides).await;

    let received = bed.receiver.wait_for("/hooks", 2, Duration::from_secs(20)).await;
    assert!(received.iter().all(|r| r.id.as_deref() == Some(report.id.as_str()) && r.verified == [true]));
    bed.wait_consumed("platform").await;
    assert_eq!(bed.receiver.received_on("/hooks").len(), 2, "once cut, once delivered");
    let pool = bed.pool().await;
    let attempts = deliveries::attempts_of(&pool, "platform", &report.id).await.expect("attempts");
    // The killed attempt left no record; the next is JetStream's second delivery.
    assert_eq!(attempts.iter().map(|a| (a.attempt.attempt, a.attempt.status)).collect::<Vec<_>>(), [(2, Some(200))]);
    drop(second);
    bed.cleanup().await;
}

#[tokio::test]
async fn sigterm_lets_the_delivery_in_flight_finish_then_exits() {
    let secret = new_secret();
    let bed = Bed::new(&[&secret]).await;
    bed.write_endpoints(&format!("endpoints:\n{}", endpoint("platform", &bed.receiver.url("/hooks"), &[&secret])));
    bed.receiver
        .plan("/hooks", serde_json::json!([{"status": 200, "sleep": 1.5}]), serde_json::json!({"status": 200}))
        .await;
    let overrides = [("DELIVERY_TIMEOUT", "5s")];
    let mut deliverer = bed.start(&overrides).await;

    let report = bed.report(1, ReportType::Ended);
    bed.publish(&[&report]).await;
    bed.receiver.wait_for("/hooks", 1, Duration::from_secs(10)).await;
    let signalled = Instant::now();
    deliverer.signal("TERM");
    let status = deliverer.wait_exit(Duration::from_secs(10)).await;
    assert!(status.success(), "exits 0: {status:?}");
    assert!(signalled.elapsed() >= Duration::from_millis(1200), "it waited for the answer");

    let pool = bed.pool().await;
    let attempts = deliveries::attempts_of(&pool, "platform", &report.id).await.expect("attempts");
    assert_eq!(attempts.iter().map(|a| a.attempt.status).collect::<Vec<_>>(), [Some(200)], "recorded before exiting");
    // Acknowledged before exiting: the next deliverer has nothing to deliver again.
    let next = bed.start(&overrides).await;
    bed.wait_consumed("platform").await;
    assert_eq!(bed.receiver.received_on("/hooks").len(), 1);
    drop(next);
    bed.cleanup().await;
}

#[tokio::test]
async fn internal_destinations_are_refused_unless_allowed() {
    let secret = new_secret();
    let bed = Bed::new(&[&secret]).await;

    // Addresses in URLs are refused before anything starts, naming the setting to change.
    for (url, allowed) in [
        ("http://169.254.169.254/latest/meta-data/", ""),
        ("http://169.254.169.254/latest/meta-data/", ALLOW_LOOPBACK),
        (&format!("http://127.0.0.1:{}/hooks", bed.receiver.port) as &str, ""),
    ] {
        bed.write_endpoints(&format!("endpoints:\n{}", endpoint("metadata", url, &[&secret])));
        let output = bed
            .command(&[("DELIVERY_ALLOWED_NETWORKS", allowed), ("METRICS_ADDR", "127.0.0.1:0")])
            .arg("deliver")
            .output()
            .expect("run worker deliver");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{url} refused with {allowed:?}");
        assert!(stderr.contains("is an internal address") && stderr.contains("DELIVERY_ALLOWED_NETWORKS"), "{stderr}");
    }

    // A name is checked when it is resolved, at every attempt: localhost is refused.
    bed.write_endpoints(&format!("endpoints:\n{}", endpoint("local", &bed.receiver.url("/hooks"), &[&secret])));
    let deliverer = bed.start(&[("DELIVERY_ALLOWED_NETWORKS", "")]).await;
    let report = bed.report(1, ReportType::Ended);
    bed.publish(&[&report]).await;
    let pool = bed.pool().await;
    let attempts = testkit::eventually(Duration::from_secs(10), "a refused attempt", || async {
        let attempts = deliveries::attempts_of(&pool, "local", &report.id).await.ok()?;
        (!attempts.is_empty()).then_some(attempts)
    })
    .await;
    let error = attempts[0].attempt.error.clone().unwrap_or_default();
    assert!(error.contains("resolves to internal addresses only") && attempts[0].attempt.status.is_none(), "{error}");
    // At least this attempt (the short schedule may have retried it meanwhile).
    let refused = deliverer.metric(r#"delivery_attempts_total{endpoint="local",outcome="refused"}"#).await;
    assert!(refused >= 1.0, "{refused}");
    assert!(bed.receiver.received().is_empty(), "no request reached the receiver");
    drop(deliverer);
    bed.cleanup().await;
}

#[tokio::test]
async fn https_endpoints_are_verified_against_the_configured_roots() {
    let secret = new_secret();
    let certificates = tempfile::tempdir().expect("a temporary directory");
    let ca = testkit::tls::TestCa::new();
    let server = ca.issue_server(&["localhost"], certificates.path());
    let receiver = Receiver::start(&[&secret], Some(server.clone())).await;
    let bed = Bed::with_receiver(receiver).await;
    bed.write_endpoints(&format!("endpoints:\n{}", endpoint("secure", &bed.receiver.url("/hooks"), &[&secret])));
    let ca_file = server.ca.display().to_string();
    let deliverer = bed.start(&[("DELIVERY_CA_FILE", &ca_file)]).await;

    let report = bed.report(1, ReportType::Started);
    bed.publish(&[&report]).await;
    let received = bed.receiver.wait_for("/hooks", 1, Duration::from_secs(10)).await;
    assert_eq!(received[0].id.as_deref(), Some(report.id.as_str()));
    assert_eq!((received[0].verified.as_slice(), received[0].answered), (&[true][..], 200));
    drop(deliverer);

    // Without the CA, the receiver's certificate is not trusted: no request, a TLS failure.
    let untrusted = bed.start(&[]).await;
    let next = bed.report(2, ReportType::Ended);
    bed.publish(&[&next]).await;
    let pool = bed.pool().await;
    let attempts = testkit::eventually(Duration::from_secs(10), "a TLS failure", || async {
        let attempts = deliveries::attempts_of(&pool, "secure", &next.id).await.ok()?;
        (!attempts.is_empty()).then_some(attempts)
    })
    .await;
    let error = attempts[0].attempt.error.clone().unwrap_or_default();
    assert!(error.starts_with("TLS:") && error.contains("UnknownIssuer"), "{error}");
    assert_eq!(bed.receiver.received().len(), 1);
    drop(untrusted);
    bed.cleanup().await;
}

/// `examples/receiver/standard_webhooks_receiver.php` under `php -S` (Debian's php-cli:
/// `scripts/example-tools.sh` installs it), killed on drop.
struct PhpReceiver {
    port: u16,
    dir: tempfile::TempDir,
    child: Child,
}

impl PhpReceiver {
    async fn start(secret: &str) -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let port = testkit::nats::free_port();
        let child = Command::new("php")
            .args(["-S", &format!("127.0.0.1:{port}")])
            .arg(workspace().join("examples/receiver/standard_webhooks_receiver.php"))
            .env("ATTENDANCE_WEBHOOK_SECRET", secret)
            .env("ATTENDANCE_REPORTS_DIR", dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("run php: scripts/example-tools.sh installs php-cli (make test runs it)");
        testkit::eventually(Duration::from_secs(10), "php -S to listen", || async move {
            tokio::net::TcpStream::connect(("127.0.0.1", port)).await.ok().map(|_| ())
        })
        .await;
        PhpReceiver { port, dir, child }
    }

    fn url(&self) -> String {
        format!("http://localhost:{}/attendance", self.port)
    }

    /// The reports it stored, one JSON object each.
    fn stored(&self) -> Vec<serde_json::Value> {
        let text = std::fs::read_to_string(self.dir.path().join("reports.jsonl")).unwrap_or_default();
        text.lines().map(|line| serde_json::from_str(line).expect("a stored report")).collect()
    }

    /// POSTs `body` with `headers` (name, value) as a sender would; the answer's status.
    async fn post(&self, body: &[u8], headers: &[(&str, String)]) -> u16 {
        let mut request = reqwest::Client::new().post(self.url()).body(body.to_vec());
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        request.send().await.expect("the PHP receiver answers").status().as_u16()
    }
}

impl Drop for PhpReceiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Request headers, as (name, value).
type Headers = Vec<(&'static str, String)>;

fn signed_headers(id: &str, timestamp: i64, body: &[u8], secrets: &[&str]) -> Headers {
    use worker::deliver::signature::{Secret, sign};
    let secrets: Vec<Secret> = secrets.iter().map(|s| Secret::parse(s).expect("a secret")).collect();
    let signed = sign(id, timestamp, body, &secrets);
    vec![
        ("webhook-id", signed.id),
        ("webhook-timestamp", signed.timestamp.to_string()),
        ("webhook-signature", signed.signature),
    ]
}

#[tokio::test]
async fn the_plain_php_example_stores_each_delivered_report_once_and_refuses_what_does_not_verify() {
    let (old, new) = (new_secret(), new_secret());
    let php = PhpReceiver::start(&new).await;
    let bed = Bed::new(&[&old]).await;
    // In the middle of a rotation: the deliverer signs with both, the receiver knows the new one.
    bed.write_endpoints(&format!("endpoints:\n{}", endpoint("php", &php.url(), &[&new, &old])));
    let deliverer = bed.start(&[]).await;
    let reports = [bed.report(1, ReportType::Started), bed.report(2, ReportType::Ended)];
    bed.publish(&reports.iter().collect::<Vec<_>>()).await;
    bed.wait_consumed("php").await;
    let delivered = r#"delivery_attempts_total{endpoint="php",outcome="delivered"}"#;
    assert_eq!(deliverer.metric(delivered).await, 2.0, "both answered 2xx");
    drop(deliverer);

    let mut stored = php.stored();
    stored.sort_by_key(|report| report["sequence"].as_i64());
    assert_eq!(stored.len(), 2, "{stored:#?}");
    for (report, sent) in stored.iter().zip(&reports) {
        let body: serde_json::Value = serde_json::from_slice(&sent.body).expect("the report's body");
        assert_eq!(report["id"], sent.id.as_str());
        assert_eq!(report["type"], sent.kind.as_str());
        assert_eq!(report["room_sid"], bed.room_sid().as_str());
        assert_eq!(report["data"], body["data"], "the data as sent, non-ASCII included");
    }

    // What a sender would do wrong, or an attacker try.
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("time").as_secs() as i64;
    let first = &reports[0];
    let again = php.post(&first.body, &signed_headers(&first.id, now, &first.body, &[&new])).await;
    assert_eq!(again, 204, "a report delivered again is acknowledged");
    let mut tampered = first.body.to_vec();
    let digit = tampered.iter().position(u8::is_ascii_digit).expect("a digit in the body");
    tampered[digit] = if tampered[digit] == b'9' { b'8' } else { tampered[digit] + 1 };
    let third = bed.report(3, ReportType::Updated);
    let cases: [(&str, Vec<u8>, Headers); 5] = [
        ("a changed body", tampered, signed_headers(&first.id, now, &first.body, &[&new])),
        ("the old secret only", third.body.to_vec(), signed_headers(&third.id, now, &third.body, &[&old])),
        ("signed 6 minutes ago", third.body.to_vec(), signed_headers(&third.id, now - 360, &third.body, &[&new])),
        ("signed 6 minutes ahead", third.body.to_vec(), signed_headers(&third.id, now + 360, &third.body, &[&new])),
        (
            "no signature",
            third.body.to_vec(),
            vec![("webhook-id", third.id.clone()), ("webhook-timestamp", now.to_string())],
        ),
    ];
    for (case, body, headers) in &cases {
        assert_eq!(php.post(body, headers).await, 400, "{case} is refused");
    }
    assert_eq!(php.stored().len(), 2, "nothing more stored");
    let accepted = php.post(&third.body, &signed_headers(&third.id, now, &third.body, &[&old, &new])).await;
    assert_eq!((accepted, php.stored().len()), (204, 3), "the new secret's signature, second of two, verifies");
    bed.cleanup().await;
}

/// A child process killed when dropped, a failed assertion included.
struct KilledOnDrop(Child);

impl Drop for KilledOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A LiveKit webhook event of this test's meeting, as the worker applies it.
fn meeting_event(event_type: &str, id: &str, room_sid: &str, participant: Option<(&str, i64)>, at_ms: i64) -> Vec<u8> {
    let mut event = serde_json::json!({"event": event_type, "id": id, "createdAt": (at_ms / 1000).to_string(),
        "room": {"sid": room_sid, "name": "algebra"}});
    if let Some((identity, joined_ms)) = participant {
        event["participant"] = serde_json::json!({"sid": format!("PA_{identity}"), "identity": identity,
            "joinedAtMs": joined_ms.to_string()});
    }
    serde_json::to_vec(&event).expect("an event")
}

#[tokio::test]
async fn a_meeting_ended_then_corrected_by_a_late_left_reaches_the_receiver_as_ended_then_updated() {
    use worker::apply::{Input, apply_batch};
    const MINUTE: i64 = 60_000;
    let secret = new_secret();
    let bed = Bed::new(&[&secret]).await;
    bed.write_endpoints(&format!("endpoints:\n{}", endpoint("platform", &bed.receiver.url("/hooks"), &[&secret])));
    let deliverer = bed.start(&[]).await; // its start applies the migrations
    // The sweeper's outbox publisher, on this test's streams.
    let sweeper = Command::new(testkit::binaries::path("sweeper"))
        .envs(bed.env())
        .env("METRICS_ADDR", format!("127.0.0.1:{}", testkit::nats::free_port()))
        .env("PRESENCE_STREAM", format!("TEST_PRESENCE_{}", bed.suffix))
        .env("PRESENCE_SUBJECT_PREFIX", format!("test{}.presence", bed.suffix))
        .env("OUTBOX_POLL_INTERVAL", "100ms")
        .stdin(Stdio::null())
        .spawn()
        .expect("start the sweeper");
    let sweeper = KilledOnDrop(sweeper);

    let pool = bed.pool().await;
    let sid = bed.room_sid();
    // Whole seconds: createdAt is in seconds.
    let t0 = (shared::domain::time::now_unix_ms() - 2 * 3_600_000) / 1000 * 1000;
    let apply = |events: Vec<Vec<u8>>| {
        let pool = pool.clone();
        async move {
            let inputs: Vec<Input> = events
                .into_iter()
                .enumerate()
                .map(|(n, payload)| Input {
                    payload: payload.into(),
                    received_at_ms: None,
                    stream_sequence: n as u64 + 1,
                    traceparent: None,
                    wait_for_room: true,
                })
                .collect();
            apply_batch(&pool, &inputs, &shared::domain::policy::Policy::default()).await.expect("applied");
        }
    };
    apply(vec![
        meeting_event("room_started", "EV_start", &sid, None, t0),
        meeting_event("participant_joined", "EV_ada_in", &sid, Some(("ada", t0 + MINUTE)), t0 + MINUTE),
        meeting_event("participant_joined", "EV_bob_in", &sid, Some(("bob", t0 + MINUTE)), t0 + MINUTE),
    ])
    .await;
    apply(vec![meeting_event("participant_left", "EV_ada_out", &sid, Some(("ada", t0 + MINUTE)), t0 + 59 * MINUTE)])
        .await;
    // Bob's left is late: the room's end closes his cycle for now.
    apply(vec![meeting_event("room_finished", "EV_end", &sid, None, t0 + 60 * MINUTE)]).await;
    let received = bed.receiver.wait_for("/hooks", 2, Duration::from_secs(15)).await;
    apply(vec![meeting_event("participant_left", "EV_bob_out", &sid, Some(("bob", t0 + MINUTE)), t0 + 21 * MINUTE)])
        .await;
    let received = [received, bed.receiver.wait_for("/hooks", 3, Duration::from_secs(15)).await.split_off(2)].concat();

    let kinds: Vec<(Option<&str>, Option<i64>)> = received.iter().map(|r| (r.kind.as_deref(), r.sequence)).collect();
    let mut sorted = kinds.clone();
    sorted.sort_by_key(|(_, sequence)| *sequence);
    assert_eq!(
        sorted,
        [(Some("meeting.started"), Some(1)), (Some("meeting.ended"), Some(2)), (Some("meeting.updated"), Some(3))],
        "{received:#?}"
    );
    assert!(received.iter().all(|r| r.verified == [true] && r.tampered_rejected), "verified by the reference library");
    let attended = |sequence: i64, identity: &str| {
        let request = received.iter().find(|r| r.sequence == Some(sequence)).expect("the report");
        let body: serde_json::Value = serde_json::from_str(&request.body).expect("a JSON body");
        let participants = body["data"]["participants"].as_array().expect("participants").clone();
        let participant = participants.into_iter().find(|p| p["identity"] == identity).expect("the participant");
        (participant["attended_ms"].as_i64(), participant["status"].as_str().map(str::to_owned))
    };
    assert_eq!(attended(2, "bob"), (Some(59 * MINUTE), Some("attended".into())), "ended: closed by the room's end");
    assert_eq!(attended(3, "bob"), (Some(20 * MINUTE), Some("partial".into())), "updated: the real left");
    assert_eq!(attended(3, "ada"), (Some(58 * MINUTE), Some("attended".into())), "the whole attendance");
    drop((sweeper, deliverer));
    let _ = bed.jetstream.delete_stream(format!("TEST_PRESENCE_{}", bed.suffix)).await;
    bed.cleanup().await;
}
