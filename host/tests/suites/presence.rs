//! Presence channels against the real binary: members with several sockets
//! per user, `member_added`/`member_removed` to the other subscribers, the
//! member cap, the channel queries, and across nodes on a real Redis, a
//! member on a SIGKILLed node removed once.

use std::time::{Duration, Instant};

use crate::common::*;
use serde_json::{Value, json};

const ROOM: &str = "presence-room";

/// Presence with a small cap, so the cap is testable.
const CAPPED: &str = "[presence]\nmax_members = 2\n";

/// A socket of `user` (a fresh token with `info`) subscribed to `ROOM`;
/// the `subscribed` frame.
async fn member(server: &TestServer, user: &str, info: Value) -> (Socket, Value) {
    let claims = json!({"user_id": user, "channels": ["presence-*", "news"], "user_info": info});
    let (_, mut socket) = open_socket(server, ALPHA, claims).await;
    let subscribed = subscribe(&mut socket, ROOM).await;
    assert_eq!(subscribed["type"], "subscribed", "{subscribed}");
    (socket, subscribed)
}

/// The user ids a `subscribed` frame lists.
fn listed(subscribed: &Value) -> Vec<&str> {
    subscribed["members"]
        .as_array()
        .expect("members")
        .iter()
        .map(|member| member["user_id"].as_str().unwrap())
        .collect()
}

/// Publish a sentinel to `news` and return every presence frame a socket
/// (which is subscribed to `news`) got before it (earlier sentinels are
/// skipped).
async fn frames_before_sentinel(
    server: &TestServer,
    socket: &mut Socket,
    sentinel: &str,
) -> Vec<Value> {
    publish(
        server,
        ALPHA,
        json!({"channel": "news", "event": sentinel, "data": 0}),
    )
    .await;
    let mut frames = Vec::new();
    loop {
        let frame = next_json(socket)
            .await
            .expect("a frame before the sentinel");
        if frame["event"] == sentinel {
            return frames;
        }
        if frame["type"] != "message" {
            frames.push(frame);
        }
    }
}

/// The next frame that is not a message.
async fn next_presence_frame(socket: &mut Socket) -> Value {
    loop {
        let frame = next_json(socket).await.expect("a presence frame");
        if frame["type"] != "message" {
            return frame;
        }
    }
}

