//! The default components, built by `host/build.rs` and embedded so that the
//! binary runs anywhere on its own.

pub const AUTH: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/madx_auth.wasm"));
pub const ROUTER: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/madx_router.wasm"));
