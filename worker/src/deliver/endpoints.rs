//! The endpoints file (`DELIVERY_ENDPOINTS_FILE`): where reports are delivered, written by the
//! operator, read at start-up and again on SIGHUP or when it changes.
//!
//! ```yaml
//! endpoints:
//!   - name: platform                  # [A-Za-z0-9_-], at most 64: names its consumer and metrics
//!     url: https://platform.example.org/webhooks/attendance
//!     secrets: [whsec_…]              # the first signs; more during a rotation (each signs too)
//!     event_types: [meeting.ended]    # optional: every type by default
//!     rooms: [algebra-101]            # optional: every room by default
//! ```
//!
//! Invariants: a file is taken whole or not at all (one bad entry refuses it, naming the entry
//! and what is wrong, never a secret); every URL has passed the destination policy.

use std::collections::BTreeSet;
use std::path::Path;

use shared::domain::report::ReportType;
use yaml_rust2::{Yaml, YamlLoader};

use super::destination::{Destination, Policy};
use super::signature::Secret;

/// The longest endpoint name: it becomes part of a consumer name and a subject.
const MAX_NAME_LEN: usize = 64;

/// One endpoint, as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// Unique in the file; `[A-Za-z0-9_-]`. Names the endpoint's durable consumer
    /// (`deliver-<name>`), its redelivery subject and its metrics.
    pub name: String,
    pub destination: Destination,
    /// The current secret first; every one signs (a receiver holding any of them verifies).
    pub secrets: Vec<Secret>,
    /// The report types it receives.
    pub event_types: BTreeSet<ReportType>,
    /// The room names it receives reports of; `None` for every room.
    pub rooms: Option<BTreeSet<String>>,
}

impl Endpoint {
    /// Whether the endpoint takes a report of `kind` on room `room` (a report whose room is
    /// unknown goes only to endpoints that take every room).
    pub fn wants(&self, kind: ReportType, room: Option<&str>) -> bool {
        self.event_types.contains(&kind)
            && self.rooms.as_ref().is_none_or(|rooms| room.is_some_and(|room| rooms.contains(room)))
    }
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum EndpointsError {
    #[error("cannot read the endpoints file {path}: {reason}")]
    Read { path: String, reason: String },
    #[error("the endpoints file is not YAML: {0}")]
    Yaml(String),
    #[error("the endpoints file holds `endpoints:`, a list of endpoints")]
    Shape,
    #[error("endpoint {which}: {reason}")]
    Entry { which: String, reason: String },
}

/// Reads and checks the endpoints file; also returns its bytes, to tell when it changes.
pub fn load(path: &Path, policy: &Policy) -> Result<(Vec<Endpoint>, Vec<u8>), EndpointsError> {
    let bytes = std::fs::read(path)
        .map_err(|error| EndpointsError::Read { path: path.display().to_string(), reason: error.to_string() })?;
    let text = std::str::from_utf8(&bytes).map_err(|_| EndpointsError::Yaml("not UTF-8".into()))?;
    Ok((parse(text, policy)?, bytes))
}

/// Parses and checks the text of an endpoints file.
pub fn parse(text: &str, policy: &Policy) -> Result<Vec<Endpoint>, EndpointsError> {
    let documents = YamlLoader::load_from_str(text).map_err(|error| EndpointsError::Yaml(error.to_string()))?;
    let Some(document) = documents.first() else { return Ok(Vec::new()) };
    let entries = match &document["endpoints"] {
        Yaml::Array(entries) => entries.as_slice(),
        Yaml::BadValue | Yaml::Null => &[],
        _ => return Err(EndpointsError::Shape),
    };
    if let Yaml::Hash(top) = document
        && let Some(key) = top.keys().find(|key| key.as_str() != Some("endpoints"))
    {
        return Err(EndpointsError::Yaml(format!("unknown key {key:?} at the top (only `endpoints`)")));
    }
    let mut endpoints: Vec<Endpoint> = Vec::with_capacity(entries.len());
    for (index, entry) in entries.iter().enumerate() {
        let name = entry["name"].as_str().map(str::to_owned);
        let which = name.clone().unwrap_or_else(|| format!("#{}", index + 1));
        let endpoint = parse_entry(entry, policy).map_err(|reason| EndpointsError::Entry { which, reason })?;
        if endpoints.iter().any(|other| other.name == endpoint.name) {
            return Err(EndpointsError::Entry { which: endpoint.name, reason: "the name is used twice".into() });
        }
        endpoints.push(endpoint);
    }
    Ok(endpoints)
}

fn parse_entry(entry: &Yaml, policy: &Policy) -> Result<Endpoint, String> {
    let Yaml::Hash(fields) = entry else { return Err("an endpoint is a mapping (name, url, secrets, …)".into()) };
    const KNOWN: [&str; 5] = ["name", "url", "secrets", "event_types", "rooms"];
    if let Some(key) = fields.keys().find(|key| key.as_str().is_none_or(|key| !KNOWN.contains(&key))) {
        return Err(format!("unknown key {:?} (known: {})", key.as_str().unwrap_or("?"), KNOWN.join(", ")));
    }
    let name = entry["name"].as_str().ok_or("`name` is missing")?.to_owned();
    if name.is_empty()
        || name.len() > MAX_NAME_LEN
        || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err(format!("`name` is 1 to {MAX_NAME_LEN} of A-Z, a-z, 0-9, _ and -"));
    }
    let url = entry["url"].as_str().ok_or("`url` is missing")?;
    let destination = policy.check_url(url).map_err(|error| error.to_string())?;
    let secrets = strings(&entry["secrets"], "secrets")?
        .ok_or("`secrets` is missing: a list of whsec_… secrets, the current one first")?
        .iter()
        .enumerate()
        .map(|(i, secret)| Secret::parse(secret).map_err(|error| format!("secret #{}: {error}", i + 1)))
        .collect::<Result<Vec<_>, _>>()?;
    if secrets.is_empty() {
        return Err("`secrets` is empty".into());
    }
    let event_types = match strings(&entry["event_types"], "event_types")? {
        None => ReportType::ALL.into_iter().collect(),
        Some(types) => {
            let parsed = types
                .iter()
                .map(|text| {
                    ReportType::parse(text).ok_or_else(|| {
                        let known: Vec<&str> = ReportType::ALL.iter().map(|kind| kind.as_str()).collect();
                        format!("unknown event type {text:?} (known: {})", known.join(", "))
                    })
                })
                .collect::<Result<BTreeSet<_>, _>>()?;
            if parsed.is_empty() {
                return Err("`event_types` is empty: leave it out for every type".into());
            }
            parsed
        }
    };
    let rooms = match strings(&entry["rooms"], "rooms")? {
        None => None,
        Some(rooms) if rooms.is_empty() => return Err("`rooms` is empty: leave it out for every room".into()),
        Some(rooms) => Some(rooms.into_iter().collect()),
    };
    Ok(Endpoint { name, destination, secrets, event_types, rooms })
}

