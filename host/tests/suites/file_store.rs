//! The `file:` store: one node that loses nothing acknowledged when it is
//! killed (SIGKILL) and started again on the same directory, and that
//! refuses a directory it must not use.

use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::common::*;
use serde_json::{Value, json};

const ONE_APP: &str = r#"
[[apps]]
id = "alpha"
key = "alpha-key"
secret = "alpha-secret"
"#;

/// A node on the store in `dir`, ready.
async fn node(dir: &Path, config: &str) -> TestServer {
    let store = format!("file:{}", dir.display());
    let node = TestServer::start_with(config, &["--store", &store]);
    node.wait_readyz(200).await;
    node
}

/// `token` as a client of `server` would hold it (a restarted node listens
/// on another port).
fn at(server: &TestServer, token: &Token) -> Token {
    Token {
        ws_url: server.ws_url("app=alpha"),
        ..token.clone()
    }
}

fn id_of(message: &Value) -> u64 {
    message["id"].as_str().unwrap().parse().unwrap()
}

/// Publish without insisting: the node may be killed under the request.
async fn try_publish(server_base: &str, body: &Value) -> Option<u64> {
    let response = http()
        .post(format!("{server_base}/v1/publish"))
        .basic_auth(ALPHA.0, Some(ALPHA.1))
        .json(body)
        .send()
        .await
        .ok()?;
    if response.status().as_u16() != 202 {
        return None;
    }
    let answer: Value = response.json().await.ok()?;
    answer["id"].as_str()?.parse().ok()
}

/// A new client of the node at `base` subscribes to `news` from `since`;
/// returns the `subscribed` answer and the ids of the `m` messages replayed,
/// read up to a sentinel published after the subscribe.
async fn replay_news(base: &str, since: &str) -> (Value, Vec<u64>) {
    let response = http()
        .post(format!("{base}/v1/tokens"))
        .basic_auth(ALPHA.0, Some(ALPHA.1))
        .json(&json!({"user_id": "dee", "channels": ["news"]}))
        .send()
        .await
        .expect("POST /v1/tokens");
    assert_eq!(response.status().as_u16(), 201);
    let token = Token::from_response(&response.json().await.expect("token body"));
    away_from_step_edge(30, 3).await;
    let (mut socket, _) = connect(&token.url_with(&token.code(0))).await.welcomed();
    send_json(
        &mut socket,
        json!({"type": "subscribe", "channel": "news", "since": since}),
    )
    .await;
    let subscribed = next_json(&mut socket).await.expect("subscribed");
    let end = json!({"channel": "news", "event": "end", "data": 0});
    assert!(
        try_publish(base, &end).await.is_some(),
        "the sentinel was refused"
    );
    let replayed = messages_until(&mut socket, "end")
        .await
        .iter()
        .filter(|message| message["event"] == "m")
        .map(id_of)
        .collect();
    (subscribed, replayed)
}

#[tokio::test]
async fn a_new_store_is_readable_by_the_nodes_user_only() {
    use std::os::unix::fs::PermissionsExt as _;
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("store");
    let _node = node(&dir, ONE_APP).await;
    let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700, "the store holds token seeds: {mode:o}");
}

