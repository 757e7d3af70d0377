//! Signed webhooks against the real binary and a real HTTP receiver that
//! checks `X-Pusher-Key` and `X-Pusher-Signature` itself
//! (`madx_test_support::WebhookReceiver`).

use std::process::Command;

use crate::common::*;
use serde_json::{Value, json};

const OPERATOR: &str = "operator-token-0123456789";

/// Two apps; only alpha has a webhook, for client events, at `url`, with
/// the `[webhooks]` tunables given.
fn config(url: &str, tunables: &str) -> String {
    format!(
        r#"operator_token = "{OPERATOR}"
[webhooks]
{tunables}

[[apps]]
id = "alpha"
key = "alpha-key"
secret = "alpha-secret"
[[apps.webhooks]]
url = "{url}"
events = ["client_event"]

[[apps]]
id = "beta"
key = "beta-key"
secret = "beta-secret"
"#
    )
}

fn chat_claims(user_id: &str) -> Value {
    json!({"user_id": user_id, "channels": ["chat.*"], "publish": ["chat.*"]})
}

async fn say(socket: &mut Socket, event: &str, data: Value) {
    send_json(
        socket,
        json!({"type": "publish", "channel": "chat.room", "event": event, "data": data}),
    )
    .await;
}

/// The server's metrics, once `line` is among them (or after PATIENCE).
async fn metrics_once_they_show(server: &TestServer, line: &str) -> String {
    let deadline = std::time::Instant::now() + PATIENCE;
    let mut metrics = server.metrics(OPERATOR).await;
    while !metrics.lines().any(|shown| shown == line) && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        metrics = server.metrics(OPERATOR).await;
    }
    metrics
}

fn event_names(events: &[Value]) -> Vec<&str> {
    events
        .iter()
        .map(|event| event["event"].as_str().unwrap_or("?"))
        .collect()
}

#[tokio::test]
async fn a_client_event_arrives_signed_in_pushers_format() {
    let receiver = WebhookReceiver::start("alpha-key", "alpha-secret").await;
    let server = TestServer::start(&config(&receiver.url, ""));
    let token = server.token(ALPHA, chat_claims("alice")).await;
    away_from_step_edge(30, 2).await;
    let (mut talker, welcome) = connect(&token.url_with(&token.code(0))).await.welcomed();
    let socket_id = welcome["connection_id"].as_str().expect("connection_id");
    // Beta publishes too: its events go to no webhook of alpha's.
    let (_, mut beta) = open_socket(&server, BETA, chat_claims("bob")).await;

    let before = unix_now() * 1000;
    say(&mut talker, "said", json!({"text": "hi"})).await;
    say(&mut beta, "elsewhere", json!(1)).await;
    // Neither an API publish nor a refused client publish is a client event.
    publish(
        &server,
        ALPHA,
        json!({"channel": "chat.room", "event": "from-api", "data": 1}),
    )
    .await;
    send_json(
        &mut talker,
        json!({"type": "publish", "channel": "admin", "event": "denied", "data": 1}),
    )
    .await;
    assert_eq!(next_json(&mut talker).await.unwrap()["code"], 4303);
    say(&mut talker, "last", json!(null)).await;

    let events = receiver.wait_for_events(2).await;
    let after = unix_now() * 1000 + 1000;
    assert_eq!(
        events,
        [
            json!({
                "name": "client_event",
                "channel": "chat.room",
                "event": "said",
                "data": "{\"text\":\"hi\"}",
                "socket_id": socket_id,
                "user_id": "alice",
            }),
            json!({
                "name": "client_event",
                "channel": "chat.room",
                "event": "last",
                "data": "null",
                "socket_id": socket_id,
                "user_id": "alice",
            }),
        ]
    );
    for request in receiver.delivered() {
        assert_eq!(request.content_type.as_deref(), Some("application/json"));
        let time_ms = request.body["time_ms"].as_u64().expect("time_ms");
        assert!((before..after).contains(&time_ms), "time_ms {time_ms}");
    }
    assert_eq!(receiver.badly_signed(), 0);
}

