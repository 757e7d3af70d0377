//! What madx-pusher's hosts (`host/`) and its Spin edge (`edge/component`)
//! must agree on, so that a request gets the same answer from either and
//! a message one sends the other reads: plain functions and types, no I/O.
//!
//! - [`errors`]: the HTTP API's error codes, statuses, fixed messages and
//!   body.
//! - [`json`]: bodies and frames are JSON objects.
//! - [`presence`]: presence channels (members, `user_info`, node
//!   liveness) and their bounds.
//! - [`pusher`]: Pusher's HTTP API, its request signatures and the events
//!   it takes, down to madx targets.
//! - [`broker`]: where messages go (targets, streams, live channels, the
//!   deployment's Redis keys) and the `message` frame.
//! - [`close`]: the WebSocket close codes and reasons clients act on.
//! - [`control`]: the messages nodes send each other on
//!   `<prefix>:control` in Redis.
//! - [`scripts`]: the Redis scripts (the broker's ids, history, fan-out and
//!   channel directory; the plugins' store counters).
//! - [`settings`]: the limits, history and prefix settings both must set
//!   alike, with their defaults.
//! - [`store`]: the plugins' store limits and key layout.
//! - [`tokens`]: the contract's bounds on a token request, and the
//!   connection ids a publish may exclude.
//! - [`v1`]: the `/v1` API's bodies and the checks made before a plugin
//!   is asked.
//! - [`webhooks`]: Pusher's webhook events, body and signature.

pub mod broker;
pub mod close;
pub mod control;
pub mod errors;
pub mod json;
pub mod presence;
pub mod pusher;
pub mod scripts;
pub mod settings;
pub mod store;
pub mod tokens;
pub mod v1;
pub mod webhooks;
