//! Replacing the built-in components by configuration, with no rebuild.

mod common;

use std::process::Command;

use common::*;
use serde_json::json;

#[tokio::test]
async fn a_replacement_auth_component_from_a_path_is_the_one_used() {
    let plugin = build_example_plugin("madx-example-auth-sha256");
    let path = plugin.to_str().unwrap();

    // Once through the flag, once through the config file.
    let by_flag = TestServer::start_with(TWO_APPS, &["--auth-component", path]);
    let by_file = TestServer::start(&format!("[plugins.auth]\npath = {path:?}\n{TWO_APPS}"));
    for server in [by_flag, by_file] {
        let token = server.token(ALPHA, empty()).await;
        // The example announces its own parameters...
        assert_eq!(
            token.otp,
            json!({"algorithm": "SHA256", "digits": 8, "period": 60})
        );
        // ...refuses codes of the built-in component's kind...
        let sha1 = totp_code(&token.secret_seed, totp_rs::Algorithm::SHA1, 6, 30, 0);
        let (code, _) = connect(&token.url_with(&sha1)).await.refused();
        assert_eq!(code, 4001, "a 6-digit code is malformed for this plugin");
        // ...and accepts its own.
        away_from_step_edge(60, 3).await;
        let (_socket, welcome) = connect(&token.url_with(&token.code(0))).await.welcomed();
        assert_eq!(welcome["access_id"], token.access_id.as_str());
    }
}

#[test]
fn a_component_that_does_not_fit_its_world_stops_start_up() {
    let auth_plugin = build_example_plugin("madx-example-auth-sha256");
    let cases = [
        // An auth component offered as the router.
        (
            vec!["--router-component", auth_plugin.to_str().unwrap()],
            vec![auth_plugin.to_str().unwrap(), "madx:pusher/router@0.1.0"],
        ),
        (
            vec!["--auth-component", "/nonexistent/auth.wasm"],
            vec!["/nonexistent/auth.wasm", "cannot read"],
        ),
        (
            vec!["--auth-component", env!("CARGO_MANIFEST_DIR")],
            vec![env!("CARGO_MANIFEST_DIR")],
        ),
    ];
    for (args, expected) in cases {
        let output = Command::new(env!("CARGO_BIN_EXE_madx-pusher"))
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(&args)
            .output()
            .expect("run madx-pusher");
        // An operator's mistake, like a bad configuration value.
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        for text in expected {
            assert!(stderr.contains(text), "{args:?}: {stderr}");
        }
    }
}

#[test]
fn a_bad_config_file_stops_start_up_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "listen = \"127.0.0.1:0\"\n[[apps]]\nid = \"x\"\nkey = \"k\"\nsecret = \"short\"\n",
    )
    .unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_madx-pusher"))
        .args(["serve", "--config", path.to_str().unwrap()])
        .output()
        .expect("run madx-pusher");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("at least 8"), "{stderr}");
}

#[tokio::test]
async fn a_hostile_component_fails_only_the_requests_that_reach_it() {
    let plugin = build_example_plugin("madx-example-hostile-router");
    let config = format!(
        "operator_token = \"operator-token-0123456789\"\n\
         [plugins]\ncall_timeout_ms = 300\nmemory_mib = 16\n{TWO_APPS}"
    );
    let server = TestServer::start_with(&config, &["--router-component", plugin.to_str().unwrap()]);
    let (_, mut socket) = open_socket(&server, ALPHA, json!({"channels": ["*"]})).await;

    for misbehaviour in ["loop", "alloc", "trap"] {
        let started = std::time::Instant::now();
        let refused = subscribe(&mut socket, misbehaviour).await;
        assert_eq!(refused["code"], 4307, "{misbehaviour}: {refused}");
        assert_eq!(refused["reason"], "unavailable");
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "{misbehaviour} was not stopped in time"
        );

        let body = json!({"channel": misbehaviour, "event": "e", "data": 1});
        let (status, response) = post_json(&server, "/v1/publish", ALPHA, &body).await;
        assert_eq!(status, 503, "{misbehaviour}: {response}");
        assert_eq!(response["error"]["code"], "plugin_failure");

        // Everyone else is served, by fresh instances of the same component.
        let channel = format!("after-{misbehaviour}");
        assert_eq!(subscribe(&mut socket, &channel).await["type"], "subscribed");
        publish(
            &server,
            ALPHA,
            json!({"channel": channel, "event": "sentinel", "data": 1}),
        )
        .await;
        assert_eq!(
            events(&messages_until(&mut socket, "sentinel").await),
            ["sentinel"]
        );
    }

    let metrics = http()
        .get(server.url("/metrics"))
        .bearer_auth("operator-token-0123456789")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for call in ["authorize-subscribe", "route-publish"] {
        let failures = format!(
            r#"madx_plugin_calls_total{{plugin="router",call="{call}",outcome="failure"}} 3"#
        );
        assert!(
            metrics.contains(&failures),
            "missing {failures} in\n{metrics}"
        );
    }
}

