//! A gateway running in-process on port 0 against a real NATS, with its own stream.

use std::time::Duration;

use async_nats::jetstream;
use clap::Parser as _;
use gateway::{Application, GatewayConfig};
use shared::config::WebhookStreamArgs;
use tokio_util::sync::CancellationToken;

pub struct TestGateway {
    pub base_url: String,
    pub stream: WebhookStreamArgs,
    pub jetstream: jetstream::Context,
    pub http: reqwest::Client,
    shutdown: CancellationToken,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl TestGateway {
    /// Starts a gateway on `nats_url` with a unique stream, and waits until it is ready.
    pub async fn spawn(nats_url: &str, extra_args: &[&str]) -> Self {
        let stream = testkit::nats::unique_stream();
        let mut args = vec![
            "gateway".to_owned(),
            "--listen-addr=127.0.0.1:0".into(),
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
        let shutdown = CancellationToken::new();
        let server = tokio::spawn(app.run(shutdown.clone()));
        let client = async_nats::connect(nats_url).await.expect("test NATS connection");
        let gateway = TestGateway {
            base_url,
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

    /// Every message in the stream, oldest first.
    pub async fn stored_messages(&self) -> Vec<async_nats::jetstream::message::StreamMessage> {
        let mut stream = self.jetstream.get_stream(&self.stream.stream).await.expect("the stream exists");
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
    }
}

/// Reads an error response's JSON and checks its shape.
pub async fn error_code(response: reqwest::Response) -> String {
    let body: serde_json::Value = response.json().await.expect("a JSON error body");
    assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()), "no message in {body}");
    body["error"].as_str().expect("an error code").to_owned()
}
