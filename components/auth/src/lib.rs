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

// Lets the generated bindings name this crate as other crates do.
extern crate self as madx_auth;

#[cfg(feature = "bindings")]
pub mod component;
