//! Test harness: runs the real `madx-pusher` binary on a free loopback port
//! and talks to it over real HTTP and WebSocket connections. TOTP codes are
//! computed with `totp-rs`, an independent implementation, never with the
//! component's code.

#![allow(dead_code)] // Each test binary uses a different part of the harness.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, connect_async};
use totp_rs::{Algorithm, Secret, TOTP};

pub type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// How long any single step of a test may wait for the server.
pub const PATIENCE: Duration = Duration::from_secs(15);

/// Two apps, so tests can check that nothing crosses between them.
pub const TWO_APPS: &str = r#"
[[apps]]
id = "alpha"
key = "alpha-key"
secret = "alpha-secret"

[[apps]]
id = "beta"
key = "beta-key"
secret = "beta-secret"
"#;

pub const ALPHA: (&str, &str) = ("alpha-key", "alpha-secret");
pub const BETA: (&str, &str) = ("beta-key", "beta-secret");

/// A running server; killed when dropped.
pub struct TestServer {
    child: Child,
    /// `http://127.0.0.1:PORT`
    pub base: String,
    _dir: tempfile::TempDir,
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
        std::fs::read_to_string(self._dir.path().join("server.log")).unwrap_or_default()
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
        let mut child = Command::new(env!("CARGO_BIN_EXE_madx-pusher"))
            .arg("serve")
            .arg("--config")
            .arg(&config_path)
            .args(args)
            .env("MADX_LOG", log_level.unwrap_or("warn"))
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("spawn madx-pusher");

