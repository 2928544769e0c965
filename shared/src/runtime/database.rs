//! PostgreSQL connection settings and the pool every service uses (the statements are all in
//! [`crate::store`]).
//!
//! TLS is set in `DATABASE_URL` the way libpq sets it: `?sslmode=verify-full&sslrootcert=<CA
//! file>` checks the server's certificate and its host name; `&sslcert=…&sslkey=…` add a
//! client certificate. libpq's `PGSSLMODE`, `PGSSLROOTCERT`, `PGSSLCERT`, `PGSSLKEY`,
//! `PGPASSWORD`, `PGAPPNAME` and `PGOPTIONS` are defaults under the URL's own parameters (as are
//! `PGHOST`, `PGPORT`, `PGUSER`, `PGDATABASE`, but the URL always names those). sqlx (0.9)
//! departs from libpq in ways that would weaken TLS silently, so the options are checked and
//! adjusted here before any pool uses them (the invariant: settings libpq refuses are refused,
//! and a server libpq would verify is verified):
//! - an unknown `PGSSLMODE` (`verify_full`) is refused; sqlx would fall back to `prefer`,
//!   which accepts any certificate and plaintext;
//! - `sslmode=require` with an `sslrootcert` verifies the server against it, as libpq does
//!   (`verify-ca`); sqlx alone would ignore the CA and accept any certificate;
//! - a certificate or key file that cannot be read, or `sslcert` without `sslkey` (or the
//!   reverse), is refused at start-up, naming the file or parameter; sqlx would only fail each
//!   connection, with "No such file or directory" naming no file.
//!
//! One difference remains: `verify-full` and `verify-ca` trust the `sslrootcert` CA *and* the
//! system's roots (libpq: that CA alone). `prefer` (the default) and `require` check no
//! certificate at all.

use std::path::PathBuf;
use std::str::FromStr as _;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgSslMode};
use sqlx::{ConnectOptions as _, PgPool};

#[derive(Debug, Clone, clap::Args)]
pub struct DatabaseArgs {
    /// PostgreSQL URL; for TLS add `?sslmode=verify-full&sslrootcert=/path/ca.crt`.
    ///
    /// A client certificate adds `&sslcert=…&sslkey=…`. libpq's `PGSSLMODE`, `PGSSLROOTCERT`
    /// (a file or PEM text), `PGSSLCERT` and `PGSSLKEY` apply where the URL does not set these.
    /// Refused with "invalid peer certificate: UnknownIssuer": `sslrootcert` is not the server's
    /// CA; with "certificate not valid for name": the server's certificate does not name this
    /// URL's host.
    #[arg(
        long = "database-url",
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/attendance",
        hide_env_values = true
    )]
    pub url: String,
    /// Most connections this process opens.
    #[arg(
        id = "database-max-connections",
        long = "database-max-connections",
        env = "DATABASE_MAX_CONNECTIONS",
        default_value_t = 10
    )]
    pub max_connections: u32,
    /// How long to wait for a free connection before the operation fails (and is retried later).
    #[arg(id = "database-acquire-timeout", long = "database-acquire-timeout", env = "DATABASE_ACQUIRE_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration)]
    pub acquire_timeout: Duration,
}

impl DatabaseArgs {
    /// A pool that connects on first use, so that a service starts (not ready) while PostgreSQL
    /// is down rather than crash-looping; an invalid URL or TLS setting fails here, at once.
    pub fn pool(&self) -> Result<PgPool, sqlx::Error> {
        Ok(PgPoolOptions::new()
            .max_connections(self.max_connections)
            .acquire_timeout(self.acquire_timeout)
            .connect_lazy_with(self.connect_options()?))
    }

    /// [`Self::pool`] for a background service (worker, sweeper), whose statements all look
    /// rows up by key: each is planned once per connection (`plan_cache_mode =
    /// force_generic_plan`) rather than at every execution, which took 29 % of PostgreSQL's
    /// statement time in the benchmark (`pg_stat_statements.track_planning`); and index probes
    /// are costed as the reads from memory they are for this working set (`random_page_cost =
    /// 1.1`, the usual SSD setting; with the default 4 the meetings' lock statement took 9 → 43
    /// ms per 70 batches from an empty database to one with history, with 1.1 7 → 11). The read API keeps the
    /// server's settings: its optional filters do depend on the values.
    pub fn background_pool(&self) -> Result<PgPool, sqlx::Error> {
        let options =
            self.connect_options()?.options([("plan_cache_mode", "force_generic_plan"), ("random_page_cost", "1.1")]);
        Ok(PgPoolOptions::new()
            .max_connections(self.max_connections)
            .acquire_timeout(self.acquire_timeout)
            .connect_lazy_with(options))
    }

