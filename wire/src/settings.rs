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

/// One app's `ID:KEY:SECRET`, as `MADX_APPS` (and the edge's `apps`) give
/// it; the secret may contain `:`.
pub fn parse_app(triple: &str) -> Result<(&str, &str, &str), String> {
    let mut parts = triple.splitn(3, ':');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(id), Some(key), Some(secret)) => Ok((id, key, secret)),
        _ => Err("an app is given as ID:KEY:SECRET".to_owned()),
    }
}

/// The rules every deployment's apps follow: ids of 1 to 64 characters of
/// `A-Z a-z 0-9 - _`, keys without `:`, secrets of at least 8 characters,
/// no id or key twice. `apps` are (id, key, secret).
pub fn check_apps<'a>(
    apps: impl IntoIterator<Item = (&'a str, &'a str, &'a str)>,
) -> Result<(), String> {
    let mut ids = std::collections::HashSet::new();
    let mut keys = std::collections::HashSet::new();
    for (id, key, secret) in apps {
        let id_ok = (1..=64).contains(&id.len())
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !id_ok {
            return Err(format!(
                "app id {id:?} must be 1 to 64 characters of A-Z a-z 0-9 - _"
            ));
        }
        if key.is_empty() || key.contains(':') {
            return Err(format!(
                "app {id:?}: the key must be non-empty and contain no ':'"
            ));
        }
        if secret.len() < 8 {
            return Err(format!(
                "app {id:?}: the secret must be at least 8 characters"
            ));
        }
        if !ids.insert(id) {
            return Err(format!("app id {id:?} appears twice"));
        }
        if !keys.insert(key) {
            return Err(format!("app key {key:?} is used by two apps"));
        }
    }
    Ok(())
}

/// `public_url` is an http(s):// or ws(s):// base URL without query or
/// fragment: the base of every token's `ws_url`.
pub fn check_public_url(url: &str) -> Result<(), String> {
    let valid_scheme = ["http://", "https://", "ws://", "wss://"]
        .iter()
        .any(|scheme| url.starts_with(scheme));
    if !valid_scheme || url.contains('?') || url.contains('#') {
        return Err(format!(
            "public_url must be an http(s):// or ws(s):// base URL without query, got {url:?}"
        ));
    }
    Ok(())
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
    fn apps_follow_one_set_of_rules() {
        assert_eq!(
            parse_app("a:k:s:with:colons"),
            Ok(("a", "k", "s:with:colons"))
        );
        assert!(parse_app("a:k").is_err());
        let good = ("a", "k", "secret-8");
        assert!(check_apps([good, ("b", "k2", "secret-8")]).is_ok());
        for (bad, why) in [
            (vec![("a b", "k", "secret-8")], "must be 1 to 64"),
            (vec![("a", "", "secret-8")], "key must be non-empty"),
            (vec![("a", "k", "short")], "at least 8"),
            (vec![good, ("a", "k2", "secret-8")], "appears twice"),
            (vec![good, ("b", "k", "secret-8")], "used by two apps"),
        ] {
            let error = check_apps(bad).unwrap_err();
            assert!(error.contains(why), "{error}");
        }
        assert!(check_public_url("https://push.example.com").is_ok());
        for bad in ["push.example.com", "https://x/?a=1", "ftp://x"] {
            assert!(check_public_url(bad).is_err(), "{bad}");
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
