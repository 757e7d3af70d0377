//! The WebSocket endpoint, `GET /v1/ws`.
//!
//! Every request that asks for an upgrade is upgraded, even one that will be
//! refused: browsers cannot read an HTTP status, so a refusal is one `error`
//! frame and a close code (see [`CloseCode`]).

pub mod frames;
mod session;

use std::sync::Arc;

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

pub use madx_wire::close::CloseCode;

use crate::limits::echoed;
use crate::plugins::bindings::{AuthError, Claims};
use crate::state::{App, AppState};

/// Bytes tungstenite reads at a time. It zero-fills its read buffer before
/// every read, so a small buffer keeps both memory per socket and CPU per
/// message low; larger messages still arrive whole.
const READ_BUFFER_BYTES: usize = 1024;
/// Outgoing bytes queued before sends apply back-pressure.
const MAX_WRITE_BUFFER_BYTES: usize = 64 * 1024;

/// The query string of `GET /v1/ws`.
#[derive(Debug, Default, Deserialize)]
pub struct ConnectParams {
    /// The app's id; may be left out when the host serves one app.
    pub app: Option<String>,
    pub access_id: Option<String>,
    pub otp: Option<String>,
    /// Replay the inboxes after this message id.
    pub last_id: Option<String>,
}

/// Why a connection attempt is refused.
#[derive(Debug)]
pub struct Refusal {
    code: CloseCode,
    message: String,
}

impl Refusal {
    fn new(code: CloseCode, message: impl Into<String>) -> Self {
        Refusal {
            code,
            message: message.into(),
        }
    }

    /// The store failed: the detail is logged, the client gets the stable
    /// code and a short message (as the HTTP API does).
    pub(crate) fn unavailable(detail: impl std::fmt::Display) -> Self {
        tracing::warn!(%detail, "store unavailable");
        Refusal::new(CloseCode::Unavailable, madx_wire::store::UNAVAILABLE)
    }

    pub fn code(&self) -> CloseCode {
        self.code
    }
}

/// A connection string that checked out.
pub(crate) struct Admitted {
    app: Arc<App>,
    claims: Claims,
    last_id: Option<u64>,
}

pub async fn upgrade(
    State(state): State<Arc<AppState>>,
    params: Result<Query<ConnectParams>, axum::extract::rejection::QueryRejection>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    // Not a WebSocket handshake: the API's JSON error, not axum's text.
    let upgrade = match upgrade {
        Ok(upgrade) => upgrade,
        Err(rejection) => {
            return crate::api::ApiError::upgrade_required(format!(
                "this endpoint takes a WebSocket upgrade: {}",
                rejection.body_text()
            ))
            .into_response();
        }
    };
    let max_frame = state.config.limits.max_frame_bytes;
    upgrade
        .read_buffer_size(READ_BUFFER_BYTES)
        .write_buffer_size(0)
        .max_write_buffer_size(MAX_WRITE_BUFFER_BYTES)
        .max_message_size(max_frame)
        .max_frame_size(max_frame)
        .on_upgrade(move |socket: WebSocket| {
            // Boxed, and freed once the socket is open: admission (a plugin
            // call) and the opening steps need space that every open
            // socket's task would otherwise carry for its whole life.
            let opening = Box::pin(open(socket, state, params));
            async move {
                // `opened` ends with the match, so the task does not keep
                // it beside the future that took it over.
                let serving = match opening.await {
                    Some(opened) => opened.serve(),
                    None => return,
                };
                serving.await;
            }
        })
}

