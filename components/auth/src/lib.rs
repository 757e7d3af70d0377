//! The default auth component of madx-pusher.
//!
//! Tokens are an access id plus a secret seed; every WebSocket connects with
//! the access id and a fresh RFC 6238 code that is accepted once. The rules
//! live in [`tokens`], the code arithmetic in [`totp`]; this file only binds
//! them to the `auth-plugin` world from `wit/`.
//!
//! Settings (`[plugins.auth.settings]` in the host config), all in whole
//! numbers: `default_ttl_secs` (7200), `max_failures` (5),
//! `failure_window_secs` (300), `lockout_secs` (300), `max_lockout_secs`
//! (3600).

pub mod tokens;
pub mod totp;

/// The WIT binding: only in the WebAssembly build, and off when another
/// crate reuses the rules as a library.
#[cfg(all(feature = "component", target_arch = "wasm32"))]
mod component;
