//! The workspace's real binaries, for end-to-end tests. `make test` builds them before running
//! the tests; they sit next to the test executable's directory (`target/<profile>/`).

use std::path::PathBuf;

/// Path of a workspace binary (`gateway`, `worker`, `sweeper`).
pub fn path(name: &str) -> PathBuf {
    let test_exe = std::env::current_exe().expect("the test executable's path");
    // target/<profile>/deps/<test> → target/<profile>/<name>
    let profile_dir = test_exe.parent().and_then(|deps| deps.parent()).expect("target/<profile>");
    let binary = profile_dir.join(name);
    assert!(
        binary.exists(),
        "{} is missing: build the binaries first (`cargo build --workspace --bins`, which `make test` does)",
        binary.display()
    );
    binary
}

/// A running workspace binary, killed on drop if still running.
pub struct Service {
    pub name: &'static str,
    child: Option<std::process::Child>,
}

impl Service {
    /// Starts `name` with the given environment (on top of the test's own).
    pub fn start(name: &'static str, env: &[(&str, String)]) -> Self {
        let child = std::process::Command::new(path(name))
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .env("RUST_LOG", "info")
            .stdin(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("start {name}: {e}"));
        Service { name, child: Some(child) }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Sends a signal (`TERM`, `KILL`, `STOP`, `CONT`) with the system's `kill`.
    pub fn signal(&self, signal: &str) {
        signal_pid(self.pid(), signal);
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|child| child.try_wait().expect("try_wait").is_none())
    }

    /// Waits for the process to exit, at most `timeout`, and returns its status.
    pub async fn wait_exit(&mut self, timeout: std::time::Duration) -> std::process::ExitStatus {
        let name = self.name;
        let child = self.child.as_mut().expect("running");
        crate::eventually(timeout, &format!("{name} to exit"), || {
            let status = child.try_wait().expect("try_wait");
            async move { status }
        })
        .await
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Sends a signal to a process with the system's `kill` command.
pub fn signal_pid(pid: u32, signal: &str) {
    let status =
        std::process::Command::new("kill").args([format!("-{signal}"), pid.to_string()]).status().expect("run kill");
    assert!(status.success(), "kill -{signal} {pid} failed");
}
