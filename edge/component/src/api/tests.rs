//! The request handling without Spin: routes, credentials, bodies and the
//! checks that answer before Redis is asked. The end-to-end behaviour
//! against real hosts and a real Redis is in `edge/harness/tests`.

use serde_json::{Value, json};

use super::*;
use crate::platform::Reply;
use crate::testing::FakePlatform;

const ALPHA: &str = "Basic YWxwaGEta2V5OmFscGhhLXNlY3JldA=="; // alpha-key:alpha-secret

fn platform() -> FakePlatform {
    FakePlatform::with_variables(&[
        ("apps", "alpha:alpha-key:alpha-secret"),
        ("public_url", "https://push.example.com"),
        ("redis_url", "redis://127.0.0.1:6379"),
        ("store_prefix", "edge"),
        ("max_batch", "2"),
    ])
}

/// Run a request through both steps.
fn request(
    platform: &FakePlatform,
    method: &str,
    path: &str,
    authorization: Option<&str>,
    body: &[u8],
) -> Response {
    match begin(platform, method, path, authorization) {
        Step::Respond(response) => response,
        Step::ReadBody { limit, call } => {
            let body = if body.len() > limit {
                Body::TooLarge
            } else {
                Body::Read(body.to_vec())
            };
            finish(platform, *call, body)
        }
    }
}

fn post(platform: &FakePlatform, path: &str, body: Value) -> (u16, Value) {
    let response = request(
        platform,
        "POST",
        path,
        Some(ALPHA),
        body.to_string().as_bytes(),
    );
    (response.status, json_of(&response))
}

fn json_of(response: &Response) -> Value {
    serde_json::from_slice(&response.body).unwrap_or(Value::Null)
}

