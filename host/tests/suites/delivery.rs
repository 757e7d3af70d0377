//! Delivery: the publish API, inboxes, channels, recovery and fan-out.
//!
//! Every "does not receive" or "exactly once" check publishes a later
//! sentinel message and asserts on everything received before it.

use std::time::Duration;

use crate::common::*;
use serde_json::json;

#[tokio::test]
async fn inboxes_reach_the_token_and_every_socket_of_the_user_only() {
    let server = TestServer::start(TWO_APPS);
    let (alice_token, mut alice_1) = open_socket(&server, ALPHA, json!({"user_id": "alice"})).await;
    let (_, mut alice_2) = open_socket(&server, ALPHA, json!({"user_id": "alice"})).await;
    let (bob_token, mut bob) = open_socket(&server, ALPHA, json!({"user_id": "bob"})).await;

    publish(
        &server,
        ALPHA,
        json!({"user_id": "alice", "event": "report.done", "data": {"url": "/r/1"}}),
    )
    .await;
    publish(
        &server,
        ALPHA,
        json!({"access_id": alice_token.access_id, "event": "only-this-tab", "data": null}),
    )
    .await;
    for user in ["alice", "bob"] {
        publish(
            &server,
            ALPHA,
            json!({"user_id": user, "event": "sentinel", "data": 0}),
        )
        .await;
    }

    let first = messages_until(&mut alice_1, "sentinel").await;
    assert_eq!(events(&first), ["report.done", "only-this-tab", "sentinel"]);
    assert_eq!(first[0]["data"], json!({"url": "/r/1"}));
    assert_eq!(first[0]["channel"], "#user");
    assert_eq!(first[1]["channel"], "#token");
    let ids: Vec<u64> = first
        .iter()
        .map(|m| m["id"].as_str().unwrap().parse().unwrap())
        .collect();
    assert!(
        ids.windows(2).all(|pair| pair[0] < pair[1]),
        "ids increase: {ids:?}"
    );

    let second = messages_until(&mut alice_2, "sentinel").await;
    assert_eq!(events(&second), ["report.done", "sentinel"]);
    let bobs = messages_until(&mut bob, "sentinel").await;
    assert_eq!(events(&bobs), ["sentinel"]);
    let _ = bob_token;
}

#[tokio::test]
async fn socket_id_keeps_a_publish_from_that_connection_only() {
    let server = TestServer::start(TWO_APPS);
    let token = server.token(ALPHA, json!({"user_id": "alice"})).await;
    away_from_step_edge(30, 2).await;
    let (mut sender, welcome) = connect(&token.url_with(&token.code(0))).await.welcomed();
    let (_, mut other) = open_socket(&server, ALPHA, json!({"user_id": "alice"})).await;
    let sender_id = welcome["connection_id"].as_str().expect("connection_id");

    let to_alice = |event: &str, socket_id: Option<&str>| {
        let mut body = json!({"user_id": "alice", "event": event, "data": {}});
        if let Some(socket_id) = socket_id {
            body["socket_id"] = json!(socket_id);
        }
        body
    };
    publish(&server, ALPHA, to_alice("echo", Some(sender_id))).await;
    // Not a connection id: refused, nothing published.
    for bad in ["abc", "1.", ".1", "1.2.3", "-1.2", ""] {
        let body = to_alice("refused", Some(bad));
        let (status, answer) = post_json(&server, "/v1/publish", ALPHA, &body).await;
        assert_eq!(
            (status, &answer["error"]["code"]),
            (400, &json!("invalid_request")),
            "{bad}: {answer}"
        );
    }
    publish(&server, ALPHA, to_alice("sentinel", None)).await;

    assert_eq!(
        events(&messages_until(&mut sender, "sentinel").await),
        ["sentinel"]
    );
    assert_eq!(
        events(&messages_until(&mut other, "sentinel").await),
        ["echo", "sentinel"]
    );
}

