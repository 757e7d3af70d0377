//! The `madx-pusher` binary on a free loopback port, started from a
//! configuration text, with the HTTP calls most tests make.

use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::process::{Listening, pusher_binary};
use crate::{PATIENCE, Token};

/// An HTTP client with the tests' patience.
pub fn http() -> reqwest::Client {
    client_builder().build().expect("http client")
}

/// [`http`], its connections from the loopback address `source` (tests of
/// limits per source address).
pub fn http_from(source: std::net::IpAddr) -> reqwest::Client {
    client_builder()
        .local_address(source)
        .build()
        .expect("http client")
}

fn client_builder() -> reqwest::ClientBuilder {
    // reqwest is built without a default TLS provider; ring is the one the
    // host uses too.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder().timeout(PATIENCE)
}

/// A running server; killed when dropped.
pub struct TestServer {
    process: Listening,
    /// `http://127.0.0.1:PORT`
    pub base: String,
    dir: tempfile::TempDir,
}

impl TestServer {
    /// Start with `config` (TOML without `listen`) and extra flags.
    pub fn start_with(config: &str, args: &[&str]) -> TestServer {
        TestServer::spawn(config, args, None)
    }

    /// Like [`TestServer::start_with`], with the server's log (at `level`)
    /// kept for [`TestServer::log`] instead of shown.
    pub fn start_logging(config: &str, args: &[&str], level: &str) -> TestServer {
        TestServer::spawn(config, args, Some(level))
    }

    /// What the server has logged so far (see [`TestServer::start_logging`]).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    fn spawn(config: &str, args: &[&str], log_level: Option<&str>) -> TestServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let stderr = match log_level {
            Some(_) => {
                Stdio::from(std::fs::File::create(dir.path().join("server.log")).expect("log file"))
            }
            None => Stdio::inherit(),
        };
        let config_path = dir.path().join("pusher.toml");
        std::fs::write(&config_path, format!("listen = \"127.0.0.1:0\"\n{config}"))
            .expect("write config");
        let mut command = Command::new(pusher_binary());
        command
            .arg("serve")
            .arg("--config")
            .arg(&config_path)
            .args(args)
            .env("MADX_LOG", log_level.unwrap_or("warn"))
            .env("NO_COLOR", "1")
            .stderr(stderr);
        let process = Listening::start(command);
        TestServer {
            base: process.base.clone(),
            process,
            dir,
        }
    }

    pub fn start(config: &str) -> TestServer {
        TestServer::start_with(config, &[])
    }

    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// SIGKILL: the node vanishes without closing anything.
    pub fn kill(&mut self) {
        self.process.kill();
    }

    /// `GET path`; the status.
    pub async fn status_of(&self, path: &str) -> u16 {
        match http().get(self.url(path)).send().await {
            Ok(response) => response.status().as_u16(),
            Err(error) => panic!("GET {path}: {error}"),
        }
    }

    /// Wait until `/readyz` says `want` (200 or 503).
    pub async fn wait_readyz(&self, want: u16) {
        let deadline = std::time::Instant::now() + PATIENCE;
        while self.status_of("/readyz").await != want {
            assert!(
                std::time::Instant::now() < deadline,
                "/readyz never answered {want}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Wait for the process to exit by itself.
    pub fn wait_for_exit(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + within;
        while std::time::Instant::now() < deadline {
            if let Ok(Some(status)) = self.process.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// `GET /metrics` with the operator token; the Prometheus text.
    pub async fn metrics(&self, operator_token: &str) -> String {
        let response = http()
            .get(self.url("/metrics"))
            .bearer_auth(operator_token)
            .send()
            .await
            .expect("GET /metrics");
        assert_eq!(response.status().as_u16(), 200, "GET /metrics");
        response.text().await.expect("metrics text")
    }

    /// `POST /admin/reload` with the operator token; status and body.
    pub async fn reload(&self, operator_token: &str) -> (u16, Value) {
        let response = http()
            .post(self.url("/admin/reload"))
            .bearer_auth(operator_token)
            .send()
            .await
            .expect("POST /admin/reload");
        let status = response.status().as_u16();
        (status, response.json().await.expect("JSON body"))
    }

    /// `POST /v1/tokens` with Basic credentials; returns status and body.
    pub async fn post_token(&self, (key, secret): (&str, &str), body: Value) -> (u16, Value) {
        let response = http()
            .post(self.url("/v1/tokens"))
            .basic_auth(key, Some(secret))
            .json(&body)
            .send()
            .await
            .expect("POST /v1/tokens");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// A token that must be issued.
    pub async fn token(&self, credentials: (&str, &str), body: Value) -> Token {
        let (status, body) = self.post_token(credentials, body).await;
        assert_eq!(status, 201, "token request failed: {body}");
        Token::from_response(&body)
    }

    pub async fn revoke(&self, (key, secret): (&str, &str), access_id: &str) -> (u16, Value) {
        let response = http()
            .delete(self.url(&format!("/v1/tokens/{access_id}")))
            .basic_auth(key, Some(secret))
            .send()
            .await
            .expect("DELETE /v1/tokens");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// The WebSocket URL for a raw query string.
    pub fn ws_url(&self, query: &str) -> String {
        let base = self.base.replacen("http", "ws", 1);
        format!("{base}/v1/ws?{query}")
    }
}