#[tokio::test]
async fn a_killed_node_comes_back_with_its_tokens_spent_codes_ids_and_history() {
    let dir = tempfile::tempdir().unwrap();
    let mut first = node(dir.path(), ONE_APP).await;
    let claims = json!({"user_id": "dee", "channels": ["news"]});
    let token = first.token(ALPHA, claims.clone()).await;
    let unused = first.token(ALPHA, claims).await;
    away_from_step_edge(30, 6).await;
    let (mut socket, _) = connect(&token.url_with(&token.code(0))).await.welcomed();
    assert_eq!(subscribe(&mut socket, "news").await["type"], "subscribed");
    let mut sent = Vec::new();
    for n in 0..5 {
        let body = json!({"channel": "news", "event": format!("m{n}"), "data": n});
        sent.push(publish(&first, ALPHA, body).await.parse::<u64>().unwrap());
    }
    let seen = messages_until(&mut socket, "m0").await;
    let resume_from = id_of(&seen[0]);

    first.kill();
    let second = node(dir.path(), ONE_APP).await;
    let token = at(&second, &token);

    // The spent code stays spent; the token connects with a fresh one and
    // recovers every message after its position, in order.
    let (code, error) = connect(&token.url_with(&token.code(0))).await.refused();
    assert_eq!(code, 4003, "{error}");
    let extra = format!("&last_id={resume_from}");
    let (mut socket, welcome) = connect(&token.url(&token.code(1), &extra)).await.welcomed();
    assert_eq!(welcome["recovered"], true, "{welcome}");
    send_json(
        &mut socket,
        json!({"type": "subscribe", "channel": "news", "since": resume_from.to_string()}),
    )
    .await;
    let after = publish(
        &second,
        ALPHA,
        json!({"channel": "news", "event": "end", "data": 0}),
    )
    .await;
    let mut got = Vec::new();
    loop {
        let frame = next_json(&mut socket).await.expect("socket open");
        match frame["type"].as_str() {
            Some("subscribed") => assert_eq!(frame["recovered"], true, "{frame}"),
            Some("message") if frame["event"] == "end" => break,
            Some("message") => got.push(id_of(&frame)),
            _ => panic!("unexpected frame {frame}"),
        }
    }
    assert_eq!(got, sent[1..]);
    // Ids keep increasing across the restart.
    assert!(after.parse::<u64>().unwrap() > sent[4]);

    // A token never used before the kill connects too.
    let unused = at(&second, &unused);
    connect(&unused.url_with(&unused.code(1))).await.welcomed();
}

/// Publishes are sent one after another (each waits for its 202) while the
/// node is killed; after the restart a client that resumes from before the
/// first gets every acknowledged message once, in order.
#[tokio::test]
async fn sigkill_during_a_publish_stream_loses_no_acknowledged_message() {
    let dir = tempfile::tempdir().unwrap();
    let config = format!("{ONE_APP}\n[history]\nper_stream = 100000\n");
    let mut first = node(dir.path(), &config).await;
    let start = publish(
        &first,
        ALPHA,
        json!({"channel": "news", "event": "start", "data": 0}),
    )
    .await;
    let acknowledged = Arc::new(Mutex::new(Vec::new()));
    let base = first.base.clone();
    let stream = {
        let acknowledged = acknowledged.clone();
        tokio::spawn(async move {
            for n in 0..100_000 {
                let body = json!({"channel": "news", "event": "m", "data": n});
                match try_publish(&base, &body).await {
                    Some(id) => acknowledged.lock().unwrap().push(id),
                    None => return,
                }
            }
        })
    };
    while acknowledged.lock().unwrap().len() < 300 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    first.kill();
    stream.await.unwrap();
    let acknowledged = acknowledged.lock().unwrap().clone();
    assert!(acknowledged.len() >= 300);

    let second = node(dir.path(), &config).await;
    let (subscribed, replayed) = replay_news(&second.base, &start).await;
    assert_eq!(subscribed["recovered"], true, "{subscribed}");
    // In order, each once; a message accepted but not yet answered when
    // the node died may be there too, after the acknowledged ones.
    assert!(replayed.windows(2).all(|pair| pair[0] < pair[1]));
    assert_eq!(replayed[..acknowledged.len()], acknowledged[..]);
    assert!(replayed.len() <= acknowledged.len() + 1, "{replayed:?}");
}

/// Tokens are issued and connected in parallel while the node is killed:
/// every token that was answered 201 connects after the restart, and every
/// code that was welcomed stays spent.
#[tokio::test]
async fn sigkill_during_a_connect_storm_keeps_every_issued_token_and_spent_code() {
    let dir = tempfile::tempdir().unwrap();
    let mut first = node(dir.path(), ONE_APP).await;
    away_from_step_edge(30, 10).await;
    let issued: Arc<Mutex<Vec<(Token, bool)>>> = Arc::default();
    let mut clients = Vec::new();
    for _ in 0..8 {
        let (issued, base) = (issued.clone(), first.base.clone());
        clients.push(tokio::spawn(async move {
            for _ in 0..10_000 {
                let Some(token) = try_token(&base).await else {
                    return;
                };
                let welcomed = welcomed(&token.url_with(&token.code(0))).await;
                issued.lock().unwrap().push((token, welcomed));
            }
        }));
    }
    while issued.lock().unwrap().len() < 200 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    first.kill();
    for client in clients {
        client.await.unwrap();
    }
    let issued = issued.lock().unwrap().clone();

    let second = node(dir.path(), ONE_APP).await;
    for (token, _) in &issued {
        let token = at(&second, token);
        connect(&token.url_with(&token.code(1))).await.welcomed();
    }
    let spent: Vec<&Token> = issued
        .iter()
        .filter(|(_, welcomed)| *welcomed)
        .map(|(token, _)| token)
        .collect();
    assert!(!spent.is_empty());
    for token in spent {
        let token = at(&second, token);
        let (code, error) = connect(&token.url_with(&token.code(0))).await.refused();
        assert_eq!(code, 4003, "{error}");
    }
}