    /// The URL's options (over libpq's environment variables), with TLS made as strict as libpq
    /// would make it (see the module's documentation).
    fn connect_options(&self) -> Result<PgConnectOptions, sqlx::Error> {
        if let Ok(mode) = std::env::var("PGSSLMODE") {
            PgSslMode::from_str(&mode).map_err(|_| {
                configuration(format!(
                    "PGSSLMODE={mode:?} is none of disable, allow, prefer, require, verify-ca, verify-full"
                ))
            })?;
        }
        let options = PgConnectOptions::from_str(&self.url)?;
        let certificates = certificate_parameters(&options);
        for certificate in &certificates {
            if let Some(file) = &certificate.file {
                std::fs::File::open(file).map_err(|error| {
                    let (name, variable) = (certificate.name, format!("PG{}", certificate.name.to_uppercase()));
                    configuration(format!("DATABASE_URL's {name} (or {variable}) {}: {error}", file.display()))
                })?;
            }
        }
        let given = |name: &str| certificates.iter().any(|certificate| certificate.name == name);
        if given("sslcert") != given("sslkey") {
            return Err(configuration(
                "DATABASE_URL's sslcert and sslkey (or PGSSLCERT and PGSSLKEY) go together: give both or neither"
                    .into(),
            ));
        }
        Ok(match options.get_ssl_mode() {
            PgSslMode::Require if given("sslrootcert") => options.ssl_mode(PgSslMode::VerifyCa),
            _ => options,
        })
    }
}

/// A certificate or key parameter that is set, from the URL or the environment.
struct CertificateParameter {
    /// `sslrootcert`, `sslcert` or `sslkey`.
    name: &'static str,
    /// Its file; `None` when it was given as PEM text (which only the variables allow).
    file: Option<PathBuf>,
}

fn certificate_parameters(options: &PgConnectOptions) -> Vec<CertificateParameter> {
    // sqlx has no getters for these; the URL it renders from the options writes a file as
    // `file: <path>`.
    options
        .to_url_lossy()
        .query_pairs()
        .filter_map(|(key, value)| {
            let name = ["sslrootcert", "sslcert", "sslkey"].into_iter().find(|name| *name == key)?;
            Some(CertificateParameter { name, file: value.strip_prefix("file: ").map(PathBuf::from) })
        })
        .collect()
}

fn configuration(message: String) -> sqlx::Error {
    sqlx::Error::Configuration(message.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(url: &str) -> DatabaseArgs {
        DatabaseArgs { url: url.into(), max_connections: 1, acquire_timeout: Duration::from_secs(1) }
    }

    #[test]
    fn require_with_a_root_certificate_verifies_the_server_as_libpq_does() {
        let ca = std::env::current_exe().expect("a readable file stands in for the CA");
        let require = args(&format!("postgres://u@db/a?sslmode=require&sslrootcert={}", ca.display()));
        assert!(matches!(require.connect_options().unwrap().get_ssl_mode(), PgSslMode::VerifyCa));
        let full = args(&format!("postgres://u@db/a?sslmode=verify-full&sslrootcert={}", ca.display()));
        assert!(matches!(full.connect_options().unwrap().get_ssl_mode(), PgSslMode::VerifyFull));
    }

    #[test]
    fn an_unreadable_certificate_file_is_refused_by_name() {
        let error = args("postgres://u@db/a?sslmode=verify-full&sslrootcert=/nowhere/ca.crt").pool().unwrap_err();
        let message = error.to_string();
        assert!(message.contains("sslrootcert (or PGSSLROOTCERT) /nowhere/ca.crt"), "{message}");
        assert!(message.contains("No such file"), "{message}");
    }

    #[test]
    fn a_client_certificate_without_its_key_is_refused() {
        let cert = std::env::current_exe().expect("a readable file stands in for the certificate");
        let error = args(&format!("postgres://u@db/a?sslcert={}", cert.display())).background_pool().unwrap_err();
        assert!(error.to_string().contains("sslcert and sslkey"), "{error}");
    }
}
