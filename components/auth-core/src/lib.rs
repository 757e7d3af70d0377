//! The token rules of madx-pusher's auth, shared by every auth component
//! built on them (the default `components/auth`, the examples, and later
//! the Spin edge).
//!
//! Tokens are an access id plus a secret seed; every WebSocket connects with
//! the access id and a fresh RFC 6238 code that is accepted once. The rules
//! live in [`tokens`], the code arithmetic in [`totp`]; with the `bindings`
//! feature, [`component`] implements the `auth-plugin` world from `wit/`
//! for any code profile.
//!
//! Settings (`[plugins.auth.settings]` in the host config), all in whole
//! numbers: `default_ttl_secs` (7200), `max_failures` (5),
//! `failure_window_secs` (300), `lockout_secs` (300), `max_lockout_secs`
//! (3600).

pub mod tokens;
pub mod totp;

// Lets the generated bindings name this crate as other crates do.
extern crate self as madx_auth_core;

#[cfg(feature = "bindings")]
pub mod component;
