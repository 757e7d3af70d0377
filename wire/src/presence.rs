//! Presence channels: who is online in a channel, as every node and the
//! edge must see it. A member is a token's `user_id`, with the `user_info`
//! the app gave when it asked for the token.

use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::{Value, json};

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

/// One member: a user and the `user_info` of the token it joined with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub user_id: String,
    /// JSON text of an object; `None` when the token carried none.
    pub user_info: Option<String>,
}

impl Member {
    /// A member as the membership script lists it (`""`: no `user_info`).
    pub fn new(user_id: String, user_info: String) -> Member {
        Member {
            user_id,
            user_info: (!user_info.is_empty()).then_some(user_info),
        }
    }

    /// The member as JSON: `{"user_id", "user_info"?}`.
    pub fn view(&self) -> MemberView<'_> {
        MemberView {
            user_id: &self.user_id,
            user_info: self
                .user_info
                .as_deref()
                .and_then(|info| serde_json::from_str(info).ok()),
        }
    }
}

/// How a member is written in frames and API answers.
#[derive(Debug, Serialize)]
pub struct MemberView<'a> {
    pub user_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_info: Option<&'a RawValue>,
}

/// The arguments (`ARGV`) of the membership script
/// (`crate::scripts::MEMBERSHIP`) that read a presence channel's roster
/// and change nothing: op `join` with hold `"0"`. `key_prefix` is
/// `"<prefix>:"` (`crate::store::redis_key_prefix`); no node tag, as a read
/// holds nothing.
pub fn read_roster_args<'a>(key_prefix: &'a str, app: &'a str, channel: &'a str) -> [&'a str; 10] {
    ["join", key_prefix, "", app, channel, "", "", "0", "0", ""]
}

/// A `join` reply of the membership script, `{status, count, user, info,
/// user, info, ...}`: its status (`added`, `present`, `full`) and the
/// members, by user id.
pub fn parse_roster(reply: impl IntoIterator<Item = String>) -> (String, Vec<Member>) {
    let mut reply = reply.into_iter();
    let status = reply.next().unwrap_or_default();
    let _count = reply.next();
    let mut members = Vec::new();
    while let (Some(user), Some(info)) = (reply.next(), reply.next()) {
        members.push(Member::new(user, info));
    }
    members.sort_by(|a, b| a.user_id.cmp(&b.user_id));
    (status, members)
}

/// `GET /v1/channels/{channel}/members`: `{"count", "members": [{"user_id",
/// "user_info"?}]}`.
pub fn members_body(members: &[Member]) -> Value {
    let members: Vec<Value> = members
        .iter()
        .filter_map(|member| serde_json::to_value(member.view()).ok())
        .collect();
    json!({ "count": members.len(), "members": members })
}

/// Why `GET /v1/channels/{channel}/members` is a 404 for a channel outside
/// the presence prefix.
pub fn not_a_presence_channel(channel: &str, prefix: &str) -> String {
    format!("{channel:?} is not a presence channel (presence.channel_prefix is {prefix:?})")
}

/// One channel as the APIs report it, on a host and at the edge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ChannelInfo {
    /// Open subscriptions over the deployment (a socket subscribed to the
    /// channel counts once).
    pub subscription_count: u64,
    /// Distinct members, for a presence channel; `None` for other channels
    /// (and when they were not asked for).
    pub user_count: Option<u64>,
}

/// A channel's figures as `GET /v1/channels` and `/v1/channels/{channel}`
/// answer them: `occupied`, `subscription_count`, and `user_count` for a
/// presence channel.
pub fn channel_body(
    subscription_count: u64,
    user_count: Option<u64>,
) -> serde_json::Map<String, Value> {
    let mut answer = serde_json::Map::new();
    answer.insert("occupied".into(), (subscription_count > 0).into());
    answer.insert("subscription_count".into(), subscription_count.into());
    if let Some(users) = user_count {
        answer.insert("user_count".into(), users.into());
    }
    answer
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

    #[test]
    fn a_roster_is_read_without_holding_anything() {
        assert_eq!(
            read_roster_args("madx:", "shop", "presence-a"),
            [
                "join",
                "madx:",
                "",
                "shop",
                "presence-a",
                "",
                "",
                "0",
                "0",
                ""
            ]
        );
        let reply = ["present", "2", "bob", "", "ann", r#"{"n":1}"#].map(String::from);
        let (status, members) = parse_roster(reply);
        assert_eq!(status, "present");
        assert_eq!(members[0].user_id, "ann");
        assert_eq!(members[0].user_info.as_deref(), Some(r#"{"n":1}"#));
        assert_eq!(members[1].user_info, None);
        assert_eq!(
            members_body(&members),
            json!({"count": 2, "members": [
                {"user_id": "ann", "user_info": {"n": 1}},
                {"user_id": "bob"},
            ]})
        );
        assert_eq!(parse_roster(Vec::new()), (String::new(), Vec::new()));
    }

    #[test]
    fn channel_bodies_count_users_only_for_presence() {
        assert_eq!(
            Value::Object(channel_body(2, Some(1))),
            json!({"occupied": true, "subscription_count": 2, "user_count": 1})
        );
        assert_eq!(
            Value::Object(channel_body(0, None)),
            json!({"occupied": false, "subscription_count": 0})
        );
    }
}
