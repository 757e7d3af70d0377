//! The settings a host and the edge must set alike, with one default each:
//! the HTTP API's limits, how much history the publish script keeps, and
//! the store prefix. A host reads them from `[limits]`, `[history]` and
//! `store_prefix`; the edge from the Spin variables of the same names.

/// `[limits] max_body_bytes`: largest request body of the other endpoints.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// The smallest `max_body_bytes` (and a host's `max_frame_bytes`) allowed.
pub const MIN_BODY_BYTES: usize = 256;
/// `[limits] max_publish_bytes`: largest `data` of one message.
pub const MAX_PUBLISH_BYTES: usize = 64 * 1024;
/// `[limits] max_batch`: messages in one batch (and Pusher batch).
pub const MAX_BATCH: usize = 100;
/// `[limits] max_name_bytes`: longest channel, event or access id.
pub const MAX_NAME_BYTES: usize = 200;
/// `[history] per_stream`: messages kept per stream.
pub const HISTORY_PER_STREAM: usize = 100;
/// `[history] ttl_secs`: seconds a message is kept.
pub const HISTORY_TTL_SECS: u64 = 600;
/// `store_prefix`: in front of every Redis key of a deployment.
pub const STORE_PREFIX: &str = "madx";

/// What a message's JSON may carry on top of its `data`.
const ENVELOPE_BYTES: usize = 16 * 1024;

/// The body limit of one message: `max_publish_bytes` of data plus its
/// envelope.
pub fn message_body_limit(max_publish_bytes: usize) -> usize {
    max_publish_bytes.saturating_add(ENVELOPE_BYTES)
}

/// The body limit of a batch: `max_batch` messages.
pub fn batch_body_limit(max_publish_bytes: usize, max_batch: usize) -> usize {
    message_body_limit(max_publish_bytes).saturating_mul(max_batch)
}

/// A store prefix is 1 to 64 characters of `A-Z a-z 0-9 - _ .`: no `:`,
/// so no prefix is another's start.
pub fn check_store_prefix(prefix: &str) -> Result<(), String> {
    let valid = (1..=64).contains(&prefix.len())
        && prefix
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || b"-_.".contains(&byte));
    if valid {
        Ok(())
    } else {
        Err(format!(
            "store_prefix must be 1 to 64 characters of A-Z a-z 0-9 - _ ., got {prefix:?}"
        ))
    }
}

/// The WebSocket URL of `app_id` on the hosts whose public base URL is
/// `public_url` (`https://push.example.com` gives
/// `wss://push.example.com/v1/ws?app=<app>`).
pub fn ws_url(public_url: &str, app_id: &str) -> String {
    let base = public_url
        .trim_end_matches('/')
        .replacen("https://", "wss://", 1)
        .replacen("http://", "ws://", 1);
    format!("{base}/v1/ws?app={app_id}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_limits_leave_room_for_the_envelope() {
        assert_eq!(message_body_limit(MAX_PUBLISH_BYTES), 80 * 1024);
        assert_eq!(batch_body_limit(1024, 2), 2 * (1024 + 16 * 1024));
        assert_eq!(batch_body_limit(usize::MAX, 2), usize::MAX);
    }

    #[test]
    fn prefixes_cannot_contain_a_separator() {
        assert!(check_store_prefix(STORE_PREFIX).is_ok());
        assert!(check_store_prefix("prod-1.eu_west").is_ok());
        for refused in ["", "a:b", "a b", &"p".repeat(65)] {
            assert!(check_store_prefix(refused).is_err(), "{refused}");
        }
    }

    #[test]
    fn websocket_urls_follow_the_public_scheme() {
        assert_eq!(
            ws_url("https://push.example.com/", "a"),
            "wss://push.example.com/v1/ws?app=a"
        );
        assert_eq!(
            ws_url("http://127.0.0.1:8080", "b"),
            "ws://127.0.0.1:8080/v1/ws?app=b"
        );
    }
}
