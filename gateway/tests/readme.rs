//! README is the reference users read: every error code a client can receive and every
//! environment variable a service reads must be in it. This test reads the sources (the `code`
//! functions of the error types, the `env = "…"` of the configurations) and fails on what README
//! does not mention, so a new code or variable cannot ship undocumented.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the workspace").to_owned()
}

fn rust_files(dir: &Path, files: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("a source folder") {
        let path = entry.expect("an entry").path();
        if path.is_dir() {
            rust_files(&path, files);
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
}

/// The string literals returned by every `fn code(` of `source`: its stable error codes.
fn codes_in(source: &str) -> BTreeSet<String> {
    let mut codes = BTreeSet::new();
    let mut rest = source;
    while let Some(start) = rest.find("fn code(") {
        let body = &rest[start..];
        // The function ends at the first line that closes it at its own indentation.
        let line = rest[..start].rsplit('\n').next().unwrap_or_default();
        let indent = line.len() - line.trim_start().len();
        let end = body
            .match_indices('\n')
            .map(|(i, _)| i + 1)
            .find(|&i| body[i..].starts_with(&format!("{}}}", " ".repeat(indent))))
            .unwrap_or(body.len());
        for literal in body[..end].split('"').skip(1).step_by(2) {
            if !literal.is_empty() && literal.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') {
                codes.insert(literal.to_owned());
            }
        }
        rest = &body[end..];
    }
    codes
}

#[test]
fn every_error_code_and_environment_variable_is_in_readme() {
    let root = workspace();
    let readme = std::fs::read_to_string(root.join("README.md")).expect("README.md");
    let mut files = Vec::new();
    for crate_dir in ["gateway", "worker", "sweeper", "shared"] {
        rust_files(&root.join(crate_dir).join("src"), &mut files);
    }
    let (mut codes, mut variables) = (BTreeSet::new(), BTreeSet::new());
    for file in &files {
        let source = std::fs::read_to_string(file).expect("a source file");
        // What unit tests name is not what the services answer.
        let source = source.split("#[cfg(test)]").next().unwrap_or_default();
        codes.extend(codes_in(source));
        for piece in source.split("env = \"").skip(1) {
            variables.insert(piece.split('"').next().unwrap_or_default().to_owned());
        }
    }
    assert!(codes.len() > 30 && codes.contains("invalid_signature"), "the scan found the codes: {codes:?}");
    assert!(variables.contains("NATS_URL") && variables.contains("HTTP_HEADER_TIMEOUT"), "{variables:?}");
    let missing_codes: Vec<&String> = codes.iter().filter(|code| !readme.contains(&format!("`{code}`"))).collect();
    let missing_variables: Vec<&String> = variables.iter().filter(|v| !readme.contains(&format!("`{v}`"))).collect();
    assert!(
        missing_codes.is_empty() && missing_variables.is_empty(),
        "not in README: codes {missing_codes:?}, variables {missing_variables:?}"
    );
}