#[tokio::test]
async fn a_receiver_that_fails_then_recovers_gets_every_event_once_in_order() {
    let receiver = WebhookReceiver::start("alpha-key", "alpha-secret").await;
    receiver.fail_next(3);
    let server = TestServer::start(&config(
        &receiver.url,
        "batch_max = 3\nretry_min_ms = 20\nretry_max_ms = 100",
    ));
    let (_, mut talker) = open_socket(&server, ALPHA, chat_claims("alice")).await;

    let sent: Vec<String> = (0..10).map(|n| format!("e{n}")).collect();
    for event in &sent {
        say(&mut talker, event, json!({"n": event})).await;
    }

    let events = receiver.wait_for_events(sent.len()).await;
    // 503s are answered, never accepted: each event arrives exactly once.
    assert_eq!(event_names(&events), sent);
    assert_eq!(receiver.failed(), 3);
    assert_eq!(receiver.badly_signed(), 0);
    let batches = receiver.delivered();
    assert!(
        batches
            .iter()
            .all(|batch| (1..=3).contains(&batch.body["events"].as_array().map_or(0, Vec::len))),
        "batches of 1 to batch_max events"
    );

    // The sender counts a batch once the receiver's answer is in: wait
    // for the last one.
    let sent = "madx_webhook_events_sent_total{app=\"alpha\"} 10";
    let metrics = metrics_once_they_show(&server, sent).await;
    for line in [
        sent,
        "madx_webhook_requests_failed_total{app=\"alpha\"} 3",
        "madx_webhook_queue_events{app=\"alpha\"} 0",
        &format!(
            "madx_webhook_request_duration_seconds_count{{app=\"alpha\"}} {}",
            batches.len() + 3
        ),
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line} in\n{metrics}");
    }
}

/// A receiver that refuses a batch as too large (413) gets it in halves,
/// in order; an event it refuses on its own is dropped and counted, and
/// the webhook goes on.
#[tokio::test]
async fn a_batch_refused_as_too_large_is_split_and_an_event_too_large_alone_dropped() {
    let receiver = WebhookReceiver::start("alpha-key", "alpha-secret").await;
    // Two events of 2,000 bytes of data fit; three, or the big one, do not.
    receiver.refuse_bodies_over(5_000);
    // The first request fails, so the rest queue up behind it.
    receiver.fail_next(1);
    let server = TestServer::start(&config(
        &receiver.url,
        "batch_max = 10\nretry_min_ms = 300\nretry_max_ms = 300",
    ));
    let (_, mut talker) = open_socket(&server, ALPHA, chat_claims("alice")).await;
    let sizes = [2_000, 2_000, 2_000, 2_000, 8_000, 2_000];
    for (n, size) in sizes.iter().enumerate() {
        say(&mut talker, &format!("e{n}"), json!("x".repeat(*size))).await;
    }

    let events = receiver.wait_for_events(5).await;
    assert_eq!(event_names(&events), ["e0", "e1", "e2", "e3", "e5"]);
    // At least the big event alone; on a slow machine the events may not
    // have queued up behind the first, and none other is split.
    assert!(
        receiver.too_large() >= 1,
        "{} refused",
        receiver.too_large()
    );
    let dropped = "madx_webhook_events_dropped_total{app=\"alpha\"} 1";
    let metrics = metrics_once_they_show(&server, dropped).await;
    assert!(
        metrics.lines().any(|l| l == dropped),
        "{dropped} in\n{metrics}"
    );

    // The webhook goes on.
    say(&mut talker, "after", json!(1)).await;
    let events = receiver.wait_for_events(6).await;
    assert_eq!(event_names(&events)[5], "after");
}

#[tokio::test]
async fn a_hanging_receiver_does_not_hold_up_sockets() {
    let receiver = WebhookReceiver::start("alpha-key", "alpha-secret").await;
    receiver.hang(true);
    // Requests time out and are retried, and hang again, until the
    // receiver answers.
    let server = TestServer::start(&config(
        &receiver.url,
        "timeout_ms = 500\nretry_min_ms = 20\nretry_max_ms = 100",
    ));
    let (_, mut talker) = open_socket(&server, ALPHA, chat_claims("alice")).await;
    let (_, mut listener) = open_socket(&server, ALPHA, chat_claims("carol")).await;
    assert_eq!(
        subscribe(&mut listener, "chat.room").await["type"],
        "subscribed"
    );

    say(&mut talker, "stuck", json!(0)).await;
    receiver.wait_for_hanging().await;
    for n in 1..=5 {
        say(&mut talker, &format!("m{n}"), json!(n)).await;
    }
    // From the same socket, so it comes after the others.
    say(&mut talker, "sentinel", json!(0)).await;

    // The socket has everything while the webhook has nothing yet.
    let delivered = messages_until(&mut listener, "sentinel").await;
    assert_eq!(
        events(&delivered),
        ["stuck", "m1", "m2", "m3", "m4", "m5", "sentinel"]
    );
    assert!(receiver.events().is_empty());

    // Once the receiver answers, the queued events follow, in order, once.
    receiver.hang(false);
    let webhook_events = receiver.wait_for_events(7).await;
    assert_eq!(
        event_names(&webhook_events),
        ["stuck", "m1", "m2", "m3", "m4", "m5", "sentinel"]
    );
    assert!(receiver.requests() > receiver.delivered().len());
    assert_eq!(receiver.badly_signed(), 0);
}

