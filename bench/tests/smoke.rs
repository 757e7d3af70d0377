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
    assert!(connect["connects_per_sec"].as_f64().unwrap() > 0.0);

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
}
