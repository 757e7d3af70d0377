//! Connecting with one-time TOTP connection strings: `GET /v1/ws`.

use std::time::Duration;

use crate::common::*;
use serde_json::json;

#[tokio::test]
async fn a_fresh_code_opens_a_socket_with_a_welcome() {
    let server = TestServer::start(TWO_APPS);
    let token = server.token(ALPHA, json!({"user_id": "alice"})).await;
    away_from_step_edge(30, 3).await;
    let (_socket, welcome) = connect(&token.url_with(&token.code(0))).await.welcomed();
    assert_eq!(welcome["type"], "welcome");
    assert_eq!(welcome["access_id"], token.access_id.as_str());
    assert_eq!(welcome["heartbeat_s"], 25);
    assert!(
        welcome["connection_id"]
            .as_str()
            .is_some_and(|id| !id.is_empty())
    );
}

#[tokio::test]
async fn a_connection_string_works_once() {
    let server = TestServer::start(TWO_APPS);
    let token = server.token(ALPHA, empty()).await;
    away_from_step_edge(30, 3).await;
    let url = token.url_with(&token.code(0));
    let (_first, _) = connect(&url).await.welcomed();
    let (code, error) = connect(&url).await.refused();
    assert_eq!(code, 4003);
    assert_eq!(error["reason"], "otp_reused");
}

#[tokio::test]
async fn a_wrong_code_is_refused_with_4002() {
    let server = TestServer::start(TWO_APPS);
    let token = server.token(ALPHA, empty()).await;
    away_from_step_edge(30, 3).await;
    let right = token.code(0);
    let wrong = if right == "123456" {
        "654321"
    } else {
        "123456"
    };
    let (code, error) = connect(&token.url_with(wrong)).await.refused();
    assert_eq!(code, 4002);
    assert_eq!(error["reason"], "otp_invalid");
}

#[tokio::test]
async fn one_step_of_clock_skew_is_accepted_two_are_not() {
    let server = TestServer::start(TWO_APPS);
    let token = server.token(ALPHA, empty()).await;
    away_from_step_edge(30, 3).await;
    for steps in [-1, 1] {
        let (_socket, welcome) = connect(&token.url_with(&token.code(steps)))
            .await
            .welcomed();
        assert_eq!(welcome["type"], "welcome", "skew of {steps} step");
    }
    for steps in [-2, 2] {
        let (code, _) = connect(&token.url_with(&token.code(steps))).await.refused();
        assert_eq!(code, 4002, "skew of {steps} steps");
    }
}

#[tokio::test]
async fn unknown_tokens_are_refused_with_4004() {
    let server = TestServer::start(TWO_APPS);
    let url = server.ws_url("app=alpha&access_id=AAAAAAAAAAAAAAAAAAAAAA&otp=123456");
    let (code, error) = connect(&url).await.refused();
    assert_eq!(code, 4004);
    assert_eq!(error["reason"], "token_invalid");
}

#[tokio::test]
async fn an_idle_token_expires() {
    let server = TestServer::start(TWO_APPS);
    let token = server.token(ALPHA, json!({"ttl": 1})).await;
    tokio::time::sleep(Duration::from_millis(2200)).await;
    away_from_step_edge(30, 3).await;
    let (code, _) = connect(&token.url_with(&token.code(0))).await.refused();
    assert_eq!(code, 4004);
}

#[tokio::test]
async fn an_open_socket_keeps_its_token_alive() {
    let server = TestServer::start(TWO_APPS);
    // First wait for a fresh step: waiting after issuing would let the
    // short-lived token expire before it is used.
    away_from_step_edge(30, 10).await;
    let token = server.token(ALPHA, json!({"ttl": 3})).await;
    let (mut socket, _) = connect(&token.url_with(&token.code(0))).await.welcomed();
    // Twice the idle timeout passes while the socket is open.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let (_second, _) = connect(&token.url_with(&token.code(1))).await.welcomed();
    // Still usable: the socket answers.
    send_json(&mut socket, json!({"type": "ping"})).await;
    assert_eq!(next_json(&mut socket).await.unwrap()["type"], "pong");
}

#[tokio::test]
async fn a_revoked_token_cannot_connect_and_its_open_socket_is_closed_with_4010() {
    let server = TestServer::start(TWO_APPS);
    let token = server.token(ALPHA, empty()).await;
    away_from_step_edge(30, 3).await;
    let (mut socket, _) = connect(&token.url_with(&token.code(0))).await.welcomed();

    let (status, _) = server.revoke(ALPHA, &token.access_id).await;
    assert_eq!(status, 204);
    assert_eq!(closed_with(&mut socket).await, 4010);

    let (code, _) = connect(&token.url_with(&token.code(1))).await.refused();
    assert_eq!(code, 4004);
}

#[tokio::test]
async fn a_run_of_wrong_codes_locks_the_access_id_until_the_lock_ends() {
    let config =
        format!("{TWO_APPS}\n[plugins.auth.settings]\nmax_failures = 3\nlockout_secs = 2\n");
    let server = TestServer::start(&config);
    let token = server.token(ALPHA, empty()).await;
    away_from_step_edge(30, 8).await;
    let right = token.code(0);
    let wrong = if right == "000000" {
        "999999"
    } else {
        "000000"
    };

    // Every compared code is answered as wrong; the third also locks.
    for _ in 0..3 {
        let (code, _) = connect(&token.url_with(wrong)).await.refused();
        assert_eq!(code, 4002);
    }
    let (code, error) = connect(&token.url_with(wrong)).await.refused();
    assert_eq!(code, 4100);
    assert_eq!(error["reason"], "rate_limited");

    // Locked: even the right code is refused, and is not spent by it.
    let (code, _) = connect(&token.url_with(&right)).await.refused();
    assert_eq!(code, 4100);

    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (_socket, welcome) = connect(&token.url_with(&right)).await.welcomed();
    assert_eq!(welcome["type"], "welcome");
}

