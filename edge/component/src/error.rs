//! Responses, and the JSON errors of the HTTP API with the host's statuses
//! and codes (`host/src/api/error.rs`, docs/protocol.md):
//! `{"error": {"code": "<snake_case>", "message": "..."}}`.

use serde::Serialize;
use serde_json::json;

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

/// An HTTP error with a documented code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
    retry_after_secs: Option<u32>,
    /// The `WWW-Authenticate` challenge of a 401.
    challenge: Option<&'static str>,
}

impl ApiError {
    fn new(status: u16, code: &'static str, message: impl Into<String>) -> Self {
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
        Self::new(400, "invalid_json", message)
    }

    /// Well-formed JSON with a value that is not allowed.
    pub fn invalid_request(message: impl Into<String>) -> Self {
        Self::new(400, "invalid_request", message)
    }

    pub fn unauthorized() -> Self {
        ApiError {
            challenge: Some("Basic realm=\"madx-pusher\""),
            ..Self::new(
                401,
                "unauthorized",
                "missing or wrong app credentials (HTTP Basic with the app's key and secret)",
            )
        }
    }

    /// A Pusher API request whose signature does not hold (no Basic
    /// challenge: Pusher's libraries sign, they do not log in).
    pub fn pusher_unauthorized(message: impl Into<String>) -> Self {
        Self::new(401, "unauthorized", message)
    }

    /// The router refused the message.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(403, "forbidden", message)
    }

    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(404, code, message)
    }

    pub fn token_not_found() -> Self {
        Self::not_found(
            "token_not_found",
            "no such token (unknown, expired or already revoked)",
        )
    }

    pub fn method_not_allowed() -> Self {
        Self::new(
            405,
            "method_not_allowed",
            "this endpoint does not take that method",
        )
    }

    pub fn payload_too_large(message: impl Into<String>) -> Self {
        Self::new(413, "payload_too_large", message)
    }

    pub fn rate_limited(retry_after_secs: u32) -> Self {
        ApiError {
            retry_after_secs: Some(retry_after_secs),
            ..Self::new(
                429,
                "rate_limited",
                format!("too many requests; retry in {retry_after_secs} s"),
            )
        }
    }

    /// The store failed. As on the hosts, the detail (Redis' own words) is
    /// logged, never sent: clients get the stable code and a short message.
    pub fn store_unavailable(detail: impl std::fmt::Display) -> Self {
        eprintln!("madx-edge: store unavailable: {detail}");
        Self::new(503, "store_unavailable", madx_wire::store::UNAVAILABLE)
    }

    /// The edge's Spin variables are missing or invalid (the hosts refuse
    /// to start in that case; a Spin component can only answer).
    pub fn misconfigured(message: impl Into<String>) -> Self {
        Self::new(500, "edge_misconfigured", message)
    }

    pub fn into_response(self) -> Response {
        let body = json!({ "error": { "code": self.code, "message": self.message } });
        let mut response = Response::json(self.status, &body);
        if let Some(challenge) = self.challenge {
            response = response.with_header("www-authenticate", challenge);
        }
        if let Some(seconds) = self.retry_after_secs {
            response = response.with_header("retry-after", seconds.to_string());
        }
        response
    }
}
