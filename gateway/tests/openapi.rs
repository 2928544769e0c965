//! `gateway/openapi.yaml` describes every HTTP route: validated by a real OpenAPI 3.1 validator
//! (PyPI's openapi-spec-validator, installed by `make test`), its paths exactly the router's, and
//! the running gateway's answers checked against it by schemathesis.

mod common;

use std::collections::BTreeSet;
use std::path::Path;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn the_description_is_valid_openapi_3_1() {
    let validator = root().join("../.local/py/bin/openapi-spec-validator");
    let output = std::process::Command::new(&validator)
        .arg(root().join("openapi.yaml"))
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e} (`make test` installs it)", validator.display()));
    assert!(
        output.status.success(),
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn it_describes_every_route_and_nothing_else() {
    let routes_source = std::fs::read_to_string(root().join("src/routes.rs")).unwrap();
    let ops_source = std::fs::read_to_string(root().join("../shared/src/runtime/ops.rs")).unwrap();
    let routes: BTreeSet<String> = [routes_source.as_str(), ops_source.as_str()]
        .iter()
        .flat_map(|source| source.split(".route(\"").skip(1))
        .map(|rest| rest.split('"').next().unwrap_or_default().to_owned())
        // /metrics is served on the metrics address, not on the public port the document describes.
        .filter(|path| path != "/metrics")
        .collect();
    let document = std::fs::read_to_string(root().join("openapi.yaml")).unwrap();
    let paths: BTreeSet<String> = document
        .split("\npaths:\n")
        .nth(1)
        .expect("a paths section")
        .lines()
        .filter(|line| line.starts_with("  /") && line.ends_with(':'))
        .map(|line| line.trim().trim_end_matches(':').to_owned())
        .collect();
    assert_eq!(paths, routes);
}

/// PyPI's schemathesis against a running system, from the description: generated requests to
/// every operation (the presence stream apart: it never ends), with a token that may read every
/// room. No answer is a 5xx, and every answer conforms to the description (status, content
/// type, body schema).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn schemathesis_finds_no_server_error_and_no_answer_outside_the_description() {
    let schemathesis = root().join("../.local/py/bin/schemathesis");
    assert!(schemathesis.exists(), "{} is missing: `make test` installs it", schemathesis.display());
    let system = common::System::start().await;
    let reader = testkit::livekit::access_token(
        None,
        shared::livekit::VideoGrant { room_list: true, room_admin: true, ..Default::default() },
        600,
    );
    testkit::eventually(std::time::Duration::from_secs(30), "the database to be migrated", || async {
        (system.get("/v1/rooms/algebra/meetings", Some(&reader)).await.status() == 200).then_some(())
    })
    .await;
    let output = tokio::process::Command::new(&schemathesis)
        .arg("run")
        .arg(root().join("openapi.yaml"))
        .args(["--url", &system.gateway.base_url])
        .args(["-H", &format!("Authorization: Bearer {reader}")])
        .args(["-c", "not_a_server_error,response_schema_conformance,status_code_conformance,content_type_conformance"])
        .args(["--exclude-path", "/v1/rooms/{room}/presence"])
        .args(["--phases", "examples,fuzzing", "-n", "30", "--seed", "42"])
        .env("NO_COLOR", "1")
        .output()
        .await
        .unwrap();
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{report}{}", String::from_utf8_lossy(&output.stderr));
    // Warnings (operations that only answered 401 or 404 to random input) are not failures.
    assert!(report.contains(" passed") && !report.contains("FAILURES"), "{report}");
    system.stop().await;
}
