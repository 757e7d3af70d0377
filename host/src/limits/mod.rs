//! Per-client limits that the front ends share through the state: how
//! often a client may present wrong app credentials, and how fast a socket
//! may publish. Below `state` (which holds them) and above nothing but the
//! configuration, so the HTTP API and the gateway both use them without
//! importing each other.

mod credentials;
mod publish_rate;

pub use credentials::{Counted, CredentialThrottle};
pub use publish_rate::{PublishRates, SocketRate};