/// Was this connection string welcomed (and so its code spent)? `false`
/// also when the node died before answering.
async fn welcomed(url: &str) -> bool {
    use futures_util::StreamExt as _;
    let Ok(Ok((mut socket, _))) = tokio::time::timeout(
        Duration::from_secs(5),
        tokio_tungstenite::connect_async(url),
    )
    .await
    else {
        return false;
    };
    let first = tokio::time::timeout(Duration::from_secs(5), socket.next()).await;
    matches!(first, Ok(Some(Ok(tokio_tungstenite::tungstenite::Message::Text(text))))
        if text.as_str().contains("\"welcome\""))
}

async fn try_token(base: &str) -> Option<Token> {
    let response = http()
        .post(format!("{base}/v1/tokens"))
        .basic_auth(ALPHA.0, Some(ALPHA.1))
        .json(&json!({"user_id": "storm"}))
        .send()
        .await
        .ok()?;
    if response.status().as_u16() != 201 {
        return None;
    }
    Some(Token::from_response(&response.json().await.ok()?))
}

#[tokio::test]
async fn a_token_that_expired_while_the_node_was_down_is_gone_and_a_lockout_stays() {
    let dir = tempfile::tempdir().unwrap();
    let config =
        format!("{ONE_APP}\n[plugins.auth.settings]\nmax_failures = 3\nlockout_secs = 60\n");
    let mut first = node(dir.path(), &config).await;
    let short = first.token(ALPHA, json!({"ttl": 2})).await;
    let long = first.token(ALPHA, empty()).await;
    let locked = first.token(ALPHA, empty()).await;
    away_from_step_edge(30, 8).await;
    let right = locked.code(0);
    let wrong = if right == "000000" {
        "999999"
    } else {
        "000000"
    };
    for _ in 0..3 {
        let (code, _) = connect(&locked.url_with(wrong)).await.refused();
        assert_eq!(code, 4002);
    }
    first.kill();
    tokio::time::sleep(Duration::from_secs(3)).await;

    let second = node(dir.path(), &config).await;
    let short = at(&second, &short);
    let (code, error) = connect(&short.url_with(&short.code(0))).await.refused();
    assert_eq!(code, 4004, "{error}");
    let long = at(&second, &long);
    connect(&long.url_with(&long.code(0))).await.welcomed();
    let locked = at(&second, &locked);
    let (code, error) = connect(&locked.url_with(&right)).await.refused();
    assert_eq!(code, 4100, "{error}");
}

/// Start `serve` on the file store in `dir`; it must refuse.
fn refused_store(dir: &Path) -> (Option<i32>, String) {
    refused_start(&["--store".to_owned(), format!("file:{}", dir.display())])
}

#[tokio::test]
async fn a_foreign_a_damaged_or_a_busy_directory_is_refused_at_start_up() {
    // Foreign: something else lives there; nothing is written into it.
    let foreign = tempfile::tempdir().unwrap();
    std::fs::write(foreign.path().join("notes.txt"), "mine").unwrap();
    let (status, stderr) = refused_store(foreign.path());
    assert_eq!(status, Some(1), "{stderr}");
    assert!(
        stderr.contains("is not empty and is not a madx-pusher store"),
        "{stderr}"
    );
    assert_eq!(std::fs::read_dir(foreign.path()).unwrap().count(), 1);

    // Busy: one node per directory.
    let dir = tempfile::tempdir().unwrap();
    let mut running = node(dir.path(), ONE_APP).await;
    publish(
        &running,
        ALPHA,
        json!({"channel": "news", "event": "e", "data": 1}),
    )
    .await;
    let (status, stderr) = refused_store(dir.path());
    assert_eq!(status, Some(1), "{stderr}");
    assert!(stderr.contains("in use by another process"), "{stderr}");

    // Damaged: the database's own version file is garbage.
    running.kill();
    std::fs::write(dir.path().join("db/version"), b"\x00garbage\xff\xff").unwrap();
    let (status, stderr) = refused_store(dir.path());
    assert_eq!(status, Some(1), "{stderr}");
    assert!(stderr.contains("cannot be opened"), "{stderr}");

    // A marker of another format.
    let other = tempfile::tempdir().unwrap();
    std::fs::write(other.path().join("MADX-PUSHER-STORE"), "format 99\n").unwrap();
    let (status, stderr) = refused_store(other.path());
    assert_eq!(status, Some(1), "{stderr}");
    assert!(
        stderr.contains("not a store of this madx-pusher version"),
        "{stderr}"
    );
}

