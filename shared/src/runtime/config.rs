//! Configuration pieces every service flattens into its own typed config (the streams' own are
//! in [`crate::nats::settings`], NATS's connection in [`crate::nats::connection`], the database's in [`super::database`]), and start-up errors.
//!
//! Everything comes from environment variables (flags work too, `--help` lists them all), using
//! LiveKit's and NATS's own names where they exist. Secrets are never printed, not even by
//! `--help`.

use std::path::PathBuf;

pub use humantime::parse_duration;

use crate::livekit::keys::{KeyError, KeySet, KeySources};

/// Where the LiveKit API keys come from; at least one source must give a key.
#[derive(Clone, clap::Args)]
pub struct LiveKitKeyArgs {
    /// LiveKit API key (with LIVEKIT_API_SECRET).
    #[arg(id = "livekit-api-key", long = "livekit-api-key", env = "LIVEKIT_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// LiveKit API secret (at least 32 bytes).
    #[arg(id = "livekit-api-secret", long = "livekit-api-secret", env = "LIVEKIT_API_SECRET", hide_env_values = true)]
    pub api_secret: Option<String>,
    /// More keys, in LiveKit's format: one `key: secret` pair per line.
    #[arg(id = "livekit-keys", long = "livekit-keys", env = "LIVEKIT_KEYS", hide_env_values = true)]
    pub keys: Option<String>,
    /// A file of `key: secret` lines, like livekit-server's key_file.
    #[arg(id = "livekit-keys-file", long = "livekit-keys-file", env = "LIVEKIT_KEYS_FILE")]
    pub keys_file: Option<PathBuf>,
}

impl LiveKitKeyArgs {
    pub fn key_set(&self) -> Result<KeySet, KeyError> {
        KeySet::from_sources(&KeySources {
            api_key: self.api_key.as_deref(),
            api_secret: self.api_secret.as_deref(),
            keys_text: self.keys.as_deref(),
            keys_file: self.keys_file.as_deref(),
        })
    }
}

impl std::fmt::Debug for LiveKitKeyArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveKitKeyArgs")
            .field("api_key", &self.api_key)
            .field("keys_file", &self.keys_file)
            .finish_non_exhaustive()
    }
}

/// The attendance policy: when a participant counts as attended, late or early. The gateway
/// applies it to reads (a request may override it), the workers and sweepers to the meeting
/// reports they write.
#[derive(Debug, Clone, clap::Args)]
pub struct PolicyArgs {
    /// Attended ratio (attended time over the meeting's duration) from which a participant's
    /// status is `attended` (else `partial`); a read may override it (`min_ratio`).
    #[arg(long, env = "ATTENDANCE_MIN_RATIO", default_value_t = 0.75, value_parser = parse_ratio)]
    pub attendance_min_ratio: f64,
    /// A first join later than this after the meeting's start is `joined_late` (`late_after`).
    #[arg(long, env = "LATE_AFTER", default_value = "5m", value_parser = parse_duration)]
    pub late_after: std::time::Duration,
    /// A last leave earlier than this before the meeting's end is `left_early` (`early_before`).
    #[arg(long, env = "EARLY_BEFORE", default_value = "5m", value_parser = parse_duration)]
    pub early_before: std::time::Duration,
}

impl PolicyArgs {
    pub fn policy(&self) -> crate::domain::policy::Policy {
        crate::domain::policy::Policy {
            min_ratio: self.attendance_min_ratio,
            late_after: self.late_after,
            early_before: self.early_before,
        }
    }
}

/// A ratio from 0 to 1.
pub fn parse_ratio(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(ratio) if (0.0..=1.0).contains(&ratio) => Ok(ratio),
        _ => Err(format!("{text:?} is not a number from 0 to 1")),
    }
}

/// Why a service could not start. Each variant names the setting to fix.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Keys(#[from] KeyError),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: std::net::SocketAddr, source: std::io::Error },
    #[error(transparent)]
    Nats(#[from] crate::nats::NatsConfigError),
    #[error("invalid configuration: {0}")]
    Invalid(String),
    #[error("invalid DATABASE_URL: {0}")]
    Database(#[from] sqlx::Error),
}

/// Binds a TCP listener, naming the address on failure.
pub async fn bind(addr: std::net::SocketAddr) -> Result<tokio::net::TcpListener, StartupError> {
    tokio::net::TcpListener::bind(addr).await.map_err(|source| StartupError::Bind { addr, source })
}
