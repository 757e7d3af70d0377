//! Replacing the built-in components by configuration, with no rebuild.

use std::process::Command;

use crate::common::*;
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

#[tokio::test]
async fn an_auth_component_built_outside_the_workspace_applies_its_policy() {
    let plugin = build_outside_plugin("auth-policy", "auth_policy");
    let server = TestServer::start_with(TWO_APPS, &["--auth-component", plugin.to_str().unwrap()]);

    // The policy's rule, in the app's own 400.
    let (status, body) = server
        .post_token(ALPHA, json!({"user_id": "bob", "channels": ["news.*"]}))
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "invalid_request", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|message| message.contains("start with u-")),
        "{body}"
    );
    // The contract's own checks still come first.
    let (status, body) = server
        .post_token(ALPHA, json!({"user_id": "u-bob", "ttl": 0}))
        .await;
    assert_eq!(status, 400, "{body}");

    // A user the policy accepts gets the component's 8-digit codes, and
    // the built-in token rules: the code connects once.
    let token = server
        .token(ALPHA, json!({"user_id": "u-bob", "channels": ["news.*"]}))
        .await;
    assert_eq!(
        token.otp,
        json!({"algorithm": "SHA1", "digits": 8, "period": 30})
    );
    away_from_step_edge(30, 3).await;
    let code = token.code(0);
    let (_socket, welcome) = connect(&token.url_with(&code)).await.welcomed();
    assert_eq!(welcome["access_id"], token.access_id.as_str(), "{welcome}");
    let (close, _) = connect(&token.url_with(&code)).await.refused();
    assert_eq!(close, 4003, "a spent code");
}

