//! The example worker (`examples/worker/worker.py`) against a real server:
//! queued tasks run one after another and each result reaches the user.

use std::path::Path;
use std::process::Command;

use crate::common::*;
use serde_json::json;

fn worker(db: &Path, server: &TestServer, args: &[&str]) -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/worker/worker.py");
    let output = Command::new("python3")
        .arg(script)
        .arg("--db")
        .arg(db)
        .args(args)
        .env("MADX_URL", &server.base)
        .env("MADX_KEY", ALPHA.0)
        .env("MADX_SECRET", ALPHA.1)
        .output()
        .expect("run python3");
    assert!(
        output.status.success(),
        "worker {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[tokio::test]
async fn the_worker_pushes_each_result_to_the_user_in_order() {
    let server = TestServer::start(TWO_APPS);
    let token = server.token(ALPHA, json!({"user_id": "alice"})).await;
    away_from_step_edge(30, 3).await;
    let (mut socket, _) = connect(&token.url_with(&token.code(0))).await.welcomed();

    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("tasks.db");
    worker(
        &db,
        &server,
        &[
            "enqueue", "--user", "alice", "--kind", "report", "--arg", "20",
        ],
    );
    worker(
        &db,
        &server,
        &["enqueue", "--user", "bob", "--kind", "square", "--arg", "3"],
    );
    worker(
        &db,
        &server,
        &[
            "enqueue", "--user", "alice", "--kind", "square", "--arg", "12",
        ],
    );
    let log = worker(&db, &server, &["run", "--drain"]);
    assert_eq!(log.lines().count(), 3, "{log}");

    publish(
        &server,
        ALPHA,
        json!({"user_id": "alice", "event": "sentinel", "data": 0}),
    )
    .await;
    let received = messages_until(&mut socket, "sentinel").await;
    let results: Vec<_> = received
        .iter()
        .map(|m| (m["event"].clone(), m["data"].clone()))
        .collect();
    assert_eq!(
        results,
        vec![
            (
                json!("task.done"),
                json!({"task_id": 1, "kind": "report", "result": {"rows": 20, "total": 210}})
            ),
            (
                json!("task.done"),
                json!({"task_id": 3, "kind": "square", "result": {"value": 144}})
            ),
            (json!("sentinel"), json!(0)),
        ]
    );
}
