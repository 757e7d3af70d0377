//! The compile cache: a node started again (or reloaded) with an unchanged
//! component loads it from disk instead of compiling it; a damaged entry is
//! compiled again; a directory other users may write to is refused.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use crate::common::*;
use serde_json::json;

const OPERATOR: &str = "operator-token-0123456789";

/// A node on the built-in components with `cache`, its log kept at info.
fn node(cache: &Path) -> TestServer {
    let config = format!("operator_token = \"{OPERATOR}\"\n{TWO_APPS}");
    let cache = cache.to_str().unwrap();
    TestServer::start_logging(&config, &["--compile-cache", cache], "info")
}

/// What `server` logged of its loads: how many components it compiled,
/// and how many came from the cache.
fn assert_loads(server: &TestServer, expected: (usize, usize)) {
    let log = server.log();
    let count = |what: &str| log.lines().filter(|line| line.contains(what)).count();
    let loads = (count(" compiled"), count("loaded from the compile cache"));
    assert_eq!(loads, expected, "{log}");
}

/// Every compiled entry the cache holds: wasmtime keeps them in the
/// cache's `wasmtime/modules/`, named by their hash, beside its own
/// `.stats` and lock files.
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
    walk(&cache.join("wasmtime"), &mut found);
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
    assert_loads(&first, (2, 0));
    assert_eq!(entries(&dir).len(), 2, "{:?}", entries(&dir));
    let mode = std::fs::metadata(&dir).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o700);
    drop(first);

    // Second start: nothing compiled, and the loaded code serves.
    let second = node(&dir);
    assert_loads(&second, (0, 2));
    serves(&second).await;

    // A reload of unchanged components is served by the cache too.
    let (status, body) = second.reload(OPERATOR).await;
    assert_eq!(status, 200, "{body}");
    assert_loads(&second, (0, 4));
    serves(&second).await;
    assert_eq!(entries(&dir).len(), 2, "{:?}", entries(&dir));
}

#[tokio::test]
async fn a_damaged_cache_entry_is_compiled_again_and_replaced() {
    let temp = tempfile::tempdir().unwrap();
    let cache = temp.path().join("compiled");
    drop(node(&cache));
    let written = entries(&cache);
    assert_eq!(written.len(), 2, "{written:?}");
    // One entry is not even compressed data; the other decompresses to
    // something that is not compiled code.
    std::fs::write(&written[0], b"\x00not a compiled component\xff").unwrap();
    let bogus = zstd::encode_all(&b"\x7fELF but not wasmtime's code"[..], 3).unwrap();
    std::fs::write(&written[1], &bogus).unwrap();

    let server = node(&cache);
    assert_loads(&server, (2, 0));
    serves(&server).await;
    for entry in &written {
        let bytes = std::fs::read(entry).unwrap();
        assert!(
            !bytes.starts_with(b"\x00not") && bytes != bogus,
            "{} was not replaced",
            entry.display()
        );
    }
    drop(server);
    // The replaced entries serve the next start.
    let server = node(&cache);
    assert_loads(&server, (0, 2));
    serves(&server).await;
}

/// The names in `dir`.
fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn mode(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn a_cache_directory_others_could_write_to_or_that_holds_other_files_is_refused() {
    let root = tempfile::tempdir().unwrap();
    let make = |name: &str, dir_mode: u32| {
        let dir = root.path().join(name);
        std::fs::create_dir(&dir).unwrap();
        mode(&dir, dir_mode);
        dir
    };
    let shared = make("shared", 0o777);
    // A directory holding something else: wasmtime's trimming would
    // delete it.
    let foreign = make("foreign", 0o700);
    std::fs::write(foreign.join("notes.txt"), "mine").unwrap();
    // Private itself, in a directory where others may rename it away.
    let inside_shared = shared.join("inner");
    std::fs::create_dir(&inside_shared).unwrap();
    mode(&inside_shared, 0o700);
    mode(&shared, 0o777);
    let a_file = root.path().join("a-file");
    std::fs::write(&a_file, "not a directory").unwrap();
    // A cache holding a link where an entry would be.
    let planted = make("planted", 0o700);
    drop(node(&planted));
    let entry = entries(&planted).remove(0);
    std::fs::remove_file(&entry).unwrap();
    std::os::unix::fs::symlink(&a_file, &entry).unwrap();
    // A cache holding an entry that is also linked from elsewhere.
    let linked = make("linked", 0o700);
    drop(node(&linked));
    std::fs::hard_link(entries(&linked).remove(0), root.path().join("way-in")).unwrap();

    let cases = [
        (&shared, "is writable by other users (mode 777)"),
        (
            &foreign,
            "is not empty and is not a madx-pusher compile cache",
        ),
        (&inside_shared, "where another user could replace it"),
        (&a_file, "is not a directory"),
        (&planted, ", a link), which this user did not write"),
        (
            &linked,
            ", linked from elsewhere), which this user did not write",
        ),
    ];
    for (dir, expected) in cases {
        let args = [std::ffi::OsStr::new("--compile-cache"), dir.as_os_str()];
        let (status, stderr) = refused_start(&args);
        assert_eq!(status, Some(1), "{stderr}");
        assert!(stderr.contains("plugin compile cache"), "{stderr}");
        assert!(stderr.contains(expected), "{}: {stderr}", dir.display());
    }
    // Nothing was written anywhere.
    assert_eq!(names(&shared), ["inner"]);
    assert!(names(&inside_shared).is_empty());
    assert_eq!(names(&foreign), ["notes.txt"]);
    assert_eq!(std::fs::read_to_string(&a_file).unwrap(), "not a directory");
}

#[tokio::test]
async fn a_cache_directory_others_may_only_read_is_closed_to_them_and_used() {
    // As systemd's `CacheDirectory=` makes it.
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("cache");
    std::fs::create_dir(&dir).unwrap();
    mode(&dir, 0o755);
    let server = node(&dir);
    serves(&server).await;
    let now = std::fs::metadata(&dir).unwrap().permissions().mode();
    assert_eq!(now & 0o777, 0o700);
    assert!(server.log().contains("made owner-only"), "{}", server.log());
    assert_eq!(entries(&dir).len(), 2);
}

#[tokio::test]
async fn a_reload_refuses_a_cache_opened_to_others_since_start_up() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("cache");
    let server = node(&dir);
    mode(&dir, 0o777);
    let (status, body) = server.reload(OPERATOR).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["code"], "reload_refused");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("is writable by other users"), "{message}");
    // The running components keep serving.
    serves(&server).await;
}
