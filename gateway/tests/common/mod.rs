//! A gateway running in-process on port 0 against a real NATS, with its own stream; and a
//! whole system (gateway, worker, sweeper) sharing a fresh database.

#![allow(dead_code)]

use std::time::Duration;

use async_nats::jetstream;
use clap::Parser as _;
use gateway::{Application, GatewayConfig};
use shared::nats::WebhookStreamArgs;
use testkit::postgres::TestDatabase;
use tokio_util::sync::CancellationToken;

pub struct TestGateway {
    pub base_url: String,
    /// `http://` and the metrics address.
    pub metrics_url: String,
    pub stream: WebhookStreamArgs,
    pub jetstream: jetstream::Context,
    pub http: reqwest::Client,
    shutdown: CancellationToken,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl TestGateway {
    /// Starts a gateway on `nats_url` with a unique stream, and waits until it is ready.
    pub async fn spawn(nats_url: &str, extra_args: &[&str]) -> Self {
        let _telemetry = shared::runtime::telemetry::init("gateway-test");
        let stream = testkit::nats::unique_stream();
        let mut args = vec![
            "gateway".to_owned(),
            "--listen-addr=127.0.0.1:0".into(),
            "--metrics-addr=127.0.0.1:0".into(),
            format!("--nats-url={nats_url}"),
            format!("--webhook-stream={}", stream.stream),
            format!("--webhook-subject-prefix={}", stream.subject_prefix),
            "--webhook-stream-max-age=1h".into(),
            format!("--livekit-keys={}", testkit::livekit::TEST_KEYS),
        ];
        args.extend(extra_args.iter().map(|a| (*a).to_owned()));
        let config = GatewayConfig::try_parse_from(args).expect("valid test configuration");
        let app = Application::build(config).await.expect("gateway starts");
        let base_url = format!("http://{}", app.local_addr());
        let metrics_url = format!("http://{}", app.metrics_addr());
        let shutdown = CancellationToken::new();
        let server = tokio::spawn(app.run(shutdown.clone()));
        let client = async_nats::connect(nats_url).await.expect("test NATS connection");
        let gateway = TestGateway {
            base_url,
            metrics_url,
            stream,
            jetstream: jetstream::new(client),
            http: reqwest::Client::new(),
            shutdown,
            server,
        };
        gateway.wait_ready().await;
        gateway
    }

    pub async fn wait_ready(&self) {
        testkit::eventually(Duration::from_secs(20), "the gateway to be ready", || async {
            let response = self.http.get(format!("{}/readyz", self.base_url)).send().await.ok()?;
            response.status().is_success().then_some(())
        })
        .await;
    }

    /// Posts a webhook body with the given `Authorization` header (if any).
    pub async fn post_webhook(&self, body: Vec<u8>, authorization: Option<&str>) -> reqwest::Response {
        let mut request = self
            .http
            .post(format!("{}/webhooks/livekit", self.base_url))
            .header("Content-Type", "application/webhook+json")
            .body(body);
        if let Some(token) = authorization {
            request = request.header("Authorization", token);
        }
        request.send().await.expect("the gateway answers")
    }

    /// Every message in the webhook stream, oldest first.
    pub async fn stored_messages(&self) -> Vec<async_nats::jetstream::message::StreamMessage> {
        self.messages_of(&self.stream.stream).await
    }

    /// Every message in the heartbeat stream, oldest first.
    pub async fn stored_heartbeats(&self) -> Vec<async_nats::jetstream::message::StreamMessage> {
        self.messages_of(&self.stream.heartbeat_settings().name).await
    }

    async fn messages_of(&self, stream: &str) -> Vec<async_nats::jetstream::message::StreamMessage> {
        let mut stream = self.jetstream.get_stream(stream).await.expect("the stream exists");
        let info = stream.info().await.expect("stream info");
        let mut messages = Vec::new();
        for sequence in info.state.first_sequence..=info.state.last_sequence {
            if let Ok(message) = stream.get_raw_message(sequence).await {
                messages.push(message);
            }
        }
        messages
    }

    /// Stops the gateway gracefully and removes its stream.
    pub async fn stop(self) {
        self.shutdown.cancel();
        self.server.await.expect("the server task").expect("the server stops cleanly");
        let _ = self.jetstream.delete_stream(&self.stream.stream).await;
        let _ = self.jetstream.delete_stream(&self.stream.heartbeat_settings().name).await;
    }
}

/// Reads an error response's JSON and checks its shape.
pub async fn error_code(response: reqwest::Response) -> String {
    let body: serde_json::Value = response.json().await.expect("a JSON error body");
    assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()), "no message in {body}");
    body["error"].as_str().expect("an error code").to_owned()
}