/// Check the connection string and open the session, or refuse the socket
/// with the reason.
async fn open(
    socket: WebSocket,
    state: Arc<AppState>,
    params: Result<Query<ConnectParams>, axum::extract::rejection::QueryRejection>,
) -> Option<session::Opened> {
    let params = params.map(|Query(params)| params).map_err(|rejection| {
        Refusal::new(
            CloseCode::BadRequest,
            format!("malformed query string: {}", rejection.body_text()),
        )
    });
    let (app_label, admission) = match params {
        Ok(params) => {
            // Metrics label refusals with the app only when it exists.
            let app_label = params
                .app
                .as_deref()
                .and_then(|id| state.apps.by_id(id))
                .or_else(|| state.apps.only())
                .map(|app| app.id.clone())
                .unwrap_or_default();
            (app_label, admit(&state, params).await)
        }
        Err(refusal) => (String::new(), Err(refusal)),
    };
    match admission {
        Ok(admitted) => session::open(socket, state, admitted).await,
        Err(refusal) => {
            state.metrics.connect(&app_label, refusal.code.reason());
            session::refuse(socket, refusal).await;
            None
        }
    }
}

/// Check the connection string with the auth component.
async fn admit(state: &AppState, params: ConnectParams) -> Result<Admitted, Refusal> {
    let app = match params.app.as_deref() {
        Some(id) => state.apps.by_id(id).ok_or_else(|| {
            Refusal::new(
                CloseCode::BadRequest,
                format!("unknown app {:?}", echoed(id)),
            )
        })?,
        None => state.apps.only().ok_or_else(|| {
            Refusal::new(
                CloseCode::BadRequest,
                "this server hosts several apps: add app=<id> (the token's ws_url has it)",
            )
        })?,
    };
    let (Some(access_id), Some(otp)) = (params.access_id, params.otp) else {
        return Err(Refusal::new(
            CloseCode::BadRequest,
            "access_id and otp are required",
        ));
    };
    // Refused before the code is checked, so a client keeps its code for
    // a node that can take it, or for a corrected `last_id`.
    state.broker.is_ready().map_err(Refusal::unavailable)?;
    let last_id = parse_last_id(params.last_id.as_deref())?;

    let verdict = state
        .plugins()
        .auth
        .verify(&app.id, &access_id, &otp)
        .await
        // The reason (a trap, a file path) is logged where the call failed.
        .map_err(|_| {
            Refusal::new(
                CloseCode::PluginFailure,
                "the auth plugin failed; try again later",
            )
        })?;
    match verdict {
        Ok(mut claims) => {
            // A plugin's answer is input too: keep the idle timeout within
            // the contract, whatever the component says.
            claims.idle_timeout_secs = claims.idle_timeout_secs.clamp(1, 7200);
            Ok(Admitted {
                app,
                claims,
                last_id,
            })
        }
        Err(error) => Err(refusal_for(error)),
    }
}

/// The query string's `last_id`: absent or empty means none; otherwise a
/// message id some node can have issued (see [`crate::broker::check_position`]).
pub fn parse_last_id(text: Option<&str>) -> Result<Option<u64>, Refusal> {
    let Some(text) = text.filter(|text| !text.is_empty()) else {
        return Ok(None);
    };
    let id = text.parse::<u64>().map_err(|_| {
        Refusal::new(
            CloseCode::InvalidLastId,
            "last_id must be a message id (decimal)",
        )
    })?;
    crate::broker::check_position(id)
        .map_err(|message| Refusal::new(CloseCode::InvalidLastId, message))?;
    Ok(Some(id))
}

fn refusal_for(error: AuthError) -> Refusal {
    match error {
        AuthError::BadRequest(message) => Refusal::new(CloseCode::BadRequest, message),
        AuthError::OtpInvalid => Refusal::new(
            CloseCode::OtpInvalid,
            "the code does not match; check the clock and compute a fresh code",
        ),
        AuthError::OtpReused => Refusal::new(
            CloseCode::OtpReused,
            "this code was already used; use another code of the window or wait for the next step",
        ),
        AuthError::TokenInvalid => Refusal::new(
            CloseCode::TokenInvalid,
            "unknown, expired or revoked token; fetch a new one",
        ),
        AuthError::RateLimited(seconds) => Refusal::new(
            CloseCode::RateLimited,
            format!("too many wrong codes; retry in {seconds} s"),
        ),
        AuthError::Unavailable(detail) => Refusal::unavailable(detail),
    }
}