fn code_of(response: &Response) -> String {
    json_of(response)["error"]["code"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[test]
fn unknown_paths_and_methods_are_refused_before_anything_else() {
    let platform = FakePlatform::with_variables(&[]);
    for (method, path, status, code) in [
        ("GET", "/v1/nothing", 404, "not_found"),
        ("DELETE", "/v1/tokens/", 404, "not_found"),
        ("DELETE", "/v1/tokens/a/b", 404, "not_found"),
        ("GET", "/v1/tokens", 405, "method_not_allowed"),
        ("POST", "/v1/tokens/abc", 405, "method_not_allowed"),
        ("GET", "/v1/publish/batch", 405, "method_not_allowed"),
        ("GET", "/v1/channels/", 404, "not_found"),
        ("GET", "/v1/channels/a/b", 404, "not_found"),
        ("GET", "/v1/channels//members", 404, "not_found"),
        ("POST", "/v1/channels", 405, "method_not_allowed"),
        ("DELETE", "/v1/channels/a", 405, "method_not_allowed"),
        ("POST", "/v1/channels/a/members", 405, "method_not_allowed"),
        ("GET", "/apps/1/channels/", 404, "not_found"),
        ("GET", "/apps/1/channels/a/users/x", 404, "not_found"),
        (
            "POST",
            "/apps/1/channels/a/users",
            405,
            "method_not_allowed",
        ),
        ("GET", "/apps/1/channels/a/b", 404, "not_found"),
        ("POST", "/apps/1/channels", 405, "method_not_allowed"),
        ("GET", "/apps/1/events", 405, "method_not_allowed"),
    ] {
        let response = request(&platform, method, path, None, b"");
        assert_eq!(response.status, status, "{method} {path}");
        assert_eq!(code_of(&response), code, "{method} {path}");
    }
    // With no variables at all, a routed request says so.
    let response = request(&platform, "POST", "/v1/tokens", Some(ALPHA), b"");
    assert_eq!(response.status, 500);
    assert_eq!(code_of(&response), "edge_misconfigured");
}

#[test]
fn credentials_are_checked_before_the_body() {
    let platform = platform();
    let wrong = format!("Basic {}", BASE64.encode("alpha-key:alpha-secreT"));
    let unknown = format!("Basic {}", BASE64.encode("nobody:alpha-secret"));
    for authorization in [
        None,
        Some("Bearer abc"),
        Some("Basic !!!"),
        Some(wrong.as_str()),
        Some(unknown.as_str()),
    ] {
        let response = request(
            &platform,
            "POST",
            "/v1/tokens",
            authorization,
            &vec![b'x'; 1 << 20],
        );
        assert_eq!(response.status, 401, "{authorization:?}");
        assert_eq!(code_of(&response), "unauthorized");
        assert_eq!(
            response.header("www-authenticate"),
            Some("Basic realm=\"madx-pusher\"")
        );
    }
    assert!(platform.commands().is_empty());
}

/// Pusher's libraries sign rather than log in: a refusal has no Basic
/// challenge, and an unsigned request is refused before its body is read.
#[test]
fn pusher_requests_are_refused_by_their_signature_before_the_body() {
    let platform = platform();
    let response = request(&platform, "POST", "/apps/alpha/events", None, b"{}");
    assert_eq!(response.status, 401);
    assert_eq!(
        json_of(&response)["error"]["message"],
        "auth_key, auth_timestamp and auth_signature are required"
    );
    assert_eq!(response.header("www-authenticate"), None);
    // Unsigned, a body over the limit is refused for its signature: the
    // host answers before it reads a body, and the edge answers alike.
    let too_big = vec![b' '; 80 * 1024 + 1];
    let response = request(&platform, "POST", "/apps/alpha/events", None, &too_big);
    assert_eq!(response.status, 401);
    assert!(platform.commands().is_empty());
}

#[test]
fn bodies_are_checked_as_on_the_host() {
    let platform = platform();
    let too_big = vec![b' '; 64 * 1024 + 1];
    let response = request(&platform, "POST", "/v1/tokens", Some(ALPHA), &too_big);
    assert_eq!(
        (response.status, code_of(&response)),
        (413, "payload_too_large".into())
    );
    for (body, code) in [
        (&b"not json"[..], "invalid_json"),
        (br#"{"nope": 1}"#, "invalid_json"),
        (br#"{"ttl": "long"}"#, "invalid_json"),
        (br#"{"ttl": 0}"#, "invalid_request"),
        (br#"{"ttl": 7201}"#, "invalid_request"),
        (br#"{"channels": ["bad glob"]}"#, "invalid_request"),
    ] {
        let response = request(&platform, "POST", "/v1/tokens", Some(ALPHA), body);
        assert_eq!(response.status, 400, "{}", String::from_utf8_lossy(body));
        assert_eq!(
            code_of(&response),
            code,
            "{}",
            String::from_utf8_lossy(body)
        );
    }
    assert!(platform.commands().is_empty());
}

#[test]
fn a_token_is_written_where_the_hosts_read_it() {
    let platform = platform();
    platform.reply(vec![Reply::Status("OK".into())]);
    // An empty body is `{}`.
    let response = request(&platform, "POST", "/v1/tokens", Some(ALPHA), b"  ");
    assert_eq!(response.status, 201);
    assert_eq!(response.header("cache-control"), Some("no-store"));
    let body = json_of(&response);
    let access_id = body["access_id"].as_str().unwrap();
    assert_eq!(body["expires_in"], 7200);
    assert_eq!(
        body["otp"],
        json!({"algorithm": "SHA1", "digits": 6, "period": 30})
    );
    assert_eq!(body["ws_url"], "wss://push.example.com/v1/ws?app=alpha");
    let command = &platform.commands()[0];
    assert!(
        command.starts_with(&format!("SET edge:app/alpha/auth/token:{access_id} {{")),
        "{command}"
    );
    assert!(command.ends_with(" NX PX 7200000"), "{command}");
}

#[test]
fn redis_failures_are_store_unavailable() {
    let platform = platform();
    let (status, body) = post(&platform, "/v1/tokens", json!({}));
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (503, Some("store_unavailable"))
    );
    let (status, body) = post(
        &platform,
        "/v1/publish",
        json!({"channel": "news", "event": "e", "data": 1}),
    );
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (503, Some("store_unavailable"))
    );
}

#[test]
fn publishes_are_checked_and_routed_as_on_the_host() {
    let platform = platform();
    for (body, status, code) in [
        (json!({"event": "e", "data": 1}), 400, "invalid_request"),
        (
            json!({"channel": "a", "user_id": "u", "event": "e", "data": 1}),
            400,
            "invalid_request",
        ),
        (
            json!({"channel": "a b", "event": "e", "data": 1}),
            400,
            "invalid_request",
        ),
        (
            json!({"user_id": "u", "event": "", "data": 1}),
            400,
            "invalid_request",
        ),
        (
            json!({"user_id": "u", "event": "e".repeat(101), "data": 1}),
            400,
            "invalid_request",
        ),
        (json!({"user_id": "u", "event": "e"}), 400, "invalid_json"),
        (
            json!({"user_id": "u", "event": "e", "data": "x".repeat(64 * 1024)}),
            413,
            "payload_too_large",
        ),
    ] {
        let (got_status, got) = post(&platform, "/v1/publish", body.clone());
        assert_eq!(got_status, status, "{body}: {got}");
        assert_eq!(got["error"]["code"], code, "{body}: {got}");
    }
    for (batch, message) in [
        (
            json!({"messages": []}),
            "a batch holds 1 to 2 messages, got 0",
        ),
        (
            json!({"messages": [
                {"user_id": "u", "event": "e", "data": 1},
                {"channel": "*", "event": "e", "data": 1},
            ]}),
            "messages[1]: '*' is not allowed in a channel name (use A-Z a-z 0-9 _ - = @ , . ; :)",
        ),
    ] {
        let (status, got) = post(&platform, "/v1/publish/batch", batch);
        assert_eq!(status, 400);
        assert_eq!(got["error"]["message"], message);
    }
    assert!(platform.commands().is_empty());

    platform.reply(vec![
        Reply::Bytes(b"41".to_vec()),
        Reply::Bytes(b"42".to_vec()),
    ]);
    let (status, got) = post(
        &platform,
        "/v1/publish/batch",
        json!({"messages": [
            {"user_id": "u", "event": "e", "data": {"n": 1}},
            {"access_id": "t", "event": "e", "data": [2]},
        ]}),
    );
    assert_eq!((status, got), (202, json!({"ids": ["41", "42"]})));
}

#[test]
fn a_revoke_deletes_then_announces() {
    let platform = platform();
    platform.reply(vec![Reply::Int(1)]);
    platform.reply(vec![Reply::Int(0)]);
    platform.reply(vec![Reply::Int(3)]);
    let response = request(&platform, "DELETE", "/v1/tokens/abc_-1", Some(ALPHA), b"");
    assert_eq!(response.status, 204);
    assert_eq!(
        platform.commands(),
        [
            "DEL edge:app/alpha/auth/token:abc_-1",
            // The token's `user_info`, kept beside it for presence.
            "DEL edge:app/alpha/presence/user-info/abc_-1",
            r#"PUBLISH edge:control {"revoke":{"app":"alpha","access_id":"abc_-1"}}"#,
        ]
    );

    platform.reply(vec![Reply::Int(0)]);
    platform.reply(vec![Reply::Int(0)]);
    let response = request(&platform, "DELETE", "/v1/tokens/gone", Some(ALPHA), b"");
    assert_eq!(response.status, 404);
    assert_eq!(code_of(&response), "token_not_found");

    // Percent-decoded, then refused by the auth rules.
    let response = request(&platform, "DELETE", "/v1/tokens/a%20b", Some(ALPHA), b"");
    assert_eq!(response.status, 400);
    assert_eq!(
        json_of(&response)["error"]["message"],
        "access_id must be 1 to 64 URL-safe characters"
    );
}

#[test]
fn percent_decoding() {
    assert_eq!(percent_decode("a%20b%2Fc").as_deref(), Some("a b/c"));
    assert_eq!(percent_decode("100%").as_deref(), Some("100%"));
    assert_eq!(percent_decode("%zz").as_deref(), Some("%zz"));
    assert_eq!(percent_decode("%ff"), None);
}

fn get(platform: &FakePlatform, path: &str) -> (u16, Value) {
    let response = request(platform, "GET", path, Some(ALPHA), b"");
    (response.status, json_of(&response))
}

fn bytes(text: &str) -> Reply {
    Reply::Bytes(text.as_bytes().to_vec())
}

/// The membership script's reply to a read of `presence-room`: ann (with
/// `user_info`) and bob.
fn roster_reply() -> Vec<Reply> {
    vec![
        bytes("present"),
        Reply::Int(2),
        bytes("bob"),
        bytes(""),
        bytes("ann"),
        bytes(r#"{"name":"Ann"}"#),
    ]
}

#[test]
fn channel_queries_need_credentials_before_redis() {
    let platform = platform();
    for path in [
        "/v1/channels",
        "/v1/channels/presence-room",
        "/v1/channels/presence-room/members",
    ] {
        let response = request(&platform, "GET", path, None, b"");
        assert_eq!(response.status, 401, "{path}");
        assert_eq!(code_of(&response), "unauthorized");
    }
    assert!(platform.commands().is_empty());
}

#[test]
fn a_presence_channel_counts_its_members_from_the_hosts_presence() {
    let platform = platform();
    platform.reply(vec![Reply::Int(3)]);
    platform.reply(roster_reply());
    let (status, body) = get(&platform, "/v1/channels/presence-room");
    assert_eq!(status, 200);
    assert_eq!(
        body,
        json!({"occupied": true, "subscription_count": 3, "user_count": 2})
    );
    let commands = platform.commands();
    assert!(commands[0].starts_with("EVAL -- Read the deployment's channel directory"));
    assert!(commands[0].ends_with(" 0 edge:app/alpha/  channel presence-room"));
    assert!(commands[1].starts_with("EVAL -- Presence members"));
    assert!(
        commands[1].ends_with(" 0 join edge:  alpha presence-room   0 0 "),
        "{}",
        commands[1]
    );

    // Other channels have no members to count, and no member list.
    platform.reply(vec![Reply::Int(0)]);
    let (status, body) = get(&platform, "/v1/channels/news%2Eeu");
    assert_eq!(status, 200);
    assert_eq!(body, json!({"occupied": false, "subscription_count": 0}));
    assert_eq!(platform.commands().len(), 3, "no roster read for news.eu");
    let (status, body) = get(&platform, "/v1/channels/news/members");
    assert_eq!(status, 404);
    assert_eq!(body["error"]["code"], "not_found");
    assert_eq!(
        body["error"]["message"],
        r#""news" is not a presence channel (presence.channel_prefix is "presence-")"#
    );
    assert_eq!(platform.commands().len(), 3);
}

#[test]
fn members_are_listed_by_user_with_their_user_info() {
    let platform = platform();
    platform.reply(roster_reply());
    let (status, body) = get(&platform, "/v1/channels/presence-room/members");
    assert_eq!(status, 200);
    assert_eq!(
        body,
        json!({"count": 2, "members": [
            {"user_id": "ann", "user_info": {"name": "Ann"}},
            {"user_id": "bob"},
        ]})
    );
    // Redis down: the hosts' answer.
    let response = request(
        &platform,
        "GET",
        "/v1/channels/presence-room/members",
        Some(ALPHA),
        b"",
    );
    assert_eq!(response.status, 503);
    assert_eq!(code_of(&response), "store_unavailable");
}

#[test]
fn the_channel_list_filters_by_prefix_and_counts_presence_members() {
    let platform = platform();
    platform.reply(vec![
        bytes("presence-room"),
        Reply::Int(3),
        bytes("news"),
        Reply::Int(1),
    ]);
    platform.reply(roster_reply());
    let (status, body) = get(&platform, "/v1/channels?x=1&prefix=%70");
    assert_eq!(status, 200);
    assert_eq!(
        body,
        json!({"channels": {
            "news": {"occupied": true, "subscription_count": 1},
            "presence-room": {"occupied": true, "subscription_count": 3, "user_count": 2},
        }})
    );
    let commands = platform.commands();
    assert!(
        commands[0].ends_with(" 0 edge:app/alpha/  prefix p"),
        "{}",
        commands[0]
    );
    assert_eq!(
        commands.len(),
        2,
        "one roster read, for the presence channel"
    );
}

#[test]
fn an_empty_presence_prefix_turns_members_off() {
    let mut platform = platform();
    platform.set_variable("presence_channel_prefix", "");
    platform.reply(vec![Reply::Int(1)]);
    let (status, body) = get(&platform, "/v1/channels/presence-room");
    assert_eq!(status, 200);
    assert_eq!(body, json!({"occupied": true, "subscription_count": 1}));
    let (status, body) = get(&platform, "/v1/channels/presence-room/members");
    assert_eq!(status, 404);
    assert_eq!(
        body["error"]["message"],
        r#""presence-room" is not a presence channel (presence.channel_prefix is "")"#
    );
    assert_eq!(platform.commands().len(), 1);
}

/// A `GET` signed as Pusher's libraries sign it (HMAC-SHA256 of
/// `GET\npath\nquery`, the parameters sorted), with `params` after the
/// `auth_*` ones.
fn pusher_get(platform: &FakePlatform, path: &str, params: &str) -> (u16, Value) {
    use hmac::{Hmac, KeyInit, Mac};
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let query = format!("auth_key=alpha-key&auth_timestamp={now}&auth_version=1.0&{params}");
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(b"alpha-secret").unwrap();
    mac.update(format!("GET\n{path}\n{query}").as_bytes());
    let signature = madx_wire::pusher::hex(&mac.finalize().into_bytes());
    let signed = format!("{path}?{query}&auth_signature={signature}");
    let response = request(platform, "GET", &signed, None, b"");
    (response.status, json_of(&response))
}

#[test]
fn pusher_channel_queries_read_members_only_when_user_count_is_asked() {
    let platform = platform();
    let directory = || {
        vec![
            bytes("presence-room"),
            Reply::Int(3),
            bytes("news"),
            Reply::Int(1),
        ]
    };
    platform.reply(directory());
    let (status, body) = pusher_get(&platform, "/apps/alpha/channels", "info=subscription_count");
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({"channels": {
            "news": {"subscription_count": 1},
            "presence-room": {"subscription_count": 3},
        }})
    );
    assert_eq!(platform.commands().len(), 1, "no roster read");

    platform.reply(directory());
    platform.reply(roster_reply());
    let (status, body) = pusher_get(
        &platform,
        "/apps/alpha/channels",
        "info=subscription_count,user_count",
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({"channels": {
            "news": {"subscription_count": 1},
            "presence-room": {"subscription_count": 3, "user_count": 2},
        }})
    );
    assert_eq!(platform.commands().len(), 3, "one roster read");
}
