//! A small run of every scenario against the real host and the floor server,
//! asserting the counts (every socket opened, every delivery received), so
//! the load generator cannot rot. Timings are not asserted: that is what
//! docs/benchmarks.md is for.

use std::path::PathBuf;
use std::process::Command;

use madx_test_support::{Listening, pusher_binary};
use serde_json::Value;

/// A server of this build on a free loopback port (`args` after the
/// program), its logs at `warn`.
fn start(program: PathBuf, args: &[&str]) -> Listening {
    let mut command = Command::new(program);
    command.args(args).env("MADX_LOG", "warn");
    Listening::start(command)
}

fn bench(server: &Listening, extra: &[&str]) -> Value {
    let pid = server.pid().to_string();
    let output = Command::new(env!("CARGO_BIN_EXE_madx-bench"))
        .args(["--target", &server.base, "--host-pid", &pid])
        .args(extra)
        .output()
        .expect("run madx-bench");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "madx-bench {extra:?} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_str(stdout.lines().last().unwrap_or_default()).expect("a JSON report")
}

#[test]
fn every_scenario_opens_every_socket_and_delivers_every_message() {
    let pusher = start(pusher_binary(), &["serve", "--listen", "127.0.0.1:0"]);

    let idle = bench(&pusher, &["idle", "--sockets", "200"]);
    assert_eq!(idle["sockets"], 200, "{idle}");
    assert!(
        idle["host_rss_per_socket_bytes"].as_f64().is_some(),
        "{idle}"
    );

    let connect = bench(&pusher, &["connect", "--sockets", "200"]);
    assert_eq!(connect["sockets"], 200, "{connect}");
    assert_eq!(connect["journey"], "upgrade", "{connect}");
    assert!(connect["connects_per_sec"].as_f64().unwrap() > 0.0);
    // Every socket got a token, a welcome and a `subscribed`, or the run
    // fails.
    let joined = bench(
        &pusher,
        &["connect", "--sockets", "200", "--with-token-and-subscribe"],
    );
    assert_eq!(joined["sockets"], 200, "{joined}");
    assert_eq!(joined["journey"], "token+upgrade+subscribe", "{joined}");

    for scenario in [
        vec![
            "fanout",
            "--subscribers",
            "100",
            "--rate",
            "20",
            "--seconds",
            "2",
        ],
        vec![
            "inboxes",
            "--sockets",
            "100",
            "--rate",
            "50",
            "--seconds",
            "2",
        ],
    ] {
        let report = bench(&pusher, &scenario);
        assert_eq!(report["received"], report["expected"], "{report}");
        assert_eq!(report["lost"], 0, "{report}");
    }

    // The same fan-out, published through the Pusher HTTP API (signed
    // triggers to the embedded app).
    let report = bench(
        &pusher,
        &[
            "--pusher-app",
            "demo",
            "fanout",
            "--subscribers",
            "100",
            "--rate",
            "20",
            "--seconds",
            "2",
        ],
    );
    assert_eq!(report["api"], "pusher", "{report}");
    assert_eq!(report["received"], report["expected"], "{report}");
    assert_eq!(report["lost"], 0, "{report}");

    // Overload: a small send queue, history deep enough to recover from.
    let config = std::env::temp_dir().join(format!("madx-bench-smoke-{}.toml", std::process::id()));
    std::fs::write(
        &config,
        "[limits]\nsend_queue = 32\n[history]\nper_stream = 10000\n",
    )
    .expect("write the overload config");
    let config_arg = config.to_string_lossy().into_owned();
    let small_queue = start(
        pusher_binary(),
        &["serve", "--listen", "127.0.0.1:0", "--config", &config_arg],
    );
    let _ = std::fs::remove_file(&config);
    let report = bench(
        &small_queue,
        &[
            "overload",
            "--subscribers",
            "20",
            "--stalled",
            "3",
            "--stall-ms",
            "2000",
            "--rate",
            "500",
            "--seconds",
            "2",
        ],
    );
    assert!(
        report["cut_off"].as_u64().unwrap() >= 1,
        "no one was cut off: {report}"
    );
    for count in [
        "lost",
        "duplicates",
        "incomplete_recoveries",
        "failed_subscribers",
    ] {
        assert_eq!(report[count], 0, "{count}: {report}");
    }

    let floor_binary = PathBuf::from(env!("CARGO_BIN_EXE_floor-server"));
    let floor = start(floor_binary, &["127.0.0.1:0"]);
    let report = bench(
        &floor,
        &[
            "--floor",
            "fanout",
            "--subscribers",
            "100",
            "--rate",
            "20",
            "--seconds",
            "2",
        ],
    );
    assert_eq!(report["received"], report["expected"], "{report}");
    // The floor answers the product's handshake, unchecked, so the connect
    // scenario runs against both.
    for journey in [None, Some("--with-token-and-subscribe")] {
        let mut args = vec!["--floor", "connect", "--sockets", "200"];
        args.extend(journey);
        let connect = bench(&floor, &args);
        assert_eq!(connect["sockets"], 200, "{connect}");
        assert_eq!(connect["floor"], true, "{connect}");
    }
}

