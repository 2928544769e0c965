//! The set of LiveKit API keys a service accepts.
//!
//! LiveKit picks the secret by the token's `iss` (the API key), and during a key rotation more
//! than one pair is valid at once, so this is a map. It is built from the same sources
//! livekit-server reads: one `LIVEKIT_API_KEY`/`LIVEKIT_API_SECRET` pair, `LIVEKIT_KEYS` and a
//! key file, both a YAML mapping of key to secret, read as YAML as livekit-server reads them (so
//! quotes, comments and block scalars mean what they mean there; a line-by-line reading would
//! keep the quotes in the secret). Invariant: a `KeySet` is never empty, every secret is at
//! least [`MIN_SECRET_LEN`] bytes long and none is a placeholder from an example. Secrets never
//! appear in `Debug` output.

use std::collections::BTreeMap;
use std::fmt;

use yaml_rust2::{Yaml, YamlLoader};

/// HS256 with a short secret can be brute-forced offline from a single captured token.
pub const MIN_SECRET_LEN: usize = 32;

/// Secrets holding any of these (case aside) were copied from an example, not generated: this
/// project's examples use them, so a deployment that kept one is refused at start-up.
pub const PLACEHOLDER_MARKERS: &[&str] = &["example-secret", "replace-me", "replace-with", "change-me", "changeme"];

/// A LiveKit API secret. Its `Debug` form never shows the value.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Vec<u8>);

impl Secret {
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    #[error(
        "no LiveKit API key configured: set LIVEKIT_API_KEY and LIVEKIT_API_SECRET, LIVEKIT_KEYS or LIVEKIT_KEYS_FILE"
    )]
    NoKeys,
    #[error("LIVEKIT_API_KEY and LIVEKIT_API_SECRET must be set together")]
    IncompletePair,
    #[error("the secret of API key {key:?} is {len} bytes long; at least {MIN_SECRET_LEN} are required")]
    SecretTooShort { key: String, len: usize },
    #[error("{source_name}, line {line}: expected a YAML mapping of `key: secret`")]
    Malformed { source_name: String, line: usize },
    #[error(
        "the secret of API key {key:?} is a placeholder from an example; generate one (e.g. `openssl rand -base64 32`)"
    )]
    Placeholder { key: String },
    #[error("API key {key:?} is configured twice with different secrets")]
    Conflict { key: String },
    #[error("cannot read the key file {path}: {reason}")]
    Unreadable { path: String, reason: String },
}

/// API key → secret, for every key a service accepts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeySet {
    keys: BTreeMap<String, Secret>,
}

/// Where keys may come from; every source is optional but at least one key must result.
#[derive(Clone, Debug, Default)]
pub struct KeySources<'a> {
    pub api_key: Option<&'a str>,
    pub api_secret: Option<&'a str>,
    /// `LIVEKIT_KEYS`: a YAML mapping, `key: secret` per line.
    pub keys_text: Option<&'a str>,
    /// `LIVEKIT_KEYS_FILE`: a path to a YAML file of `key: secret` (livekit-server's `key_file`).
    pub keys_file: Option<&'a std::path::Path>,
}

impl KeySet {
    /// Builds the key set from all configured sources and validates it.
    pub fn from_sources(sources: &KeySources<'_>) -> Result<Self, KeyError> {
        let mut set = KeySet { keys: BTreeMap::new() };
        match (sources.api_key, sources.api_secret) {
            (Some(key), Some(secret)) => set.insert(key.trim(), secret.trim())?,
            (None, None) => {}
            _ => return Err(KeyError::IncompletePair),
        }
        if let Some(text) = sources.keys_text {
            set.insert_yaml(text, "LIVEKIT_KEYS")?;
        }
        if let Some(path) = sources.keys_file {
            let text = std::fs::read_to_string(path)
                .map_err(|e| KeyError::Unreadable { path: path.display().to_string(), reason: e.to_string() })?;
            set.insert_yaml(&text, &path.display().to_string())?;
        }
        if set.keys.is_empty() {
            return Err(KeyError::NoKeys);
        }
        Ok(set)
    }

    /// Parses a YAML mapping of `key: secret` (LiveKit's `LIVEKIT_KEYS` and key-file format).
    pub fn parse(text: &str) -> Result<Self, KeyError> {
        Self::from_sources(&KeySources { keys_text: Some(text), ..Default::default() })
    }

    /// The secret of an API key, if this set holds it.
    pub fn secret(&self, api_key: &str) -> Option<&Secret> {
        self.keys.get(api_key)
    }

    /// API keys in a stable order, for logs (never the secrets).
    pub fn key_ids(&self) -> impl Iterator<Item = &str> {
        self.keys.keys().map(String::as_str)
    }

    /// The first key pair, for minting tokens in tools and tests.
    pub fn first(&self) -> (&str, &Secret) {
        let (key, secret) = self.keys.iter().next().expect("a KeySet is never empty");
        (key, secret)
    }

    fn insert_yaml(&mut self, text: &str, source_name: &str) -> Result<(), KeyError> {
        let malformed = |line: usize| KeyError::Malformed { source_name: source_name.to_owned(), line };
        let documents = YamlLoader::load_from_str(text).map_err(|error| malformed(error.marker().line()))?;
        let mapping = match documents.into_iter().next() {
            // Empty, or nothing but comments.
            None | Some(Yaml::Null) => return Ok(()),
            Some(Yaml::Hash(mapping)) => mapping,
            Some(_) => return Err(malformed(1)),
        };
        for (key, secret) in mapping {
            // As livekit-server reads into a map of strings: any scalar, as written.
            let (Some(key), Some(secret)) = (scalar(&key), scalar(&secret)) else {
                return Err(malformed(1));
            };
            let (key, secret) = (key.trim(), secret.trim());
            if key.is_empty() || secret.is_empty() {
                return Err(malformed(1));
            }
            self.insert(key, secret)?;
        }
        Ok(())
    }