/// A node whose store is on a small disk of its own: a 16 MiB tmpfs in a
/// mount namespace of the node's own (`unshare`), with `filler_mib` of it
/// taken by a file that [`free_space`] deletes.
struct SmallDisk {
    node: Listening,
    mount: tempfile::TempDir,
    _config: tempfile::TempDir,
}

impl SmallDisk {
    fn start(filler_mib: u32, config: &str) -> SmallDisk {
        let mount = tempfile::tempdir().unwrap();
        let config_dir = tempfile::tempdir().unwrap();
        let config_path = config_dir.path().join("pusher.toml");
        std::fs::write(
            &config_path,
            format!("listen = \"127.0.0.1:0\"\n{ONE_APP}\n{config}"),
        )
        .unwrap();
        let script = "mount -t tmpfs -o size=16m tmpfs \"$1\" && \
                      head -c $(($2 * 1048576)) /dev/zero > \"$1/filler\" && \
                      shift 2 && exec \"$@\"";
        let mut command = Command::new("unshare");
        command.args(["--mount", "--propagation", "private"]);
        if !rustix_is_root() {
            command.arg("--map-root-user");
        }
        command
            .args(["sh", "-c", script, "sh"])
            .arg(mount.path())
            .arg(filler_mib.to_string())
            .arg(pusher_binary())
            .args(["serve", "--config"])
            .arg(&config_path)
            .arg("--store")
            .arg(format!("file:{}/store", mount.path().display()))
            .env("MADX_LOG", "warn");
        SmallDisk {
            node: Listening::start(command),
            mount,
            _config: config_dir,
        }
    }

    /// Delete the filler, from outside the node's mount namespace.
    fn free_space(&self) {
        let filler = format!(
            "/proc/{}/root{}/filler",
            self.node.pid(),
            self.mount.path().display()
        );
        std::fs::remove_file(&filler).unwrap_or_else(|error| panic!("rm {filler}: {error}"));
    }
}

fn rustix_is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|output| output.stdout.starts_with(b"0\n"))
}

