//! What the end-to-end tests run for real: the shared test support
//! (`madx-test-support`: a `redis-server` on a free loopback port, the
//! `madx-pusher` binary of this build, tokens and TOTP codes computed with
//! `totp-rs`, WebSocket connects), the edge component that `spin.toml`
//! names, built by its own build command and served by the harness, and the
//! Pusher library calls.

#![allow(dead_code)] // Each test uses a different part.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use hmac::{Hmac, KeyInit, Mac};
use madx_edge_harness::{EDGE_COMPONENT, Edge, EdgeApp, Manifest};
pub use madx_test_support::*;
use md5::{Digest, Md5};
use serde_json::{Value, json};
use sha2::Sha256;

/// The apps of every deployment in these tests, as `MADX_APPS` and the
/// edge's `apps` variable give them.
pub const APPS: &str = "alpha:alpha-key:alpha-secret,beta:beta-key:beta-secret,\
                        424242:pusher-key:pusher-secret";
pub const ALPHA: (&str, &str) = ("alpha-key", "alpha-secret");
pub const BETA: (&str, &str) = ("beta-key", "beta-secret");
/// An app for Pusher's libraries, which only take app ids made of digits.
pub const PUSHER_APP_ID: &str = "424242";
pub const PUSHER: (&str, &str) = ("pusher-key", "pusher-secret");

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

/// Build plugin crates of this workspace for wasm32-wasip2 into the edge's
/// target directory and return their `.wasm` files, in order.
pub fn build_plugins(crates: &[&str]) -> Vec<PathBuf> {
    build_component_set(crates, Path::new("target/edge"))
}

/// The edge composed by `madx-edge-build` (the tool `spin.toml`'s build
/// command runs) with the plugins a hosts' configuration file names,
/// written to `target/edge/<name>.wasm`.
pub fn compose_edge(config: &Path, name: &str) -> EdgeApp {
    let out = workspace().join(format!("target/edge/{name}.wasm"));
    let status = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
        .current_dir(workspace())
        .env_remove("CARGO_TARGET_DIR")
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

/// A host in Redis mode with the tests' apps; killed when dropped.
pub struct Host {
    server: TestServer,
    /// `http://127.0.0.1:PORT`
    pub base: String,
}

impl Host {
    pub async fn start(redis: &RedisServer, prefix: &str) -> Host {
        Host::start_with(redis, prefix, "").await
    }

    /// As [`Host::start`], with more configuration (TOML).
    pub async fn start_with(redis: &RedisServer, prefix: &str, config: &str) -> Host {
        let url = redis.url();
        let args = ["--store", &url, "--store-prefix", prefix, "--app", APPS];
        let server = TestServer::start_with(config, &args);
        server.wait_readyz(200).await;
        Host {
            base: server.base.clone(),
            server,
        }
    }

    pub async fn wait_readyz(&self, want: u16) {
        self.server.wait_readyz(want).await;
    }

    /// `ws://127.0.0.1:PORT`
    pub fn ws_base(&self) -> String {
        self.base.replacen("http", "ws", 1)
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

/// A token from a `POST /v1/tokens` answer that must be 201.
pub fn token_from(answer: &Answer) -> Token {
    assert_eq!(answer.status, 201, "token refused: {:?}", answer.body);
    Token::from_response(&answer.body)
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