        // The first stdout line names the bound address; keep draining the
        // rest so the server never blocks on a full pipe.
        let stdout = child.stdout.take().expect("stdout");
        let (lines, first_line) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                let _ = lines.send(line);
            }
        });
        // Start-up compiles the components: a 12 MB JavaScript one takes
        // 15-70 s on a loaded 2-core machine.
        let line = match first_line.recv_timeout(Duration::from_secs(120)) {
            Ok(line) => line,
            Err(_) => {
                let _ = child.kill();
                panic!("madx-pusher did not start: {:?}", child.wait());
            }
        };
        let base = line
            .split("listening on ")
            .nth(1)
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .trim()
            .to_owned();
        TestServer {
            child,
            base,
            _dir: dir,
        }
    }

    pub fn start(config: &str) -> TestServer {
        TestServer::start_with(config, &[])
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL: the node vanishes without closing anything.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
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
            if let Ok(Some(status)) = self.child.try_wait() {
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

impl Drop for TestServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn http() -> reqwest::Client {
    // reqwest is built without a default TLS provider; ring is the one the
    // host uses too.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .timeout(PATIENCE)
        .build()
        .expect("http client")
}

/// An issued token as the client sees it.
#[derive(Debug, Clone)]
pub struct Token {
    pub access_id: String,
    pub secret_seed: String,
    pub ws_url: String,
    pub otp: Value,
}

impl Token {
    pub fn from_response(body: &Value) -> Token {
        Token {
            access_id: body["access_id"].as_str().expect("access_id").to_owned(),
            secret_seed: body["secret_seed"]
                .as_str()
                .expect("secret_seed")
                .to_owned(),
            ws_url: body["ws_url"].as_str().expect("ws_url").to_owned(),
            otp: body["otp"].clone(),
        }
    }

    /// The code for the step `steps` away from now, computed from the
    /// token's announced parameters.
    pub fn code(&self, steps: i64) -> String {
        let algorithm = match self.otp["algorithm"].as_str() {
            Some("SHA1") => Algorithm::SHA1,
            Some("SHA256") => Algorithm::SHA256,
            Some("SHA512") => Algorithm::SHA512,
            other => panic!("unexpected algorithm {other:?}"),
        };
        let digits = self.otp["digits"].as_u64().expect("digits") as usize;
        let period = self.otp["period"].as_u64().expect("period");
        totp_code(&self.secret_seed, algorithm, digits, period, steps)
    }

    /// The connection URL with this token and `otp`.
    pub fn url_with(&self, otp: &str) -> String {
        format!("{}&access_id={}&otp={otp}", self.ws_url, self.access_id)
    }
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

pub fn totp_code(
    seed: &str,
    algorithm: Algorithm,
    digits: usize,
    period: u64,
    steps: i64,
) -> String {
    let secret = Secret::Encoded(seed.to_owned())
        .to_bytes()
        .expect("base32 seed");
    let totp = TOTP::new_unchecked(algorithm, digits, 0, period, secret);
    let time = unix_now() as i64 + steps * period as i64;
    totp.generate(time as u64)
}

/// Sleep, if needed, so that at least `margin` remains in the current time
/// step: codes computed now then mean the same step to the server.
pub async fn away_from_step_edge(period: u64, margin: u64) {
    let into_step = unix_now() % period;
    if into_step + margin >= period {
        tokio::time::sleep(Duration::from_secs(period - into_step + 1)).await;
    }
}

/// What a connection attempt led to.
pub enum Connected {
    Welcome { socket: Box<Socket>, welcome: Value },
    Refused { code: u16, error: Value },
}

impl Connected {
    /// The socket and welcome frame; panics on refusal.
    pub fn welcomed(self) -> (Socket, Value) {
        match self {
            Connected::Welcome { socket, welcome } => (*socket, welcome),
            Connected::Refused { code, error } => panic!("refused with {code}: {error}"),
        }
    }

    /// The close code and error frame; panics when welcomed.
    pub fn refused(self) -> (u16, Value) {
        match self {
            Connected::Refused { code, error } => (code, error),
            Connected::Welcome { welcome, .. } => panic!("unexpectedly welcomed: {welcome}"),
        }
    }
}

/// Open a WebSocket and read until a welcome or a close.
pub async fn connect(url: &str) -> Connected {
    let (mut socket, _) = tokio::time::timeout(PATIENCE, connect_async(url))
        .await
        .expect("connect timed out")
        .expect("WebSocket upgrade");
    let first = next_json(&mut socket).await.expect("a first frame");
    if first["type"] == "welcome" {
        return Connected::Welcome {
            socket: Box::new(socket),
            welcome: first,
        };
    }
    assert_eq!(first["type"], "error", "unexpected first frame {first}");
    let code = closed_with(&mut socket).await;
    assert_eq!(
        first["code"].as_u64(),
        Some(u64::from(code)),
        "error frame {first} vs close {code}"
    );
    Connected::Refused { code, error: first }
}

/// The next JSON text frame, or `None` when the socket closes first.
pub async fn next_json(socket: &mut Socket) -> Option<Value> {
    loop {
        let message = tokio::time::timeout(PATIENCE, socket.next())
            .await
            .expect("no frame in time")?;
        match message.ok()? {
            Message::Text(text) => {
                return Some(serde_json::from_str(text.as_str()).expect("JSON frame"));
            }
            Message::Close(_) => return None,
            _ => continue,
        }
    }
}

/// Read until the close frame and return its code (after an optional
/// `error` frame with the same code).
pub async fn closed_with(socket: &mut Socket) -> u16 {
    loop {
        let message = tokio::time::timeout(PATIENCE, socket.next())
            .await
            .expect("no close in time");
        match message {
            Some(Ok(Message::Close(Some(frame)))) => return u16::from(frame.code),
            Some(Ok(Message::Close(None))) | None => panic!("closed without a code"),
            Some(Ok(Message::Text(text))) => {
                let frame: Value = serde_json::from_str(text.as_str()).expect("JSON frame");
                assert_eq!(
                    frame["type"], "error",
                    "unexpected frame before close: {frame}"
                );
            }
            Some(Ok(_)) => continue,
            Some(Err(error)) => panic!("socket failed before closing: {error}"),
        }
    }
}

pub async fn send_json(socket: &mut Socket, frame: Value) {
    socket
        .send(Message::Text(frame.to_string().into()))
        .await
        .expect("send frame");
}

/// Build an example plugin for wasm32-wasip2 and return its path. Uses the
/// same separate target directory as the host's build script.
pub fn build_example_plugin(package: &str) -> PathBuf {
    let target = plugins_out_dir();
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .current_dir(workspace())
        .args([
            "build",
            "--quiet",
            "--target",
            "wasm32-wasip2",
            "--profile",
            "plugin",
        ])
        .args(["--package", package])
        .arg("--target-dir")
        .arg(&target)
        .status()
        .expect("run cargo");
    assert!(status.success(), "building {package} failed");
    target
        .join("wasm32-wasip2")
        .join("plugin")
        .join(format!("{}.wasm", package.replace('-', "_")))
}

/// Build one of the examples that live outside the workspace, as the guide
/// says (`cargo build --target wasm32-wasip2 --release` in its directory,
/// into its own `target/`), and return the component's path.
pub fn build_outside_plugin(example: &str, wasm_name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/plugins")
        .join(example);
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .current_dir(&dir)
        .env_remove("CARGO_TARGET_DIR")
        .args(["build", "--quiet", "--target", "wasm32-wasip2", "--release"])
        .status()
        .expect("run cargo");
    assert!(
        status.success(),
        "building examples/plugins/{example} failed"
    );
    dir.join("target/wasm32-wasip2/release")
        .join(format!("{wasm_name}.wasm"))
}

/// `POST` a JSON body to `path` with app credentials.
pub async fn post_json(
    server: &TestServer,
    path: &str,
    (key, secret): (&str, &str),
    body: &Value,
) -> (u16, Value) {
    let response = http()
        .post(server.url(path))
        .basic_auth(key, Some(secret))
        .json(body)
        .send()
        .await
        .expect("POST");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Publish one message that must be accepted; returns its id.
pub async fn publish(server: &TestServer, credentials: (&str, &str), body: Value) -> String {
    let (status, response) = post_json(server, "/v1/publish", credentials, &body).await;
    assert_eq!(status, 202, "publish {body} refused: {response}");
    response["id"].as_str().expect("id").to_owned()
}

/// Every `message` frame up to and including the one with event
/// `sentinel`. Asserting on what arrived before a later sentinel makes
/// "did not receive" checks able to fail.
pub async fn messages_until(socket: &mut Socket, sentinel: &str) -> Vec<Value> {
    let mut messages = Vec::new();
    loop {
        let frame = next_json(socket)
            .await
            .expect("socket closed before the sentinel");
        if frame["type"] != "message" {
            continue;
        }
        let done = frame["event"] == sentinel;
        messages.push(frame);
        if done {
            return messages;
        }
    }
}

/// Read until the close frame, skipping everything else; the close code.
pub async fn close_code_skipping_messages(socket: &mut Socket) -> Option<u16> {
    loop {
        let message = tokio::time::timeout(PATIENCE, socket.next())
            .await
            .expect("no close in time")?;
        match message {
            Ok(Message::Close(frame)) => return frame.map(|frame| u16::from(frame.code)),
            Ok(_) => continue,
            Err(_) => return None,
        }
    }
}

/// A socket of a new token with these claims, welcomed.
pub async fn open_socket(
    server: &TestServer,
    credentials: (&str, &str),
    claims: Value,
) -> (Token, Socket) {
    let token = server.token(credentials, claims).await;
    away_from_step_edge(30, 2).await;
    let (socket, _) = connect(&token.url_with(&token.code(0))).await.welcomed();
    (token, socket)
}

/// The `event` of each message.
pub fn events(messages: &[Value]) -> Vec<&str> {
    messages
        .iter()
        .map(|m| m["event"].as_str().unwrap())
        .collect()
}

/// Send `subscribe` and return the answer.
pub async fn subscribe(socket: &mut Socket, channel: &str) -> Value {
    send_json(socket, json!({"type": "subscribe", "channel": channel})).await;
    next_json(socket).await.unwrap()
}

/// The workspace root.
fn workspace() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
}

/// Where example components built by the tests go: `$CARGO_TARGET_DIR/plugins`.
fn plugins_out_dir() -> PathBuf {
    let out_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target"))
        .join("plugins");
    std::fs::create_dir_all(&out_dir).expect("create target/plugins");
    out_dir
}

/// Build the Python router example (`examples/plugins/router-python`) with
/// componentize-py (installed from `requirements-dev.txt`); its path.
pub fn build_python_router() -> PathBuf {
    let workspace = workspace();
    let output = plugins_out_dir().join("router_python.wasm");
    let status = Command::new("componentize-py")
        .arg("-d")
        .arg(workspace.join("wit"))
        .args(["-w", "router-plugin", "componentize", "-p"])
        .arg(workspace.join("examples/plugins/router-python"))
        .arg("app")
        .arg("-o")
        .arg(&output)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdout(Stdio::null())
        .status()
        .expect("componentize-py is missing: pip install -r requirements-dev.txt");
    assert!(
        status.success(),
        "componentize-py failed to build the Python router"
    );
    output
}

/// Build the JavaScript router example (`examples/plugins/router-js`) with
/// its `npm run build` (componentize-js, pinned in its package-lock.json,
/// installed with `npm ci` when missing or older than the lock); its path.
pub fn build_js_router() -> PathBuf {
    let example = workspace().join("examples/plugins/router-js");
    let output = plugins_out_dir().join("router_js.wasm");
    let modified = |path: PathBuf| std::fs::metadata(path).and_then(|m| m.modified()).ok();
    // npm records what it installed in node_modules/.package-lock.json.
    if modified(example.join("node_modules/.package-lock.json"))
        < modified(example.join("package-lock.json"))
    {
        npm(&example, &["ci", "--quiet", "--no-audit", "--no-fund"]);
    }
    let out = output.to_str().expect("a UTF-8 target dir");
    // The last `--out` wins over the one in package.json.
    npm(&example, &["run", "--silent", "build", "--", "--out", out]);
    output
}

/// Run npm in `dir`; panics with its output when it fails.
fn npm(dir: &Path, args: &[&str]) {
    let output = Command::new("npm")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("npm is missing: install Node.js 20+ and npm (scripts/test does)");
    assert!(
        output.status.success(),
        "npm {} failed in {}:\n{}{}",
        args.join(" "),
        dir.display(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
}

/// A JSON body with nothing in it.
pub fn empty() -> Value {
    json!({})
}

/// A real `redis-server` on a free loopback port, stopped when dropped. It
/// keeps an append-only file (in a temporary directory), as a production
/// Redis holding tokens should, so a restart keeps them.
pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
    dir: tempfile::TempDir,
}

impl RedisServer {
    pub fn start() -> RedisServer {
        let dir = tempfile::tempdir().expect("temp dir");
        // Ask the OS for a free port; retry if someone takes it first.
        for _ in 0..5 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|listener| listener.local_addr())
                .expect("a free port")
                .port();
            if let Some(child) = spawn_redis(port, dir.path()) {
                return RedisServer {
                    child: Some(child),
                    port,
                    dir,
                };
            }
        }
        panic!("redis-server did not start");
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Stop the server (SIGTERM: it writes its file and exits, as in a
    /// rolling restart).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let terminated = Command::new("kill")
                .arg(child.id().to_string())
                .status()
                .is_ok_and(|status| status.success());
            if !terminated {
                let _ = child.kill();
            }
            let _ = child.wait();
        }
    }

    /// Start it again on the same port, from its file.
    pub fn restart(&mut self) {
        self.stop();
        self.child = spawn_redis(self.port, self.dir.path());
        assert!(
            self.child.is_some(),
            "redis-server did not come back on port {}",
            self.port
        );
    }
}

/// Start `redis-server` on `port`; the child once it answers PING.
fn spawn_redis(port: u16, dir: &Path) -> Option<Child> {
    let mut child = Command::new("redis-server")
        .args(["--bind", "127.0.0.1", "--port"])
        .arg(port.to_string())
        .args([
            "--save",
            "",
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
        ])
        .arg("--dir")
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server is missing: scripts/test installs it (apt-get install redis-server)");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::time::Instant::now() < deadline {
        if redis_answers(port) {
            return Some(child);
        }
        if let Ok(Some(_)) = child.try_wait() {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

/// Does a Redis on `port` answer PING?
fn redis_answers(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    let mut reply = [0u8; 7];
    stream.write_all(b"PING\r\n").is_ok()
        && stream.read_exact(&mut reply).is_ok()
        && &reply == b"+PONG\r\n"
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A client that has received nothing yet resumes from the position
/// `welcome` and `subscribed` announce, and misses nothing published since.
pub async fn check_resume_from_announced_position(server: &TestServer, credentials: (&str, &str)) {
    let token = server
        .token(credentials, json!({"user_id": "pos", "channels": ["pos"]}))
        .await;
    away_from_step_edge(30, 3).await;
    let (mut socket, welcome) = connect(&token.url_with(&token.code(0))).await.welcomed();
    let inbox_from = welcome["last_id"]
        .as_str()
        .expect("welcome.last_id")
        .to_owned();
    let subscribed = subscribe(&mut socket, "pos").await;
    let channel_from = subscribed["last_id"]
        .as_str()
        .expect("subscribed.last_id")
        .to_owned();
    drop(socket);

    let for_user = publish(
        server,
        credentials,
        json!({"user_id": "pos", "event": "u", "data": 1}),
    )
    .await;
    let for_channel = publish(
        server,
        credentials,
        json!({"channel": "pos", "event": "c", "data": 2}),
    )
    .await;
    for (id, from) in [(&for_user, &inbox_from), (&for_channel, &channel_from)] {
        assert!(
            id.parse::<u64>().unwrap() > from.parse::<u64>().unwrap(),
            "{id} after {from}"
        );
    }

    let url = format!("{}&last_id={inbox_from}", token.url_with(&token.code(1)));
    let (mut socket, welcome) = connect(&url).await.welcomed();
    assert_eq!(welcome["recovered"], true, "{welcome}");
    let replayed = next_json(&mut socket).await.expect("the inbox message");
    assert_eq!(replayed["id"], for_user.as_str(), "{replayed}");
    send_json(
        &mut socket,
        json!({"type": "subscribe", "channel": "pos", "since": channel_from}),
    )
    .await;
    let subscribed = next_json(&mut socket).await.expect("subscribed");
    assert_eq!(subscribed["recovered"], true, "{subscribed}");
    let replayed = next_json(&mut socket).await.expect("the channel message");
    assert_eq!(replayed["id"], for_channel.as_str(), "{replayed}");
}