#[tokio::test]
async fn subscriptions_follow_the_tokens_channel_globs() {
    let server = TestServer::start(TWO_APPS);
    let (_, mut socket) = open_socket(&server, ALPHA, json!({"channels": ["news.*"]})).await;

    let mut allowed = subscribe(&mut socket, "news.sport").await;
    let position = allowed.as_object_mut().unwrap().remove("last_id");
    assert!(position.is_some_and(|id| id.as_str().unwrap().parse::<u64>().is_ok()));
    assert_eq!(
        allowed,
        json!({"type": "subscribed", "channel": "news.sport"})
    );

    let denied = subscribe(&mut socket, "admin").await;
    assert_eq!(denied["type"], "error");
    assert_eq!(denied["code"], 4303);
    assert_eq!(denied["reason"], "forbidden");
    assert_eq!(denied["channel"], "admin");
    assert_eq!(denied["frame"], "subscribe");

    let invalid = subscribe(&mut socket, "bad channel!").await;
    assert_eq!(invalid["code"], 4304);

    publish(
        &server,
        ALPHA,
        json!({"channel": "admin", "event": "secret", "data": 1}),
    )
    .await;
    publish(
        &server,
        ALPHA,
        json!({"channel": "news.weather", "event": "unsubscribed-channel", "data": 1}),
    )
    .await;
    publish(
        &server,
        ALPHA,
        json!({"channel": "news.sport", "event": "goal", "data": 1}),
    )
    .await;
    send_json(
        &mut socket,
        json!({"type": "unsubscribe", "channel": "news.sport"}),
    )
    .await;
    assert_eq!(next_json(&mut socket).await.unwrap()["type"], "message");
    assert_eq!(
        next_json(&mut socket).await.unwrap(),
        json!({"type": "unsubscribed", "channel": "news.sport"})
    );
    publish(
        &server,
        ALPHA,
        json!({"channel": "news.sport", "event": "after-unsubscribe", "data": 1}),
    )
    .await;
    let token_inbox_sentinel = server.token(ALPHA, empty()).await; // unrelated token: no effect
    let _ = token_inbox_sentinel;
    subscribe(&mut socket, "news.end").await;
    publish(
        &server,
        ALPHA,
        json!({"channel": "news.end", "event": "sentinel", "data": 1}),
    )
    .await;
    let received = messages_until(&mut socket, "sentinel").await;
    assert_eq!(events(&received), ["sentinel"]);
}

#[tokio::test]
async fn client_publish_follows_the_publish_globs() {
    let server = TestServer::start(TWO_APPS);
    let (_, mut talker) = open_socket(
        &server,
        ALPHA,
        json!({"channels": ["chat.*"], "publish": ["chat.*"]}),
    )
    .await;
    let (_, mut listener) = open_socket(&server, ALPHA, json!({"channels": ["chat.*"]})).await;
    subscribe(&mut listener, "chat.room").await;

    send_json(
        &mut talker,
        json!({"type": "publish", "channel": "chat.room", "event": "said", "data": {"text": "hi"}}),
    )
    .await;
    // A listener-only token may not publish.
    send_json(
        &mut listener,
        json!({"type": "publish", "channel": "chat.room", "event": "sneaky", "data": 1}),
    )
    .await;
    let refusal = next_json(&mut listener).await.unwrap();
    // The talker's message may arrive before the refusal.
    let (refusal, early) = if refusal["type"] == "message" {
        (next_json(&mut listener).await.unwrap(), vec![refusal])
    } else {
        (refusal, vec![])
    };
    assert_eq!(refusal["code"], 4303);
    assert_eq!(refusal["frame"], "publish");
    send_json(
        &mut talker,
        json!({"type": "publish", "channel": "elsewhere", "event": "denied", "data": 1}),
    )
    .await;
    assert_eq!(next_json(&mut talker).await.unwrap()["code"], 4303);

    publish(
        &server,
        ALPHA,
        json!({"channel": "chat.room", "event": "sentinel", "data": 1}),
    )
    .await;
    let mut received = early;
    received.extend(messages_until(&mut listener, "sentinel").await);
    assert_eq!(events(&received), ["said", "sentinel"]);
    assert_eq!(received[0]["data"], json!({"text": "hi"}));
    assert_eq!(received[0]["channel"], "chat.room");
}

