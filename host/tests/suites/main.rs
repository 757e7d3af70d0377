//! The host's integration suites, one module each, linked into one test
//! binary: they share the harness in `common`, and one link of the host's
//! dependencies is minutes of CI less than fourteen. Every suite talks to
//! the real binary over loopback sockets.
//!
//! One suite: `cargo test --release -p madx-pusher --test suites plugins::`.

mod common;

mod cluster;
mod compile_cache;
mod delivery;
mod example_worker;
mod file_store;
mod hostile_auth;
mod hostile_connections;
mod hostile_history;
mod http_api;
mod plugins;
mod presence;
mod pusher_api;
mod tls;
mod webhooks;
mod websocket;
