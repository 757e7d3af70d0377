//! The HTTP API: tokens, revocation, health, errors.

use crate::common::*;
use serde_json::{Value, json};

#[tokio::test]
async fn a_token_response_carries_what_a_client_needs() {
    let server = TestServer::start(TWO_APPS);
    let response = http()
        .post(server.url("/v1/tokens"))
        .basic_auth(ALPHA.0, Some(ALPHA.1))
        .json(&json!({"user_id": "alice", "channels": ["news.*"], "publish": ["chat"], "ttl": 60}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    assert_eq!(response.headers()["cache-control"], "no-store");
    let body: Value = response.json().await.unwrap();

    let access_id = body["access_id"].as_str().unwrap();
    assert!(access_id.len() >= 22, "at least 128 bits: {access_id}");
    assert!(
        access_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    );
    let seed = body["secret_seed"].as_str().unwrap();
    let seed_bytes = totp_rs::Secret::Encoded(seed.to_owned())
        .to_bytes()
        .unwrap();
    assert_eq!(seed_bytes.len(), 20);
    assert!(!seed.contains('='), "base32 without padding");
    assert_eq!(
        body["otp"],
        json!({"algorithm": "SHA1", "digits": 6, "period": 30})
    );
    assert_eq!(body["expires_in"], 60);
    let expected_ws = format!("{}/v1/ws?app=alpha", server.base.replacen("http", "ws", 1));
    assert_eq!(body["ws_url"], expected_ws.as_str());
}

#[tokio::test]
async fn tokens_default_to_the_two_hour_idle_limit_and_differ_each_time() {
    let server = TestServer::start(TWO_APPS);
    let (status, first) = server.post_token(ALPHA, empty()).await;
    assert_eq!(status, 201);
    assert_eq!(first["expires_in"], 7200);
    let (_, second) = server.post_token(ALPHA, empty()).await;
    assert_ne!(first["access_id"], second["access_id"]);
    assert_ne!(first["secret_seed"], second["secret_seed"]);

    // An empty body is an empty request.
    let response = http()
        .post(server.url("/v1/tokens"))
        .basic_auth(ALPHA.0, Some(ALPHA.1))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
}

#[tokio::test]
async fn ws_url_follows_public_url() {
    let config = format!("public_url = \"https://push.example.com/\"\n{TWO_APPS}");
    let server = TestServer::start(&config);
    let (_, body) = server.post_token(BETA, empty()).await;
    assert_eq!(body["ws_url"], "wss://push.example.com/v1/ws?app=beta");
}

fn assert_error(status: u16, body: &Value, expected_status: u16, expected_code: &str) {
    assert_eq!(status, expected_status, "{body}");
    assert_eq!(body["error"]["code"], expected_code, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{body}"
    );
}

#[tokio::test]
async fn bad_app_credentials_are_401() {
    let server = TestServer::start(TWO_APPS);
    for credentials in [
        ("alpha-key", "beta-secret"),
        ("nobody", "alpha-secret"),
        ("", ""),
    ] {
        let (status, body) = server.post_token(credentials, empty()).await;
        assert_error(status, &body, 401, "unauthorized");
    }
    for header in [
        None,
        Some("Bearer abc"),
        Some("Basic !!!"),
        Some("Basic YWxwaGEta2V5"),
    ] {
        let mut request = http().post(server.url("/v1/tokens")).json(&empty());
        if let Some(header) = header {
            request = request.header("authorization", header);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 401, "{header:?}");
        assert!(response.headers().contains_key("www-authenticate"));
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], "unauthorized");
    }
    let (status, body) = server.revoke(("alpha-key", "wrong"), "whatever").await;
    assert_error(status, &body, 401, "unauthorized");
}

#[tokio::test]
async fn malformed_bodies_and_bad_fields_are_400() {
    let server = TestServer::start(TWO_APPS);
    for raw in [
        "{",
        "[]",
        "\"text\"",
        "{\"ttl\": \"60\"}",
        "{\"channels\": \"news\"}",
        "{\"chanels\": []}",
    ] {
        let response = http()
            .post(server.url("/v1/tokens"))
            .basic_auth(ALPHA.0, Some(ALPHA.1))
            .header("content-type", "application/json")
            .body(raw)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap();
        assert_error(status, &body, 400, "invalid_json");
    }
    for body in [
        json!({"ttl": 0}),
        json!({"ttl": 7201}),
        json!({"ttl": -5}),
        json!({"channels": ["has space"]}),
        json!({"publish": [""]}),
        json!({"user_id": ""}),
    ] {
        let (status, response) = server.post_token(ALPHA, body.clone()).await;
        assert!(status == 400, "{body} gave {status} {response}");
        let code = response["error"]["code"].as_str().unwrap();
        assert!(
            code == "invalid_request" || code == "invalid_json",
            "{body}: {response}"
        );
    }
    let (status, body) = server.post_token(ALPHA, json!({"ttl": 7201})).await;
    assert_error(status, &body, 400, "invalid_request");
}

