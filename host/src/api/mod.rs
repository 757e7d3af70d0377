//! The HTTP API: tokens, health, and the WebSocket route.

mod error;
mod extract;
mod publish;
mod tokens;

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{delete, get, post};
use serde_json::json;

pub use error::ApiError;

use crate::gateway;
use crate::state::AppState;

/// Every route the host serves.
pub fn router(state: Arc<AppState>) -> Router {
    let limits = state.config.limits;
    // A message body may carry `max_publish_bytes` of data plus its
    // envelope; a batch, `max_batch` of them.
    let message_limit = limits.max_publish_bytes + 16 * 1024;
    let batch_limit = message_limit.saturating_mul(limits.max_batch);
    Router::new()
        .route("/v1/tokens", post(tokens::create))
        .route("/v1/tokens/{access_id}", delete(tokens::revoke))
        .route(
            "/v1/publish",
            post(publish::publish).layer(DefaultBodyLimit::max(message_limit)),
        )
        .route(
            "/v1/publish/batch",
            post(publish::publish_batch).layer(DefaultBodyLimit::max(batch_limit)),
        )
        .route("/v1/ws", get(gateway::upgrade))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(limits.max_body_bytes))
        .with_state(state)
}

/// Liveness: the process serves requests.
async fn healthz() -> impl IntoResponse {
    axum::Json(json!({ "status": "ok" }))
}

/// Readiness: the store is reachable, so new work can be taken.
async fn readyz(State(state): State<Arc<AppState>>) -> Result<impl IntoResponse, ApiError> {
    state
        .store
        .ping()
        .await
        .map_err(|error| ApiError::store_unavailable(error.to_string()))?;
    Ok((StatusCode::OK, axum::Json(json!({ "status": "ready" }))))
}

async fn not_found() -> ApiError {
    ApiError::not_found("not_found", "no such endpoint")
}

async fn method_not_allowed() -> ApiError {
    ApiError::method_not_allowed()
}