// Multi-threaded: the receiver keeps answering while this test blocks
// waiting for the node to exit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_events_are_flushed_on_graceful_shutdown() {
    let receiver = WebhookReceiver::start("alpha-key", "alpha-secret").await;
    receiver.fail_next(2);
    let mut server = TestServer::start(&config(
        &receiver.url,
        "retry_min_ms = 100\nretry_max_ms = 200",
    ));
    let (_, mut talker) = open_socket(&server, ALPHA, chat_claims("alice")).await;
    assert_eq!(
        subscribe(&mut talker, "chat.room").await["type"],
        "subscribed"
    );
    say(&mut talker, "before-exit", json!(0)).await;
    // The session queues the webhook event before it reads its mailbox
    // again, so its own copy coming back means the event is queued.
    messages_until(&mut talker, "before-exit").await;
    // Ask the node to stop while the event still waits for its retries.
    let status = Command::new("kill")
        .args(["-TERM", &server.pid().to_string()])
        .status()
        .expect("send SIGTERM");
    assert!(status.success());
    assert!(
        server.wait_for_exit(PATIENCE).is_some(),
        "the node did not exit"
    );
    assert_eq!(event_names(&receiver.events()), ["before-exit"]);
}

#[test]
fn bad_webhook_config_stops_start_up_with_a_clear_message() {
    let app = "[[apps]]\nid = \"a\"\nkey = \"key-a\"\nsecret = \"secret-a\"\n[[apps.webhooks]]\n";
    let cases = [
        (
            "url = \"http://127.0.0.1:9/hook\"\nevents = [\"nope\"]",
            "unknown variant `nope`, expected one of `channel_occupied`",
        ),
        (
            "url = \"ftp://x\"\nevents = [\"client_event\"]",
            "apps[id = \"a\"].webhooks[0].url must be an http:// or https:// URL with a host, got \"ftp://x\"",
        ),
    ];
    for (webhook, expected) in cases {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, format!("listen = \"127.0.0.1:0\"\n{app}{webhook}\n")).unwrap();
        let output = Command::new(env!("CARGO_BIN_EXE_madx-pusher"))
            .args(["serve", "--config", path.to_str().unwrap()])
            .output()
            .expect("run madx-pusher");
        assert_eq!(output.status.code(), Some(2), "{webhook}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(expected), "{webhook}: {stderr}");
    }
}

#[tokio::test]
async fn a_full_queue_drops_new_events_counts_and_logs_them() {
    let receiver = WebhookReceiver::start("alpha-key", "alpha-secret").await;
    receiver.hang(true);
    let server = TestServer::start_logging(
        &config(
            &receiver.url,
            "queue = 2\ntimeout_ms = 500\nretry_min_ms = 20\nretry_max_ms = 100",
        ),
        &[],
        "warn",
    );
    let (_, mut talker) = open_socket(&server, ALPHA, chat_claims("alice")).await;
    assert_eq!(
        subscribe(&mut talker, "chat.room").await["type"],
        "subscribed"
    );
    say(&mut talker, "in-flight", json!(0)).await;
    receiver.wait_for_hanging().await;
    // Two fit in the queue; the next three are dropped.
    for event in ["q1", "q2", "dropped-1", "dropped-2", "dropped-3"] {
        say(&mut talker, event, json!(0)).await;
    }
    // Its own copies coming back mean the session has queued (or dropped)
    // every event.
    messages_until(&mut talker, "dropped-3").await;

    let metrics = server.metrics(OPERATOR).await;
    for line in [
        "madx_webhook_events_dropped_total{app=\"alpha\"} 3",
        "madx_webhook_queue_events{app=\"alpha\"} 2",
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line} in\n{metrics}");
    }
    let log = server.log();
    assert!(
        log.contains("webhook queue full") && log.contains(&receiver.url),
        "{log}"
    );

    receiver.hang(false);
    let events = receiver.wait_for_events(3).await;
    assert_eq!(event_names(&events), ["in-flight", "q1", "q2"]);
}
