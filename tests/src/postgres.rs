//! PostgreSQL for tests: a fresh database per test on the shared server, and private servers
//! (initdb + pg_ctl on a free port) for tests that stop one or need TLS.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use shared::store::admin;

use crate::tls::CertFiles;

/// The shared server's URL for database `attendance` (`DATABASE_URL`).
pub fn shared_url() -> String {
    std::env::var("DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/attendance".into())
}

/// A database of its own on a server, dropped by [`TestDatabase::drop_database`].
pub struct TestDatabase {
    pub url: String,
    name: String,
    server_url: String,
}

impl TestDatabase {
    /// Creates a fresh, empty database on the server of `server_url`.
    pub async fn create(server_url: &str) -> Self {
        let name = format!("test_{}", crate::unique_suffix());
        let url = admin::create_database(server_url, &name).await.expect("create a test database");
        TestDatabase { url, name, server_url: server_url.to_owned() }
    }

    /// A fresh database on the shared server.
    pub async fn create_shared() -> Self {
        Self::create(&shared_url()).await
    }

    pub async fn pool(&self) -> sqlx::PgPool {
        sqlx::PgPool::connect(&self.url).await.expect("connect to the test database")
    }

    pub async fn drop_database(self) {
        let _ = admin::drop_database(&self.server_url, &self.name).await;
    }
}

/// A private PostgreSQL server on a free port, its data in a temporary directory; stopped on drop.
/// It listens on 127.0.0.1 only; its superuser is `postgres`.
pub struct PrivatePostgres {
    pub port: u16,
    data: tempfile::TempDir,
    running: bool,
}

/// Who a private server with TLS lets in over TCP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// Any user, with TLS or without (`host … trust`, initdb's default).
    Trust,
    /// Only over TLS, with a client certificate issued by the server's CA whose common name is
    /// the user name (`hostssl … cert`); a plaintext connection finds no `pg_hba.conf` entry.
    Certificate,
}

impl PrivatePostgres {
    /// A server without TLS (`ssl = off`, initdb's default), letting anyone in (`trust`).
    pub async fn start() -> Self {
        Self::start_configured(None).await
    }

    /// A server with `ssl = on`, presenting `server.cert` (with `server.key`) and verifying
    /// client certificates against `server.ca`; who may connect is `clients`. The files are
    /// copied into the data directory, the key with mode 0600 (PostgreSQL refuses to start with
    /// a key others can read).
    pub async fn start_with_tls(server: &CertFiles, clients: ClientAuth) -> Self {
        Self::start_configured(Some((server, clients))).await
    }

    async fn start_configured(tls: Option<(&CertFiles, ClientAuth)>) -> Self {
        let data = tempfile::tempdir().expect("temporary directory");
        as_postgres_owner(data.path());
        let status = postgres_command("initdb")
            .args(["-D"])
            .arg(data.path())
            .args(["-U", "postgres", "--auth=trust", "-E", "UTF8"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("run initdb (is postgresql installed? `make test` installs it)");
        assert!(status.success(), "initdb failed");
        if let Some((server, clients)) = tls {
            configure_tls(data.path(), server, clients);
            as_postgres_owner(data.path());
        }
        let mut server = PrivatePostgres { port: crate::nats::free_port(), data, running: false };
        server.restart().await;
        server
    }

    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// The server's log so far (why it refused a connection, say).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.data.path().join("server.log")).unwrap_or_default()
    }

    /// Starts the server again after [`PrivatePostgres::stop`].
    pub async fn restart(&mut self) {
        let options = format!("-c listen_addresses=127.0.0.1 -p {} -k {}", self.port, self.data.path().display());
        let log = self.data.path().join("server.log");
        let status = postgres_command("pg_ctl")
            .arg("-D")
            .arg(self.data.path())
            .arg("-l")
            .arg(&log)
            .args(["-w", "-t", "30", "-o", &options, "start"])
            .stdout(Stdio::null())
            .status()
            .expect("run pg_ctl start");
        assert!(status.success(), "pg_ctl start failed");
        self.running = true;
        let port = self.port;
        crate::eventually(Duration::from_secs(20), "the private PostgreSQL to listen", || async move {
            tokio::net::TcpStream::connect(("127.0.0.1", port)).await.ok().map(|_| ())
        })
        .await;
    }

    /// Pauses (`STOP`) or resumes (`CONT`) the whole server: the postmaster and every backend.
    pub fn signal_all(&self, signal: &str) {
        let pid_file = std::fs::read_to_string(self.data.path().join("postmaster.pid")).expect("postmaster.pid");
        let pid: u32 = pid_file.lines().next().and_then(|l| l.trim().parse().ok()).expect("postmaster pid");
        let _ = Command::new("pkill").args([format!("-{signal}"), "-P".into(), pid.to_string()]).status();
        crate::binaries::signal_pid(pid, signal);
    }

    /// Stops the server at once (`-m immediate`: like a crash, connections are cut).
    pub fn stop(&mut self) {
        if self.running {
            let _ = postgres_command("pg_ctl")
                .arg("-D")
                .arg(self.data.path())
                .args(["-m", "immediate", "-w", "stop"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            self.running = false;
        }
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Copies the server's certificate, key and CA into `data` and turns TLS on; with
/// [`ClientAuth::Certificate`], replaces `pg_hba.conf` so that TCP clients need a certificate.
fn configure_tls(data: &Path, server: &CertFiles, clients: ClientAuth) {
    use std::os::unix::fs::PermissionsExt as _;
    for (from, to) in [(&server.cert, "server.crt"), (&server.key, "server.key"), (&server.ca, "root.crt")] {
        std::fs::copy(from, data.join(to))
            .unwrap_or_else(|e| panic!("copy {} into the data directory: {e}", from.display()));
    }
    std::fs::set_permissions(data.join("server.key"), std::fs::Permissions::from_mode(0o600))
        .expect("chmod server.key");
    // Relative paths are relative to the data directory.
    let settings = "\nssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\nssl_ca_file = 'root.crt'\n";
    append(&data.join("postgresql.conf"), settings);
    if clients == ClientAuth::Certificate {
        let hba = "local all all trust\nhostssl all all 127.0.0.1/32 cert\nhostssl all all ::1/128 cert\n";
        std::fs::write(data.join("pg_hba.conf"), hba).expect("write pg_hba.conf");
    }
}

fn append(path: &Path, text: &str) {
    use std::io::Write as _;
    let mut file = std::fs::OpenOptions::new().append(true).open(path).expect("open for appending");
    file.write_all(text.as_bytes()).expect("append");
}

fn bin_dir() -> PathBuf {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|entries| entries.flatten().map(|e| e.path().join("bin")).filter(|p| p.join("initdb").exists()).collect())
        .unwrap_or_default();
    dirs.sort();
    dirs.pop().expect("PostgreSQL binaries under /usr/lib/postgresql/*/bin")
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.starts_with(b"0"))
}

/// initdb and pg_ctl refuse to run as root: run them as `postgres` then.
fn postgres_command(program: &str) -> Command {
    let program = bin_dir().join(program);
    if is_root() {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--"]).arg(program);
        command
    } else {
        Command::new(program)
    }
}

fn as_postgres_owner(path: &std::path::Path) {
    if is_root() {
        let status = Command::new("chown").args(["-R", "postgres:postgres"]).arg(path).status().expect("chown");
        assert!(status.success(), "chown the data directory to postgres");
    }
}
