//! Fuzz targets of madx-pusher: the parsers that take untrusted input and
//! the token rules.
//!
//! Each target is one pure function of the fuzzer's bytes that panics when
//! an invariant breaks. `fuzz_targets/*.rs` hand them to libFuzzer (nightly,
//! `scripts/fuzz`); `tests/replay.rs` runs every kept input through them on
//! stable, so `cargo test` checks the corpus and the crash inputs without
//! nightly.

mod api;
mod auth;
mod config;
mod frames;
mod glob;
mod query;

pub use api::{publish, publish_batch, token_request};
pub use auth::{auth, totp};
pub use config::config;
pub use frames::client_frame;
pub use glob::glob;
pub use query::ws_query;

/// A target: the fuzzer's bytes in, a panic when an invariant breaks.
pub type Target = fn(&[u8]);

/// Every target by the name of its binary, corpus and artifacts folders.
pub const TARGETS: &[(&str, Target)] = &[
    ("client_frame", client_frame),
    ("publish", publish),
    ("publish_batch", publish_batch),
    ("token_request", token_request),
    ("ws_query", ws_query),
    ("config", config),
    ("glob", glob),
    ("auth", auth),
    ("totp", totp),
];
