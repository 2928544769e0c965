//! `gateway/openapi.yaml` describes every HTTP route: validated by a real OpenAPI 3.1 validator
//! (PyPI's openapi-spec-validator, installed by `make test`), and its paths are exactly the
//! router's.

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
