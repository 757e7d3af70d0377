//! Pusher's HTTP API at the edge: `events`, `batch_events`,
//! `terminate_connections` and the channel queries. The signature and the
//! event rules are `madx-wire`'s; the messages then take the path of
//! `POST /v1/publish` (limits, the router plugin, the broker's publish
//! script). The channel queries (and `users`) read what the hosts keep in
//! Redis ([`crate::channels`]): the edge holds no sockets, so every count
//! is a host's, and presence members are the deployment's.

use madx_wire::pusher::{self as wire, ChannelQuery, PusherBatch, PusherEvent, Signature};
use serde_json::{Map, Value, json};

use madx_wire::v1::Message;

use crate::api::{self, Body};
use crate::broker::Target;
use crate::channels::Channels;
use crate::config::{App, EdgeConfig, Limits};
use crate::error::{ApiError, Response};
use crate::platform::Platform;

/// A Pusher API path the edge serves, its segments as sent.
pub struct Route<'a> {
    app_id: &'a str,
    endpoint: Endpoint<&'a str>,
}

/// `S`: a path segment as sent, then decoded.
enum Endpoint<S> {
    Events,
    BatchEvents,
    Terminate { user_id: S },
    Channels,
    Channel { channel: S },
    Users { channel: S },
}

impl<S> Endpoint<S> {
    /// The method the hosts' route takes.
    fn method(&self) -> &'static str {
        match self {
            Endpoint::Channels | Endpoint::Channel { .. } | Endpoint::Users { .. } => "GET",
            Endpoint::Events | Endpoint::BatchEvents | Endpoint::Terminate { .. } => "POST",
        }
    }
}

/// `/apps/{app_id}/events`, `/apps/{app_id}/batch_events`,
/// `/apps/{app_id}/users/{user_id}/terminate_connections`,
/// `/apps/{app_id}/channels`, `/apps/{app_id}/channels/{channel}` and
/// `/apps/{app_id}/channels/{channel}/users`, with no segment empty.
pub fn route(path: &str) -> Option<Route<'_>> {
    let segments: Vec<&str> = path.strip_prefix("/apps/")?.split('/').collect();
    if segments.iter().any(|segment| segment.is_empty()) {
        return None;
    }
    let endpoint = match segments.as_slice() {
        [_, "events"] => Endpoint::Events,
        [_, "batch_events"] => Endpoint::BatchEvents,
        [_, "users", user_id, "terminate_connections"] => Endpoint::Terminate { user_id: *user_id },
        [_, "channels"] => Endpoint::Channels,
        [_, "channels", channel] => Endpoint::Channel { channel: *channel },
        [_, "channels", channel, "users"] => Endpoint::Users { channel: *channel },
        _ => return None,
    };
    Some(Route {
        app_id: segments[0],
        endpoint,
    })
}

impl Route<'_> {
    /// The method the hosts' route takes.
    pub fn method(&self) -> &'static str {
        self.endpoint.method()
    }
}

/// A routed request, waiting for its body (which its signature covers).
pub struct Call {
    app_id: String,
    endpoint: Endpoint<String>,
    /// Path and query as sent: what was signed.
    path: String,
    query: Option<String>,
}

impl Call {
    /// The path's segments, percent-decoded.
    pub fn new(route: Route<'_>, path_with_query: &str) -> Result<Call, ApiError> {
        // In the path's order, with the hosts' (axum's) words.
        let decode = |segment: &str, name: &str| {
            api::percent_decode(segment).ok_or_else(|| {
                ApiError::invalid_request(format!("Invalid URL: Invalid UTF-8 in `{name}`"))
            })
        };
        let app_id = decode(route.app_id, "app_id")?;
        let endpoint = match route.endpoint {
            Endpoint::Events => Endpoint::Events,
            Endpoint::BatchEvents => Endpoint::BatchEvents,
            Endpoint::Terminate { user_id } => Endpoint::Terminate {
                user_id: decode(user_id, "user_id")?,
            },
            Endpoint::Channels => Endpoint::Channels,
            Endpoint::Channel { channel } => Endpoint::Channel {
                channel: decode(channel, "channel")?,
            },
            Endpoint::Users { channel } => Endpoint::Users {
                channel: decode(channel, "channel")?,
            },
        };
        let (path, query) = match path_with_query.split_once('?') {
            Some((path, query)) => (path, Some(query.to_owned())),
            None => (path_with_query, None),
        };
        Ok(Call {
            app_id,
            endpoint,
            path: path.to_owned(),
            query,
        })
    }

