//! Per-client limits that the front ends share through the state: how
//! often a client may present wrong app credentials, how fast a socket
//! may publish and subscribe, and how much of a client's text is repeated
//! back. Below `state` (which holds them) and above nothing but the
//! configuration, so the HTTP API and the gateway both use them without
//! importing each other.

mod credentials;
mod frame_rates;

use std::num::NonZeroU32;

use governor::Quota;

pub use credentials::{Counted, CredentialThrottle, KeyName};
pub use frame_rates::{Frame, FrameRates, SocketRate};

/// A token bucket's quota: `per_sec` sustained, `burst` at once.
fn quota(per_sec: u32, burst: u32) -> Quota {
    // The configuration guarantees at least 1; 1 is the safe fallback.
    let per_sec = NonZeroU32::new(per_sec).unwrap_or(NonZeroU32::MIN);
    let burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
    Quota::per_second(per_sec).allow_burst(burst)
}

/// Bytes of a client's text (a key, an app id) that a log line or an error
/// message repeats: enough to recognise it, never the megabytes a client
/// can send.
pub const ECHOED_BYTES: usize = 64;

/// `text`, cut to at most [`ECHOED_BYTES`] on a character boundary.
pub fn echoed(text: &str) -> &str {
    &text[..text.floor_char_boundary(ECHOED_BYTES)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echoed_text_is_cut_on_a_character_boundary() {
        assert_eq!(echoed("demo"), "demo");
        let long = format!("{}é", "a".repeat(ECHOED_BYTES - 1));
        assert_eq!(echoed(&long), "a".repeat(ECHOED_BYTES - 1));
    }
}