/// What a plugin writes to stdout or stderr is logged with its component,
/// app and call, a panic message included, within a per-component rate.
#[tokio::test]
async fn plugin_output_and_panics_reach_the_log_within_a_rate_limit() {
    let plugin = build_example_plugin("madx-example-hostile-router");
    let config = format!("operator_token = \"operator-token-0123456789\"\n{TWO_APPS}");
    let server = TestServer::start_logging(
        &config,
        &["--router-component", plugin.to_str().unwrap()],
        "info",
    );
    let (_, mut socket) = open_socket(&server, ALPHA, json!({"channels": ["*"]})).await;

    let refused = subscribe(&mut socket, "trap").await;
    assert_eq!(refused["code"], 4307, "{refused}");
    assert_eq!(subscribe(&mut socket, "chatty").await["type"], "subscribed");

    let log = server.log();
    let panic_line = log
        .lines()
        .find(|line| line.contains("hostile router: trap requested"))
        .unwrap_or_else(|| panic!("no panic message in the log:\n{log}"));
    for field in [
        "madx_example_hostile_router.wasm",
        "app=\"alpha\"",
        "call=\"authorize-subscribe\"",
    ] {
        assert!(
            panic_line.contains(field),
            "{field} missing in {panic_line}"
        );
    }
    assert!(log.contains("hostile router: chatty line 0"), "{log}");
    // 200 lines in one go: what is left of the burst of 100 after the
    // panic's few lines is logged, the rest dropped and counted.
    assert!(!log.contains("hostile router: chatty line 199"), "{log}");
    let metrics = server.metrics("operator-token-0123456789").await;
    let dropped: f64 = metrics
        .lines()
        .find_map(|line| {
            line.strip_prefix(r#"madx_plugin_log_lines_dropped_total{plugin="router"} "#)
        })
        .unwrap_or_else(|| panic!("no dropped-lines counter in\n{metrics}"))
        .parse()
        .unwrap();
    assert!((100.0..=110.0).contains(&dropped), "dropped {dropped}");
}

/// A runaway plugin call must not hold a runtime worker: while eight calls
/// loop until their budget, a bystander socket's pings are answered at once.
#[tokio::test]
async fn runaway_plugin_calls_do_not_stall_other_sockets() {
    const RUNAWAYS: usize = 8;
    let plugin = build_example_plugin("madx-example-hostile-router");
    let config = format!("[plugins]\ncall_timeout_ms = 2000\n{TWO_APPS}");
    let server = TestServer::start_with(&config, &["--router-component", plugin.to_str().unwrap()]);
    let (_, mut bystander) = open_socket(&server, ALPHA, json!({"channels": ["*"]})).await;
    let mut runaways = Vec::new();
    for _ in 0..RUNAWAYS {
        runaways.push(
            open_socket(&server, ALPHA, json!({"channels": ["*"]}))
                .await
                .1,
        );
    }

    let started = std::time::Instant::now();
    for socket in &mut runaways {
        send_json(socket, json!({"type": "subscribe", "channel": "loop"})).await;
    }
    // Let the calls start spinning, then ping for about a second, well
    // inside their 2 s budget.
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let mut round_trips = Vec::new();
    while started.elapsed() < std::time::Duration::from_millis(1100) {
        let sent = std::time::Instant::now();
        send_json(&mut bystander, json!({"type": "ping"})).await;
        assert_eq!(next_json(&mut bystander).await.unwrap()["type"], "pong");
        round_trips.push(sent.elapsed());
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let pinged_until = started.elapsed();

    // Every runaway call was stopped by its budget, and only after the
    // pings: they were answered while all eight calls were running.
    for socket in &mut runaways {
        let refused = next_json(socket).await.unwrap();
        assert_eq!(refused["code"], 4307, "{refused}");
    }
    let refused_at = started.elapsed();
    assert!(
        refused_at > pinged_until && refused_at >= std::time::Duration::from_millis(1900),
        "the runaway calls ended before the pings did ({refused_at:?} vs {pinged_until:?})"
    );
    round_trips.sort();
    let worst = round_trips[round_trips.len() - 1];
    eprintln!(
        "bystander ping round trips during {RUNAWAYS} runaway calls: {} pings, median {:?}, worst {worst:?}",
        round_trips.len(),
        round_trips[round_trips.len() / 2],
    );
    // Without yielding, a worker is held for the whole 2 s budget; with it,
    // a turn lasts about one epoch tick. The bound is loose because this
    // machine is shared.
    assert!(
        worst < std::time::Duration::from_millis(100),
        "a bystander waited {worst:?} for a pong: {round_trips:?}"
    );
}

#[tokio::test]
async fn sighup_reloads_the_components_and_open_sockets_keep_receiving() {
    let default_auth = build_example_plugin("madx-auth");
    let sha256_auth = build_example_plugin("madx-example-auth-sha256");
    let dir = tempfile::tempdir().unwrap();
    let live = dir.path().join("auth.wasm");
    std::fs::copy(&default_auth, &live).unwrap();
    let config = format!(
        "operator_token = \"operator-token-0123456789\"\n[plugins.auth]\npath = {:?}\n{TWO_APPS}",
        live.to_str().unwrap()
    );
    let server = TestServer::start(&config);
    let (before, mut socket) = open_socket(&server, ALPHA, json!({"user_id": "zoe"})).await;
    assert_eq!(before.otp["algorithm"], "SHA1");

    // Swap the file and signal: new tokens come from the new component.
    std::fs::copy(&sha256_auth, &live).unwrap();
    let status = Command::new("kill")
        .args(["-HUP", &server.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let after = loop {
        let token = server.token(ALPHA, json!({"user_id": "zoe"})).await;
        if token.otp["algorithm"] == "SHA256" {
            break token;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the reload did not happen"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    away_from_step_edge(60, 3).await;
    let (mut new_socket, _) = connect(&after.url_with(&after.code(0))).await.welcomed();

    // The socket opened before the reload is still connected and receives.
    publish(
        &server,
        ALPHA,
        json!({"user_id": "zoe", "event": "sentinel", "data": 1}),
    )
    .await;
    assert_eq!(
        events(&messages_until(&mut socket, "sentinel").await),
        ["sentinel"]
    );
    assert_eq!(
        events(&messages_until(&mut new_socket, "sentinel").await),
        ["sentinel"]
    );

    // A broken file is refused; the running component stays.
    std::fs::write(&live, b"not a component").unwrap();
    let response = http()
        .post(server.url("/admin/reload"))
        .bearer_auth("operator-token-0123456789")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 422);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "reload_refused");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("auth.wasm"),
        "{body}"
    );
    let still = server.token(ALPHA, empty()).await;
    assert_eq!(still.otp["algorithm"], "SHA256");

    // And the admin endpoint reloads too, for the operator only.
    std::fs::copy(&default_auth, &live).unwrap();
    let anonymous = http()
        .post(server.url("/admin/reload"))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
    let response = http()
        .post(server.url("/admin/reload"))
        .bearer_auth("operator-token-0123456789")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(server.token(ALPHA, empty()).await.otp["algorithm"], "SHA1");
}

fn plugin_check(args: &[&str]) -> (bool, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_madx-pusher"))
        .args(["plugin", "check"])
        .args(args)
        .output()
        .expect("run madx-pusher plugin check");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
    )
}

#[test]
fn the_conformance_checker_passes_good_components_and_names_what_is_wrong() {
    let sha256 = build_example_plugin("madx-example-auth-sha256");
    let hostile = build_example_plugin("madx-example-hostile-router");
    let (ok, output) = plugin_check(&["--auth", sha256.to_str().unwrap(), "--router", "built-in"]);
    assert!(ok, "{output}");
    assert!(
        output.contains("ok   a used code is refused as reused"),
        "{output}"
    );
    assert!(output.trim_end().ends_with("0 failed"), "{output}");

    // The hostile router lets everything through: the deny cases fail.
    let (ok, output) = plugin_check(&["--router", hostile.to_str().unwrap()]);
    assert!(!ok, "{output}");
    assert!(
        output.contains("FAIL subscribe outside the globs is forbidden"),
        "{output}"
    );

    // An auth component offered as a router does not implement the world.
    let (ok, output) = plugin_check(&["--router", sha256.to_str().unwrap()]);
    assert!(!ok, "{output}");
    assert!(
        output.contains("FAIL implements madx:pusher/router-plugin@0.1.0"),
        "{output}"
    );
}

#[tokio::test]
async fn a_router_written_in_python_routes_for_the_real_host() {
    let router = build_python_router();
    let config = format!("[plugins]\nmemory_mib = 64\n{TWO_APPS}");
    let server = TestServer::start_with(&config, &["--router-component", router.to_str().unwrap()]);
    let (_, mut socket) = open_socket(
        &server,
        ALPHA,
        json!({"user_id": "alice", "channels": ["news.*"]}),
    )
    .await;

    // The Python rules: the user's private channel without listing it...
    assert_eq!(
        subscribe(&mut socket, "private-alice").await["type"],
        "subscribed"
    );
    assert_eq!(
        subscribe(&mut socket, "news.sport").await["type"],
        "subscribed"
    );
    // ...but nobody else's.
    let refused = subscribe(&mut socket, "private-bob").await;
    assert_eq!(refused["code"], 4303, "{refused}");

    // A publish to the user also reaches the private channel; the socket
    // that is in both gets it once.
    let id = publish(
        &server,
        ALPHA,
        json!({"user_id": "alice", "event": "report.done", "data": 1}),
    )
    .await;
    publish(
        &server,
        ALPHA,
        json!({"channel": "news.sport", "event": "sentinel", "data": 0}),
    )
    .await;
    let received = messages_until(&mut socket, "sentinel").await;
    assert_eq!(events(&received), ["report.done", "sentinel"]);

    // The private channel's history holds it too.
    send_json(
        &mut socket,
        json!({"type": "unsubscribe", "channel": "private-alice"}),
    )
    .await;
    next_json(&mut socket).await;
    let since = (id.parse::<u64>().unwrap() - 1).to_string();
    send_json(
        &mut socket,
        json!({"type": "subscribe", "channel": "private-alice", "since": since}),
    )
    .await;
    assert_eq!(next_json(&mut socket).await.unwrap()["recovered"], true);
    let replayed = next_json(&mut socket).await.unwrap();
    assert_eq!(replayed["id"], id.as_str());
    assert_eq!(replayed["event"], "report.done");
}

#[tokio::test]
async fn a_router_written_in_javascript_routes_for_the_real_host() {
    let router = build_js_router();
    let path = router.to_str().unwrap();

    // It keeps the default contract...
    let (ok, output) = plugin_check(&["--router", path]);
    assert!(ok, "{output}");
    assert!(output.trim_end().ends_with("0 failed"), "{output}");

    // ...and adds team channels, their prefix read through `settings`.
    let config = format!("[plugins.router.settings]\nteam_prefix = \"crew-\"\n{TWO_APPS}");
    let server = TestServer::start_with(&config, &["--router-component", path]);
    let (_, mut alice) = open_socket(
        &server,
        ALPHA,
        json!({"user_id": "red-alice", "channels": ["news.*"]}),
    )
    .await;
    let (_, mut bob) = open_socket(
        &server,
        ALPHA,
        json!({"user_id": "blue-bob", "channels": ["*"], "publish": ["*"]}),
    )
    .await;

    // A member gets her team's channel without listing it; globs still work.
    assert_eq!(
        subscribe(&mut alice, "crew-red").await["type"],
        "subscribed"
    );
    assert_eq!(
        subscribe(&mut alice, "news.sport").await["type"],
        "subscribed"
    );
    // Bob's `*` does not open another team's channel...
    let refused = subscribe(&mut bob, "crew-red").await;
    assert_eq!(refused["code"], 4303, "{refused}");
    send_json(
        &mut bob,
        json!({"type": "publish", "channel": "crew-red", "event": "intrusion", "data": 0}),
    )
    .await;
    let refused = next_json(&mut bob).await.unwrap();
    assert_eq!(refused["code"], 4303, "{refused}");
    // ...while `team-red` is an ordinary channel under the configured prefix.
    assert_eq!(subscribe(&mut bob, "team-red").await["type"], "subscribed");
    // The naming rules are the default ones.
    let refused = subscribe(&mut bob, "bad channel!").await;
    assert_eq!(refused["code"], 4304, "{refused}");

    // A member publishes to her team's channel from her socket.
    send_json(
        &mut alice,
        json!({"type": "publish", "channel": "crew-red", "event": "hello", "data": 1}),
    )
    .await;
    assert_eq!(
        events(&messages_until(&mut alice, "hello").await),
        ["hello"]
    );

    // Bob's glob publish and the app's publishes are routed by the component;
    // his refused one never arrived.
    send_json(
        &mut bob,
        json!({"type": "publish", "channel": "news.sport", "event": "score", "data": 2}),
    )
    .await;
    assert_eq!(
        events(&messages_until(&mut alice, "score").await),
        ["score"]
    );
    publish(
        &server,
        ALPHA,
        json!({"user_id": "red-alice", "event": "for-alice", "data": 3}),
    )
    .await;
    publish(
        &server,
        ALPHA,
        json!({"channel": "crew-red", "event": "sentinel", "data": 0}),
    )
    .await;
    let received = messages_until(&mut alice, "sentinel").await;
    assert_eq!(events(&received), ["for-alice", "sentinel"]);
    assert_eq!(received[0]["channel"], "#user");
}
