//! The HTTP API's request bodies: `POST /v1/publish`, `POST
//! /v1/publish/batch` and `POST /v1/tokens`, parsed and checked as the
//! handlers do before any plugin is asked.

use madx_pusher::api::{BatchRequest, CreateToken, JsonBody, PublishRequest};
use madx_pusher::config::Limits;
use madx_wire::broker::Target;
use madx_wire::v1::Refusal;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::frames::starts_as_object;

/// Small limits, so that inputs of a few hundred bytes reach both sides of
/// every check.
fn limits() -> Limits {
    Limits {
        max_publish_bytes: 64,
        max_batch: 4,
        max_name_bytes: 16,
        ..Limits::default()
    }
}

/// One message body. Invariants: a body that parses is a JSON object; it is
/// accepted exactly when it names one target and its names and data are
/// within the limits, with the values it was sent with; otherwise the error
/// is the documented one.
pub fn publish(data: &[u8]) {
    match parse::<PublishRequest>(data) {
        Some((request, Some(value))) => check_message(request, object(&value), &limits(), None),
        Some((request, None)) => drop(request.check(&limits().message(), None)),
        None => {}
    }
}

/// A batch body. Invariants: as [`publish`] for each message, and a batch
/// is accepted only with 1 to `max_batch` messages.
pub fn publish_batch(data: &[u8]) {
    let limits = limits();
    let (batch, value) = match parse::<BatchRequest>(data) {
        Some((batch, Some(value))) => (batch, value),
        Some((batch, None)) => {
            for (index, message) in batch
                .into_messages(limits.max_batch)
                .into_iter()
                .flatten()
                .enumerate()
            {
                drop(message.check(&limits.message(), Some(index)));
            }
            return;
        }
        None => return,
    };
    let sent = object(&value)
        .get("messages")
        .and_then(Value::as_array)
        .expect("a batch has a messages array");
    match batch.into_messages(limits.max_batch) {
        Ok(messages) => {
            assert!((1..=limits.max_batch).contains(&messages.len()));
            assert_eq!(messages.len(), sent.len());
            for (index, (message, sent)) in messages.into_iter().zip(sent).enumerate() {
                check_message(message, object(sent), &limits, Some(index));
            }
        }
        Err(error) => {
            assert_eq!(error.code(), "invalid_request");
            assert!(sent.is_empty() || sent.len() > limits.max_batch);
        }
    }
}

/// A token request body. Invariants: refused exactly when the ttl is not a
/// whole number in 1..=7200 or the user id is not 1-200 bytes; an accepted
/// request carries what was sent; and handed to the token rules, a token
/// they issue takes its first code once.
pub fn token_request(data: &[u8]) {
    let (body, value) = match parse::<CreateToken>(data) {
        Some((body, Some(value))) => (body, value),
        Some((body, None)) => return drop(body.checked()),
        None => return,
    };
    let sent = object(&value);
    let field = |name: &str| sent.get(name).unwrap_or(&Value::Null);
    match body.checked() {
        Ok(request) => {
            assert_eq!(request.ttl_secs.map(f64::from), field("ttl").as_f64());
            if let Some(ttl) = request.ttl_secs {
                assert!((1..=7200).contains(&ttl));
            }
            assert_eq!(request.user_id.as_deref(), field("user_id").as_str());
            assert_eq!(strings(field("channels")), request.channels);
            assert_eq!(strings(field("publish")), request.publish);
            crate::auth::issue_and_connect(madx_auth_core::tokens::Request {
                user_id: request.user_id,
                channels: request.channels,
                publish: request.publish,
                ttl_secs: request.ttl_secs,
            });
        }
        Err(error) => {
            assert_eq!(error.code(), "invalid_request");
            let ttl_refused = field("ttl")
                .as_f64()
                .is_some_and(|ttl| ttl.fract() != 0.0 || !(1.0..=7200.0).contains(&ttl));
            let user_id_refused = field("user_id")
                .as_str()
                .is_some_and(|id| id.is_empty() || id.len() > 200);
            assert!(ttl_refused || user_id_refused, "refused {value}");
        }
    }
}

/// Parse a body as the API's extractor does, with the same body as a JSON
/// value to check the result against, when serde_json's `Value` can read
/// it (it refuses numbers beyond f64 that typed fields only skip over).
fn parse<T: DeserializeOwned>(data: &[u8]) -> Option<(T, Option<Value>)> {
    match JsonBody::<T>::parse(data) {
        Ok(JsonBody(parsed)) => {
            let text: &[u8] = if data.iter().all(u8::is_ascii_whitespace) {
                b"{}"
            } else {
                data
            };
            assert!(starts_as_object(text), "accepted {data:?}");
            Some((parsed, serde_json::from_slice(text).ok()))
        }
        Err(error) => {
            assert_eq!(error.code(), "invalid_json");
            None
        }
    }
}

fn object(value: &Value) -> &Map<String, Value> {
    value
        .as_object()
        .unwrap_or_else(|| panic!("accepted a body that is not a JSON object: {value}"))
}

fn strings(value: &Value) -> Vec<String> {
    match value {
        Value::Null => Vec::new(),
        Value::Array(items) => items
            .iter()
            .map(|item| item.as_str().expect("accepted a non-string").to_owned())
            .collect(),
        other => panic!("accepted a list that is {other}"),
    }
}

/// Check one message against what was sent and the limits.
fn check_message(
    request: PublishRequest,
    sent: &Map<String, Value>,
    limits: &Limits,
    index: Option<usize>,
) {
    let field = |name: &str| sent.get(name).unwrap_or(&Value::Null);
    let targets: Vec<&str> = ["channel", "user_id", "access_id"]
        .into_iter()
        .filter(|name| !field(name).is_null())
        .collect();
    let within = |name: &Value, limit: usize| {
        name.as_str()
            .is_some_and(|name| (1..=limit).contains(&name.len()))
    };
    // A user id's limit is the contract's (200 bytes), whatever the limits.
    let target_limit = |target: &str| match target {
        "user_id" => madx_wire::tokens::MAX_USER_ID_BYTES,
        _ => limits.max_name_bytes,
    };
    let names_ok = targets.len() == 1
        && within(field(targets[0]), target_limit(targets[0]))
        && within(field("event"), limits.max_name_bytes);
    match request.check(&limits.message(), index) {
        Ok(checked) => {
            assert!(names_ok, "accepted {sent:?}");
            let (name, value) = match &checked.target {
                Target::Channel(value) => ("channel", value),
                Target::User(value) => ("user_id", value),
                Target::Token(value) => ("access_id", value),
            };
            assert_eq!(targets, [name]);
            assert_eq!(field(name).as_str(), Some(value.as_str()));
            assert_eq!(field("event").as_str(), Some(checked.event.as_str()));
            assert!(checked.data.get().len() <= limits.max_publish_bytes);
            let data: Value = serde_json::from_str(checked.data.get()).expect("data is JSON");
            assert_eq!(&data, field("data"));
        }
        Err(error) => check_refusal(&error, names_ok),
    }
}

fn check_refusal(error: &Refusal, names_ok: bool) {
    let expected = if names_ok {
        "payload_too_large"
    } else {
        "invalid_request"
    };
    assert_eq!(error.code(), expected, "{error:?}");
}
