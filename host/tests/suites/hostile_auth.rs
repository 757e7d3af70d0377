//! A hostile client against the auth promise: parallel code guessing on one
//! and two nodes, a store filled to its cap, app-secret guessing, a hung
//! Redis, resume positions no node has issued, over-long user ids, invalid
//! UTF-8, and Redis' own words in answers. Each test also checks what an
//! honest client still gets.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr};
use std::process::Command;
use std::time::Duration;

use crate::common::*;
use futures_util::SinkExt;
use futures_util::future::join_all;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};

/// The harness's two apps, and an operator token for `/metrics`.
fn config() -> String {
    format!("operator_token = \"{OPERATOR_TOKEN}\"\n{TWO_APPS}")
}

const OPERATOR_TOKEN: &str = "operator-token-for-tests";

/// The built-in auth component's defaults (docs/protocol.md).
const MAX_FAILURES: usize = 5;
const LOCKOUT_SECS: u64 = 300;

/// What a burst of connection attempts got.
#[derive(Debug, Default)]
struct Burst {
    /// Codes that were compared: answered `otp_invalid` or welcomed.
    wrong: usize,
    welcomed: usize,
    /// Refused with 4100 without being compared.
    rate_limited: usize,
    /// Refused with 1011 `unavailable`: a node that, under this load on a
    /// shared machine, lost its Redis heartbeat refuses new sockets before
    /// checking their codes (fail closed).
    unavailable: usize,
    other: Vec<u16>,
}

/// One burst at a time: three at once on two shared cores would measure the
/// machine, not the lockout.
static ONE_BURST_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Whether a burst carries the token's right code after its wrong ones.
#[derive(Clone, Copy, PartialEq)]
enum RightCode {
    Sent,
    /// Only wrong codes: the code compared last within the allowance is
    /// wrong, so it sets the lock (with the right code in the burst, the
    /// right code may take that last place and no lock is needed).
    Withheld,
}

/// Fire `attempts` wrong codes and maybe the right one for one token, all
/// in flight together, spread over `servers`.
async fn guessing_burst(
    servers: &[&TestServer],
    token: &Token,
    attempts: usize,
    right_code: RightCode,
) -> Burst {
    let _alone = ONE_BURST_AT_A_TIME.lock().await;
    away_from_step_edge(30, 12).await;
    let valid: Vec<String> = (-1..=1).map(|step| token.code(step)).collect();
    let mut codes: Vec<String> = (0..)
        .map(|n: u32| format!("{:06}", n * 7 + 13))
        .filter(|code| !valid.contains(code))
        .take(attempts)
        .collect();
    if right_code == RightCode::Sent {
        codes.push(token.code(0));
    }
    let attempts = codes.iter().enumerate().map(|(i, code)| {
        let server = servers[i % servers.len()];
        let url = format!(
            "{}&access_id={}&otp={code}",
            server.ws_url("app=alpha"),
            token.access_id
        );
        async move { connect(&url).await }
    });
    let mut burst = Burst::default();
    for outcome in join_all(attempts).await {
        match outcome {
            Connected::Welcome { .. } => burst.welcomed += 1,
            Connected::Refused { code: 4002, .. } => burst.wrong += 1,
            Connected::Refused { code: 4100, .. } => burst.rate_limited += 1,
            Connected::Refused { code: 1011, error } if error["reason"] == "unavailable" => {
                burst.unavailable += 1
            }
            Connected::Refused { code, .. } => burst.other.push(code),
        }
    }
    burst
}

/// The seconds a 4100 refusal asks the client to wait.
fn retry_after(error: &Value) -> u64 {
    let message = error["message"].as_str().unwrap_or_default();
    message
        .split_whitespace()
        .find_map(|word| word.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("no retry time in {error}"))
}

/// After a burst: the access id is locked for one lockout (not escalated
/// per guess), and the right code is refused while it lasts.
async fn assert_locked_once(token: &Token) {
    let (code, error) = connect(&token.url_with(&token.code(1))).await.refused();
    assert_eq!(code, 4100, "{error}");
    let seconds = retry_after(&error);
    assert!(
        (1..=LOCKOUT_SECS).contains(&seconds),
        "one burst must lock for at most one lockout ({LOCKOUT_SECS} s), got {seconds} s"
    );
}