    fn insert(&mut self, key: &str, secret: &str) -> Result<(), KeyError> {
        if secret.len() < MIN_SECRET_LEN {
            return Err(KeyError::SecretTooShort { key: key.to_owned(), len: secret.len() });
        }
        let lowercase = secret.to_ascii_lowercase();
        if PLACEHOLDER_MARKERS.iter().any(|marker| lowercase.contains(marker)) {
            return Err(KeyError::Placeholder { key: key.to_owned() });
        }
        let secret = Secret(secret.as_bytes().to_vec());
        match self.keys.get(key) {
            Some(existing) if *existing != secret => Err(KeyError::Conflict { key: key.to_owned() }),
            _ => {
                self.keys.insert(key.to_owned(), secret);
                Ok(())
            }
        }
    }
}

/// A YAML scalar as text (a number or boolean as written, the way Go's YAML reads it into a
/// string).
fn scalar(value: &Yaml) -> Option<String> {
    match value {
        Yaml::String(text) | Yaml::Real(text) => Some(text.clone()),
        Yaml::Integer(number) => Some(number.to_string()),
        Yaml::Boolean(flag) => Some(flag.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LONG: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn parses_livekit_key_lines_with_comments_and_spacing() {
        let set = KeySet::parse(&format!("# rotation\nalpha: {LONG}\n\nbravo:   {LONG}x  \n")).unwrap();
        assert_eq!(set.key_ids().collect::<Vec<_>>(), ["alpha", "bravo"]);
        assert_eq!(set.secret("bravo").unwrap().expose(), format!("{LONG}x").as_bytes());
    }

    #[test]
    fn reads_yaml_as_livekit_server_does_quotes_and_comments_included() {
        let plain = KeySet::parse(&format!("alpha: {LONG}\nbravo: {LONG}x\n")).unwrap();
        let quoted =
            KeySet::parse(&format!("# production keys\nalpha: \"{LONG}\"   # rotated 2026-11\n'bravo': '{LONG}x'\n"))
                .unwrap();
        assert_eq!(quoted, plain);
        let flow = KeySet::parse(&format!("{{alpha: {LONG}, bravo: \"{LONG}x\"}}")).unwrap();
        assert_eq!(flow, plain);
        assert!(KeySet::parse("# nothing yet\n").is_err_and(|e| e == KeyError::NoKeys));
    }

    #[test]
    fn refuses_placeholders_and_what_is_not_a_mapping() {
        assert_eq!(
            KeySet::parse("APIexampleKey: example-secret-generated-elsewhere-0123456789"),
            Err(KeyError::Placeholder { key: "APIexampleKey".into() })
        );
        assert_eq!(
            KeySet::parse("k: REPLACE-WITH-32-RANDOM-BYTES-FROM-OPENSSL-RAND"),
            Err(KeyError::Placeholder { key: "k".into() })
        );
        assert!(matches!(KeySet::parse("- alpha\n- bravo"), Err(KeyError::Malformed { .. })));
        assert!(matches!(KeySet::parse("alpha: [1, 2]"), Err(KeyError::Malformed { .. })));
        assert!(matches!(KeySet::parse("alpha: \"unclosed"), Err(KeyError::Malformed { .. })));
    }

    #[test]
    fn refuses_no_key_short_secret_half_pair_and_conflicts() {
        assert_eq!(KeySet::from_sources(&KeySources::default()), Err(KeyError::NoKeys));
        assert_eq!(KeySet::parse("alpha: short"), Err(KeyError::SecretTooShort { key: "alpha".into(), len: 5 }));
        assert_eq!(
            KeySet::from_sources(&KeySources { api_key: Some("alpha"), ..Default::default() }),
            Err(KeyError::IncompletePair)
        );
        assert_eq!(
            KeySet::from_sources(&KeySources {
                api_key: Some("alpha"),
                api_secret: Some(LONG),
                keys_text: Some(&format!("alpha: {LONG}!")),
                ..Default::default()
            }),
            Err(KeyError::Conflict { key: "alpha".into() })
        );
        assert_eq!(
            KeySet::parse("no separator here"),
            Err(KeyError::Malformed { source_name: "LIVEKIT_KEYS".into(), line: 1 })
        );
    }

    #[test]
    fn merges_the_pair_the_text_and_the_file() {
        let dir = std::env::temp_dir().join(format!("keys-{}", fastrand::u64(..)));
        std::fs::write(&dir, format!("charlie: {LONG}\n")).unwrap();
        let set = KeySet::from_sources(&KeySources {
            api_key: Some("alpha"),
            api_secret: Some(LONG),
            keys_text: Some(&format!("bravo: {LONG}")),
            keys_file: Some(&dir),
        })
        .unwrap();
        std::fs::remove_file(&dir).unwrap();
        assert_eq!(set.key_ids().collect::<Vec<_>>(), ["alpha", "bravo", "charlie"]);
    }

    #[test]
    fn debug_output_never_shows_a_secret() {
        let set = KeySet::parse(&format!("alpha: {LONG}")).unwrap();
        assert!(!format!("{set:?}").contains(LONG));
    }
}
