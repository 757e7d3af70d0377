//! The `/v1` endpoints (tokens, publishes, channel queries): Spin's side
//! of routing, credentials and body reading; the bodies, their checks, the error codes and the limits are
//! `madx-wire`'s (`v1`, `errors`, `settings`), tokens and routing the
//! plugins'. The Pusher API's endpoints are in [`crate::pusher`].
//!
//! A request is handled in two steps so the body is read only once the
//! route and the credentials are known:
//! [`begin`] answers at once or says how much body to read; [`finish`]
//! takes the body.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use madx_wire::errors::{self, at_index};
use madx_wire::json;
use madx_wire::presence;
use madx_wire::v1::{
    Accepted, BatchAccepted, BatchRequest, CreateToken, CreatedToken, Message, OtpParams,
    PublishRequest, routed_nowhere,
};
use serde::de::DeserializeOwned;
use subtle::ConstantTimeEq;

use crate::broker::{Broker, Outgoing};
use crate::channels::Channels;
use crate::config::{App, EdgeConfig};
use crate::error::{ApiError, Response};
use crate::platform::{AuthError, Platform, RouteError};
use crate::pusher;

/// What to do once the request line and headers are known.
pub enum Step {
    /// Answer now.
    Respond(Response),
    /// Read at most `limit` bytes of body, then call [`finish`].
    /// (The call is boxed: it carries the whole configuration.)
    ReadBody { limit: usize, call: Box<Call> },
}

/// A request that passed routing (and, but for the Pusher API, whose
/// signature covers the body, authentication) and needs its body.
pub struct Call {
    config: EdgeConfig,
    endpoint: Endpoint,
}

enum Endpoint {
    CreateToken(App),
    Publish(App),
    PublishBatch(App),
    Pusher(pusher::Call),
}

/// The request body as read.
pub enum Body {
    Read(Vec<u8>),
    /// More than the limit arrived; reading stopped.
    TooLarge,
    Failed(String),
}

impl Body {
    /// The bytes, or the refusal: 413 for a body over the limit,
    /// `unreadable` (with the reason) for one that could not be read.
    pub fn bytes(self, unreadable: fn(String) -> ApiError) -> Result<Vec<u8>, ApiError> {
        match self {
            Body::Read(body) => Ok(body),
            Body::TooLarge => Err(ApiError::payload_too_large(
                "the request body is over the size limit",
            )),
            Body::Failed(message) => Err(unreadable(message)),
        }
    }
}

