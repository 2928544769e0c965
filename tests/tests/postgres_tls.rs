//! PostgreSQL over TLS, against private servers with `ssl = on` and certificates the test makes
//! (a CA, a server certificate for `localhost` only, client certificates): what each `sslmode`
//! accepts and refuses, client-certificate logins, and libpq's `PG*` variables, through the
//! services' own pools (`DatabaseArgs`) and a real worker binary.
//!
//! Whether a connection really is encrypted is asked of the server (`pg_stat_ssl`), never
//! inferred from the client's settings.

use std::path::PathBuf;
use std::time::Duration;

use shared::runtime::database::DatabaseArgs;
use sqlx::PgPool;
use testkit::nats::{PrivateNats, free_port, unique_stream};
use testkit::postgres::{ClientAuth, PrivatePostgres};
use testkit::tls::{CertFiles, TestCa};

/// A private server with TLS, its certificate issued for `localhost` by `ca`.
struct TlsServer {
    postgres: PrivatePostgres,
    ca: TestCa,
    /// `ca`'s certificate: what clients pass as `sslrootcert`.
    ca_file: PathBuf,
    /// Holds the certificates and keys.
    dir: tempfile::TempDir,
}

impl TlsServer {
    async fn start(clients: ClientAuth) -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        let ca = TestCa::new();
        let server = ca.issue_server(&["localhost"], dir.path());
        let postgres = PrivatePostgres::start_with_tls(&server, clients).await;
        TlsServer { postgres, ca, ca_file: server.ca, dir }
    }

    /// The URL of database `postgres` as user `postgres` at `host`, with `parameters`.
    fn url(&self, host: &str, parameters: &str) -> String {
        url(&self.postgres, host, parameters)
    }

    /// A client certificate for `user` from this server's CA.
    fn client(&self, user: &str) -> CertFiles {
        self.ca.issue_client(user, self.dir.path())
    }

    /// The certificate of a CA that did not issue this server's certificate.
    fn other_ca_file(&self) -> PathBuf {
        TestCa::new().write_ca(self.dir.path())
    }
}

fn url(postgres: &PrivatePostgres, host: &str, parameters: &str) -> String {
    format!("postgres://postgres@{host}:{}/postgres?{parameters}", postgres.port)
}

fn database(url: String) -> DatabaseArgs {
    DatabaseArgs { url, max_connections: 2, acquire_timeout: Duration::from_secs(10) }
}

/// Whether the server sees this pool's connection as TLS.
async fn encrypted(pool: &PgPool) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").fetch_one(pool).await
}

/// Connects through the services' pool (`DatabaseArgs::pool`) and reports whether over TLS.
async fn connect(url: String) -> Result<bool, String> {
    let pool = database(url).pool().map_err(|e| e.to_string())?;
    let result = encrypted(&pool).await.map_err(|e| e.to_string());
    pool.close().await;
    result
}

fn file_parameters(client: &CertFiles) -> String {
    format!("sslcert={}&sslkey={}", client.cert.display(), client.key.display())
}

