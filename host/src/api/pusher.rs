//! The Pusher HTTP API, so a back-end written for Pusher (its server
//! libraries, Laravel broadcasting...) publishes here by changing host,
//! port and credentials only. The app's `id`, `key` and `secret` are
//! Pusher's `app_id`, key and secret. Publishes take the same path as
//! `POST /v1/publish` (limits, router, ids, history, metrics); see
//! docs/pusher-compat.md for what is and is not supported.

use std::sync::Arc;

use axum::Json;
use axum::extract::{FromRequest, FromRequestParts, Path, Request, State};
use axum::http::{Method, StatusCode, Uri};
use bytes::Bytes;
use hmac::{Hmac, KeyInit, Mac};
use md5::{Digest, Md5};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value, json};
use sha2::Sha256;

use super::ApiError;
use super::extract::JsonBody;
use super::publish::{self, Checked, Routed};
use crate::channels::{ChannelInfo, Channels};
use crate::plugins::bindings::RouteTarget;
use crate::state::{App, AppState};

/// Signed requests are accepted this long either side of the server's
/// clock, as Pusher does: the window bounds how long a captured request
/// can be replayed.
const TIMESTAMP_WINDOW_SECS: u64 = 600;
/// Pusher's limit on the channels of one trigger.
const MAX_CHANNELS_PER_EVENT: usize = 100;
/// Pusher's "send to user" channel: `#server-to-user-<user_id>`.
const SERVER_TO_USER: &str = "#server-to-user-";

/// Check a request's Pusher signature; the app it is signed for.
///
/// `auth_signature` is the hex HMAC-SHA256, with the app's secret, of
/// `METHOD\nPATH\nQUERY`, where QUERY is every other parameter as sent,
/// keys lowercased and sorted, joined with `&`.
fn verify(
    state: &AppState,
    app_id: &str,
    method: &Method,
    uri: &Uri,
    query: Option<&str>,
    body: &[u8],
) -> Result<Arc<App>, ApiError> {
    let mut signature = None;
    let mut signed: Vec<(String, &str)> = Vec::new();
    for pair in query
        .unwrap_or_default()
        .split('&')
        .filter(|pair| !pair.is_empty())
    {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        if key == "auth_signature" {
            signature = Some(value);
        } else {
            signed.push((key.to_ascii_lowercase(), value));
        }
    }
    signed.sort_by(|a, b| a.0.cmp(&b.0));
    let param = |name: &str| {
        signed
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| *value)
    };
    let refuse = |why: &str| ApiError::pusher_unauthorized(why.to_owned());
    let (Some(key), Some(timestamp), Some(signature)) =
        (param("auth_key"), param("auth_timestamp"), signature)
    else {
        return Err(refuse(
            "auth_key, auth_timestamp and auth_signature are required",
        ));
    };
    if param("auth_version") != Some("1.0") {
        return Err(refuse("auth_version must be 1.0"));
    }
    let timestamp: u64 = timestamp
        .parse()
        .map_err(|_| refuse("auth_timestamp must be a unix time in seconds"))?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs());
    if now.abs_diff(timestamp) > TIMESTAMP_WINDOW_SECS {
        return Err(refuse(
            "auth_timestamp is more than 600 s away from the server's clock",
        ));
    }
    let app = state
        .apps
        .by_key(key)
        .filter(|app| app.id == app_id)
        .ok_or_else(|| refuse("unknown auth_key for this app"))?;
    if !body.is_empty() {
        let digest = hex(&Md5::digest(body));
        if param("body_md5") != Some(digest.as_str()) {
            return Err(refuse("body_md5 does not match the body"));
        }
    }
    let query: Vec<String> = signed
        .iter()
        .map(|(key, value)| format!("{key}={value}"))
        .collect();
    let to_sign = format!("{}\n{}\n{}", method.as_str(), uri.path(), query.join("&"));
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(app.secret.as_bytes()) else {
        return Err(refuse("the app secret cannot key HMAC-SHA256"));
    };
    mac.update(to_sign.as_bytes());
    let Some(presented) = unhex(signature) else {
        return Err(refuse("auth_signature is not hex"));
    };
    // Constant time: the answer's timing tells nothing about the secret.
    mac.verify_slice(&presented)
        .map_err(|_| refuse("invalid signature"))?;
    Ok(app)
}

/// A request whose Pusher signature holds: the app it is signed for, its
/// body, and its query decoded.
pub struct Signed {
    app: Arc<App>,
    body: Bytes,
    query: Vec<(String, String)>,
}

