//! NATS for tests: the shared server (isolated by unique stream names and subjects) and private
//! servers for tests that stop or kill one.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use shared::nats::WebhookStreamArgs;

/// The shared NATS (`NATS_URL`, default `nats://127.0.0.1:4222`).
pub fn shared_url() -> String {
    std::env::var("NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into())
}

/// A webhook stream definition no other test uses.
pub fn unique_stream() -> WebhookStreamArgs {
    let suffix = crate::unique_suffix();
    // Messages of streams left behind by a failed test expire on their own.
    WebhookStreamArgs::new(
        format!("TEST_WEBHOOKS_{suffix}"),
        format!("test{suffix}.webhook"),
        Duration::from_secs(120),
        Duration::from_secs(3600),
    )
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("local address").port()
}

/// A private `nats-server -js` on its own port and store directory, killed on drop.
pub struct PrivateNats {
    pub port: u16,
    store: tempfile::TempDir,
    /// A configuration file (`-c`), for accounts, permissions or TLS.
    config: Option<PathBuf>,
    /// Environment of the server process (a configuration can refer to `$VARIABLES`).
    env: Vec<(String, String)>,
    child: Option<Child>,
}

impl PrivateNats {
    pub async fn start() -> Self {
        Self::start_with_config("", &[]).await
    }

    /// A server with `config` (nats-server's configuration format; empty for none) and `env` in
    /// its environment. Port, store directory and JetStream come from the command line.
    pub async fn start_with_config(config: &str, env: &[(&str, &str)]) -> Self {
        let store = tempfile::tempdir().expect("temporary directory");
        let config = (!config.is_empty()).then(|| {
            let path = store.path().join("nats.conf");
            std::fs::write(&path, config).expect("write the server configuration");
            path
        });
        let env = env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        let mut nats = PrivateNats { port: free_port(), store, config, env, child: None };
        // A port found free can be taken by another test before the server binds it: then the
        // server exits, and starts again on another port.
        for _ in 0..2 {
            match nats.spawn_and_wait().await {
                Ok(()) => return nats,
                Err(log) if log.contains("address already in use") => nats.port = free_port(),
                Err(log) => panic!("the private nats-server did not start; its log:\n{log}"),
            }
        }
        nats.restart().await;
        nats
    }

    /// The store directory (JetStream's data lives in a subdirectory).
    pub fn dir(&self) -> &std::path::Path {
        self.store.path()
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Starts the server again (same port, same store) after [`PrivateNats::kill`].
    pub async fn restart(&mut self) {
        if let Err(log) = self.spawn_and_wait().await {
            panic!("the private nats-server did not start; its log:\n{log}");
        }
    }

    /// Starts the server and waits until it accepts clients; its log if it exits or stays
    /// silent for 30 s.
    async fn spawn_and_wait(&mut self) -> Result<(), String> {
        assert!(self.child.is_none(), "the server is already running");
        let mut command = Command::new(nats_server_binary());
        if let Some(config) = &self.config {
            command.arg("-c").arg(config);
        }
        let log = std::fs::File::create(self.store.path().join("server.log")).expect("server log file");
        let child = command
            .args(["-a", "127.0.0.1", "-p", &self.port.to_string(), "-js", "-sd"])
            .arg(self.store.path().join("jetstream"))
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start nats-server (is it installed? `make test` installs it)");
        self.child = Some(child);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await.is_ok() {
                return Ok(());
            }
            let exited = self.child.as_mut().is_some_and(|child| child.try_wait().expect("try_wait").is_some());
            if exited {
                self.child = None;
                return Err(self.log());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(format!("(silent for 30 s)\n{}", self.log()));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// What the server logged so far (its standard error), to explain a failed test.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.store.path().join("server.log")).unwrap_or_default()
    }

    /// Pauses (`STOP`) or resumes (`CONT`) the server.
    pub fn signal(&self, signal: &str) {
        crate::binaries::signal_pid(self.child.as_ref().expect("running").id(), signal);
    }

    /// Kills the server (SIGKILL) and waits until it is gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for PrivateNats {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `NATS_SERVER_BIN` if set (to test another server version), else Debian's nats-server.
pub fn nats_server_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("NATS_SERVER_BIN") {
        return PathBuf::from(path);
    }
    ["/usr/sbin/nats-server", "/usr/bin/nats-server", "/usr/local/bin/nats-server"]
        .iter()
        .map(PathBuf::from)
        .find(|path| path.exists())
        .unwrap_or_else(|| PathBuf::from("nats-server"))
}