/// Poll until the channel has `count` subscriptions on the server.
async fn wait_for_subscriptions(server: &TestServer, channel: &str, count: u64) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let (_, info) = get(server, &format!("/v1/channels/{channel}")).await;
        if info["subscription_count"] == count {
            return;
        }
        assert!(Instant::now() < deadline, "{channel} stays at {info}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// GET with Basic auth; status and JSON body.
async fn get(server: &TestServer, path: &str) -> (u16, Value) {
    let (key, secret) = ALPHA;
    let response = http()
        .get(server.url(path))
        .basic_auth(key, Some(secret))
        .send()
        .await
        .expect("GET");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn members_join_once_per_user_and_leave_with_their_last_socket() {
    let server = TestServer::start(TWO_APPS);
    let (mut ann_one, subscribed) = member(&server, "ann", json!({"name": "Ann"})).await;
    assert_eq!(
        subscribed["members"],
        json!([{"user_id": "ann", "user_info": {"name": "Ann"}}]),
        "the member list names the subscriber, with its user_info"
    );
    assert_eq!(subscribe(&mut ann_one, "news").await["type"], "subscribed");

    let (mut bob, subscribed) = member(&server, "bob", Value::Null).await;
    assert_eq!(listed(&subscribed), ["ann", "bob"]);
    assert_eq!(subscribe(&mut bob, "news").await["type"], "subscribed");
    let seen = frames_before_sentinel(&server, &mut ann_one, "s1").await;
    assert_eq!(
        seen,
        [json!({"type": "member_added", "channel": ROOM, "user_id": "bob"})],
        "ann is told of bob (without user_info: his token had none)"
    );
    // Bob was not told about himself: `subscribed` listed him.
    assert!(
        frames_before_sentinel(&server, &mut bob, "s2")
            .await
            .is_empty()
    );

    // Ann's second socket: still one member, nobody is told.
    let (mut ann_two, subscribed) = member(&server, "ann", json!({"name": "Ann"})).await;
    assert_eq!(listed(&subscribed), ["ann", "bob"]);
    assert!(
        frames_before_sentinel(&server, &mut bob, "s3")
            .await
            .is_empty()
    );

    // One of ann's sockets closes: she is still there.
    drop(ann_one);
    let (status, members) = get(&server, &format!("/v1/channels/{ROOM}/members")).await;
    assert_eq!(status, 200, "{members}");
    assert_eq!(members["count"], 2, "{members}");
    assert!(
        frames_before_sentinel(&server, &mut bob, "s4")
            .await
            .is_empty()
    );

    // Her last one leaves the channel: bob is told, once.
    send_json(
        &mut ann_two,
        json!({"type": "unsubscribe", "channel": ROOM}),
    )
    .await;
    assert_eq!(
        next_json(&mut ann_two).await.unwrap()["type"],
        "unsubscribed"
    );
    let seen = frames_before_sentinel(&server, &mut bob, "s5").await;
    assert_eq!(
        seen,
        [json!({"type": "member_removed", "channel": ROOM, "user_id": "ann"})]
    );
    let (_, members) = get(&server, &format!("/v1/channels/{ROOM}/members")).await;
    assert_eq!(
        members,
        json!({"count": 1, "members": [{"user_id": "bob"}]})
    );
}

#[tokio::test]
async fn a_closed_socket_leaves_and_the_queries_count_members() {
    let server = TestServer::start(TWO_APPS);
    let (carl, _) = member(&server, "carl", json!({"seat": 3})).await;
    let (mut dee, _) = member(&server, "dee", Value::Null).await;
    assert_eq!(subscribe(&mut dee, "news").await["type"], "subscribed");

    let (status, channel) = get(&server, &format!("/v1/channels/{ROOM}")).await;
    assert_eq!(status, 200);
    assert_eq!(
        channel,
        json!({"occupied": true, "subscription_count": 2, "user_count": 2})
    );
    let (_, listing) = get(&server, "/v1/channels?prefix=presence-").await;
    assert_eq!(
        listing,
        json!({"channels": {ROOM: {"occupied": true, "subscription_count": 2, "user_count": 2}}})
    );
    let (_, news) = get(&server, "/v1/channels/news").await;
    assert_eq!(
        news,
        json!({"occupied": true, "subscription_count": 1}),
        "no user_count: not presence"
    );
    let (status, error) = get(&server, "/v1/channels/news/members").await;
    assert_eq!(status, 404, "not a presence channel: no member list");
    assert_eq!(error["error"]["code"], "not_found");

    // Closing the socket (not unsubscribing) removes the member too.
    drop(carl);
    assert_eq!(
        next_presence_frame(&mut dee).await,
        json!({"type": "member_removed", "channel": ROOM, "user_id": "carl"})
    );
    assert!(
        frames_before_sentinel(&server, &mut dee, "gone")
            .await
            .is_empty()
    );
    let (_, channel) = get(&server, &format!("/v1/channels/{ROOM}")).await;
    assert_eq!(channel["user_count"], 1);
}

#[tokio::test]
async fn presence_needs_a_user_and_holds_at_most_max_members() {
    let server = TestServer::start(&format!("{TWO_APPS}{CAPPED}"));
    // No user: no membership.
    let (_, mut anonymous) = open_socket(&server, ALPHA, json!({"channels": ["presence-*"]})).await;
    let refused = subscribe(&mut anonymous, ROOM).await;
    assert_eq!(refused["code"], 4303, "{refused}");
    assert!(refused["message"].as_str().unwrap().contains("user_id"));

    let (_first, _) = member(&server, "u1", Value::Null).await;
    let (_second, _) = member(&server, "u2", Value::Null).await;
    let claims = json!({"user_id": "u3", "channels": ["presence-*"]});
    let (_, mut third) = open_socket(&server, ALPHA, claims).await;
    let refused = subscribe(&mut third, ROOM).await;
    assert_eq!(refused["type"], "error");
    assert_eq!(refused["code"], 4309, "{refused}");
    assert_eq!(refused["reason"], "presence_full");
    // A user already in still subscribes with another socket.
    let (_u1_again, subscribed) = member(&server, "u1", Value::Null).await;
    assert_eq!(listed(&subscribed), ["u1", "u2"]);
    // And the refused socket was not left subscribed.
    let (_, channel) = get(&server, &format!("/v1/channels/{ROOM}")).await;
    assert_eq!(channel["subscription_count"], 3, "{channel}");
}

/// A connect restarts the token's idle clock, and its `user_info`'s with
/// it: a member who connects just before the token would have expired
/// still shows its `user_info` after that moment.
#[tokio::test]
async fn a_connect_keeps_the_user_info_as_long_as_the_token() {
    const TTL: u64 = 30;
    let server = TestServer::start(TWO_APPS);
    let claims = json!({"user_id": "ann", "channels": ["presence-*"], "user_info": {"name": "Ann"}, "ttl": TTL});
    let token = server.token(ALPHA, claims).await;
    let issued = Instant::now();
    // Connect 5 s before the token (and its user_info) would expire, then
    // subscribe a second after that moment, before the first keep-alive
    // (a third of the ttl after the connect).
    tokio::time::sleep(Duration::from_secs(TTL - 5)).await;
    let (mut socket, _) = connect(&token.url_with(&token.code(0))).await.welcomed();
    tokio::time::sleep(
        (issued + Duration::from_secs(TTL + 1)).saturating_duration_since(Instant::now()),
    )
    .await;
    let subscribed = subscribe(&mut socket, ROOM).await;
    assert_eq!(
        subscribed["members"],
        json!([{"user_id": "ann", "user_info": {"name": "Ann"}}]),
        "{subscribed}"
    );
}

#[tokio::test]
async fn user_info_is_a_small_object_of_a_token_with_a_user() {
    let server = TestServer::start(TWO_APPS);
    for (body, why) in [
        (json!({"user_info": {"a": 1}}), "user_id"),
        (json!({"user_id": "x", "user_info": [1]}), "object"),
        (
            json!({"user_id": "x", "user_info": {"a": "x".repeat(1100)}}),
            "1024",
        ),
    ] {
        let (status, error) = server.post_token(ALPHA, body.clone()).await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(error["error"]["code"], "invalid_request");
        assert!(
            error["error"]["message"].as_str().unwrap().contains(why),
            "{error}"
        );
    }
}

/// A scenario on a shared Redis (its store URL) as two tests: on one Redis
/// and on a three-shard Redis Cluster, where presence lives in the
/// deployment's slot.
macro_rules! on_both {
    ($($scenario:ident),* $(,)?) => {$(
        mod $scenario {
            use super::*;

            #[tokio::test]
            async fn one_redis() {
                let redis = RedisServer::start();
                super::$scenario(redis.url()).await;
            }

            #[tokio::test]
            async fn redis_cluster() {
                let cluster = RedisCluster::start(3, 0);
                super::$scenario(cluster.url()).await;
            }
        }
    )*};
}

on_both!(
    nodes_on_redis_share_members_and_a_killed_nodes_members_leave_once,
    across_nodes_a_channel_is_occupied_and_vacated_once_and_a_dead_nodes_members_removed_once,
    a_channel_moving_between_nodes_is_told_in_the_order_it_happened,
);

/// Two nodes on one Redis, each ready.
async fn two_nodes(url: &str) -> (TestServer, TestServer) {
    let start = || TestServer::start_with(TWO_APPS, &["--store", url, "--store-prefix", "pres"]);
    let (one, two) = (start(), start());
    one.wait_readyz(200).await;
    two.wait_readyz(200).await;
    (one, two)
}

async fn nodes_on_redis_share_members_and_a_killed_nodes_members_leave_once(url: String) {
    let (mut one, two) = two_nodes(&url).await;
    let (_ann, _) = member(&one, "ann", json!({"name": "Ann"})).await;
    // Eve has sockets on both nodes: losing one node does not remove her.
    let (_eve_one, _) = member(&one, "eve", Value::Null).await;
    let (_eve_two, _) = member(&two, "eve", Value::Null).await;

    let (mut bob, subscribed) = member(&two, "bob", Value::Null).await;
    assert_eq!(listed(&subscribed), ["ann", "bob", "eve"]);
    assert_eq!(
        subscribed["members"][0],
        json!({"user_id": "ann", "user_info": {"name": "Ann"}}),
        "user_info crosses nodes"
    );
    assert_eq!(subscribe(&mut bob, "news").await["type"], "subscribed");
    for node in [&one, &two] {
        let (_, channel) = get(node, &format!("/v1/channels/{ROOM}")).await;
        assert_eq!(channel["user_count"], 3, "{channel}");
    }

    // A member joining on node one is announced on node two.
    let (_fay, _) = member(&one, "fay", Value::Null).await;
    let seen = frames_before_sentinel(&two, &mut bob, "fay").await;
    assert_eq!(
        seen,
        [json!({"type": "member_added", "channel": ROOM, "user_id": "fay"})]
    );

    // Node one dies: its members that have no socket elsewhere leave,
    // each announced once, within the node timeout and a heartbeat.
    let killed = Instant::now();
    one.kill();
    let mut removed = Vec::new();
    while removed.len() < 2 {
        assert!(
            killed.elapsed() < Duration::from_secs(15),
            "removed only {removed:?}"
        );
        let frame = next_json(&mut bob).await.expect("bob's socket stays open");
        assert_eq!(frame["type"], "member_removed", "{frame}");
        removed.push(frame["user_id"].as_str().unwrap().to_owned());
    }
    removed.sort();
    assert_eq!(removed, ["ann", "fay"]);
    // Nothing more: eve still has a socket on node two.
    assert!(
        frames_before_sentinel(&two, &mut bob, "after")
            .await
            .is_empty()
    );
    let (_, members) = get(&two, &format!("/v1/channels/{ROOM}/members")).await;
    assert_eq!(
        members,
        json!({"count": 2, "members": [{"user_id": "bob"}, {"user_id": "eve"}]})
    );
}

/// Alpha with a webhook for the deployment's channel and member events.
fn with_webhook(url: &str) -> String {
    format!(
        r#"
[[apps]]
id = "alpha"
key = "alpha-key"
secret = "alpha-secret"
[[apps.webhooks]]
url = "{url}"
events = ["channel_occupied", "channel_vacated", "member_added", "member_removed"]
"#
    )
}

/// `name channel [user]` of each webhook event, in arrival order.
fn described(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|event| {
            let mut line = format!(
                "{} {}",
                event["name"].as_str().unwrap(),
                event["channel"].as_str().unwrap()
            );
            if let Some(user) = event["user_id"].as_str() {
                line.push(' ');
                line.push_str(user);
            }
            line
        })
        .collect()
}

/// Subscribe and wait for the answer, past any presence frames.
async fn subscribe_past_presence(socket: &mut Socket, channel: &str) {
    send_json(socket, json!({"type": "subscribe", "channel": channel})).await;
    loop {
        let frame = next_json(socket).await.expect("subscribed");
        if frame["type"] == "subscribed" {
            return;
        }
        assert!(
            frame["type"].as_str().unwrap().starts_with("member_"),
            "{frame}"
        );
    }
}

/// Unsubscribe and wait for the answer.
async fn unsubscribe(socket: &mut Socket, channel: &str) {
    send_json(socket, json!({"type": "unsubscribe", "channel": channel})).await;
    loop {
        let frame = next_json(socket).await.expect("unsubscribed");
        if frame["type"] == "unsubscribed" {
            return;
        }
    }
}

#[tokio::test]
async fn webhooks_tell_occupied_and_vacated_once_and_each_member_once() {
    let receiver = WebhookReceiver::start("alpha-key", "alpha-secret").await;
    let server = TestServer::start(&with_webhook(&receiver.url));
    let (ann_one, _) = member(&server, "ann", Value::Null).await;
    let (mut ann_two, _) = member(&server, "ann", Value::Null).await;
    let (mut bob, _) = member(&server, "bob", Value::Null).await;
    drop(ann_one);
    // The server is done with it (its member left first) once it no longer
    // counts its subscription.
    wait_for_subscriptions(&server, ROOM, 2).await;
    unsubscribe(&mut ann_two, ROOM).await;
    unsubscribe(&mut bob, ROOM).await;
    // A last, different event: everything before it has arrived.
    subscribe_past_presence(&mut bob, "news").await;
    let events = receiver.wait_for_events(7).await;
    assert_eq!(
        described(&events),
        [
            "channel_occupied presence-room",
            "member_added presence-room ann",
            "member_added presence-room bob",
            "member_removed presence-room ann",
            "member_removed presence-room bob",
            "channel_vacated presence-room",
            "channel_occupied news",
        ]
    );
    assert_eq!(receiver.badly_signed(), 0);
}

async fn across_nodes_a_channel_is_occupied_and_vacated_once_and_a_dead_nodes_members_removed_once(
    url: String,
) {
    let receiver = WebhookReceiver::start("alpha-key", "alpha-secret").await;
    let config = with_webhook(&receiver.url);
    let start = || TestServer::start_with(&config, &["--store", &url, "--store-prefix", "hooks"]);
    let (mut one, two) = (start(), start());
    one.wait_readyz(200).await;
    two.wait_readyz(200).await;

    // The room gains subscribers on both nodes; eve is on both.
    let (_ann, _) = member(&one, "ann", Value::Null).await;
    let (_eve_one, _) = member(&one, "eve", Value::Null).await;
    let (mut eve_two, _) = member(&two, "eve", Value::Null).await;
    let (mut bob, _) = member(&two, "bob", Value::Null).await;
    let events = receiver.wait_for_events(4).await;
    assert_eq!(
        described(&events),
        [
            "channel_occupied presence-room",
            "member_added presence-room ann",
            "member_added presence-room eve",
            "member_added presence-room bob",
        ],
        "occupied once, though both nodes gained the channel"
    );

    // Node one dies: ann leaves (once); eve stays through node two.
    one.kill();
    let events = receiver.wait_for_events(5).await;
    assert_eq!(
        described(&events[4..]),
        ["member_removed presence-room ann"]
    );

    // The last subscribers leave node two: vacated once.
    unsubscribe(&mut eve_two, ROOM).await;
    unsubscribe(&mut bob, ROOM).await;
    subscribe_past_presence(&mut bob, "news").await;
    let events = receiver.wait_for_events(9).await;
    assert_eq!(
        described(&events[5..]),
        [
            "member_removed presence-room eve",
            "member_removed presence-room bob",
            "channel_vacated presence-room",
            "channel_occupied news",
        ]
    );
    assert_eq!(receiver.badly_signed(), 0);
}

async fn a_channel_moving_between_nodes_is_told_in_the_order_it_happened(url: String) {
    let receiver = WebhookReceiver::start("alpha-key", "alpha-secret").await;
    let config = with_webhook(&receiver.url);
    let start = || TestServer::start_with(&config, &["--store", &url, "--store-prefix", "moves"]);
    let (one, two) = (start(), start());
    one.wait_readyz(200).await;
    two.wait_readyz(200).await;
    let claims = json!({"user_id": "mo", "channels": ["news", "end"]});
    let (_, mut on_one) = open_socket(&one, ALPHA, claims.clone()).await;
    let (_, mut on_two) = open_socket(&two, ALPHA, claims).await;
    // Occupied and vacated in turn on alternating nodes, as fast as the
    // sockets go. Each node applies its own changes in order, so the
    // deployment may see two of them overlap (then it was occupied
    // throughout, and says nothing); what it decides reaches the webhook in
    // one order: occupied and vacated alternate, whichever node decided.
    for _ in 0..3 {
        for socket in [&mut on_one, &mut on_two] {
            subscribe_past_presence(socket, "news").await;
            unsubscribe(socket, "news").await;
        }
    }
    // The last word: the channel is occupied again, on node one, which then
    // takes another channel: once that is told, node two's lagging changes
    // (if any) can no longer vacate `news`, so its story is complete.
    subscribe_past_presence(&mut on_one, "news").await;
    subscribe_past_presence(&mut on_one, "end").await;
    let mut told = Vec::new();
    while !told.contains(&"channel_occupied end".to_owned()) {
        told = described(&receiver.wait_for_events(told.len() + 1).await);
    }
    let events: Vec<&String> = told
        .iter()
        .filter(|event| event.ends_with(" news"))
        .collect();
    assert_eq!(events.len() % 2, 1, "ends occupied: {events:?}");
    for (n, event) in events.iter().enumerate() {
        let expected = if n % 2 == 0 {
            "channel_occupied news"
        } else {
            "channel_vacated news"
        };
        assert_eq!(event.as_str(), expected, "{events:?}");
    }
}

#[tokio::test]
async fn a_revoked_tokens_member_leaves() {
    let server = TestServer::start(TWO_APPS);
    let claims = json!({"user_id": "rex", "channels": ["presence-*"]});
    let token = server.token(ALPHA, claims).await;
    away_from_step_edge(30, 3).await;
    let (mut rex, _) = connect(&token.url_with(&token.code(0))).await.welcomed();
    assert_eq!(subscribe(&mut rex, ROOM).await["type"], "subscribed");
    let (mut sam, subscribed) = member(&server, "sam", Value::Null).await;
    assert_eq!(listed(&subscribed), ["rex", "sam"]);
    assert_eq!(subscribe(&mut sam, "news").await["type"], "subscribed");

    let (status, _) = server.revoke(ALPHA, &token.access_id).await;
    assert_eq!(status, 204);
    assert_eq!(close_code_skipping_messages(&mut rex).await, Some(4010));
    assert_eq!(
        next_presence_frame(&mut sam).await,
        json!({"type": "member_removed", "channel": ROOM, "user_id": "rex"})
    );
    assert!(
        frames_before_sentinel(&server, &mut sam, "after")
            .await
            .is_empty()
    );
}

#[tokio::test]
async fn toggling_a_presence_subscription_is_rate_limited_like_publishing() {
    let config =
        format!("{TWO_APPS}[limits]\nclient_publish_per_sec = 1\nclient_publish_burst = 3\n");
    let server = TestServer::start(&config);
    let claims = json!({"user_id": "tog", "channels": ["presence-*"]});
    let (_, mut socket) = open_socket(&server, ALPHA, claims).await;
    let started = std::time::Instant::now();
    // Every refusal is a 4308 to the subscribe (checked in `toggle`).
    let (joined, refused) = toggle(&mut socket, ROOM, 6).await;
    assert!(refused > 0, "never limited");
    assert!(within_budget(joined, 3, started), "{joined} joined");
}

const OPERATOR: &str = "operator-token-0123456789";

/// Subscribe to `channel` and unsubscribe again, `times` times; how many
/// subscribes passed and how many were refused with 4308. Presence frames
/// (the socket's own `member_removed` after an unsubscribe) are skipped.
async fn toggle(socket: &mut Socket, channel: &str, times: usize) -> (u64, u64) {
    let (mut passed, mut refused) = (0, 0);
    for _ in 0..times {
        send_json(socket, json!({"type": "subscribe", "channel": channel})).await;
        let answer = loop {
            let frame = next_json(socket).await.expect("an answer");
            if !frame["type"].as_str().unwrap_or("").starts_with("member_") {
                break frame;
            }
        };
        if answer["type"] == "error" {
            assert_eq!(answer["code"], 4308, "{answer}");
            assert_eq!(answer["frame"], "subscribe");
            assert_eq!(answer["channel"], channel);
            refused += 1;
            continue;
        }
        assert_eq!(answer["type"], "subscribed", "{answer}");
        passed += 1;
        unsubscribe(socket, channel).await;
    }
    (passed, refused)
}

/// At most `burst`, plus one a second for the time since `started`.
fn within_budget(passed: u64, burst: u64, started: std::time::Instant) -> bool {
    (burst..=burst + started.elapsed().as_secs() + 1).contains(&passed)
}

#[tokio::test]
async fn toggling_any_subscription_is_rate_limited_before_the_router_is_asked() {
    let receiver = WebhookReceiver::start("alpha-key", "alpha-secret").await;
    let config = format!(
        "operator_token = \"{OPERATOR}\"\n{}[limits]\nclient_subscribe_per_sec = 1\nclient_subscribe_burst = 4\n",
        with_webhook(&receiver.url)
    );
    let server = TestServer::start(&config);
    let claims = json!({"user_id": "tog", "channels": ["toggled", "news"]});
    let (_, mut socket) = open_socket(&server, ALPHA, claims.clone()).await;
    let started = std::time::Instant::now();
    let (toggles, refusals) = toggle(&mut socket, "toggled", 12).await;
    assert!(
        within_budget(toggles, 4, started),
        "{toggles} toggles passed"
    );
    assert_eq!(toggles + refusals, 12);

    // A last, different event: everything before it has arrived.
    let (_, mut other) = open_socket(&server, ALPHA, claims).await;
    assert_eq!(subscribe(&mut other, "news").await["type"], "subscribed");
    let expected: Vec<String> = (0..toggles)
        .flat_map(|_| ["channel_occupied toggled", "channel_vacated toggled"])
        .chain(["channel_occupied news"])
        .map(str::to_owned)
        .collect();
    let events = receiver.wait_for_events(expected.len()).await;
    assert_eq!(described(&events), expected);
    // A refused subscribe never reached the router.
    let metrics = server.metrics(OPERATOR).await;
    let routed = format!(
        r#"madx_plugin_calls_total{{plugin="router",call="authorize-subscribe",outcome="ok"}} {}"#,
        toggles + 1
    );
    assert!(
        metrics.lines().any(|line| line == routed),
        "{routed} in\n{metrics}"
    );
    // A few refusals do not close the socket.
    send_json(&mut socket, json!({"type": "ping"})).await;
    assert_eq!(next_json(&mut socket).await.unwrap()["type"], "pong");
}

#[tokio::test]
async fn the_sockets_of_one_token_share_its_subscribe_budget() {
    let config =
        format!("{TWO_APPS}[limits]\ntoken_subscribe_per_sec = 1\ntoken_subscribe_burst = 5\n");
    let server = TestServer::start(&config);
    let claims = json!({"user_id": "tog", "channels": ["toggled"]});
    let token = server.token(ALPHA, claims.clone()).await;
    away_from_step_edge(30, 3).await;
    let (mut first, _) = connect(&token.url_with(&token.code(0))).await.welcomed();
    let (mut second, _) = connect(&token.url_with(&token.code(1))).await.welcomed();
    let started = std::time::Instant::now();
    let (on_first, _) = toggle(&mut first, "toggled", 8).await;
    let (on_second, _) = toggle(&mut second, "toggled", 8).await;
    let together = on_first + on_second;
    assert!(
        within_budget(together, 5, started),
        "{on_first} + {on_second} passed"
    );
    // Another token has a budget of its own.
    let (_, mut other) = open_socket(&server, ALPHA, claims).await;
    assert_eq!(toggle(&mut other, "toggled", 3).await, (3, 0));
}
