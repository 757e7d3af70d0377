//! What madx-pusher's hosts (`host/`) and its Spin edge (`edge/component`)
//! must agree on, so that a request gets the same answer from either and
//! a message one sends the other reads: plain functions and types, no I/O.
//!
//! - [`pusher`]: Pusher's HTTP API, its request signatures and the events
//!   it takes, down to madx targets.
//! - [`control`]: the messages nodes send each other on
//!   `<prefix>:control` in Redis.
//! - [`scripts`]: the broker's Redis scripts (ids, history, fan-out, the
//!   channel directory).

pub mod control;
pub mod pusher;
pub mod scripts;
