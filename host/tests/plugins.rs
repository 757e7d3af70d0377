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
        assert!(!output.status.success(), "{args:?} started");
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
        "metrics_token = \"operator-token-0123456789\"\n\
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
