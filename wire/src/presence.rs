//! Presence channels: who is online in a channel, as every node and the
//! edge must see it. A member is a token's `user_id`, with the `user_info`
//! the app gave when it asked for the token.

use serde_json::value::RawValue;

/// Channels whose names start with this track members (Pusher's
/// convention), unless the deployment names another prefix.
pub const CHANNEL_PREFIX: &str = "presence-";

/// Members a presence channel holds at most, deployment-wide (Pusher's
/// limit); a new member over it is refused with 4309 `presence_full`.
pub const MAX_MEMBERS: usize = 100;

/// Largest `user_info` of a token request, as JSON text.
pub const MAX_USER_INFO_BYTES: usize = 1024;

/// How often a node tells the shared Redis it is alive.
pub const HEARTBEAT_MS: u64 = 1_000;

/// A node not heard from for this long is taken for dead: its members
/// leave their channels (and its channels are vacated) at the next
/// heartbeat of any other node, so within this plus [`HEARTBEAT_MS`].
pub const NODE_TIMEOUT_MS: u64 = 5_000;

/// The store key of a token's `user_info`, in the app's `presence`
/// namespace beside the plugins' own: the host (or the edge) keeps it
/// beside the token, so any auth plugin's tokens can carry it. A Redis
/// store puts the deployment's `<prefix>:` in front.
pub fn user_info_key(app_id: &str, access_id: &str) -> String {
    format!(
        "{}user-info/{access_id}",
        crate::store::plugin_namespace(app_id, "presence")
    )
}

/// A token request's `user_info`: a JSON object of at most
/// [`MAX_USER_INFO_BYTES`], only for a token with a `user_id`. Returns the
/// JSON text as given.
pub fn check_user_info(
    user_info: Option<&RawValue>,
    user_id: Option<&str>,
) -> Result<Option<String>, String> {
    let Some(info) = user_info else {
        return Ok(None);
    };
    let text = info.get().trim();
    if text == "null" {
        return Ok(None);
    }
    if !text.starts_with('{') {
        return Err("user_info must be a JSON object".to_owned());
    }
    if text.len() > MAX_USER_INFO_BYTES {
        return Err(format!(
            "user_info is at most {MAX_USER_INFO_BYTES} bytes of JSON"
        ));
    }
    if user_id.is_none() {
        return Err("user_info needs a user_id: a member is a user".to_owned());
    }
    Ok(Some(text.to_owned()))
}

/// Is `channel` a presence channel under `prefix`?
pub fn is_presence(channel: &str, prefix: &str) -> bool {
    !prefix.is_empty() && channel.starts_with(prefix)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(text: &str) -> Box<RawValue> {
        RawValue::from_string(text.to_owned()).unwrap()
    }

    #[test]
    fn user_info_is_a_bounded_object_of_a_user() {
        let info = raw(r#"{"name": "Ann"}"#);
        assert_eq!(
            check_user_info(Some(&info), Some("ann"))
                .unwrap()
                .as_deref(),
            Some(r#"{"name": "Ann"}"#)
        );
        assert_eq!(check_user_info(None, None), Ok(None));
        assert_eq!(check_user_info(Some(&raw("null")), None), Ok(None));
        assert!(check_user_info(Some(&raw("[1]")), Some("ann")).is_err());
        assert!(check_user_info(Some(&raw(r#""x""#)), Some("ann")).is_err());
        assert!(
            check_user_info(Some(&info), None)
                .unwrap_err()
                .contains("user_id")
        );
        let big = raw(&format!(r#"{{"a":"{}"}}"#, "x".repeat(MAX_USER_INFO_BYTES)));
        assert!(
            check_user_info(Some(&big), Some("ann"))
                .unwrap_err()
                .contains("1024")
        );
    }

    #[test]
    fn user_info_lives_in_the_presence_namespace() {
        assert_eq!(
            user_info_key("shop", "abc"),
            "app/shop/presence/user-info/abc"
        );
    }

    #[test]
    fn presence_channels_go_by_prefix() {
        assert!(is_presence("presence-room", CHANNEL_PREFIX));
        assert!(!is_presence("room", CHANNEL_PREFIX));
        assert!(!is_presence("presence-room", ""));
    }
}
