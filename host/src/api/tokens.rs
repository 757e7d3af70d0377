//! `POST /v1/tokens` and `DELETE /v1/tokens/{access_id}`.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::ApiError;
use super::extract::{CallingApp, JsonBody};
use crate::plugins::bindings::{AuthError, TokenRequest};
use crate::presence;
use crate::state::AppState;
use crate::store::{Room, StoreError};
use std::time::Duration;

pub use madx_wire::v1::CreateToken;
use madx_wire::v1::{CreatedToken, OtpParams};

pub async fn create(
    State(state): State<Arc<AppState>>,
    CallingApp(app): CallingApp,
    headers: HeaderMap,
    JsonBody(body): JsonBody<CreateToken>,
) -> Result<Response, ApiError> {
    // The ttl and the user id are checked here too, so no plugin can hand
    // out tokens beyond the contract, or for a user publishes cannot reach.
    let checked = body.checked()?;
    let user_info = checked.user_info;
    let request = TokenRequest {
        user_id: checked.user_id,
        channels: checked.channels,
        publish: checked.publish,
        ttl_secs: checked.ttl_secs,
    };
    state.ready()?;
    // A full store still serves connects (they use a reserved room), but
    // takes no new tokens until some expire.
    if let Some(reason) = state.store.full() {
        return Err(ApiError::store_full(reason));
    }
    let issued = state
        .plugins()
        .auth
        .issue(&app.id, request)
        .await
        .map_err(|failure| ApiError::plugin_failure(&failure))?
        .map_err(api_error)?;
    if let Some(info) = user_info {
        // Beside the token, for as long as it lives (its keep-alive
        // touches both): any auth plugin's tokens can carry it.
        let key = presence::user_info_store_key(&app.id, &issued.access_id);
        let ttl = Duration::from_secs(u64::from(issued.expires_in_secs.max(1)));
        state
            .store
            .set(&key, info.as_bytes(), ttl, Room::General)
            .await
            .map_err(|error| match error {
                StoreError::Full(reason) => ApiError::store_full(reason),
                other => ApiError::store_unavailable(other),
            })?;
    }

    let created = CreatedToken {
        ws_url: ws_url(&state, &headers, &app.id),
        access_id: issued.access_id,
        secret_seed: issued.secret_seed,
        otp: OtpParams {
            algorithm: issued.otp.algorithm,
            digits: issued.otp.digits,
            period: issued.otp.period_secs,
        },
        expires_in: issued.expires_in_secs,
    };
    let mut response = (StatusCode::CREATED, Json(created)).into_response();
    // The body holds a secret: no cache may keep it.
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

pub async fn revoke(
    State(state): State<Arc<AppState>>,
    CallingApp(app): CallingApp,
    Path(access_id): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.ready()?;
    let existed = state
        .plugins()
        .auth
        .revoke(&app.id, &access_id)
        .await
        .map_err(|failure| ApiError::plugin_failure(&failure))?
        .map_err(api_error)?;
    let key = presence::user_info_store_key(&app.id, &access_id);
    if let Err(error) = state.store.delete(&key).await {
        // It expires with the token's idle timeout anyway.
        tracing::warn!("could not delete a revoked token's user_info: {error}");
    }
    let closed = state
        .broker
        .close_token(&state.hub, &app.id, &access_id)
        .await;
    if existed || closed > 0 {
        tracing::info!(app = %app.id, closed, "token revoked");
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::token_not_found())
    }
}

/// The WebSocket URL clients connect to: `public_url` when configured,
/// otherwise the scheme and `Host` this request came in on.
fn ws_url(state: &AppState, headers: &HeaderMap, app_id: &str) -> String {
    let public_url = match &state.config.public_url {
        Some(url) => url.clone(),
        None => {
            let scheme = if state.config.tls.is_some() {
                "https"
            } else {
                "http"
            };
            let host = headers
                .get(header::HOST)
                .and_then(|host| host.to_str().ok())
                .map(str::to_owned)
                .unwrap_or_else(|| state.config.listen.to_string());
            format!("{scheme}://{host}")
        }
    };
    madx_wire::settings::ws_url(&public_url, app_id)
}

fn api_error(error: AuthError) -> ApiError {
    match error {
        AuthError::BadRequest(message) => ApiError::invalid_request(message),
        AuthError::TokenInvalid => ApiError::token_not_found(),
        AuthError::RateLimited(seconds) => ApiError::rate_limited(seconds),
        AuthError::Unavailable(detail) => ApiError::store_unavailable(detail),
        AuthError::OtpInvalid | AuthError::OtpReused => {
            ApiError::invalid_request(madx_wire::errors::AUTH_REFUSED)
        }
    }
}
