//! The HTTP API's errors as clients see them, from a host or the edge: a
//! documented code with its status (docs/protocol.md), the fixed messages,
//! and the body `{"error": {"code", "message"}}`. Each side builds its own
//! response from these; neither restates a code, a status or a message.

use serde_json::{Value, json};

/// A documented error code and its HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// 400: the body is not JSON, or not the JSON the endpoint takes.
    InvalidJson,
    /// 400: well-formed JSON with a value that is not allowed.
    InvalidRequest,
    /// 401: missing or wrong credentials (or a Pusher signature).
    Unauthorized,
    /// 403: the router refused the message.
    Forbidden,
    /// 404: no such route.
    NotFound,
    /// 404: no such token.
    TokenNotFound,
    /// 405: the route does not take this method.
    MethodNotAllowed,
    /// 413: over a size limit.
    PayloadTooLarge,
    /// 422: a plugin reload was refused; the old plugins keep serving.
    ReloadRefused,
    /// 426: `GET /v1/ws` without a WebSocket upgrade.
    UpgradeRequired,
    /// 429: too many requests; retry after `Retry-After` seconds.
    RateLimited,
    /// 503: the store cannot be reached.
    StoreUnavailable,
    /// 503: the in-memory store is full; retry once idle tokens expired.
    StoreFull,
    /// 503: a plugin trapped, timed out or answered unusably.
    PluginFailure,
    /// 500: the edge's Spin variables are missing or invalid (only the
    /// edge answers it: a host with a bad configuration does not start).
    EdgeMisconfigured,
}

impl ErrorCode {
    /// The code in the body.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidJson => "invalid_json",
            ErrorCode::InvalidRequest => "invalid_request",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::NotFound => "not_found",
            ErrorCode::TokenNotFound => "token_not_found",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
            ErrorCode::PayloadTooLarge => "payload_too_large",
            ErrorCode::ReloadRefused => "reload_refused",
            ErrorCode::UpgradeRequired => "upgrade_required",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::StoreUnavailable => "store_unavailable",
            ErrorCode::StoreFull => "store_full",
            ErrorCode::PluginFailure => "plugin_failure",
            ErrorCode::EdgeMisconfigured => "edge_misconfigured",
        }
    }

    /// The HTTP status that goes with the code.
    pub fn status(self) -> u16 {
        match self {
            ErrorCode::InvalidJson | ErrorCode::InvalidRequest => 400,
            ErrorCode::Unauthorized => 401,
            ErrorCode::Forbidden => 403,
            ErrorCode::NotFound | ErrorCode::TokenNotFound => 404,
            ErrorCode::MethodNotAllowed => 405,
            ErrorCode::PayloadTooLarge => 413,
            ErrorCode::ReloadRefused => 422,
            ErrorCode::UpgradeRequired => 426,
            ErrorCode::RateLimited => 429,
            ErrorCode::EdgeMisconfigured => 500,
            ErrorCode::StoreUnavailable | ErrorCode::StoreFull | ErrorCode::PluginFailure => 503,
        }
    }
}

/// The `WWW-Authenticate` challenge of a 401 for app credentials.
pub const BASIC_CHALLENGE: &str = "Basic realm=\"madx-pusher\"";
/// The refusal of missing or wrong app credentials.
pub const UNAUTHORIZED: &str =
    "missing or wrong app credentials (HTTP Basic with the app's key and secret)";
/// The refusal of an unknown, expired or revoked token.
pub const TOKEN_NOT_FOUND: &str = "no such token (unknown, expired or already revoked)";
/// The refusal of a method a route does not take.
pub const METHOD_NOT_ALLOWED: &str = "this endpoint does not take that method";
/// What a client is told when the store cannot be reached (the backend's
/// own words go to the log only).
pub const STORE_UNAVAILABLE: &str = crate::store::UNAVAILABLE;
/// What an auth plugin's code-check refusal answers at `/v1/tokens`.
pub const AUTH_REFUSED: &str = "the auth plugin refused the request";

/// The message of a 429 with its `Retry-After`.
pub fn rate_limited(retry_after_secs: u32) -> String {
    format!("too many requests; retry in {retry_after_secs} s")
}

/// A batch message's error, prefixed with its place in the batch.
pub fn at_index(index: Option<usize>, message: String) -> String {
    match index {
        Some(index) => format!("messages[{index}]: {message}"),
        None => message,
    }
}

/// The error body.
pub fn body(code: ErrorCode, message: &str) -> Value {
    json!({ "error": { "code": code.as_str(), "message": message } })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_body_names_the_code() {
        assert_eq!(
            body(ErrorCode::TokenNotFound, TOKEN_NOT_FOUND),
            json!({"error": {"code": "token_not_found", "message": TOKEN_NOT_FOUND}})
        );
        assert_eq!(ErrorCode::TokenNotFound.status(), 404);
        assert_eq!(ErrorCode::StoreFull.status(), 503);
    }

    #[test]
    fn batch_errors_say_which_message() {
        assert_eq!(at_index(Some(2), "bad".into()), "messages[2]: bad");
        assert_eq!(at_index(None, "bad".into()), "bad");
    }
}
