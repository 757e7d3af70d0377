//! The Pusher HTTP API, so a back-end written for Pusher (its server
//! libraries, Laravel broadcasting...) publishes here by changing host,
//! port and credentials only. The app's `id`, `key` and `secret` are
//! Pusher's `app_id`, key and secret. Publishes take the same path as
//! `POST /v1/publish` (limits, router, ids, history, metrics); see
//! docs/pusher-compat.md for what is and is not supported.

use std::net::IpAddr;
use std::sync::Arc;

use axum::Json;
use axum::extract::{FromRequest, FromRequestParts, Path, Request, State};
use axum::http::{Method, StatusCode, Uri};
use bytes::Bytes;
use madx_wire::pusher::{self as wire, ChannelQuery, PusherBatch, PusherEvent, Signature};
use serde_json::{Map, Value, json};

use super::ApiError;
use super::extract::{JsonBody, count_wrong_credentials, source_address, unless_throttled};
use super::publish::{self, Checked, Routed};
use crate::channels::Channels;
use crate::hub::Target;
use crate::limits::KeyName;
use crate::state::{App, AppState};

/// Check a request's Pusher signature (`madx_wire::pusher::Signature`)
/// from its request line alone; the app it is signed for. The body is read
/// only after this, so an unsigned request never makes the server hold a
/// body of up to the batch limit; its MD5 is checked once it is read.
///
/// A signature is a proof of the app's secret, so it is throttled as HTTP
/// Basic is: a source that has been guessing a key's secret is refused
/// before the HMAC, and an unknown key or a signature that does not hold
/// counts against it.
fn verify_signed<'q>(
    state: &AppState,
    app_id: &str,
    method: &Method,
    uri: &'q Uri,
    source: IpAddr,
) -> Result<(Arc<App>, Signature<'q>), ApiError> {
    let mut throttled = Ok(());
    let mut signed_for = None;
    let checked = Signature::check_request_line(
        uri.query(),
        method.as_str(),
        uri.path(),
        |key| {
            let app = state.apps.by_key(key).filter(|app| app.id == app_id);
            let key_name = app
                .as_ref()
                .map_or(KeyName::Unknown, |app| KeyName::App(app.key.clone()));
            throttled = unless_throttled(state, &key_name, source);
            signed_for = Some((key.to_owned(), key_name));
            // No app, so no HMAC, while the source is throttled.
            app.filter(|_| throttled.is_ok())
        },
        |app| &app.secret,
    );
    throttled?;
    checked.map_err(|why| {
        if let Some((key, key_name)) = signed_for
            && (why == wire::UNKNOWN_KEY || why == wire::INVALID_SIGNATURE)
        {
            count_wrong_credentials(state, &key, key_name, source);
        }
        refuse(why)
    })
}

fn refuse(why: &str) -> ApiError {
    ApiError::pusher_unauthorized(why.to_owned())
}

/// A request whose Pusher signature holds: the app it is signed for, its
/// body, its query decoded, and the path's other parameters decoded (read
/// here rather than with axum's `Path`, so a bad one is refused with the
/// API's JSON error).
pub struct Signed {
    app: Arc<App>,
    body: Bytes,
    query: Vec<(String, String)>,
    path: Vec<(String, String)>,
}

impl Signed {
    /// A parameter of the route's path; empty if the route has none.
    fn path_param(&self, name: &str) -> &str {
        self.path
            .iter()
            .find(|(key, _)| key == name)
            .map_or("", |(_, value)| value.as_str())
    }
}

impl FromRequest<Arc<AppState>> for Signed {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &Arc<AppState>) -> Result<Self, ApiError> {
        let (mut parts, body) = request.into_parts();
        let Path(params) = Path::<Vec<(String, String)>>::from_request_parts(&mut parts, state)
            .await
            .map_err(|rejection| ApiError::invalid_request(rejection.body_text()))?;
        let app_id = params
            .iter()
            .find(|(name, _)| name == "app_id")
            .map(|(_, value)| value.clone())
            .unwrap_or_default();
        let (method, uri) = (parts.method.clone(), parts.uri.clone());
        let source = source_address(&parts);
        let (app, signature) = verify_signed(state, &app_id, &method, &uri, source)?;
        let body = Bytes::from_request(Request::from_parts(parts, body), state)
            .await
            .map_err(|rejection| {
                if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::payload_too_large("the request body is over the size limit")
                } else {
                    ApiError::invalid_request(rejection.body_text())
                }
            })?;
        signature.verify_body(&body).map_err(refuse)?;
        let query = form_urlencoded::parse(uri.query().unwrap_or_default().as_bytes())
            .map(|(key, value)| (key.into_owned(), value.into_owned()))
            .collect();
        Ok(Signed {
            app,
            body,
            query,
            path: params,
        })
    }
}