/// A publish of `kib` KiB that does not compress: its status and body.
async fn publish_incompressible(base: &str, n: usize, kib: usize) -> (u16, Value) {
    // A cheap generator is enough to defeat LZ4.
    let mut state = 0x9E37_79B9_7F4A_7C15u64 ^ n as u64;
    let pad: String = (0..kib * 1024)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            char::from(b'a' + (state % 26) as u8)
        })
        .collect();
    let body = json!({"channel": "news", "event": "m", "data": {"n": n, "pad": pad}});
    let response = http()
        .post(format!("{base}/v1/publish"))
        .basic_auth(ALPHA.0, Some(ALPHA.1))
        .json(&body)
        .send()
        .await
        .expect("POST /v1/publish");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn status_and_body(request: reqwest::RequestBuilder) -> (u16, Value) {
    let response = request.send().await.expect("request");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Fill the small disk until publishes are refused, check how that is
/// reported, give space back and check the node takes writes again and
/// kept every acknowledged message.
async fn fill_then_free(disk: &SmallDisk, pause: Duration) {
    let base = disk.node.base.clone();
    let mut acknowledged = Vec::new();
    let refusal = loop {
        let (status, body) = publish_incompressible(&base, acknowledged.len(), 8).await;
        match status {
            202 => acknowledged.push(body["id"].as_str().unwrap().parse::<u64>().unwrap()),
            _ => break (status, body),
        }
        assert!(acknowledged.len() < 3000, "the disk never filled");
        tokio::time::sleep(pause).await;
    };
    assert_eq!(refusal.0, 503, "{}", refusal.1);
    assert_eq!(refusal.1["error"]["code"], "store_full", "{}", refusal.1);
    let readyz = status_and_body(http().get(format!("{base}/readyz"))).await;
    assert_eq!(readyz.0, 503, "{}", readyz.1);
    assert_eq!(readyz.1["error"]["code"], "store_full");
    let token = status_and_body(
        http()
            .post(format!("{base}/v1/tokens"))
            .basic_auth(ALPHA.0, Some(ALPHA.1))
            .json(&json!({"user_id": "dee"})),
    )
    .await;
    assert_eq!(token.0, 503, "{}", token.1);
    assert_eq!(token.1["error"]["code"], "store_full");

    disk.free_space();
    let mut waited = 0;
    while status_and_body(http().get(format!("{base}/readyz")))
        .await
        .0
        != 200
    {
        waited += 1;
        assert!(waited < 100, "the node did not take writes again");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, body) = publish_incompressible(&base, acknowledged.len(), 1).await;
    assert_eq!(status, 202, "{body}");
    acknowledged.push(body["id"].as_str().unwrap().parse().unwrap());

    // Nothing acknowledged was lost on the way.
    let since = (acknowledged[0] - 1).to_string();
    let (subscribed, replayed) = replay_news(&base, &since).await;
    assert_eq!(subscribed["recovered"], true, "{subscribed}");
    assert_eq!(replayed, acknowledged);
}

const DEEP_HISTORY: &str = "[history]\nper_stream = 100000\n";

/// Below `min_free_mib` writes are refused before they reach the disk.
#[tokio::test]
async fn below_the_free_space_reserve_writes_are_refused_until_space_returns() {
    let disk = SmallDisk::start(
        10,
        &format!("{DEEP_HISTORY}[file_store]\nmin_free_mib = 4\n"),
    );
    fill_then_free(&disk, Duration::from_millis(20)).await;
}

/// With no reserve the disk really fills (ENOSPC): the failed write is
/// refused, and the store is reopened once space returns.
#[tokio::test]
async fn a_disk_that_really_fills_is_reported_and_the_store_reopens_when_space_returns() {
    let disk = SmallDisk::start(
        12,
        &format!("{DEEP_HISTORY}[file_store]\nmin_free_mib = 0\n"),
    );
    fill_then_free(&disk, Duration::ZERO).await;
}

/// A power loss can leave the journal's last write torn: the node starts,
/// drops the torn tail and keeps everything before it (a power loss loses
/// at most the last writes, never the store).
#[tokio::test]
async fn a_torn_journal_tail_loses_only_the_last_write() {
    let dir = tempfile::tempdir().unwrap();
    let config = format!("{ONE_APP}\n{DEEP_HISTORY}");
    let mut first = node(dir.path(), &config).await;
    let mut acknowledged = Vec::new();
    for n in 0..50 {
        let body = json!({"channel": "news", "event": "m", "data": n});
        acknowledged.push(publish(&first, ALPHA, body).await.parse::<u64>().unwrap());
    }
    first.kill();
    let journal = std::fs::read_dir(dir.path().join("db"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "jnl"))
        .max()
        .expect("a journal file");
    // Cut the journal in the middle of the last message's frame.
    let bytes = std::fs::read(&journal).unwrap();
    let needle = b"\"data\":49}";
    let last = bytes
        .windows(needle.len())
        .rposition(|window| window == needle)
        .expect("the last message in the journal");
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&journal)
        .unwrap();
    file.set_len(last as u64 + 3).unwrap();
    drop(file);

    let second = node(dir.path(), &config).await;
    let since = (acknowledged[0] - 1).to_string();
    let (subscribed, replayed) = replay_news(&second.base, &since).await;
    assert_eq!(subscribed["recovered"], true, "{subscribed}");
    assert_eq!(replayed[..], acknowledged[..acknowledged.len() - 1]);
    // A client that saw the lost message cannot be told it missed nothing.
    let lost = acknowledged[acknowledged.len() - 1].to_string();
    let (subscribed, _) = replay_news(&second.base, &lost).await;
    assert_eq!(subscribed["recovered"], false, "{subscribed}");
}
