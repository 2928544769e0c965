//! A real headless Chromium for page tests, driven over WebDriver by Debian's chromedriver
//! (`make test` installs the `chromium` and `chromium-driver` packages).

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::Engine as _;
use serde_json::{Value, json};

pub struct Browser {
    driver: Child,
    base: String,
    session: String,
    http: reqwest::Client,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts chromedriver and a headless Chromium with a phone-sized window.
    pub async fn start() -> Self {
        let port = crate::nats::free_port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver (Debian's chromium-driver; `make test` installs it)");
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        crate::eventually(Duration::from_secs(20), "chromedriver to be ready", || async {
            let status: Value = http.get(format!("{base}/status")).send().await.ok()?.json().await.ok()?;
            status["value"]["ready"].as_bool().filter(|ready| *ready)
        })
        .await;
        let profile = tempfile::tempdir().expect("a profile directory");
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                         "--disable-background-networking", "--disable-component-update", "--disable-sync",
                         "--window-size=390,844", format!("--user-data-dir={}", profile.path().display())],
            },
        }}});
        let created: Value = http
            .post(format!("{base}/session"))
            .json(&capabilities)
            .send()
            .await
            .expect("new session")
            .json()
            .await
            .unwrap();
        let session =
            created["value"]["sessionId"].as_str().unwrap_or_else(|| panic!("no session: {created}")).to_owned();
        Browser { driver, base, session, http, _profile: profile }
    }

    async fn command(&self, path: &str, body: Value) -> Value {
        let url = format!("{}/session/{}/{path}", self.base, self.session);
        let answer: Value = self.http.post(url).json(&body).send().await.expect("WebDriver").json().await.unwrap();
        answer["value"].clone()
    }

    pub async fn goto(&self, url: &str) {
        self.command("url", json!({"url": url})).await;
    }

    /// Runs a script in the page and returns its result.
    pub async fn eval(&self, script: &str) -> Value {
        self.command("execute/sync", json!({"script": script, "args": []})).await
    }

    /// Saves a PNG of the page.
    pub async fn screenshot(&self, path: &std::path::Path) {
        let url = format!("{}/session/{}/screenshot", self.base, self.session);
        let answer: Value = self.http.get(url).send().await.expect("screenshot").json().await.unwrap();
        let png =
            base64::engine::general_purpose::STANDARD.decode(answer["value"].as_str().unwrap_or_default()).unwrap();
        std::fs::write(path, png).expect("write the screenshot");
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