#[tokio::test]
async fn a_token_of_one_app_is_useless_in_another() {
    let server = TestServer::start(TWO_APPS);
    let token = server.token(ALPHA, empty()).await;
    away_from_step_edge(30, 3).await;
    let url = server.ws_url(&format!(
        "app=beta&access_id={}&otp={}",
        token.access_id,
        token.code(0)
    ));
    let (code, _) = connect(&url).await.refused();
    assert_eq!(code, 4004);
    // The code was not spent in the other app: it still opens alpha.
    let (_socket, _) = connect(&token.url_with(&token.code(0))).await.welcomed();
}

#[tokio::test]
async fn missing_or_malformed_parameters_are_refused_with_4001() {
    let server = TestServer::start(TWO_APPS);
    let token = server.token(ALPHA, empty()).await;
    let queries = [
        String::from("app=alpha"),
        format!("app=alpha&access_id={}", token.access_id),
        String::from("app=alpha&otp=123456"),
        format!("app=alpha&access_id={}&otp=12345", token.access_id),
        format!("app=alpha&access_id={}&otp=abcdef", token.access_id),
        format!("app=gamma&access_id={}&otp=123456", token.access_id),
        // Two apps are served: which one must be said.
        format!("access_id={}&otp=123456", token.access_id),
    ];
    for query in queries {
        let (code, error) = connect(&server.ws_url(&query)).await.refused();
        assert_eq!(code, 4001, "{query}");
        assert_eq!(error["reason"], "bad_request", "{query}");
    }
}

#[tokio::test]
async fn with_one_app_the_app_parameter_may_be_left_out() {
    let config = "[[apps]]\nid = \"solo\"\nkey = \"solo-key\"\nsecret = \"solo-secret\"\n";
    let server = TestServer::start(config);
    let token = server.token(("solo-key", "solo-secret"), empty()).await;
    away_from_step_edge(30, 3).await;
    let url = server.ws_url(&format!(
        "access_id={}&otp={}",
        token.access_id,
        token.code(0)
    ));
    let (_socket, welcome) = connect(&url).await.welcomed();
    assert_eq!(welcome["access_id"], token.access_id.as_str());
}

#[tokio::test]
async fn frames_get_answers_and_bad_frames_do_not_close_the_socket() {
    let server = TestServer::start(TWO_APPS);
    let token = server.token(ALPHA, empty()).await;
    away_from_step_edge(30, 3).await;
    let (mut socket, _) = connect(&token.url_with(&token.code(0))).await.welcomed();

    send_json(&mut socket, json!({"type": "ping"})).await;
    assert_eq!(
        next_json(&mut socket).await.unwrap(),
        json!({"type": "pong"})
    );

    send_json(&mut socket, json!({"type": "dance"})).await;
    let error = next_json(&mut socket).await.unwrap();
    assert_eq!(error["type"], "error");
    assert_eq!(error["code"], 4301);
    assert_eq!(error["frame"], "dance");

    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::Message;
    socket.send(Message::Text("not json".into())).await.unwrap();
    let error = next_json(&mut socket).await.unwrap();
    assert_eq!(error["code"], 4300);

    send_json(&mut socket, json!({"type": "ping"})).await;
    assert_eq!(next_json(&mut socket).await.unwrap()["type"], "pong");
}

#[tokio::test]
async fn a_silent_client_is_closed_with_4201() {
    let config = format!("heartbeat_secs = 1\n{TWO_APPS}");
    let server = TestServer::start(&config);
    let token = server.token(ALPHA, empty()).await;
    away_from_step_edge(30, 3).await;
    let (mut socket, welcome) = connect(&token.url_with(&token.code(0))).await.welcomed();
    assert_eq!(welcome["heartbeat_s"], 1);
    // Not reading means not answering the server's pings.
    tokio::time::sleep(Duration::from_millis(3500)).await;
    assert_eq!(closed_with(&mut socket).await, 4201);
}

#[tokio::test]
async fn shutdown_asks_open_sockets_to_reconnect_with_4200() {
    let mut server = TestServer::start(TWO_APPS);
    let token = server.token(ALPHA, empty()).await;
    away_from_step_edge(30, 3).await;
    let (mut socket, _) = connect(&token.url_with(&token.code(0))).await.welcomed();
    // Accepted just before the signal: it must not be dropped.
    let body = json!({"access_id": token.access_id, "event": "last-words", "data": 1});
    publish(&server, ALPHA, body).await;

    let status = std::process::Command::new("kill")
        .args(["-TERM", &server.pid().to_string()])
        .status()
        .expect("send SIGTERM");
    assert!(status.success());
    let received = messages_until(&mut socket, "last-words").await;
    assert_eq!(received.len(), 1);
    assert_eq!(closed_with(&mut socket).await, 4200);
    drop(socket);
    let exit = server.wait_for_exit(Duration::from_secs(15));
    assert!(
        exit.is_some_and(|status| status.success()),
        "exit: {exit:?}"
    );
}

#[tokio::test]
async fn an_oversized_message_closes_the_socket_with_1009() {
    let config = format!("[limits]\nmax_frame_bytes = 1024\n{TWO_APPS}");
    let server = TestServer::start(&config);
    let token = server.token(ALPHA, empty()).await;
    away_from_step_edge(30, 3).await;
    let (mut socket, _) = connect(&token.url_with(&token.code(0))).await.welcomed();
    send_json(
        &mut socket,
        json!({"type": "ping", "pad": "x".repeat(2000)}),
    )
    .await;
    assert_eq!(closed_with(&mut socket).await, 1009);
}
