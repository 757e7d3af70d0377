//! The Pusher HTTP API, driven by the official Pusher Node library
//! (`pusher` from the npm registry, unmodified, in tests/pusher-compat/) as
//! an existing back-end would drive it; the sockets are real madx sockets.

use std::path::Path;
use std::process::Command;

use crate::common::*;
use serde_json::{Value, json};

/// Pusher's libraries only take app ids made of digits.
const PUSHER_APP: &str = r#"
[[apps]]
id = "424242"
key = "pusher-key"
secret = "pusher-secret"
"#;
const CREDENTIALS: (&str, &str) = ("pusher-key", "pusher-secret");

/// Install the library once (`npm ci`, from the lock file).
fn library_dir() -> &'static Path {
    static INSTALLED: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    let dir = Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/pusher-compat"
    ));
    INSTALLED.get_or_init(|| {
        if !dir.join("node_modules/pusher").exists() {
            let status = Command::new("npm")
                .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
                .current_dir(dir)
                .status()
                .expect("npm is missing: scripts/test installs Node.js and npm");
            assert!(status.success(), "npm ci in tests/pusher-compat failed");
        }
    });
    dir
}

/// One call of the Pusher library against `server`; `secret` and
/// `clock_skew_secs` let a test sign wrongly.
fn call_with(
    server: &TestServer,
    secret: &str,
    clock_skew_secs: i64,
    call: &str,
    args: Value,
) -> Value {
    let port = server.base.rsplit(':').next().expect("port");
    let request = json!({
        "port": port,
        "appId": "424242",
        "key": CREDENTIALS.0,
        "secret": secret,
        "clockSkewSecs": clock_skew_secs,
        "call": call,
        "args": args,
    });
    let output = Command::new("node")
        .arg("drive.mjs")
        .arg(request.to_string())
        .current_dir(library_dir())
        .output()
        .expect("run node");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("one JSON line")
}

fn call(server: &TestServer, call: &str, args: Value) -> Value {
    call_with(server, CREDENTIALS.1, 0, call, args)
}

/// A socket of `user_id` whose token allows `globs`, subscribed to
/// `channels`.
async fn subscribed(
    server: &TestServer,
    user_id: &str,
    globs: &[&str],
    channels: &[&str],
) -> Socket {
    let claims = json!({"user_id": user_id, "channels": globs});
    let (_, mut socket) = open_socket(server, CREDENTIALS, claims).await;
    for channel in channels {
        assert_eq!(subscribe(&mut socket, channel).await["type"], "subscribed");
    }
    socket
}

