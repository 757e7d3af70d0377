//! The HTTP API: tokens, publishes, Pusher's API, health and metrics.

mod channels;
mod error;
mod extract;
mod publish;
mod pusher;
mod tokens;

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{delete, get, post};
use madx_wire::settings;
use serde_json::json;
use subtle::ConstantTimeEq;

pub use error::{ApiError, STORE_UNAVAILABLE};
// The request bodies and their checks, for the fuzz targets (fuzz/).
pub use extract::JsonBody;
pub use publish::{BatchRequest, Checked, PublishRequest};
pub use tokens::CreateToken;

use crate::state::AppState;

/// Every route the host serves: the API's and `others` (the WebSocket
/// endpoint, which the server adds so the API need not know the gateway),
/// under one set of fallbacks and body limits.
pub fn router(state: Arc<AppState>, others: Router<Arc<AppState>>) -> Router {
    let limits = state.config.limits;
    // A message body may carry `max_publish_bytes` of data plus its
    // envelope; a batch, `max_batch` of them.
    let message_limit = settings::message_body_limit(limits.max_publish_bytes);
    let batch_limit = settings::batch_body_limit(limits.max_publish_bytes, limits.max_batch);
    Router::new()
        .route("/v1/tokens", post(tokens::create))
        .route("/v1/tokens/{access_id}", delete(tokens::revoke))
        .route("/v1/channels", get(channels::list))
        .route("/v1/channels/{channel}", get(channels::one))
        .route("/v1/channels/{channel}/members", get(channels::members))
        .route(
            "/v1/publish",
            post(publish::publish).layer(DefaultBodyLimit::max(message_limit)),
        )
        .route(
            "/v1/publish/batch",
            post(publish::publish_batch).layer(DefaultBodyLimit::max(batch_limit)),
        )
        // The Pusher HTTP API, for back-ends written against Pusher.
        .route(
            "/apps/{app_id}/events",
            post(pusher::events).layer(DefaultBodyLimit::max(message_limit)),
        )
        .route(
            "/apps/{app_id}/batch_events",
            post(pusher::batch_events).layer(DefaultBodyLimit::max(batch_limit)),
        )
        .route("/apps/{app_id}/channels", get(pusher::channels))
        .route("/apps/{app_id}/channels/{channel}", get(pusher::channel))
        .route(
            "/apps/{app_id}/channels/{channel}/users",
            get(pusher::channel_users),
        )
        .route(
            "/apps/{app_id}/users/{user_id}/terminate_connections",
            post(pusher::terminate_connections),
        )
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/admin/reload", post(reload))
        .route("/readyz", get(readyz))
        .merge(others)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(limits.max_body_bytes))
        .with_state(state)
}

/// Liveness: the process serves requests.
async fn healthz() -> impl IntoResponse {
    axum::Json(json!({ "status": "ok" }))
}

/// Readiness: the store (and with Redis, this node's pub/sub connection)
/// is up, so new work can be taken. Liveness (`/healthz`) does not depend
/// on it: a Redis outage must not make an orchestrator restart every node.
async fn readyz(State(state): State<Arc<AppState>>) -> Result<impl IntoResponse, ApiError> {
    state.ready()?;
    state
        .store
        .ping()
        .await
        .map_err(ApiError::store_unavailable)?;
    // Full: existing tokens connect, new ones are refused; say so, so that
    // an operator (or a load balancer) sees it.
    if let Some(reason) = state.store.full() {
        return Err(ApiError::store_full(reason));
    }
    Ok((StatusCode::OK, axum::Json(json!({ "status": "ready" }))))
}

/// Operator endpoints need `Authorization: Bearer <operator_token>`; without
/// a configured token they do not exist.
fn check_operator(state: &AppState, headers: &axum::http::HeaderMap) -> Result<(), ApiError> {
    let Some(expected) = &state.config.operator_token else {
        return Err(ApiError::not_found(
            "operator endpoints are off: set operator_token in the configuration",
        ));
    };
    let presented = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .unwrap_or_default();
    if bool::from(presented.as_bytes().ct_eq(expected.as_bytes())) {
        Ok(())
    } else {
        Err(ApiError::unauthorized_operator())
    }
}

/// Reload the plugin components, as `SIGHUP` does, and say how it went.
async fn reload(
    State(state): State<Arc<AppState>>,
    headers: axum::http::HeaderMap,
) -> Result<impl IntoResponse, ApiError> {
    check_operator(&state, &headers)?;
    match state.reload_plugins().await {
        Ok(()) => {
            let plugins = state.plugins();
            Ok(axum::Json(json!({
                "reloaded": true,
                "auth": plugins.auth.name(),
                "router": plugins.router.name(),
            })))
        }
        Err(error) => {
            tracing::error!("plugin reload refused, the running components stay: {error:#}");
            Err(ApiError::reload_refused(format!("{error:#}")))
        }
    }
}

/// Prometheus text, for holders of the operator token.
async fn metrics(
    State(state): State<Arc<AppState>>,
    headers: axum::http::HeaderMap,
) -> Result<impl IntoResponse, ApiError> {
    check_operator(&state, &headers)?;
    for (app, sockets) in state.hub.sessions_per_app() {
        state
            .metrics
            .sockets_open
            .get_or_create(&crate::metrics::AppLabels { app })
            .set(i64::try_from(sockets).unwrap_or(i64::MAX));
    }
    let history = i64::try_from(state.broker.history_len()).unwrap_or(i64::MAX);
    state.metrics.history_messages.set(history);
    let history_bytes = i64::try_from(state.broker.history_bytes()).unwrap_or(i64::MAX);
    state.metrics.history_bytes.set(history_bytes);
    let store_entries = i64::try_from(state.store.entries()).unwrap_or(i64::MAX);
    state.metrics.store_entries.set(store_entries);
    let disk_bytes = i64::try_from(state.store.disk_bytes()).unwrap_or(i64::MAX);
    state.metrics.store_disk_bytes.set(disk_bytes);
    let backlog = i64::try_from(state.broker.hand_off_backlog()).unwrap_or(i64::MAX);
    state.metrics.hand_off_backlog.set(backlog);
    let content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8";
    Ok((
        [(axum::http::header::CONTENT_TYPE, content_type)],
        state.metrics.render(),
    ))
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such endpoint")
}

async fn method_not_allowed() -> ApiError {
    ApiError::method_not_allowed()
}
