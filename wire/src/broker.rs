//! The broker's names and frames, as every node and the edge write them:
//! where a message goes ([`Target`]), the streams and live channels it
//! lands in ([`Keys`]), and the `message` frame clients receive, built once
//! per message (the id is put in front where the message is stored: in
//! Redis, by `lua/publish.lua`).

use serde::Serialize;
use serde_json::value::RawValue;

/// Where a message goes within one app.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Target {
    /// A channel's subscribers.
    Channel(String),
    /// Every socket of a user (the user's inbox).
    User(String),
    /// Every socket of one token (the token's inbox).
    Token(String),
}

impl Target {
    /// `<kind>/<name>`: the stream's name under its app, in history keys
    /// and live channel names.
    pub fn stream_name(&self) -> String {
        match self {
            Target::Channel(name) => format!("channel/{name}"),
            Target::User(id) => format!("user/{id}"),
            Target::Token(id) => format!("token/{id}"),
        }
    }

    /// The target of a stream name made by [`Target::stream_name`].
    pub fn from_stream_name(stream: &str) -> Option<Target> {
        let (kind, name) = stream.split_once('/')?;
        match kind {
            "channel" => Some(Target::Channel(name.to_owned())),
            "user" => Some(Target::User(name.to_owned())),
            "token" => Some(Target::Token(name.to_owned())),
            _ => None,
        }
    }

    /// The `channel` field of a `message` frame: the channel, or which
    /// inbox (`#user`, `#token`).
    pub fn label(&self) -> &str {
        match self {
            Target::Channel(name) => name,
            Target::User(_) => "#user",
            Target::Token(_) => "#token",
        }
    }
}

/// What every `message` frame starts with; the id follows.
pub const FRAME_HEAD: &str = r#"{"type":"message","id":""#;

/// Everything of the `message` frame after its id
/// (`"channel":..,"event":..,"data":..}`), labelled by the first target.
pub fn frame_tail(first_target: Option<&Target>, event: &str, data: &RawValue) -> String {
    #[derive(Serialize)]
    struct Tail<'a> {
        channel: &'a str,
        event: &'a str,
        data: &'a RawValue,
    }
    let tail = Tail {
        channel: first_target.map_or("", Target::label),
        event,
        data,
    };
    // Serializing borrowed strings and already-valid JSON cannot fail.
    let json = serde_json::to_string(&tail).unwrap_or_default();
    json.strip_prefix('{').unwrap_or(&json).to_owned()
}

/// The whole `message` frame for `id` (the Redis scripts build the same).
pub fn message_frame(id: u64, tail: &str) -> String {
    format!(r#"{FRAME_HEAD}{id}",{tail}"#)
}

/// The id of a `message` frame built by [`message_frame`].
pub fn message_id(frame: &str) -> Option<u64> {
    let rest = frame.strip_prefix(FRAME_HEAD)?;
    let (digits, _) = rest.split_once('"')?;
    digits.parse().ok()
}

/// The deployment's Redis key and channel names, under its prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    pub fn new(prefix: &str) -> Keys {
        Keys {
            prefix: prefix.to_owned(),
        }
    }

    /// `<prefix>:app/`, which an app's id and `/` complete.
    pub fn apps(&self) -> String {
        format!("{}:app/", self.prefix)
    }

    /// `<prefix>:app/<app>/`: the app's ids, history, live channels and
    /// channel directory (the scripts' key prefix).
    pub fn app(&self, app_id: &str) -> String {
        format!("{}{app_id}/", self.apps())
    }

    /// `<prefix>:control`: revokes and terminations for every node.
    pub fn control(&self) -> String {
        format!("{}:control", self.prefix)
    }

    /// The history (a Redis stream) of one target.
    pub fn history(&self, app_id: &str, target: &Target) -> String {
        format!("{}history/{}", self.app(app_id), target.stream_name())
    }

    /// The live (pub/sub) channel of one stream.
    pub fn live(&self, app_id: &str, target: &Target) -> String {
        format!("{}live/{}", self.app(app_id), target.stream_name())
    }

    /// The app and target of a live channel name made by [`Keys::live`].
    pub fn parse_live(&self, channel: &str) -> Option<(String, Target)> {
        let rest = channel.strip_prefix(&self.apps())?;
        let (app_id, rest) = rest.split_once('/')?;
        let target = Target::from_stream_name(rest.strip_prefix("live/")?)?;
        Some((app_id.to_owned(), target))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_is_its_head_id_and_tail() {
        let data = RawValue::from_string(r#"{"a":[1,"x"]}"#.to_owned()).unwrap();
        let user = Target::User("u".into());
        let frame = message_frame(17, &frame_tail(Some(&user), "done", &data));
        assert_eq!(
            frame,
            r##"{"type":"message","id":"17","channel":"#user","event":"done","data":{"a":[1,"x"]}}"##
        );
        assert_eq!(message_id(&frame), Some(17));
        assert_eq!(message_id(r#"{"type":"pong"}"#), None);
    }

    #[test]
    fn live_channel_names_parse_back() {
        let keys = Keys::new("madx");
        for target in [
            Target::Channel("news".into()),
            Target::User("user/with/slashes".into()),
            Target::Token("t".into()),
        ] {
            let live = keys.live("app-1", &target);
            assert_eq!(keys.parse_live(&live), Some(("app-1".into(), target)));
        }
        assert_eq!(keys.parse_live("other:app/a/live/user/u"), None);
        assert_eq!(keys.parse_live("madx:app/a/history/user/u"), None);
        assert_eq!(keys.control(), "madx:control");
        assert_eq!(
            keys.history("a", &Target::Channel("c".into())),
            "madx:app/a/history/channel/c"
        );
    }
}