#[tokio::test]
async fn the_same_channel_name_in_two_apps_does_not_leak() {
    let server = TestServer::start(TWO_APPS);
    let (_, mut alpha) = open_socket(&server, ALPHA, json!({"channels": ["shared"]})).await;
    let (_, mut beta) = open_socket(&server, BETA, json!({"channels": ["shared"]})).await;
    subscribe(&mut alpha, "shared").await;
    subscribe(&mut beta, "shared").await;

    publish(
        &server,
        ALPHA,
        json!({"channel": "shared", "event": "alpha-only", "data": 1}),
    )
    .await;
    publish(
        &server,
        BETA,
        json!({"channel": "shared", "event": "sentinel", "data": 1}),
    )
    .await;
    publish(
        &server,
        ALPHA,
        json!({"channel": "shared", "event": "sentinel", "data": 1}),
    )
    .await;
    assert_eq!(
        events(&messages_until(&mut beta, "sentinel").await),
        ["sentinel"]
    );
    assert_eq!(
        events(&messages_until(&mut alpha, "sentinel").await),
        ["alpha-only", "sentinel"]
    );
}

#[tokio::test]
async fn a_reconnecting_client_recovers_its_inbox_in_order_without_duplicates() {
    let server = TestServer::start(TWO_APPS);
    let token = server.token(ALPHA, json!({"user_id": "carol"})).await;
    away_from_step_edge(30, 5).await;
    let (mut socket, _) = connect(&token.url_with(&token.code(-1))).await.welcomed();
    publish(
        &server,
        ALPHA,
        json!({"user_id": "carol", "event": "seen", "data": 1}),
    )
    .await;
    let seen = messages_until(&mut socket, "seen").await;
    let last_id = seen[0]["id"].as_str().unwrap().to_owned();
    drop(socket);

    for n in 1..=3 {
        publish(
            &server,
            ALPHA,
            json!({"user_id": "carol", "event": format!("missed-{n}"), "data": n}),
        )
        .await;
    }
    let url = format!("{}&last_id={last_id}", token.url_with(&token.code(0)));
    let (mut socket, welcome) = connect(&url).await.welcomed();
    assert_eq!(welcome["recovered"], true);
    publish(
        &server,
        ALPHA,
        json!({"user_id": "carol", "event": "sentinel", "data": 0}),
    )
    .await;
    let received = messages_until(&mut socket, "sentinel").await;
    assert_eq!(
        events(&received),
        ["missed-1", "missed-2", "missed-3", "sentinel"]
    );
}

#[tokio::test]
async fn recovery_says_false_when_history_no_longer_reaches_back() {
    let config = format!("[history]\nper_stream = 2\n{TWO_APPS}");
    let server = TestServer::start(&config);
    let (_, mut socket) = open_socket(&server, ALPHA, json!({"channels": ["feed"]})).await;
    subscribe(&mut socket, "feed").await;
    let first = publish(
        &server,
        ALPHA,
        json!({"channel": "feed", "event": "first", "data": 1}),
    )
    .await;
    messages_until(&mut socket, "first").await;
    send_json(
        &mut socket,
        json!({"type": "unsubscribe", "channel": "feed"}),
    )
    .await;
    assert_eq!(
        next_json(&mut socket).await.unwrap()["type"],
        "unsubscribed"
    );

    for n in 1..=4 {
        publish(
            &server,
            ALPHA,
            json!({"channel": "feed", "event": format!("later-{n}"), "data": n}),
        )
        .await;
    }
    // Two kept of four missed: the reply says recovery is incomplete.
    send_json(
        &mut socket,
        json!({"type": "subscribe", "channel": "feed", "since": first}),
    )
    .await;
    let mut subscribed = next_json(&mut socket).await.unwrap();
    subscribed.as_object_mut().unwrap().remove("last_id");
    assert_eq!(
        subscribed,
        json!({"type": "subscribed", "channel": "feed", "recovered": false})
    );
    publish(
        &server,
        ALPHA,
        json!({"channel": "feed", "event": "sentinel", "data": 0}),
    )
    .await;
    let received = messages_until(&mut socket, "sentinel").await;
    assert_eq!(events(&received), ["later-3", "later-4", "sentinel"]);

    // From an id history still covers, recovery is complete.
    let kept = received[0]["id"].as_str().unwrap();
    send_json(
        &mut socket,
        json!({"type": "unsubscribe", "channel": "feed"}),
    )
    .await;
    next_json(&mut socket).await;
    send_json(
        &mut socket,
        json!({"type": "subscribe", "channel": "feed", "since": kept}),
    )
    .await;
    let subscribed = next_json(&mut socket).await.unwrap();
    assert_eq!(subscribed["recovered"], true);
    assert_eq!(
        events(&messages_until(&mut socket, "sentinel").await),
        ["later-4", "sentinel"]
    );
}

