//! What the edge needs from Spin and from its plugins: variables, Redis
//! commands, and the auth and router calls of the contract
//! (`madx:pusher/auth`, `madx:pusher/router`).
//!
//! The request handling is written against [`Platform`], so it reads the
//! same in the component (`spin.rs`: Spin's imports and the composed
//! plugins) and in unit tests.

use crate::broker::Target;

/// One value of a Redis reply, as Spin's `execute` hands it over: nested
/// arrays arrive flattened, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Nil,
    Status(String),
    Int(i64),
    Bytes(Vec<u8>),
}

/// The body of `POST /v1/tokens` for the auth plugin (`token-request`).
pub use madx_wire::v1::TokenRequest;

/// A token as the auth plugin issued it (`issued-token`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedToken {
    pub access_id: String,
    pub secret_seed: String,
    /// `SHA1`, `SHA256` or `SHA512`: the plugin's choice, announced.
    pub algorithm: String,
    pub digits: u8,
    pub period_secs: u32,
    pub expires_in_secs: u32,
}

/// The auth plugin's refusals that issue and revoke can give
/// (`auth-error`; the code checks' cases answer as a bad request).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthError {
    BadRequest(String),
    /// The code checks' refusals, which issue and revoke should not give.
    OtpRefused,
    TokenInvalid,
    RateLimited(u32),
    Unavailable(String),
}

/// The router plugin's refusals (`route-error`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteError {
    InvalidChannel(String),
    Forbidden(String),
    Invalid(String),
}

/// Spin's host interfaces and the plugins, as far as the edge uses them.
pub trait Platform {
    /// A component variable; `None` when the manifest does not define it.
    fn variable(&self, name: &str) -> Result<Option<String>, String>;

    /// Run one Redis command against the Redis at `address`.
    fn redis(&self, address: &str, command: &str, args: &[&[u8]]) -> Result<Vec<Reply>, String>;

    /// The auth plugin's `issue`, for `app_id`.
    fn issue_token(&self, app_id: &str, request: TokenRequest) -> Result<IssuedToken, AuthError>;

    /// The auth plugin's `revoke`, for `app_id`.
    fn revoke_token(&self, app_id: &str, access_id: &str) -> Result<bool, AuthError>;

    /// The router plugin's `route-publish`, for `app_id`.
    fn route_publish(
        &self,
        app_id: &str,
        target: &Target,
        event: &str,
    ) -> Result<Vec<Target>, RouteError>;
}
