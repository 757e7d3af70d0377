//! `POST /v1/publish` and `POST /v1/publish/batch`: an app's back-end or
//! worker hands a message to the users, tokens or channel subscribers it is
//! for.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use madx_wire::errors::at_index;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::ApiError;
use super::extract::{CallingApp, JsonBody};
use crate::broker::{Outgoing, Published};
use crate::config::Limits;
use crate::hub::Target;
use crate::plugins::bindings::{RouteError, RouteTarget};
use crate::state::{App, AppState};

/// One message as the API takes it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishRequest {
    channel: Option<String>,
    user_id: Option<String>,
    access_id: Option<String>,
    event: String,
    data: Box<RawValue>,
    /// A connection (`welcome`'s `connection_id`) that must not get the
    /// message: the sender, who already knows.
    socket_id: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchRequest {
    messages: Vec<PublishRequest>,
}

/// A message that passed the checks made before the router is asked.
#[derive(Debug)]
pub struct Checked {
    pub target: RouteTarget,
    pub event: String,
    pub data: Box<RawValue>,
    pub except: Option<String>,
}

impl PublishRequest {
    /// Exactly one target, names and data within the limits. `index` is the
    /// message's place in a batch, which error messages name.
    pub fn check(self, limits: &Limits, index: Option<usize>) -> Result<Checked, ApiError> {
        let at = |message: String| at_index(index, message);
        let target = match (self.channel, self.user_id, self.access_id) {
            (Some(channel), None, None) => RouteTarget::Channel(channel),
            (None, Some(user_id), None) => RouteTarget::User(user_id),
            (None, None, Some(access_id)) => RouteTarget::Token(access_id),
            _ => {
                return Err(ApiError::invalid_request(at(
                    "give exactly one of channel, user_id and access_id".to_owned(),
                )));
            }
        };
        Checked {
            target,
            event: self.event,
            data: self.data,
            except: self.socket_id,
        }
        .within(limits, index)
    }
}

impl Checked {
    /// Names and data within the limits. `index` as in
    /// [`PublishRequest::check`].
    pub fn within(self, limits: &Limits, index: Option<usize>) -> Result<Checked, ApiError> {
        let at = |message: String| at_index(index, message);
        let target = &self.target;
        let name = match target {
            RouteTarget::Channel(name) | RouteTarget::User(name) | RouteTarget::Token(name) => name,
        };
        // A user id's limit is the contract's, not a tunable: every user a
        // token was issued for must stay reachable.
        let name_limit = match target {
            RouteTarget::User(_) => madx_wire::tokens::MAX_USER_ID_BYTES,
            RouteTarget::Channel(_) | RouteTarget::Token(_) => limits.max_name_bytes,
        };
        for (field, value, limit) in [
            ("target", name, name_limit),
            ("event", &self.event, limits.max_name_bytes),
        ] {
            if value.is_empty() || value.len() > limit {
                return Err(ApiError::invalid_request(at(format!(
                    "{field} must be 1 to {limit} bytes long"
                ))));
            }
        }
        if let Some(socket_id) = &self.except {
            madx_wire::tokens::validate_socket_id(socket_id)
                .map_err(|message| ApiError::invalid_request(at(message)))?;
        }
        if self.data.get().len() > limits.max_publish_bytes {
            return Err(ApiError::payload_too_large(at(format!(
                "data is over the limit of {} bytes",
                limits.max_publish_bytes
            ))));
        }
        Ok(self)
    }
}

impl BatchRequest {
    /// The batch's messages, if there are 1 to `max_batch` of them.
    pub fn into_messages(self, limits: &Limits) -> Result<Vec<PublishRequest>, ApiError> {
        let max = limits.max_batch;
        if self.messages.is_empty() || self.messages.len() > max {
            return Err(ApiError::invalid_request(format!(
                "a batch holds 1 to {max} messages, got {}",
                self.messages.len()
            )));
        }
        Ok(self.messages)
    }
}

#[derive(Debug, Serialize)]
pub struct Accepted {
    id: String,
}

#[derive(Debug, Serialize)]
pub struct BatchAccepted {
    ids: Vec<String>,
}

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
    let messages = batch.into_messages(&state.config.limits)?;
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
    let published = state
        .broker
        .publish(&app.id, &messages)
        .await
        .map_err(ApiError::store_unavailable)?;
    for message in &published {
        state.metrics.published(&app.id, "api", message.delivered);
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
    let checked = request.check(&state.config.limits, index)?;
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
        .route_publish(&app.id, &target, &event)
        .await
        .map_err(|failure| ApiError::plugin_failure(&failure))?
        .map_err(|error| match error {
            RouteError::InvalidChannel(message) | RouteError::Invalid(message) => {
                ApiError::invalid_request(at(message))
            }
            RouteError::Forbidden(message) => ApiError::forbidden(at(message)),
        })?;
    if targets.is_empty() {
        return Err(ApiError::invalid_request(at(
            "the router sent this message nowhere".to_owned(),
        )));
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