#[tokio::test]
async fn a_batch_keeps_its_order_and_is_accepted_whole() {
    let server = TestServer::start(TWO_APPS);
    let (_, mut socket) = open_socket(&server, ALPHA, json!({"user_id": "dave"})).await;
    let batch = json!({"messages": [
        {"user_id": "dave", "event": "one", "data": 1},
        {"user_id": "dave", "event": "two", "data": 2},
        {"user_id": "dave", "event": "three", "data": 3},
    ]});
    let (status, body) = post_json(&server, "/v1/publish/batch", ALPHA, &batch).await;
    assert_eq!(status, 202, "{body}");
    let ids: Vec<u64> = body["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|id| id.as_str().unwrap().parse().unwrap())
        .collect();
    assert_eq!(ids.len(), 3);
    assert!(ids.windows(2).all(|pair| pair[0] < pair[1]));

    // One bad message refuses the whole batch.
    let bad = json!({"messages": [
        {"user_id": "dave", "event": "never", "data": 1},
        {"channel": "bad channel!", "event": "x", "data": 1},
    ]});
    let (status, body) = post_json(&server, "/v1/publish/batch", ALPHA, &bad).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("messages[1]")
    );

    publish(
        &server,
        ALPHA,
        json!({"user_id": "dave", "event": "sentinel", "data": 0}),
    )
    .await;
    let received = messages_until(&mut socket, "sentinel").await;
    assert_eq!(events(&received), ["one", "two", "three", "sentinel"]);
    let received_ids: Vec<u64> = received[..3]
        .iter()
        .map(|m| m["id"].as_str().unwrap().parse().unwrap())
        .collect();
    assert_eq!(received_ids, ids);
}

#[tokio::test]
async fn bad_publish_calls_get_clear_errors() {
    let config = format!("[limits]\nmax_publish_bytes = 1024\nmax_batch = 3\n{TWO_APPS}");
    let server = TestServer::start(&config);
    let big = json!({"channel": "c", "event": "e", "data": "x".repeat(2000)});
    let cases = [
        ("/v1/publish", ALPHA, big.clone(), 413, "payload_too_large"),
        (
            "/v1/publish",
            ("alpha-key", "nope"),
            json!({"channel": "c", "event": "e", "data": 1}),
            401,
            "unauthorized",
        ),
        (
            "/v1/publish",
            ALPHA,
            json!({"event": "e", "data": 1}),
            400,
            "invalid_request",
        ),
        (
            "/v1/publish",
            ALPHA,
            json!({"channel": "c", "user_id": "u", "event": "e", "data": 1}),
            400,
            "invalid_request",
        ),
        (
            "/v1/publish",
            ALPHA,
            json!({"channel": "c", "event": "e"}),
            400,
            "invalid_json",
        ),
        (
            "/v1/publish",
            ALPHA,
            json!({"channel": "c", "data": 1}),
            400,
            "invalid_json",
        ),
        (
            "/v1/publish",
            ALPHA,
            json!({"channel": "bad channel", "event": "e", "data": 1}),
            400,
            "invalid_request",
        ),
        (
            "/v1/publish",
            ALPHA,
            json!({"channel": "c", "event": "", "data": 1}),
            400,
            "invalid_request",
        ),
        (
            "/v1/publish",
            ALPHA,
            json!({"channel": "x".repeat(300), "event": "e", "data": 1}),
            400,
            "invalid_request",
        ),
        (
            "/v1/publish/batch",
            ALPHA,
            json!({"messages": []}),
            400,
            "invalid_request",
        ),
        (
            "/v1/publish/batch",
            ALPHA,
            json!({"messages": [big.clone()]}),
            413,
            "payload_too_large",
        ),
        (
            "/v1/publish/batch",
            ALPHA,
            json!({"messages": vec![json!({"channel": "c", "event": "e", "data": 1}); 4]}),
            400,
            "invalid_request",
        ),
    ];
    for (path, credentials, body, status, code) in cases {
        let (got_status, response) = post_json(&server, path, credentials, &body).await;
        assert_eq!(got_status, status, "{path} {body}: {response}");
        assert_eq!(response["error"]["code"], code, "{path} {body}: {response}");
    }
    let response = http()
        .post(server.url("/v1/publish"))
        .basic_auth(ALPHA.0, Some(ALPHA.1))
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
}

