//! `GET /v1/channels`, `GET /v1/channels/{channel}` and
//! `GET /v1/channels/{channel}/members`: what a back-end may ask about its
//! channels, over the whole deployment (the same answers as Pusher's
//! channel API, from [`crate::channels`]).

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, RawQuery, State};
use serde_json::{Map, Value, json};

use super::ApiError;
use super::extract::CallingApp;
use crate::channels::{ChannelInfo, Channels};
use crate::state::AppState;

/// A channel's figures: subscriptions, and members for a presence channel
/// (`madx_wire::presence::channel_body`, the edge's too).
fn describe(info: ChannelInfo) -> Map<String, Value> {
    madx_wire::presence::channel_body(info.subscription_count, info.user_count)
}

/// `GET /v1/channels?prefix=`: the occupied channels, by name.
pub async fn list(
    State(state): State<Arc<AppState>>,
    CallingApp(app): CallingApp,
    RawQuery(query): RawQuery,
) -> Result<Json<Value>, ApiError> {
    // `prefix`: only channels whose names start with it.
    let prefix = madx_wire::v1::channels_prefix(query.as_deref());
    let occupied = Channels::new(&state)
        .occupied(&app.id, &prefix)
        .await
        .map_err(ApiError::store_unavailable)?;
    let channels: Map<String, Value> = occupied
        .into_iter()
        .map(|(name, info)| (name, Value::Object(describe(info))))
        .collect();
    Ok(Json(json!({ "channels": channels })))
}

/// `GET /v1/channels/{channel}`: one channel, occupied or not.
pub async fn one(
    State(state): State<Arc<AppState>>,
    CallingApp(app): CallingApp,
    Path(channel): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let info = Channels::new(&state)
        .info(&app.id, &channel)
        .await
        .map_err(ApiError::store_unavailable)?;
    Ok(Json(Value::Object(describe(info))))
}

/// `GET /v1/channels/{channel}/members`: a presence channel's members.
pub async fn members(
    State(state): State<Arc<AppState>>,
    CallingApp(app): CallingApp,
    Path(channel): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let roster = Channels::new(&state)
        .members(&app.id, &channel)
        .await
        .map_err(ApiError::store_unavailable)?
        .ok_or_else(|| {
            // No member list exists for other channels.
            ApiError::not_found(madx_wire::presence::not_a_presence_channel(
                &channel,
                &state.config.presence.channel_prefix,
            ))
        })?;
    Ok(Json(madx_wire::presence::members_body(&roster.members)))
}