/// A list of strings, or one string; `None` when absent.
fn strings(value: &Yaml, key: &str) -> Result<Option<Vec<String>>, String> {
    match value {
        Yaml::BadValue | Yaml::Null => Ok(None),
        Yaml::String(text) => Ok(Some(vec![text.clone()])),
        Yaml::Array(items) => items
            .iter()
            .map(|item| item.as_str().map(str::to_owned).ok_or_else(|| format!("`{key}` holds strings only")))
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        _ => Err(format!("`{key}` is a list of strings")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

    fn parse_public(text: &str) -> Result<Vec<Endpoint>, EndpointsError> {
        parse(text, &Policy::default())
    }

    #[test]
    fn a_full_entry_and_a_minimal_one() {
        let text = format!(
            "endpoints:
  - name: platform
    url: https://platform.example.org/hooks
    secrets: [{SECRET}, whsec_{old}]
    event_types: [meeting.ended, meeting.updated]
    rooms: [algebra]
  - name: audit_log-2
    url: http://audit.example.org:8080/in
    secrets: {SECRET}
",
            old = "A".repeat(32)
        );
        let endpoints = parse_public(&text).unwrap();
        assert_eq!(endpoints.len(), 2);
        let platform = &endpoints[0];
        assert_eq!(platform.secrets.len(), 2);
        assert!(platform.wants(ReportType::Ended, Some("algebra")));
        assert!(!platform.wants(ReportType::Started, Some("algebra")));
        assert!(!platform.wants(ReportType::Ended, Some("geometry")));
        assert!(!platform.wants(ReportType::Ended, None));
        let audit = &endpoints[1];
        assert!(ReportType::ALL.into_iter().all(|kind| audit.wants(kind, None)));
        assert_eq!(audit.destination.port(), 8080);
        assert!(parse_public("").unwrap().is_empty());
        assert!(parse_public("endpoints: []").unwrap().is_empty());
    }

    #[test]
    fn mistakes_are_named_without_the_secrets() {
        let entry = |fields: &str| format!("endpoints:\n  - name: p\n    url: https://example.org/\n{fields}");
        let refused = |text: &str| parse_public(text).unwrap_err().to_string();
        assert!(refused(&entry("")).contains("`secrets` is missing"));
        let bad_secret = refused(&entry("    secrets: [whsec_dG9vIHNob3J0]\n"));
        assert!(bad_secret.contains("endpoint p: secret #1") && !bad_secret.contains("dG9vIHNob3J0"), "{bad_secret}");
        assert!(
            refused(&entry(&format!("    secrets: [{SECRET}]\n    event_type: [meeting.ended]\n")))
                .contains("unknown key")
        );
        assert!(
            refused(&entry(&format!("    secrets: [{SECRET}]\n    event_types: [meeting.deleted]\n")))
                .contains("unknown event type")
        );
        assert!(refused(&entry(&format!("    secrets: [{SECRET}]\n    rooms: []\n"))).contains("`rooms` is empty"));
        let twice = format!(
            "endpoints:\n  - {{name: p, url: 'https://a.example/', secrets: [{SECRET}]}}\n  - {{name: p, url: 'https://b.example/', secrets: [{SECRET}]}}\n"
        );
        assert!(refused(&twice).contains("used twice"));
        let dotted = format!("endpoints:\n  - {{name: a.b, url: 'https://a.example/', secrets: [{SECRET}]}}\n");
        assert!(refused(&dotted).contains("`name` is"));
        assert!(refused("endpoints: {a: 1}").contains("a list of endpoints"));
        assert!(refused("endpoint: []").contains("unknown key"));
    }

    #[test]
    fn internal_destinations_are_refused_unless_allowed() {
        let text = format!("endpoints:\n  - {{name: m, url: 'http://169.254.169.254/latest', secrets: [{SECRET}]}}\n");
        assert!(parse_public(&text).unwrap_err().to_string().contains("DELIVERY_ALLOWED_NETWORKS"));
        let local = format!("endpoints:\n  - {{name: l, url: 'http://127.0.0.1:8080/', secrets: [{SECRET}]}}\n");
        assert!(parse_public(&local).is_err());
        assert!(parse(&local, &Policy::new(vec!["127.0.0.0/8".parse().unwrap()])).is_ok());
    }
}
