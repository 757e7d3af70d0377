//! Several host processes on a real `redis-server`, and on a real three-shard
//! Redis Cluster: they behave as one service (shared tokens and one-time
//! guard, cross-node fan-out, revoke, history), and survive losing a node,
//! Redis itself, or a cluster primary.
//!
//! Every scenario that holds for both runs on both: `on_both!` makes a
//! `one_redis` and a `redis_cluster` test of it.

use crate::common::*;
use serde_json::{Value, json};

/// The Redis a deployment shares.
enum Shared {
    One(RedisServer),
    Cluster(RedisCluster),
}

impl Shared {
    fn one() -> Shared {
        Shared::One(RedisServer::start())
    }

    /// Three primaries, no replicas (the failover test adds its own).
    fn cluster() -> Shared {
        Shared::Cluster(RedisCluster::start(3, 0))
    }

    fn url(&self) -> String {
        match self {
            Shared::One(redis) => redis.url(),
            Shared::Cluster(cluster) => cluster.url(),
        }
    }

    /// How many connections subscribe to a live channel of app alpha
    /// (`PUBSUB NUMSUB`, or `SHARDNUMSUB` on the primary that owns it).
    fn subscribers(&self, stream: &str) -> u64 {
        let (url, channel, command) = match self {
            Shared::One(redis) => (
                redis.url(),
                format!("madx:app/alpha/live/{stream}"),
                "NUMSUB",
            ),
            Shared::Cluster(cluster) => {
                let channel = format!("madx:app/{{alpha}}/live/{stream}");
                let port = cluster.primary_of(&channel);
                (format!("redis://127.0.0.1:{port}"), channel, "SHARDNUMSUB")
            }
        };
        let client = redis::Client::open(url).expect("client");
        let mut connection = client.get_connection().expect("connect to redis");
        let reply: Vec<(String, u64)> = redis::cmd("PUBSUB")
            .arg(command)
            .arg(channel)
            .query(&mut connection)
            .expect("PUBSUB NUMSUB");
        reply.first().map_or(0, |(_, count)| *count)
    }
}

/// A scenario as two tests: on one Redis and on a Redis Cluster.
macro_rules! on_both {
    ($($scenario:ident),* $(,)?) => {$(
        mod $scenario {
            #[tokio::test]
            async fn one_redis() {
                super::$scenario(super::Shared::one()).await;
            }

            #[tokio::test]
            async fn redis_cluster() {
                super::$scenario(super::Shared::cluster()).await;
            }
        }
    )*};
}

on_both!(
    a_token_from_one_node_connects_on_another_and_each_code_works_once,
    a_publish_on_any_node_reaches_every_node_once_with_increasing_ids,
    a_revoke_on_one_node_closes_the_tokens_sockets_on_another,
    clients_of_a_killed_node_recover_everything_on_another,
    apps_and_deployments_sharing_one_redis_stay_apart,
    nodes_subscribe_to_redis_only_while_they_have_interested_sockets,
    recovery_says_when_redis_history_no_longer_reaches_back,
    the_announced_position_is_a_resume_point_on_any_node,
);

/// `n` nodes on `redis`, each ready.
async fn nodes(redis: &Shared, n: usize, config: &str, prefix: &str) -> Vec<TestServer> {
    let url = redis.url();
    let mut nodes = Vec::new();
    for _ in 0..n {
        let node = TestServer::start_with(config, &["--store", &url, "--store-prefix", prefix]);
        node.wait_readyz(200).await;
        nodes.push(node);
    }
    nodes
}

/// A socket of app alpha on `one`, subscribed to "news", that got a message
/// published on `two`: the deployment works before a test disturbs it.
async fn served_across_nodes(one: &TestServer, two: &TestServer, claims: Value) -> Socket {
    let (_, mut socket) = open_socket(one, ALPHA, claims).await;
    assert_eq!(subscribe(&mut socket, "news").await["type"], "subscribed");
    let before = json!({"channel": "news", "event": "before", "data": 0});
    publish(two, ALPHA, before).await;
    assert_eq!(
        events(&messages_until(&mut socket, "before").await),
        ["before"]
    );
    socket
}

