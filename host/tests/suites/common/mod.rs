//! The host's integration tests: the shared test support
//! (`madx-test-support`: the real binary on a free loopback port, a real
//! redis-server, tokens, TOTP codes computed with `totp-rs`, WebSocket
//! connects), plus what only these suites need (two apps, publish helpers,
//! the JavaScript and Python router builds).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

pub use madx_test_support::*;
use serde_json::{Value, json};

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

/// Build an example plugin for wasm32-wasip2 and return its path, in the
/// host build script's target directory.
pub fn build_example_plugin(package: &str) -> PathBuf {
    build_component(package)
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

/// Run `serve` on a free port with `args`, which must make it refuse to
/// start: its exit status and stderr.
pub fn refused_start<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> (Option<i32>, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_madx-pusher"))
        .args(["serve", "--listen", "127.0.0.1:0"])
        .args(args)
        .env("MADX_LOG", "warn")
        .output()
        .expect("run madx-pusher");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
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
