//! The Spin edge against real hosts: the component `spin.toml` names (built
//! by its build command), served by the harness, and `madx-pusher` hosts in
//! Redis mode, on one real `redis-server`. Tokens and publishes cross from
//! one to the other; refusals are compared answer for answer.

mod support;

use std::time::Duration;

use redis::AsyncCommands as _;
use serde_json::{Value, json};
use support::*;

#[tokio::test]
async fn a_token_issued_at_the_edge_connects_on_a_host_once() {
    let redis = RedisServer::start();
    let host = Host::start(&redis, "edge-a").await;
    let edge = start_edge(&redis, &host, "edge-a", &[("auth_default_ttl_secs", "900")]).await;

    let answer = post(
        &edge.base(),
        "/v1/tokens",
        ALPHA,
        &json!({"user_id": "ann", "channels": ["news.*"]}),
    )
    .await;
    let token = token_from(&answer);
    assert_eq!(token.ws_url, format!("{}/v1/ws?app=alpha", host.ws_base()));
    assert_eq!(answer.body["expires_in"], 900, "the edge's default ttl");
    assert_eq!(
        answer.body["otp"],
        json!({"algorithm": "SHA1", "digits": 6, "period": 30})
    );

    // Where the hosts' store keeps an auth key, with the idle timeout.
    let key = format!("edge-a:app/alpha/auth/token:{}", token.access_id);
    let ttl_ms: i64 = redis.client().await.pttl(&key).await.unwrap();
    assert!(
        (880_000..=900_000).contains(&ttl_ms),
        "PTTL {key} = {ttl_ms}"
    );

    away_from_step_edge(30, 3).await;
    let code = token.code(0);
    let (mut socket, welcome) = connect(&token.url(&code, "")).await.welcomed();
    assert_eq!(welcome["access_id"], token.access_id.as_str());
    // The claims came through the record: the channel glob allows this.
    send_json(
        &mut socket,
        json!({"type": "subscribe", "channel": "news.eu"}),
    )
    .await;
    assert_eq!(next_json(&mut socket).await.unwrap()["type"], "subscribed");

    let (close, error) = connect(&token.url(&code, "")).await.refused();
    assert_eq!(close, 4003, "{error}");
    assert_eq!(error["reason"], "otp_reused");

    // Another app's credentials never see it.
    let revoke = send(
        &edge.base(),
        "DELETE",
        &format!("/v1/tokens/{}", token.access_id),
        Some(&basic(BETA)),
        Vec::new(),
    )
    .await;
    assert_eq!(revoke.status, 404);
}

#[tokio::test]
async fn a_token_issued_by_a_host_is_revoked_at_the_edge() {
    let redis = RedisServer::start();
    let host = Host::start(&redis, "edge-b").await;
    let edge = start_edge(&redis, &host, "edge-b", &[]).await;

    let token = token_from(&post(&host.base, "/v1/tokens", ALPHA, &json!({"user_id": "cy"})).await);
    away_from_step_edge(30, 3).await;
    let (mut socket, _) = connect(&token.url(&token.code(0), "")).await.welcomed();

    let path = format!("/v1/tokens/{}", token.access_id);
    let revoked = send(
        &edge.base(),
        "DELETE",
        &path,
        Some(&basic(ALPHA)),
        Vec::new(),
    )
    .await;
    assert_eq!(revoked.status, 204, "{:?}", revoked.body);
    // The open socket on the host closes, and the token is gone.
    assert_eq!(close_code_skipping_messages(&mut socket).await, Some(4010));
    let (close, error) = connect(&token.url(&token.code(1), "")).await.refused();
    assert_eq!(close, 4004, "{error}");

    // Revoking it again finds nothing. (A host would still answer 204
    // while one of the token's sockets is closing on it; the edge answers
    // from the store alone.)
    let again = send(
        &edge.base(),
        "DELETE",
        &path,
        Some(&basic(ALPHA)),
        Vec::new(),
    )
    .await;
    assert_eq!(again.status, 404);
    assert_eq!(again.body["error"]["code"], "token_not_found");
}

