//! Responses, and the JSON errors of the HTTP API: the codes, statuses,
//! fixed messages and body of `madx_wire::errors`.

use madx_wire::errors::{self, ErrorCode};
use serde::Serialize;

/// A complete HTTP response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// `status` with `value` as its JSON body.
    pub fn json(status: u16, value: &impl Serialize) -> Response {
        Response {
            status,
            headers: vec![("content-type", "application/json".to_owned())],
            // Serializing plain structs and already-valid JSON cannot fail.
            body: serde_json::to_vec(value).unwrap_or_default(),
        }
    }

    pub fn empty(status: u16) -> Response {
        Response {
            status,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Response {
        self.headers.push((name, value.into()));
        self
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(header, _)| header.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }
}

/// A body refused by the checks made before any plugin is asked.
impl From<madx_wire::v1::Refusal> for ApiError {
    fn from(refusal: madx_wire::v1::Refusal) -> Self {
        ApiError::new(refusal.code, refusal.message)
    }
}

/// An HTTP error with a documented code (`madx_wire::errors`, the hosts'
/// codes, statuses and fixed messages).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
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
    pub fn pusher_unauthorized(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unauthorized, message)
    }

    /// The router refused the message.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Forbidden, message)
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

    pub fn rate_limited(retry_after_secs: u32) -> Self {
        ApiError {
            retry_after_secs: Some(retry_after_secs),
            ..Self::new(
                ErrorCode::RateLimited,
                errors::rate_limited(retry_after_secs),
            )
        }
    }

    /// The store failed. The detail (Redis' own words) is logged, never
    /// sent: clients get the stable code and a short message.
    pub fn store_unavailable(detail: impl std::fmt::Display) -> Self {
        eprintln!("madx-edge: store unavailable: {detail}");
        Self::new(ErrorCode::StoreUnavailable, errors::STORE_UNAVAILABLE)
    }

    /// The edge's Spin variables are missing or invalid (the hosts refuse
    /// to start in that case; a Spin component can only answer).
    pub fn misconfigured(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::EdgeMisconfigured, message)
    }

    pub fn into_response(self) -> Response {
        let mut response =
            Response::json(self.code.status(), &errors::body(self.code, &self.message));
        if let Some(challenge) = self.challenge {
            response = response.with_header("www-authenticate", challenge);
        }
        if let Some(seconds) = self.retry_after_secs {
            response = response.with_header("retry-after", seconds.to_string());
        }
        response
    }
}
