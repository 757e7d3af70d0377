//! The compile cache: a node started again (or reloaded) with an unchanged
//! component loads it from disk instead of compiling it; a damaged entry is
//! compiled again; a directory other users may write to is refused.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::*;
use serde_json::json;

const OPERATOR: &str = "operator-token-0123456789";

/// A node on the built-in components with `cache`, its log kept at info.
fn node(cache: &Path) -> TestServer {
    let config = format!("operator_token = \"{OPERATOR}\"\n{TWO_APPS}");
    let cache = cache.to_str().unwrap();
    TestServer::start_logging(&config, &["--compile-cache", cache], "info")
}

/// How many log lines say a component was compiled, and how many that it
/// came from the cache.
fn compiled_and_cached(log: &str) -> (usize, usize) {
    let count = |what: &str| log.lines().filter(|line| line.contains(what)).count();
    (count(" compiled"), count("loaded from the compile cache"))
}

/// Every compiled entry the cache holds: wasmtime keeps them under
/// `modules/`, named by their hash, beside its own `.stats` and lock files.
fn entries(cache: &Path) -> Vec<PathBuf> {
    fn walk(dir: &Path, found: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, found);
            } else if path.extension().is_none() {
                found.push(path);
            }
        }
    }
    let mut found = Vec::new();
    walk(cache, &mut found);
    found.sort();
    found
}

/// The node serves: a token, a connect with a fresh code (auth's `verify`),
/// a subscribe (the router) and a message.
async fn serves(server: &TestServer) {
    let (_, mut socket) = open_socket(server, ALPHA, json!({"channels": ["news"]})).await;
    assert_eq!(subscribe(&mut socket, "news").await["type"], "subscribed");
    publish(
        server,
        ALPHA,
        json!({"channel": "news", "event": "e", "data": 7}),
    )
    .await;
    assert_eq!(next_json(&mut socket).await.unwrap()["data"], 7);
}

#[tokio::test]
async fn a_restarted_or_reloaded_node_loads_unchanged_components_from_the_cache() {
    let cache = tempfile::tempdir().unwrap();
    let dir = cache.path().join("compiled");

    // First start: both components compiled, and kept, in a directory
    // created for this user alone.
    let first = node(&dir);
    serves(&first).await;
    assert_eq!(compiled_and_cached(&first.log()), (2, 0), "{}", first.log());
    assert_eq!(entries(&dir).len(), 2, "{:?}", entries(&dir));
    let mode = std::fs::metadata(&dir).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o700);
    drop(first);

    // Second start: nothing compiled, and the loaded code serves.
    let second = node(&dir);
    assert_eq!(
        compiled_and_cached(&second.log()),
        (0, 2),
        "{}",
        second.log()
    );
    serves(&second).await;

    // A reload of unchanged components is served by the cache too.
    let response = http()
        .post(second.url("/admin/reload"))
        .bearer_auth(OPERATOR)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        compiled_and_cached(&second.log()),
        (0, 4),
        "{}",
        second.log()
    );
    serves(&second).await;
    assert_eq!(entries(&dir).len(), 2, "{:?}", entries(&dir));
}

#[tokio::test]
async fn a_damaged_cache_entry_is_compiled_again_and_replaced() {
    let cache = tempfile::tempdir().unwrap();
    drop(node(cache.path()));
    let written = entries(cache.path());
    assert_eq!(written.len(), 2, "{written:?}");
    // One entry is garbage, the other the right size but zeroed.
    std::fs::write(&written[0], b"\x00not a compiled component\xff").unwrap();
    let length = std::fs::metadata(&written[1]).unwrap().len() as usize;
    std::fs::write(&written[1], vec![0u8; length]).unwrap();

    let server = node(cache.path());
    assert_eq!(
        compiled_and_cached(&server.log()),
        (2, 0),
        "{}",
        server.log()
    );
    serves(&server).await;
    for entry in &written {
        let bytes = std::fs::read(entry).unwrap();
        assert!(
            !bytes.starts_with(b"\x00not") && bytes.iter().any(|&byte| byte != 0),
            "{} was not replaced",
            entry.display()
        );
    }
    drop(server);
    // The replaced entries serve the next start.
    let server = node(cache.path());
    assert_eq!(
        compiled_and_cached(&server.log()),
        (0, 2),
        "{}",
        server.log()
    );
    serves(&server).await;
}

#[test]
fn a_cache_directory_others_may_write_to_or_that_is_a_file_is_refused() {
    let shared = tempfile::tempdir().unwrap();
    std::fs::set_permissions(shared.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let a_file = shared.path().join("cache-file");
    std::fs::write(&a_file, "not a directory").unwrap();
    let cases = [
        (shared.path().to_path_buf(), "writable by other users"),
        (a_file.clone(), "cache-file"),
    ];
    for (dir, expected) in cases {
        let output = Command::new(env!("CARGO_BIN_EXE_madx-pusher"))
            .args(["serve", "--listen", "127.0.0.1:0", "--compile-cache"])
            .arg(&dir)
            .env("MADX_LOG", "warn")
            .output()
            .expect("run madx-pusher");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains("plugin compile cache"), "{stderr}");
        assert!(stderr.contains(expected), "{stderr}");
    }
    // Nothing was written into the shared directory.
    let names: Vec<_> = std::fs::read_dir(shared.path())
        .unwrap()
        .map(|entry| entry.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("cache-file")]);
}
