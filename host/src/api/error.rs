//! The JSON error body of the HTTP API:
//! `{"error": {"code": "<snake_case>", "message": "..."}}`.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::broker::BrokerError;
use crate::plugins::PluginFailure;

/// What a client is told when the store fails.
pub use madx_wire::store::UNAVAILABLE as STORE_UNAVAILABLE;
/// When to try again after `store_full`: idle tokens expire continually.
const STORE_FULL_RETRY_SECS: u32 = 60;

/// An HTTP error with a documented code (see docs/protocol.md).
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    retry_after_secs: Option<u32>,
    /// The `WWW-Authenticate` challenge of a 401.
    challenge: Option<&'static str>,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after_secs: None,
            challenge: None,
        }
    }

    /// The body is not JSON, or not the JSON the endpoint takes.
    pub fn invalid_json(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_json", message)
    }

    /// Well-formed JSON with a value that is not allowed.
    pub fn invalid_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", message)
    }

    pub fn unauthorized() -> Self {
        ApiError {
            challenge: Some("Basic realm=\"madx-pusher\""),
            ..Self::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "missing or wrong app credentials (HTTP Basic with the app's key and secret)",
            )
        }
    }

    /// A Pusher API request whose signature does not hold (no Basic
    /// challenge: Pusher's libraries sign, they do not log in).
    pub fn pusher_unauthorized(message: String) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    /// An operator endpoint without the operator token.
    pub fn unauthorized_operator() -> Self {
        ApiError {
            challenge: Some("Bearer realm=\"madx-pusher\""),
            ..Self::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "operator endpoints need Authorization: Bearer <operator_token>",
            )
        }
    }

    /// `GET /v1/ws` without a WebSocket upgrade (`message` says what is
    /// missing).
    pub fn upgrade_required(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UPGRADE_REQUIRED, "upgrade_required", message)
    }

    /// A reload whose components did not load; the old ones keep serving.
    pub fn reload_refused(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "reload_refused", message)
    }

    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, code, message)
    }

    pub fn method_not_allowed() -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "this endpoint does not take that method",
        )
    }

    pub fn payload_too_large(message: impl Into<String>) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", message)
    }

    /// The router refused the publish for these credentials.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    pub fn rate_limited(retry_after_secs: u32) -> Self {
        ApiError {
            retry_after_secs: Some(retry_after_secs),
            ..Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                format!("too many requests; retry in {retry_after_secs} s"),
            )
        }
    }

    /// The store failed. The detail (Redis' own words, script hashes) goes
    /// to the log, never to the client: it gets the stable code and a short
    /// message.
    pub fn store_unavailable(detail: impl std::fmt::Display) -> Self {
        tracing::warn!(%detail, "store unavailable");
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "store_unavailable",
            STORE_UNAVAILABLE,
        )
    }

    /// The in-memory store has no room for new tokens; connects of existing
    /// tokens still work.
    pub fn store_full() -> Self {
        ApiError {
            retry_after_secs: Some(STORE_FULL_RETRY_SECS),
            ..Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "store_full",
                "the token store is full; retry when tokens have expired",
            )
        }
    }

    /// The plugin failed; the details are logged, not sent.
    pub fn plugin_failure(failure: &PluginFailure) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "plugin_failure",
            format!("the {} plugin failed; see the server log", failure.call),
        )
    }

    pub fn code(&self) -> &'static str {
        self.code
    }
}

/// The node is not ready (`AppState::ready`): its store is unreachable.
impl From<BrokerError> for ApiError {
    fn from(error: BrokerError) -> Self {
        ApiError::store_unavailable(error)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({ "error": { "code": self.code, "message": self.message } });
        let mut response = (self.status, Json(body)).into_response();
        let headers = response.headers_mut();
        if let Some(challenge) = self.challenge {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(challenge),
            );
        }
        if self.status == StatusCode::UPGRADE_REQUIRED {
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
