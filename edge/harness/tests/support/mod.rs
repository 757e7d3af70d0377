//! What the end-to-end tests run for real: a `redis-server` on a free
//! loopback port, the `madx-pusher` host binary of this build in Redis mode,
//! and the edge component that `spin.toml` names, built by its own build
//! command and served by the harness. Codes are computed with `totp-rs`, an
//! implementation independent of the auth rules under test.

#![allow(dead_code)] // Each test uses a different part.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use hmac::{Hmac, KeyInit, Mac};
use madx_edge_harness::{EDGE_COMPONENT, Edge, EdgeApp, Manifest};
use md5::{Digest, Md5};
use serde_json::{Value, json};
use sha2::Sha256;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, connect_async};
use totp_rs::{Algorithm, Secret, TOTP};

pub type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// How long one step of a test may wait.
pub const PATIENCE: Duration = Duration::from_secs(15);

/// The apps of every deployment in these tests, as `MADX_APPS` and the
/// edge's `apps` variable give them.
pub const APPS: &str = "alpha:alpha-key:alpha-secret,beta:beta-key:beta-secret,\
                        424242:pusher-key:pusher-secret";
pub const ALPHA: (&str, &str) = ("alpha-key", "alpha-secret");
pub const BETA: (&str, &str) = ("beta-key", "beta-secret");
/// An app for Pusher's libraries, which only take app ids made of digits.
pub const PUSHER_APP_ID: &str = "424242";
pub const PUSHER: (&str, &str) = ("pusher-key", "pusher-secret");

fn workspace() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .and_then(Path::parent)
        .expect("edge/harness lives two levels below the workspace")
}

/// The repository's `spin.toml`.
pub fn manifest() -> Manifest {
    Manifest::load(&workspace().join("spin.toml")).expect("spin.toml")
}

/// The edge component, built once per test run by the build command in
/// `spin.toml` and loaded from the file its `source` names.
pub fn edge_app() -> &'static EdgeApp {
    static APP: OnceLock<EdgeApp> = OnceLock::new();
    APP.get_or_init(|| {
        EdgeApp::build(&manifest(), EDGE_COMPONENT).expect("build and load the edge component")
    })
}

/// `cargo` with the environment of a fresh shell: this test's own build
/// settings must not reach the builds it starts (as `Manifest::build`).
fn cargo() -> Command {
    let mut command = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    command.current_dir(workspace());
    for variable in [
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTFLAGS",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_BUILD_RUSTFLAGS",
    ] {
        command.env_remove(variable);
    }
    command
}

/// Build plugin crates of this workspace for wasm32-wasip2 and return
/// their `.wasm` files, in order.
pub fn build_plugins(crates: &[&str]) -> Vec<PathBuf> {
    let target_dir = workspace().join("target/edge");
    let mut command = cargo();
    command
        .args(["build", "--target", "wasm32-wasip2", "--profile", "plugin"])
        .arg("--target-dir")
        .arg(&target_dir);
    for name in crates {
        command.args(["--package", name]);
    }
    let status = command.status().expect("run cargo");
    assert!(status.success(), "building {crates:?} failed");
    crates
        .iter()
        .map(|name| {
            target_dir
                .join("wasm32-wasip2/plugin")
                .join(format!("{}.wasm", name.replace('-', "_")))
        })
        .collect()
}

/// The edge composed by `madx-edge-build` (the tool `spin.toml`'s build
/// command runs) with the plugins a hosts' configuration file names,
/// written to `target/edge/<name>.wasm`.
pub fn compose_edge(config: &Path, name: &str) -> EdgeApp {
    let out = workspace().join(format!("target/edge/{name}.wasm"));
    let status = cargo()
        .args([
            "run",
            "--quiet",
            "--package",
            "madx-edge-build",
            "--target-dir",
            "target/edge",
            "--",
            "--config",
        ])
        .arg(config)
        .arg("--out")
        .arg(&out)
        .status()
        .expect("run madx-edge-build");
    assert!(
        status.success(),
        "madx-edge-build --config {config:?} failed"
    );
    EdgeApp::compile(&out).expect("load the composed edge")
}

