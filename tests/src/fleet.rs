//! The whole system as separate processes, for the chaos suites: gateways, workers and sweepers
//! started from the workspace's binaries with one environment, tuned so that faults show within
//! seconds (short timeouts and retry delays) and never dead-letter an event (outages are not
//! poison: a high MAX_DELIVER), on the NATS servers and PostgreSQL database the test gives.

use std::time::Duration;

use crate::binaries::Service;
use crate::livekit::TEST_KEYS;
use crate::nats::free_port;

/// Where the services run and what they are given.
pub struct Fleet {
    /// `NATS_URL`: one server, or every node of a cluster, comma-separated.
    pub nats_url: String,
    pub database_url: String,
    /// The gateway's port (a restarted gateway binds it again).
    pub gateway_port: u16,
    /// Settings on top of the fleet's own (e.g. stream replicas); they win over those.
    pub extra_env: Vec<(&'static str, String)>,
}

impl Fleet {
    /// A fleet on these servers, the gateway on a free port.
    pub fn new(nats_url: String, database_url: String) -> Self {
        Fleet { nats_url, database_url, gateway_port: free_port(), extra_env: Vec::new() }
    }

    /// The environment of every service, with its metrics on `metrics_port`.
    pub fn env(&self, metrics_port: u16) -> Vec<(&'static str, String)> {
        let mut env = vec![
            ("NATS_URL", self.nats_url.clone()),
            ("DATABASE_URL", self.database_url.clone()),
            ("LIVEKIT_KEYS", TEST_KEYS.into()),
            ("LISTEN_ADDR", format!("127.0.0.1:{}", self.gateway_port)),
            ("METRICS_ADDR", format!("127.0.0.1:{metrics_port}")),
            ("PUBLISH_TIMEOUT", "1s".into()),
            ("DATABASE_ACQUIRE_TIMEOUT", "1s".into()),
            ("RETRY_MIN_DELAY", "100ms".into()),
            ("RETRY_MAX_DELAY", "1s".into()),
            ("CONSUMER_ACK_WAIT", "5s".into()),
            // Outages must not send events to the dead-letter stream.
            ("MAX_DELIVER", "100".into()),
            ("OUTBOX_POLL_INTERVAL", "100ms".into()),
            ("SWEEP_INTERVAL", "1s".into()),
            // The workload happened in the past: no 12 h cap on its open cycles here.
            ("MAX_CYCLE_DURATION", "87600h".into()),
            ("RUST_LOG", "warn".into()),
            // Few connection slots and a short header timeout, so that a slow-connection attack
            // fills them and is cut off within a chaos round.
            ("HTTP_MAX_CONNECTIONS", "128".into()),
            ("HTTP_HEADER_TIMEOUT", "2s".into()),
        ];
        env.retain(|(key, _)| !self.extra_env.iter().any(|(extra, _)| extra == key));
        env.extend(self.extra_env.iter().cloned());
        env
    }

    /// Starts `name` (`gateway`, `worker`, `sweeper`) with its metrics on a free port.
    pub fn start(&self, name: &'static str) -> Service {
        Service::start(name, &self.env(free_port()))
    }

    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.gateway_port)
    }

    /// Waits (at most 30 s) for the gateway's `/readyz`.
    pub async fn wait_gateway_ready(&self) {
        let (http, base_url) = (reqwest::Client::new(), self.base_url());
        crate::eventually(Duration::from_secs(30), "the gateway to be ready", || async {
            http.get(format!("{base_url}/readyz")).send().await.ok()?.status().is_success().then_some(())
        })
        .await;
    }

    /// A client of the fleet's NATS (every server of `NATS_URL`).
    pub async fn nats(&self) -> async_nats::Client {
        shared::nats::NatsArgs::for_url(self.nats_url.clone())
            .connect_once("testkit-fleet")
            .await
            .unwrap_or_else(|e| panic!("connect to the fleet's NATS: {e}"))
    }

    /// Waits (at most 180 s) until the workers' consumer of the webhook stream has nothing
    /// pending or unacknowledged.
    pub async fn wait_drained(&self) {
        let js = async_nats::jetstream::new(self.nats().await);
        crate::eventually(Duration::from_secs(180), "the workers to drain the stream", || async {
            let stream = js.get_stream("LIVEKIT_WEBHOOKS").await.ok()?;
            let info = stream.consumer_info("attendance-worker").await.ok()?;
            (info.num_pending == 0 && info.num_ack_pending == 0).then_some(())
        })
        .await;
    }

    /// The dead letters as operators see them: `worker dlq list --json`, with the fleet's
    /// environment (so every NATS server of it).
    pub fn dead_letters_listed(&self) -> Vec<serde_json::Value> {
        let output = std::process::Command::new(crate::binaries::path("worker"))
            .args(["dlq", "list", "--json"])
            .envs(self.env(free_port()))
            .stdin(std::process::Stdio::null())
            .output()
            .expect("run worker dlq list");
        assert!(output.status.success(), "worker dlq list failed: {}", String::from_utf8_lossy(&output.stderr));
        serde_json::from_slice(&output.stdout)
            .unwrap_or_else(|e| panic!("worker dlq list --json printed no JSON array ({e})"))
    }
}