#[tokio::test]
async fn garbage_frames_get_errors_and_persistent_abuse_closes_the_socket() {
    let config = format!("[limits]\nmax_frame_errors = 5\n{TWO_APPS}");
    let server = TestServer::start(&config);
    let (_, mut socket) = open_socket(&server, ALPHA, json!({"channels": ["*"]})).await;
    let garbage = [
        (json!({"type": "subscribe"}), 4302),
        (
            json!({"type": "subscribe", "channel": "c", "since": "not-an-id"}),
            4302,
        ),
        (json!({"type": "publish", "channel": "c"}), 4302),
        (json!({"no": "type"}), 4300),
        (json!({"type": "teleport"}), 4301),
    ];
    for (frame, code) in garbage {
        send_json(&mut socket, frame.clone()).await;
        let error = next_json(&mut socket).await.unwrap();
        assert_eq!(error["type"], "error", "{frame}");
        assert_eq!(error["code"], code, "{frame}");
    }
    // Still usable after five refusals...
    send_json(&mut socket, json!({"type": "ping"})).await;
    assert_eq!(next_json(&mut socket).await.unwrap()["type"], "pong");
    // ...but the sixth within the window closes it.
    send_json(&mut socket, json!({"type": "teleport"})).await;
    assert_eq!(next_json(&mut socket).await.unwrap()["code"], 4301);
    assert_eq!(closed_with(&mut socket).await, 4102);
}

#[tokio::test]
async fn socket_caps_are_enforced_with_documented_codes() {
    let config = format!(
        "[limits]\nmax_subscriptions_per_socket = 2\nmax_sockets_per_token = 2\n{TWO_APPS}"
    );
    let server = TestServer::start(&config);
    let token = server.token(ALPHA, json!({"channels": ["*"]})).await;
    away_from_step_edge(30, 3).await;
    let (mut first, _) = connect(&token.url_with(&token.code(-1))).await.welcomed();
    let (_second, _) = connect(&token.url_with(&token.code(0))).await.welcomed();
    let (code, error) = connect(&token.url_with(&token.code(1))).await.refused();
    assert_eq!(code, 4101);
    assert_eq!(error["reason"], "over_capacity");

    assert_eq!(subscribe(&mut first, "a").await["type"], "subscribed");
    assert_eq!(subscribe(&mut first, "b").await["type"], "subscribed");
    let refused = subscribe(&mut first, "c").await;
    assert_eq!(refused["code"], 4305);
    assert_eq!(refused["reason"], "too_many_subscriptions");
}

#[tokio::test]
async fn a_slow_consumer_is_cut_off_while_a_healthy_socket_keeps_receiving() {
    let config = format!("[limits]\nsend_queue = 16\n{TWO_APPS}");
    let server = TestServer::start(&config);
    let (_, mut slow) = open_socket(&server, ALPHA, json!({"channels": ["firehose"]})).await;
    let (_, mut healthy) = open_socket(&server, ALPHA, json!({"channels": ["firehose"]})).await;
    subscribe(&mut slow, "firehose").await;
    subscribe(&mut healthy, "firehose").await;

    let reader = tokio::spawn(async move {
        let received = messages_until(&mut healthy, "sentinel").await;
        received.len()
    });
    // About 24 MB, one message at a time: far more than the socket buffers
    // and the queue hold for a socket that does not read, while a reading
    // socket keeps up.
    let payload = "x".repeat(60 * 1024);
    let count = 400;
    for _ in 0..count {
        publish(
            &server,
            ALPHA,
            json!({"channel": "firehose", "event": "bulk", "data": payload}),
        )
        .await;
    }
    publish(
        &server,
        ALPHA,
        json!({"channel": "firehose", "event": "sentinel", "data": 0}),
    )
    .await;

    let healthy_count = tokio::time::timeout(Duration::from_secs(60), reader)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        healthy_count,
        count + 1,
        "the healthy socket got everything"
    );
    assert_eq!(close_code_skipping_messages(&mut slow).await, Some(4202));
}

