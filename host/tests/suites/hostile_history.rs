//! Hostile clients against history and client publishes: a flood of large
//! messages to channels nobody watches stays within the history byte
//! budget, and a socket publishing over its rate is refused, then closed,
//! while everyone else carries on.

use crate::common::*;
use serde_json::{Value, json};

const OPERATOR: &str = "operator-token-0123456789";
/// The history budget of the flood test.
const BUDGET: u64 = 2 << 20;

/// `GET /metrics` as the operator.
async fn metrics(server: &TestServer) -> String {
    let response = http()
        .get(server.url("/metrics"))
        .bearer_auth(OPERATOR)
        .send()
        .await
        .expect("GET /metrics");
    assert_eq!(response.status(), 200);
    response.text().await.expect("metrics text")
}

/// The value of a series without labels (or the first with them).
fn metric(text: &str, series: &str) -> u64 {
    text.lines()
        .find_map(|line| {
            let value = line.strip_prefix(series)?.strip_prefix(' ')?;
            value.parse().ok()
        })
        .unwrap_or_else(|| panic!("no {series} in\n{text}"))
}

/// Send `publish` frames, then a `ping`; every frame answered up to the
/// `pong` (the server handles a socket's frames in order).
async fn publish_then_ping(
    socket: &mut Socket,
    frames: impl IntoIterator<Item = Value>,
) -> Vec<Value> {
    for frame in frames {
        send_json(socket, frame).await;
    }
    send_json(socket, json!({"type": "ping"})).await;
    let mut answers = Vec::new();
    loop {
        let frame = next_json(socket).await.expect("socket closed before pong");
        if frame["type"] == "pong" {
            return answers;
        }
        answers.push(frame);
    }
}