/// One madx message per channel of the events, checked as a publish is.
fn into_checked(events: Vec<PusherEvent>, max_batch: usize) -> Result<Vec<Checked>, ApiError> {
    let messages = wire::messages(events, max_batch).map_err(ApiError::invalid_request)?;
    Ok(messages
        .into_iter()
        .map(|message| Checked {
            target: match message.target {
                wire::Target::Channel(name) => Target::Channel(name),
                wire::Target::User(id) => Target::User(id),
            },
            event: message.event,
            data: message.data,
            except: message.except,
        })
        .collect())
}

/// Route every message of a request before any is published, then publish
/// them in order: a request is accepted whole or refused whole.
async fn publish_events(
    state: &AppState,
    app: &App,
    events: Vec<PusherEvent>,
) -> Result<(), ApiError> {
    state.ready()?;
    let messages = into_checked(events, state.config.limits.max_batch)?;
    let mut routed: Vec<Routed> = Vec::with_capacity(messages.len());
    for (index, message) in messages.into_iter().enumerate() {
        let checked = message.within(&state.config.limits.message(), Some(index))?;
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
    let events = vec![event];
    let answer = trigger_answer(&state, &app, &events, false).await?;
    publish_events(&state, &app, events).await?;
    Ok(Json(answer))
}

/// `POST /apps/{app_id}/batch_events`
pub async fn batch_events(
    State(state): State<Arc<AppState>>,
    Signed { app, body, .. }: Signed,
) -> Result<Json<Value>, ApiError> {
    let JsonBody(batch) = JsonBody::<PusherBatch>::parse(&body)?;
    let events = batch
        .into_events(state.config.limits.max_batch)
        .map_err(ApiError::invalid_request)?;
    let answer = trigger_answer(&state, &app, &events, true).await?;
    publish_events(&state, &app, events).await?;
    Ok(Json(answer))
}

/// What a trigger answers: `{}`, or the attributes its events' `info`
/// asks for. Counted before publishing, so a store that cannot count
/// refuses the request before anything is published.
async fn trigger_answer(
    state: &AppState,
    app: &App,
    events: &[PusherEvent],
    batch: bool,
) -> Result<Value, ApiError> {
    let channels = wire::counted_channels(events, state.config.limits.max_batch)
        .map_err(ApiError::invalid_request)?;
    let directory = Channels::new(state).counting_users(wire::asks_user_count(events));
    let mut counts = Vec::new();
    for channel in channels {
        let info = directory
            .info(&app.id, &channel)
            .await
            .map_err(ApiError::store_unavailable)?;
        counts.push((channel, info));
    }
    Ok(wire::trigger_answer(events, batch, &counts))
}

/// `GET /apps/{app_id}/channels`: occupied channels, optionally by prefix.
pub async fn channels(
    State(state): State<Arc<AppState>>,
    signed: Signed,
) -> Result<Json<Value>, ApiError> {
    let query = ChannelQuery::from_pairs(signed.query.iter().map(|(k, v)| (k, v)));
    let occupied = Channels::new(&state)
        .counting_users(query.wants_user_count())
        .occupied(&signed.app.id, query.prefix())
        .await
        .map_err(ApiError::store_unavailable)?;
    let channels: Map<String, Value> = occupied
        .into_iter()
        .map(|(name, info)| {
            let attributes = query.describe(info.subscription_count, info.user_count);
            (name, Value::Object(attributes))
        })
        .collect();
    Ok(Json(json!({ "channels": channels })))
}

/// `GET /apps/{app_id}/channels/{channel}`
pub async fn channel(
    State(state): State<Arc<AppState>>,
    signed: Signed,
) -> Result<Json<Value>, ApiError> {
    let query = ChannelQuery::from_pairs(signed.query.iter().map(|(k, v)| (k, v)));
    let info = Channels::new(&state)
        .counting_users(query.wants_user_count())
        .info(&signed.app.id, signed.path_param("channel"))
        .await
        .map_err(ApiError::store_unavailable)?;
    let answer = query.describe_channel(info.subscription_count, info.user_count);
    Ok(Json(Value::Object(answer)))
}

/// `GET /apps/{app_id}/channels/{channel}/users`: a presence channel's
/// users, `{"users": [{"id"}]}`; another channel is a 400, as with Pusher.
pub async fn channel_users(
    State(state): State<Arc<AppState>>,
    signed: Signed,
) -> Result<Json<Value>, ApiError> {
    let channel = signed.path_param("channel");
    let roster = Channels::new(&state)
        .members(&signed.app.id, channel)
        .await
        .map_err(ApiError::store_unavailable)?
        .ok_or_else(|| ApiError::invalid_request(wire::USERS_OF_PRESENCE_ONLY))?;
    Ok(Json(wire::users_body(&roster.members)))
}

/// `POST /apps/{app_id}/users/{user_id}/terminate_connections`: close every
/// socket of the user, on every node, with 4009 `terminated`.
pub async fn terminate_connections(
    State(state): State<Arc<AppState>>,
    signed: Signed,
) -> Result<Json<Value>, ApiError> {
    let user_id = signed.path_param("user_id");
    state
        .broker
        .close_user(&state.hub, &signed.app.id, user_id)
        .await;
    Ok(Json(json!({})))
}
