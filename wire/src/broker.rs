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
///
/// On a Redis Cluster every name carries a hash tag (`{...}`), so that what
/// one script touches lives in one slot: an app's ids, history, live
/// channels and channel directory share the app's slot (`<prefix>:app/{<app>}/`),
/// and what spans the deployment (presence bookkeeping, the webhook relay,
/// the control channel) shares the deployment's slot (`{<prefix>}:`). A
/// single Redis keeps the untagged names, so its data carries over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    prefix: String,
    cluster: bool,
}

impl Keys {
    /// The names on one Redis server.
    pub fn new(prefix: &str) -> Keys {
        Keys {
            prefix: prefix.to_owned(),
            cluster: false,
        }
    }

    /// The names on a Redis Cluster (hash-tagged), where scripts also
    /// declare the keys they touch.
    pub fn cluster(prefix: &str) -> Keys {
        Keys {
            prefix: prefix.to_owned(),
            cluster: true,
        }
    }

    pub fn is_cluster(&self) -> bool {
        self.cluster
    }

    /// What an app's id and `/` complete to the app's prefix
    /// ([`Keys::app`]): `<prefix>:app/`, or `<prefix>:app/{` on a cluster.
    pub fn apps(&self) -> String {
        if self.cluster {
            format!("{}:app/{{", self.prefix)
        } else {
            format!("{}:app/", self.prefix)
        }
    }

    /// The app's ids, history, live channels and channel directory (the
    /// scripts' key prefix): `<prefix>:app/<app>/`, or
    /// `<prefix>:app/{<app>}/` on a cluster.
    pub fn app(&self, app_id: &str) -> String {
        if self.cluster {
            format!("{}{app_id}}}/", self.apps())
        } else {
            format!("{}{app_id}/", self.apps())
        }
    }

    /// The prefix of what spans the deployment (presence bookkeeping, the
    /// webhook relay, the control channel): `<prefix>:`, or `{<prefix>}:`
    /// on a cluster.
    pub fn deployment(&self) -> String {
        if self.cluster {
            format!("{{{}}}:", self.prefix)
        } else {
            format!("{}:", self.prefix)
        }
    }

    /// What `publish.lua` and `recover.lua` touch for these streams
    /// (`<kind>/<name>`), declared to a cluster, where declared keys route
    /// the script to its slot and keep it safe while the slot migrates (a
    /// script whose keys are split between two shards is refused with
    /// `TRYAGAIN` and retried, never run on half of them). `None` on one
    /// Redis, where nothing is declared (and `streams` is not walked).
    pub fn history_keys(
        &self,
        app_id: &str,
        streams: impl IntoIterator<Item = String>,
    ) -> Option<Vec<String>> {
        self.cluster.then(|| {
            let app = self.app(app_id);
            let mut keys = vec![format!("{app}last-id"), format!("{app}history-floor")];
            let streams: std::collections::BTreeSet<String> = streams.into_iter().collect();
            for stream in streams {
                keys.push(format!("{app}history/{stream}"));
                keys.push(format!("{app}dropped/{stream}"));
            }
            keys
        })
    }

    /// What `occupancy.lua` writes for a node's report, declared to a
    /// cluster (see [`Keys::history_keys`]).
    pub fn occupancy_keys(&self, app_id: &str, node: &str) -> Option<Vec<String>> {
        let app = self.app(app_id);
        self.cluster
            .then(|| vec![format!("{app}occupancy/{node}"), format!("{app}nodes")])
    }

    /// The key `channels.lua` starts from (the reports read after it are
    /// found at run time), declared to a cluster.
    pub fn directory_keys(&self, app_id: &str) -> Option<Vec<String>> {
        self.cluster
            .then(|| vec![format!("{}nodes", self.app(app_id))])
    }

    /// The key the deployment-wide scripts (`membership.lua`,
    /// `webhook_relay.lua`) start from, the nodes' heartbeats, declared to a
    /// cluster; what they touch after it is found at run time, in the same
    /// slot.
    pub fn deployment_keys(&self) -> Option<Vec<String>> {
        self.cluster
            .then(|| vec![format!("{}nodes", self.deployment())])
    }

    /// Revokes, terminations and presence events for every node.
    pub fn control(&self) -> String {
        format!("{}control", self.deployment())
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
        let app_end = if self.cluster { "}/" } else { "/" };
        let (app_id, rest) = rest.split_once(app_end)?;
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
        assert_eq!(keys.history_keys("a", ["channel/c".to_owned()]), None);
        assert_eq!(keys.deployment_keys(), None);
    }

    #[test]
    fn on_a_cluster_an_apps_names_share_its_slot_and_parse_back() {
        let keys = Keys::cluster("madx");
        let news = Target::Channel("news".into());
        assert_eq!(keys.app("a"), "madx:app/{a}/");
        assert_eq!(
            keys.history("a", &news),
            "madx:app/{a}/history/channel/news"
        );
        assert_eq!(keys.live("a", &news), "madx:app/{a}/live/channel/news");
        assert_eq!(
            keys.history_keys("a", ["channel/news".to_owned(), "channel/news".to_owned()])
                .unwrap(),
            [
                "madx:app/{a}/last-id",
                "madx:app/{a}/history-floor",
                "madx:app/{a}/history/channel/news",
                "madx:app/{a}/dropped/channel/news"
            ]
        );
        assert_eq!(
            keys.occupancy_keys("a", "n1").unwrap(),
            ["madx:app/{a}/occupancy/n1", "madx:app/{a}/nodes"]
        );
        assert_eq!(keys.control(), "{madx}:control");
        assert_eq!(keys.deployment_keys().unwrap(), ["{madx}:nodes"]);
        for target in [news, Target::User("u/x".into()), Target::Token("t".into())] {
            let live = keys.live("app-1", &target);
            assert_eq!(keys.parse_live(&live), Some(("app-1".into(), target)));
        }
        // A single Redis's names are not a cluster's.
        assert_eq!(keys.parse_live("madx:app/a/live/user/u"), None);
    }
}
