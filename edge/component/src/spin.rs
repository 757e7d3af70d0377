//! The Spin side: the HTTP entry point and [`Platform`] over Spin's
//! variables and outbound Redis (`fermyon:spin/variables@2.0.0`,
//! `fermyon:spin/redis@2.0.0`) and the plugins `madx-edge-build` composed
//! in (`madx:pusher/auth`, `madx:pusher/router`, with `madx:edge/scope`
//! naming the app before each call).

use std::cell::RefCell;

use futures::StreamExt as _;
use spin_sdk::http::{IncomingRequest, Response as SpinResponse};
use spin_sdk::http_component;
use spin_sdk::redis::{self, Connection, RedisParameter, RedisResult};
use spin_sdk::variables;

use crate::api::{self, Body, Step};
use crate::broker::Target;
use crate::error::Response;
use crate::platform::{AuthError, IssuedToken, Platform, Reply, RouteError, TokenRequest};

mod plugins {
    wit_bindgen::generate!({
        path: ["../../wit", "../wit"],
        world: "madx:edge/edge",
        generate_all,
    });
}

use plugins::madx::edge::scope::{self, PluginKind};
use plugins::madx::pusher::{auth, router};

#[http_component]
async fn handle(request: IncomingRequest) -> SpinResponse {
    let platform = SpinPlatform::default();
    let method = request.method().to_string();
    let path = request.path_with_query().unwrap_or_default();
    let authorization = request
        .headers()
        .get("authorization")
        .into_iter()
        .next()
        .and_then(|value| String::from_utf8(value).ok());
    let response = match api::begin(&platform, &method, &path, authorization.as_deref()) {
        Step::Respond(response) => response,
        Step::ReadBody { limit, call } => {
            let body = read_body(request, limit).await;
            api::finish(&platform, *call, body)
        }
    };
    into_spin(response)
}

/// The body, or [`Body::TooLarge`] as soon as more than `limit` bytes came.
async fn read_body(request: IncomingRequest, limit: usize) -> Body {
    let mut stream = request.into_body_stream();
    let mut body = Vec::new();
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(chunk) => {
                if body.len() + chunk.len() > limit {
                    return Body::TooLarge;
                }
                body.extend_from_slice(&chunk);
            }
            Err(error) => return Body::Failed(format!("cannot read the request body: {error:?}")),
        }
    }
    Body::Read(body)
}

fn into_spin(response: Response) -> SpinResponse {
    let mut builder = SpinResponse::builder();
    builder.status(response.status);
    for (name, value) in response.headers {
        builder.header(name, value);
    }
    builder.body(response.body).build()
}

/// Spin's host interfaces. One Redis connection per instance (Spin gives
/// each request its own instance).
#[derive(Default)]
struct SpinPlatform {
    connection: RefCell<Option<(String, Connection)>>,
}

impl Platform for SpinPlatform {
    fn variable(&self, name: &str) -> Result<Option<String>, String> {
        match variables::get(name) {
            Ok(value) => Ok(Some(value)),
            Err(variables::Error::Undefined(_)) => Ok(None),
            Err(error) => Err(format!("{error:?}")),
        }
    }

    fn redis(&self, address: &str, command: &str, args: &[&[u8]]) -> Result<Vec<Reply>, String> {
        let mut slot = self.connection.borrow_mut();
        let connection = match slot.take() {
            Some((open, connection)) if open == address => connection,
            _ => Connection::open(address).map_err(describe)?,
        };
        let arguments: Vec<RedisParameter> = args
            .iter()
            .map(|arg| RedisParameter::Binary(arg.to_vec()))
            .collect();
        let result = connection.execute(command, &arguments);
        *slot = Some((address.to_owned(), connection));
        let results = result.map_err(describe)?;
        Ok(results
            .into_iter()
            .map(|result| match result {
                RedisResult::Nil => Reply::Nil,
                RedisResult::Status(status) => Reply::Status(status),
                RedisResult::Int64(value) => Reply::Int(value),
                RedisResult::Binary(bytes) => Reply::Bytes(bytes),
            })
            .collect())
    }

    fn issue_token(&self, app_id: &str, request: TokenRequest) -> Result<IssuedToken, AuthError> {
        scope::enter(app_id, PluginKind::Auth);
        let issued = auth::issue(&auth::TokenRequest {
            user_id: request.user_id,
            channels: request.channels,
            publish: request.publish,
            ttl_secs: request.ttl_secs,
        })
        .map_err(auth_error)?;
        Ok(IssuedToken {
            access_id: issued.access_id,
            secret_seed: issued.secret_seed,
            algorithm: issued.otp.algorithm,
            digits: issued.otp.digits,
            period_secs: issued.otp.period_secs,
            expires_in_secs: issued.expires_in_secs,
        })
    }

    fn revoke_token(&self, app_id: &str, access_id: &str) -> Result<bool, AuthError> {
        scope::enter(app_id, PluginKind::Auth);
        auth::revoke(access_id).map_err(auth_error)
    }

    fn route_publish(
        &self,
        app_id: &str,
        target: &Target,
        event: &str,
    ) -> Result<Vec<Target>, RouteError> {
        scope::enter(app_id, PluginKind::Router);
        let target = match target {
            Target::Channel(name) => router::Target::Channel(name.clone()),
            Target::User(id) => router::Target::User(id.clone()),
            Target::Token(id) => router::Target::Token(id.clone()),
        };
        let targets = router::route_publish(&target, event).map_err(|error| match error {
            router::RouteError::InvalidChannel(message) => RouteError::InvalidChannel(message),
            router::RouteError::Forbidden(message) => RouteError::Forbidden(message),
            router::RouteError::Invalid(message) => RouteError::Invalid(message),
        })?;
        Ok(targets
            .into_iter()
            .map(|target| match target {
                router::Target::Channel(name) => Target::Channel(name),
                router::Target::User(id) => Target::User(id),
                router::Target::Token(id) => Target::Token(id),
            })
            .collect())
    }
}

fn auth_error(error: auth::AuthError) -> AuthError {
    match error {
        auth::AuthError::BadRequest(message) => AuthError::BadRequest(message),
        auth::AuthError::OtpInvalid | auth::AuthError::OtpReused => AuthError::OtpRefused,
        auth::AuthError::TokenInvalid => AuthError::TokenInvalid,
        auth::AuthError::RateLimited(seconds) => AuthError::RateLimited(seconds),
        auth::AuthError::Unavailable(message) => AuthError::Unavailable(message),
    }
}

fn describe(error: redis::Error) -> String {
    match error {
        redis::Error::InvalidAddress => {
            "invalid address (is it in allowed_outbound_hosts?)".to_owned()
        }
        redis::Error::TooManyConnections => "too many connections".to_owned(),
        redis::Error::TypeError => "unexpected value type".to_owned(),
        redis::Error::Other(message) => message,
    }
}