#[tokio::test]
async fn verify_full_to_the_name_in_the_certificate_connects_over_tls() {
    let server = TlsServer::start(ClientAuth::Trust).await;
    let args =
        database(server.url("localhost", &format!("sslmode=verify-full&sslrootcert={}", server.ca_file.display())));

    let pool = args.pool().unwrap();
    assert!(encrypted(&pool).await.unwrap(), "pool(): the server sees a plaintext connection");
    let version: String = sqlx::query_scalar("SELECT version FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(version, "TLSv1.3");

    // The background pool's session settings travel over the same TLS connection.
    let background = args.background_pool().unwrap();
    assert!(encrypted(&background).await.unwrap(), "background_pool(): plaintext");
    let plan_cache_mode: String = sqlx::query_scalar("SHOW plan_cache_mode").fetch_one(&background).await.unwrap();
    assert_eq!(plan_cache_mode, "force_generic_plan");
}

#[tokio::test]
async fn verify_full_and_verify_ca_refuse_a_server_certificate_from_another_ca() {
    let server = TlsServer::start(ClientAuth::Trust).await;
    let other_ca = server.other_ca_file().display().to_string();

    for mode in ["verify-full", "verify-ca"] {
        let error =
            connect(server.url("localhost", &format!("sslmode={mode}&sslrootcert={other_ca}"))).await.unwrap_err();
        assert!(error.contains("invalid peer certificate: UnknownIssuer"), "{mode}: {error}");
        let background = database(server.url("localhost", &format!("sslmode={mode}&sslrootcert={other_ca}")))
            .background_pool()
            .unwrap();
        let error = encrypted(&background).await.unwrap_err().to_string();
        assert!(error.contains("UnknownIssuer"), "{mode}, background pool: {error}");
    }
    // Without `sslrootcert` only the system's roots are trusted, and the test CA is not one of them.
    let error = connect(server.url("localhost", "sslmode=verify-full")).await.unwrap_err();
    assert!(error.contains("UnknownIssuer"), "{error}");
}

#[tokio::test]
async fn verify_full_refuses_a_host_the_certificate_does_not_name_and_verify_ca_does_not_check_it() {
    let server = TlsServer::start(ClientAuth::Trust).await;
    let ca = format!("sslrootcert={}", server.ca_file.display());

    // The certificate names `localhost` only; 127.0.0.1 is the same server by another name.
    let error = connect(server.url("127.0.0.1", &format!("sslmode=verify-full&{ca}"))).await.unwrap_err();
    assert!(error.contains("certificate not valid for name \"127.0.0.1\""), "{error}");
    assert!(error.contains("localhost"), "the error names what the certificate is valid for: {error}");

    assert_eq!(connect(server.url("127.0.0.1", &format!("sslmode=verify-ca&{ca}"))).await, Ok(true));
}

#[tokio::test]
async fn require_and_verify_full_never_fall_back_to_plaintext_while_prefer_does() {
    let postgres = PrivatePostgres::start().await;
    let admin = PgPool::connect(&url(&postgres, "127.0.0.1", "sslmode=disable")).await.unwrap();
    let ssl: String = sqlx::query_scalar("SHOW ssl").fetch_one(&admin).await.unwrap();
    assert_eq!(ssl, "off", "this test needs a server without TLS");

    for mode in ["require", "verify-ca", "verify-full"] {
        let error = connect(url(&postgres, "localhost", &format!("sslmode={mode}"))).await.unwrap_err();
        assert!(error.contains("server does not support TLS"), "{mode}: {error}");
    }
    // `prefer`, which is also what no `sslmode` means, silently goes plaintext: not secure.
    assert_eq!(connect(url(&postgres, "localhost", "sslmode=prefer")).await, Ok(false));
    assert_eq!(connect(url(&postgres, "localhost", "")).await, Ok(false));
}

#[tokio::test]
async fn require_checks_no_certificate_unless_given_a_root_certificate() {
    let server = TlsServer::start(ClientAuth::Trust).await;
    let other_ca = format!("sslrootcert={}", server.other_ca_file().display());

    // Encrypted, but any certificate for any name would do: no protection from an impostor.
    assert_eq!(connect(server.url("127.0.0.1", "sslmode=require")).await, Ok(true));
    // With a root certificate, the services verify the server against it, as libpq does...
    let error = connect(server.url("127.0.0.1", &format!("sslmode=require&{other_ca}"))).await.unwrap_err();
    assert!(error.contains("UnknownIssuer"), "{error}");
    let right_ca = format!("sslmode=require&sslrootcert={}", server.ca_file.display());
    assert_eq!(connect(server.url("127.0.0.1", &right_ca)).await, Ok(true));
    // ...which sqlx on its own does not: it ignores the CA and accepts the server.
    let sqlx_alone = PgPool::connect(&server.url("127.0.0.1", &format!("sslmode=require&{other_ca}"))).await.unwrap();
    assert!(encrypted(&sqlx_alone).await.unwrap());
}

#[tokio::test]
async fn a_client_certificate_from_the_ca_logs_its_user_in_and_nothing_else_does() {
    let server = TlsServer::start(ClientAuth::Certificate).await;
    let verify_full = format!("sslmode=verify-full&sslrootcert={}", server.ca_file.display());
    let client = server.client("postgres");

    let args = database(server.url("localhost", &format!("{verify_full}&{}", file_parameters(&client))));
    for pool in [args.pool().unwrap(), args.background_pool().unwrap()] {
        let client_dn: String = sqlx::query_scalar("SELECT client_dn FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(client_dn, "/CN=postgres");
    }

    let error = connect(server.url("localhost", &verify_full)).await.unwrap_err();
    assert!(error.contains("connection requires a valid client certificate"), "no certificate: {error}");

    let mallory = server.client("mallory");
    let error =
        connect(server.url("localhost", &format!("{verify_full}&{}", file_parameters(&mallory)))).await.unwrap_err();
    assert!(error.contains("certificate authentication failed for user \"postgres\""), "another user's: {error}");

    let stranger = TestCa::new().issue_client("postgres", server.dir.path());
    let error = connect(server.url("localhost", &format!("{verify_full}&{}", file_parameters(&stranger)))).await;
    assert!(error.is_err(), "a certificate from another CA was accepted");
    testkit::eventually(Duration::from_secs(5), "the server to log why it refused", || async {
        server.postgres.log().contains("could not accept SSL connection: certificate verify failed").then_some(())
    })
    .await;

    let error = connect(server.url("127.0.0.1", "sslmode=disable")).await.unwrap_err();
    assert!(error.contains("no pg_hba.conf entry") && error.contains("no encryption"), "plaintext: {error}");
}

/// A worker's environment: its own probes port, a private NATS, `DATABASE_URL`, and `extra`.
fn worker_env<'a>(
    nats: &PrivateNats,
    database_url: String,
    extra: &[(&'a str, String)],
) -> (u16, Vec<(&'a str, String)>) {
    let port = free_port();
    let stream = unique_stream();
    let mut env = vec![
        ("METRICS_ADDR", format!("127.0.0.1:{port}")),
        ("NATS_URL", nats.url()),
        ("DATABASE_URL", database_url),
        ("WEBHOOK_STREAM", stream.stream.clone()),
        ("WEBHOOK_SUBJECT_PREFIX", stream.subject_prefix.clone()),
        ("DLQ_STREAM", format!("{}_DLQ", stream.stream)),
        ("DLQ_SUBJECT_PREFIX", stream.subject_prefix.replace(".webhook", ".dlq")),
        ("PRESENCE_STREAM", format!("{}_PRESENCE", stream.stream)),
        ("PRESENCE_SUBJECT_PREFIX", stream.subject_prefix.replace(".webhook", ".presence")),
    ];
    env.extend_from_slice(extra);
    (port, env)
}

/// Polls the worker's `/readyz` until `done` accepts its status and message; panics with the last
/// answer after 30 s.
async fn wait_readiness(port: u16, what: &str, done: impl Fn(u16, &str) -> bool) -> String {
    let http = reqwest::Client::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut last = String::from("no answer");
    loop {
        if let Ok(response) = http.get(format!("http://127.0.0.1:{port}/readyz")).send().await {
            let status = response.status().as_u16();
            let body = response.text().await.unwrap_or_default();
            if done(status, &body) {
                return body;
            }
            last = format!("{status} {body}");
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}; /readyz said {last}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Each client connection but the caller's: whether it is TLS, and its certificate's subject if
/// it showed one; `None` while there is none.
async fn other_connections(admin: &PgPool) -> Option<Vec<(bool, Option<String>)>> {
    let rows: Vec<(bool, Option<String>)> = sqlx::query_as(
        "SELECT s.ssl, s.client_dn FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid)
         WHERE a.backend_type = 'client backend' AND a.pid <> pg_backend_pid()",
    )
    .fetch_all(admin)
    .await
    .ok()?;
    (!rows.is_empty()).then_some(rows)
}

#[tokio::test]
async fn a_worker_becomes_ready_over_verify_full_and_says_why_not_with_the_wrong_ca() {
    let server = TlsServer::start(ClientAuth::Trust).await;
    let nats = PrivateNats::start().await;

    let database_url =
        server.url("localhost", &format!("sslmode=verify-full&sslrootcert={}", server.ca_file.display()));
    let (port, env) = worker_env(&nats, database_url.clone(), &[]);
    let _worker = testkit::binaries::Service::start("worker", &env);
    wait_readiness(port, "the worker to be ready", |status, _| status == 200).await;
    let admin = database(database_url).pool().unwrap();
    let connections = other_connections(&admin).await.expect("the worker's connections");
    assert!(connections.iter().all(|(ssl, _)| *ssl), "a worker connection is plaintext: {connections:?}");

    let wrong_ca =
        server.url("localhost", &format!("sslmode=verify-full&sslrootcert={}", server.other_ca_file().display()));
    let (port, env) = worker_env(&nats, wrong_ca, &[]);
    let _refused = testkit::binaries::Service::start("worker", &env);
    let body = wait_readiness(port, "the worker to report the certificate", |status, body| {
        status == 503 && body.contains("PostgreSQL")
    })
    .await;
    assert!(body.contains("invalid peer certificate: UnknownIssuer"), "{body}");
}

/// Runs a worker that must fail at start-up, and returns what it printed.
async fn worker_start_up_failure(env: &[(&str, String)]) -> String {
    let mut command = tokio::process::Command::new(testkit::binaries::path("worker"));
    command.envs(env.iter().map(|(k, v)| (*k, v.as_str()))).stdin(std::process::Stdio::null()).kill_on_drop(true);
    let output = tokio::time::timeout(Duration::from_secs(20), command.output())
        .await
        .expect("the worker to exit at start-up")
        .expect("run the worker");
    assert!(!output.status.success(), "the worker started");
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

#[tokio::test]
async fn a_worker_refuses_to_start_with_a_missing_ca_file_or_an_unknown_pgsslmode() {
    let server = TlsServer::start(ClientAuth::Trust).await;
    let nats = PrivateNats::start().await;

    let missing = server.dir.path().join("missing-ca.crt");
    let (_, env) = worker_env(
        &nats,
        server.url("localhost", &format!("sslmode=verify-full&sslrootcert={}", missing.display())),
        &[],
    );
    let printed = worker_start_up_failure(&env).await;
    assert!(
        printed.contains(&format!("sslrootcert (or PGSSLROOTCERT) {}: No such file", missing.display())),
        "{printed}"
    );

    // sqlx alone would take a misspelt mode for `prefer` and connect without checking anything.
    let (_, env) = worker_env(&nats, server.url("localhost", ""), &[("PGSSLMODE", "verify_full".into())]);
    let printed = worker_start_up_failure(&env).await;
    assert!(printed.contains("PGSSLMODE=\"verify_full\" is none of"), "{printed}");
}

#[tokio::test]
async fn a_worker_takes_its_tls_settings_and_client_certificate_from_libpq_variables() {
    let server = TlsServer::start(ClientAuth::Certificate).await;
    let nats = PrivateNats::start().await;
    let client = server.client("postgres");
    let plain_url = server.url("localhost", "");
    let display = |path: &PathBuf| path.display().to_string();

    let admin_url =
        format!("sslmode=verify-full&sslrootcert={}&{}", display(&server.ca_file), file_parameters(&client));
    let admin = database(server.url("localhost", &admin_url)).pool().unwrap();

    // The root certificate as a file, then as PEM text (as a Kubernetes secret key gives it).
    for root in [display(&server.ca_file), server.ca.cert_pem().to_owned()] {
        let variables = [
            ("PGSSLMODE", "verify-full".to_owned()),
            ("PGSSLROOTCERT", root),
            ("PGSSLCERT", display(&client.cert)),
            ("PGSSLKEY", display(&client.key)),
        ];
        let (port, env) = worker_env(&nats, plain_url.clone(), &variables);
        let worker = testkit::binaries::Service::start("worker", &env);
        wait_readiness(port, "the worker to be ready", |status, _| status == 200).await;
        let connections = other_connections(&admin).await.expect("the worker's connections");
        let by_certificate = |(ssl, dn): &(bool, Option<String>)| *ssl && dn.as_deref() == Some("/CN=postgres");
        assert!(connections.iter().all(by_certificate), "{connections:?}");
        drop(worker);
    }

    // Without the client certificate's variables, the same worker is turned away: they were in use.
    let variables = [("PGSSLMODE", "verify-full".to_owned()), ("PGSSLROOTCERT", display(&server.ca_file))];
    let (port, env) = worker_env(&nats, plain_url, &variables);
    let _worker = testkit::binaries::Service::start("worker", &env);
    let body = wait_readiness(port, "the worker to report the missing certificate", |status, body| {
        status == 503 && body.contains("PostgreSQL")
    })
    .await;
    assert!(body.contains("connection requires a valid client certificate"), "{body}");
}
