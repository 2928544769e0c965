//! PostgreSQL for tests: a fresh database per test on the shared server, and private servers
//! (initdb + pg_ctl on a free port) for tests that stop one.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use shared::store::admin;

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
pub struct PrivatePostgres {
    pub port: u16,
    data: tempfile::TempDir,
    running: bool,
}

impl PrivatePostgres {
    pub async fn start() -> Self {
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
        let mut server = PrivatePostgres { port: crate::nats::free_port(), data, running: false };
        server.restart().await;
        server
    }

    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
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