#[tokio::test]
async fn triggers_from_the_pusher_library_reach_madx_sockets() {
    let server = TestServer::start(PUSHER_APP);
    let mut socket = subscribed(
        &server,
        "alice",
        &["news.*"],
        &["news.sport", "news.weather"],
    )
    .await;

    // One channel; data the library JSON-encodes arrives as that JSON.
    let answer = call(
        &server,
        "trigger",
        json!(["news.sport", "score", {"home": 2}]),
    );
    assert_eq!(answer["status"], 200, "{answer}");
    // Several channels: one message per channel, as Pusher delivers.
    let answer = call(
        &server,
        "trigger",
        json!([["news.sport", "news.weather"], "alert", "plain text"]),
    );
    assert_eq!(answer["status"], 200, "{answer}");
    // A batch, in order.
    let batch = json!([[
        {"channel": "news.weather", "name": "first", "data": "{\"n\":1}"},
        {"channel": "news.sport", "name": "second", "data": "{\"n\":2}"},
    ]]);
    let answer = call(&server, "triggerBatch", batch);
    assert_eq!(answer["status"], 200, "{answer}");
    // Pusher's "send to user" reaches the user's sockets, subscribed or not.
    let answer = call(
        &server,
        "sendToUser",
        json!(["alice", "sentinel", {"done": true}]),
    );
    assert_eq!(answer["status"], 200, "{answer}");

    let received = messages_until(&mut socket, "sentinel").await;
    let seen: Vec<(&str, &str, &Value)> = received
        .iter()
        .map(|message| {
            (
                message["event"].as_str().unwrap_or_default(),
                message["channel"].as_str().unwrap_or_default(),
                &message["data"],
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("score", "news.sport", &json!({"home": 2})),
            ("alert", "news.sport", &json!("plain text")),
            ("alert", "news.weather", &json!("plain text")),
            ("first", "news.weather", &json!({"n": 1})),
            ("second", "news.sport", &json!({"n": 2})),
            ("sentinel", "#user", &json!({"done": true})),
        ]
    );
    // madx ids, strictly increasing, as for POST /v1/publish.
    let ids: Vec<u64> = received
        .iter()
        .map(|message| message["id"].as_str().unwrap().parse().unwrap())
        .collect();
    assert!(ids.windows(2).all(|pair| pair[0] < pair[1]), "{ids:?}");
}

/// A socket as [`subscribed`] opens it, and its connection id (`welcome`'s
/// `connection_id`: the `socket_id` a browser hands its back-end).
async fn subscribed_with_id(server: &TestServer, channels: &[&str]) -> (Socket, String) {
    let claims = json!({"user_id": "alice", "channels": ["news.*"]});
    let token = server.token(CREDENTIALS, claims).await;
    away_from_step_edge(30, 2).await;
    let (mut socket, welcome) = connect(&token.url_with(&token.code(0))).await.welcomed();
    for channel in channels {
        assert_eq!(subscribe(&mut socket, channel).await["type"], "subscribed");
    }
    let connection_id = welcome["connection_id"].as_str().expect("connection_id");
    (socket, connection_id.to_owned())
}

/// Trigger `event` on news.sport, excluding `socket_id`, then a sentinel
/// for everyone; the events each socket got, in order.
async fn trigger_excluding(
    publisher: &TestServer,
    socket_id: &str,
    sockets: [&mut Socket; 2],
) -> [Vec<String>; 2] {
    let params = json!({"socket_id": socket_id});
    let answer = call(
        publisher,
        "trigger",
        json!(["news.sport", "echo", {"n": 1}, params]),
    );
    assert_eq!(answer["status"], 200, "{answer}");
    let batch = json!([[{"channel": "news.sport", "name": "batched", "data": "{}", "socket_id": socket_id}]]);
    let answer = call(publisher, "triggerBatch", batch);
    assert_eq!(answer["status"], 200, "{answer}");
    let answer = call(publisher, "trigger", json!(["news.sport", "sentinel", {}]));
    assert_eq!(answer["status"], 200, "{answer}");
    let mut seen = [Vec::new(), Vec::new()];
    for (socket, seen) in sockets.into_iter().zip(&mut seen) {
        let received = messages_until(socket, "sentinel").await;
        *seen = events(&received).into_iter().map(str::to_owned).collect();
    }
    seen
}

#[tokio::test]
async fn socket_id_keeps_a_trigger_from_its_sender() {
    let server = TestServer::start(PUSHER_APP);
    let (mut sender, sender_id) = subscribed_with_id(&server, &["news.sport"]).await;
    let (mut other, other_id) = subscribed_with_id(&server, &["news.sport"]).await;
    assert_ne!(sender_id, other_id);

    let [sender_saw, other_saw] =
        trigger_excluding(&server, &sender_id, [&mut sender, &mut other]).await;
    assert_eq!(sender_saw, ["sentinel"]);
    assert_eq!(other_saw, ["echo", "batched", "sentinel"]);
}

#[tokio::test]
async fn socket_id_excludes_the_sender_across_nodes() {
    let redis = RedisServer::start();
    let url = redis.url();
    let first = TestServer::start_with(PUSHER_APP, &["--store", &url]);
    let second = TestServer::start_with(PUSHER_APP, &["--store", &url]);
    let (mut sender, sender_id) = subscribed_with_id(&second, &["news.sport"]).await;
    let (mut other, _) = subscribed_with_id(&second, &["news.sport"]).await;

    // Published on the first node, delivered by the second.
    let [sender_saw, other_saw] =
        trigger_excluding(&first, &sender_id, [&mut sender, &mut other]).await;
    assert_eq!(sender_saw, ["sentinel"]);
    assert_eq!(other_saw, ["echo", "batched", "sentinel"]);
}

#[tokio::test]
async fn channel_queries_answer_from_the_sockets_of_one_node() {
    let server = TestServer::start(PUSHER_APP);
    let _socket = subscribed(&server, "alice", &["*"], &["news.sport", "chat.lobby"]).await;

    let answer = call(
        &server,
        "get",
        json!([{"path": "/channels", "params": {"filter_by_prefix": "news."}}]),
    );
    assert_eq!(answer["status"], 200, "{answer}");
    assert_eq!(answer["body"], json!({"channels": {"news.sport": {}}}));

    let answer = call(
        &server,
        "get",
        json!([{"path": "/channels", "params": {"info": "subscription_count"}}]),
    );
    assert_eq!(
        answer["body"]["channels"],
        json!({"chat.lobby": {"subscription_count": 1}, "news.sport": {"subscription_count": 1}})
    );

    let answer = call(
        &server,
        "get",
        json!([{"path": "/channels/news.sport", "params": {"info": "subscription_count"}}]),
    );
    assert_eq!(
        answer["body"],
        json!({"occupied": true, "subscription_count": 1})
    );
    let answer = call(&server, "get", json!([{"path": "/channels/news.empty"}]));
    assert_eq!(answer["body"], json!({"occupied": false}));

    // A trigger's `info` is answered with its channels' attributes.
    let info = json!({"info": "subscription_count"});
    let answer = call(
        &server,
        "trigger",
        json!([["news.sport", "news.empty"], "counted", {}, info]),
    );
    assert_eq!(answer["status"], 200, "{answer}");
    assert_eq!(
        answer["body"],
        json!({"channels": {
            "news.empty": {"subscription_count": 0},
            "news.sport": {"subscription_count": 1},
        }})
    );
    let answer = call(
        &server,
        "triggerBatch",
        json!([[
            {"channel": "chat.lobby", "name": "counted", "data": "{}", "info": "subscription_count"},
            {"channel": "news.sport", "name": "plain", "data": "{}"},
        ]]),
    );
    assert_eq!(answer["status"], 200, "{answer}");
    assert_eq!(
        answer["body"],
        json!({"batch": [{"subscription_count": 1}, {}]})
    );
}

#[tokio::test]
async fn a_trigger_answers_the_user_count_of_presence_channels() {
    let server = TestServer::start(PUSHER_APP);
    let _alice = subscribed(&server, "alice", &["*"], &["presence-room"]).await;
    let _alice_again = subscribed(&server, "alice", &["*"], &["presence-room"]).await;
    let _bob = subscribed(&server, "bob", &["*"], &["presence-room", "news.sport"]).await;

    let info = json!({"info": "user_count,subscription_count"});
    let answer = call(
        &server,
        "trigger",
        json!([["presence-room", "news.sport"], "counted", {}, info]),
    );
    assert_eq!(answer["status"], 200, "{answer}");
    // Three subscriptions, two distinct users; no user count for a
    // channel that is not a presence channel, as with Pusher.
    assert_eq!(
        answer["body"],
        json!({"channels": {
            "news.sport": {"subscription_count": 1},
            "presence-room": {"subscription_count": 3, "user_count": 2},
        }})
    );
    let answer = call(
        &server,
        "triggerBatch",
        json!([[
            {"channel": "presence-room", "name": "counted", "data": "{}", "info": "user_count"},
            {"channel": "presence-empty", "name": "counted", "data": "{}", "info": "user_count"},
        ]]),
    );
    assert_eq!(answer["status"], 200, "{answer}");
    assert_eq!(
        answer["body"],
        json!({"batch": [{"user_count": 2}, {"user_count": 0}]})
    );
}

/// The channel counts `node` reports, once they equal `want` (other
/// nodes' reports reach Redis within about a second).
async fn channels_become(node: &TestServer, want: Value) {
    let query = json!([{"path": "/channels", "params": {"info": "subscription_count"}}]);
    let mut answer = Value::Null;
    for _ in 0..50 {
        answer = call(node, "get", query.clone());
        if answer["body"]["channels"] == want {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    panic!("the channels never became {want}; last answer {answer}");
}

#[tokio::test]
async fn channel_queries_count_every_node_and_forget_a_dead_one() {
    let mut redis = RedisServer::start();
    let url = redis.url();
    let first = TestServer::start_with(PUSHER_APP, &["--store", &url]);
    let mut second = TestServer::start_with(PUSHER_APP, &["--store", &url]);
    let _here = subscribed(&first, "alice", &["*"], &["news.sport", "chat.lobby"]).await;
    let mut there = subscribed(&second, "bob", &["*"], &["news.sport"]).await;
    let _also_there = subscribed(&second, "cy", &["*"], &["news.weather"]).await;

    let everyone = json!({
        "chat.lobby": {"subscription_count": 1},
        "news.sport": {"subscription_count": 2},
        "news.weather": {"subscription_count": 1},
    });
    channels_become(&first, everyone.clone()).await;
    channels_become(&second, everyone).await;
    let answer = call(
        &first,
        "get",
        json!([{"path": "/channels/news.weather", "params": {"info": "subscription_count"}}]),
    );
    assert_eq!(
        answer["body"],
        json!({"occupied": true, "subscription_count": 1})
    );
    let answer = call(
        &second,
        "get",
        json!([{"path": "/channels", "params": {"filter_by_prefix": "news."}}]),
    );
    assert_eq!(
        answer["body"],
        json!({"channels": {"news.sport": {}, "news.weather": {}}})
    );

    // An unsubscribe on one node shows on the other.
    send_json(
        &mut there,
        json!({"type": "unsubscribe", "channel": "news.sport"}),
    )
    .await;
    assert_eq!(next_json(&mut there).await.unwrap()["type"], "unsubscribed");
    channels_become(
        &first,
        json!({
            "chat.lobby": {"subscription_count": 1},
            "news.sport": {"subscription_count": 1},
            "news.weather": {"subscription_count": 1},
        }),
    )
    .await;

    // A node that dies without a word drops out once its report expires.
    second.kill();
    channels_become(
        &first,
        json!({
            "chat.lobby": {"subscription_count": 1},
            "news.sport": {"subscription_count": 1},
        }),
    )
    .await;

    // Without Redis the deployment's counts are unknown: 503, not a guess.
    redis.stop();
    let answer = call(&first, "get", json!([{"path": "/channels"}]));
    assert_eq!(answer["status"], 503, "{answer}");
    // The library hands a refusal's body over as text.
    let body: Value = serde_json::from_str(answer["body"].as_str().unwrap_or_default())
        .expect("a JSON error body");
    assert_eq!(body["error"]["code"], "store_unavailable", "{answer}");
}

#[tokio::test]
async fn terminate_connections_closes_every_socket_of_the_user_with_4009() {
    let server = TestServer::start(PUSHER_APP);
    let claims = json!({"user_id": "alice", "channels": ["news.*"]});
    let (_, mut first) = open_socket(&server, CREDENTIALS, claims.clone()).await;
    let (token, mut second) = open_socket(&server, CREDENTIALS, claims).await;
    let (_, mut bystander) = open_socket(
        &server,
        CREDENTIALS,
        json!({"user_id": "bob", "channels": ["news.*"]}),
    )
    .await;

    let answer = call(&server, "terminateUserConnections", json!(["alice"]));
    assert_eq!(answer["status"], 200, "{answer}");
    assert_eq!(closed_with(&mut first).await, 4009);
    assert_eq!(closed_with(&mut second).await, 4009);
    send_json(&mut bystander, json!({"type": "ping"})).await;
    assert_eq!(next_json(&mut bystander).await.unwrap()["type"], "pong");

    // The token stays valid: a fresh code connects again.
    away_from_step_edge(30, 2).await;
    connect(&token.url_with(&token.code(1))).await.welcomed();
}

#[tokio::test]
async fn badly_signed_requests_are_refused_and_publish_nothing() {
    let config = format!("[limits]\nmax_publish_bytes = 1000\n{PUSHER_APP}");
    let server = TestServer::start(&config);
    let mut socket = subscribed(&server, "alice", &["news.*"], &["news.sport"]).await;

    let args = json!(["news.sport", "forged", {}]);
    let wrong_secret = call_with(&server, "not-the-secret", 0, "trigger", args.clone());
    assert_eq!(wrong_secret["status"], 401, "{wrong_secret}");
    // Outside the ±600 s window, either way.
    for skew in [-700, 700] {
        let stale = call_with(&server, CREDENTIALS.1, skew, "trigger", args.clone());
        assert_eq!(stale["status"], 401, "{skew}: {stale}");
    }
    // Inside it, with the right secret: accepted.
    let answer = call_with(
        &server,
        CREDENTIALS.1,
        -500,
        "trigger",
        json!(["news.sport", "sentinel", {}]),
    );
    assert_eq!(answer["status"], 200, "{answer}");
    let received = messages_until(&mut socket, "sentinel").await;
    assert_eq!(events(&received), ["sentinel"]);

    // Limits apply as for POST /v1/publish: data over the limit is a 413.
    let big = "x".repeat(2_000);
    let answer = call(&server, "trigger", json!(["news.sport", "big", big]));
    assert_eq!(answer["status"], 413, "{answer}");
}

#[tokio::test]
async fn a_trigger_on_one_node_reaches_a_socket_on_another() {
    let redis = RedisServer::start();
    let url = redis.url();
    let first = TestServer::start_with(PUSHER_APP, &["--store", &url]);
    let second = TestServer::start_with(PUSHER_APP, &["--store", &url]);
    let mut socket = subscribed(&second, "alice", &["news.*"], &["news.sport"]).await;

    let answer = call(
        &first,
        "trigger",
        json!(["news.sport", "sentinel", {"n": 1}]),
    );
    assert_eq!(answer["status"], 200, "{answer}");
    let received = messages_until(&mut socket, "sentinel").await;
    assert_eq!(received[0]["data"], json!({"n": 1}));

    // Terminating on the first node closes the socket on the second.
    let answer = call(&first, "terminateUserConnections", json!(["alice"]));
    assert_eq!(answer["status"], 200, "{answer}");
    assert_eq!(closed_with(&mut socket).await, 4009);
}
