//! Runs the madx-pusher edge component without the Spin CLI (which cannot
//! be installed everywhere): the exact `.wasm` that `spin.toml` names, built
//! by the manifest's own build command, under wasmtime, with what Spin's HTTP
//! trigger gives a component:
//!
//! - `wasi:http/incoming-handler@0.2.x`, a fresh instance per request, on
//!   the manifest's routes (other paths: a bare 404, as Spin);
//! - WASI p2 (clocks, random, stdout/stderr; no files, no environment);
//! - `fermyon:spin/variables@2.0.0`, resolved from the manifest's
//!   application and component variables as Spin resolves them;
//! - `fermyon:spin/redis@2.0.0` against a real Redis, checked against
//!   `allowed_outbound_hosts`, with Spin's reply flattening.
//!
//! A component that imports anything else fails to instantiate, so the
//! tests also prove the edge asks Spin for nothing more.
//!
//! # Layout
//!
//! - [`manifest`]: the part of `spin.toml` the harness acts on.
//! - [`spin`]: Spin's variables and Redis host interfaces.
//! - [`server`]: the HTTP trigger ([`EdgeApp`] compiles, [`Edge`] serves).
//!
//! The binary (`madx-edge-harness`) serves `spin.toml` like `spin up`; the
//! tests in `tests/` run it against real hosts and a real `redis-server`.

pub mod manifest;
pub mod server;
pub mod spin;

pub use manifest::Manifest;
pub use server::{Edge, EdgeApp};

/// The edge component's name in the repository's `spin.toml`.
pub const EDGE_COMPONENT: &str = "madx-edge";