#[tokio::test]
async fn the_router_from_the_guide_routes_for_the_real_host() {
    let router = build_outside_plugin("router-glob", "my_router");
    let server =
        TestServer::start_with(TWO_APPS, &["--router-component", router.to_str().unwrap()]);
    let (_, mut socket) = open_socket(
        &server,
        ALPHA,
        json!({"user_id": "alice", "channels": ["news.*"], "publish": ["news.s*"]}),
    )
    .await;

    // Public channels for everyone; the rest by the token's globs, as globs.
    for allowed in ["public-lobby", "news.sport", "news.a.b"] {
        assert_eq!(
            subscribe(&mut socket, allowed).await["type"],
            "subscribed",
            "{allowed}"
        );
    }
    let refused = subscribe(&mut socket, "admin").await;
    assert_eq!(refused["code"], 4303, "{refused}");
    let refused = subscribe(&mut socket, "news*").await;
    assert_eq!(refused["code"], 4304, "an invalid name: {refused}");

    // A client publish the publish globs allow reaches the channel; one
    // they do not is refused.
    send_json(
        &mut socket,
        json!({"type": "publish", "channel": "news.weather", "event": "said", "data": 1}),
    )
    .await;
    let refused = next_json(&mut socket).await.expect("an answer");
    assert_eq!(refused["code"], 4303, "{refused}");
    send_json(
        &mut socket,
        json!({"type": "publish", "channel": "news.sport", "event": "said", "data": 2}),
    )
    .await;
    let message = next_json(&mut socket).await.expect("the message");
    assert_eq!(
        (&message["type"], &message["channel"], &message["data"]),
        (&json!("message"), &json!("news.sport"), &json!(2)),
        "{message}"
    );
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
        let (status, stderr) = refused_start(&args);
        // An operator's mistake, like a bad configuration value.
        assert_eq!(status, Some(2), "{args:?}");
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
    let (status, stderr) = refused_start(&["--config", path.to_str().unwrap()]);
    assert_eq!(status, Some(2));
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

    for misbehaviour in ["loop", "alloc", "trap", "flood"] {
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
            r#"madx_plugin_calls_total{{plugin="router",call="{call}",outcome="failure"}} 4"#
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
    let (status, body) = server.reload("operator-token-0123456789").await;
    assert_eq!(status, 422, "{body}");
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
    let (status, body) = server.reload("operator-token-0123456789").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(server.token(ALPHA, empty()).await.otp["algorithm"], "SHA1");
}

/// What one run of `madx-pusher plugin check` printed.
struct Checked {
    ok: bool,
    stdout: String,
}

impl Checked {
    /// The names of the checks reported with `mark` (`ok`, `FAIL`, `skip`),
    /// without the reasons.
    fn names(&self, mark: &str) -> Vec<&str> {
        let prefix = format!("{mark:<4} ");
        self.stdout
            .lines()
            .filter_map(|line| line.strip_prefix(&prefix))
            .map(|rest| match mark {
                "ok" => rest,
                _ => rest.split_once(": ").map_or(rest, |(name, _)| name),
            })
            .collect()
    }

    /// The summary line's counts: passed, failed, skipped.
    fn counts(&self) -> (usize, usize, usize) {
        let summary = self.stdout.lines().last().expect("a summary line");
        let numbers: Vec<usize> = summary
            .split(", ")
            .map(|part| part.split(' ').next().unwrap().parse().expect(summary))
            .collect();
        assert_eq!(numbers.len(), 3, "{summary}");
        (numbers[0], numbers[1], numbers[2])
    }

    /// The summary matches the lines, and it is all ok.
    fn assert_all_passed(&self) {
        assert!(self.ok, "{}", self.stdout);
        let (passed, failed, skipped) = self.counts();
        assert_eq!(passed, self.names("ok").len(), "{}", self.stdout);
        assert_eq!((failed, skipped), (0, 0), "{}", self.stdout);
    }

    fn has_line(&self, line: &str) -> bool {
        self.stdout.lines().any(|printed| printed == line)
    }
}

fn plugin_check(args: &[&str]) -> Checked {
    let output = Command::new(env!("CARGO_BIN_EXE_madx-pusher"))
        .args(["plugin", "check"])
        .args(args)
        .output()
        .expect("run madx-pusher plugin check");
    Checked {
        ok: output.status.success(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
    }
}

/// The check file shown in docs/plugins.md ("A check file"); the docs
/// test keeps the guide's block equal to it, so the example cannot rot.
fn documented_check_file() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/plugins/auth-user-policy/plugin-check.toml")
}

#[test]
fn plugin_check_passes_the_built_in_and_example_components() {
    let both = [
        "--auth",
        "built-in",
        "--router",
        "built-in",
        "--profile",
        "contract",
        "--profile",
        "default-policy",
    ];
    let checked = plugin_check(&both);
    checked.assert_all_passed();
    for line in [
        "ok   every import is provided by the host",
        "ok   implements madx:pusher/auth-plugin@0.1.0",
        // The contract...
        "ok   a used code is refused as otp-reused",
        "ok   ttl-secs 7201 is refused as bad-request",
        "ok   a token issued with ttl-secs 1 is gone after 1 s of inactivity",
        "ok   authorize-subscribe answers every channel name (ok or route-error)",
        // ...and the default policy.
        "ok   subscribe outside the globs is forbidden",
        "ok   an app publish to user \"checker\" reaches somewhere",
    ] {
        assert!(checked.has_line(line), "{line}\n{}", checked.stdout);
    }
    assert!(
        !checked.stdout.contains("NOT PROVIDED"),
        "{}",
        checked.stdout
    );

    // The example computes 8-digit SHA-256 codes over 60 s steps: the
    // checker follows the parameters the token announces.
    let sha256 = build_example_plugin("madx-example-auth-sha256");
    let checked = plugin_check(&["--auth", sha256.to_str().unwrap()]);
    checked.assert_all_passed();
    assert!(
        checked.has_line("ok   a correct code verifies, with the request's claims"),
        "{}",
        checked.stdout
    );
    // Only the contract by default.
    assert!(
        !checked.stdout.contains("default policy"),
        "{}",
        checked.stdout
    );

    // An auth component offered as a router does not implement the world.
    let checked = plugin_check(&["--router", sha256.to_str().unwrap()]);
    assert!(!checked.ok, "{}", checked.stdout);
    assert!(
        checked
            .names("FAIL")
            .contains(&"implements madx:pusher/router-plugin@0.1.0"),
        "{}",
        checked.stdout
    );
}

/// Every interface a component imports is wired into each of its fresh
/// instances, on every call; the built-in components are built without the
/// WASI world (host/build.rs), which makes their calls about a third
/// cheaper. Auth takes only WASI's clock and randomness.
#[test]
fn the_built_in_components_import_only_what_they_use() {
    let imports = |kind: &str| -> Vec<String> {
        let checked = plugin_check(&[kind, "built-in"]);
        checked.assert_all_passed();
        let mut names: Vec<String> = checked
            .stdout
            .lines()
            .filter_map(|line| line.trim_start().strip_prefix("import "))
            .map(|import| {
                let name = import.split_once(": ").expect(import).0;
                // Without the version: `wasi:random/random`.
                name.split_once('@')
                    .map_or(name, |(name, _)| name)
                    .to_owned()
            })
            .collect();
        names.sort();
        names
    };
    assert_eq!(imports("--router"), ["madx:pusher/types"]);
    assert_eq!(
        imports("--auth"),
        [
            "madx:pusher/settings",
            "madx:pusher/store",
            "madx:pusher/types",
            "wasi:clocks/wall-clock",
            "wasi:random/random",
        ]
    );
}

#[test]
fn plugin_check_asks_with_the_authors_inputs_and_says_what_a_policy_refused() {
    let plugin = build_example_plugin("madx-example-auth-user-policy");
    let auth = plugin.to_str().unwrap();

    // Without a user id the policy refuses to issue: the reason is shown,
    // and every check that needs a token is skipped, not passed.
    let refused = plugin_check(&["--auth", auth]);
    assert!(!refused.ok, "{}", refused.stdout);
    let issue = refused
        .stdout
        .lines()
        .find(|line| line.starts_with("FAIL issue returns a token for the request: "))
        .unwrap_or_else(|| panic!("{}", refused.stdout));
    assert!(
        issue.contains(
            r#"bad-request("tokens are issued only for user ids starting with \"user-\"")"#
        ),
        "{issue}"
    );
    assert!(issue.contains("--user-id"), "{issue}");
    let (_, failed, skipped) = refused.counts();
    assert_eq!(failed, 1, "{}", refused.stdout);

    // With one it accepts, everything passes; the checks skipped above are
    // exactly those that ran after `issue` here.
    let accepted = plugin_check(&[
        "--auth",
        auth,
        "--user-id",
        "user-42",
        "--channels",
        "news.*",
        "--channels",
        "user-42.*",
        "--publish",
        "chat",
        "--ttl-secs",
        "300",
    ]);
    accepted.assert_all_passed();
    assert!(
        accepted.has_line(
            r#"# contract: token request with user-id "user-42", channels ["news.*", "user-42.*"], publish ["chat"], ttl-secs 300"#
        ),
        "{}",
        accepted.stdout
    );
    let passed = accepted.names("ok");
    let after_issue = passed
        .iter()
        .position(|name| *name == "issue returns a token for the request")
        .expect("the issue check");
    assert_eq!(refused.names("skip"), passed[after_issue + 1..]);
    assert_eq!(skipped, passed.len() - after_issue - 1);
    assert!(
        refused
            .stdout
            .lines()
            .filter(|line| line.starts_with("skip "))
            .all(|line| line.ends_with(": needs a token")),
        "{}",
        refused.stdout
    );

    // Settings reach the component: another prefix, another verdict.
    let team = ["--auth", auth, "--auth-setting", "user_prefix=team-"];
    let checked = plugin_check(&[&team[..], &["--user-id", "user-42"]].concat());
    assert!(!checked.ok, "{}", checked.stdout);
    assert!(
        checked.stdout.contains(r#"starting with \"team-\""#),
        "{}",
        checked.stdout
    );
    plugin_check(&[&team[..], &["--user-id", "team-7"]].concat()).assert_all_passed();
}

#[test]
fn plugin_check_holds_a_permissive_router_to_the_contract_not_the_default_policy() {
    let hostile = build_example_plugin("madx-example-hostile-router");
    let router = hostile.to_str().unwrap();

    // It lets everything through: a policy the contract allows...
    plugin_check(&["--router", router]).assert_all_passed();
    // ...but not the built-in router's.
    let checked = plugin_check(&["--router", router, "--profile", "default-policy"]);
    assert!(!checked.ok, "{}", checked.stdout);
    assert!(
        checked.has_line(
            "FAIL subscribe outside the globs is forbidden: expected forbidden, got Ok(())"
        ),
        "{}",
        checked.stdout
    );

    // A name it traps on (here from a glob of the claims) is a broken
    // promise, whatever the policy.
    let checked = plugin_check(&["--router", router, "--channels", "trap"]);
    assert!(!checked.ok, "{}", checked.stdout);
    let subscribe = checked
        .stdout
        .lines()
        .find(|line| {
            line.starts_with(
                "FAIL authorize-subscribe answers every channel name (ok or route-error): ",
            )
        })
        .unwrap_or_else(|| panic!("{}", checked.stdout));
    assert!(
        subscribe.contains(r#""trap" with the request's claims: trapped"#),
        "{subscribe}"
    );
    assert!(
        checked
            .names("FAIL")
            .contains(&"route-publish answers every target and event (a list or route-error)"),
        "{}",
        checked.stdout
    );
}

#[test]
fn plugin_check_enforces_the_documented_check_file() {
    let check_file = documented_check_file();
    let check_file = check_file.to_str().unwrap();
    let policy = build_example_plugin("madx-example-auth-user-policy");
    let hostile = build_example_plugin("madx-example-hostile-router");

    let checked = plugin_check(&[
        "--check-file",
        check_file,
        "--auth",
        policy.to_str().unwrap(),
        "--router",
        "built-in",
    ]);
    checked.assert_all_passed();
    for line in [
        r#"# settings: max_failures="3", user_prefix="user-""#,
        r#"ok   subscribe to "user-42.inbox" is allowed"#,
        r#"ok   subscribe to "admin" is forbidden"#,
        r#"ok   client publish of "message" to "news.sport" is forbidden"#,
        r#"ok   an app publish to user "user-42" reaches [user "user-42"]"#,
        r#"ok   an app publish to channel "bad channel!" is refused"#,
    ] {
        assert!(checked.has_line(line), "{line}\n{}", checked.stdout);
    }

    // A router that allows everything breaks each forbidding expectation,
    // named with what it answered.
    let checked = plugin_check(&[
        "--check-file",
        check_file,
        "--router",
        hostile.to_str().unwrap(),
    ]);
    assert!(!checked.ok, "{}", checked.stdout);
    for line in [
        r#"FAIL subscribe to "admin" is forbidden: expected forbidden, got ok"#,
        r#"FAIL client publish of "message" to "news.sport" is forbidden: expected forbidden, got ok (as "message" to "news.sport")"#,
        r#"FAIL an app publish to channel "bad channel!" is refused: expected a route-error, got [channel "bad channel!"]"#,
    ] {
        assert!(checked.has_line(line), "{line}\n{}", checked.stdout);
    }
    assert!(
        checked.has_line(r#"ok   subscribe to "news.sport" is allowed"#),
        "{}",
        checked.stdout
    );

    // A typo in a check file stops the run before any check.
    let dir = tempfile::tempdir().unwrap();
    let typo = dir.path().join("typo.toml");
    std::fs::write(&typo, "[token]\nuser = \"user-42\"\n").unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_madx-pusher"))
        .args(["plugin", "check", "--auth", "built-in", "--check-file"])
        .arg(&typo)
        .output()
        .expect("run madx-pusher plugin check");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("unknown field `user`"), "{stderr}");
}

#[test]
fn plugin_check_lists_exactly_what_the_host_links() {
    let plugin = build_example_plugin("madx-example-http-router");
    let path = plugin.to_str().unwrap();
    let checked = plugin_check(&["--router", path]);
    assert!(!checked.ok, "{}", checked.stdout);

    let imports: Vec<(&str, &str)> = checked
        .stdout
        .lines()
        .filter_map(|line| line.trim_start().strip_prefix("import "))
        .map(|import| import.split_once(": ").expect(import))
        .collect();
    let http: Vec<&str> = imports
        .iter()
        .filter(|(name, _)| name.starts_with("wasi:http/"))
        .map(|(name, _)| *name)
        .collect();
    assert_eq!(http.len(), 2, "{}", checked.stdout);
    for (name, verdict) in &imports {
        if name.starts_with("wasi:http/") {
            assert!(verdict.starts_with("NOT PROVIDED ("), "{name}: {verdict}");
        } else {
            // WASI's streams, clocks, cli... and this package's types.
            assert_eq!(*verdict, "provided", "{name}");
        }
    }
    assert!(imports.len() > 4, "{}", checked.stdout);
    assert!(
        imports
            .iter()
            .any(|(name, _)| name.starts_with("wasi:io/streams@")),
        "{}",
        checked.stdout
    );
    let missing = checked
        .stdout
        .lines()
        .find(|line| line.starts_with("FAIL every import is provided by the host: "))
        .unwrap_or_else(|| panic!("{}", checked.stdout));
    for name in &http {
        assert!(missing.contains(name), "{missing}");
    }

    // The host agrees: it will not start with it.
    let output = Command::new(env!("CARGO_BIN_EXE_madx-pusher"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--router-component",
            path,
        ])
        .output()
        .expect("run madx-pusher");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("wasi:http/"), "{stderr}");
}

#[tokio::test]
async fn a_router_written_in_python_routes_for_the_real_host() {
    let router = build_python_router();
    // The default memory cap is enough (docs/plugins.md).
    let server =
        TestServer::start_with(TWO_APPS, &["--router-component", router.to_str().unwrap()]);
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

/// The demo banner's connect hint follows the loaded auth component: the
/// built-in one's 6-digit codes, or whatever a replacement announces.
#[test]
fn the_demo_banner_does_not_promise_codes_a_replacement_does_not_take() {
    let sha256 = build_example_plugin("madx-example-auth-sha256");
    let banner = |args: &[&str]| {
        let mut child = Command::new(env!("CARGO_BIN_EXE_madx-pusher"))
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("run madx-pusher");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = Vec::new();
        for line in std::io::BufRead::lines(std::io::BufReader::new(stdout)) {
            let line = line.expect("banner line");
            let last = line.starts_with("Then open");
            lines.push(line);
            if last {
                break;
            }
        }
        let _ = child.kill();
        let _ = child.wait();
        lines.join("\n")
    };

    let built_in = banner(&[]);
    assert!(built_in.contains("6-digit TOTP"), "{built_in}");
    assert!(built_in.contains(r#""user_id":"alice""#), "{built_in}");

    let replaced = banner(&["--auth-component", sha256.to_str().unwrap()]);
    assert!(!replaced.contains("6-digit"), "{replaced}");
    assert!(!replaced.contains("alice"), "{replaced}");
    assert!(
        replaced.contains("as the token's otp parameters say"),
        "{replaced}"
    );
}

#[tokio::test]
async fn a_router_written_in_javascript_routes_for_the_real_host() {
    let router = build_js_router();
    let path = router.to_str().unwrap();

    // Compiling this 12 MB component (an interpreter built in) takes
    // seconds: the check compiles it into the compile cache, the node
    // loads it from there.
    let temp = tempfile::tempdir().unwrap();
    let cache = temp.path().join("compiled");
    let cache = cache.to_str().unwrap();

    // It keeps the contract, and the default policy's rules for channels
    // outside its teams...
    plugin_check(&[
        "--router",
        path,
        "--profile",
        "contract",
        "--profile",
        "default-policy",
        "--compile-cache",
        cache,
    ])
    .assert_all_passed();

    // ...and adds team channels, their prefix read through `settings`.
    let config = format!("[plugins.router.settings]\nteam_prefix = \"crew-\"\n{TWO_APPS}");
    let args = ["--router-component", path, "--compile-cache", cache];
    let server = TestServer::start_logging(&config, &args, "info");
    let loaded = format!("loaded from the compile cache component=router component {path}");
    assert!(server.log().contains(&loaded), "{}", server.log());
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
