//! madx-pusher: a real-time push service.
//!
//! App back-ends get tokens and publish over HTTP; browsers hold WebSockets
//! opened with one-time TOTP connection strings. Decisions (tokens, who may
//! subscribe where) are made by WebAssembly components; this crate is the
//! host that does all I/O around them.
//!
//! # Layout
//!
//! - [`check`]: `madx-pusher plugin check`, the conformance suite for
//!   plugin authors.
//! - [`config`]: the configuration file, environment and flags, resolved
//!   into one validated [`config::Config`].
//! - [`server`]: binds the listener (plain or TLS), wires the parts together
//!   and shuts down gracefully.
//! - [`connections`]: the accept loop and connection-level limits (header,
//!   idle and request timeouts, pending and total caps, descriptor reserve).
//! - [`api`]: the HTTP API (`/v1/tokens`, health), its app authentication
//!   and its JSON errors.
//! - [`gateway`]: the WebSocket endpoint: connection strings, the session
//!   loop, heartbeats and close codes.
//! - [`broker`]: message ids, bounded history and recovery; hands each
//!   message, serialized once, to the hub.
//! - [`channels`]: what the HTTP APIs report about channels (occupied,
//!   subscription and member counts), one answer for every API.
//! - [`hub`]: this node's open sessions, indexed by token, user and channel;
//!   fan-out into bounded per-session queues.
//! - [`limits`]: per-client limits the front ends share (wrong app
//!   credentials, socket publish rates).
//! - [`mailbox`]: a session's inbox of queued messages and close requests.
//! - [`presence`]: presence channels' members and the deployment's
//!   occupied/vacated decisions (one node, or Redis with node heartbeats).
//! - [`redis_link`]: how a node reaches the deployment's Redis, one server
//!   or a Redis Cluster, for everything above that shares it.
//! - [`metrics`]: Prometheus counters and gauges behind `GET /metrics`.
//! - [`plugins`]: the wasmtime runtime that runs the auth and router
//!   components, one fresh instance per call, under a time and memory budget.
//! - [`state`]: what every handler shares (config, apps, plugins, hub).
//! - [`store`]: the key-value backend behind the components' `store` import.
//! - [`webhooks`]: the signed webhooks: per-webhook bounded queues and
//!   sender tasks (batches, retries with back-off).

// Public: what the binary, an embedder or a benchmark builds a node from
// (config, server, plugins, store, metrics, check), and the parsers the fuzz
// targets feed (api, gateway, broker). The rest is the node's inside.
// docs/architecture.md draws what may depend on what.
pub mod api;
pub mod broker;
mod channels;
pub mod check;
pub mod config;
mod connections;
mod data_dir;
pub mod gateway;
mod hub;
mod limits;
mod mailbox;
pub mod metrics;
pub mod plugins;
mod presence;
mod redis_link;
pub mod server;
mod state;
pub mod store;
mod webhooks;

/// A future boxed in this crate, for the entry points a binary awaits.
///
/// An `async fn`'s state machine is compiled, like generic code, in every
/// crate that polls it, and release builds share no generic code between
/// crates: a binary awaiting `Server::serve` compiled the whole server a
/// second time (113 s to rebuild `main.rs`, 5 s with the futures boxed
/// here, where the binary only calls them).
pub type Boxed<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;