#[test]
fn presence_joins_every_socket_as_a_member_without_refusals() {
    let pusher = start(pusher_binary(), &["serve", "--listen", "127.0.0.1:0"]);
    // Two rooms of at most 100 (the default max_members): 100 and 50.
    let report = bench(&pusher, &["presence", "--sockets", "150", "--warmup", "20"]);
    for phase in ["plain", "presence"] {
        let counts = &report[phase];
        assert_eq!(counts["subscribed"], 150, "{phase}: {report}");
        // Subscriptions (plain) or members (presence), as the server counts them.
        assert_eq!(counts["server_count"], 150, "{phase}: {report}");
        for count in [
            "refused",
            "lost_answers",
            "failed_connects",
            "closed_while_open",
        ] {
            assert_eq!(counts[count], 0, "{phase} {count}: {report}");
        }
        assert!(
            counts["host_cpu_per_join_us"].as_f64().is_some(),
            "{phase}: {report}"
        );
    }
    assert!(
        report["host_rss_per_member_bytes"].as_f64().is_some(),
        "{report}"
    );
}

#[test]
fn webhooks_receives_every_client_event_signed() {
    // The receiver's port must be in the server's config before it starts:
    // take a free one (bound on 127.0.0.1:0, then released for the
    // generator to bind).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port();
    let config = std::env::temp_dir().join(format!(
        "madx-bench-smoke-webhooks-{}.toml",
        std::process::id()
    ));
    std::fs::write(
        &config,
        format!(
            r#"[[apps]]
id = "bench"
key = "bench-key"
secret = "bench-secret"
[[apps.webhooks]]
url = "http://127.0.0.1:{port}/webhook"
events = ["client_event"]

[[apps]]
id = "bench-nohook"
key = "nohook-key"
secret = "nohook-secret"
"#
        ),
    )
    .expect("write the webhooks config");
    let config_arg = config.to_string_lossy().into_owned();
    let pusher = start(
        pusher_binary(),
        &["serve", "--listen", "127.0.0.1:0", "--config", &config_arg],
    );
    let _ = std::fs::remove_file(&config);
    let port_arg = port.to_string();
    let report = bench(
        &pusher,
        &[
            "--key",
            "bench-key",
            "--secret",
            "bench-secret",
            "webhooks",
            "--receiver-port",
            &port_arg,
            "--sockets",
            "20",
            "--rate",
            "100",
            "--seconds",
            "2",
            "--baseline-key",
            "nohook-key",
            "--baseline-secret",
            "nohook-secret",
        ],
    );
    assert_eq!(report["published"], 200, "{report}");
    assert_eq!(report["expected"], 200, "{report}");
    assert_eq!(report["received"], 200, "{report}");
    for count in [
        "lost",
        "refused",
        "send_failures",
        "publishers_closed",
        "duplicates",
        "foreign_events",
        "bad_signatures",
    ] {
        assert_eq!(report[count], 0, "{count}: {report}");
    }
    assert!(report["requests"].as_u64().unwrap() >= 1, "{report}");
    assert!(
        report["host_cpu_webhook_extra_per_event_us"]
            .as_f64()
            .is_some(),
        "{report}"
    );
}

#[test]
fn fill_writes_every_token_and_message_into_a_file_store_that_keeps_them() {
    let dir = std::env::temp_dir().join(format!("madx-bench-smoke-fill-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let store = format!("file:{}", dir.display());
    let args = [
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--store",
        &store,
        "--operator-token",
        "smoke-operator-token",
    ];
    let mut pusher = start(pusher_binary(), &args);
    let report = bench(
        &pusher,
        &[
            "fill",
            "--tokens",
            "200",
            "--messages",
            "300",
            "--per-channel",
            "100",
        ],
    );
    assert_eq!(report["tokens"], 200, "{report}");
    assert_eq!(report["messages"], 300, "{report}");

    // Killed and started again on the same directory: all of it is there.
    pusher.kill();
    let pusher = start(pusher_binary(), &args);
    let metrics = tokio::runtime::Runtime::new()
        .expect("a runtime")
        .block_on(async {
            madx_test_support::http()
                .get(format!("{}/metrics", pusher.base))
                .bearer_auth("smoke-operator-token")
                .send()
                .await
                .expect("GET /metrics")
                .text()
                .await
                .expect("metrics text")
        });
    let series = |name: &str| {
        metrics
            .lines()
            .find_map(|line| line.strip_prefix(&format!("{name} ")))
            .and_then(|value| value.parse::<f64>().ok())
            .unwrap_or_else(|| panic!("no {name} in {metrics}"))
    };
    assert_eq!(series("madx_store_entries"), 200.0);
    assert_eq!(series("madx_history_messages"), 300.0);
    drop(pusher);
    let _ = std::fs::remove_dir_all(&dir);
}
