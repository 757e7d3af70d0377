//! Per-client limits that the front ends share through the state: how
//! often a client may present wrong app credentials, and how fast a socket
//! may publish, and how much of a client's text is repeated back. Below
//! `state` (which holds them) and above nothing but the configuration, so
//! the HTTP API and the gateway both use them without importing each
//! other.

mod credentials;
mod publish_rate;

pub use credentials::{Counted, CredentialThrottle, KeyName};
pub use publish_rate::{PublishRates, SocketRate};

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