impl FromRequest<Arc<AppState>> for Signed {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &Arc<AppState>) -> Result<Self, ApiError> {
        let (mut parts, body) = request.into_parts();
        let Path(params) = Path::<Vec<(String, String)>>::from_request_parts(&mut parts, state)
            .await
            .map_err(|rejection| ApiError::invalid_request(rejection.body_text()))?;
        let app_id = params
            .into_iter()
            .find(|(name, _)| name == "app_id")
            .map(|(_, value)| value)
            .unwrap_or_default();
        let (method, uri) = (parts.method.clone(), parts.uri.clone());
        let body = Bytes::from_request(Request::from_parts(parts, body), state)
            .await
            .map_err(|rejection| {
                if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::payload_too_large("the request body is over the size limit")
                } else {
                    ApiError::invalid_request(rejection.body_text())
                }
            })?;
        let app = verify(state, &app_id, &method, &uri, uri.query(), &body)?;
        let query = form_urlencoded::parse(uri.query().unwrap_or_default().as_bytes())
            .map(|(key, value)| (key.into_owned(), value.into_owned()))
            .collect();
        Ok(Signed { app, body, query })
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|at| u8::from_str_radix(text.get(at..at + 2)?, 16).ok())
        .collect()
}

/// One event as Pusher's `POST /events` (and each `batch` entry) takes it.
#[derive(Debug, Deserialize)]
pub struct PusherEvent {
    name: String,
    data: Box<RawValue>,
    channel: Option<String>,
    channels: Option<Vec<String>>,
    socket_id: Option<String>,
    /// Attributes to return for each channel; accepted, answered with `{}`.
    #[allow(dead_code)]
    info: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct PusherBatch {
    batch: Vec<PusherEvent>,
}

impl PusherEvent {
    /// One madx message per channel, as Pusher delivers one event per
    /// channel. A `data` string holding JSON is delivered as that JSON,
    /// any other string as a JSON string.
    fn into_messages(self) -> Result<Vec<Checked>, ApiError> {
        let channels = match (self.channel, self.channels) {
            (Some(channel), None) => vec![channel],
            (None, Some(channels)) if (1..=MAX_CHANNELS_PER_EVENT).contains(&channels.len()) => {
                channels
            }
            (None, Some(_)) => {
                return Err(ApiError::invalid_request(format!(
                    "channels must list 1 to {MAX_CHANNELS_PER_EVENT} channels"
                )));
            }
            _ => {
                return Err(ApiError::invalid_request(
                    "give exactly one of channel and channels",
                ));
            }
        };
        let data = delivered_data(self.data)?;
        Ok(channels
            .into_iter()
            .map(|channel| {
                let target = match channel.strip_prefix(SERVER_TO_USER) {
                    Some(user_id) => RouteTarget::User(user_id.to_owned()),
                    None => RouteTarget::Channel(channel),
                };
                Checked {
                    target,
                    event: self.name.clone(),
                    data: data.clone(),
                    except: self.socket_id.clone(),
                }
            })
            .collect())
    }
}

fn delivered_data(data: Box<RawValue>) -> Result<Box<RawValue>, ApiError> {
    let Ok(text) = serde_json::from_str::<String>(data.get()) else {
        // Not a string (Pusher's libraries always send one): as given.
        return Ok(data);
    };
    match serde_json::from_str::<Box<RawValue>>(&text) {
        Ok(json) => Ok(json),
        Err(_) => Ok(data),
    }
}

/// Route every message of a request before any is published, then publish
/// them in order: a request is accepted whole or refused whole.
async fn publish_events(
    state: &AppState,
    app: &App,
    events: Vec<PusherEvent>,
) -> Result<(), ApiError> {
    state.ready()?;
    let mut messages = Vec::new();
    for event in events {
        messages.extend(event.into_messages()?);
    }
    let max = state.config.limits.max_batch.max(MAX_CHANNELS_PER_EVENT);
    if messages.len() > max {
        return Err(ApiError::invalid_request(format!(
            "one request reaches at most {max} channels"
        )));
    }
    let mut routed: Vec<Routed> = Vec::with_capacity(messages.len());
    for (index, message) in messages.into_iter().enumerate() {
        let checked = message.within(&state.config.limits, Some(index))?;
        routed.push(publish::route_checked(state, app, checked, Some(index)).await?);
    }
    publish::store(state, app, &routed).await?;
    Ok(())
}

/// `POST /apps/{app_id}/events`
pub async fn events(
    State(state): State<Arc<AppState>>,
    Signed { app, body, .. }: Signed,
) -> Result<Json<Value>, ApiError> {
    let JsonBody(event) = JsonBody::<PusherEvent>::parse(&body)?;
    publish_events(&state, &app, vec![event]).await?;
    Ok(Json(json!({})))
}

/// `POST /apps/{app_id}/batch_events`
pub async fn batch_events(
    State(state): State<Arc<AppState>>,
    Signed { app, body, .. }: Signed,
) -> Result<Json<Value>, ApiError> {
    let JsonBody(PusherBatch { batch }) = JsonBody::parse(&body)?;
    let max = state.config.limits.max_batch;
    if batch.is_empty() || batch.len() > max {
        return Err(ApiError::invalid_request(format!(
            "a batch holds 1 to {max} events, got {}",
            batch.len()
        )));
    }
    publish_events(&state, &app, batch).await?;
    Ok(Json(json!({})))
}

/// The attributes a channel query asked for (`info=a,b`).
fn wants(query: &[(String, String)], attribute: &str) -> bool {
    query
        .iter()
        .filter(|(key, _)| key == "info")
        .flat_map(|(_, value)| value.split(','))
        .any(|wanted| wanted == attribute)
}

fn describe(info: ChannelInfo, query: &[(String, String)]) -> Map<String, Value> {
    let mut attributes = Map::new();
    if wants(query, "subscription_count") {
        attributes.insert("subscription_count".into(), info.subscription_count.into());
    }
    if let (true, Some(users)) = (wants(query, "user_count"), info.user_count) {
        attributes.insert("user_count".into(), users.into());
    }
    attributes
}

/// `GET /apps/{app_id}/channels`: occupied channels, optionally by prefix.
pub async fn channels(
    State(state): State<Arc<AppState>>,
    Signed { app, query, .. }: Signed,
) -> Result<Json<Value>, ApiError> {
    let prefix = query
        .iter()
        .find(|(key, _)| key == "filter_by_prefix")
        .map_or("", |(_, value)| value.as_str());
    let occupied = Channels::new(&state)
        .occupied(&app.id, prefix)
        .await
        .map_err(ApiError::store_unavailable)?;
    let channels: Map<String, Value> = occupied
        .into_iter()
        .map(|(name, info)| (name, Value::Object(describe(info, &query))))
        .collect();
    Ok(Json(json!({ "channels": channels })))
}

/// `GET /apps/{app_id}/channels/{channel}`
pub async fn channel(
    State(state): State<Arc<AppState>>,
    Path((_, channel)): Path<(String, String)>,
    Signed { app, query, .. }: Signed,
) -> Result<Json<Value>, ApiError> {
    let info = Channels::new(&state)
        .info(&app.id, &channel)
        .await
        .map_err(ApiError::store_unavailable)?;
    let mut answer = describe(info, &query);
    answer.insert("occupied".into(), info.occupied().into());
    Ok(Json(Value::Object(answer)))
}

/// `POST /apps/{app_id}/users/{user_id}/terminate_connections`: close every
/// socket of the user, on every node, with 4009 `terminated`.
pub async fn terminate_connections(
    State(state): State<Arc<AppState>>,
    Path((_, user_id)): Path<(String, String)>,
    Signed { app, .. }: Signed,
) -> Result<Json<Value>, ApiError> {
    state.broker.close_user(&state.hub, &app.id, &user_id).await;
    Ok(Json(json!({})))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_strings_holding_json_are_delivered_as_json() {
        let raw = |text: &str| RawValue::from_string(text.to_owned()).unwrap();
        let cases = [
            (r#""{\"done\":true}""#, r#"{"done":true}"#),
            (r#""[1,2]""#, "[1,2]"),
            (r#""42""#, "42"),
            (r#""hello""#, r#""hello""#),
            (r#""""#, r#""""#),
            (r#"{"already":"json"}"#, r#"{"already":"json"}"#),
        ];
        for (given, delivered) in cases {
            assert_eq!(
                delivered_data(raw(given)).unwrap().get(),
                delivered,
                "{given}"
            );
        }
    }

    #[test]
    fn hex_round_trips_and_refuses_garbage() {
        assert_eq!(
            unhex(&hex(&[0, 1, 0xab, 0xff])),
            Some(vec![0, 1, 0xab, 0xff])
        );
        assert_eq!(unhex("abc"), None);
        assert_eq!(unhex("zz"), None);
        assert_eq!(unhex("é1"), None);
    }
}
