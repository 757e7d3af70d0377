//! madx-pusher's HTTP API at the edge, as a Fermyon Spin component.
//!
//! Token issue and revoke, the publish API and Pusher's publish API run in
//! Spin close to the app back-ends; the WebSockets stay on the hosts (Spin
//! has no inbound WebSockets). Tokens and routing are the deployment's
//! auth and router plugins, the same `.wasm` files the hosts load:
//! `madx-edge-build` composes them with this component. The two share
//! state through the hosts' Redis: the plugins' store keeps the hosts'
//! keys, and a publish runs the hosts' own publish script, so a host cannot
//! tell an edge request from one of its own. See docs/edge.md.
//!
//! # Layout
//!
//! - [`api`]: the `/v1` endpoints (bodies, checks and errors from
//!   `madx-wire`), channel queries included.
//! - [`pusher`]: Pusher's HTTP API (`events`, `batch_events`,
//!   `terminate_connections`, channel and user queries), by the rules of
//!   `madx-wire`.
//! - [`config`]: the Spin variables (apps, Redis, the hosts' URL, limits).
//! - [`broker`]: publish through the hosts' script; revoke and terminate
//!   announcements; the hosts' channel directory and presence rosters.
//! - [`channels`]: what the channel queries of both APIs answer from.
//! - [`error`]: responses and the API's JSON errors.
//! - [`platform`]: what the above need from Spin (variables, Redis) and
//!   from the plugins, implemented with `spin-sdk` and the plugins' WIT
//!   imports in the wasm32 build (`spin` module).

pub mod api;
pub mod broker;
pub mod channels;
pub mod config;
pub mod error;
pub mod platform;
pub mod pusher;

#[cfg(target_arch = "wasm32")]
mod spin;

#[cfg(test)]
mod testing;