enum Route<'a> {
    Tokens,
    Token(&'a str),
    Publish,
    PublishBatch,
    /// `/v1/channels`, its query as sent.
    Channels(Option<&'a str>),
    /// `/v1/channels/{channel}`, the segment as sent.
    Channel(&'a str),
    /// `/v1/channels/{channel}/members`.
    Members(&'a str),
    Pusher(pusher::Route<'a>),
}

/// `/v1/channels/{channel}` and `/v1/channels/{channel}/members`, with no
/// segment empty.
fn channel_route(path: &str) -> Option<Route<'_>> {
    let segments: Vec<&str> = path.strip_prefix("/v1/channels/")?.split('/').collect();
    match segments.as_slice() {
        [channel] if !channel.is_empty() => Some(Route::Channel(channel)),
        [channel, "members"] if !channel.is_empty() => Some(Route::Members(channel)),
        _ => None,
    }
}

/// Route, check the method, load the configuration and authenticate.
pub fn begin(
    platform: &impl Platform,
    method: &str,
    path_with_query: &str,
    authorization: Option<&str>,
) -> Step {
    prepare(platform, method, path_with_query, authorization)
        .unwrap_or_else(|error| Step::Respond(error.into_response()))
}

fn prepare(
    platform: &impl Platform,
    method: &str,
    path_with_query: &str,
    authorization: Option<&str>,
) -> Result<Step, ApiError> {
    let (path, query) = match path_with_query.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (path_with_query, None),
    };
    let route = match path {
        "/v1/tokens" => Route::Tokens,
        "/v1/publish" => Route::Publish,
        "/v1/publish/batch" => Route::PublishBatch,
        "/v1/channels" => Route::Channels(query),
        other => match (
            other.strip_prefix("/v1/tokens/"),
            channel_route(other),
            pusher::route(other),
        ) {
            (Some(segment), _, _) if !segment.is_empty() && !segment.contains('/') => {
                Route::Token(segment)
            }
            (_, Some(route), _) => route,
            (_, _, Some(route)) => Route::Pusher(route),
            _ => return Err(ApiError::not_found("no such endpoint")),
        },
    };
    let wanted = match &route {
        Route::Token(_) => "DELETE",
        Route::Channels(_) | Route::Channel(_) | Route::Members(_) => "GET",
        Route::Pusher(route) => route.method(),
        Route::Tokens | Route::Publish | Route::PublishBatch => "POST",
    };
    if method != wanted {
        return Err(ApiError::method_not_allowed());
    }
    let config = EdgeConfig::load(platform).map_err(|error| {
        eprintln!("madx-edge: {error}");
        ApiError::misconfigured(error)
    })?;
    let authenticated = || calling_app(&config, authorization).ok_or_else(ApiError::unauthorized);
    let limits = config.limits;
    // A request without a body is answered now, once logged in.
    let now = |handle: &dyn Fn(&App) -> Result<Response, ApiError>| {
        authenticated().map(|app| Step::Respond(respond(handle(&app))))
    };
    let (limit, endpoint) = match route {
        Route::Token(segment) => return now(&|app| revoke(platform, &config, app, segment)),
        Route::Channels(query) => {
            return now(&|app| list_channels(platform, &config, app, query));
        }
        Route::Channel(segment) => {
            return now(&|app| one_channel(platform, &config, app, segment));
        }
        Route::Members(segment) => {
            return now(&|app| channel_members(platform, &config, app, segment));
        }
        Route::Tokens => (
            limits.max_body_bytes,
            Endpoint::CreateToken(authenticated()?),
        ),
        Route::Publish => (limits.message_body(), Endpoint::Publish(authenticated()?)),
        Route::PublishBatch => (
            limits.batch_body(),
            Endpoint::PublishBatch(authenticated()?),
        ),
        // Signed rather than logged in: the request line's signature is
        // checked before the body is read, the body's MD5 in `finish`.
        Route::Pusher(route) => {
            let call = pusher::Call::new(route, path_with_query)?;
            pusher::check_signed(&config, &call)?;
            (call.body_limit(&limits), Endpoint::Pusher(call))
        }
    };
    Ok(Step::ReadBody {
        limit,
        call: Box::new(Call { config, endpoint }),
    })
}

/// Handle the request with its body.
pub fn finish(platform: &impl Platform, call: Call, body: Body) -> Response {
    let Call { config, endpoint } = call;
    let result = match endpoint {
        Endpoint::CreateToken(app) => {
            parse(body).and_then(|request| create_token(platform, &config, &app, request))
        }
        Endpoint::Publish(app) => {
            parse(body).and_then(|request| publish(platform, &config, &app, request))
        }
        Endpoint::PublishBatch(app) => {
            parse(body).and_then(|batch| publish_batch(platform, &config, &app, batch))
        }
        Endpoint::Pusher(call) => pusher::finish(platform, &config, call, body),
    };
    respond(result)
}

fn respond(result: Result<Response, ApiError>) -> Response {
    result.unwrap_or_else(ApiError::into_response)
}

/// The app whose key and secret came with the request (HTTP Basic); the
/// secret is compared in constant time.
fn calling_app(config: &EdgeConfig, authorization: Option<&str>) -> Option<App> {
    let (scheme, encoded) = authorization?.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = String::from_utf8(BASE64.decode(encoded.trim()).ok()?).ok()?;
    let (key, secret) = decoded.split_once(':')?;
    let app = config.app_by_key(key)?;
    bool::from(app.secret.as_bytes().ct_eq(secret.as_bytes())).then(|| app.clone())
}

/// A JSON body. An empty (or all-whitespace) body reads as `{}`, as on the
/// host.
fn parse<T: DeserializeOwned>(body: Body) -> Result<T, ApiError> {
    parse_json(&body.bytes(ApiError::invalid_json)?)
}

/// A JSON body once read, as [`parse`] takes it.
pub(crate) fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let body = json::body_or_empty_object(body);
    if !json::opens_object(body) {
        return Err(ApiError::invalid_json(json::BODY_NOT_AN_OBJECT));
    }
    serde_json::from_slice(body).map_err(|error| ApiError::invalid_json(error.to_string()))
}

/// The auth plugin's refusals as the API answers them (docs/protocol.md).
fn auth_error(error: AuthError) -> ApiError {
    match error {
        AuthError::BadRequest(message) => ApiError::invalid_request(message),
        AuthError::TokenInvalid => ApiError::token_not_found(),
        AuthError::RateLimited(retry_after_secs) => ApiError::rate_limited(retry_after_secs),
        AuthError::Unavailable(message) => ApiError::store_unavailable(message),
        AuthError::OtpRefused => ApiError::invalid_request(errors::AUTH_REFUSED),
    }
}

/// `POST /v1/tokens`: the deployment's auth plugin issues the token, and
/// writes it where the hosts' copy of the plugin reads it.
fn create_token(
    platform: &impl Platform,
    config: &EdgeConfig,
    app: &App,
    body: CreateToken,
) -> Result<Response, ApiError> {
    // The contract's bounds hold whatever the plugin does.
    let request = body.checked()?;
    let user_info = request.user_info.clone();
    let issued = platform.issue_token(&app.id, request).map_err(auth_error)?;
    if let Some(info) = user_info {
        broker(platform, config)
            .keep_user_info(&app.id, &issued.access_id, &info, issued.expires_in_secs)
            .map_err(ApiError::store_unavailable)?;
    }
    let created = CreatedToken {
        access_id: issued.access_id,
        secret_seed: issued.secret_seed,
        otp: OtpParams {
            algorithm: issued.algorithm,
            digits: issued.digits,
            period: issued.period_secs,
        },
        expires_in: issued.expires_in_secs,
        ws_url: config.ws_url(&app.id),
    };
    // The body holds a secret: no cache may keep it.
    Ok(Response::json(201, &created).with_header("cache-control", "no-store"))
}

/// `DELETE /v1/tokens/{access_id}`: delete the token, then tell every host
/// to close its sockets.
fn revoke(
    platform: &impl Platform,
    config: &EdgeConfig,
    app: &App,
    segment: &str,
) -> Result<Response, ApiError> {
    let access_id = percent_decode(segment)
        .ok_or_else(|| ApiError::invalid_request("the access id is not valid UTF-8"))?;
    let existed = platform
        .revoke_token(&app.id, &access_id)
        .map_err(auth_error)?;
    broker(platform, config).forget_user_info(&app.id, &access_id);
    broker(platform, config).announce_revoke(&app.id, &access_id);
    if existed {
        Ok(Response::empty(204))
    } else {
        Err(ApiError::token_not_found())
    }
}

/// A channel named in the path, decoded.
fn channel_name(segment: &str) -> Result<String, ApiError> {
    percent_decode(segment)
        .ok_or_else(|| ApiError::invalid_request("Invalid URL: Invalid UTF-8 in `channel`"))
}

/// `GET /v1/channels?prefix=`: the occupied channels, by name, with their
/// figures (`madx_wire::presence::channel_body`), as a host answers.
fn list_channels(
    platform: &impl Platform,
    config: &EdgeConfig,
    app: &App,
    query: Option<&str>,
) -> Result<Response, ApiError> {
    let prefix = madx_wire::v1::channels_prefix(query);
    let occupied = Channels::new(platform, config)
        .occupied(&app.id, &prefix)
        .map_err(ApiError::store_unavailable)?;
    let channels: serde_json::Map<String, serde_json::Value> = occupied
        .into_iter()
        .map(|(name, info)| {
            let body = presence::channel_body(info.subscription_count, info.user_count);
            (name, serde_json::Value::Object(body))
        })
        .collect();
    Ok(Response::json(
        200,
        &serde_json::json!({ "channels": channels }),
    ))
}

/// `GET /v1/channels/{channel}`: one channel, occupied or not.
fn one_channel(
    platform: &impl Platform,
    config: &EdgeConfig,
    app: &App,
    segment: &str,
) -> Result<Response, ApiError> {
    let channel = channel_name(segment)?;
    let info = Channels::new(platform, config)
        .info(&app.id, &channel)
        .map_err(ApiError::store_unavailable)?;
    let body = presence::channel_body(info.subscription_count, info.user_count);
    Ok(Response::json(200, &serde_json::Value::Object(body)))
}

/// `GET /v1/channels/{channel}/members`: a presence channel's members; 404
/// for another channel, as on a host.
fn channel_members(
    platform: &impl Platform,
    config: &EdgeConfig,
    app: &App,
    segment: &str,
) -> Result<Response, ApiError> {
    let channel = channel_name(segment)?;
    let channels = Channels::new(platform, config);
    let members = channels
        .members(&app.id, &channel)
        .map_err(ApiError::store_unavailable)?
        .ok_or_else(|| {
            ApiError::not_found(presence::not_a_presence_channel(
                &channel,
                channels.presence_prefix(),
            ))
        })?;
    Ok(Response::json(200, &presence::members_body(&members)))
}

pub(crate) fn broker<'a, P: Platform>(platform: &'a P, config: &'a EdgeConfig) -> Broker<'a, P> {
    Broker {
        platform,
        redis_url: &config.redis_url,
        prefix: &config.store_prefix,
        per_stream: config.history.per_stream,
        ttl_secs: config.history.ttl_secs,
    }
}

/// `POST /v1/publish`.
fn publish(
    platform: &impl Platform,
    config: &EdgeConfig,
    app: &App,
    request: PublishRequest,
) -> Result<Response, ApiError> {
    let routed = route(platform, config, app, request, None)?;
    let ids = store(platform, config, app, &[routed])?;
    let id = ids.first().map(u64::to_string).unwrap_or_default();
    Ok(Response::json(202, &Accepted { id }))
}

/// `POST /v1/publish/batch`: every message is checked and routed before
/// any is published; the batch is accepted whole, in order, or refused
/// whole.
fn publish_batch(
    platform: &impl Platform,
    config: &EdgeConfig,
    app: &App,
    batch: BatchRequest,
) -> Result<Response, ApiError> {
    let messages = batch.into_messages(config.limits.max_batch)?;
    let mut routed = Vec::with_capacity(messages.len());
    for (index, request) in messages.into_iter().enumerate() {
        routed.push(route(platform, config, app, request, Some(index))?);
    }
    let ids = store(platform, config, app, &routed)?
        .iter()
        .map(u64::to_string)
        .collect();
    Ok(Response::json(202, &BatchAccepted { ids }))
}

/// Hand routed messages to the hosts' broker script; 202 is only answered
/// once it ran.
pub(crate) fn store(
    platform: &impl Platform,
    config: &EdgeConfig,
    app: &App,
    routed: &[Outgoing],
) -> Result<Vec<u64>, ApiError> {
    broker(platform, config)
        .publish(&app.id, routed)
        .map_err(ApiError::store_unavailable)
}

/// Check one message against the limits, then ask the router where it
/// goes.
fn route(
    platform: &impl Platform,
    config: &EdgeConfig,
    app: &App,
    request: PublishRequest,
    index: Option<usize>,
) -> Result<Outgoing, ApiError> {
    let message = request.check(&config.limits.message(), index)?;
    route_checked(platform, app, message, index)
}

/// Ask the router plugin where a checked message goes (`route-publish`);
/// `index` as in [`route`]. The Pusher API's messages take this path too.
pub(crate) fn route_checked(
    platform: &impl Platform,
    app: &App,
    message: Message,
    index: Option<usize>,
) -> Result<Outgoing, ApiError> {
    let targets = platform
        .route_publish(&app.id, &message.target, &message.event)
        .map_err(|error| match error {
            RouteError::InvalidChannel(message) | RouteError::Invalid(message) => {
                ApiError::invalid_request(at_index(index, message))
            }
            RouteError::Forbidden(message) => ApiError::forbidden(at_index(index, message)),
        })?;
    if targets.is_empty() {
        return Err(routed_nowhere(index).into());
    }
    Ok(Outgoing {
        targets,
        event: message.event,
        data: message.data,
        except: message.except,
    })
}

/// A path segment with `%XX` escapes decoded; `None` when the result is not
/// UTF-8.
pub(crate) fn percent_decode(segment: &str) -> Option<String> {
    let bytes = segment.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut at = 0;
    while at < bytes.len() {
        let escaped = (bytes[at] == b'%')
            .then(|| bytes.get(at + 1..at + 3))
            .flatten()
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match escaped {
            Some(byte) => {
                decoded.push(byte);
                at += 3;
            }
            None => {
                decoded.push(bytes[at]);
                at += 1;
            }
        }
    }
    String::from_utf8(decoded).ok()
}

#[cfg(test)]
mod tests;