fn assert_burst_held(burst: &Burst, attempts: usize) {
    eprintln!("burst of {attempts} connection attempts: {burst:?}");
    assert!(burst.other.is_empty(), "unexpected refusals: {burst:?}");
    assert!(
        burst.wrong + burst.welcomed <= MAX_FAILURES,
        "at most {MAX_FAILURES} codes may be compared, got {burst:?}"
    );
    assert!(
        burst.wrong >= 1,
        "some codes must have been compared: {burst:?}"
    );
    assert_eq!(
        burst.wrong + burst.welcomed + burst.rate_limited + burst.unavailable,
        attempts
    );
}

#[tokio::test]
async fn parallel_guessing_compares_at_most_max_failures_codes_in_memory() {
    let server = TestServer::start(&config());
    let token = server.token(ALPHA, empty()).await;
    let burst = guessing_burst(&[&server], &token, 250, RightCode::Sent).await;
    assert_burst_held(&burst, 251);
    assert_locked_once(&token).await;

    // Another token of the same app is not affected.
    let bystander = server.token(ALPHA, empty()).await;
    connect(&bystander.url_with(&bystander.code(0)))
        .await
        .welcomed();
}

#[tokio::test]
async fn parallel_guessing_compares_at_most_max_failures_codes_on_redis() {
    let redis = RedisServer::start();
    let store = redis.url();
    let node = TestServer::start_with(&config(), &["--store", &store]);
    let token = node.token(ALPHA, empty()).await;
    let burst = guessing_burst(&[&node], &token, 250, RightCode::Withheld).await;
    assert_burst_held(&burst, 250);
    assert_eq!(burst.wrong, MAX_FAILURES, "{burst:?}");
    assert_locked_once(&token).await;
    // The lock is one record in Redis, set once for the burst.
    let lock_key = format!("madx:app/alpha/auth/lock:{}", token.access_id);
    let locks_key = format!("madx:app/alpha/auth/locks:{}", token.access_id);
    let ttl_ms: u64 = redis_command(redis.port, &["PTTL", &lock_key])
        .parse()
        .expect("PTTL");
    assert!(ttl_ms <= LOCKOUT_SECS * 1000, "lock of {ttl_ms} ms");
    assert_eq!(redis_command(redis.port, &["GET", &locks_key]), "1");
}

#[tokio::test]
async fn parallel_guessing_spread_over_two_nodes_compares_at_most_max_failures_codes() {
    let redis = RedisServer::start();
    let store = redis.url();
    let first = TestServer::start_with(&config(), &["--store", &store]);
    let second = TestServer::start_with(&config(), &["--store", &store]);
    let token = first.token(ALPHA, empty()).await;
    let burst = guessing_burst(&[&first, &second], &token, 250, RightCode::Sent).await;
    assert_burst_held(&burst, 251);
    assert_locked_once(&token).await;
}

#[tokio::test]
async fn a_full_token_store_still_connects_every_valid_token() {
    let config = format!(
        "{}\n[limits]\nmax_store_entries = 20\nstore_reserved_entries = 100\n",
        config()
    );
    let server = TestServer::start(&config);
    let mut tokens = Vec::new();
    loop {
        let (status, body) = server.post_token(ALPHA, empty()).await;
        if status != 201 {
            assert_eq!(status, 503, "{body}");
            assert_eq!(body["error"]["code"], "store_full", "{body}");
            break;
        }
        tokens.push(Token::from_response(&body));
        assert!(tokens.len() <= 20, "the store took more than its cap");
    }
    assert_eq!(tokens.len(), 20);
    let response = http().get(server.url("/readyz")).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 503);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "store_full");

    // Every token still connects: its one-time guard has its own room.
    away_from_step_edge(30, 5).await;
    let mut sockets = Vec::new();
    for token in &tokens {
        sockets.push(connect(&token.url_with(&token.code(0))).await.welcomed());
    }
    // A spent code stays spent while full.
    let (code, _) = connect(&tokens[0].url_with(&tokens[0].code(0)))
        .await
        .refused();
    assert_eq!(code, 4003);
    // And they receive.
    publish(
        &server,
        ALPHA,
        json!({"access_id": tokens[3].access_id, "event": "e", "data": 1}),
    )
    .await;
    let (socket, _) = &mut sockets[3];
    assert_eq!(next_json(socket).await.unwrap()["event"], "e");
}

