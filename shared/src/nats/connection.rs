//! Connecting to NATS, the same way for every binary and the dlq CLI: the servers (several for a
//! cluster), who the client is (a `.creds` file, an NKEY seed, a user and password or a token),
//! TLS (a CA, a client certificate for mutual TLS, TLS before the greeting), and its inbox prefix
//! (so an account can let each service read only its own replies).
//!
//! The settings use the `nats` CLI's environment variables (`NATS_URL`, `NATS_CREDS`, `NATS_NKEY`,
//! `NATS_USER`, `NATS_PASSWORD`, `NATS_CA`, `NATS_CERT`, `NATS_KEY`), plus `NATS_TOKEN`,
//! `NATS_TLS_FIRST` and `NATS_INBOX_PREFIX`, which it has only as flags.
//!
//! A connection that fails says why in terms of these settings: in the log and in the service's
//! readiness ([`NatsHealth`]), for a refused credential, a TLS handshake the CA does not vouch
//! for, or a subject the account does not permit.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::{ConnectErrorKind, ServerAddr};

/// How long a permission the server denied keeps the service not ready: past it, the operation
/// that needed it has either been retried successfully (the permission was granted) or failed
/// again, which records the denial anew.
const DENIAL_MEMORY: Duration = Duration::from_secs(60);

/// How to reach NATS, and as whom.
#[derive(Clone, clap::Args)]
pub struct NatsArgs {
    /// NATS server URL(s), comma-separated: give every node of a cluster (or at least two), so
    /// that the client can connect while one is down. `tls://` requires TLS.
    #[arg(
        id = "nats_url",
        long = "nats-url",
        env = "NATS_URL",
        default_value = "nats://127.0.0.1:4222",
        hide_env_values = true
    )]
    pub url: String,
    /// Name this client reports to the NATS server (shows in its monitoring).
    #[arg(id = "nats-client-name", long = "nats-client-name", env = "NATS_CLIENT_NAME")]
    pub client_name: Option<String>,
    /// A `.creds` file (user JWT and NKEY seed), as made by `nsc`.
    #[arg(id = "nats-creds", long = "nats-creds", env = "NATS_CREDS")]
    pub creds: Option<PathBuf>,
    /// A file holding the NKEY seed (`SU…`) of a user the server lists by its public key.
    #[arg(id = "nats-nkey", long = "nats-nkey", env = "NATS_NKEY")]
    pub nkey: Option<PathBuf>,
    /// User name (with NATS_PASSWORD).
    #[arg(id = "nats-user", long = "nats-user", env = "NATS_USER", hide_env_values = true)]
    pub user: Option<String>,
    /// Password of NATS_USER.
    #[arg(id = "nats-password", long = "nats-password", env = "NATS_PASSWORD", hide_env_values = true)]
    pub password: Option<String>,
    /// An authentication token.
    #[arg(id = "nats-token", long = "nats-token", env = "NATS_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// PEM file of the certificate authorities that sign the servers' certificates (default: the
    /// system's). Setting it requires TLS.
    #[arg(id = "nats-ca", long = "nats-ca", env = "NATS_CA")]
    pub ca: Option<PathBuf>,
    /// PEM client certificate, for mutual TLS (with NATS_KEY).
    #[arg(id = "nats-cert", long = "nats-cert", env = "NATS_CERT", requires = "nats-key")]
    pub cert: Option<PathBuf>,
    /// PEM private key of NATS_CERT.
    #[arg(id = "nats-key", long = "nats-key", env = "NATS_KEY", requires = "nats-cert")]
    pub key: Option<PathBuf>,
    /// Start TLS before the server's greeting (the server's `handshake_first`).
    #[arg(id = "nats-tls-first", long = "nats-tls-first", env = "NATS_TLS_FIRST", default_value_t = false)]
    pub tls_first: bool,
    /// Prefix of this client's reply subjects; an account can then allow each service to
    /// subscribe to its own replies only (`<prefix>.>`).
    #[arg(id = "nats-inbox-prefix", long = "nats-inbox-prefix", env = "NATS_INBOX_PREFIX", default_value = "_INBOX")]
    pub inbox_prefix: String,
}

