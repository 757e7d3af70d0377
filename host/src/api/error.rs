//! The JSON error body of the HTTP API:
//! `{"error": {"code": "<snake_case>", "message": "..."}}`.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use madx_wire::errors::{self, ErrorCode};

use crate::broker::BrokerError;
use crate::plugins::PluginFailure;

/// What a client is told when the store fails.
pub use madx_wire::errors::STORE_UNAVAILABLE;
/// When to try again after `store_full`: idle tokens expire continually.
const STORE_FULL_RETRY_SECS: u32 = 60;

/// An HTTP error with a documented code (see docs/protocol.md).
#[derive(Debug)]
pub struct ApiError {
    code: ErrorCode,
    message: String,
    retry_after_secs: Option<u32>,
    /// The `WWW-Authenticate` challenge of a 401.
    challenge: Option<&'static str>,
}

impl ApiError {
    fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError {
            code,
            message: message.into(),
            retry_after_secs: None,
            challenge: None,
        }
    }

    /// The body is not JSON, or not the JSON the endpoint takes.
    pub fn invalid_json(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidJson, message)
    }

    /// Well-formed JSON with a value that is not allowed.
    pub fn invalid_request(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidRequest, message)
    }

    pub fn unauthorized() -> Self {
        ApiError {
            challenge: Some(errors::BASIC_CHALLENGE),
            ..Self::new(ErrorCode::Unauthorized, errors::UNAUTHORIZED)
        }
    }

    /// A Pusher API request whose signature does not hold (no Basic
    /// challenge: Pusher's libraries sign, they do not log in).
    pub fn pusher_unauthorized(message: String) -> Self {
        Self::new(ErrorCode::Unauthorized, message)
    }

    /// An operator endpoint without the operator token.
    pub fn unauthorized_operator() -> Self {
        ApiError {
            challenge: Some("Bearer realm=\"madx-pusher\""),
            ..Self::new(
                ErrorCode::Unauthorized,
                "operator endpoints need Authorization: Bearer <operator_token>",
            )
        }
    }

    /// `GET /v1/ws` without a WebSocket upgrade (`message` says what is
    /// missing).
    pub fn upgrade_required(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::UpgradeRequired, message)
    }

    /// A reload whose components did not load; the old ones keep serving.
    pub fn reload_refused(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::ReloadRefused, message)
    }

    /// No such route.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotFound, message)
    }

    pub fn token_not_found() -> Self {
        Self::new(ErrorCode::TokenNotFound, errors::TOKEN_NOT_FOUND)
    }

    pub fn method_not_allowed() -> Self {
        Self::new(ErrorCode::MethodNotAllowed, errors::METHOD_NOT_ALLOWED)
    }

    pub fn payload_too_large(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::PayloadTooLarge, message)
    }

    /// The router refused the publish for these credentials.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Forbidden, message)
    }

    pub fn rate_limited(retry_after_secs: u32) -> Self {
        ApiError {
            retry_after_secs: Some(retry_after_secs),
            ..Self::new(
                ErrorCode::RateLimited,
                errors::rate_limited(retry_after_secs),
            )
        }
    }

    /// The store failed. The detail (Redis' own words, script hashes) goes
    /// to the log, never to the client: it gets the stable code and a short
    /// message.
    pub fn store_unavailable(detail: impl std::fmt::Display) -> Self {
        tracing::warn!(%detail, "store unavailable");
        Self::new(ErrorCode::StoreUnavailable, errors::STORE_UNAVAILABLE)
    }

    /// The store has no room for new tokens (connects of existing tokens
    /// still work), or the file store's disk has no space; `reason` says
    /// which, in words fit for the caller.
    pub fn store_full(reason: String) -> Self {
        ApiError {
            retry_after_secs: Some(STORE_FULL_RETRY_SECS),
            ..Self::new(ErrorCode::StoreFull, reason)
        }
    }

    /// The plugin failed; the details are logged, not sent.
    pub fn plugin_failure(failure: &PluginFailure) -> Self {
        Self::new(
            ErrorCode::PluginFailure,
            format!("the {} plugin failed; see the server log", failure.call),
        )
    }

    pub fn code(&self) -> &'static str {
        self.code.as_str()
    }
}

/// A body refused by the checks made before any plugin is asked.
impl From<madx_wire::v1::Refusal> for ApiError {
    fn from(refusal: madx_wire::v1::Refusal) -> Self {
        ApiError::new(refusal.code, refusal.message)
    }
}

/// The node is not ready (`AppState::ready`): its store is unreachable,
/// or (the file store) its disk is full.
impl From<BrokerError> for ApiError {
    fn from(error: BrokerError) -> Self {
        match error {
            BrokerError::Full(reason) => ApiError::store_full(reason),
            unavailable @ BrokerError::Unavailable(_) => ApiError::store_unavailable(unavailable),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.code.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = errors::body(self.code, &self.message);
        let mut response = (status, Json(body)).into_response();
        let headers = response.headers_mut();
        if let Some(challenge) = self.challenge {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(challenge),
            );
        }
        if self.code == ErrorCode::UpgradeRequired {
            // RFC 9110 section 15.5.22: a 426 names the protocol to switch to.
            headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
            headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        }
        if let Some(seconds) = self.retry_after_secs {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}