/// A 429 for guessed secrets says when to come back: within the 60 s
/// failure window.
fn assert_retry_after_within_the_window(response: &reqwest::Response) {
    let retry: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry), "Retry-After {retry}");
}

/// `POST /v1/tokens` from a given loopback source address.
async fn token_request_from(
    server: &TestServer,
    source: Ipv4Addr,
    (key, secret): (&str, &str),
) -> reqwest::Response {
    http_from(IpAddr::V4(source))
        .post(server.url("/v1/tokens"))
        .basic_auth(key, Some(secret))
        .send()
        .await
        .expect("POST /v1/tokens")
}

#[tokio::test]
async fn guessed_app_secrets_are_throttled_per_key_and_source() {
    let config = format!("{}\n[limits]\nmax_credential_failures = 5\n", config());
    let server = TestServer::start(&config);
    let guesser = Ipv4Addr::new(127, 0, 0, 1);
    let back_end = Ipv4Addr::new(127, 0, 0, 2);
    let wrong = ("alpha-key", "guess");
    for _ in 0..5 {
        let status = token_request_from(&server, guesser, wrong).await.status();
        assert_eq!(status.as_u16(), 401);
    }
    // Throttled: even the right secret, from the guessing source, for this key.
    for credentials in [wrong, ALPHA] {
        let response = token_request_from(&server, guesser, credentials).await;
        assert_eq!(response.status().as_u16(), 429);
        assert_retry_after_within_the_window(&response);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], "rate_limited");
    }
    // The real back-end, elsewhere, is not locked out; other keys neither.
    let status = token_request_from(&server, back_end, ALPHA).await.status();
    assert_eq!(status.as_u16(), 201);
    let status = token_request_from(&server, guesser, BETA).await.status();
    assert_eq!(status.as_u16(), 201);

    let metrics = server.metrics(OPERATOR_TOKEN).await;
    assert!(
        metrics.contains("madx_credential_refusals_total{outcome=\"wrong\"} 5"),
        "{metrics}"
    );
    assert!(
        metrics.contains("madx_credential_refusals_total{outcome=\"throttled\"} 2"),
        "{metrics}"
    );
}

/// `GET /apps/alpha/channels` of the Pusher HTTP API from a given loopback
/// source, signed with `secret` as Pusher's libraries sign it.
async fn pusher_channels_from(
    server: &TestServer,
    source: Ipv4Addr,
    secret: &str,
) -> reqwest::Response {
    let path = "/apps/alpha/channels";
    let params = format!(
        "auth_key=alpha-key&auth_timestamp={}&auth_version=1.0",
        unix_now()
    );
    let signature = hmac_sha256_hex(secret, format!("GET\n{path}\n{params}").as_bytes());
    http_from(IpAddr::V4(source))
        .get(server.url(&format!("{path}?{params}&auth_signature={signature}")))
        .send()
        .await
        .expect("GET /apps/alpha/channels")
}