/// A NATS setting that cannot work, named as the operator wrote it.
#[derive(Debug, thiserror::Error)]
pub enum NatsConfigError {
    #[error("NATS_URL: {0}")]
    Url(String),
    #[error("{setting}: cannot read {path}: {source}")]
    Unreadable { setting: &'static str, path: PathBuf, source: std::io::Error },
    #[error("{setting} ({path}): {reason}")]
    Invalid { setting: &'static str, path: PathBuf, reason: String },
    #[error("give one way to authenticate to NATS, not several: {0}")]
    SeveralCredentials(String),
    #[error("NATS_PASSWORD is set without NATS_USER")]
    PasswordWithoutUser,
}

/// What the last connection attempt and the server said about this client, for readiness.
#[derive(Clone, Default)]
pub struct NatsHealth(Arc<Mutex<Trouble>>);

#[derive(Default)]
struct Trouble {
    /// Why the client is not connected (cleared once it is).
    connection: Option<(ConnectErrorKind, String)>,
    /// The last permission the server denied, and when.
    denied: Option<(Instant, String)>,
}

impl NatsHealth {
    /// `Ok` when the client is connected and no permission was denied lately; else the reason,
    /// in terms of the settings to change.
    pub fn check(&self, client: &async_nats::Client) -> Result<(), String> {
        let trouble = self.lock();
        if let Some((at, denial)) = &trouble.denied
            && at.elapsed() < DENIAL_MEMORY
        {
            return Err(denial.clone());
        }
        match client.connection_state() {
            async_nats::connection::State::Connected => Ok(()),
            state => Err(match &trouble.connection {
                Some((_, why)) => why.clone(),
                None => format!("NATS is {state}"),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Trouble> {
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn connection_failed(&self, kind: ConnectErrorKind, why: String) {
        tracing::error!(reason = %why, "cannot connect to NATS");
        self.lock().connection = Some((kind, why));
    }

    /// A background attempt failed, of which async-nats reports only the kind: the first
    /// attempt's message has the detail (the TLS or I/O cause), so it is kept while the kind
    /// stays the same, and replaced (and logged) when the kind changes.
    fn reconnect_failed(&self, kind: ConnectErrorKind, settings: &NatsArgs) {
        let mut trouble = self.lock();
        if trouble.connection.as_ref().is_some_and(|(known, _)| *known == kind) {
            return;
        }
        let why = settings.explain(kind, &kind.to_string());
        tracing::error!(reason = %why, "cannot connect to NATS");
        trouble.connection = Some((kind, why));
    }

    fn connected(&self) {
        if self.lock().connection.take().is_some() {
            tracing::info!("connected to NATS");
        }
    }

    fn denied(&self, why: String) {
        tracing::error!(reason = %why, "NATS denied a permission");
        self.lock().denied = Some((Instant::now(), why));
    }
}

impl NatsArgs {
    /// Settings for one server or list of servers, with no credentials (tests, the benchmark).
    pub fn for_url(url: impl Into<String>) -> Self {
        NatsArgs {
            url: url.into(),
            client_name: None,
            creds: None,
            nkey: None,
            user: None,
            password: None,
            token: None,
            ca: None,
            cert: None,
            key: None,
            tls_first: false,
            inbox_prefix: "_INBOX".into(),
        }
    }

    /// The servers of `NATS_URL`, for logs and errors: without credentials.
    pub fn servers_for_display(&self) -> String {
        without_credentials(&self.url.split(',').map(str::trim).collect::<Vec<_>>().join(","))
    }

    /// Connects, retrying in the background when NATS is not up yet, so that a service can start
    /// (and report itself not ready, with [`NatsHealth`] saying why) during a NATS outage or
    /// while its credentials are wrong, instead of crash-looping. Only settings that cannot work
    /// (an unreadable file, a malformed URL) fail here.
    pub async fn connect(&self, default_name: &str) -> Result<(async_nats::Client, NatsHealth), NatsConfigError> {
        let servers = self.servers()?;
        let health = NatsHealth::default();
        // One attempt first, for its detailed error (the background retries report only the
        // kind of failure).
        match self.options(default_name, &health)?.connect(servers.clone()).await {
            Ok(client) => {
                tracing::info!(servers = %self.servers_for_display(), "connected to NATS");
                return Ok((client, health));
            }
            Err(error) => health.connection_failed(error.kind(), self.explain(error.kind(), &error.to_string())),
        }
        let client = self
            .options(default_name, &health)?
            .retry_on_initial_connect()
            // Keep reconnecting forever: a service without NATS is useless, and readiness shows it.
            .max_reconnects(None)
            .connect(servers)
            .await
            .expect("with retry_on_initial_connect, connect returns at once");
        Ok((client, health))
    }

    /// Connects once, without retrying (an operator's command wants an answer, not a hang); the
    /// error names the setting to check.
    pub async fn connect_once(&self, default_name: &str) -> Result<async_nats::Client, String> {
        let servers = self.servers().map_err(|e| e.to_string())?;
        self.options(default_name, &NatsHealth::default())
            .map_err(|e| e.to_string())?
            .connect(servers)
            .await
            .map_err(|error| self.explain(error.kind(), &error.to_string()))
    }

    fn servers(&self) -> Result<Vec<ServerAddr>, NatsConfigError> {
        let servers = self
            .url
            .split(',')
            .map(str::trim)
            .filter(|url| !url.is_empty())
            .map(|url| {
                url.parse::<ServerAddr>()
                    .map_err(|e| NatsConfigError::Url(format!("{}: {e}", without_credentials(url))))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if servers.is_empty() {
            return Err(NatsConfigError::Url("no server given".into()));
        }
        Ok(servers)
    }

    fn options(&self, default_name: &str, health: &NatsHealth) -> Result<async_nats::ConnectOptions, NatsConfigError> {
        let mut options = self.authenticated()?;
        let (events, settings) = (health.clone(), Arc::new(self.clone()));
        options = options
            .name(self.client_name.as_deref().unwrap_or(default_name))
            .connection_timeout(Duration::from_secs(5))
            .reconnect_delay_callback(|attempts| jittered(reconnect_delay(attempts), fastrand::f64()))
            .custom_inbox_prefix(&self.inbox_prefix)
            .event_callback(move |event| {
                let (events, settings) = (events.clone(), settings.clone());
                async move {
                    match event {
                        async_nats::Event::Connected => events.connected(),
                        async_nats::Event::ClientError(async_nats::ClientError::Other(kind)) => {
                            events.reconnect_failed(kind_from_display(&kind), &settings);
                        }
                        async_nats::Event::ServerError(async_nats::ServerError::AuthorizationViolation) => {
                            events.reconnect_failed(ConnectErrorKind::AuthorizationViolation, &settings);
                        }
                        async_nats::Event::ServerError(async_nats::ServerError::Other(message))
                            if message.to_ascii_lowercase().contains("permissions violation") =>
                        {
                            events.denied(format!("NATS denied {}: {message}", settings.auth_description()));
                        }
                        event => tracing::warn!(%event, "NATS connection event"),
                    }
                }
            });
        if let Some(ca) = &self.ca {
            check_pem(ca, "NATS_CA", "CERTIFICATE")?;
            options = options.add_root_certificates(ca.clone()).require_tls(true);
        }
        if let (Some(cert), Some(key)) = (&self.cert, &self.key) {
            check_pem(cert, "NATS_CERT", "CERTIFICATE")?;
            check_pem(key, "NATS_KEY", "PRIVATE KEY")?;
            options = options.add_client_certificate(cert.clone(), key.clone()).require_tls(true);
        }
        if self.tls_first {
            options = options.tls_first();
        }
        Ok(options)
    }

    /// The options with this client's credentials, of which at most one kind may be set.
    fn authenticated(&self) -> Result<async_nats::ConnectOptions, NatsConfigError> {
        let given: Vec<&str> = [
            (self.creds.is_some(), "NATS_CREDS"),
            (self.nkey.is_some(), "NATS_NKEY"),
            (self.user.is_some(), "NATS_USER"),
            (self.token.is_some(), "NATS_TOKEN"),
        ]
        .into_iter()
        .filter_map(|(set, name)| set.then_some(name))
        .collect();
        if given.len() > 1 {
            return Err(NatsConfigError::SeveralCredentials(given.join(", ")));
        }
        if self.password.is_some() && self.user.is_none() {
            return Err(NatsConfigError::PasswordWithoutUser);
        }
        let options = async_nats::ConnectOptions::new();
        if let Some(path) = &self.creds {
            let text = read_setting_file(path, "NATS_CREDS")?;
            return options.credentials(&text).map_err(|e| NatsConfigError::Invalid {
                setting: "NATS_CREDS",
                path: path.clone(),
                reason: format!("not a .creds file (a user JWT and an NKEY seed): {e}"),
            });
        }
        if let Some(path) = &self.nkey {
            let seed = read_setting_file(path, "NATS_NKEY")?.trim().to_owned();
            nkeys::KeyPair::from_seed(&seed).map_err(|e| NatsConfigError::Invalid {
                setting: "NATS_NKEY",
                path: path.clone(),
                reason: format!("not an NKEY seed: {e}"),
            })?;
            return Ok(options.nkey(seed));
        }
        if let Some(user) = &self.user {
            return Ok(options.user_and_password(user.clone(), self.password.clone().unwrap_or_default()));
        }
        if let Some(token) = &self.token {
            return Ok(options.token(token.clone()));
        }
        Ok(options)
    }

    /// Which credential the client presents, as the setting that gives it (never the secret).
    fn auth_description(&self) -> String {
        if let Some(path) = &self.creds {
            format!("the user of NATS_CREDS ({})", path.display())
        } else if let Some(path) = &self.nkey {
            format!("the NKEY user of NATS_NKEY ({})", path.display())
        } else if let Some(user) = &self.user {
            format!("NATS_USER {user:?}")
        } else if self.token.is_some() {
            "the token of NATS_TOKEN".into()
        } else if self.url.contains('@') {
            "the user in NATS_URL".into()
        } else {
            "this client (no NATS_CREDS, NATS_NKEY, NATS_USER or NATS_TOKEN given)".into()
        }
    }

    /// A failed connection explained by the settings that decide it.
    fn explain(&self, kind: ConnectErrorKind, detail: &str) -> String {
        let servers = self.servers_for_display();
        match kind {
            ConnectErrorKind::AuthorizationViolation | ConnectErrorKind::Authentication => {
                format!("NATS ({servers}) refused {}: {detail}", self.auth_description())
            }
            _ if kind == ConnectErrorKind::Tls || is_about_tls(detail) => {
                let trust = match &self.ca {
                    Some(ca) => format!("issued by a CA in NATS_CA ({})", ca.display()),
                    None => "issued by a CA the system trusts (set NATS_CA for a private CA)".into(),
                };
                let client = if self.cert.is_some() {
                    "; and the server must accept the client certificate of NATS_CERT"
                } else {
                    "; if the server requires client certificates, set NATS_CERT and NATS_KEY"
                };
                format!(
                    "TLS with NATS ({servers}) failed: {detail}. The server's certificate must be {trust} and name the host of NATS_URL{client}"
                )
            }
            ConnectErrorKind::ServerParse => format!("NATS_URL ({servers}): {detail}"),
            _ => format!("NATS is unreachable at NATS_URL ({servers}): {detail}"),
        }
    }
}

impl std::fmt::Debug for NatsArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsArgs")
            .field("servers", &self.servers_for_display())
            .field("client_name", &self.client_name)
            .field("creds", &self.creds)
            .field("nkey", &self.nkey)
            .field("user", &self.user)
            .field("ca", &self.ca)
            .field("cert", &self.cert)
            .field("tls_first", &self.tls_first)
            .field("inbox_prefix", &self.inbox_prefix)
            .finish_non_exhaustive()
    }
}

/// The kind of a failed reconnection, which async-nats reports as the kind's text only (an
/// authorization violation must still be explained as one, not as an unreachable server, when
/// the first attempt failed otherwise: timed out on a busy machine, say). Unknown text is I/O.
fn kind_from_display(text: &str) -> ConnectErrorKind {
    [
        ConnectErrorKind::ServerParse,
        ConnectErrorKind::Dns,
        ConnectErrorKind::Authentication,
        ConnectErrorKind::AuthorizationViolation,
        ConnectErrorKind::TimedOut,
        ConnectErrorKind::Tls,
        ConnectErrorKind::Io,
        ConnectErrorKind::MaxReconnects,
    ]
    .into_iter()
    .find(|kind| kind.to_string() == text)
    .unwrap_or(ConnectErrorKind::Io)
}

/// Whether a connection error came from the TLS handshake, which async-nats may report as an
/// I/O error (an alert from the server, say, when it wants a client certificate).
fn is_about_tls(detail: &str) -> bool {
    let detail = detail.to_ascii_lowercase();
    ["tls", "certificate", "handshake", "alert"].iter().any(|word| detail.contains(word))
}

/// The nominal wait before reconnection attempt `attempts` (1 = the first after a loss): none,
/// so that a client fails over to another node of a cluster at once, then doubling from 100 ms
/// to 5 s.
fn reconnect_delay(attempts: usize) -> Duration {
    if attempts <= 1 {
        return Duration::ZERO;
    }
    let doublings = u32::try_from(attempts - 2).unwrap_or(u32::MAX).min(6);
    (Duration::from_millis(100) * 2u32.pow(doublings)).min(Duration::from_secs(5))
}

/// A wait drawn in the upper half of `delay`, so that replicas that lost NATS together do not
/// all come back at the same instant.
fn jittered(delay: Duration, random: f64) -> Duration {
    let half = delay / 2;
    half + half.mul_f64(random.clamp(0.0, 1.0))
}

/// Flushes what the client still buffers before the process exits, when connected (a
/// disconnected client would wait for ever; nothing it buffers was acknowledged to anyone: the
/// gateway answers only after JetStream's ack, and an unsent ack means a redelivery, which the
/// workers apply idempotently).
pub async fn flush_before_exit(client: &async_nats::Client) {
    if client.connection_state() != async_nats::connection::State::Connected {
        tracing::warn!("NATS is not connected at shutdown: nothing to flush");
        return;
    }
    match tokio::time::timeout(Duration::from_secs(5), client.flush()).await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => tracing::warn!(%error, "could not flush NATS on shutdown"),
        Err(_) => tracing::warn!("flushing NATS on shutdown took over 5 s; exiting anyway"),
    }
}

fn read_setting_file(path: &Path, setting: &'static str) -> Result<String, NatsConfigError> {
    std::fs::read_to_string(path).map_err(|source| NatsConfigError::Unreadable {
        setting,
        path: path.to_owned(),
        source,
    })
}

/// Checks that a file the TLS set-up will load is readable PEM of the expected kind, so that a
/// wrong path fails at start-up naming the setting rather than at every connection attempt.
fn check_pem(path: &Path, setting: &'static str, label: &str) -> Result<(), NatsConfigError> {
    let text = read_setting_file(path, setting)?;
    let found =
        text.lines().any(|line| line.starts_with("-----BEGIN ") && line.trim_end().ends_with(&format!("{label}-----")));
    if found {
        Ok(())
    } else {
        Err(NatsConfigError::Invalid { setting, path: path.to_owned(), reason: format!("no PEM {label} in it") })
    }
}

/// `urls` (comma-separated) with any `user:password@` masked, for logs and errors.
pub fn without_credentials(urls: &str) -> String {
    urls.split(',')
        .map(|url| match (url.find("://"), url.rfind('@')) {
            (Some(scheme_end), Some(at)) if at > scheme_end => format!("{}***{}", &url[..scheme_end + 3], &url[at..]),
            (None, Some(at)) => format!("***{}", &url[at..]),
            _ => url.to_owned(),
        })
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_list_of_servers_is_several_addresses_and_displays_without_credentials() {
        let args = NatsArgs::for_url("nats://a:4222, nats://svc:s3cret@b:4223,tls://c:4224");
        let servers = args.servers().unwrap();
        assert_eq!(servers.len(), 3);
        assert_eq!(servers[1].port(), 4223);
        assert!(servers[2].tls_required());
        assert_eq!(args.servers_for_display(), "nats://a:4222,nats://***@b:4223,tls://c:4224");
    }

    #[test]
    fn a_malformed_server_is_named_without_its_password() {
        let error = NatsArgs::for_url("nats://a:4222,nats://u:pw@b:notaport").servers().unwrap_err().to_string();
        assert!(error.starts_with("NATS_URL: nats://***@b:notaport"), "{error}");
        assert!(!error.contains("pw"), "{error}");
        assert!(NatsArgs::for_url(" , ").servers().is_err());
    }

    #[test]
    fn one_kind_of_credentials_at_a_time() {
        let mut args = NatsArgs::for_url("nats://a:4222");
        args.user = Some("gateway".into());
        args.token = Some("t".into());
        let error = args.authenticated().unwrap_err().to_string();
        assert!(error.contains("NATS_USER, NATS_TOKEN"), "{error}");
        let mut args = NatsArgs::for_url("nats://a:4222");
        args.password = Some("p".into());
        assert!(matches!(args.authenticated(), Err(NatsConfigError::PasswordWithoutUser)));
    }

    #[test]
    fn unreadable_or_wrong_files_name_their_setting() {
        let dir = tempfile_dir();
        let mut args = NatsArgs::for_url("nats://a:4222");
        args.creds = Some(dir.join("missing.creds"));
        assert!(args.authenticated().unwrap_err().to_string().starts_with("NATS_CREDS: cannot read"));

        let not_a_seed = dir.join("seed");
        std::fs::write(&not_a_seed, "SUNOTASEED\n").unwrap();
        let mut args = NatsArgs::for_url("nats://a:4222");
        args.nkey = Some(not_a_seed);
        assert!(args.authenticated().unwrap_err().to_string().contains("NATS_NKEY"));

        let not_pem = dir.join("ca.pem");
        std::fs::write(&not_pem, "hello").unwrap();
        let error = check_pem(&not_pem, "NATS_CA", "CERTIFICATE").unwrap_err().to_string();
        assert!(error.starts_with("NATS_CA (") && error.ends_with("no PEM CERTIFICATE in it"), "{error}");
        std::fs::write(&not_pem, "-----BEGIN CERTIFICATE-----\nMII\n-----END CERTIFICATE-----\n").unwrap();
        check_pem(&not_pem, "NATS_CA", "CERTIFICATE").unwrap();
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn explanations_name_the_settings_but_no_secret() {
        let mut args = NatsArgs::for_url("nats://u:hunter2@a:4222");
        let refused = args.explain(ConnectErrorKind::AuthorizationViolation, "authorization violation");
        assert!(refused.contains("the user in NATS_URL") && !refused.contains("hunter2"), "{refused}");
        args.ca = Some("/etc/nats/ca.pem".into());
        let tls = args.explain(ConnectErrorKind::Tls, "TLS error: invalid peer certificate: UnknownIssuer");
        assert!(tls.contains("NATS_CA (/etc/nats/ca.pem)") && tls.contains("UnknownIssuer"), "{tls}");
        assert!(tls.contains("NATS_CERT"), "{tls}");
    }

    #[test]
    fn reconnections_fail_over_at_once_then_back_off_to_five_seconds_with_jitter() {
        assert_eq!(reconnect_delay(1), Duration::ZERO);
        assert_eq!(reconnect_delay(2), Duration::from_millis(100));
        assert_eq!(reconnect_delay(3), Duration::from_millis(200));
        assert_eq!(reconnect_delay(8), Duration::from_secs(5));
        assert_eq!(reconnect_delay(usize::MAX), Duration::from_secs(5));
        assert_eq!(jittered(Duration::from_secs(4), 0.0), Duration::from_secs(2));
        assert!(jittered(Duration::from_secs(4), 0.999) <= Duration::from_secs(4));
    }

    #[test]
    fn a_tls_alert_reported_as_io_is_explained_as_tls() {
        let args = NatsArgs::for_url("tls://localhost:4222");
        let why = args.explain(ConnectErrorKind::Io, "IO error: received fatal alert: BadCertificate");
        assert!(why.starts_with("TLS with NATS") && why.contains("set NATS_CERT and NATS_KEY"), "{why}");
        let down = args.explain(ConnectErrorKind::Io, "IO error: Connection refused (os error 111)");
        assert!(down.starts_with("NATS is unreachable at NATS_URL"), "{down}");
    }

    #[test]
    fn a_refusal_on_reconnection_is_explained_as_one_whatever_the_first_attempt_said() {
        let mut args = NatsArgs::for_url("tls://localhost:4222");
        args.creds = Some("/etc/nats/stranger.creds".into());
        let health = NatsHealth::default();
        health.connection_failed(ConnectErrorKind::TimedOut, args.explain(ConnectErrorKind::TimedOut, "timed out"));
        let why = |health: &NatsHealth| health.lock().connection.clone().map(|(_, why)| why).unwrap();
        assert!(why(&health).starts_with("NATS is unreachable"), "{}", why(&health));

        let explain = |text: &str| health.reconnect_failed(kind_from_display(text), &args);
        explain("authorization violation");
        assert!(why(&health).contains("refused the user of NATS_CREDS (/etc/nats/stranger.creds)"), "{}", why(&health));
        explain("authorization violation");
        assert!(why(&health).contains("refused the user of NATS_CREDS"), "{}", why(&health));
        explain("IO error");
        assert!(why(&health).starts_with("NATS is unreachable"), "{}", why(&health));
        assert_eq!(kind_from_display("TLS error"), ConnectErrorKind::Tls);
        assert_eq!(kind_from_display("something new"), ConnectErrorKind::Io);
    }

    #[test]
    fn credentials_are_masked_in_every_url_of_a_list() {
        assert_eq!(
            without_credentials("nats://ops:s3cret@nats-1:4222,tls://tok@nats-2,nats://nats-3:4222"),
            "nats://***@nats-1:4222,tls://***@nats-2,nats://nats-3:4222"
        );
        assert_eq!(without_credentials("user:pw@localhost"), "***@localhost");
    }

    fn tempfile_dir() -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("nats-connection-test-{}-{}", std::process::id(), fastrand::u64(..)));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}