    /// The hosts' body limits: a message's for `events`, a batch's for
    /// `batch_events`, the general one otherwise.
    pub fn body_limit(&self, limits: &Limits) -> usize {
        match self.endpoint {
            Endpoint::Events => limits.message_body(),
            Endpoint::BatchEvents => limits.batch_body(),
            Endpoint::Terminate { .. }
            | Endpoint::Channels
            | Endpoint::Channel { .. }
            | Endpoint::Users { .. } => limits.max_body_bytes,
        }
    }
}

/// The request line's signature (key, timestamp, HMAC, which covers
/// `body_md5`): checked before the body is read, as a host does, and again
/// with the body in [`finish`].
pub fn check_signed<'c, 'q>(
    config: &'c EdgeConfig,
    call: &'q Call,
) -> Result<(&'c App, Signature<'q>), ApiError> {
    Signature::check_request_line(
        call.query.as_deref(),
        call.endpoint.method(),
        &call.path,
        |key| config.app_by_key(key).filter(|app| app.id == call.app_id),
        |app| &app.secret,
    )
    .map_err(ApiError::pusher_unauthorized)
}

/// Check the signature and the body's MD5, then publish, terminate or
/// answer a channel query.
pub fn finish(
    platform: &impl Platform,
    config: &EdgeConfig,
    call: Call,
    body: Body,
) -> Result<Response, ApiError> {
    let (app, signature) = check_signed(config, &call)?;
    let body = body.bytes(ApiError::invalid_request)?;
    signature
        .verify_body(&body)
        .map_err(ApiError::pusher_unauthorized)?;
    let query = || ChannelQuery::parse(call.query.as_deref());
    match call.endpoint {
        Endpoint::Events => {
            let event: PusherEvent = api::parse_json(&body)?;
            let events = vec![event];
            let answer = trigger_answer(platform, config, app, &events, false)?;
            publish(platform, config, app, events)?;
            return Ok(Response::json(200, &answer));
        }
        Endpoint::BatchEvents => {
            let batch: PusherBatch = api::parse_json(&body)?;
            let events = batch
                .into_events(config.limits.max_batch)
                .map_err(ApiError::invalid_request)?;
            let answer = trigger_answer(platform, config, app, &events, true)?;
            publish(platform, config, app, events)?;
            return Ok(Response::json(200, &answer));
        }
        // Every host closes the user's sockets; nothing to wait for, as on
        // a host.
        Endpoint::Terminate { user_id } => {
            api::broker(platform, config).announce_terminate(&app.id, &user_id);
        }
        Endpoint::Channels => {
            let query = query();
            let occupied = Channels::new(platform, config)
                .counting_users(query.wants_user_count())
                .occupied(&app.id, query.prefix())
                .map_err(ApiError::store_unavailable)?;
            let channels: Map<String, Value> = occupied
                .into_iter()
                .map(|(name, info)| {
                    let attributes = query.describe(info.subscription_count, info.user_count);
                    (name, Value::Object(attributes))
                })
                .collect();
            return Ok(Response::json(200, &json!({ "channels": channels })));
        }
        Endpoint::Channel { channel } => {
            let query = query();
            let info = Channels::new(platform, config)
                .counting_users(query.wants_user_count())
                .info(&app.id, &channel)
                .map_err(ApiError::store_unavailable)?;
            let answer = query.describe_channel(info.subscription_count, info.user_count);
            return Ok(Response::json(200, &Value::Object(answer)));
        }
        // A presence channel's users; another channel is a 400, as with
        // Pusher and on a host.
        Endpoint::Users { channel } => {
            let members = Channels::new(platform, config)
                .members(&app.id, &channel)
                .map_err(ApiError::store_unavailable)?
                .ok_or_else(|| ApiError::invalid_request(wire::USERS_OF_PRESENCE_ONLY))?;
            return Ok(Response::json(200, &wire::users_body(&members)));
        }
    }
    Ok(Response::json(200, &json!({})))
}