/// A Pusher signature proves the app's secret as HTTP Basic does, so
/// guessing it is throttled the same way, in the same count.
#[tokio::test]
async fn guessed_secrets_in_pusher_signatures_are_throttled_too() {
    let config = format!("{}\n[limits]\nmax_credential_failures = 5\n", config());
    let server = TestServer::start(&config);
    let guesser = Ipv4Addr::new(127, 0, 0, 1);
    let back_end = Ipv4Addr::new(127, 0, 0, 2);
    for _ in 0..4 {
        let response = pusher_channels_from(&server, guesser, "guess").await;
        assert_eq!(response.status().as_u16(), 401);
    }
    // One count with HTTP Basic: the fifth wrong secret throttles.
    let status = token_request_from(&server, guesser, ("alpha-key", "guess"))
        .await
        .status();
    assert_eq!(status.as_u16(), 401);
    // Refused before the HMAC, even signed with the right secret.
    let response = pusher_channels_from(&server, guesser, ALPHA.1).await;
    assert_eq!(response.status().as_u16(), 429);
    assert_retry_after_within_the_window(&response);
    // The real back-end, elsewhere, is not locked out.
    let response = pusher_channels_from(&server, back_end, ALPHA.1).await;
    assert_eq!(response.status().as_u16(), 200);

    let metrics = server.metrics(OPERATOR_TOKEN).await;
    assert!(
        metrics.contains("madx_credential_refusals_total{outcome=\"wrong\"} 5"),
        "{metrics}"
    );
    assert!(
        metrics.contains("madx_credential_refusals_total{outcome=\"throttled\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn keys_that_name_no_app_are_counted_as_one_per_source_and_logged_short() {
    let config = format!("{}\n[limits]\nmax_credential_failures = 5\n", config());
    let server = TestServer::start_logging(&config, &[], "info");
    let guesser = Ipv4Addr::new(127, 0, 0, 1);
    // Long keys, each different: the server neither keeps nor logs them
    // whole, and their failures add up as one key's.
    let key = |n: usize| format!("{n}{}", "k".repeat(20_000));
    for n in 0..5 {
        let status = token_request_from(&server, guesser, (&key(n), "guess"))
            .await
            .status();
        assert_eq!(status.as_u16(), 401);
    }
    let response = token_request_from(&server, guesser, (&key(5), "guess")).await;
    assert_eq!(response.status().as_u16(), 429);
    // A configured key is counted on its own: the right secret still works
    // from the same source, and so does every unknown key from elsewhere.
    let status = token_request_from(&server, guesser, ALPHA).await.status();
    assert_eq!(status.as_u16(), 201);
    let elsewhere = Ipv4Addr::new(127, 0, 0, 2);
    let status = token_request_from(&server, elsewhere, (&key(6), "guess"))
        .await
        .status();
    assert_eq!(status.as_u16(), 401);

    let log = server.log();
    assert!(log.contains("wrong app credentials"), "{log}");
    assert!(!log.contains(&"k".repeat(100)), "a whole key was logged");
}

/// Send one command to Redis on `port`; the reply's first line, without
/// its type marker.
fn redis_command(port: u16, args: &[&str]) -> String {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect to redis");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut request = format!("*{}\r\n", args.len());
    for arg in args {
        request.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
    }
    stream.write_all(request.as_bytes()).unwrap();
    let mut reply = Vec::new();
    let mut byte = [0u8; 1];
    // Bulk strings: skip the length line, read the value line.
    loop {
        stream.read_exact(&mut byte).unwrap();
        reply.push(byte[0]);
        if reply.ends_with(b"\r\n") {
            let line = String::from_utf8_lossy(&reply[..reply.len() - 2]).into_owned();
            if let Some(length) = line.strip_prefix('$') {
                if length == "-1" {
                    return String::new();
                }
                reply.clear();
                continue;
            }
            return line.trim_start_matches([':', '+']).to_owned();
        }
    }
}

fn signal(pid: u32, signal: &str) {
    let status = Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
}

/// Redis internals that must never reach a client.
fn assert_no_internals(text: &str) {
    let lower = text.to_lowercase();
    for word in ["redis", "script", "oom", "timed out", "noscript", "lua"] {
        assert!(!lower.contains(word), "{word:?} leaked to a client: {text}");
    }
}

#[tokio::test]
async fn a_hung_redis_is_reported_as_the_store_and_without_its_words() {
    let redis = RedisServer::start();
    let store = redis.url();
    let node = TestServer::start_with(&config(), &["--store", &store]);
    let token = node.token(ALPHA, empty()).await;
    let redis_pid = redis_pid(redis.port);

    signal(redis_pid, "-STOP");
    let (status, body) = node.post_token(ALPHA, empty()).await;
    let (code, error) = connect(&token.url_with(&token.code(0))).await.refused();
    signal(redis_pid, "-CONT");

    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "store_unavailable", "{body}");
    assert_no_internals(&body.to_string());
    assert_eq!(code, 1011, "{error}");
    assert_eq!(error["reason"], "unavailable", "{error}");
    assert_no_internals(&error.to_string());

    // Back: the same code was not spent by the refused attempt.
    node.wait_readyz(200).await;
    away_from_step_edge(30, 3).await;
    connect(&token.url_with(&token.code(0))).await.welcomed();

    // A Redis out of memory: a stable code and a short message.
    redis_command(redis.port, &["CONFIG", "SET", "maxmemory", "1"]);
    let response = post_json(
        &node,
        "/v1/publish",
        ALPHA,
        &json!({"channel": "c", "event": "e", "data": 1}),
    )
    .await;
    redis_command(redis.port, &["CONFIG", "SET", "maxmemory", "0"]);
    assert_eq!(response.0, 503, "{}", response.1);
    assert_eq!(response.1["error"]["code"], "store_unavailable");
    assert_no_internals(&response.1.to_string());
}

/// The pid of the redis-server listening on `port`.
fn redis_pid(port: u16) -> u32 {
    let output = Command::new("redis-cli")
        .args(["-p", &port.to_string(), "INFO", "server"])
        .output()
        .expect("redis-cli");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .find_map(|line| line.strip_prefix("process_id:"))
        .and_then(|pid| pid.trim().parse().ok())
        .expect("process_id in INFO")
}

async fn resume_positions_no_node_issued_are_refused(server: &TestServer) {
    let token = server.token(ALPHA, json!({"channels": ["news"]})).await;
    away_from_step_edge(30, 5).await;
    let code = token.code(0);
    for last_id in ["18446744073709551615", "99999999999999999", "abc", "-1"] {
        let url = format!("{}&last_id={last_id}", token.url_with(&code));
        let (close, error) = connect(&url).await.refused();
        assert_eq!(close, 4005, "{last_id}: {error}");
        assert_eq!(error["reason"], "invalid_last_id", "{last_id}");
        assert_no_internals(&error.to_string());
    }
    // Refused before the code was checked: it still opens a socket.
    let (mut socket, welcome) = connect(&token.url_with(&code)).await.welcomed();
    let position = welcome["last_id"].as_str().unwrap().to_owned();
    // `since` alike, and the socket stays open.
    send_json(
        &mut socket,
        json!({"type": "subscribe", "channel": "news", "since": "18446744073709551615"}),
    )
    .await;
    let error = next_json(&mut socket).await.unwrap();
    assert_eq!(error["code"], 4302, "{error}");
    assert_eq!(error["channel"], "news");
    send_json(
        &mut socket,
        json!({"type": "subscribe", "channel": "news", "since": position}),
    )
    .await;
    let subscribed = next_json(&mut socket).await.unwrap();
    assert_eq!(subscribed["type"], "subscribed", "{subscribed}");
}

#[tokio::test]
async fn resume_positions_no_node_issued_are_refused_in_memory() {
    let server = TestServer::start(&config());
    resume_positions_no_node_issued_are_refused(&server).await;
}

#[tokio::test]
async fn resume_positions_no_node_issued_are_refused_on_redis() {
    let redis = RedisServer::start();
    let store = redis.url();
    let server = TestServer::start_with(&config(), &["--store", &store]);
    resume_positions_no_node_issued_are_refused(&server).await;
}

#[tokio::test]
async fn every_user_a_token_is_issued_for_can_be_published_to() {
    let server = TestServer::start(&config());
    let longest = "u".repeat(200);
    let token = server.token(ALPHA, json!({"user_id": longest})).await;
    let (mut socket, _) = connect(&token.url_with(&token.code(0))).await.welcomed();
    publish(
        &server,
        ALPHA,
        json!({"user_id": longest, "event": "hi", "data": 1}),
    )
    .await;
    assert_eq!(next_json(&mut socket).await.unwrap()["event"], "hi");

    // One byte more is refused alike by both.
    let too_long = "u".repeat(201);
    let (status, body) = server.post_token(ALPHA, json!({"user_id": too_long})).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("invalid_request"))
    );
    let (status, body) = post_json(
        &server,
        "/v1/publish",
        ALPHA,
        &json!({"user_id": too_long, "event": "hi", "data": 1}),
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("invalid_request"))
    );
}

#[tokio::test]
async fn invalid_utf8_closes_with_1007_and_a_reason() {
    let server = TestServer::start(&config());
    let token = server.token(ALPHA, empty()).await;
    let (mut socket, _) = connect(&token.url_with(&token.code(0))).await.welcomed();
    let frame = Frame::message(vec![b'{', 0xff, 0xfe, b'}'], OpCode::Data(Data::Text), true);
    socket.send(Message::Frame(frame)).await.unwrap();
    let error = next_json(&mut socket).await.expect("an error frame");
    assert_eq!(error["code"], 1007, "{error}");
    assert_eq!(error["reason"], "invalid_utf8");
    assert_eq!(closed_with(&mut socket).await, 1007);

    // The server goes on.
    let other = server.token(ALPHA, empty()).await;
    connect(&other.url_with(&other.code(0))).await.welcomed();
}
