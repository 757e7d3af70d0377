//! `POST /v1/publish` and `POST /v1/publish/batch`: an app's back-end or
//! worker hands a message to the users, tokens or channel subscribers it is
//! for.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use madx_wire::errors::at_index;
use serde_json::value::RawValue;

use super::ApiError;
use super::extract::{CallingApp, JsonBody};
use crate::broker::{Outgoing, Published};
use crate::hub::Target;
use crate::plugins::bindings::{RouteError, RouteTarget};
use crate::state::{App, AppState};

use madx_wire::v1::{Accepted, BatchAccepted, routed_nowhere};
pub use madx_wire::v1::{BatchRequest, Message as Checked, PublishRequest};

/// A message checked and routed, ready to publish.
pub(super) struct Routed {
    targets: Vec<Target>,
    event: String,
    data: Box<RawValue>,
    except: Option<String>,
}

pub async fn publish(
    State(state): State<Arc<AppState>>,
    CallingApp(app): CallingApp,
    JsonBody(request): JsonBody<PublishRequest>,
) -> Result<(StatusCode, Json<Accepted>), ApiError> {
    state.ready()?;
    let routed = route(&state, &app, request, None).await?;
    let published = store(&state, &app, &[routed]).await?;
    let id = published.first().map(|published| published.id.to_string());
    Ok((
        StatusCode::ACCEPTED,
        Json(Accepted {
            id: id.unwrap_or_default(),
        }),
    ))
}

/// Every message is checked and routed before any is published: a batch is
/// accepted whole, in order, or refused whole.
pub async fn publish_batch(
    State(state): State<Arc<AppState>>,
    CallingApp(app): CallingApp,
    JsonBody(batch): JsonBody<BatchRequest>,
) -> Result<(StatusCode, Json<BatchAccepted>), ApiError> {
    let messages = batch.into_messages(state.config.limits.max_batch)?;
    state.ready()?;
    let mut routed = Vec::with_capacity(messages.len());
    for (index, request) in messages.into_iter().enumerate() {
        routed.push(route(&state, &app, request, Some(index)).await?);
    }
    let ids = store(&state, &app, &routed)
        .await?
        .iter()
        .map(|published| published.id.to_string())
        .collect();
    Ok((StatusCode::ACCEPTED, Json(BatchAccepted { ids })))
}

/// Hand routed messages to the broker; 202 is only answered once they are
/// stored (with Redis: the script ran), never for a message that was not.
pub(super) async fn store(
    state: &AppState,
    app: &App,
    routed: &[Routed],
) -> Result<Vec<Published>, ApiError> {
    let messages: Vec<Outgoing<'_>> = routed
        .iter()
        .map(|message| Outgoing {
            targets: &message.targets,
            event: &message.event,
            data: &message.data,
            except: message.except.as_deref(),
        })
        .collect();
    let published = state.broker.publish(&app.id, &messages).await?;
    for _ in &published {
        state.metrics.published(&app.id, "api");
    }
    Ok(published)
}

/// Check one message against the limits and ask the router where it goes.
async fn route(
    state: &AppState,
    app: &App,
    request: PublishRequest,
    index: Option<usize>,
) -> Result<Routed, ApiError> {
    let checked = request.check(&state.config.limits.message(), index)?;
    route_checked(state, app, checked, index).await
}

/// Ask the router where a checked message goes.
pub(super) async fn route_checked(
    state: &AppState,
    app: &App,
    checked: Checked,
    index: Option<usize>,
) -> Result<Routed, ApiError> {
    let at = |message: String| at_index(index, message);
    let Checked {
        target,
        event,
        data,
        except,
    } = checked;

    let targets = state
        .plugins()
        .router
        .route_publish(&app.id, &RouteTarget::from(&target), &event)
        .await
        .map_err(|failure| ApiError::plugin_failure(&failure))?
        .map_err(|error| match error {
            RouteError::InvalidChannel(message) | RouteError::Invalid(message) => {
                ApiError::invalid_request(at(message))
            }
            RouteError::Forbidden(message) => ApiError::forbidden(at(message)),
        })?;
    if targets.is_empty() {
        return Err(routed_nowhere(index).into());
    }
    Ok(Routed {
        targets: targets.into_iter().map(Target::from).collect(),
        event,
        data,
        except,
    })
}

impl From<RouteTarget> for Target {
    fn from(target: RouteTarget) -> Self {
        match target {
            RouteTarget::Channel(name) => Target::Channel(name),
            RouteTarget::User(id) => Target::User(id),
            RouteTarget::Token(id) => Target::Token(id),
        }
    }
}

/// The router's name for a target.
impl From<&Target> for RouteTarget {
    fn from(target: &Target) -> Self {
        match target {
            Target::Channel(name) => RouteTarget::Channel(name.clone()),
            Target::User(id) => RouteTarget::User(id.clone()),
            Target::Token(id) => RouteTarget::Token(id.clone()),
        }
    }
}
