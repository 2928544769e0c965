//! The services' NATS transport against private servers set up as in production: TLS with a
//! private CA, a `.creds` user of an operator-mode server, mutual TLS. Each service connects,
//! the gateway publishes, the worker consumes and publishes presence, and a webhook ends up in
//! PostgreSQL. A wrong CA, a refused user and a missing permission each leave the services not
//! ready, with a message that names the setting to fix.

use std::time::Duration;

use serde_json::json;
use testkit::binaries::Service;
use testkit::livekit::{TEST_KEYS, participant_joined, sign_now};
use testkit::nats::{PrivateNats, free_port};
use testkit::nats_auth::Operator;
use testkit::postgres::TestDatabase;
use testkit::tls::TestCa;

/// The three services on one NATS (with `nats_env`) and a fresh database.
struct System {
    services: Vec<(Service, String)>,
    gateway_url: String,
    database: TestDatabase,
}

impl System {
    async fn start(nats_env: &[(&'static str, String)]) -> Self {
        let database = TestDatabase::create_shared().await;
        let gateway_port = free_port();
        let mut services = Vec::new();
        for name in ["gateway", "worker", "sweeper"] {
            let metrics_port = free_port();
            let mut env = vec![
                ("DATABASE_URL", database.url.clone()),
                ("LIVEKIT_KEYS", TEST_KEYS.to_owned()),
                ("LISTEN_ADDR", format!("127.0.0.1:{gateway_port}")),
                ("METRICS_ADDR", format!("127.0.0.1:{metrics_port}")),
                ("OUTBOX_POLL_INTERVAL", "100ms".to_owned()),
            ];
            env.extend(nats_env.iter().cloned());
            services.push((Service::start(name, &env), format!("http://127.0.0.1:{metrics_port}")));
        }
        System { services, gateway_url: format!("http://127.0.0.1:{gateway_port}"), database }
    }

    /// Waits until every service answers `/readyz` with 200.
    async fn wait_ready(&self) {
        let http = reqwest::Client::new();
        for (service, base) in &self.services {
            testkit::eventually(Duration::from_secs(30), &format!("{} to be ready", service.name), || async {
                let response = http.get(format!("{base}/readyz")).send().await.ok()?;
                response.status().is_success().then_some(())
            })
            .await;
        }
    }

    /// A signed webhook through the gateway, applied by the worker.
    async fn webhook_reaches_postgres(&self) {
        let body = participant_joined("EV_transport", "transport-room", "alice");
        let response = reqwest::Client::new()
            .post(format!("{}/webhooks/livekit", self.gateway_url))
            .header("Authorization", sign_now(&body))
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{}", response.text().await.unwrap_or_default());
        let pool = self.database.pool().await;
        testkit::eventually(Duration::from_secs(20), "the worker to apply the webhook", || async {
            let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM webhook_events WHERE event_id = 'EV_transport'")
                .fetch_one(&pool)
                .await
                .ok()?;
            (stored == 1).then_some(())
        })
        .await;
    }

    /// Every service's `/readyz` answers 503 with a message satisfying `names_the_setting`, and
    /// still does a few seconds later.
    async fn stays_not_ready(&self, services: &[&str], names_the_setting: impl Fn(&str) -> bool) {
        let http = reqwest::Client::new();
        for round in 0..2 {
            if round == 1 {
                tokio::time::sleep(Duration::from_secs(3)).await;
            }
            for (service, base) in self.services.iter().filter(|(service, _)| services.contains(&service.name)) {
                let last_seen = std::sync::Mutex::new(String::new());
                let message =
                    testkit::eventually(Duration::from_secs(30), &format!("{} to say why", service.name), || {
                        let (http, names_the_setting, last_seen) = (&http, &names_the_setting, &last_seen);
                        async move {
                            let response = http.get(format!("{base}/readyz")).send().await.ok()?;
                            assert_ne!(response.status(), 200, "{} became ready", service.name);
                            let body: serde_json::Value = response.json().await.ok()?;
                            let message = body["message"].as_str()?.to_owned();
                            if !names_the_setting(&message) {
                                // Shown if the wait times out: what the service said instead.
                                let mut last_seen = last_seen.lock().unwrap();
                                if *last_seen != message {
                                    eprintln!("{} says, not yet as expected: {message}", service.name);
                                    last_seen.clone_from(&message);
                                }
                                return None;
                            }
                            Some(message)
                        }
                    })
                    .await;
                eprintln!("{} not ready: {message}", service.name);
            }
        }
    }

    async fn stop(self) {
        for (mut service, _) in self.services {
            service.signal("TERM");
            let status = service.wait_exit(Duration::from_secs(20)).await;
            assert!(status.success(), "{} exited with {status}", service.name);
        }
        self.database.drop_database().await;
    }
}

fn tls_server_config(server: &testkit::tls::CertFiles, verify_clients: bool) -> String {
    let verify =
        if verify_clients { format!("ca_file: \"{}\"\n  verify: true\n", server.ca.display()) } else { String::new() };
    format!(
        "tls {{\n  cert_file: \"{}\"\n  key_file: \"{}\"\n  {verify}}}\n",
        server.cert.display(),
        server.key.display()
    )
}

/// Stream messages in `stream`, read over a client with the same settings as the services.
async fn stream_messages(nats_env: &[(&'static str, String)], stream: &str) -> u64 {
    let mut args = shared::nats::NatsArgs::for_url(nats_env.iter().find(|(k, _)| *k == "NATS_URL").unwrap().1.clone());
    for (key, value) in nats_env {
        match *key {
            "NATS_CA" => args.ca = Some(value.into()),
            "NATS_CREDS" => args.creds = Some(value.into()),
            "NATS_CERT" => args.cert = Some(value.into()),
            "NATS_KEY" => args.key = Some(value.into()),
            _ => {}
        }
    }
    let client = args.connect_once("transport-test").await.unwrap();
    let mut stream = async_nats::jetstream::new(client).get_stream(stream).await.unwrap();
    stream.info().await.unwrap().state.messages
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_service_works_over_tls_as_a_creds_user_and_a_wrong_ca_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new();
    let server_cert = ca.issue_server(&["localhost"], dir.path());
    let operator = Operator::new();
    let config = format!("{}{}", operator.server_config(), tls_server_config(&server_cert, false));
    let nats = PrivateNats::start_with_config(&config, &[]).await;
    let creds = operator.user_creds(dir.path(), "attendance", json!({}));
    let url = format!("tls://localhost:{}", nats.port);

    let env = vec![
        ("NATS_URL", url.clone()),
        ("NATS_CA", server_cert.ca.display().to_string()),
        ("NATS_CREDS", creds.display().to_string()),
    ];
    let system = System::start(&env).await;
    system.wait_ready().await;
    system.webhook_reaches_postgres().await;
    testkit::eventually(Duration::from_secs(20), "the worker to publish presence", || async {
        (stream_messages(&env, "LIVEKIT_PRESENCE").await >= 1).then_some(())
    })
    .await;
    system.stop().await;

    // A CA that did not sign the server's certificate: no service trusts it, and says which
    // setting decides.
    let other_ca = TestCa::new().write_ca(dir.path());
    let wrong_ca = vec![
        ("NATS_URL", url.clone()),
        ("NATS_CA", other_ca.display().to_string()),
        ("NATS_CREDS", creds.display().to_string()),
    ];
    let system = System::start(&wrong_ca).await;
    let other_ca_path = other_ca.display().to_string();
    system
        .stays_not_ready(&["gateway", "worker", "sweeper"], |message| {
            message.contains("TLS") && message.contains(&format!("NATS_CA ({other_ca_path})"))
        })
        .await;
    system.stop().await;

    // A user the account did not issue: refused, naming NATS_CREDS.
    let stranger = Operator::new().user_creds(dir.path(), "stranger", json!({}));
    let unknown = vec![
        ("NATS_URL", url),
        ("NATS_CA", server_cert.ca.display().to_string()),
        ("NATS_CREDS", stranger.display().to_string()),
    ];
    let system = System::start(&unknown).await;
    system.stays_not_ready(&["gateway", "worker"], |message| message.contains("refused the user of NATS_CREDS")).await;
    system.stop().await;
    assert!(!nats.log().contains("panic"), "{}", nats.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_service_works_with_mutual_tls_and_without_a_client_certificate_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new();
    let server_cert = ca.issue_server(&["localhost"], dir.path());
    let client_cert = ca.issue_client("attendance", dir.path());
    let nats = PrivateNats::start_with_config(&tls_server_config(&server_cert, true), &[]).await;
    let url = format!("tls://localhost:{}", nats.port);

    let env = vec![
        ("NATS_URL", url.clone()),
        ("NATS_CA", server_cert.ca.display().to_string()),
        ("NATS_CERT", client_cert.cert.display().to_string()),
        ("NATS_KEY", client_cert.key.display().to_string()),
    ];
    let system = System::start(&env).await;
    system.wait_ready().await;
    system.webhook_reaches_postgres().await;
    assert!(stream_messages(&env, "LIVEKIT_WEBHOOKS").await >= 1);
    system.stop().await;

    let without_certificate = vec![("NATS_URL", url), ("NATS_CA", server_cert.ca.display().to_string())];
    let system = System::start(&without_certificate).await;
    system
        .stays_not_ready(&["gateway", "sweeper"], |message| {
            message.contains("TLS") && message.contains("set NATS_CERT and NATS_KEY")
        })
        .await;
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_and_a_missing_permission_are_named() {
    let config = r#"
authorization {
  users = [
    { user: "gateway", password: "right-password" }
    { user: "limited", password: "limited-password",
      permissions: { publish: { deny: ["$JS.API.STREAM.>"] } } }
  ]
}
"#;
    let nats = PrivateNats::start_with_config(config, &[]).await;

    let wrong_password =
        vec![("NATS_URL", nats.url()), ("NATS_USER", "gateway".to_owned()), ("NATS_PASSWORD", "wrong".to_owned())];
    let system = System::start(&wrong_password).await;
    system
        .stays_not_ready(&["gateway", "sweeper"], |message| {
            message.contains(r#"refused NATS_USER "gateway""#) && !message.contains("wrong")
        })
        .await;
    system.stop().await;

    // Connected, but the streams cannot be checked or created: the permission is named.
    let limited = vec![
        ("NATS_URL", nats.url()),
        ("NATS_USER", "limited".to_owned()),
        ("NATS_PASSWORD", "limited-password".to_owned()),
    ];
    let system = System::start(&limited).await;
    system
        .stays_not_ready(&["gateway", "worker"], |message| {
            message.contains(r#"NATS denied NATS_USER "limited""#) && message.contains("$JS.API.STREAM.")
        })
        .await;
    system.stop().await;
}