/// What a trigger answers: `{}`, or the attributes its events' `info`
/// asks for, from the hosts' channel directory; counted before publishing,
/// as on a host.
fn trigger_answer(
    platform: &impl Platform,
    config: &EdgeConfig,
    app: &App,
    events: &[PusherEvent],
    batch: bool,
) -> Result<Value, ApiError> {
    let directory = Channels::new(platform, config).counting_users(wire::asks_user_count(events));
    let counts = wire::counted_channels(events, config.limits.max_batch)
        .map_err(ApiError::invalid_request)?
        .into_iter()
        .map(|channel| {
            let info = directory
                .info(&app.id, &channel)
                .map_err(ApiError::store_unavailable)?;
            Ok((channel, info))
        })
        .collect::<Result<Vec<_>, ApiError>>()?;
    Ok(wire::trigger_answer(events, batch, &counts))
}

/// Check and route every message of the events before any is published,
/// then publish them in order: a request is accepted whole or refused
/// whole.
fn publish(
    platform: &impl Platform,
    config: &EdgeConfig,
    app: &App,
    events: Vec<PusherEvent>,
) -> Result<(), ApiError> {
    let messages =
        wire::messages(events, config.limits.max_batch).map_err(ApiError::invalid_request)?;
    let mut routed = Vec::with_capacity(messages.len());
    for (index, message) in messages.into_iter().enumerate() {
        let target = match message.target {
            wire::Target::Channel(name) => Target::Channel(name),
            wire::Target::User(id) => Target::User(id),
        };
        let message = Message {
            target,
            event: message.event,
            data: message.data,
            except: message.except,
        }
        .within(&config.limits.message(), Some(index))?;
        routed.push(api::route_checked(platform, app, message, Some(index))?);
    }
    api::store(platform, config, app, &routed)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hosts_pusher_publish_and_terminate_paths_are_routed() {
        let endpoint = |path| route(path).map(|route| (route.app_id, route.endpoint));
        assert!(matches!(
            endpoint("/apps/42/events"),
            Some(("42", Endpoint::Events))
        ));
        assert!(matches!(
            endpoint("/apps/42/batch_events"),
            Some(("42", Endpoint::BatchEvents))
        ));
        assert!(matches!(
            endpoint("/apps/42/users/a%20b/terminate_connections"),
            Some(("42", Endpoint::Terminate { user_id: "a%20b" }))
        ));
        assert!(matches!(
            endpoint("/apps/42/channels"),
            Some(("42", Endpoint::Channels))
        ));
        assert!(matches!(
            endpoint("/apps/42/channels/presence-a/users"),
            Some((
                "42",
                Endpoint::Users {
                    channel: "presence-a"
                }
            ))
        ));
        assert!(matches!(
            endpoint("/apps/42/channels/news%2E1"),
            Some((
                "42",
                Endpoint::Channel {
                    channel: "news%2E1"
                }
            ))
        ));
        for elsewhere in [
            "/apps/42/channels/",
            "/apps/42/channels/a/b",
            "/apps/42/channels//users",
            "/apps/42/channels/a/users/",
            "/apps//events",
            "/apps/42/events/",
            "/apps/42/users//terminate_connections",
            "/apps/42",
            "/apps/",
        ] {
            assert!(route(elsewhere).is_none(), "{elsewhere}");
        }
    }
}