/// A real `redis-server` on a free loopback port; killed when dropped.
pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl RedisServer {
    pub fn start() -> RedisServer {
        let dir = tempfile::tempdir().expect("temp dir");
        for _ in 0..5 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|listener| listener.local_addr())
                .expect("a free port")
                .port();
            let mut child = Command::new("redis-server")
                .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
                .args(["--save", "", "--appendonly", "no"])
                .arg("--dir")
                .arg(dir.path())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("redis-server is missing: scripts/test installs it");
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if redis_answers(port) {
                    return RedisServer {
                        child: Some(child),
                        port,
                        _dir: dir,
                    };
                }
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("redis-server did not start");
    }

    /// The URL the hosts get with `--store`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// A client for looking at what was written.
    pub async fn client(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.url())
            .expect("redis URL")
            .get_multiplexed_async_connection()
            .await
            .expect("connect to redis-server")
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn redis_answers(port: u16) -> bool {
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    let mut reply = [0u8; 7];
    stream.write_all(b"PING\r\n").is_ok()
        && stream.read_exact(&mut reply).is_ok()
        && &reply == b"+PONG\r\n"
}

/// `madx-pusher` from the same build as this test (`target/<profile>/`):
/// `cargo test --workspace` builds it with this crate.
fn host_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("test path");
    let binary = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>")
        .join("madx-pusher");
    assert!(
        binary.exists(),
        "{} is missing: run the tests with `cargo test --workspace` (scripts/test does)",
        binary.display()
    );
    binary
}

/// A host process in Redis mode; killed when dropped.
pub struct Host {
    child: Child,
    /// `http://127.0.0.1:PORT`
    pub base: String,
}

impl Host {
    pub async fn start(redis: &RedisServer, prefix: &str) -> Host {
        Host::start_with(redis, prefix, &[]).await
    }

    /// As [`Host::start`], with more command-line arguments.
    pub async fn start_with(redis: &RedisServer, prefix: &str, args: &[&str]) -> Host {
        let mut child = Command::new(host_binary())
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(args)
            .arg("--store")
            .arg(redis.url())
            .args(["--store-prefix", prefix])
            .env("MADX_APPS", APPS)
            .env("MADX_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start madx-pusher");
        let stdout = child.stdout.take().expect("stdout");
        let mut reader = BufReader::new(stdout);
        let mut first = String::new();
        reader.read_line(&mut first).expect("first line");
        // Keep draining so the host never blocks on a full pipe.
        std::thread::spawn(move || for _ in reader.lines() {});
        let base = first
            .split("listening on ")
            .nth(1)
            .unwrap_or_else(|| panic!("unexpected first line {first:?}"))
            .trim()
            .to_owned();
        let host = Host { child, base };
        host.wait_readyz(200).await;
        host
    }