#[tokio::test]
async fn hundreds_of_subscribers_each_receive_one_publish_exactly_once() {
    let server = TestServer::start(TWO_APPS);
    let subscribers = 300;
    let mut sockets = Vec::with_capacity(subscribers);
    away_from_step_edge(30, 10).await;
    for _ in 0..subscribers {
        let token = server.token(ALPHA, json!({"channels": ["crowd"]})).await;
        let (mut socket, _) = connect(&token.url_with(&token.code(0))).await.welcomed();
        assert_eq!(subscribe(&mut socket, "crowd").await["type"], "subscribed");
        sockets.push(socket);
    }
    let id = publish(
        &server,
        ALPHA,
        json!({"channel": "crowd", "event": "announcement", "data": {"n": 1}}),
    )
    .await;
    publish(
        &server,
        ALPHA,
        json!({"channel": "crowd", "event": "sentinel", "data": 0}),
    )
    .await;
    for socket in &mut sockets {
        let received = messages_until(socket, "sentinel").await;
        assert_eq!(events(&received), ["announcement", "sentinel"]);
        assert_eq!(received[0]["id"], id.as_str());
    }
}

#[tokio::test]
async fn metrics_count_connects_publishes_and_plugin_calls_for_the_operator_only() {
    let token_line = "operator_token = \"operator-token-0123456789\"\n";
    let server = TestServer::start(&format!("{token_line}{TWO_APPS}"));
    let (token, mut socket) = open_socket(&server, ALPHA, json!({"user_id": "erin"})).await;
    let (code, _) = connect(&token.url_with("000000")).await.refused();
    assert!(code == 4002 || code == 4003, "{code}");
    publish(
        &server,
        ALPHA,
        json!({"user_id": "erin", "event": "sentinel", "data": 1}),
    )
    .await;
    messages_until(&mut socket, "sentinel").await;

    let unauthorized = http().get(server.url("/metrics")).send().await.unwrap();
    assert_eq!(unauthorized.status(), 401);
    // A delivery is counted just after the hand-off that let the socket
    // read it: give the count a moment to land.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let text = loop {
        let response = http()
            .get(server.url("/metrics"))
            .bearer_auth("operator-token-0123456789")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let text = response.text().await.unwrap();
        if text.contains(r#"madx_deliveries_total{app="alpha"} 1"#)
            || tokio::time::Instant::now() > deadline
        {
            break text;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    for expected in [
        r#"madx_connects_total{app="alpha",outcome="accepted"} 1"#,
        r#"madx_sockets_open{app="alpha"} 1"#,
        r#"madx_publishes_total{app="alpha",source="api"} 1"#,
        r#"madx_deliveries_total{app="alpha"} 1"#,
        // Both verifies ran fine; one said the code was wrong.
        r#"madx_plugin_calls_total{plugin="auth",call="verify",outcome="ok"} 2"#,
        r#"madx_plugin_calls_total{plugin="router",call="route-publish",outcome="ok"} 1"#,
        "madx_plugin_call_seconds_bucket",
        // Delivered: nothing waits to be handed off.
        "madx_hand_off_backlog 0",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in\n{text}");
    }
    assert!(
        text.contains(r#"madx_connects_total{app="alpha",outcome="otp_"#),
        "{text}"
    );

    // Without a configured token, metrics are off.
    let plain = TestServer::start(TWO_APPS);
    let off = http().get(plain.url("/metrics")).send().await.unwrap();
    assert_eq!(off.status(), 404);
}

#[tokio::test]
async fn a_peer_that_stops_reading_does_not_hold_its_session() {
    let config =
        format!("heartbeat_secs = 1\noperator_token = \"operator-token-0123456789\"\n{TWO_APPS}");
    let server = TestServer::start(&config);
    let (_, mut stalled) = open_socket(&server, ALPHA, json!({"channels": ["firehose"]})).await;
    subscribe(&mut stalled, "firehose").await;
    // Never read again: fill every buffer between server and client.
    let payload = "x".repeat(60 * 1024);
    for _ in 0..400 {
        publish(
            &server,
            ALPHA,
            json!({"channel": "firehose", "event": "bulk", "data": payload}),
        )
        .await;
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let text = http()
            .get(server.url("/metrics"))
            .bearer_auth("operator-token-0123456789")
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if text.contains(r#"madx_sockets_open{app="alpha"} 0"#) {
            assert!(
                text.contains(r#"reason="slow_consumer"} 1"#)
                    || text.contains(r#"reason="heartbeat_timeout"} 1"#),
                "{text}"
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the session is still open:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(stalled);
}

#[tokio::test]
async fn a_client_that_received_nothing_resumes_from_the_announced_position() {
    let server = TestServer::start(TWO_APPS);
    check_resume_from_announced_position(&server, ALPHA).await;
}