#[tokio::test]
async fn a_history_flood_stays_within_the_byte_budget_and_honest_clients_carry_on() {
    let config = format!(
        "operator_token = \"{OPERATOR}\"\n\
         [history]\nmax_bytes = {BUDGET}\nmax_bytes_per_app = {BUDGET}\n\
         [limits]\nclient_publish_per_sec = 10000\nclient_publish_burst = 10000\n\
         token_publish_per_sec = 10000\ntoken_publish_burst = 10000\n{TWO_APPS}"
    );
    let server = TestServer::start(&config);
    let (_, mut honest) = open_socket(&server, ALPHA, json!({"channels": ["news"]})).await;
    assert_eq!(subscribe(&mut honest, "news").await["type"], "subscribed");
    let old: Vec<String> = {
        let mut ids = Vec::new();
        for event in ["old-1", "old-2"] {
            let body = json!({"channel": "news", "event": event, "data": 1});
            ids.push(publish(&server, ALPHA, body).await);
        }
        ids
    };
    assert_eq!(
        events(&messages_until(&mut honest, "old-2").await),
        ["old-1", "old-2"]
    );

    // 150 x 60 KB through the API and 150 through a socket with a publish
    // grant, each to its own channel nobody watches: over 8 times the budget.
    let payload = "x".repeat(60 * 1024);
    for n in 0..150 {
        let body = json!({"channel": format!("void-api-{n}"), "event": "flood", "data": payload});
        publish(&server, ALPHA, body).await;
    }
    let (_, mut attacker) = open_socket(&server, ALPHA, json!({"publish": ["void-*"]})).await;
    let frames = (0..150).map(|n| {
        json!({"type": "publish", "channel": format!("void-ws-{n}"), "event": "flood", "data": payload})
    });
    let refusals = publish_then_ping(&mut attacker, frames).await;
    assert!(refusals.is_empty(), "publishes refused: {refusals:?}");

    let text = metrics(&server).await;
    let bytes = metric(&text, "madx_history_bytes");
    assert!(
        bytes <= BUDGET,
        "history holds {bytes} bytes, over {BUDGET}"
    );
    // What is kept is about a budget's worth of the newest messages.
    assert!(bytes > BUDGET / 2, "history holds only {bytes} bytes");
    assert!(
        text.contains(r#"madx_publishes_total{app="alpha",source="socket"} 150"#),
        "{text}"
    );

    // The honest subscriber still gets new messages, and nothing else.
    publish(
        &server,
        ALPHA,
        json!({"channel": "news", "event": "after", "data": 2}),
    )
    .await;
    assert_eq!(
        events(&messages_until(&mut honest, "after").await),
        ["after"]
    );

    // Recovery from before the flood: the old messages were dropped for
    // bytes, so it says so. From a recent id: exactly what followed.
    let mut recent = Vec::new();
    for event in ["r1", "r2", "r3"] {
        let body = json!({"channel": "news", "event": event, "data": 3});
        recent.push(publish(&server, ALPHA, body).await);
    }
    let (_, mut late) = open_socket(&server, ALPHA, json!({"channels": ["news"]})).await;
    send_json(
        &mut late,
        json!({"type": "subscribe", "channel": "news", "since": old[0]}),
    )
    .await;
    let subscribed = next_json(&mut late).await.expect("subscribed");
    assert_eq!(subscribed["recovered"], false, "{subscribed}");
    let replay = messages_until(&mut late, "r3").await;
    assert_eq!(events(&replay), ["after", "r1", "r2", "r3"]);

    send_json(&mut late, json!({"type": "unsubscribe", "channel": "news"})).await;
    assert_eq!(next_json(&mut late).await.unwrap()["type"], "unsubscribed");
    send_json(
        &mut late,
        json!({"type": "subscribe", "channel": "news", "since": recent[0]}),
    )
    .await;
    let subscribed = next_json(&mut late).await.expect("subscribed");
    assert_eq!(subscribed["recovered"], true, "{subscribed}");
    let replay = messages_until(&mut late, "r3").await;
    let ids: Vec<&str> = replay.iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert_eq!(ids, [recent[1].as_str(), recent[2].as_str()]);

    // The other app's history is its own: its budget was not touched.
    let beta_id = publish(
        &server,
        BETA,
        json!({"channel": "news", "event": "b", "data": 4}),
    )
    .await;
    let (_, mut beta) = open_socket(&server, BETA, json!({"channels": ["news"]})).await;
    let before = (beta_id.parse::<u64>().unwrap() - 1).to_string();
    send_json(
        &mut beta,
        json!({"type": "subscribe", "channel": "news", "since": before}),
    )
    .await;
    let subscribed = next_json(&mut beta).await.expect("subscribed");
    assert_eq!(subscribed["type"], "subscribed", "{subscribed}");
    assert_eq!(events(&messages_until(&mut beta, "b").await), ["b"]);
}

#[tokio::test]
async fn one_app_cannot_take_the_other_apps_history() {
    // Two apps: each gets half the budget by default.
    let config =
        format!("operator_token = \"{OPERATOR}\"\n[history]\nmax_bytes = {BUDGET}\n{TWO_APPS}");
    let server = TestServer::start(&config);
    let kept = publish(
        &server,
        BETA,
        json!({"channel": "keep", "event": "kept", "data": 1}),
    )
    .await;
    let payload = "y".repeat(60 * 1024);
    for n in 0..80 {
        let body = json!({"channel": format!("void-{n}"), "event": "flood", "data": payload});
        publish(&server, ALPHA, body).await;
    }
    let bytes = metric(&metrics(&server).await, "madx_history_bytes");
    assert!(bytes <= BUDGET / 2 + 4096, "history holds {bytes} bytes");

    let (_, mut socket) = open_socket(&server, BETA, json!({"channels": ["keep"]})).await;
    let before = (kept.parse::<u64>().unwrap() - 1).to_string();
    send_json(
        &mut socket,
        json!({"type": "subscribe", "channel": "keep", "since": before}),
    )
    .await;
    let subscribed = next_json(&mut socket).await.expect("subscribed");
    assert_eq!(subscribed["recovered"], true, "{subscribed}");
    let replay = messages_until(&mut socket, "kept").await;
    assert_eq!(replay[0]["id"], kept.as_str());
}

#[tokio::test]
async fn publishing_over_the_rate_is_refused_then_closed_per_socket_and_per_token() {
    let config = format!(
        "operator_token = \"{OPERATOR}\"\n\
         [limits]\nclient_publish_per_sec = 1\nclient_publish_burst = 5\n\
         token_publish_per_sec = 1\ntoken_publish_burst = 8\n{TWO_APPS}"
    );
    let server = TestServer::start(&config);
    let claims = json!({"channels": ["room"], "publish": ["room"]});
    let token = server.token(ALPHA, claims.clone()).await;
    away_from_step_edge(30, 3).await;
    let (mut first, _) = connect(&token.url_with(&token.code(0))).await.welcomed();
    let (mut second, _) = connect(&token.url_with(&token.code(1))).await.welcomed();
    let (_, mut other) = open_socket(&server, ALPHA, claims).await;
    for socket in [&mut first, &mut second, &mut other] {
        assert_eq!(subscribe(socket, "room").await["type"], "subscribed");
    }
    let said = |n: usize| json!({"type": "publish", "channel": "room", "event": format!("m{n}"), "data": n});

    // One socket: its burst of 5 goes through (each echoed to it as a
    // message), the rest of 15 is refused with 4308.
    let answers = publish_then_ping(&mut first, (0..15).map(said)).await;
    let (messages, errors): (Vec<&Value>, Vec<&Value>) =
        answers.iter().partition(|frame| frame["type"] == "message");
    assert!(
        answers[..5].iter().all(|frame| frame["type"] == "message"),
        "{answers:?}"
    );
    // At 1 per second, a slow run may earn one or two more.
    assert!(errors.len() >= 8, "{answers:?}");
    for error in &errors {
        assert_eq!(error["code"], 4308, "{error}");
        assert_eq!(error["reason"], "rate_limited", "{error}");
        assert_eq!(error["frame"], "publish", "{error}");
        assert_eq!(error["channel"], "room", "{error}");
    }
    let first_accepted = messages.len();

    // The token's second socket has its own socket burst (5) but shares the
    // token's bucket (8), which the first socket mostly spent.
    let answers = publish_then_ping(&mut second, (20..30).map(said)).await;
    let own: Vec<&Value> = answers
        .iter()
        .filter(|frame| frame["type"] == "message" && frame["data"].as_u64() >= Some(20))
        .collect();
    let errors = answers.iter().filter(|frame| frame["code"] == 4308).count();
    assert!(
        own.len() < 5 && own.len() + first_accepted <= 10,
        "the token's bucket did not hold: {} then {}",
        first_accepted,
        own.len()
    );
    assert!(errors >= 5, "{answers:?}");

    // Keeping on: more than max_frame_errors (20) refused frames within
    // 10 s close the socket with 4102.
    for n in 100..130 {
        send_json(&mut second, said(n)).await;
    }
    assert_eq!(close_code_skipping_messages(&mut second).await, Some(4102));

    // Another token publishes as usual.
    let answers = publish_then_ping(&mut other, (200..203).map(said)).await;
    let accepted: Vec<&Value> = answers
        .iter()
        .filter(|frame| frame["type"] == "message" && frame["data"].as_u64() >= Some(200))
        .collect();
    assert_eq!(accepted.len(), 3, "{answers:?}");
    assert!(
        answers.iter().all(|frame| frame["type"] == "message"),
        "{answers:?}"
    );

    let text = metrics(&server).await;
    let refused = text
        .lines()
        .find_map(|line| {
            line.strip_prefix(r#"madx_publishes_refused_total{app="alpha",reason="rate_limited"} "#)
        })
        .and_then(|value| value.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("no refusal count in\n{text}"));
    assert!(refused >= 8 + 5 + 15, "{refused}");
}
