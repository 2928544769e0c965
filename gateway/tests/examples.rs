//! The integration examples users copy are run here, so that they cannot rot:
//! `examples/livekit/livekit.yaml` (livekit-server's keys and webhook settings) must describe a
//! setup in which the gateway, given the same keys, stores the webhooks LiveKit signs with
//! `webhook.api_key` and sends to `webhook.urls`, and refuses the example's placeholder secret.

mod common;

use common::TestGateway;
use yaml_rust2::{Yaml, YamlLoader};

const LIVEKIT_YAML: &str = include_str!("../../examples/livekit/livekit.yaml");

#[tokio::test]
async fn the_livekit_yaml_example_gives_a_gateway_that_stores_its_webhooks() {
    let config = YamlLoader::load_from_str(LIVEKIT_YAML).expect("valid YAML").remove(0);
    let api_key = config["webhook"]["api_key"].as_str().expect("webhook.api_key");
    let Yaml::Hash(keys) = &config["keys"] else { panic!("keys is a mapping") };
    let placeholder =
        keys.get(&Yaml::String(api_key.into())).and_then(Yaml::as_str).expect("webhook.api_key is in keys");
    let urls: Vec<&str> =
        config["webhook"]["urls"].as_vec().expect("webhook.urls").iter().filter_map(Yaml::as_str).collect();
    assert!(!urls.is_empty() && urls.iter().all(|url| url.ends_with("/webhooks/livekit")), "{urls:?}");

    // As written, the placeholder is refused; with a generated secret, the same keys work.
    let keys_as_written = format!("{api_key}: {placeholder}");
    assert!(matches!(
        shared::livekit::KeySet::parse(&keys_as_written),
        Err(shared::livekit::KeyError::Placeholder { .. })
    ));
    let secret = format!("{}{}{}", testkit::unique_suffix(), testkit::unique_suffix(), testkit::unique_suffix());
    let gateway = TestGateway::spawn(
        &testkit::nats::shared_url(),
        &[&format!("--livekit-api-key={api_key}"), &format!("--livekit-api-secret={secret}")],
    )
    .await;
    let keys = shared::livekit::KeySet::parse(&format!("{api_key}: {secret}")).unwrap();
    let body = testkit::livekit::participant_joined("EV_example", "algebra", "ada");
    let now = shared::domain::time::now_unix_ms() / 1000;
    let token = testkit::livekit::webhook_token(&keys, api_key, &body, now);
    let path = urls[0].split_once("://").and_then(|(_, rest)| rest.find('/').map(|i| &rest[i..])).unwrap();
    let response = gateway
        .http
        .post(format!("{}{path}", gateway.base_url))
        .header("Authorization", token)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "a webhook signed with webhook.api_key is stored");
    gateway.stop().await;
}

/// Runs a backend example (`program` and its file) against a running system and checks what it
/// prints: its read token reads the room, its view link's token reads the room and no other.
async fn backend_example_works(program: &std::path::Path, example: &str) {
    let system = common::System::start().await;
    testkit::eventually(std::time::Duration::from_secs(30), "the database to be migrated", || async {
        let token = testkit::livekit::admin_token("algebra 7b");
        (system.get("/v1/rooms/algebra%207b/meetings", Some(&token)).await.status() == 200).then_some(())
    })
    .await;
    let (api_key, secret) = testkit::livekit::TEST_KEYS.lines().next().and_then(|line| line.split_once(": ")).unwrap();
    let output = tokio::process::Command::new(program)
        .arg(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/backend").join(example))
        .env("LIVEKIT_API_KEY", api_key)
        .env("LIVEKIT_API_SECRET", secret)
        .env("GATEWAY_URL", &system.gateway.base_url)
        .env("ROOM", "algebra 7b")
        .output()
        .await
        .unwrap_or_else(|e| panic!("run {}: {e} (`make test` installs it)", program.display()));
    assert!(output.status.success(), "{example}: {}", String::from_utf8_lossy(&output.stderr));
    let printed: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON on stdout");
    let read_token = printed["read_token"].as_str().unwrap();
    assert_eq!(system.get("/v1/rooms/algebra%207b/attendance", Some(read_token)).await.status(), 200, "{example}");
    let link = &printed["view_link"];
    let view_token = link["token"].as_str().unwrap();
    assert!(link["url"].as_str().unwrap().ends_with(&format!("#{view_token}")), "{link}");
    assert_eq!(system.get("/v1/rooms/algebra%207b/meetings", Some(view_token)).await.status(), 200);
    assert_eq!(system.get("/v1/rooms/geometry/meetings", Some(view_token)).await.status(), 403);
    system.stop().await;
}

/// With LiveKit's official Python server SDK (installed by `make test` in the project's venv).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_python_backend_example_mints_a_read_token_and_a_view_link() {
    let python = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../.local/py/bin/python");
    assert!(python.exists(), "{} is missing: `make test` installs it (with livekit-api)", python.display());
    backend_example_works(&python, "view_link.py").await;
}

/// With PHP's standard library only (Debian's php-cli, installed by `make test`).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_php_backend_example_mints_a_read_token_and_a_view_link() {
    backend_example_works(std::path::Path::new("php"), "view_link.php").await;
}
