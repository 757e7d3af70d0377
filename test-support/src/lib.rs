//! What madx-pusher's test suites run for real, in one copy: the
//! `madx-pusher` binary of the same build on a free loopback port
//! ([`TestServer`]), a real `redis-server` ([`RedisServer`]), components
//! built for `wasm32-wasip2` ([`build_component`]), tokens and their TOTP
//! codes ([`Token`], computed with `totp-rs`, an implementation independent
//! of the auth rules under test), WebSocket connects ([`connect`],
//! [`next_json`], [`messages_until`]), and a webhook receiver that checks
//! the signatures itself ([`WebhookReceiver`]).
//!
//! The host's integration tests, the edge harness tests, the bench smoke
//! test and the custom-host test use it as a dev-dependency. Everything
//! binds `127.0.0.1:0`, and every process it starts is killed when its
//! handle is dropped.

mod build;
mod process;
mod redis_cluster;
mod redis_server;
mod server;
mod token;
mod webhook_receiver;
mod ws;

use std::time::Duration;

pub use build::{build_component, build_component_set, workspace};
pub use process::{Listening, pusher_binary, sibling_binary};
pub use redis_cluster::RedisCluster;
pub use redis_server::RedisServer;
pub use server::{TestServer, http, http_from};
pub use token::{Algorithm, Token, away_from_step_edge, totp_code, unix_now};
pub use webhook_receiver::{Delivered, WebhookReceiver, hmac_sha256_hex};
pub use ws::{
    Connected, Socket, close_code_skipping_messages, closed_with, connect, messages_until,
    next_json, send_json,
};

/// How long any single step of a test may wait for a server.
pub const PATIENCE: Duration = Duration::from_secs(15);
