//! The `file:` store: one node that loses nothing acknowledged when it is
//! killed (SIGKILL) and started again on the same directory, and that
//! refuses a directory it must not use.

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
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
    let token = second
        .token(ALPHA, json!({"user_id": "dee", "channels": ["news"]}))
        .await;
    away_from_step_edge(30, 3).await;
    let (mut socket, _) = connect(&token.url_with(&token.code(0))).await.welcomed();
    send_json(
        &mut socket,
        json!({"type": "subscribe", "channel": "news", "since": start}),
    )
    .await;
    let subscribed = next_json(&mut socket).await.unwrap();
    assert_eq!(subscribed["recovered"], true, "{subscribed}");
    publish(
        &second,
        ALPHA,
        json!({"channel": "news", "event": "end", "data": 0}),
    )
    .await;
    let replayed: Vec<u64> = messages_until(&mut socket, "end")
        .await
        .iter()
        .filter(|message| message["event"] == "m")
        .map(id_of)
        .collect();
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

/// Run `serve` on `store` and return its exit status and stderr (it must
/// stop by itself).
fn refused_start(store: &Path) -> (Option<i32>, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_madx-pusher"))
        .args(["serve", "--listen", "127.0.0.1:0", "--store"])
        .arg(format!("file:{}", store.display()))
        .env("MADX_LOG", "warn")
        .output()
        .expect("run madx-pusher");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test]
async fn a_foreign_a_damaged_or_a_busy_directory_is_refused_at_start_up() {
    // Foreign: something else lives there; nothing is written into it.
    let foreign = tempfile::tempdir().unwrap();
    std::fs::write(foreign.path().join("notes.txt"), "mine").unwrap();
    let (status, stderr) = refused_start(foreign.path());
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
    let (status, stderr) = refused_start(dir.path());
    assert_eq!(status, Some(1), "{stderr}");
    assert!(stderr.contains("in use by another process"), "{stderr}");

    // Damaged: the database's own version file is garbage.
    running.kill();
    std::fs::write(dir.path().join("db/version"), b"\x00garbage\xff\xff").unwrap();
    let (status, stderr) = refused_start(dir.path());
    assert_eq!(status, Some(1), "{stderr}");
    assert!(stderr.contains("cannot be opened"), "{stderr}");

    // A marker of another format.
    let other = tempfile::tempdir().unwrap();
    std::fs::write(other.path().join("MADX-PUSHER-STORE"), "format 99\n").unwrap();
    let (status, stderr) = refused_start(other.path());
    assert_eq!(status, Some(1), "{stderr}");
    assert!(
        stderr.contains("not a store of this madx-pusher version"),
        "{stderr}"
    );
}