    pub async fn wait_readyz(&self, want: u16) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let status = http()
                .get(format!("{}/readyz", self.base))
                .send()
                .await
                .map(|response| response.status().as_u16());
            if status.as_ref().ok() == Some(&want) {
                return;
            }
            assert!(Instant::now() < deadline, "/readyz never answered {want}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `ws://127.0.0.1:PORT`
    pub fn ws_base(&self) -> String {
        self.base.replacen("http", "ws", 1)
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The edge, served by the harness with the variables a Spin user would
/// set for this deployment (plus `extra`).
pub async fn start_edge(
    redis: &RedisServer,
    host: &Host,
    prefix: &str,
    extra: &[(&str, &str)],
) -> Edge {
    start_edge_app(edge_app(), redis, host, prefix, extra).await
}

/// As [`start_edge`], serving `app` (a composition of other plugins).
pub async fn start_edge_app(
    app: &EdgeApp,
    redis: &RedisServer,
    host: &Host,
    prefix: &str,
    extra: &[(&str, &str)],
) -> Edge {
    let mut variables: HashMap<String, String> = [
        ("apps", APPS.to_owned()),
        ("public_url", host.base.clone()),
        ("redis_host", format!("127.0.0.1:{}", redis.port)),
        ("store_prefix", prefix.to_owned()),
    ]
    .into_iter()
    .map(|(name, value)| (name.to_owned(), value))
    .collect();
    for (name, value) in extra {
        variables.insert((*name).to_owned(), (*value).to_owned());
    }
    Edge::start(
        app,
        &manifest(),
        EDGE_COMPONENT,
        &variables,
        "127.0.0.1:0".parse().expect("address"),
    )
    .await
    .expect("serve the edge")
}

pub fn http() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .timeout(PATIENCE)
        .build()
        .expect("http client")
}

/// An answer: status, `WWW-Authenticate`, and the body as JSON (`Null`
/// when empty or not JSON).
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    pub status: u16,
    pub www_authenticate: Option<String>,
    pub body: Value,
}

/// Send `method path` to `base`, with Basic credentials (or a raw
/// `Authorization` value) and a raw body.
pub async fn send(
    base: &str,
    method: &str,
    path: &str,
    authorization: Option<&str>,
    body: Vec<u8>,
) -> Answer {
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
    let mut request = http().request(method, format!("{base}{path}")).body(body);
    if let Some(authorization) = authorization {
        request = request.header("authorization", authorization);
    }
    let response = request.send().await.expect("request");
    let status = response.status().as_u16();
    let www_authenticate = response
        .headers()
        .get("www-authenticate")
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    let bytes = response.bytes().await.expect("body");
    Answer {
        status,
        www_authenticate,
        body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    }
}

/// `Basic base64(key:secret)`.
pub fn basic((key, secret): (&str, &str)) -> String {
    use base64::Engine as _;
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{key}:{secret}"));
    format!("Basic {encoded}")
}

/// `POST` JSON with app credentials.
pub async fn post(base: &str, path: &str, credentials: (&str, &str), body: &Value) -> Answer {
    send(
        base,
        "POST",
        path,
        Some(&basic(credentials)),
        body.to_string().into_bytes(),
    )
    .await
}

/// An issued token as a client holds it.
#[derive(Debug, Clone)]
pub struct Token {
    pub access_id: String,
    pub secret_seed: String,
    pub ws_url: String,
}

impl Token {
    pub fn from_answer(answer: &Answer) -> Token {
        assert_eq!(answer.status, 201, "token refused: {:?}", answer.body);
        let field = |name: &str| {
            answer.body[name]
                .as_str()
                .unwrap_or_else(|| panic!("{name} in {}", answer.body))
                .to_owned()
        };
        Token {
            access_id: field("access_id"),
            secret_seed: field("secret_seed"),
            ws_url: field("ws_url"),
        }
    }

    /// The RFC 6238 code (SHA1, 6 digits, 30 s) `steps` steps from now.
    pub fn code(&self, steps: i64) -> String {
        self.code_with(Algorithm::SHA1, 6, 30, steps)
    }

    /// The code with other parameters (a plugin's `otp` answer).
    pub fn code_with(
        &self,
        algorithm: Algorithm,
        digits: usize,
        period: u64,
        steps: i64,
    ) -> String {
        let secret = Secret::Encoded(self.secret_seed.clone())
            .to_bytes()
            .expect("base32 seed");
        let totp = TOTP::new_unchecked(algorithm, digits, 0, period, secret);
        let time = unix_now() as i64 + steps * period as i64;
        totp.generate(time as u64)
    }

    /// The connection URL with `otp` (and a raw extra query).
    pub fn url(&self, otp: &str, extra: &str) -> String {
        format!(
            "{}&access_id={}&otp={otp}{extra}",
            self.ws_url, self.access_id
        )
    }
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

/// Sleep, if needed, so at least `margin` seconds remain in the current
/// 30 s step: codes computed now mean the same step to the host.
pub async fn away_from_step_edge(margin: u64) {
    let into_step = unix_now() % 30;
    if into_step + margin >= 30 {
        tokio::time::sleep(Duration::from_secs(30 - into_step + 1)).await;
    }
}

/// What a connection attempt led to: the socket and its welcome, or the
/// close code and the error frame before it.
pub enum Connected {
    Welcome(Box<Socket>, Value),
    Refused(u16, Value),
}

impl Connected {
    pub fn welcomed(self) -> (Socket, Value) {
        match self {
            Connected::Welcome(socket, welcome) => (*socket, welcome),
            Connected::Refused(code, error) => panic!("refused with {code}: {error}"),
        }
    }