#[derive(clap::Parser)]
struct WorkerArgs {
    #[command(flatten)]
    config: worker::WorkerConfig,
}

/// A gateway, a worker and a sweeper sharing a unique stream, presence subjects and database.
pub struct System {
    pub gateway: TestGateway,
    database: TestDatabase,
    presence_stream: String,
    shutdown: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl System {
    pub async fn start() -> Self {
        let database = TestDatabase::create_shared().await;
        let suffix = testkit::unique_suffix();
        let presence_stream = format!("TEST_PRESENCE_{suffix}");
        let presence_prefix = format!("test{suffix}.presence");
        let gateway = TestGateway::spawn(
            &testkit::nats::shared_url(),
            &[
                &format!("--database-url={}", database.url),
                &format!("--presence-stream={presence_stream}"),
                &format!("--presence-subject-prefix={presence_prefix}"),
                "--heartbeat-burst=2",
                "--heartbeat-min-interval=1h",
            ],
        )
        .await;
        let nats = testkit::nats::shared_url();
        let shutdown = CancellationToken::new();
        let worker = WorkerArgs::try_parse_from([
            "worker".to_owned(),
            "--metrics-addr=127.0.0.1:0".into(),
            format!("--nats-url={nats}"),
            format!("--database-url={}", database.url),
            format!("--webhook-stream={}", gateway.stream.stream),
            format!("--webhook-subject-prefix={}", gateway.stream.subject_prefix),
            "--webhook-stream-max-age=1h".into(),
            format!("--dlq-stream=TEST_DLQ_{suffix}"),
            format!("--dlq-subject-prefix=test{suffix}.dlq"),
            format!("--consumer-name=worker-{suffix}"),
        ])
        .unwrap()
        .config;
        let sweeper = sweeper::SweeperConfig::try_parse_from([
            "sweeper".to_owned(),
            "--metrics-addr=127.0.0.1:0".into(),
            format!("--nats-url={nats}"),
            format!("--database-url={}", database.url),
            format!("--presence-stream={presence_stream}"),
            format!("--presence-subject-prefix={presence_prefix}"),
            "--outbox-poll-interval=50ms".into(),
        ])
        .unwrap();
        let worker = worker::Application::build(worker).await.unwrap();
        let sweeper = sweeper::Application::build(sweeper).await.unwrap();
        let tasks = vec![tokio::spawn(worker.run(shutdown.clone())), tokio::spawn(sweeper.run(shutdown.clone()))];
        System { gateway, database, presence_stream, shutdown, tasks }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.gateway.base_url)
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> reqwest::Response {
        let mut request = self.gateway.http.get(self.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send().await.unwrap()
    }

    pub async fn heartbeat(&self, token: Option<&str>) -> reqwest::Response {
        let mut request = self.gateway.http.post(self.url("/v1/heartbeats"));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send().await.unwrap()
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        for task in self.tasks {
            task.await.unwrap().unwrap();
        }
        let js = self.gateway.jetstream.clone();
        self.gateway.stop().await;
        let _ = js.delete_stream(&self.presence_stream).await;
        self.database.drop_database().await;
    }
}