/// Publish to app alpha, retrying while the node answers 503: publishes
/// may be refused while the cluster moves (a node reconnecting its pub/sub
/// takes none), and none is lost once accepted.
async fn publish_once_served(node: &TestServer, body: Value) {
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        let (status, response) = post_json(node, "/v1/publish", ALPHA, &body).await;
        if status == 202 {
            return;
        }
        assert_eq!(status, 503, "{response}");
        assert!(
            std::time::Instant::now() < deadline,
            "never accepted: {body}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// Every message id as a number.
fn ids(messages: &[Value]) -> Vec<u64> {
    messages
        .iter()
        .map(|m| m["id"].as_str().unwrap().parse().unwrap())
        .collect()
}

async fn a_token_from_one_node_connects_on_another_and_each_code_works_once(redis: Shared) {
    let cluster = nodes(&redis, 2, TWO_APPS, "madx").await;
    let (one, two) = (&cluster[0], &cluster[1]);

    let token = one.token(ALPHA, json!({"user_id": "ann"})).await;
    away_from_step_edge(30, 3).await;
    let code = token.code(0);
    let on_two = format!(
        "{}&access_id={}&otp={code}",
        two.ws_url("app=alpha"),
        token.access_id
    );
    let (_socket, welcome) = connect(&on_two).await.welcomed();
    assert_eq!(welcome["access_id"], token.access_id.as_str());

    // The same connection string on the node that issued the token.
    let (code, error) = connect(&token.url_with(&code)).await.refused();
    assert_eq!(code, 4003, "{error}");
    assert_eq!(error["reason"], "otp_reused");
}

async fn a_publish_on_any_node_reaches_every_node_once_with_increasing_ids(redis: Shared) {
    let cluster = nodes(&redis, 2, TWO_APPS, "madx").await;
    let (one, two) = (&cluster[0], &cluster[1]);
    let claims = json!({"user_id": "bob", "channels": ["news"]});
    let (_, mut on_one) = open_socket(one, ALPHA, claims.clone()).await;
    let (_, mut on_two) = open_socket(two, ALPHA, claims).await;
    for socket in [&mut on_one, &mut on_two] {
        assert_eq!(subscribe(socket, "news").await["type"], "subscribed");
    }

    // Alternate the publishing node; channel and inbox messages interleave.
    let mut sent = Vec::new();
    for n in 0..6 {
        let node = if n % 2 == 0 { one } else { two };
        let target = if n % 3 == 0 {
            json!({"user_id": "bob"})
        } else {
            json!({"channel": "news"})
        };
        let mut body = json!({"event": format!("e{n}"), "data": {"n": n}});
        body.as_object_mut()
            .unwrap()
            .extend(target.as_object().unwrap().clone());
        sent.push(publish(node, ALPHA, body).await.parse::<u64>().unwrap());
    }
    publish(
        two,
        ALPHA,
        json!({"channel": "news", "event": "end", "data": 0}),
    )
    .await;
    assert!(sent.windows(2).all(|pair| pair[0] < pair[1]), "{sent:?}");

    for socket in [&mut on_one, &mut on_two] {
        let received = messages_until(socket, "end").await;
        assert_eq!(
            events(&received),
            ["e0", "e1", "e2", "e3", "e4", "e5", "end"],
            "each message once, in order"
        );
        assert_eq!(ids(&received)[..6], sent[..]);
        assert_eq!(received[0]["channel"], "#user");
        assert_eq!(received[1]["channel"], "news");
    }
}

async fn a_revoke_on_one_node_closes_the_tokens_sockets_on_another(redis: Shared) {
    let cluster = nodes(&redis, 2, TWO_APPS, "madx").await;
    let (token, mut socket) = open_socket(&cluster[0], ALPHA, json!({"user_id": "cy"})).await;
    let (status, _) = cluster[1].revoke(ALPHA, &token.access_id).await;
    assert_eq!(status, 204);
    assert_eq!(close_code_skipping_messages(&mut socket).await, Some(4010));
    // And the token is gone for every node.
    let (code, error) = connect(&token.url_with(&token.code(1))).await.refused();
    assert_eq!(code, 4004, "{error}");
}

async fn clients_of_a_killed_node_recover_everything_on_another(redis: Shared) {
    let mut cluster = nodes(&redis, 2, TWO_APPS, "madx").await;
    let claims = json!({"user_id": "dee", "channels": ["news"]});
    let token = cluster[0].token(ALPHA, claims).await;
    away_from_step_edge(30, 3).await;
    let (mut socket, _) = connect(&token.url_with(&token.code(0))).await.welcomed();
    assert_eq!(subscribe(&mut socket, "news").await["type"], "subscribed");
    publish(
        &cluster[1],
        ALPHA,
        json!({"user_id": "dee", "event": "seen", "data": 1}),
    )
    .await;
    let seen = messages_until(&mut socket, "seen").await;
    let last_id = seen[0]["id"].as_str().unwrap().to_owned();

    cluster[0].kill();
    let two = &cluster[1];
    let mut missed = Vec::new();
    for n in 0..4 {
        let body = if n % 2 == 0 {
            json!({"user_id": "dee", "event": format!("m{n}"), "data": n})
        } else {
            json!({"channel": "news", "event": format!("m{n}"), "data": n})
        };
        missed.push(publish(two, ALPHA, body).await);
    }

    // Reconnect to the surviving node with the next step's code.
    let url = format!(
        "{}&access_id={}&otp={}&last_id={last_id}",
        two.ws_url("app=alpha"),
        token.access_id,
        token.code(1)
    );
    let (mut socket, welcome) = connect(&url).await.welcomed();
    assert_eq!(welcome["recovered"], true, "{welcome}");
    send_json(
        &mut socket,
        json!({"type": "subscribe", "channel": "news", "since": last_id}),
    )
    .await;
    publish(
        two,
        ALPHA,
        json!({"channel": "news", "event": "end", "data": 0}),
    )
    .await;

    let mut inbox = Vec::new();
    let mut channel = Vec::new();
    loop {
        let frame = next_json(&mut socket).await.expect("socket open");
        match frame["type"].as_str() {
            Some("subscribed") => assert_eq!(frame["recovered"], true, "{frame}"),
            Some("message") if frame["event"] == "end" => break,
            Some("message") if frame["channel"] == "#user" => inbox.push(frame),
            Some("message") => channel.push(frame),
            _ => panic!("unexpected frame {frame}"),
        }
    }
    assert_eq!(events(&inbox), ["m0", "m2"]);
    assert_eq!(events(&channel), ["m1", "m3"]);
    let got: Vec<String> = inbox
        .iter()
        .chain(&channel)
        .map(|m| m["id"].as_str().unwrap().to_owned())
        .collect();
    for id in &missed {
        assert!(got.contains(id), "message {id} lost");
    }
}

#[tokio::test]
async fn nodes_ride_out_a_redis_restart() {
    let mut shared = Shared::one();
    let cluster = nodes(&shared, 2, TWO_APPS, "madx").await;
    let Shared::One(redis) = &mut shared else {
        unreachable!("one Redis")
    };
    let (one, two) = (&cluster[0], &cluster[1]);
    let (token, mut socket) =
        open_socket(one, ALPHA, json!({"user_id": "eve", "channels": ["news"]})).await;
    assert_eq!(subscribe(&mut socket, "news").await["type"], "subscribed");

    redis.stop();
    for node in [one, two] {
        node.wait_readyz(503).await;
        assert_eq!(node.status_of("/healthz").await, 200, "still alive");
    }
    let (status, body) = two.post_token(ALPHA, json!({"user_id": "eve"})).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "store_unavailable");
    let message = json!({"channel": "news", "event": "lost", "data": 0});
    let (status, body) = post_json(two, "/v1/publish", ALPHA, &message).await;
    assert_eq!(status, 503, "never 202 for a message not stored: {body}");
    // New sockets are refused before their code is checked...
    let (code, error) = connect(&token.url_with(&token.code(1))).await.refused();
    assert_eq!(
        (code, error["reason"].as_str()),
        (1011, Some("unavailable"))
    );
    // ...while the open socket stays and is served.
    send_json(&mut socket, json!({"type": "ping"})).await;
    assert_eq!(next_json(&mut socket).await.unwrap()["type"], "pong");

    redis.restart();
    for node in [one, two] {
        node.wait_readyz(200).await;
    }
    publish(
        two,
        ALPHA,
        json!({"channel": "news", "event": "back", "data": 1}),
    )
    .await;
    let received = messages_until(&mut socket, "back").await;
    assert_eq!(events(&received), ["back"]);
    // New work is taken again.
    open_socket(two, ALPHA, json!({"user_id": "eve"})).await;
}

async fn apps_and_deployments_sharing_one_redis_stay_apart(redis: Shared) {
    if let Shared::Cluster(cluster) = &redis {
        // So that fan-out crosses shards here.
        assert_ne!(
            cluster.primary_of("madx:app/{alpha}/"),
            cluster.primary_of("madx:app/{beta}/"),
            "the two apps live on different shards"
        );
    }
    let cluster = nodes(&redis, 2, TWO_APPS, "madx").await;
    let other_deployment = &nodes(&redis, 1, TWO_APPS, "other").await[0];
    let claims = json!({"user_id": "fay", "channels": ["news"]});
    let (alpha_token, mut alpha) = open_socket(&cluster[0], ALPHA, claims.clone()).await;
    let (_, mut beta) = open_socket(&cluster[1], BETA, claims).await;
    for socket in [&mut alpha, &mut beta] {
        assert_eq!(subscribe(socket, "news").await["type"], "subscribed");
    }
    for (credentials, event) in [(ALPHA, "for-alpha"), (BETA, "for-beta")] {
        for target in [json!({"channel": "news"}), json!({"user_id": "fay"})] {
            let mut body = json!({"event": event, "data": 0});
            body.as_object_mut()
                .unwrap()
                .extend(target.as_object().unwrap().clone());
            publish(&cluster[1], credentials, body).await;
        }
    }
    for credentials in [ALPHA, BETA] {
        let body = json!({"channel": "news", "event": "end", "data": 0});
        publish(&cluster[0], credentials, body).await;
    }
    assert_eq!(
        events(&messages_until(&mut alpha, "end").await),
        ["for-alpha", "for-alpha", "end"]
    );
    assert_eq!(
        events(&messages_until(&mut beta, "end").await),
        ["for-beta", "for-beta", "end"]
    );

    // Alpha's token means nothing to beta, nor to another deployment.
    away_from_step_edge(30, 3).await;
    let as_beta = format!(
        "{}&access_id={}&otp={}",
        cluster[1].ws_url("app=beta"),
        alpha_token.access_id,
        alpha_token.code(1)
    );
    assert_eq!(connect(&as_beta).await.refused().0, 4004);
    let elsewhere = format!(
        "{}&access_id={}&otp={}",
        other_deployment.ws_url("app=alpha"),
        alpha_token.access_id,
        alpha_token.code(-1)
    );
    assert_eq!(connect(&elsewhere).await.refused().0, 4004);
}

async fn nodes_subscribe_to_redis_only_while_they_have_interested_sockets(redis: Shared) {
    let cluster = nodes(&redis, 2, TWO_APPS, "madx").await;
    let claims = json!({"user_id": "gil", "channels": ["news", "sport"]});
    let (_, mut socket) = open_socket(&cluster[0], ALPHA, claims).await;
    assert_eq!(subscribe(&mut socket, "news").await["type"], "subscribed");
    // One node cares about the channel and the user; nobody about sport.
    assert_eq!(redis.subscribers("channel/news"), 1);
    assert_eq!(redis.subscribers("user/gil"), 1);
    assert_eq!(redis.subscribers("channel/sport"), 0);

    send_json(
        &mut socket,
        json!({"type": "unsubscribe", "channel": "news"}),
    )
    .await;
    assert_eq!(
        next_json(&mut socket).await.unwrap()["type"],
        "unsubscribed"
    );
    drop(socket);
    let deadline = std::time::Instant::now() + PATIENCE;
    while redis.subscribers("channel/news") + redis.subscribers("user/gil") > 0 {
        assert!(std::time::Instant::now() < deadline, "still subscribed");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

async fn recovery_says_when_redis_history_no_longer_reaches_back(redis: Shared) {
    let config = format!("{TWO_APPS}\n[history]\nper_stream = 2\n");
    let cluster = nodes(&redis, 1, &config, "madx").await;
    let node = &cluster[0];
    let token = node.token(ALPHA, json!({"user_id": "hal"})).await;
    let mut ids = Vec::new();
    for n in 0..4 {
        let body = json!({"user_id": "hal", "event": format!("m{n}"), "data": n});
        ids.push(publish(node, ALPHA, body).await);
    }
    away_from_step_edge(30, 3).await;
    // From the first message: m1 was trimmed, so the replay is incomplete.
    let url = format!("{}&last_id={}", token.url_with(&token.code(0)), ids[0]);
    let (mut socket, welcome) = connect(&url).await.welcomed();
    assert_eq!(welcome["recovered"], false, "{welcome}");
    publish(
        node,
        ALPHA,
        json!({"user_id": "hal", "event": "end", "data": 0}),
    )
    .await;
    assert_eq!(
        events(&messages_until(&mut socket, "end").await),
        ["m2", "m3", "end"]
    );
    // The stream now holds m3 and end: from m2 on nothing is missing.
    let url = format!("{}&last_id={}", token.url_with(&token.code(1)), ids[2]);
    let (_, welcome) = connect(&url).await.welcomed();
    assert_eq!(welcome["recovered"], true, "{welcome}");
}

async fn the_announced_position_is_a_resume_point_on_any_node(redis: Shared) {
    let cluster = nodes(&redis, 1, TWO_APPS, "madx").await;
    check_resume_from_announced_position(&cluster[0], ALPHA).await;
}

/// A cluster primary dies and its replica takes over: the nodes keep
/// serving, their open sockets get what is published after the failover
/// (once), and a token issued before it still connects. What a dead
/// primary acknowledged but had not yet copied to its replica would be lost
/// (docs/deployment.md); here the copy had time to happen.
#[tokio::test]
async fn a_killed_primary_is_replaced_by_its_replica_and_the_nodes_keep_serving() {
    let mut shared = Shared::Cluster(RedisCluster::start(3, 1));
    let cluster = nodes(&shared, 2, TWO_APPS, "madx").await;
    let Shared::Cluster(redis) = &mut shared else {
        unreachable!("a cluster")
    };
    let (one, two) = (&cluster[0], &cluster[1]);
    let claims = json!({"user_id": "ivy", "channels": ["news"]});
    let mut socket = served_across_nodes(one, two, claims.clone()).await;
    let later = one.token(ALPHA, claims).await;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;

    // Alpha's ids, streams and live channels live on this primary.
    let dead = redis.fail_over("madx:app/{alpha}/");
    assert_ne!(redis.primary_of("madx:app/{alpha}/"), dead);

    let after = json!({"channel": "news", "event": "after", "data": 1});
    publish_once_served(two, after).await;
    assert_eq!(
        events(&messages_until(&mut socket, "after").await),
        ["after"],
        "the message after the failover, once"
    );
    for node in [one, two] {
        node.wait_readyz(200).await;
    }
    away_from_step_edge(30, 3).await;
    let (_, welcome) = connect(&later.url_with(&later.code(0))).await.welcomed();
    assert_eq!(welcome["access_id"], later.access_id.as_str());
}

/// An app's slot moves to another shard (an operator rebalancing after
/// adding one): while its keys are split between two shards a publish is
/// refused (503) or accepted whole, never half-applied; the nodes follow the
/// slot, and open sockets get every accepted message once, in order.
#[tokio::test]
async fn an_apps_slot_moving_to_another_shard_keeps_its_sockets_served() {
    let shared = Shared::cluster();
    let cluster = nodes(&shared, 2, TWO_APPS, "madx").await;
    let Shared::Cluster(redis) = &shared else {
        unreachable!("a cluster")
    };
    let (one, two) = (&cluster[0], &cluster[1]);
    let claims = json!({"user_id": "joe", "channels": ["news"]});
    let mut socket = served_across_nodes(one, two, claims).await;

    let old = redis.primary_of("madx:app/{alpha}/");
    let moving = redis.begin_slot_move("madx:app/{alpha}/");
    let mut accepted = Vec::new();
    for step in 0..3 {
        let event = format!("during{step}");
        let body = json!({"channel": "news", "event": event, "data": step});
        let (status, response) = post_json(two, "/v1/publish", ALPHA, &body).await;
        match status {
            202 => accepted.push(event),
            503 => {}
            _ => panic!("publish during the move: {status} {response}"),
        }
        // Split the app's keys further between the two shards.
        redis.migrate_keys(&moving, 1);
    }
    let new = redis.finish_slot_move(moving);
    assert_ne!(old, new);

    for n in 0..3 {
        let event = format!("after{n}");
        let body = json!({"channel": "news", "event": event, "data": n});
        publish_once_served(if n % 2 == 0 { one } else { two }, body).await;
        accepted.push(event);
    }
    assert_eq!(
        events(&messages_until(&mut socket, "after2").await),
        accepted,
        "every accepted message, once, in order"
    );
}