#[tokio::test]
async fn ttl_is_a_json_number_and_must_be_whole() {
    let server = TestServer::start(TWO_APPS);
    // JSON does not tell 60.0 from 60 (nor does OpenAPI's `integer`).
    let token = server.token(ALPHA, json!({"ttl": 60.0})).await;
    assert!(!token.access_id.is_empty());
    for ttl in [json!(1.5), json!(0.0), json!(7200.5), json!(-5)] {
        let (status, body) = server.post_token(ALPHA, json!({ "ttl": ttl })).await;
        assert_error(status, &body, 400, "invalid_request");
    }
}

#[tokio::test]
async fn a_token_user_id_has_the_publish_limit() {
    let server = TestServer::start(TWO_APPS);
    let longest = "u".repeat(200);
    server.token(ALPHA, json!({ "user_id": longest })).await;
    // Every user id a token carries can be published to.
    let response = http()
        .post(server.url("/v1/publish"))
        .basic_auth(ALPHA.0, Some(ALPHA.1))
        .json(&json!({"user_id": longest, "event": "e", "data": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    // 201 bytes: refused, also when they are fewer characters.
    for user_id in ["u".repeat(201), "é".repeat(101)] {
        let (status, body) = server
            .post_token(ALPHA, json!({ "user_id": user_id }))
            .await;
        assert_error(status, &body, 400, "invalid_request");
    }
}

#[tokio::test]
async fn a_plain_get_of_the_websocket_path_is_426_in_json() {
    let server = TestServer::start(TWO_APPS);
    let response = http()
        .get(server.url("/v1/ws?app=alpha&access_id=x&otp=1"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 426);
    assert_eq!(response.headers()["upgrade"], "websocket");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "upgrade_required");
}

#[tokio::test]
async fn operator_endpoints_challenge_with_bearer() {
    let server = TestServer::start_with(TWO_APPS, &["--operator-token", "an-operator-token-16"]);
    for request in [
        http().get(server.url("/metrics")),
        http().post(server.url("/admin/reload")),
    ] {
        let response = request.bearer_auth("wrong").send().await.unwrap();
        assert_eq!(response.status(), 401);
        assert_eq!(
            response.headers()["www-authenticate"],
            "Bearer realm=\"madx-pusher\""
        );
    }
    // App endpoints keep the Basic challenge.
    let response = http().post(server.url("/v1/tokens")).send().await.unwrap();
    assert_eq!(
        response.headers()["www-authenticate"],
        "Basic realm=\"madx-pusher\""
    );
}

#[tokio::test]
async fn an_oversized_body_is_413() {
    let server = TestServer::start(TWO_APPS);
    let huge = json!({"user_id": "x".repeat(70 * 1024)});
    let (status, body) = server.post_token(ALPHA, huge).await;
    assert_error(status, &body, 413, "payload_too_large");
}

#[tokio::test]
async fn revoking_is_204_once_then_404_and_scoped_to_the_app() {
    let server = TestServer::start(TWO_APPS);
    let token = server.token(ALPHA, empty()).await;

    let (status, body) = server.revoke(BETA, &token.access_id).await;
    assert_error(status, &body, 404, "token_not_found");

    let (status, _) = server.revoke(ALPHA, &token.access_id).await;
    assert_eq!(status, 204);
    let (status, body) = server.revoke(ALPHA, &token.access_id).await;
    assert_error(status, &body, 404, "token_not_found");
}

#[tokio::test]
async fn health_readiness_and_unknown_routes() {
    let server = TestServer::start(TWO_APPS);
    let client = http();
    let health = client.get(server.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    let ready = client.get(server.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    assert_eq!(ready.json::<Value>().await.unwrap()["status"], "ready");

    let missing = client.get(server.url("/v2/nothing")).send().await.unwrap();
    let status = missing.status().as_u16();
    assert_error(status, &missing.json().await.unwrap(), 404, "not_found");

    let wrong_method = client.get(server.url("/v1/tokens")).send().await.unwrap();
    let status = wrong_method.status().as_u16();
    assert_error(
        status,
        &wrong_method.json().await.unwrap(),
        405,
        "method_not_allowed",
    );
}

#[tokio::test]
async fn without_apps_the_demo_app_serves_and_the_banner_says_how() {
    let server = TestServer::start("");
    let token = server.token(("demo-key", "demo-secret"), empty()).await;
    assert!(token.ws_url.ends_with("/v1/ws?app=demo"));
}