    pub fn refused(self) -> (u16, Value) {
        match self {
            Connected::Refused(code, error) => (code, error),
            Connected::Welcome(_, welcome) => panic!("unexpectedly welcomed: {welcome}"),
        }
    }
}

pub async fn connect(url: &str) -> Connected {
    let (mut socket, _) = tokio::time::timeout(PATIENCE, connect_async(url))
        .await
        .expect("connect timed out")
        .expect("WebSocket upgrade");
    let first = next_json(&mut socket).await.expect("a first frame");
    if first["type"] == "welcome" {
        return Connected::Welcome(Box::new(socket), first);
    }
    assert_eq!(first["type"], "error", "unexpected first frame {first}");
    let code = close_code(&mut socket).await.expect("a close code");
    Connected::Refused(code, first)
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

/// Read until the close frame, skipping everything else; its code.
pub async fn close_code(socket: &mut Socket) -> Option<u16> {
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

pub async fn send_json(socket: &mut Socket, frame: Value) {
    socket
        .send(Message::Text(frame.to_string().into()))
        .await
        .expect("send frame");
}

/// Every `message` frame up to and including the one with event
/// `sentinel`.
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

/// `tests/pusher-compat`, with the official `pusher` npm library installed
/// from its lock file (`npm ci`) if it is not yet.
fn pusher_library() -> &'static Path {
    static INSTALLED: OnceLock<PathBuf> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        let dir = workspace().join("tests/pusher-compat");
        if !dir.join("node_modules/pusher").exists() {
            let status = Command::new("npm")
                .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
                .current_dir(&dir)
                .status()
                .expect("npm is missing: scripts/test installs Node.js and npm");
            assert!(status.success(), "npm ci in tests/pusher-compat failed");
        }
        dir
    })
}

/// One call of the official Pusher Node library (`tests/pusher-compat/
/// drive.mjs`) against `base` for the Pusher app, signing with `secret`
/// on a clock moved by `clock_skew_secs`: `{"status": .., "body": ..}`.
/// Asynchronous: the edge answers from this test's runtime.
pub async fn pusher_call(
    base: &str,
    secret: &str,
    clock_skew_secs: i64,
    call: &str,
    args: Value,
) -> Value {
    let port = base.rsplit(':').next().expect("port");
    let request = json!({
        "port": port,
        "appId": PUSHER_APP_ID,
        "key": PUSHER.0,
        "secret": secret,
        "clockSkewSecs": clock_skew_secs,
        "call": call,
        "args": args,
    });
    let output = tokio::process::Command::new("node")
        .arg("drive.mjs")
        .arg(request.to_string())
        .current_dir(pusher_library())
        .output()
        .await
        .expect("node is missing: scripts/test installs Node.js");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("one JSON line")
}

/// The auth parameters of a Pusher API request for the Pusher app, as its
/// libraries send them (`body_md5` only with a body).
pub fn pusher_params(body: &[u8], timestamp: u64) -> Vec<(String, String)> {
    let mut params = vec![
        ("auth_key".to_owned(), PUSHER.0.to_owned()),
        ("auth_timestamp".to_owned(), timestamp.to_string()),
        ("auth_version".to_owned(), "1.0".to_owned()),
    ];
    if !body.is_empty() {
        params.push(("body_md5".to_owned(), hex(&Md5::digest(body))));
    }
    params
}

/// `path?query` with `params` and their `auth_signature` by `secret`,
/// computed from Pusher's definition: HMAC-SHA256 of
/// `METHOD\nPATH\nQUERY`, QUERY the sorted `key=value` pairs.
pub fn pusher_signed(
    method: &str,
    path: &str,
    params: &[(String, String)],
    secret: &str,
) -> String {
    let mut params = params.to_vec();
    params.sort();
    let query: Vec<String> = params
        .iter()
        .map(|(key, value)| format!("{key}={value}"))
        .collect();
    let query = query.join("&");
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(format!("{method}\n{path}\n{query}").as_bytes());
    let signature = hex(&mac.finalize().into_bytes());
    format!("{path}?{query}&auth_signature={signature}")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}
