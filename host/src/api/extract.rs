//! Request extractors: the calling app (HTTP Basic) and JSON bodies with
//! errors in the API's format.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use axum::extract::{ConnectInfo, FromRef, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use madx_wire::json;
use serde::de::DeserializeOwned;
use subtle::ConstantTimeEq;

use super::ApiError;
use crate::limits::{Counted, KeyName, echoed};
use crate::state::{App, AppState};

/// The app whose key and secret came with the request (HTTP Basic).
pub struct CallingApp(pub Arc<App>);

impl<S> FromRequestParts<S> for CallingApp
where
    Arc<AppState>: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let state = Arc::<AppState>::from_ref(state);
        let (key, secret) = basic_credentials(parts).ok_or_else(ApiError::unauthorized)?;
        let source = source_address(parts);
        let app = state.apps.by_key(&key);
        let key_name = match &app {
            Some(app) => KeyName::App(app.key.clone()),
            None => KeyName::Unknown,
        };
        unless_throttled(&state, &key_name, source)?;
        // Constant-time, so response timing does not reveal the secret.
        let matches = app
            .as_ref()
            .is_some_and(|app| bool::from(app.secret.as_bytes().ct_eq(secret.as_bytes())));
        match app {
            Some(app) if matches => Ok(CallingApp(app)),
            _ => {
                count_wrong_credentials(&state, &key, key_name, source);
                Err(ApiError::unauthorized())
            }
        }
    }
}

/// A source that has been guessing this key's secret is refused (429)
/// before the secret is compared; other sources are not affected.
pub(super) fn unless_throttled(
    state: &AppState,
    key_name: &KeyName,
    source: IpAddr,
) -> Result<(), ApiError> {
    match state.credential_throttle.retry_after(key_name, source) {
        Some(retry_after_secs) => {
            state.metrics.credential_refusal("throttled");
            Err(ApiError::rate_limited(retry_after_secs))
        }
        None => Ok(()),
    }
}

/// A wrong secret for `key` (HTTP Basic, or a Pusher signature that does
/// not hold): counted against this source, and logged.
pub(super) fn count_wrong_credentials(
    state: &AppState,
    key: &str,
    key_name: KeyName,
    source: IpAddr,
) {
    state.metrics.credential_refusal("wrong");
    // The key as logged: the client's text, so cut short.
    let key = echoed(key);
    match state.credential_throttle.record_failure(key_name, source) {
        Counted::Below => {
            tracing::info!(key, %source, "wrong app credentials");
        }
        Counted::Throttled => tracing::warn!(
            key,
            %source,
            "too many wrong app credentials: this source is refused \
             for this key (every unknown key counts as one) until the \
             failure window ends"
        ),
        Counted::Untracked => tracing::warn!(
            key,
            %source,
            "wrong app credentials; too many sources to track"
        ),
    }
}

/// The peer's address; behind a proxy, the proxy's (throttling then applies
/// to everything that comes through it).
pub(super) fn source_address(parts: &Parts) -> IpAddr {
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::V6(Ipv6Addr::UNSPECIFIED), |ConnectInfo(peer)| {
            peer.ip().to_canonical()
        })
}

fn basic_credentials(parts: &Parts) -> Option<(String, String)> {
    let value = parts.headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = String::from_utf8(BASE64.decode(encoded.trim()).ok()?).ok()?;
    let (key, secret) = decoded.split_once(':')?;
    Some((key.to_owned(), secret.to_owned()))
}

/// A JSON body. Any content type is accepted (so `curl -d` works); an empty
/// body reads as `{}` for endpoints whose fields are all optional.
pub struct JsonBody<T>(pub T);

impl<S, T> FromRequest<S> for JsonBody<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let body = Bytes::from_request(request, state)
            .await
            .map_err(|rejection| {
                if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::payload_too_large("the request body is over the size limit")
                } else {
                    ApiError::invalid_json(rejection.body_text())
                }
            })?;
        Self::parse(&body)
    }
}

impl<T: DeserializeOwned> JsonBody<T> {
    /// A request body as the extractor reads it, once it is in memory.
    pub fn parse(body: &[u8]) -> Result<Self, ApiError> {
        let body = json::body_or_empty_object(body);
        if !json::opens_object(body) {
            return Err(ApiError::invalid_json(json::BODY_NOT_AN_OBJECT));
        }
        serde_json::from_slice(body)
            .map(JsonBody)
            .map_err(|error| ApiError::invalid_json(error.to_string()))
    }
}
