//! Request extractors: the calling app (HTTP Basic) and JSON bodies with
//! errors in the API's format.

use std::sync::Arc;

use axum::extract::{FromRef, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use serde::de::DeserializeOwned;
use subtle::ConstantTimeEq;

use super::ApiError;
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
        let app = state.apps.by_key(&key).ok_or_else(ApiError::unauthorized)?;
        // Constant-time, so response timing does not reveal the secret.
        if bool::from(app.secret.as_bytes().ct_eq(secret.as_bytes())) {
            Ok(CallingApp(app))
        } else {
            Err(ApiError::unauthorized())
        }
    }
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
        let body: &[u8] = if body.iter().all(u8::is_ascii_whitespace) {
            b"{}"
        } else {
            body
        };
        // serde reads a struct from a JSON array too; bodies are objects.
        if !crate::gateway::frames::is_json_object(body) {
            return Err(ApiError::invalid_json("the body must be a JSON object"));
        }
        serde_json::from_slice(body)
            .map(JsonBody)
            .map_err(|error| ApiError::invalid_json(error.to_string()))
    }
}