#[tokio::test]
async fn publishes_at_the_edge_reach_a_socket_on_a_host_in_id_order() {
    let redis = RedisServer::start();
    let host = Host::start(&redis, "edge-c").await;
    let edge = start_edge(&redis, &host, "edge-c", &[]).await;

    let token = token_from(
        &post(
            &host.base,
            "/v1/tokens",
            ALPHA,
            &json!({"user_id": "bob", "channels": ["news"]}),
        )
        .await,
    );
    away_from_step_edge(30, 3).await;
    let (mut socket, welcome) = connect(&token.url(&token.code(0), "")).await.welcomed();
    send_json(&mut socket, json!({"type": "subscribe", "channel": "news"})).await;
    assert_eq!(next_json(&mut socket).await.unwrap()["type"], "subscribed");

    let one = post(
        &edge.base(),
        "/v1/publish",
        ALPHA,
        &json!({"user_id": "bob", "event": "e1", "data": {"n": [1, "x"]}}),
    )
    .await;
    assert_eq!(one.status, 202, "{:?}", one.body);
    let batch = post(
        &edge.base(),
        "/v1/publish/batch",
        ALPHA,
        &json!({"messages": [
            {"channel": "news", "event": "e2", "data": "two"},
            {"access_id": token.access_id, "event": "e3", "data": 3},
        ]}),
    )
    .await;
    assert_eq!(batch.status, 202, "{:?}", batch.body);
    // A publish that names this socket as its sender skips it, live.
    let skipped = post(
        &edge.base(),
        "/v1/publish",
        ALPHA,
        &json!({"user_id": "bob", "event": "skipped", "data": 0,
                "socket_id": welcome["connection_id"]}),
    )
    .await;
    assert_eq!(skipped.status, 202, "{:?}", skipped.body);
    // The host's own publish continues the same id sequence.
    let four = post(
        &host.base,
        "/v1/publish",
        ALPHA,
        &json!({"user_id": "bob", "event": "e4", "data": null}),
    )
    .await;
    assert_eq!(four.status, 202, "{:?}", four.body);
    let ids: Vec<u64> = [
        &one.body["id"],
        &batch.body["ids"][0],
        &batch.body["ids"][1],
        &four.body["id"],
    ]
    .iter()
    .map(|id| id.as_str().expect("a string id").parse().expect("a u64"))
    .collect();
    assert!(ids.windows(2).all(|pair| pair[0] < pair[1]), "{ids:?}");

    let received = messages_until(&mut socket, "e4").await;
    let seen: Vec<(u64, &str, &str, Value)> = received
        .iter()
        .map(|m| {
            (
                m["id"].as_str().unwrap().parse().unwrap(),
                m["channel"].as_str().unwrap(),
                m["event"].as_str().unwrap(),
                m["data"].clone(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            (ids[0], "#user", "e1", json!({"n": [1, "x"]})),
            (ids[1], "news", "e2", json!("two")),
            (ids[2], "#token", "e3", json!(3)),
            (ids[3], "#user", "e4", Value::Null),
        ]
    );

    // The edge's messages are in the hosts' history: a client that saw only
    // the first recovers the rest of its inboxes on reconnect, the one it
    // was spared live included (history keeps no exclusions).
    drop(socket);
    let (mut socket, welcome) =
        connect(&token.url(&token.code(1), &format!("&last_id={}", ids[0])))
            .await
            .welcomed();
    assert_eq!(welcome["recovered"], true, "{welcome}");
    let replayed = messages_until(&mut socket, "e4").await;
    let events: Vec<&str> = replayed
        .iter()
        .map(|m| m["event"].as_str().unwrap())
        .collect();
    assert_eq!(events, ["e3", "skipped", "e4"]);
}

/// A socket of `user_id` on the host, subscribed to `channels` (which its
/// token allows), and its connection id (the `socket_id` a browser hands
/// its back-end).
async fn pusher_socket(host: &Host, user_id: &str, channels: &[&str]) -> (Socket, String) {
    let claims = json!({"user_id": user_id, "channels": ["news.*"]});
    let token = token_from(&post(&host.base, "/v1/tokens", PUSHER, &claims).await);
    away_from_step_edge(30, 3).await;
    let (mut socket, welcome) = connect(&token.url(&token.code(0), "")).await.welcomed();
    for channel in channels {
        send_json(
            &mut socket,
            json!({"type": "subscribe", "channel": channel}),
        )
        .await;
        assert_eq!(next_json(&mut socket).await.unwrap()["type"], "subscribed");
    }
    let connection_id = welcome["connection_id"].as_str().expect("connection_id");
    (socket, connection_id.to_owned())
}

/// The official Pusher Node library, pointed at the edge, reaches sockets
/// on a host: triggers to one and several channels, batches, send-to-user,
/// `socket_id` exclusion, and terminating a user's connections.
#[tokio::test]
async fn the_pusher_library_publishes_and_terminates_through_the_edge() {
    let redis = RedisServer::start();
    let host = Host::start(&redis, "edge-f").await;
    let edge = start_edge(&redis, &host, "edge-f", &[]).await;
    let (mut alice, alice_id) =
        pusher_socket(&host, "alice", &["news.sport", "news.weather"]).await;
    let (mut alice_again, _) = pusher_socket(&host, "alice", &[]).await;
    let (mut bob, _) = pusher_socket(&host, "bob", &["news.sport"]).await;

    let edge_base = edge.base();
    let call =
        async |call: &str, args: Value| pusher_call(&edge_base, PUSHER.1, 0, call, args).await;
    let calls = [
        ("trigger", json!(["news.sport", "score", {"home": 2}])),
        (
            "trigger",
            json!([["news.sport", "news.weather"], "alert", "plain text"]),
        ),
        (
            "triggerBatch",
            json!([[
                {"channel": "news.weather", "name": "first", "data": "{\"n\":1}"},
                {"channel": "news.sport", "name": "second", "data": "{\"n\":2}"},
            ]]),
        ),
        ("sendToUser", json!(["alice", "to-alice", {"done": true}])),
        // Alice's socket sent these: it does not get them, Bob does.
        (
            "trigger",
            json!(["news.sport", "echo", {"n": 1}, {"socket_id": alice_id}]),
        ),
        (
            "triggerBatch",
            json!([[{"channel": "news.sport", "name": "batched", "data": "{}", "socket_id": alice_id}]]),
        ),
    ];
    for (name, args) in calls {
        let answer = call(name, args.clone()).await;
        assert_eq!(answer["status"], 200, "{name} {args}: {answer}");
        assert_eq!(answer["body"], json!({}), "{name} {args}");
    }
    // Signed with the wrong secret: refused, and nothing is published.
    let forged = pusher_call(
        &edge_base,
        "not-the-secret",
        0,
        "trigger",
        json!(["news.sport", "forged", {}]),
    )
    .await;
    assert_eq!(forged["status"], 401, "{forged}");
    let sentinel = call("trigger", json!(["news.sport", "sentinel", {}])).await;
    assert_eq!(sentinel["status"], 200, "{sentinel}");

    let seen = |received: &[Value]| -> Vec<(String, String, Value)> {
        received
            .iter()
            .map(|m| {
                (
                    m["event"].as_str().unwrap().to_owned(),
                    m["channel"].as_str().unwrap().to_owned(),
                    m["data"].clone(),
                )
            })
            .collect()
    };
    let owned = |list: &[(&str, &str, Value)]| -> Vec<(String, String, Value)> {
        list.iter()
            .map(|(event, channel, data)| {
                ((*event).to_owned(), (*channel).to_owned(), data.clone())
            })
            .collect()
    };
    let to_alice = messages_until(&mut alice, "sentinel").await;
    assert_eq!(
        seen(&to_alice),
        owned(&[
            ("score", "news.sport", json!({"home": 2})),
            ("alert", "news.sport", json!("plain text")),
            ("alert", "news.weather", json!("plain text")),
            ("first", "news.weather", json!({"n": 1})),
            ("second", "news.sport", json!({"n": 2})),
            ("to-alice", "#user", json!({"done": true})),
            ("sentinel", "news.sport", json!({})),
        ])
    );
    let ids: Vec<u64> = to_alice
        .iter()
        .map(|m| m["id"].as_str().unwrap().parse().unwrap())
        .collect();
    assert!(ids.windows(2).all(|pair| pair[0] < pair[1]), "{ids:?}");
    let to_bob = messages_until(&mut bob, "sentinel").await;
    let events: Vec<&str> = to_bob
        .iter()
        .map(|m| m["event"].as_str().unwrap())
        .collect();
    assert_eq!(
        events,
        ["score", "alert", "second", "echo", "batched", "sentinel"]
    );

    // Every socket of the user closes with 4009, on the host; others stay.
    let answer = call("terminateUserConnections", json!(["alice"])).await;
    assert_eq!(answer["status"], 200, "{answer}");
    assert_eq!(answer["body"], json!({}));
    assert_eq!(close_code_skipping_messages(&mut alice).await, Some(4009));
    assert_eq!(
        close_code_skipping_messages(&mut alice_again).await,
        Some(4009)
    );
    send_json(&mut bob, json!({"type": "ping"})).await;
    assert_eq!(next_json(&mut bob).await.unwrap()["type"], "pong");
}

/// The channel queries at the edge read the hosts' channel directory: the
/// same answers as a host's, through the official library.
#[tokio::test]
async fn the_edge_answers_channel_queries_from_the_hosts_directory() {
    let redis = RedisServer::start();
    let host = Host::start(&redis, "edge-g").await;
    let edge = start_edge(&redis, &host, "edge-g", &[]).await;
    let (_alice, _) = pusher_socket(&host, "alice", &["news.sport", "news.weather"]).await;
    let (_bob, _) = pusher_socket(&host, "bob", &["news.sport"]).await;

    let everything = json!([{"path": "/channels", "params": {"info": "subscription_count"}}]);
    let want = json!({"channels": {
        "news.sport": {"subscription_count": 2},
        "news.weather": {"subscription_count": 1},
    }});
    // The host reports its counts to Redis once a second.
    let mut answer = Value::Null;
    for _ in 0..50 {
        answer = pusher_call(&edge.base(), PUSHER.1, 0, "get", everything.clone()).await;
        if answer["body"] == want {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(answer["status"], 200, "{answer}");
    assert_eq!(answer["body"], want, "{answer}");

    for query in [
        everything,
        json!([{"path": "/channels", "params": {"filter_by_prefix": "news.w"}}]),
        json!([{"path": "/channels/news.sport", "params": {"info": "subscription_count"}}]),
        json!([{"path": "/channels/news.sport"}]),
        json!([{"path": "/channels/news.empty", "params": {"info": "subscription_count"}}]),
    ] {
        let on_edge = pusher_call(&edge.base(), PUSHER.1, 0, "get", query.clone()).await;
        let on_host = pusher_call(&host.base, PUSHER.1, 0, "get", query.clone()).await;
        assert_eq!(on_edge["status"], 200, "{query}: {on_edge}");
        assert_eq!(on_edge, on_host, "{query}");
    }
    let single = pusher_call(
        &edge.base(),
        PUSHER.1,
        0,
        "get",
        json!([{"path": "/channels/news.weather", "params": {"info": "subscription_count"}}]),
    )
    .await;
    assert_eq!(
        single["body"],
        json!({"occupied": true, "subscription_count": 1})
    );

    // A trigger's `info` is answered from the same directory.
    let info = json!({"info": "subscription_count"});
    let trigger = json!([["news.sport", "news.empty"], "counted", {}, info]);
    let answer = pusher_call(&edge.base(), PUSHER.1, 0, "trigger", trigger).await;
    assert_eq!(answer["status"], 200, "{answer}");
    assert_eq!(
        answer["body"],
        json!({"channels": {
            "news.empty": {"subscription_count": 0},
            "news.sport": {"subscription_count": 2},
        }})
    );
    let batch = json!([[
        {"channel": "news.weather", "name": "counted", "data": "{}", "info": "subscription_count"},
        {"channel": "news.sport", "name": "plain", "data": "{}"},
    ]]);
    let answer = pusher_call(&edge.base(), PUSHER.1, 0, "triggerBatch", batch).await;
    assert_eq!(answer["status"], 200, "{answer}");
    assert_eq!(
        answer["body"],
        json!({"batch": [{"subscription_count": 1}, {}]})
    );
}

/// A socket of `user_id` (a token with `user_info`, when given) on the
/// host, subscribed to `presence-room` and `news.sport`.
async fn presence_member(host: &Host, user_id: &str, user_info: Option<Value>) -> Socket {
    let mut claims = json!({"user_id": user_id, "channels": ["presence-*", "news.*"]});
    if let Some(info) = user_info {
        claims["user_info"] = info;
    }
    let token = token_from(&post(&host.base, "/v1/tokens", PUSHER, &claims).await);
    away_from_step_edge(30, 3).await;
    let (mut socket, _) = connect(&token.url(&token.code(0), "")).await.welcomed();
    for channel in ["presence-room", "news.sport"] {
        send_json(
            &mut socket,
            json!({"type": "subscribe", "channel": channel}),
        )
        .await;
        // Member frames of others may come first.
        loop {
            let frame = next_json(&mut socket).await.expect("a frame");
            if frame["type"] == "subscribed" && frame["channel"] == channel {
                break;
            }
            assert_ne!(frame["type"], "error", "{frame}");
        }
    }
    socket
}

/// A Pusher `get` with the official library: status and body (a refusal's
/// body, which the library hands over as text, parsed).
async fn pusher_get(base: &str, query: &Value) -> (Value, Value) {
    let answer = pusher_call(base, PUSHER.1, 0, "get", query.clone()).await;
    let body = match &answer["body"] {
        Value::String(text) => serde_json::from_str(text).unwrap_or(Value::Null),
        body => body.clone(),
    };
    (answer["status"].clone(), body)
}

/// `GET` with the Pusher app's Basic credentials.
async fn get_v1(base: &str, path: &str) -> Answer {
    send(base, "GET", path, Some(&basic(PUSHER)), Vec::new()).await
}

/// Presence members on a host read the same through the edge as through
/// the host: the native channel and member queries and Pusher's channel
/// and user queries, from the hosts' presence in Redis; a channel that is
/// not a presence channel has no members on either (404, and Pusher's
/// 400).
#[tokio::test]
async fn the_edge_answers_presence_queries_as_a_host_does() {
    let redis = RedisServer::start();
    let host = Host::start(&redis, "edge-p").await;
    let edge = start_edge(&redis, &host, "edge-p", &[]).await;
    let _ann = presence_member(&host, "ann", Some(json!({"name": "Ann"}))).await;
    let _bob = presence_member(&host, "bob", None).await;

    // Members are current; subscription counts at the edge come from the
    // host's once-a-second report.
    let want = json!({"occupied": true, "subscription_count": 2, "user_count": 2});
    let mut answer = get_v1(&edge.base(), "/v1/channels/presence-room").await;
    for _ in 0..50 {
        if answer.body == want {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        answer = get_v1(&edge.base(), "/v1/channels/presence-room").await;
    }
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.body, want, "{answer:?}");

    let members = get_v1(&edge.base(), "/v1/channels/presence-room/members").await;
    assert_eq!(
        members.body,
        json!({"count": 2, "members": [
            {"user_id": "ann", "user_info": {"name": "Ann"}},
            {"user_id": "bob"},
        ]})
    );
    for path in [
        "/v1/channels/presence-room",
        "/v1/channels/presence-room/members",
        "/v1/channels?prefix=presence-",
        "/v1/channels",
        "/v1/channels/news.sport",
        "/v1/channels/news.sport/members",
        "/v1/channels/presence-empty",
        "/v1/channels/presence-empty/members",
    ] {
        let on_edge = get_v1(&edge.base(), path).await;
        let on_host = get_v1(&host.base, path).await;
        assert_eq!(on_edge, on_host, "{path}");
    }
    let listing = get_v1(&edge.base(), "/v1/channels?prefix=presence-").await;
    assert_eq!(
        listing.body,
        json!({"channels": {"presence-room": want.clone()}})
    );
    let not_presence = get_v1(&edge.base(), "/v1/channels/news.sport/members").await;
    assert_eq!(not_presence.status, 404, "{not_presence:?}");
    assert_eq!(not_presence.body["error"]["code"], "not_found");
    let refused = send(
        &edge.base(),
        "GET",
        "/v1/channels/presence-room/members",
        Some(&basic((PUSHER.0, "wrong-secret"))),
        Vec::new(),
    )
    .await;
    assert_eq!(refused.status, 401);

    // Pusher's channel and user queries, with the official library.
    let user_count = json!({"info": "user_count", "filter_by_prefix": "presence-"});
    let both = json!({"info": "user_count,subscription_count"});
    for (query, want) in [
        (
            json!([{"path": "/channels", "params": user_count}]),
            json!({"channels": {"presence-room": {"user_count": 2}}}),
        ),
        (
            json!([{"path": "/channels/presence-room", "params": both}]),
            want.clone(),
        ),
        (
            json!([{"path": "/channels/presence-room/users"}]),
            json!({"users": [{"id": "ann"}, {"id": "bob"}]}),
        ),
        (
            json!([{"path": "/channels/news.sport", "params": both}]),
            json!({"occupied": true, "subscription_count": 2}),
        ),
    ] {
        let on_edge = pusher_get(&edge.base(), &query).await;
        assert_eq!(on_edge, (json!(200), want), "{query}");
        assert_eq!(on_edge, pusher_get(&host.base, &query).await, "{query}");
    }
    // Users of another channel: a 400 on both.
    let query = json!([{"path": "/channels/news.sport/users"}]);
    let (status, body) = pusher_get(&edge.base(), &query).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "invalid_request", "{body}");
    assert_eq!((status, body), pusher_get(&host.base, &query).await);

    // A trigger's `info` answers a presence channel's user count too: with
    // a second socket of ann's, three subscriptions of two users.
    let _ann_again = presence_member(&host, "ann", None).await;
    let three = json!({"occupied": true, "subscription_count": 3, "user_count": 2});
    for _ in 0..50 {
        if get_v1(&edge.base(), "/v1/channels/presence-room")
            .await
            .body
            == three
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let trigger = json!([["presence-room", "news.sport"], "counted", {}, both]);
    let on_edge = pusher_call(&edge.base(), PUSHER.1, 0, "trigger", trigger.clone()).await;
    assert_eq!(on_edge["status"], 200, "{on_edge}");
    assert_eq!(
        on_edge["body"],
        json!({"channels": {
            "news.sport": {"subscription_count": 3},
            "presence-room": {"subscription_count": 3, "user_count": 2},
        }})
    );
    let on_host = pusher_call(&host.base, PUSHER.1, 0, "trigger", trigger).await;
    assert_eq!(on_edge["body"], on_host["body"]);
}

/// One line of the hosts' configuration file swaps a plugin on the hosts
/// and at the edge: with `examples/plugins/auth-sha256` and
/// `examples/plugins/router-namespaces` named in `[plugins]`, a token the
/// edge issues announces (and a host checks) SHA256, 8 digits and 60 s
/// steps, and both refuse a channel outside the router's namespaces with
/// the same answer.
#[tokio::test]
async fn plugins_swapped_in_the_hosts_config_run_at_the_edge_too() {
    let plugins = build_plugins(&["madx-example-auth-sha256", "madx-example-router-namespaces"]);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("madx.toml");
    std::fs::write(
        &config,
        format!(
            "[plugins.auth]\npath = {:?}\n\n[plugins.router]\npath = {:?}\n",
            plugins[0], plugins[1]
        ),
    )
    .unwrap();
    let swapped = compose_edge(&config, "madx-edge-swapped");
    let redis = RedisServer::start();
    // The host runs with the same `[plugins]` lines.
    let host_config = std::fs::read_to_string(&config).unwrap();
    let host = Host::start_with(&redis, "edge-swap", &host_config).await;
    let edge = start_edge_app(
        &swapped,
        &redis,
        &host,
        "edge-swap",
        &[("auth_default_ttl_secs", "600")],
    )
    .await;

    // The token: the plugin's code parameters, its settings from Spin
    // variables, its record where the host's copy of the plugin reads it.
    let answer = post(
        &edge.base(),
        "/v1/tokens",
        ALPHA,
        &json!({"user_id": "ann", "channels": ["public:*"]}),
    )
    .await;
    let token = token_from(&answer);
    assert_eq!(
        answer.body["otp"],
        json!({"algorithm": "SHA256", "digits": 8, "period": 60})
    );
    assert_eq!(answer.body["expires_in"], 600);
    // The code the token announces: SHA256, 8 digits, 60 s.
    let sha256 = |steps| token.code(steps);
    // The default component's code (SHA1, 6 digits) is not even this
    // plugin's form (4001); an 8-digit SHA1 code is a wrong code (4002).
    let six_digits = token.code_with(Algorithm::SHA1, 6, 30, 0);
    let (code, _) = connect(&token.url(&six_digits, "")).await.refused();
    assert_eq!(code, 4001, "a 6-digit code must be refused as malformed");
    let sha1 = token.code_with(Algorithm::SHA1, 8, 60, 0);
    let (code, _) = connect(&token.url(&sha1, "")).await.refused();
    assert_eq!(code, 4002, "a SHA1 code must be refused");
    let (mut socket, _) = connect(&token.url(&sha256(0), "")).await.welcomed();
    send_json(
        &mut socket,
        json!({"type": "subscribe", "channel": "public:news"}),
    )
    .await;
    assert_eq!(next_json(&mut socket).await.unwrap()["type"], "subscribed");

    // The router: the same refusal from the host and from the edge, for a
    // channel the built-in router would take.
    let outside = json!({"channel": "news", "event": "e", "data": 1});
    let at_host = post(&host.base, "/v1/publish", ALPHA, &outside).await;
    let at_edge = post(&edge.base(), "/v1/publish", ALPHA, &outside).await;
    assert_eq!(at_host.status, 400, "{:?}", at_host.body);
    assert_eq!(
        (at_edge.status, &at_edge.body),
        (at_host.status, &at_host.body)
    );
    let message = at_edge.body["error"]["message"]
        .as_str()
        .unwrap_or_default();
    assert!(message.contains("namespaces (public)"), "{message}");

    // And what it allows goes through the edge to the host's socket.
    let inside = json!({"channel": "public:news", "event": "e", "data": "in"});
    let accepted = post(&edge.base(), "/v1/publish", ALPHA, &inside).await;
    assert_eq!(accepted.status, 202, "{:?}", accepted.body);
    let delivered = next_json(&mut socket).await.unwrap();
    assert_eq!(
        (&delivered["channel"], &delivered["data"]),
        (&json!("public:news"), &json!("in"))
    );
}

/// Requests a host refuses, each sent to a host and to the edge: the
/// status, the error body and `WWW-Authenticate` must be the same.
#[tokio::test]
async fn the_edge_refuses_what_a_host_refuses_with_the_same_answer() {
    let redis = RedisServer::start();
    let host = Host::start(&redis, "edge-d").await;
    let edge = start_edge(&redis, &host, "edge-d", &[]).await;

    let alpha = basic(ALPHA);
    let wrong_secret = basic(("alpha-key", "alpha-secreT"));
    let unknown_key = basic(("nobody", "alpha-secret"));
    let json = |value: Value| value.to_string().into_bytes();
    let message = |extra: Value| {
        let mut body = json!({"event": "e", "data": 1});
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        body
    };
    let many = (0..101)
        .map(|_| message(json!({"user_id": "u"})))
        .collect::<Vec<_>>();
    let pusher = pusher_cases();
    let mut cases: Vec<(&str, &str, Option<&str>, Vec<u8>)> = vec![
        // Credentials.
        ("POST", "/v1/tokens", None, json(json!({}))),
        ("POST", "/v1/tokens", Some(&wrong_secret), json(json!({}))),
        ("POST", "/v1/tokens", Some(&unknown_key), json(json!({}))),
        (
            "POST",
            "/v1/tokens",
            Some("Bearer alpha-secret"),
            json(json!({})),
        ),
        ("POST", "/v1/publish", Some("Basic !!!"), json(json!({}))),
        ("DELETE", "/v1/tokens/abc", None, Vec::new()),
        // Token requests.
        ("POST", "/v1/tokens", Some(&alpha), b"not json".to_vec()),
        ("POST", "/v1/tokens", Some(&alpha), json(json!({"nope": 1}))),
        (
            "POST",
            "/v1/tokens",
            Some(&alpha),
            json(json!({"ttl": "long"})),
        ),
        ("POST", "/v1/tokens", Some(&alpha), json(json!({"ttl": 0}))),
        (
            "POST",
            "/v1/tokens",
            Some(&alpha),
            json(json!({"ttl": 7201})),
        ),
        (
            "POST",
            "/v1/tokens",
            Some(&alpha),
            json(json!({"user_id": ""})),
        ),
        (
            "POST",
            "/v1/tokens",
            Some(&alpha),
            json(json!({"user_id": "u".repeat(257)})),
        ),
        (
            "POST",
            "/v1/tokens",
            Some(&alpha),
            json(json!({"channels": ["bad glob"]})),
        ),
        (
            "POST",
            "/v1/tokens",
            Some(&alpha),
            json(json!({"publish": vec!["x"; 65]})),
        ),
        (
            "POST",
            "/v1/tokens",
            Some(&alpha),
            vec![b' '; 64 * 1024 + 1],
        ),
        // Publishes.
        ("POST", "/v1/publish", Some(&alpha), b"[1]".to_vec()),
        (
            "POST",
            "/v1/publish",
            Some(&alpha),
            json(message(json!({}))),
        ),
        (
            "POST",
            "/v1/publish",
            Some(&alpha),
            json(message(json!({"user_id": "u", "channel": "c"}))),
        ),
        (
            "POST",
            "/v1/publish",
            Some(&alpha),
            json(json!({"user_id": "u", "event": "e"})),
        ),
        (
            "POST",
            "/v1/publish",
            Some(&alpha),
            json(message(json!({"channel": "a b"}))),
        ),
        (
            "POST",
            "/v1/publish",
            Some(&alpha),
            json(message(json!({"channel": "c".repeat(201)}))),
        ),
        (
            "POST",
            "/v1/publish",
            Some(&alpha),
            json(message(json!({"user_id": "u", "event": ""}))),
        ),
        (
            "POST",
            "/v1/publish",
            Some(&alpha),
            json(message(json!({"user_id": "u", "event": "e".repeat(101)}))),
        ),
        (
            "POST",
            "/v1/publish",
            Some(&alpha),
            json(message(json!({"user_id": "u", "event": "tab\there"}))),
        ),
        (
            "POST",
            "/v1/publish",
            Some(&alpha),
            json(json!({"user_id": "u", "event": "e", "data": "x".repeat(64 * 1024)})),
        ),
        (
            "POST",
            "/v1/publish",
            Some(&alpha),
            vec![b' '; 80 * 1024 + 1],
        ),
        (
            "POST",
            "/v1/publish",
            Some(&alpha),
            json(message(json!({"user_id": "u", "socket_id": "1.2.3"}))),
        ),
        (
            "POST",
            "/v1/publish",
            Some(&alpha),
            json(message(json!({"user_id": "u", "socket_id": 12}))),
        ),
        (
            "POST",
            "/v1/publish/batch",
            Some(&alpha),
            json(json!({"messages": [message(json!({"user_id": "u", "socket_id": ".5"}))]})),
        ),
        (
            "POST",
            "/v1/publish/batch",
            Some(&alpha),
            json(json!({"messages": []})),
        ),
        (
            "POST",
            "/v1/publish/batch",
            Some(&alpha),
            json(json!({"messages": many})),
        ),
        (
            "POST",
            "/v1/publish/batch",
            Some(&alpha),
            json(
                json!({"messages": [message(json!({"user_id": "u"})), message(json!({"channel": "*"}))]}),
            ),
        ),
        (
            "POST",
            "/v1/publish/batch",
            Some(&alpha),
            json(json!({"messages": [{}]})),
        ),
        // Revokes and methods.
        ("DELETE", "/v1/tokens/a%20b", Some(&alpha), Vec::new()),
        (
            "DELETE",
            "/v1/tokens/never-issued",
            Some(&alpha),
            Vec::new(),
        ),
        ("DELETE", "/v1/tokens/a/b", Some(&alpha), Vec::new()),
        ("GET", "/v1/tokens", Some(&alpha), Vec::new()),
        ("POST", "/v1/tokens/abc", Some(&alpha), Vec::new()),
        ("PUT", "/v1/publish", Some(&alpha), Vec::new()),
        ("GET", "/v1/publish/batch", None, Vec::new()),
        // Channel queries.
        ("GET", "/v1/channels", None, Vec::new()),
        (
            "GET",
            "/v1/channels/presence-a/members",
            Some(&wrong_secret),
            Vec::new(),
        ),
        ("GET", "/v1/channels/news/members", Some(&alpha), Vec::new()),
        ("GET", "/v1/channels/", Some(&alpha), Vec::new()),
        ("POST", "/v1/channels", Some(&alpha), Vec::new()),
        ("DELETE", "/v1/channels/news", Some(&alpha), Vec::new()),
    ];
    cases.extend(
        pusher
            .iter()
            .map(|(method, path, body)| (*method, path.as_str(), None, body.clone())),
    );
    for (method, path, authorization, body) in cases {
        let on_host = send(&host.base, method, path, authorization, body.clone()).await;
        let on_edge = send(&edge.base(), method, path, authorization, body.clone()).await;
        let request = format!(
            "{method} {path} {authorization:?} {}",
            String::from_utf8_lossy(&body[..body.len().min(120)])
        );
        assert!(on_host.status >= 400, "{request}: the host accepted it");
        assert_eq!(on_edge, on_host, "{request}");
    }

    // Paths outside the API: Spin has no route for them (a bare 404),
    // where a host answers its JSON 404 or serves the WebSocket.
    let outside = send(&edge.base(), "GET", "/v1/ws", None, Vec::new()).await;
    assert_eq!((outside.status, outside.body), (404, Value::Null));
}

/// Pusher API requests a host refuses (method, path with query, body),
/// signed for the Pusher app unless the case is about the signature.
fn pusher_cases() -> Vec<(&'static str, String, Vec<u8>)> {
    let now = unix_now();
    let events = format!("/apps/{PUSHER_APP_ID}/events");
    let batch_events = format!("/apps/{PUSHER_APP_ID}/batch_events");
    let channels_path = format!("/apps/{PUSHER_APP_ID}/channels");
    let signed_by = |path: &str, body: &Value, secret: &str| {
        let body = body.to_string().into_bytes();
        let path = pusher_signed("POST", path, &pusher_params(&body, now), secret);
        ("POST", path, body)
    };
    let signed = |path: &str, body: &Value| signed_by(path, body, PUSHER.1);
    // A good event, signed by `secret` over its parameters with `changes`.
    let tampered = |changes: &[(&str, String)], secret: &str| {
        let body = json!({"name": "e", "channel": "c", "data": "{}"})
            .to_string()
            .into_bytes();
        let mut params = pusher_params(&body, now);
        for (name, value) in changes {
            for param in &mut params {
                if param.0 == *name {
                    param.1 = value.clone();
                }
            }
        }
        (
            "POST",
            pusher_signed("POST", &events, &params, secret),
            body,
        )
    };
    let event = |extra: Value| {
        let mut body = json!({"name": "e", "data": "{}"});
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        body
    };
    let channels: Vec<String> = (0..101).map(|n| format!("c{n}")).collect();
    vec![
        // The signature.
        ("POST", events.clone(), b"{}".to_vec()),
        tampered(&[], "not-the-secret"),
        tampered(&[("auth_timestamp", (now - 700).to_string())], PUSHER.1),
        tampered(&[("auth_timestamp", (now + 700).to_string())], PUSHER.1),
        tampered(&[("body_md5", "0".repeat(32))], PUSHER.1),
        tampered(&[("auth_version", "2.0".to_owned())], PUSHER.1),
        // Another app's key and secret, on this app's path.
        tampered(&[("auth_key", "alpha-key".to_owned())], "alpha-secret"),
        signed("/apps/999/events", &event(json!({"channel": "c"}))),
        signed_by(
            &format!("/apps/{PUSHER_APP_ID}/users/ann/terminate_connections"),
            &json!({}),
            "not-the-secret",
        ),
        // The body.
        (
            "POST",
            pusher_signed("POST", &events, &pusher_params(b"not json", now), PUSHER.1),
            b"not json".to_vec(),
        ),
        signed(&events, &json!([1])),
        signed(&events, &json!({"name": "e"})),
        signed(&events, &event(json!({"channel": "a b"}))),
        signed(&events, &event(json!({"channel": "a", "channels": ["b"]}))),
        signed(&events, &event(json!({"channels": channels}))),
        signed(&events, &event(json!({"channels": []}))),
        signed(&events, &event(json!({"channel": "c", "name": ""}))),
        signed(
            &events,
            &event(json!({"channel": "c", "data": "x".repeat(64 * 1024)})),
        ),
        signed(
            &events,
            &event(json!({"channel": "c", "socket_id": "1.2.3"})),
        ),
        signed(
            &events,
            &event(json!({"channel": format!("#server-to-user-{}", "u".repeat(201))})),
        ),
        signed(&batch_events, &json!({"batch": []})),
        signed(
            &batch_events,
            &json!({"batch": (0..101).map(|_| event(json!({"channel": "c"}))).collect::<Vec<_>>()}),
        ),
        signed(
            &batch_events,
            &json!({"batch": [event(json!({"channel": "c"})), event(json!({"channel": "*"}))]}),
        ),
        // Path segments that are not UTF-8 once decoded.
        signed("/apps/%ff/events", &event(json!({"channel": "c"}))),
        signed(
            &format!("/apps/{PUSHER_APP_ID}/users/%c3/terminate_connections"),
            &json!({}),
        ),
        // Over the body limit, signed or not.
        ("POST", events.clone(), vec![b' '; 80 * 1024 + 1]),
        // Channel queries: unsigned, a wrong secret, a stale clock, a
        // channel that is not UTF-8, a method the route does not take.
        ("GET", channels_path.clone(), Vec::new()),
        (
            "GET",
            pusher_signed(
                "GET",
                &channels_path,
                &pusher_params(b"", now),
                "not-the-secret",
            ),
            Vec::new(),
        ),
        (
            "GET",
            pusher_signed(
                "GET",
                &channels_path,
                &pusher_params(b"", now - 700),
                PUSHER.1,
            ),
            Vec::new(),
        ),
        (
            "GET",
            pusher_signed(
                "GET",
                &format!("{channels_path}/%ff"),
                &pusher_params(b"", now),
                PUSHER.1,
            ),
            Vec::new(),
        ),
        ("POST", channels_path.clone(), Vec::new()),
        // Users of a channel that is not a presence channel.
        (
            "GET",
            pusher_signed(
                "GET",
                &format!("{channels_path}/news/users"),
                &pusher_params(b"", now),
                PUSHER.1,
            ),
            Vec::new(),
        ),
        (
            "GET",
            pusher_signed(
                "GET",
                &format!("{channels_path}/%ff/users"),
                &pusher_params(b"", now),
                PUSHER.1,
            ),
            Vec::new(),
        ),
        (
            "POST",
            format!("{channels_path}/presence-a/users"),
            Vec::new(),
        ),
        // Methods.
        ("GET", events.clone(), Vec::new()),
        ("PUT", batch_events.clone(), Vec::new()),
    ]
}

#[tokio::test]
async fn without_redis_the_edge_answers_503_like_a_host() {
    let mut redis = RedisServer::start();
    let host = Host::start(&redis, "edge-e").await;
    let edge = start_edge(&redis, &host, "edge-e", &[]).await;
    redis.stop();
    host.wait_readyz(503).await;

    for (path, body) in [
        ("/v1/tokens", json!({"user_id": "u"})),
        (
            "/v1/publish",
            json!({"user_id": "u", "event": "e", "data": 1}),
        ),
    ] {
        let on_host = post(&host.base, path, ALPHA, &body).await;
        let on_edge = post(&edge.base(), path, ALPHA, &body).await;
        for answer in [&on_host, &on_edge] {
            assert_eq!(answer.status, 503, "{path}: {:?}", answer.body);
            assert_eq!(answer.body["error"]["code"], "store_unavailable");
        }
    }
    // A channel query: the deployment's counts are unknown, not guessed.
    let path = pusher_signed(
        "GET",
        &format!("/apps/{PUSHER_APP_ID}/channels"),
        &pusher_params(b"", unix_now()),
        PUSHER.1,
    );
    let on_host = send(&host.base, "GET", &path, None, Vec::new()).await;
    let on_edge = send(&edge.base(), "GET", &path, None, Vec::new()).await;
    assert_eq!(on_host.status, 503, "{:?}", on_host.body);
    assert_eq!(on_host.body["error"]["code"], "store_unavailable");
    assert_eq!(on_edge, on_host);
    // And the native ones, members included.
    for path in [
        "/v1/channels",
        "/v1/channels/presence-a",
        "/v1/channels/presence-a/members",
    ] {
        let alpha = basic(ALPHA);
        let on_host = send(&host.base, "GET", path, Some(&alpha), Vec::new()).await;
        let on_edge = send(&edge.base(), "GET", path, Some(&alpha), Vec::new()).await;
        assert_eq!(on_host.status, 503, "{path}: {:?}", on_host.body);
        assert_eq!(on_edge, on_host, "{path}");
    }
}

#[test]
fn spin_toml_routes_the_api_and_requires_credentials() {
    let manifest = manifest();
    let none = std::collections::HashMap::new();
    let error = manifest.resolve("madx-edge", &none).unwrap_err();
    assert!(error.to_string().contains("required variable"), "{error}");
    let variables = [("apps", APPS), ("public_url", "https://push.example.com")]
        .into_iter()
        .map(|(name, value)| (name.to_owned(), value.to_owned()))
        .collect();
    let resolved = manifest.resolve("madx-edge", &variables).unwrap();
    assert_eq!(
        resolved.routes,
        [
            "/v1/tokens",
            "/v1/tokens/...",
            "/v1/publish",
            "/v1/publish/batch",
            "/v1/channels/...",
            "/apps/..."
        ]
    );
    assert_eq!(resolved.variables["presence_channel_prefix"], "presence-");
    assert_eq!(resolved.variables["redis_url"], "redis://127.0.0.1:6379");
    assert_eq!(resolved.allowed_outbound_hosts, ["redis://127.0.0.1:6379"]);
    assert_eq!(resolved.variables["store_prefix"], "madx");
    assert!(
        manifest
            .source("madx-edge")
            .unwrap()
            .ends_with("target/edge/madx-edge.wasm")
    );
}
